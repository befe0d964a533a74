//! The executor service's driver: this node's [`ExecutorCore`] and [`SubmitPipeline`] in the
//! runtime's actor shell, fed the group's status.
//!
//! Submits reach the pipeline in the caller's task ([`Shell::send`]); batches, dead-letter
//! calls, proposals and hand-overs run on their own tasks and come back as inputs. Each batch
//! runs in a task of its own (a panic is a failure) raced against the entitlement's end: at
//! that instant it is dropped, whether or not the driver has woken.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_runtime::Node;
use colony_runtime::consensus::exec::NewTask;
use colony_runtime::consensus::{Command, GroupStatus, Outcome, ReplicaId};
use colony_runtime::membership::View;
use colony_runtime::shell::{Caster, Driven, Shell};
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;

use super::config::ExecutorSettings;
use super::core::{CoreConfig, ExecutorCore, Now, Output};
use super::msg::{ExecRequest, KIND, SERVICE};
use super::processor::{BoxFuture, Runner};
use super::submit::{CallId, SubmitAnswer, SubmitOutput, SubmitPipeline};

/// How long one proposal or hand-over request may take.
const PROPOSE_WITHIN: Duration = Duration::from_secs(2);

/// The driver's inputs.
pub(crate) enum ExecInput {
    /// The group's status changed.
    Group(Arc<GroupStatus>),
    /// Run `name` on this node.
    Open {
        name: String,
        settings: ExecutorSettings,
        runner: Arc<dyn Runner>,
    },
    /// Stop running `name` on this node.
    Close(String),
    /// A caller's tasks; the answer goes to `reply`.
    Submit {
        executor: String,
        tasks: Vec<NewTask>,
        bound: u64,
        reply: oneshot::Sender<SubmitAnswer>,
    },
    /// A proposal came back: applied with an outcome, or failed (`None`).
    Proposed(Command, Option<Outcome>),
    /// A batch's processor returned (or panicked: `ok` false).
    Finished {
        executor: String,
        bucket: String,
        token: u64,
        ok: bool,
    },
    /// The dead-letter handler took a batch.
    DeadLettered {
        executor: String,
        bucket: String,
        token: u64,
    },
    /// The previous owner handed `slot` over; the answer says whether it was awaited.
    Received {
        slot: u16,
        generation: u64,
        reply: oneshot::Sender<bool>,
    },
}

/// One executor's numbers on this node (queue depth and dead letters are the cluster's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ExecutorStats {
    /// Tasks queued in the cluster, not yet processed.
    pub queued: u64,
    /// Buckets with tasks in the cluster.
    pub buckets: usize,
    /// Buckets this node processes now.
    pub in_process: usize,
    /// Buckets this node may process at once now (a per-cluster limit divided over the
    /// members whose epoch has not ended).
    pub limit: usize,
    /// Batches this node processed successfully.
    pub succeeded: u64,
    /// Batches that failed on this node (each retried or dead-lettered).
    pub failed: u64,
    /// Tasks dead-lettered in the cluster so far.
    pub dead_letters: u64,
}

/// A batch or dead-letter call running on this node.
struct Running {
    token: u64,
    deadline: watch::Sender<Instant>,
    abort: AbortHandle,
}

#[derive(Default, Clone, Copy)]
struct Counters {
    succeeded: u64,
    failed: u64,
}

pub(crate) struct ExecDriver {
    node: Node,
    pub shell: Option<Caster<ExecInput>>,
    core: ExecutorCore,
    pipeline: SubmitPipeline,
    state: Arc<GroupStatus>,
    runners: BTreeMap<String, Arc<dyn Runner>>,
    counters: BTreeMap<String, Counters>,
    running: HashMap<(String, String), Running>,
    replies: HashMap<CallId, oneshot::Sender<SubmitAnswer>>,
    next_call: CallId,
    nodes: HashMap<ReplicaId, colony_runtime::NodeId>,
}

/// The executor service's shell.
pub(crate) type ExecHandle = Shell<ExecDriver>;

impl ExecDriver {
    /// The time of an input for the cores, on the node's wall clock (offset in tests with a
    /// skewed node).
    fn now_at(&self, at: Instant) -> Now {
        let wall_ms = self.node.wall_clock().now_millis();
        Now { at, wall_ms }
    }

    pub(crate) fn new(node: Node) -> Self {
        let status = node.group().status();
        let config = CoreConfig {
            resend: Duration::from_millis(300),
            retry: Duration::from_millis(200),
        };
        ExecDriver {
            core: ExecutorCore::new(
                status.replica,
                colony_runtime::consensus::Domain::Executor,
                config,
            ),
            pipeline: SubmitPipeline::new(config.retry),
            state: status,
            node,
            shell: None,
            runners: BTreeMap::new(),
            counters: BTreeMap::new(),
            running: HashMap::new(),
            replies: HashMap::new(),
            next_call: 0,
            nodes: HashMap::new(),
        }
    }

    /// The numbers of `executor` as this node sees them.
    pub(crate) fn stats(&self, executor: &str) -> ExecutorStats {
        let exec = &self.state.state.exec;
        let c = self.counters.get(executor).copied().unwrap_or_default();
        ExecutorStats {
            queued: exec.depth(executor),
            buckets: exec.buckets(executor).count(),
            in_process: self.core.in_process(executor),
            limit: self.core.limit(executor),
            succeeded: c.succeeded,
            failed: c.failed,
            dead_letters: exec.dead_letters(executor),
        }
    }

    /// Every executor open on this node, with its numbers.
    pub(crate) fn all_stats(&self) -> Vec<(String, ExecutorStats)> {
        self.runners
            .keys()
            .map(|name| (name.clone(), self.stats(name)))
            .collect()
    }

    /// The `GET /executors` report: every executor open on this node with its numbers.
    pub(crate) fn report(&self) -> serde_json::Value {
        let executors: Vec<serde_json::Value> = self
            .all_stats()
            .into_iter()
            .map(|(name, stats)| serde_json::json!({ "name": name, "stats": stats }))
            .collect();
        serde_json::json!({
            "executors": executors,
            "submits_waiting": self.pipeline.busy(),
            "answers_owed": self.replies.len(),
        })
    }

    fn spawn_propose(&self, command: Command) {
        let (node, shell) = (self.node.clone(), self.shell.clone());
        tokio::spawn(async move {
            let outcome = node.group().propose(command.clone(), PROPOSE_WITHIN).await;
            if let Some(shell) = shell {
                let _ = shell.cast(ExecInput::Proposed(command, outcome.ok()));
            }
        });
    }

    /// Runs `work` on its own task until `deadline` (moved by [`Output::Extend`]), then
    /// reports what `done` makes of its result. Not reported when dropped at the deadline or
    /// cancelled: the core cancels the batch itself.
    fn spawn_batch(
        &mut self,
        executor: String,
        bucket: String,
        token: u64,
        deadline: Instant,
        work: BoxFuture<bool>,
        done: fn(String, String, u64, bool) -> ExecInput,
    ) {
        let inner = tokio::spawn(work);
        let abort = inner.abort_handle();
        let (tx, mut rx) = watch::channel(deadline);
        let shell = self.shell.clone();
        let (e, b) = (executor.clone(), bucket.clone());
        let guard = inner.abort_handle();
        tokio::spawn(async move {
            let mut inner = inner;
            let ok = loop {
                let until = *rx.borrow_and_update();
                tokio::select! {
                    joined = &mut inner => break match joined {
                        Ok(ok) => ok,
                        Err(e) if e.is_panic() => {
                            tracing::warn!(%executor, %bucket, token, "a batch panicked: counted as a failure");
                            false
                        }
                        Err(_) => return,
                    },
                    () = tokio::time::sleep_until(until.into()) => {
                        // The entitlement ended: no side effect of this batch may follow.
                        guard.abort();
                        return;
                    }
                    changed = rx.changed() => if changed.is_err() { guard.abort(); return },
                }
            };
            if let Some(shell) = shell {
                let _ = shell.cast(done(executor, bucket, token, ok));
            }
        });
        self.running.insert(
            (e, b),
            Running {
                token,
                deadline: tx,
                abort,
            },
        );
    }

    fn start(&mut self, output: Output) {
        match output {
            Output::Start {
                executor,
                bucket,
                token,
                tasks,
                deadline,
                attempt,
                ..
            } => {
                let work: BoxFuture<bool> = match self.runners.get(&executor) {
                    Some(runner) => {
                        let call = runner.process(bucket.clone(), &tasks, token);
                        let (e, b) = (executor.clone(), bucket.clone());
                        Box::pin(async move {
                            let result = call.await;
                            if let Err(why) = &result {
                                tracing::debug!(executor = %e, bucket = %b, token, attempt, %why, "batch failed");
                            }
                            result.is_ok()
                        })
                    }
                    None => Box::pin(std::future::ready(false)),
                };
                self.spawn_batch(executor, bucket, token, deadline, work, |e, b, t, ok| {
                    ExecInput::Finished {
                        executor: e,
                        bucket: b,
                        token: t,
                        ok,
                    }
                });
            }
            Output::DeadLetter {
                executor,
                bucket,
                token,
                tasks,
                deadline,
            } => {
                let work: BoxFuture<bool> = match self.runners.get(&executor) {
                    Some(runner) => {
                        let call = runner.dead_letter(bucket.clone(), &tasks, token);
                        Box::pin(async move {
                            call.await;
                            true
                        })
                    }
                    None => Box::pin(std::future::ready(true)),
                };
                self.spawn_batch(executor, bucket, token, deadline, work, |e, b, t, _| {
                    ExecInput::DeadLettered {
                        executor: e,
                        bucket: b,
                        token: t,
                    }
                });
            }
            Output::Extend {
                executor,
                bucket,
                token,
                deadline,
            } => {
                if let Some(r) = self.running.get(&(executor, bucket))
                    && r.token == token
                {
                    r.deadline.send_replace(deadline);
                }
            }
            Output::Cancel {
                executor,
                bucket,
                token,
            } => {
                if let Some(r) = self.ended(&executor, &bucket, token) {
                    r.abort.abort();
                }
            }
            Output::Propose(command) => self.spawn_propose(command),
            Output::HandOver {
                to,
                slot,
                generation,
            } => {
                let Some(to) = self.nodes.get(&to).copied() else {
                    return;
                };
                let node = self.node.clone();
                tokio::spawn(async move {
                    let request = ExecRequest::HandOver { slot, generation };
                    let _ = node
                        .request::<_, bool>(to, SERVICE, KIND, &request, Some(PROPOSE_WITHIN))
                        .await;
                });
            }
        }
    }

    fn count(&mut self, executor: &str, ok: bool) {
        let c = self.counters.entry(executor.to_owned()).or_default();
        if ok {
            c.succeeded += 1;
        } else {
            c.failed += 1;
        }
    }

    /// Takes the running call of a bucket with `token`, if that is the one running.
    fn ended(&mut self, executor: &str, bucket: &str, token: u64) -> Option<Running> {
        let key = (executor.to_owned(), bucket.to_owned());
        if self.running.get(&key).is_some_and(|r| r.token == token) {
            return self.running.remove(&key);
        }
        None
    }
}

impl Driven for ExecDriver {
    type Input = ExecInput;

    fn input(&mut self, at: Instant, input: ExecInput) {
        let now = self.now_at(at);
        match input {
            ExecInput::Group(status) => {
                self.pipeline
                    .set_submitter(status.epoch.map(|e| (status.replica, e)));
                self.core
                    .set_group(now, status.state.clone(), status.epoch, status.entitlement);
                self.state = status;
            }
            ExecInput::Open {
                name,
                settings,
                runner,
            } => {
                self.runners.insert(name.clone(), runner);
                self.core.configure(now, &name, settings);
            }
            ExecInput::Close(name) => {
                self.core.remove(now, &name);
                self.runners.remove(&name);
            }
            ExecInput::Submit {
                executor,
                tasks,
                bound,
                reply,
            } => {
                self.next_call += 1;
                self.replies.insert(self.next_call, reply);
                self.pipeline
                    .submit(&executor, self.next_call, tasks, bound);
            }
            ExecInput::Proposed(command, outcome) => {
                self.pipeline.proposed(at, &command, outcome.as_ref());
                self.core.proposed(now, &command, outcome.as_ref());
            }
            ExecInput::Finished {
                executor,
                bucket,
                token,
                ok,
            } => {
                let _ = self.ended(&executor, &bucket, token);
                self.count(&executor, ok);
                self.core.finished(now, &executor, &bucket, token, ok);
            }
            ExecInput::DeadLettered {
                executor,
                bucket,
                token,
            } => {
                let _ = self.ended(&executor, &bucket, token);
                self.core.dead_lettered(now, &executor, &bucket, token);
            }
            ExecInput::Received {
                slot,
                generation,
                reply,
            } => {
                let _ = reply.send(self.core.received(now, slot, generation));
            }
        }
    }

    fn view(&mut self, _: Instant, view: &Arc<View>) {
        self.nodes = crate::wiring::members_by_replica(view);
    }

    fn timeout(&mut self, at: Instant) {
        self.core.handle_timeout(self.now_at(at));
        self.pipeline.handle_timeout(at);
    }

    fn flush(&mut self, _: Instant) {
        while let Some(output) = self.core.poll_output() {
            self.start(output);
        }
        while let Some(output) = self.pipeline.poll_output() {
            match output {
                SubmitOutput::Propose(command) => self.spawn_propose(command),
                SubmitOutput::Answer { call, answer } => {
                    if let Some(reply) = self.replies.remove(&call) {
                        let _ = reply.send(answer);
                    }
                }
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        [self.core.poll_timeout(), self.pipeline.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }
}
