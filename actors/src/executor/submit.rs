//! The submit pipeline of one node, with no IO: callers' tasks become `Submit` commands.
//!
//! Each executor has at most one `Submit` in flight from this node; calls that arrive meanwhile
//! wait and go together in the next one. That keeps the order of this node's calls (the log
//! applies its submits in `seq` order) without a round trip per task. A proposal that failed or
//! timed out is proposed again with the same `seq`, which the state applies at most once; the
//! callers are answered from the outcome that applied.
//!
//! Drive it with one input (`submit`, `set_submitter`, `proposed`, `handle_timeout`), then
//! drain [`SubmitPipeline::poll_output`], then sleep until [`SubmitPipeline::poll_timeout`].

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use colony_runtime::consensus::exec::{
    ExecCommand, ExecOutcome, ExecRefusal, MAX_SUBMIT_BYTES, MAX_SUBMIT_TASKS, NewTask,
};
use colony_runtime::consensus::{Command, Outcome, ReplicaId};

/// The shell's handle for an answer owed to a caller.
pub type CallId = u64;

/// What a caller is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitAnswer {
    /// Its tasks are accepted (committed), numbered `first..first + count`.
    Accepted {
        /// The first task's number.
        first: u64,
        /// How many.
        count: u64,
    },
    /// The executor holds too many tasks (`queued`, here or in the group): nothing was
    /// accepted; try later.
    Busy {
        /// Tasks held.
        queued: u64,
    },
    /// Refused for the reason given; nothing was accepted.
    Refused(ExecRefusal),
    /// This node's epoch ended while its submit was proposed more than once (after a failed or
    /// timed-out proposal): it may or may not have been accepted.
    Unknown,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum SubmitOutput {
    /// Propose `command`, then call [`SubmitPipeline::proposed`] with the result.
    Propose(Command),
    /// Answer `call`.
    Answer {
        /// The call.
        call: CallId,
        /// The answer.
        answer: SubmitAnswer,
    },
}

#[derive(Debug)]
struct Call {
    call: CallId,
    tasks: Vec<NewTask>,
}

#[derive(Debug)]
struct InFlight {
    command: Command,
    /// Its callers and their task counts, in order.
    calls: Vec<(CallId, u64)>,
    /// Times proposed.
    tries: u32,
    /// When to propose it again, after a failure.
    retry_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Lane {
    waiting: VecDeque<Call>,
    /// Tasks waiting.
    queued: u64,
    bound: u64,
    in_flight: Option<InFlight>,
}

/// One node's submits. See the module doc.
///
/// # Examples
/// ```
/// use std::time::{Duration, Instant};
/// use colony_actors::executor::{SubmitAnswer, SubmitOutput, SubmitPipeline};
/// use colony_runtime::consensus::exec::NewTask;
/// use colony_runtime::consensus::{ClusterState, Command, MemberInfo, ReplicaId};
///
/// let mut state = ClusterState::new();
/// let info = MemberInfo { name: "n1".into(), addr: "127.0.0.1:1".parse().unwrap(), incarnation: 1 };
/// state.apply(&Command::Register { replica: ReplicaId(1), info });
///
/// let mut pipeline = SubmitPipeline::new(Duration::from_millis(200));
/// pipeline.set_submitter(Some((ReplicaId(1), 1)));
/// pipeline.submit("mail", 7, vec![NewTask::new("user-7", b"a".to_vec(), 0)], 1000);
/// let Some(SubmitOutput::Propose(submit)) = pipeline.poll_output() else { panic!() };
/// let outcome = state.apply(&submit);
/// pipeline.proposed(Instant::now(), &submit, Some(&outcome));
/// assert_eq!(
///     pipeline.poll_output(),
///     Some(SubmitOutput::Answer { call: 7, answer: SubmitAnswer::Accepted { first: 1, count: 1 } })
/// );
/// ```
#[derive(Debug)]
pub struct SubmitPipeline {
    /// The wait before a failed proposal is proposed again.
    retry: Duration,
    submitter: Option<(ReplicaId, u64)>,
    /// The epoch `next_seq` counts for: the same epoch given again goes on counting (the state
    /// refuses a `seq` it has passed).
    numbering: Option<(ReplicaId, u64)>,
    /// An epoch the group said has ended: not proposed under again.
    ended: Option<(ReplicaId, u64)>,
    /// The next `seq`; one counter for every executor, so that a lane removed when idle and
    /// made again never goes back.
    next_seq: u64,
    lanes: BTreeMap<String, Lane>,
    outputs: VecDeque<SubmitOutput>,
}

impl SubmitPipeline {
    /// A pipeline that proposes a failed submit again after `retry`.
    pub fn new(retry: Duration) -> Self {
        SubmitPipeline {
            retry,
            submitter: None,
            numbering: None,
            ended: None,
            next_seq: 1,
            lanes: BTreeMap::new(),
            outputs: VecDeque::new(),
        }
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<SubmitOutput> {
        self.outputs.pop_front()
    }

    /// When a failed proposal is due again.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.lanes
            .values()
            .filter_map(|l| l.in_flight.as_ref()?.retry_at)
            .min()
    }

    /// Executors with submits waiting or in flight.
    pub fn busy(&self) -> usize {
        self.lanes.len()
    }

    /// This node's membership and epoch: submits are proposed under it. Waiting calls wait for
    /// one; a new epoch numbers its submits from 1 again. A submit refused on its only proposal
    /// because the epoch ended was never applied: its calls wait here for the next epoch.
    pub fn set_submitter(&mut self, submitter: Option<(ReplicaId, u64)>) {
        let submitter = submitter.filter(|s| Some(*s) != self.ended);
        if submitter != self.submitter {
            self.submitter = submitter;
            if submitter.is_some() && submitter != self.numbering {
                self.numbering = submitter;
                self.next_seq = 1;
            }
            self.launch_all();
        }
    }

    /// `call` submits `tasks` to `executor`, which holds at most `bound` tasks.
    pub fn submit(&mut self, executor: &str, call: CallId, tasks: Vec<NewTask>, bound: u64) {
        let bytes: usize = tasks.iter().map(|t| t.bytes.len()).sum();
        if tasks.is_empty() || tasks.len() > MAX_SUBMIT_TASKS || bytes > MAX_SUBMIT_BYTES {
            let refusal = ExecRefusal::BatchSize {
                tasks: tasks.len(),
                bytes,
            };
            self.answer(call, SubmitAnswer::Refused(refusal));
            return;
        }
        let lane = self.lanes.entry(executor.to_owned()).or_default();
        let count = tasks.len() as u64;
        lane.bound = bound;
        // What waits here counts against the bound too: the pipeline never holds more.
        if lane.queued + count > bound {
            let queued = lane.queued;
            self.answer(call, SubmitAnswer::Busy { queued });
            self.forget_if_idle(executor);
            return;
        }
        lane.queued += count;
        lane.waiting.push_back(Call { call, tasks });
        self.launch(executor);
    }

    /// A command from [`SubmitOutput::Propose`] was applied with `outcome`, or failed (`None`).
    pub fn proposed(&mut self, now: Instant, command: &Command, outcome: Option<&Outcome>) {
        let Command::Exec(ExecCommand::Submit { executor, .. }) = command else {
            return;
        };
        let Some(lane) = self.lanes.get_mut(executor) else {
            return;
        };
        let Some(flight) = lane.in_flight.as_mut().filter(|f| &f.command == command) else {
            return;
        };
        let outcome = match outcome {
            Some(Outcome::Exec(o)) => *o,
            _ => {
                flight.retry_at = Some(now + self.retry);
                return;
            }
        };
        let flight = lane.in_flight.take().expect("matched above");
        if outcome == ExecOutcome::Refused(ExecRefusal::EpochEnded) && flight.tries == 1 {
            self.requeue(executor, flight);
            return;
        }
        let mut answers: Vec<(CallId, SubmitAnswer)> = Vec::new();
        let mut next = 0;
        for (call, count) in flight.calls {
            let answer = match outcome {
                ExecOutcome::Accepted { first, .. } => {
                    let a = SubmitAnswer::Accepted {
                        first: first + next,
                        count,
                    };
                    next += count;
                    a
                }
                ExecOutcome::Busy { queued } => SubmitAnswer::Busy { queued },
                ExecOutcome::Refused(ExecRefusal::EpochEnded) if flight.tries > 1 => {
                    SubmitAnswer::Unknown
                }
                ExecOutcome::Refused(r) => SubmitAnswer::Refused(r),
                // A submit applies to nothing else.
                ExecOutcome::Removed { .. } | ExecOutcome::Failed { .. } => SubmitAnswer::Unknown,
            };
            answers.push((call, answer));
        }
        for (call, answer) in answers {
            self.answer(call, answer);
        }
        self.launch(executor);
        self.forget_if_idle(executor);
    }

    /// Proposes again the submits whose retry is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        for lane in self.lanes.values_mut() {
            if let Some(f) = lane.in_flight.as_mut()
                && f.retry_at.is_some_and(|at| at <= now)
            {
                f.retry_at = None;
                f.tries += 1;
                self.outputs
                    .push_back(SubmitOutput::Propose(f.command.clone()));
            }
        }
    }

    /// Puts the calls of a submit that was refused on its only proposal, so never applied, back
    /// at the head of their lane: they go again under the next epoch.
    fn requeue(&mut self, executor: &str, flight: InFlight) {
        let Command::Exec(ExecCommand::Submit {
            submitter, tasks, ..
        }) = flight.command
        else {
            return;
        };
        // The group may say this epoch ended before the shell does: wait for the next one.
        self.ended = Some(submitter);
        if self.submitter == Some(submitter) {
            self.submitter = None;
        }
        let lane = self.lanes.entry(executor.to_owned()).or_default();
        let mut tasks = tasks.into_iter();
        let calls: Vec<Call> = flight
            .calls
            .iter()
            .map(|(call, count)| Call {
                call: *call,
                tasks: tasks.by_ref().take(*count as usize).collect(),
            })
            .collect();
        for c in calls.into_iter().rev() {
            lane.queued += c.tasks.len() as u64;
            lane.waiting.push_front(c);
        }
        self.launch(executor);
    }

    fn answer(&mut self, call: CallId, answer: SubmitAnswer) {
        self.outputs
            .push_back(SubmitOutput::Answer { call, answer });
    }

    fn forget_if_idle(&mut self, executor: &str) {
        if self
            .lanes
            .get(executor)
            .is_some_and(|l| l.in_flight.is_none() && l.waiting.is_empty())
        {
            self.lanes.remove(executor);
        }
    }

    fn launch_all(&mut self) {
        let executors: Vec<String> = self.lanes.keys().cloned().collect();
        for e in executors {
            self.launch(&e);
        }
    }

    /// Proposes the waiting calls of `executor` as one submit, if none is in flight.
    fn launch(&mut self, executor: &str) {
        let Some(submitter) = self.submitter else {
            return;
        };
        let Some(lane) = self.lanes.get_mut(executor) else {
            return;
        };
        if lane.in_flight.is_some() || lane.waiting.is_empty() {
            return;
        }
        let (mut tasks, mut bytes, mut calls) = (Vec::new(), 0, Vec::new());
        while let Some(c) = lane.waiting.front() {
            let b: usize = c.tasks.iter().map(|t| t.bytes.len()).sum();
            let fits =
                tasks.len() + c.tasks.len() <= MAX_SUBMIT_TASKS && bytes + b <= MAX_SUBMIT_BYTES;
            if !fits {
                break;
            }
            let c = lane.waiting.pop_front().expect("looked at above");
            bytes += b;
            calls.push((c.call, c.tasks.len() as u64));
            tasks.extend(c.tasks);
        }
        lane.queued -= tasks.len() as u64;
        let seq = self.next_seq;
        self.next_seq += 1;
        let command = Command::Exec(ExecCommand::Submit {
            executor: executor.to_owned(),
            submitter,
            seq,
            bound: lane.bound,
            tasks,
        });
        self.outputs
            .push_back(SubmitOutput::Propose(command.clone()));
        lane.in_flight = Some(InFlight {
            command,
            calls,
            tries: 1,
            retry_at: None,
        });
    }
}

#[cfg(test)]
#[path = "submit_tests.rs"]
mod tests;
