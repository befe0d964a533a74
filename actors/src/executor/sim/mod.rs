//! The real executor cores and submit pipelines of 3 to 5 nodes on the seeded group world
//! ([`colony_runtime::sim::group`]), fed as the executor's shell feeds them: the group's
//! status after every change, the answers to their proposals, hand-overs, timers, and
//! processors that return.
//!
//! Every node opens the executor `sim` and submits numbered tasks to a few buckets, a few
//! calls at a time (so the pipeline batches them), some due a little later. Processors take a
//! random time and fail now and then (the tasks of one bucket fail more often, so some go to
//! the dead-letter handler). As in the shell, a batch is dropped at its deadline (the end of
//! the node's entitlement, moved by `Extend`) or when cancelled; a node paused past its
//! deadline may see its processor return on waking before the deadline's drop, and then the
//! shell reports the finish to the core: that is a late finish, recorded.
//!
//! What happened is recorded in an [`ExecRecord`] for the checkers of
//! [`colony_runtime::testkit::check`]: every call with the window in which it could act (from
//! its start to its return, drop or cancel, never past its deadline), what it got and whether
//! it succeeded; every task accepted; every task dead-lettered.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_runtime::consensus::exec::NewTask;
use colony_runtime::consensus::{ClusterState, Command, Domain, Entitlement, Outcome, ReplicaId};
use colony_runtime::ownership::Ownership;
use colony_runtime::sim::group::{Ctx, EmptySlots, EmptyTable, Service};
use colony_runtime::testkit::check::{Accepted, BatchRun, TaskRef};
use rand::RngExt;
use serde_bytes::ByteBuf;

use super::{
    Backoff, CallId, Concurrency, CoreConfig, ExecutorCore, ExecutorSettings, Now, Output,
    SubmitAnswer, SubmitOutput, SubmitPipeline,
};

/// The executor every node opens.
pub(crate) const EXECUTOR: &str = "sim";
/// The buckets tasks go to; the last one's batches fail more often.
pub(crate) const BUCKETS: u64 = 6;
/// Tasks each process submits.
pub(crate) const TASKS: u64 = 40;
/// The bound on the executor's queued tasks.
const BOUND: u64 = 120;
/// Calls each process has waiting at once, at most.
const CALLS: usize = 3;
/// The wall clock's reading at the world's origin (UTC milliseconds).
const WALL0: u64 = 1_800_000_000_000;

/// The executor's settings in a run of `seed`: batch sizes 1 to 4, three attempts, a short
/// backoff, and a per-node or per-cluster limit.
pub(crate) fn settings(seed: u64) -> ExecutorSettings {
    ExecutorSettings {
        batch_size: 1 + (seed % 4) as usize,
        max_attempts: 3,
        backoff: Backoff {
            first: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        concurrency: if seed.is_multiple_of(2) {
            Concurrency::PerNode(2)
        } else {
            Concurrency::PerCluster(5)
        },
    }
}

/// A message between two nodes' executor services.
#[derive(Debug, Clone)]
pub(crate) enum ExecMsg {
    /// An executor slot's hand-over.
    HandOver { slot: u16, generation: u64 },
    /// A lock slot's (empty) table.
    Empty(EmptyTable),
}

/// What a call ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Process,
    DeadLetter,
}

/// A processor or dead-letter call, with the window in which it could act.
#[derive(Debug, Clone)]
pub(crate) struct CallRun {
    pub kind: Kind,
    pub run: BatchRun,
    /// It returned success within its deadline.
    pub ok: bool,
}

/// A call that returned after its deadline, whose return the shell reported to the core.
#[derive(Debug, Clone)]
pub(crate) struct Late {
    pub node: String,
    pub bucket: String,
    pub token: u64,
    pub at_us: u64,
}

/// What every node's executor recorded.
#[derive(Debug, Default)]
pub(crate) struct ExecRecord {
    pub calls: Vec<CallRun>,
    pub accepted: Vec<Accepted>,
    pub dead: Vec<TaskRef>,
    pub late: Vec<Late>,
    /// Starts past the executor's concurrency limit.
    pub over_limit: Vec<String>,
    pub most_at_once: usize,
    pub busy: u64,
    pub unknown: u64,
    pub cancels: u64,
    pub dropped: u64,
    /// A processor that returns past its deadline always beats the drop (the paused-worker
    /// script sets it, to reach the late report every time).
    pub always_late: bool,
    pub trace: bool,
}

/// A call in progress on this node.
#[derive(Debug)]
struct Running {
    token: u64,
    /// When the processor returns.
    ends: Instant,
    /// When the shell drops it.
    deadline: Instant,
    ok: bool,
    /// Its entry in the record.
    index: usize,
}

/// One node's executor service. See the module doc.
pub(crate) struct ExecNode {
    core: ExecutorCore,
    pipeline: SubmitPipeline,
    settings: ExecutorSettings,
    state: Arc<ClusterState>,
    epoch: Option<u64>,
    entitlement: Option<Entitlement>,
    running: BTreeMap<String, Running>,
    /// This process's name as a submitter, and its next task's number.
    submitter: String,
    next_seq: u64,
    next_submit: Instant,
    calls: BTreeMap<CallId, (String, u64)>,
    next_call: CallId,
    others: EmptySlots,
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

fn now(ctx: &Ctx<'_, ExecNode>) -> Now {
    Now {
        at: ctx.now,
        wall_ms: WALL0 + ctx.wall().as_millis() as u64,
    }
}

/// A task's bytes: its submitter and number.
fn encode(task: &TaskRef) -> Vec<u8> {
    format!("{}:{}", task.0, task.1).into_bytes()
}

fn decode(bytes: &ByteBuf) -> TaskRef {
    let text = String::from_utf8_lossy(bytes);
    let (who, seq) = text.rsplit_once(':').expect("the simulator's tasks");
    (who.to_owned(), seq.parse().expect("a task number"))
}

impl ExecNode {
    /// Ends the calls whose processor returned or whose deadline passed, as the shell's batch
    /// tasks do on their own; first thing on every input, so a node waking from a pause
    /// reports a processor that returned before the core hears anything else.
    fn settle_calls(&mut self, ctx: &mut Ctx<'_, Self>) {
        let at = ctx.now;
        let ended: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| r.ends <= at || r.deadline <= at)
            .map(|(b, _)| b.clone())
            .collect();
        for bucket in ended {
            let r = self.running.remove(&bucket).expect("listed above");
            let deadline = us(ctx.world_of(r.deadline));
            let call = &mut ctx.record.calls[r.index];
            call.run.end_us = us(ctx.world).min(deadline);
            let kind = call.kind;
            // Drawn for every call, so that a script forcing late returns draws the same.
            let coin = ctx.rng.random_bool(0.5);
            if r.ends > at || (r.deadline <= at && coin && !ctx.record.always_late) {
                // Dropped at the deadline: no report.
                ctx.record.dropped += 1;
                continue;
            }
            if r.deadline <= at {
                // Returned on waking, past the deadline, before the drop: late.
                ctx.record.late.push(Late {
                    node: ctx.name.to_owned(),
                    bucket: bucket.clone(),
                    token: r.token,
                    at_us: us(ctx.world),
                });
            } else {
                call.ok = r.ok && kind == Kind::Process;
                if kind == Kind::DeadLetter {
                    let tasks = call.run.tasks.clone();
                    ctx.record.dead.extend(tasks);
                }
            }
            let n = now(ctx);
            match kind {
                Kind::Process => self.core.finished(n, EXECUTOR, &bucket, r.token, r.ok),
                Kind::DeadLetter => self.core.dead_lettered(n, EXECUTOR, &bucket, r.token),
            }
        }
    }

    /// Starts a call of `kind` on `tasks`.
    fn start(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        kind: Kind,
        bucket: String,
        token: u64,
        tasks: Vec<ByteBuf>,
        deadline: Instant,
    ) {
        let (took, ok) = match kind {
            Kind::Process => {
                let fail = if bucket == format!("b{}", BUCKETS - 1) {
                    0.6
                } else {
                    0.1
                };
                let took = ctx.rng.random_range(2_000..400_000);
                (took, !ctx.rng.random_bool(fail))
            }
            Kind::DeadLetter => (ctx.rng.random_range(1_000..20_000), true),
        };
        if kind == Kind::Process {
            let limit = self.settings.concurrency.limit_in(&self.state);
            let at_once = self.running.len() + 1;
            ctx.record.most_at_once = ctx.record.most_at_once.max(at_once);
            if at_once > limit {
                ctx.record.over_limit.push(format!(
                    "{} ran {at_once} buckets at once, limit {limit}",
                    ctx.name
                ));
            }
        }
        ctx.record.calls.push(CallRun {
            kind,
            run: BatchRun {
                bucket: bucket.clone(),
                token,
                node: ctx.name.to_owned(),
                start_us: us(ctx.world),
                end_us: us(ctx.world),
                tasks: tasks.iter().map(decode).collect(),
            },
            ok: false,
        });
        let index = ctx.record.calls.len() - 1;
        let ends = ctx.now + Duration::from_micros(took);
        let running = Running {
            token,
            ends,
            deadline,
            ok,
            index,
        };
        self.running.insert(bucket, running);
    }

    /// Carries out what the cores asked for, until they ask nothing more.
    fn flush(&mut self, ctx: &mut Ctx<'_, Self>) {
        loop {
            let mut busy = false;
            while let Some(output) = self.core.poll_output() {
                busy = true;
                if ctx.record.trace {
                    eprintln!("{:>9?} {} {output:?}", ctx.world, ctx.name);
                }
                self.carry_out(ctx, output);
            }
            while let Some(output) = self.pipeline.poll_output() {
                busy = true;
                match output {
                    SubmitOutput::Propose(command) => ctx.propose(command),
                    SubmitOutput::Answer { call, answer } => self.answered(ctx, call, answer),
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn carry_out(&mut self, ctx: &mut Ctx<'_, Self>, output: Output) {
        match output {
            Output::Start {
                bucket,
                token,
                tasks,
                deadline,
                ..
            } => self.start(ctx, Kind::Process, bucket, token, tasks, deadline),
            Output::DeadLetter {
                bucket,
                token,
                tasks,
                deadline,
                ..
            } => self.start(ctx, Kind::DeadLetter, bucket, token, tasks, deadline),
            Output::Extend {
                bucket,
                token,
                deadline,
                ..
            } => {
                if let Some(r) = self.running.get_mut(&bucket).filter(|r| r.token == token) {
                    r.deadline = deadline;
                }
            }
            Output::Cancel { bucket, token, .. } => {
                if self.running.get(&bucket).is_some_and(|r| r.token == token) {
                    let r = self.running.remove(&bucket).expect("looked at above");
                    let deadline = us(ctx.world_of(r.deadline));
                    ctx.record.calls[r.index].run.end_us = us(ctx.world).min(deadline);
                    ctx.record.cancels += 1;
                }
            }
            Output::Propose(command) => ctx.propose(command),
            Output::HandOver {
                to,
                slot,
                generation,
            } => ctx.send(to, ExecMsg::HandOver { slot, generation }),
        }
    }

    fn answered(&mut self, ctx: &mut Ctx<'_, Self>, call: CallId, answer: SubmitAnswer) {
        let Some((bucket, seq)) = self.calls.remove(&call) else {
            return;
        };
        match answer {
            SubmitAnswer::Accepted { .. } => ctx.record.accepted.push(Accepted {
                bucket,
                task: (self.submitter.clone(), seq),
            }),
            SubmitAnswer::Busy { .. } => ctx.record.busy += 1,
            SubmitAnswer::Unknown => ctx.record.unknown += 1,
            SubmitAnswer::Refused(why) => panic!("the simulator's submit was refused: {why:?}"),
        }
    }

    /// Submits this process's next task if it is time and few calls wait.
    fn submit_more(&mut self, ctx: &mut Ctx<'_, Self>) {
        while ctx.now >= self.next_submit && self.next_seq <= TASKS && self.calls.len() < CALLS {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.next_submit = ctx.now + Duration::from_millis(ctx.rng.random_range(10..250));
            let bucket = format!("b{}", seq % BUCKETS);
            // One task in twenty is due a little later (by this node's clock): it holds its
            // bucket until then.
            let not_before = if ctx.rng.random_bool(0.05) {
                now(ctx).wall_ms + ctx.rng.random_range(1..300)
            } else {
                0
            };
            let task = (self.submitter.clone(), seq);
            self.next_call += 1;
            self.calls.insert(self.next_call, (bucket.clone(), seq));
            let tasks = vec![NewTask::new(bucket, encode(&task), not_before)];
            self.pipeline.submit(EXECUTOR, self.next_call, tasks, BOUND);
        }
    }

    /// Whether this process submitted all its tasks and has no call waiting.
    pub(crate) fn submitted(&self) -> bool {
        self.next_seq > TASKS && self.calls.is_empty()
    }

    /// A bucket this node processes now: its name, the batch's token, and the call's index in
    /// the record.
    pub(crate) fn processing(&self) -> Option<(String, u64, usize)> {
        self.running
            .iter()
            .map(|(b, r)| (b.clone(), r.token, r.index))
            .next()
    }

    fn send_tables(ctx: &mut Ctx<'_, Self>, tables: Vec<(ReplicaId, EmptyTable)>) {
        for (to, table) in tables {
            ctx.send(to, ExecMsg::Empty(table));
        }
    }

    fn ask_for_other_slots(&mut self, ctx: &mut Ctx<'_, Self>) {
        ctx.propose_all(self.others.proposals(self.entitlement));
    }
}

impl Service for ExecNode {
    type Msg = ExecMsg;
    type Record = ExecRecord;

    fn start(ctx: &mut Ctx<'_, Self>) -> Self {
        ctx.record.trace = std::env::var_os("COLONY_SIM_TRACE").is_some();
        let config = CoreConfig {
            resend: Duration::from_millis(300),
            retry: Duration::from_millis(200),
        };
        let settings = settings(ctx.config.seed);
        let mut core = ExecutorCore::new(ctx.replica, Domain::Executor, config);
        core.configure(now(ctx), EXECUTOR, settings);
        let mut node = ExecNode {
            core,
            pipeline: SubmitPipeline::new(config.retry),
            settings,
            state: Arc::new(ClusterState::new()),
            epoch: None,
            entitlement: None,
            running: BTreeMap::new(),
            submitter: format!("{}.{}", ctx.name, ctx.incarnation),
            next_seq: 1,
            next_submit: ctx.now,
            calls: BTreeMap::new(),
            next_call: 0,
            others: EmptySlots::new(ctx.replica, &[Domain::Executor], ctx.now),
        };
        node.flush(ctx);
        node
    }

    fn status(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        status: &Arc<colony_runtime::consensus::GroupStatus>,
    ) {
        self.settle_calls(ctx);
        self.state = status.state.clone();
        self.epoch = status.epoch;
        self.entitlement = status.entitlement;
        self.pipeline
            .set_submitter(status.epoch.map(|e| (ctx.replica, e)));
        let n = now(ctx);
        self.core
            .set_group(n, status.state.clone(), status.epoch, status.entitlement);
        let tables = self.others.update(&self.state, self.epoch);
        Self::send_tables(ctx, tables);
        self.flush(ctx);
    }

    fn message(&mut self, ctx: &mut Ctx<'_, Self>, _: ReplicaId, msg: ExecMsg) {
        self.settle_calls(ctx);
        match msg {
            ExecMsg::HandOver { slot, generation } => {
                let _ = self.core.received(now(ctx), slot, generation);
            }
            ExecMsg::Empty(table) => {
                if self.others.received(&self.state, table, ctx.now) {
                    self.ask_for_other_slots(ctx);
                }
            }
        }
        self.flush(ctx);
    }

    fn timeout(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.settle_calls(ctx);
        self.core.handle_timeout(now(ctx));
        self.pipeline.handle_timeout(ctx.now);
        self.submit_more(ctx);
        if let Some(tables) = self.others.resend(ctx.now) {
            Self::send_tables(ctx, tables);
            self.ask_for_other_slots(ctx);
        }
        self.flush(ctx);
    }

    fn proposal_failed(&mut self, ctx: &mut Ctx<'_, Self>, command: &Command) {
        self.settle_calls(ctx);
        self.others.proposal_failed(command);
        let n = now(ctx);
        self.core.proposed(n, command, None);
        self.pipeline.proposed(ctx.now, command, None);
        self.flush(ctx);
    }

    fn proposal_applied(&mut self, ctx: &mut Ctx<'_, Self>, command: &Command, outcome: &Outcome) {
        self.settle_calls(ctx);
        let n = now(ctx);
        self.core.proposed(n, command, Some(outcome));
        self.pipeline.proposed(ctx.now, command, Some(outcome));
        self.flush(ctx);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let calls = self.running.values().map(|r| r.ends.min(r.deadline)).min();
        let submit =
            (self.next_seq <= TASKS && self.calls.len() < CALLS).then_some(self.next_submit);
        let resend = self.epoch.map(|_| self.others.next_resend());
        [
            self.core.poll_timeout(),
            self.pipeline.poll_timeout(),
            calls,
            submit,
            resend,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn ownership(&self) -> &Ownership {
        self.core.ownership()
    }
}
