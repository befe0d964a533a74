//! Which bucket batches this node runs, with no IO.
//!
//! The queues are cluster state ([`colony_runtime::consensus::exec`]). A bucket belongs to a
//! slot of the executor domain ([`bucket_slot`]); the consensus group gives each slot to one
//! node, and [`Ownership`] says when this node may act on it. While it may, this node takes up
//! to `batch_size` due tasks from the head of each bucket of its slots, draws a fencing token
//! from the slot's block and asks the shell to run the batch ([`Output::Start`]), at most one
//! batch per bucket and at most the executor's concurrency limit at once.
//!
//! A batch that succeeded does not hold its bucket until the group records it: the bucket's
//! next batch starts at once with the tasks after it, and the bucket's successes are reported
//! by one [`Command::Exec`] `Done` in flight at a time, covering every batch that succeeded
//! since the last one the state shows. A bucket's rate is then its processor's, not one batch
//! per commit. If this node dies or loses the slot first, the next owner runs the unreported
//! tasks again (processing is at-least-once; the tokens tell the runs apart). A failure or a
//! dead letter is reported alone, once the state's head is the batch's first task.
//!
//! # Safety argument
//! - A batch runs only while this node's entitlement lasts: every batch (and dead-letter call)
//!   carries the entitlement's end as its deadline, moved by [`Output::Extend`] as heartbeats
//!   extend it, and is cancelled ([`Output::Cancel`]) when it ends or the slot is dropped. A
//!   next owner serves the slot only after that entitlement ended (revocation) or after this
//!   node handed the slot over, which it does only once no batch of the slot is in process.
//! - Tokens come from the slot's block, above every block before it: they strictly increase per
//!   bucket across owners, with no clock involved.
//! - Failures, dead letters and retries are decided from the replicated attempt count, so a
//!   bucket that moves keeps its count; only the backoff wait is local.
//!
//! # Driving it
//! Feed one input (`configure`, `remove`, `set_group`, `received`, `finished`,
//! `dead_lettered`, `proposed`, `handle_timeout`), then drain [`ExecutorCore::poll_output`],
//! then sleep until [`ExecutorCore::poll_timeout`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_runtime::consensus::exec::{BatchOutcome, Bucket, ExecCommand};
use colony_runtime::consensus::{
    ClusterState, Command, Domain, Entitlement, Outcome, ReplicaId, Shared,
};
use colony_runtime::ownership::{Change, Ownership, SlotView, slot_of_parts};
use serde_bytes::ByteBuf;

use super::config::ExecutorSettings;

/// The slot of a bucket of an executor: the same on every node.
///
/// # Examples
/// ```
/// use colony_actors::executor::bucket_slot;
/// assert_eq!(bucket_slot("mail", "user-7"), bucket_slot("mail", "user-7"));
/// assert!(bucket_slot("mail", "user-7") < colony_runtime::consensus::SLOTS);
/// ```
pub fn bucket_slot(executor: &str, bucket: &str) -> u16 {
    slot_of_parts(&[executor.as_bytes(), &[0], bucket.as_bytes()])
}

/// The time of an input: this node's monotonic clock, and its wall clock in UTC milliseconds
/// (only compared with the tasks' not-before times, which are labels, never safety).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// The monotonic clock.
    pub at: Instant,
    /// The wall clock, UTC milliseconds.
    pub wall_ms: u64,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Run the processor on `tasks` (`first..=through` of the bucket), with `token`; drop the
    /// call at `deadline` unless an [`Output::Extend`] moves it. Then call
    /// [`ExecutorCore::finished`].
    Start {
        /// The executor.
        executor: String,
        /// The bucket.
        bucket: String,
        /// The batch's fencing token.
        token: u64,
        /// The first task's number.
        first: u64,
        /// The last task's number.
        through: u64,
        /// This attempt on the head, from 1.
        attempt: u32,
        /// The tasks, in order.
        tasks: Vec<ByteBuf>,
        /// When this node's entitlement ends.
        deadline: Instant,
    },
    /// Give `tasks` to the dead-letter handler, under the same deadline rule; then call
    /// [`ExecutorCore::dead_lettered`].
    DeadLetter {
        /// The executor.
        executor: String,
        /// The bucket.
        bucket: String,
        /// The batch's token.
        token: u64,
        /// The tasks, in order.
        tasks: Vec<ByteBuf>,
        /// When this node's entitlement ends.
        deadline: Instant,
    },
    /// The batch with `token` may run until `deadline` now.
    Extend {
        /// The executor.
        executor: String,
        /// The bucket.
        bucket: String,
        /// The batch's token.
        token: u64,
        /// The new deadline.
        deadline: Instant,
    },
    /// Stop the batch with `token` now (its result is ignored): drop the call before acting on
    /// any later output, since a hand-over may follow.
    Cancel {
        /// The executor.
        executor: String,
        /// The bucket.
        bucket: String,
        /// The batch's token.
        token: u64,
    },
    /// Propose `command` to the group, then call [`ExecutorCore::proposed`] with the result.
    Propose(Command),
    /// Tell `to` that it may serve `slot` (an empty hand-over: the queues are in the log).
    /// Sent again until the group records it.
    HandOver {
        /// The next owner.
        to: ReplicaId,
        /// The slot.
        slot: u16,
        /// The next owner's generation.
        generation: u64,
    },
}

/// Where a batch stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// The processor runs.
    Processing,
    /// The dead-letter handler runs.
    DeadLettering,
    /// Its `Done` (a failure or a dead letter) is proposed, or is proposed again at
    /// `retry_at` after a failed proposal.
    Reporting {
        done: Command,
        retry_at: Option<Instant>,
    },
    /// It failed or was dead-lettered after batches whose successes the state does not show
    /// yet: its `Done` waits until its first task is the head.
    Held(BatchOutcome),
}

#[derive(Debug, Clone)]
struct Batch {
    slot: u16,
    token: u64,
    first: u64,
    through: u64,
    step: Step,
}

impl Batch {
    /// Whether a side effect of the batch may be under way.
    fn in_process(&self) -> bool {
        matches!(self.step, Step::Processing | Step::DeadLettering)
    }
}

/// A bucket's batches that succeeded here and that the state does not show yet.
#[derive(Debug, Clone)]
struct Progress {
    slot: u16,
    /// The last task of the last batch that succeeded.
    through: u64,
    /// That batch's token.
    token: u64,
    /// The `Done` in flight.
    flight: Option<Flight>,
}

/// A `Done` of successes in flight: the command is made from it ([`Flight::done`]).
#[derive(Debug, Clone)]
struct Flight {
    /// The head it names.
    first: u64,
    /// The last task it covers.
    through: u64,
    /// The token of the last batch it covers.
    token: u64,
    /// When to propose it again after a failed proposal.
    retry_at: Option<Instant>,
}

impl Flight {
    /// The `Done` it is, for bucket `key`.
    fn done(&self, (executor, bucket): &Key) -> Command {
        Command::Exec(ExecCommand::Done {
            executor: executor.clone(),
            bucket: bucket.clone(),
            first: self.first,
            through: self.through,
            token: self.token,
            outcome: BatchOutcome::Succeeded,
        })
    }
}

/// A bucket and its executor.
type Key = (String, String);

/// A slot this node hands over once its batches end.
#[derive(Debug, Clone, Copy)]
struct Handing {
    to: ReplicaId,
    generation: u64,
    /// When to send it (again).
    send_at: Instant,
}

/// Timing of the core.
#[derive(Debug, Clone, Copy)]
pub struct CoreConfig {
    /// How often a hand-over is sent again while the group has not recorded it.
    pub resend: Duration,
    /// The wait before a `Done`, `Accept` or `Extend` whose proposal failed is proposed again: long enough that a
    /// group with no leader is not asked in a loop.
    pub retry: Duration,
}

/// The executors of one node. See the module doc.
///
/// # Examples
/// Two batches, end to end: a node that owns every slot runs the head of a bucket, reports it,
/// and runs the next while the report is in flight.
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, Instant};
/// use colony_actors::executor::{CoreConfig, ExecutorCore, ExecutorSettings, Now, Output};
/// use colony_runtime::consensus::exec::{ExecCommand, NewTask};
/// use colony_runtime::consensus::{
///     ClusterState, Command, Domain, Entitlement, MemberInfo, ReplicaId, SLOTS,
/// };
///
/// let me = ReplicaId(1);
/// let mut state = ClusterState::new();
/// let info = MemberInfo { name: "n1".into(), addr: "127.0.0.1:1".parse().unwrap(), incarnation: 1 };
/// state.apply(&Command::Register { replica: me, info });
/// for slot in 0..SLOTS {
///     state.apply(&Command::Assign { domain: Domain::Executor, slot, generation: 0, to: me });
/// }
/// state.apply(&Command::Exec(ExecCommand::Submit {
///     executor: "mail".into(),
///     submitter: (me, 1),
///     seq: 1,
///     bound: 100,
///     tasks: vec![NewTask::new("user-7", b"a".to_vec(), 0), NewTask::new("user-7", b"b".to_vec(), 0)],
/// }));
///
/// let t0 = Instant::now();
/// let now = Now { at: t0, wall_ms: 1_800_000_000_000 };
/// let entitlement = Some(Entitlement { epoch: 1, until: t0 + Duration::from_secs(5) });
/// let config = CoreConfig { resend: Duration::from_millis(300), retry: Duration::from_millis(200) };
/// let mut core = ExecutorCore::new(me, Domain::Executor, config);
/// core.configure(now, "mail", ExecutorSettings::default());
/// core.set_group(now, Arc::new(state.clone()), Some(1), entitlement);
/// let Some(Output::Start { token, tasks, .. }) = core.poll_output() else { panic!() };
/// assert_eq!(tasks, [serde_bytes::ByteBuf::from(b"a".to_vec())]);
///
/// // The processor succeeded: the core proposes the Done and starts the next batch.
/// core.finished(now, "mail", "user-7", token, true);
/// let Some(Output::Propose(done)) = core.poll_output() else { panic!() };
/// let Some(Output::Start { tasks, token: next, .. }) = core.poll_output() else { panic!() };
/// assert_eq!(tasks, [serde_bytes::ByteBuf::from(b"b".to_vec())]);
/// assert!(next > token);
///
/// // The group applies the Done; the core hears the outcome, then gets the new state.
/// let outcome = state.apply(&done);
/// core.proposed(now, &done, Some(&outcome));
/// core.set_group(now, Arc::new(state.clone()), Some(1), entitlement);
/// assert_eq!(state.exec.depth("mail"), 1);
/// ```
#[derive(Debug)]
pub struct ExecutorCore {
    config: CoreConfig,
    domain: Domain,
    own: Ownership,
    state: Arc<ClusterState>,
    entitlement: Option<Entitlement>,
    executors: BTreeMap<String, ExecutorSettings>,
    batches: BTreeMap<Key, Batch>,
    /// Per bucket: successes not yet in the state.
    progress: BTreeMap<Key, Progress>,
    /// Per bucket: the head that failed, and when it may be tried again.
    backoff: BTreeMap<Key, (u64, Instant)>,
    /// Per executor: the bucket started last; the next search starts after it.
    cursor: BTreeMap<String, String>,
    /// Executors whose last scan stopped at their limit: a bucket may wait that no state
    /// change names, so the next state change scans them whole.
    starved: BTreeSet<String>,
    handing: BTreeMap<u16, Handing>,
    /// When the earliest head that is not yet due becomes due.
    due: Option<Instant>,
    /// Ownership commands (`Accept`, `Extend`) whose proposal failed, asked again at the time
    /// given: a group with no leader fails them at once, and the status that follows would
    /// otherwise ask again in the same instant, for ever.
    own_failed: Option<(Instant, Vec<Command>)>,
    outputs: VecDeque<Output>,
}

impl ExecutorCore {
    /// A core for member `me`, serving the slots of `domain`.
    pub fn new(me: ReplicaId, domain: Domain, config: CoreConfig) -> Self {
        ExecutorCore {
            config,
            domain,
            own: Ownership::new(me, domain),
            state: Arc::new(ClusterState::new()),
            entitlement: None,
            executors: BTreeMap::new(),
            batches: BTreeMap::new(),
            progress: BTreeMap::new(),
            backoff: BTreeMap::new(),
            cursor: BTreeMap::new(),
            starved: BTreeSet::new(),
            handing: BTreeMap::new(),
            due: None,
            own_failed: None,
            outputs: VecDeque::new(),
        }
    }

    // ---- getters ----

    /// Buckets of `executor` in process on this node (processor or dead-letter handler).
    pub fn in_process(&self, executor: &str) -> usize {
        self.batches
            .iter()
            .filter(|((e, _), b)| e == executor && b.in_process())
            .count()
    }

    /// Buckets of `executor` this node may have in process at once now: its per-node limit,
    /// or its per-cluster one over the members whose epoch has not ended.
    pub fn limit(&self, executor: &str) -> usize {
        self.executors
            .get(executor)
            .map_or(0, |s| s.concurrency.limit_in(&self.state))
    }

    /// Which slots this node serves, as it stands.
    pub fn ownership(&self) -> &Ownership {
        &self.own
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the next deadline is: an entitlement end with batches in process, a backoff, a
    /// task becoming due, a hand-over to send, or a `Done` to propose again.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let end = self
            .entitlement
            .filter(|_| self.batches.values().any(Batch::in_process))
            .map(|e| e.until);
        let backoff = self.backoff.values().map(|(_, until)| *until).min();
        // A slot with batches left is handed over when they end (a state change), not on a
        // timer: its send time may be long past, and asking for it would wake the shell in a
        // loop (found by the simulator).
        let handing = self
            .handing
            .iter()
            .filter(|(slot, _)| !self.slot_busy(**slot))
            .map(|(_, h)| h.send_at)
            .min();
        let retry = self
            .batches
            .values()
            .filter_map(|b| match b.step {
                Step::Reporting { retry_at, .. } => retry_at,
                _ => None,
            })
            .chain(
                self.progress
                    .values()
                    .filter_map(|p| p.flight.as_ref()?.retry_at),
            )
            .min();
        let own_retry = self.own_failed.as_ref().map(|(at, _)| *at);
        [end, backoff, handing, retry, own_retry, self.due]
            .into_iter()
            .flatten()
            .min()
    }

    // ---- named commands ----

    /// Runs `executor` on this node with `settings` (replacing earlier settings).
    pub fn configure(&mut self, now: Now, executor: &str, settings: ExecutorSettings) {
        self.executors.insert(executor.to_owned(), settings);
        self.pump(now);
    }

    /// Stops running `executor` on this node: its batches in process are cancelled.
    pub fn remove(&mut self, now: Now, executor: &str) {
        if self.executors.remove(executor).is_none() {
            return;
        }
        self.cancel_where(|(e, _), _| e == executor);
        self.backoff.retain(|(e, _), _| e != executor);
        self.cursor.remove(executor);
        self.pump(now);
    }

    // ---- inputs ----

    /// The group's state as this node applied it, and this node's epoch and entitlement.
    pub fn set_group(
        &mut self,
        now: Now,
        state: Arc<ClusterState>,
        epoch: Option<u64>,
        entitlement: Option<Entitlement>,
    ) {
        let old = std::mem::replace(&mut self.state, state);
        let before = std::mem::replace(&mut self.entitlement, entitlement);
        let changes = self.own.update(&self.state, epoch);
        // The common case, a command applied while nothing else moved: only the buckets it
        // changed are looked at. Anything else (slots, members, the entitlement's epoch or an
        // end reached) passes over every bucket.
        let steady = changes.is_empty()
            && same_grounds(&old, &self.state, self.domain)
            && [before, entitlement]
                .iter()
                .all(|e| e.is_some_and(|e| e.until > now.at))
            && before.map(|e| e.epoch) == entitlement.map(|e| e.epoch);
        for change in changes {
            match change {
                // The queues are in the log: a slot carries nothing else.
                Change::ServeFresh { .. } => {}
                Change::Resume { slot } => {
                    self.handing.remove(&slot);
                }
                Change::Handed { slot } | Change::Drop { slot } => self.forget_slot(slot),
                Change::HandOver {
                    slot,
                    to,
                    generation,
                } => {
                    self.handing.insert(
                        slot,
                        Handing {
                            to,
                            generation,
                            send_at: now.at,
                        },
                    );
                }
            }
        }
        // Heartbeats move the entitlement's end: so do the deadlines of batches in process.
        if let (Some(old), Some(new)) = (before, entitlement)
            && old.epoch == new.epoch
            && new.until > old.until
        {
            for ((executor, bucket), b) in &self.batches {
                if b.in_process() {
                    self.outputs.push_back(Output::Extend {
                        executor: executor.clone(),
                        bucket: bucket.clone(),
                        token: b.token,
                        deadline: new.until,
                    });
                }
            }
        }
        if steady {
            self.pump_changed(now, &old);
        } else {
            self.pump(now);
        }
    }

    /// The previous owner of `slot` handed it over for `generation`. Returns whether this node
    /// awaited it (else the sender tries again).
    pub fn received(&mut self, now: Now, slot: u16, generation: u64) -> bool {
        // No lease travels with it: the previous owner's batches ended before it sent.
        let taken = self.own.received(&self.state, slot, generation, now.at);
        self.pump(now);
        taken
    }

    /// The processor finished the batch with `token`: succeeded or not.
    pub fn finished(&mut self, now: Now, executor: &str, bucket: &str, token: u64, ok: bool) {
        // A batch whose entitlement ended is cancelled first, whatever it returned: a process
        // that wakes from a pause may see its processor return before the shell drops it, and
        // the bucket may be another node's by then (found by the simulator).
        self.cancel_if_ended(now, executor, bucket);
        let Some(b) = self.batch(executor, bucket, token, &Step::Processing) else {
            return;
        };
        let first = b.first;
        let max = self.executors.get(executor).map_or(1, |s| s.max_attempts);
        let attempts = self.head_attempts(executor, bucket, first);
        if ok {
            // What a pump would change: this bucket's report and next batch, and only if the
            // executor was at its limit, another bucket's batch. Time and the state move the
            // rest, on their own inputs.
            let at_limit = self.in_process(executor) >= self.limit(executor);
            self.succeeded(executor, bucket);
            if at_limit {
                self.pump(now);
            } else {
                self.step_bucket(now, executor, bucket);
            }
            return;
        } else if attempts.is_none_or(|a| a + 1 < max) {
            self.report(executor, bucket, BatchOutcome::Failed);
        } else {
            self.dead_letter(executor, bucket, now.at);
        }
        self.pump(now);
    }

    /// The dead-letter handler took the batch with `token`.
    pub fn dead_lettered(&mut self, now: Now, executor: &str, bucket: &str, token: u64) {
        // As in `finished`: past the entitlement, the call is cancelled, not reported.
        self.cancel_if_ended(now, executor, bucket);
        if self
            .batch(executor, bucket, token, &Step::DeadLettering)
            .is_some()
        {
            self.report(executor, bucket, BatchOutcome::DeadLettered);
        }
        self.pump(now);
    }

    /// A command from [`Output::Propose`] was applied (`Some`), or failed (`None`): it is
    /// proposed again after [`CoreConfig::retry`]. A batch ends once the state from [`ExecutorCore::set_group`] shows its `Done`,
    /// not on this answer: the answer may come before the state that includes it, and a batch
    /// started from the older state would run the same tasks again.
    pub fn proposed(&mut self, now: Now, command: &Command, outcome: Option<&Outcome>) {
        if outcome.is_some() {
            return;
        }
        let retry_at = now.at + self.config.retry;
        if matches!(command, Command::Accept { .. } | Command::Extend { .. }) {
            let (_, failed) = self.own_failed.get_or_insert((retry_at, Vec::new()));
            failed.push(command.clone());
        }
        let Command::Exec(ExecCommand::Done {
            executor, bucket, ..
        }) = command
        else {
            return;
        };
        let key = (executor.clone(), bucket.clone());
        if let Some(f) = self.flight_of(command) {
            f.retry_at = Some(retry_at);
        } else if let Some(b) = self.batches.get_mut(&key)
            && let Step::Reporting { done, retry_at: at } = &mut b.step
            && done == command
        {
            *at = Some(retry_at);
        }
    }

    /// `slot` is another node's now: its batches in process are cancelled, and its successes
    /// not yet reported are forgotten (the next owner runs them again) but for what a `Done`
    /// in flight covers, which still ends. A failure held behind them goes too: the next
    /// owner's attempt counts instead.
    fn forget_slot(&mut self, slot: u16) {
        self.handing.remove(&slot);
        self.cancel_where(|_, b| b.slot == slot);
        self.progress.retain(|_, p| {
            if p.slot != slot {
                return true;
            }
            let Some(f) = &p.flight else {
                return false;
            };
            (p.through, p.token) = (f.through, f.token);
            true
        });
        self.batches
            .retain(|_, b| b.slot != slot || !matches!(b.step, Step::Held(_)));
    }

    /// After a success: proposes the bucket's `Done` if none is in flight and starts its next
    /// batch.
    fn step_bucket(&mut self, now: Now, executor: &str, bucket: &str) {
        let entitled = self.entitlement.filter(|e| e.until > now.at);
        // Settled first: the head may have passed these successes (another node's late
        // report), and a `Done` made from it would name a head past its last task.
        self.refresh(now.at, &(executor.to_owned(), bucket.to_owned()), entitled);
        if entitled.is_some() {
            self.start(now, executor, entitled, Some(&[bucket.to_owned()]));
        }
    }

    /// Brings everything in line with the time (cancelling what may no longer run) if the
    /// batch of a bucket may no longer run: the cheap check before its end is taken.
    fn cancel_if_ended(&mut self, now: Now, executor: &str, bucket: &str) {
        let entitled = self.entitlement.filter(|e| e.until > now.at);
        if self
            .batches
            .get(&(executor.to_owned(), bucket.to_owned()))
            .is_some_and(|b| !may_run(&self.own, b.slot, now.at, entitled))
        {
            self.pump(now);
        }
    }

    /// The `Done` of successes in flight that `command` is.
    fn flight_of(&mut self, command: &Command) -> Option<&mut Flight> {
        let Command::Exec(ExecCommand::Done {
            executor,
            bucket,
            first,
            through,
            token,
            outcome: BatchOutcome::Succeeded,
        }) = command
        else {
            return None;
        };
        self.progress
            .get_mut(&(executor.clone(), bucket.clone()))?
            .flight
            .as_mut()
            .filter(|f| (f.first, f.through, f.token) == (*first, *through, *token))
    }

    /// Cancels batches whose entitlement ended, and starts what is due.
    pub fn handle_timeout(&mut self, now: Now) {
        self.pump(now);
    }

    // ---- the work ----

    /// The batch of a bucket with `token`, if it is at `step`.
    fn batch(&self, executor: &str, bucket: &str, token: u64, step: &Step) -> Option<&Batch> {
        self.batches
            .get(&(executor.to_owned(), bucket.to_owned()))
            .filter(|b| b.token == token && &b.step == step)
    }

    fn batch_mut(&mut self, executor: &str, bucket: &str) -> Option<&mut Batch> {
        self.batches
            .get_mut(&(executor.to_owned(), bucket.to_owned()))
    }

    /// The number of a bucket's head in the state.
    fn head(&self, executor: &str, bucket: &str) -> Option<u64> {
        head_of(&self.state, executor, bucket)
    }

    /// Failed attempts on a batch's first task: the state's count if it is the bucket's head,
    /// none if it follows successes the state does not show yet, `None` if the head moved past
    /// it.
    fn head_attempts(&self, executor: &str, bucket: &str, first: u64) -> Option<u32> {
        let b = self.state.exec.bucket(executor, bucket)?;
        match b.tasks.front()?.id.cmp(&first) {
            std::cmp::Ordering::Equal => Some(b.attempts),
            std::cmp::Ordering::Less => Some(0),
            std::cmp::Ordering::Greater => None,
        }
    }

    /// Adds a bucket's batch that succeeded to the bucket's successes to report.
    fn succeeded(&mut self, executor: &str, bucket: &str) {
        let key = (executor.to_owned(), bucket.to_owned());
        let Some(b) = self.batches.remove(&key) else {
            return;
        };
        let p = self.progress.entry(key).or_insert(Progress {
            slot: b.slot,
            through: b.through,
            token: b.token,
            flight: None,
        });
        p.through = b.through;
        p.token = b.token;
    }

    /// Moves a bucket's batch to proposing its `Done` (a failure or a dead letter), or to
    /// waiting for earlier successes to reach the state first.
    fn report(&mut self, executor: &str, bucket: &str, outcome: BatchOutcome) {
        let head = self.head(executor, bucket);
        let Some(b) = self.batch_mut(executor, bucket) else {
            return;
        };
        if head.is_some_and(|h| h < b.first) {
            b.step = Step::Held(outcome);
            return;
        }
        let done = Command::Exec(ExecCommand::Done {
            executor: executor.to_owned(),
            bucket: bucket.to_owned(),
            first: b.first,
            through: b.through,
            token: b.token,
            outcome,
        });
        b.step = Step::Reporting {
            done: done.clone(),
            retry_at: None,
        };
        self.outputs.push_back(Output::Propose(done));
    }

    /// Moves a bucket's batch to the dead-letter handler.
    fn dead_letter(&mut self, executor: &str, bucket: &str, deadline: Instant) {
        let Some(b) = self.batch_mut(executor, bucket) else {
            return;
        };
        b.step = Step::DeadLettering;
        let (token, first, through) = (b.token, b.first, b.through);
        let tasks = self
            .state
            .exec
            .bucket(executor, bucket)
            .into_iter()
            .flat_map(|q| q.tasks.focus().narrow(q.position_after(first - 1)..))
            .take_while(|t| t.id <= through)
            .map(|t| t.bytes.clone())
            .collect();
        self.outputs.push_back(Output::DeadLetter {
            executor: executor.to_owned(),
            bucket: bucket.to_owned(),
            token,
            tasks,
            deadline: self.entitlement.map_or(deadline, |e| e.until),
        });
    }

    /// Cancels the batches in process that `which` picks.
    fn cancel_where(&mut self, which: impl Fn(&Key, &Batch) -> bool) {
        cancel(&mut self.batches, &mut self.outputs, which);
    }

    /// Cancels the batches that may no longer run, and proposes what the slots' ownership
    /// needs (again, after a failed proposal's wait).
    fn keep_entitled(&mut self, now: Instant, entitled: Option<Entitlement>) {
        let own = &self.own;
        cancel(&mut self.batches, &mut self.outputs, |_, b| {
            !may_run(own, b.slot, now, entitled)
        });
        if let Some((_, failed)) = self.own_failed.take_if(|(at, _)| *at <= now) {
            for c in &failed {
                self.own.proposal_failed(c);
            }
        }
        for c in self.own.proposals(entitled) {
            self.outputs.push_back(Output::Propose(c));
        }
    }

    /// Brings everything in line with the time, the state and the entitlement: cancels what
    /// may no longer run, proposes again what failed, hands over idle slots, starts batches.
    fn pump(&mut self, now: Now) {
        let entitled = self.entitlement.filter(|e| e.until > now.at);
        self.keep_entitled(now.at, entitled);
        for b in self.batches.values_mut() {
            if let Step::Reporting { done, retry_at } = &mut b.step
                && retry_at.is_some_and(|at| at <= now.at)
            {
                *retry_at = None;
                self.outputs.push_back(Output::Propose(done.clone()));
            }
        }
        for (key, p) in &mut self.progress {
            if let Some(f) = &mut p.flight
                && f.retry_at.is_some_and(|at| at <= now.at)
            {
                f.retry_at = None;
                self.outputs.push_back(Output::Propose(f.done(key)));
            }
        }
        // Every bucket this node works on, settled and reported the way a state change settles
        // the buckets it names.
        let keys: BTreeSet<Key> = (self.progress.keys())
            .chain(self.batches.keys())
            .chain(self.backoff.keys())
            .cloned()
            .collect();
        for key in &keys {
            self.refresh(now.at, key, entitled);
        }
        self.hand_over(now.at);
        // Backoffs waited out are done with (those of heads that moved on went above).
        self.backoff.retain(|_, (_, until)| *until > now.at);
        self.due = None;
        if entitled.is_some() {
            let executors: Vec<String> = self.executors.keys().cloned().collect();
            for executor in executors {
                self.start(now, &executor, entitled, None);
            }
        }
    }

    /// [`ExecutorCore::pump`] after a state change that moved nothing but buckets: settles,
    /// reports and starts the buckets that changed since `old`, and scans an executor whose
    /// last scan stopped at its limit.
    fn pump_changed(&mut self, now: Now, old: &ClusterState) {
        let entitled = self.entitlement;
        self.keep_entitled(now.at, entitled);
        let mut ended = false;
        let executors: Vec<String> = self.executors.keys().cloned().collect();
        for executor in executors {
            let changed = self.state.exec.changed_since(&old.exec, &executor);
            for bucket in &changed {
                ended |= self.refresh(now.at, &(executor.clone(), bucket.clone()), entitled);
            }
            if self.starved.contains(&executor) {
                self.start(now, &executor, entitled, None);
            } else if !changed.is_empty() {
                self.start(now, &executor, entitled, Some(&changed));
            }
        }
        if ended {
            self.hand_over(now.at);
        }
    }

    /// Settles one bucket and proposes its successes' `Done` if none is in flight; returns
    /// whether something of it ended here.
    fn refresh(&mut self, now: Instant, key: &Key, entitled: Option<Entitlement>) -> bool {
        let ended = self.settle_one(now, key);
        if let Some(p) = self.progress.get_mut(key) {
            report_one(
                &mut self.outputs,
                (&self.state, &self.own, now, entitled),
                key,
                p,
            );
        }
        ended
    }

    /// Ends what of a bucket the state shows done: successes the head passed, a report that
    /// applied (a failure: the head waits out its backoff here), a held failure whose turn came
    /// (reported now) or that another node's report passed, a backoff whose head moved on.
    /// Returns whether something of it ended here.
    fn settle_one(&mut self, now: Instant, key: &Key) -> bool {
        let state = &self.state;
        let mut gone = false;
        if let Some(p) = self.progress.get_mut(key)
            && !keep_progress(p, head_of(state, &key.0, &key.1))
        {
            self.progress.remove(key);
            gone = true;
        }
        if let Some(b) = self.batches.get(key) {
            let end = batch_end(b, state.exec.bucket(&key.0, &key.1));
            if !matches!(end, BatchEnd::Keep | BatchEnd::Release(_)) {
                self.batches.remove(key);
                gone = true;
            }
            if !matches!(end, BatchEnd::Keep | BatchEnd::Drop) {
                self.batch_ended(now, key.clone(), end);
            }
        }
        if let Some((head, _)) = self.backoff.get(key)
            && head_of(&self.state, &key.0, &key.1) != Some(*head)
        {
            self.backoff.remove(key);
        }
        gone
    }

    /// What follows a batch's end that [`batch_end`] found: a failure's backoff, or a held
    /// report proposed.
    fn batch_ended(&mut self, now: Instant, key: Key, end: BatchEnd) {
        match end {
            BatchEnd::Failed { first, attempts } => {
                let wait = self
                    .executors
                    .get(&key.0)
                    .map_or(Duration::ZERO, |s| s.backoff.after(attempts));
                self.backoff.insert(key, (first, now + wait));
            }
            BatchEnd::Release(outcome) => self.report(&key.0, &key.1, outcome),
            BatchEnd::Keep | BatchEnd::Drop => {}
        }
    }

    /// Whether a batch of `slot` runs or waits for its report here: the slot is handed over
    /// only after, so that the next owner neither overlaps it nor runs its tasks again.
    fn slot_busy(&self, slot: u16) -> bool {
        self.batches.values().any(|b| b.slot == slot)
            || self.progress.values().any(|p| p.slot == slot)
    }

    /// Sends the hand-overs of slots with no batch left.
    fn hand_over(&mut self, now: Instant) {
        let busy: Vec<u16> = self
            .handing
            .keys()
            .copied()
            .filter(|slot| self.slot_busy(*slot))
            .collect();
        for (slot, h) in &mut self.handing {
            if !busy.contains(slot) && h.send_at <= now {
                h.send_at = now + self.config.resend;
                self.outputs.push_back(Output::HandOver {
                    to: h.to,
                    slot: *slot,
                    generation: h.generation,
                });
            }
        }
    }

    /// Starts batches of `executor` up to its limit, from the bucket after the last started.
    ///
    /// Over every bucket with tasks (`only` none), the buckets this node already works on are
    /// looked up in sorted lists of borrowed names, not by keys built per bucket; over a few
    /// (`only`), by key.
    fn start(
        &mut self,
        now: Now,
        executor: &str,
        entitled: Option<Entitlement>,
        only: Option<&[String]>,
    ) {
        let Some(settings) = self.executors.get(executor).copied() else {
            return;
        };
        let limit = settings.concurrency.limit_in(&self.state);
        let mut running = self.in_process(executor);
        if running >= limit {
            self.starved.insert(executor.to_owned());
            return;
        }
        if only.is_none() {
            self.starved.remove(executor);
        }
        let state = Arc::clone(&self.state);
        let Some(queues) = state.exec.executors.get(executor) else {
            return;
        };
        let cursor = self.cursor.get(executor).cloned().unwrap_or_default();
        let after = queues
            .buckets
            .range::<_, str>((Bound::Excluded(cursor.as_str()), Bound::Unbounded));
        let before = queues
            .buckets
            .range::<_, str>((Bound::Unbounded, Bound::Included(cursor.as_str())));
        let buckets: Box<dyn Iterator<Item = (&String, &Shared<Bucket>)>> = match only {
            Some(list) => Box::new(
                list.iter()
                    .filter_map(|b| queues.buckets.get_key_value(b.as_str())),
            ),
            None => Box::new(after.chain(before)),
        };
        // The buckets that may start a batch, in order: served here, none in process or
        // waiting here, not backing off, a due task after what ran here.
        let mut ready = Vec::new();
        {
            let known = if only.is_some() {
                Known::Maps {
                    executor,
                    batches: &self.batches,
                    backoff: &self.backoff,
                    progress: &self.progress,
                }
            } else {
                let lo = (executor.to_owned(), String::new());
                Known::Lists {
                    busy: of_executor(&self.batches, &lo, |_| ()),
                    backoff: of_executor(&self.backoff, &lo, |(_, until)| *until),
                    ran: of_executor(&self.progress, &lo, |p| p.through),
                }
            };
            for (bucket, queue) in buckets {
                let slot = bucket_slot(executor, bucket);
                if known.busy(bucket) || !self.own.may_serve(slot, now.at, entitled) {
                    continue;
                }
                if let Some(until) = known.backoff(bucket) {
                    earliest(&mut self.due, until);
                    continue;
                }
                let ran = known.ran(bucket);
                let at = queue.position_after(ran);
                let Some(next) = queue.tasks.get(at) else {
                    continue;
                };
                if next.not_before_ms > now.wall_ms {
                    let wait = Duration::from_millis(next.not_before_ms - now.wall_ms);
                    earliest(&mut self.due, now.at + wait);
                    continue;
                }
                ready.push((bucket, queue, slot, ran, at));
            }
        }
        for (bucket, queue, slot, ran, at) in ready {
            let Some(token) = self.own.issue(slot, now.at, entitled) else {
                continue;
            };
            let deadline = entitled.map_or(now.at, |e| e.until);
            let tasks: Vec<_> = state
                .exec
                .after(
                    executor,
                    bucket,
                    ran,
                    settings.batch_size.max(1),
                    now.wall_ms,
                )
                .collect();
            let first = queue.tasks[at].id;
            let through = tasks.last().map_or(first, |t| t.id);
            let mut batch = Batch {
                slot,
                token,
                first,
                through,
                step: Step::Processing,
            };
            let key = (executor.to_owned(), bucket.clone());
            // The replicated count is the head's; a task after it has not failed yet.
            let attempts = if at == 0 { queue.attempts } else { 0 };
            if attempts >= settings.max_attempts.max(1) {
                // Its last attempt failed where the dead letter was not recorded (the node
                // died first): hand it over to the dead-letter handler without running it again.
                // Only the head: every failed attempt ran it, but the tasks after it may have
                // come since and never run (found by the simulator).
                batch.through = batch.first;
                batch.step = Step::DeadLettering;
                self.batches.insert(key, batch);
                self.dead_letter(executor, bucket, deadline);
            } else {
                self.outputs.push_back(Output::Start {
                    executor: executor.to_owned(),
                    bucket: bucket.clone(),
                    token,
                    first,
                    through,
                    attempt: attempts + 1,
                    tasks: tasks.into_iter().map(|t| t.bytes.clone()).collect(),
                    deadline,
                });
                self.batches.insert(key, batch);
            }
            self.cursor.insert(executor.to_owned(), bucket.clone());
            running += 1;
            if running >= limit {
                self.starved.insert(executor.to_owned());
                break;
            }
        }
    }
}

/// Proposes a `Done` of the successes `p` of bucket `key` if none is in flight and this node
/// may still run the bucket's slot: the successes from the head on, in one command.
fn report_one(
    outputs: &mut VecDeque<Output>,
    (state, own, now, entitled): (&ClusterState, &Ownership, Instant, Option<Entitlement>),
    key: &Key,
    p: &mut Progress,
) {
    if p.flight.is_some() || !may_run(own, p.slot, now, entitled) {
        return;
    }
    let Some(first) = head_of(state, &key.0, &key.1) else {
        return;
    };
    let flight = Flight {
        first,
        through: p.through,
        token: p.token,
        retry_at: None,
    };
    outputs.push_back(Output::Propose(flight.done(key)));
    p.flight = Some(flight);
}

/// What this node holds of an executor's buckets, for a scan: sorted lists of borrowed names
/// for a pass over every bucket (no key built per bucket), the maps by key for a few buckets.
enum Known<'a> {
    Lists {
        busy: Vec<(&'a str, ())>,
        backoff: Vec<(&'a str, Instant)>,
        ran: Vec<(&'a str, u64)>,
    },
    Maps {
        executor: &'a str,
        batches: &'a BTreeMap<Key, Batch>,
        backoff: &'a BTreeMap<Key, (u64, Instant)>,
        progress: &'a BTreeMap<Key, Progress>,
    },
}

impl Known<'_> {
    fn key(executor: &str, bucket: &str) -> Key {
        (executor.to_owned(), bucket.to_owned())
    }

    /// A batch of `bucket` is in process or waits for its report here.
    fn busy(&self, bucket: &str) -> bool {
        match self {
            Known::Lists { busy, .. } => find(busy, bucket).is_some(),
            Known::Maps {
                executor, batches, ..
            } => batches.contains_key(&Self::key(executor, bucket)),
        }
    }

    /// When `bucket`'s head may be tried again, if it backs off.
    fn backoff(&self, bucket: &str) -> Option<Instant> {
        match self {
            Known::Lists { backoff, .. } => find(backoff, bucket),
            Known::Maps {
                executor, backoff, ..
            } => backoff
                .get(&Self::key(executor, bucket))
                .map(|(_, until)| *until),
        }
    }

    /// The last task of `bucket` that succeeded here and the state does not show (0: none).
    fn ran(&self, bucket: &str) -> u64 {
        match self {
            Known::Lists { ran, .. } => find(ran, bucket).unwrap_or(0),
            Known::Maps {
                executor, progress, ..
            } => progress
                .get(&Self::key(executor, bucket))
                .map_or(0, |p| p.through),
        }
    }
}

/// Whether nothing but the queues differs between `a` and `b` for this node's work: the slots
/// of `domain` (owners and blocks) and the members' epochs and phases (the per-cluster limit).
fn same_grounds(a: &ClusterState, b: &ClusterState, domain: Domain) -> bool {
    a.slots.get(&domain) == b.slots.get(&domain)
        && a.liveness.len() == b.liveness.len()
        && a.liveness
            .iter()
            .zip(&b.liveness)
            .all(|((ra, la), (rb, lb))| ra == rb && la.epoch == lb.epoch && la.phase == lb.phase)
}

/// The value for `bucket` in a list from [`of_executor`].
fn find<T: Copy>(list: &[(&str, T)], bucket: &str) -> Option<T> {
    list.binary_search_by(|(b, _)| (*b).cmp(bucket))
        .ok()
        .map(|i| list[i].1)
}

/// The entries of `executor` (whose first key is `lo`) in a per-bucket map, as a list sorted
/// by bucket, with what `value` takes from each.
fn of_executor<'a, V, T>(
    map: &'a BTreeMap<Key, V>,
    lo: &Key,
    value: impl Fn(&V) -> T,
) -> Vec<(&'a str, T)> {
    map.range(lo..)
        .take_while(|((e, _), _)| *e == lo.0)
        .map(|((_, b), v)| (b.as_str(), value(v)))
        .collect()
}

/// Removes the batches in process that `which` picks, each with an [`Output::Cancel`].
fn cancel(
    batches: &mut BTreeMap<Key, Batch>,
    outputs: &mut VecDeque<Output>,
    which: impl Fn(&Key, &Batch) -> bool,
) {
    batches.retain(|key, b| {
        let cancel = b.in_process() && which(key, b);
        if cancel {
            outputs.push_back(Output::Cancel {
                executor: key.0.clone(),
                bucket: key.1.clone(),
                token: b.token,
            });
        }
        !cancel
    });
}

/// Whether a batch of `slot` may go on running: the slot is this node's, or is being handed
/// over (the next owner waits for this node's batches), and the entitlement lasts.
fn may_run(own: &Ownership, slot: u16, now: Instant, entitled: Option<Entitlement>) -> bool {
    let handing = matches!(own.view(slot), SlotView::HandingOver { .. });
    own.may_serve(slot, now, entitled) || (handing && entitled.is_some())
}

/// Whether a bucket's successes still wait for the state, given its head: a `Done` of them
/// ends once the head passed its last task, or once the head left the task it names (another
/// node's late report moved it: the head only moves on, so that `Done` can never apply and is
/// made again from the new head); the successes end once the head passed them all.
fn keep_progress(p: &mut Progress, head: Option<u64>) -> bool {
    let past = |through: u64| head.is_none_or(|h| h > through);
    if p.flight
        .as_ref()
        .is_some_and(|f| past(f.through) || head != Some(f.first))
    {
        p.flight = None;
    }
    p.flight.is_some() || !past(p.through)
}

/// Where a batch that is not in process stands, given its bucket's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchEnd {
    /// It goes on: in process, or its report not in the state yet.
    Keep,
    /// It ended: its report applied, or another node moved the head past it.
    Drop,
    /// Its failure applied: the head waits out a backoff.
    Failed { first: u64, attempts: u32 },
    /// Held behind successes that are in the state now: report it.
    Release(BatchOutcome),
}

fn batch_end(b: &Batch, queue: Option<&Bucket>) -> BatchEnd {
    if b.in_process() {
        return BatchEnd::Keep;
    }
    let head = queue.and_then(|q| q.tasks.front()).map(|t| t.id);
    if let Step::Held(outcome) = b.step {
        // Reported once the successes before it are in the state; gone if another node moved
        // the head past it.
        return match head {
            Some(h) if h == b.first => BatchEnd::Release(outcome),
            Some(h) if h < b.first => BatchEnd::Keep,
            _ => BatchEnd::Drop,
        };
    }
    let at_head = head == Some(b.first);
    if at_head && queue.is_some_and(|q| q.reported >= b.token) {
        let attempts = queue.map_or(0, |q| q.attempts);
        BatchEnd::Failed {
            first: b.first,
            attempts,
        }
    } else if at_head {
        BatchEnd::Keep
    } else {
        BatchEnd::Drop
    }
}

/// The number of a bucket's head in `state`.
fn head_of(state: &ClusterState, executor: &str, bucket: &str) -> Option<u64> {
    state
        .exec
        .bucket(executor, bucket)
        .and_then(|q| q.tasks.front())
        .map(|t| t.id)
}

/// Keeps the earlier of `at` and what `due` holds.
fn earliest(due: &mut Option<Instant>, at: Instant) {
    *due = Some(due.map_or(at, |d| d.min(at)));
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
