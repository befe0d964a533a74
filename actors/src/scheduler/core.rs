//! The scheduler of one node, with no IO.
//!
//! Drive it with inputs (`set_group`, `register`, `unregister`, `schedule`, `unschedule`,
//! `run_finished`, `proposal_failed`, `handle_timeout`), then drain
//! [`SchedulerCore::poll_output`], then sleep until [`SchedulerCore::poll_timeout`]. The work
//! an input makes due is done at the first `poll_output` after it (the tick), once for a
//! burst of inputs: a busy group reports hundreds of statuses a second.
//!
//! A tick looks only at the jobs that may need something: those the state changed since the
//! last tick ([`JobTable::changed_since`](colony_runtime::consensus::jobs::JobTable::changed_since),
//! which skips what two copies of the state share), and those whose due time or proposal's retry
//! time came ([`Timers`]). Everything else a job's
//! next step rests on (this node's epoch, entitlement and slots, the members' epochs, the
//! runner keys: [`Grounds`]) changes rarely; when it does, the tick looks at every job.
//!
//! # What it does
//! - **Owner.** Jobs belong to the slots of [`Domain::Jobs`]. For each job of a slot this node
//!   may serve ([`Ownership::may_serve`]: given to it in its epoch, while its entitlement
//!   lasts), it proposes what [`plan::next_command`] says when the job is due on this node's
//!   wall clock: one command per job at a time, asked again after `retry` or once the state
//!   moved on. Any other node proposing the same is harmless: the group applies a due time once.
//! - **Runner.** It starts a run (once per token) only when the state it applied holds a fire
//!   naming this node in its current epoch, while its entitlement lasts, and tells a run it
//!   lost its fire ([`Output::Abort`]) when that entitlement ends or the fire was given to
//!   another node: the fire is given again only after this node's epoch was revoked, which
//!   happens after its entitlement ended. A finished run's `Finish` is fenced by its token.
//! - **Runner keys** are registered for this node's epoch ([`JobCommand::Runners`]), none
//!   too, and again in every new epoch.
//! - **Local jobs** fire on this node's wall clock only ([`super::local`]).
//!
//! No clock decides a fire: the wall clock says when to propose, the log whether it fires.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_runtime::consensus::jobs::{Job, JobCommand, RunOutcome};
use colony_runtime::consensus::{ClusterState, Command, Domain, Entitlement, ReplicaId, SLOTS};
use colony_runtime::ownership::{Ownership, SlotView, slot_of};

use super::config::{JobConfig, RunMode, decode_config, encode_config};
use super::local::{LocalJob, Step};
use super::plan;
use super::schedule::ScheduleError;
use super::timers::Timers;

/// Timing of the scheduler core.
#[derive(Debug, Clone, Copy)]
pub struct CoreConfig {
    /// How late a due time may fire and still count as on time (later ones are missed: the
    /// misfire policy decides).
    pub grace: Duration,
    /// How long a proposal is awaited before it is made again.
    pub retry: Duration,
    /// Run records kept per job.
    pub history: u16,
    /// How long a node with no runner key waits, from its first entitlement, before it states
    /// that it has none. Owners pass no due time for want of a runner until every live node
    /// stated its keys ([`plan::runners_known`]); the application registers its runners just
    /// after the node starts, and a cluster started again after a stop would otherwise pass its
    /// downtime's due times as `NoRunner` in that moment, instead of applying their misfire
    /// policy. Only that verdict waits: a job some node has the runner for fires meanwhile.
    pub settle: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            grace: Duration::from_secs(1),
            retry: Duration::from_secs(1),
            history: 20,
            settle: Duration::from_secs(5),
        }
    }
}

/// A run to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The job id.
    pub job: String,
    /// The job's encoded configuration ([`decode_config`]).
    pub config: Vec<u8>,
    /// The due time it runs for (UTC milliseconds).
    pub due: u64,
    /// 1, or more for a run fired again after its runner's node died.
    pub attempt: u32,
    /// The fencing token: the fire's, strictly increasing per job (a local job's count from 1
    /// on this node).
    pub token: u64,
    /// A local job's run (no consensus).
    pub local: bool,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Propose `command` to the group.
    Propose(Command),
    /// Start a run.
    Start(Run),
    /// Tell the run with `token` that it lost its fire: this node's entitlement ended, or the
    /// fire was given to another node.
    Abort {
        /// The job.
        job: String,
        /// The run's token.
        token: u64,
    },
    /// A job whose stored configuration does not decode: it is left alone, never fired.
    Quarantined {
        /// The job.
        job: String,
        /// Why.
        reason: String,
    },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Its outcome.
    pub outcome: RunOutcome,
    /// What the runner said (cut to a bound when recorded).
    pub message: String,
    /// When it started, on this node's wall clock (UTC milliseconds).
    pub started: u64,
    /// How long it ran, in milliseconds.
    pub millis: u64,
}

/// Why a job was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleJobError {
    /// The configuration has no schedule.
    #[error("the job has no schedule")]
    NoSchedule,
    /// The schedule is invalid.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
}

/// A cluster run started here.
#[derive(Debug, Clone)]
struct Started {
    job: String,
    epoch: u64,
    /// Still running, not told to stop.
    live: bool,
}

/// What a job's next command depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Basis {
    generation: u64,
    next_due: Option<u64>,
    open: Vec<u64>,
}

impl Basis {
    fn of(job: &Job) -> Self {
        Basis {
            generation: job.generation,
            next_due: job.next_due,
            open: job.open.keys().copied().collect(),
        }
    }

    /// Whether `job` still stands where it stood (without building its basis).
    fn holds(&self, job: &Job) -> bool {
        self.generation == job.generation
            && self.next_due == job.next_due
            && self.open.iter().eq(job.open.keys())
    }
}

/// What every job's next step rests on besides the job itself and the clocks, apart from the
/// parts of the state ([`same_grounds`]): when any of it changes, the tick looks at every job.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grounds {
    epoch: Option<u64>,
    /// The entitlement's epoch, while it lasts: starts need it ([`SchedulerCore::entitled`]).
    entitled: Option<u64>,
    /// The epoch each slot is served in ([`Ownership::may_serve`] with the entitlement).
    serving: Vec<Option<u64>>,
}

/// Whether the parts of two states that any job's next step rests on are the same: the
/// members' epochs and phases (a fire whose runner's epoch ended, who may run) and the runner
/// keys. Heartbeat counts are left out: they change every second and decide nothing here.
fn same_grounds(a: &ClusterState, b: &ClusterState) -> bool {
    a.jobs.runners == b.jobs.runners
        && a.liveness.len() == b.liveness.len()
        && a.liveness
            .iter()
            .zip(&b.liveness)
            .all(|((ra, la), (rb, lb))| ra == rb && la.epoch == lb.epoch && la.phase == lb.phase)
}

/// The scheduler of one node. See the module doc.
#[derive(Debug)]
pub struct SchedulerCore {
    me: ReplicaId,
    config: CoreConfig,
    own: Ownership,
    state: Arc<ClusterState>,
    /// The state at the last tick: the next one looks at what changed since.
    seen: Arc<ClusterState>,
    /// The grounds at the last tick; `None` before the first.
    grounds: Option<Grounds>,
    /// Look at every job on every tick (the reference the simulator checks the tick against).
    every_job: bool,
    epoch: Option<u64>,
    entitlement: Option<Entitlement>,
    /// The last clock readings: monotonic and wall (UTC milliseconds).
    now: Instant,
    wall: u64,
    keys: BTreeSet<String>,
    /// Until when an empty set of runner keys is not stated ([`CoreConfig::settle`]), once
    /// this node was first entitled.
    settled: Option<Instant>,
    /// When the runner keys' registration may be asked again.
    runners_until: Option<Instant>,
    /// Proposals awaited, by job: made again at their time, or at once when the job no longer
    /// stands where it stood.
    pending: Timers<String, Instant, Basis>,
    /// Served jobs not due yet, at their due time (wall clock, UTC milliseconds).
    dues: Timers<String, u64, ()>,
    /// Cluster runs started here, by token, until their fire is closed.
    started: BTreeMap<u64, Started>,
    /// The same, by job: a tick that looks only at the jobs that changed looks only at their
    /// runs (a run's fire moves only with its job, or with this node's grounds).
    started_jobs: BTreeSet<(String, u64)>,
    /// `Finish` commands to ask again until their fire is closed, by token, at when.
    finishing: Timers<u64, Instant, Command>,
    quarantined: BTreeSet<(String, u64)>,
    local: BTreeMap<String, LocalJob>,
    local_tokens: u64,
    outputs: VecDeque<Output>,
    wake: Option<Instant>,
    /// Inputs arrived since the last tick: the next `poll_output` ticks, once for a burst of
    /// inputs.
    dirty: bool,
    /// Jobs looked at by ticks, all told (for tests).
    visited: u64,
}

impl SchedulerCore {
    /// A core for member `me`, knowing nothing of the group yet.
    pub fn new(me: ReplicaId, config: CoreConfig, now: Instant, wall_ms: u64) -> Self {
        SchedulerCore {
            me,
            config,
            own: Ownership::new(me, Domain::Jobs),
            state: Arc::new(ClusterState::new()),
            seen: Arc::new(ClusterState::new()),
            grounds: None,
            every_job: false,
            epoch: None,
            entitlement: None,
            now,
            wall: wall_ms,
            keys: BTreeSet::new(),
            settled: None,
            runners_until: None,
            pending: Timers::new(),
            dues: Timers::new(),
            started: BTreeMap::new(),
            started_jobs: BTreeSet::new(),
            finishing: Timers::new(),
            quarantined: BTreeSet::new(),
            local: BTreeMap::new(),
            local_tokens: 0,
            outputs: VecDeque::new(),
            wake: None,
            dirty: false,
            visited: 0,
        }
    }

    /// This core looks at every job on every tick: slow, and the reference the simulator
    /// checks the incremental tick against (both must say the same).
    #[cfg(test)]
    pub(crate) fn looking_at_every_job(mut self) -> Self {
        self.every_job = true;
        self
    }

    /// Jobs looked at by ticks so far, all told.
    #[cfg(test)]
    pub(crate) fn visited(&self) -> u64 {
        self.visited
    }

    /// The slots of [`Domain::Jobs`] as this node serves them.
    pub fn ownership(&self) -> &Ownership {
        &self.own
    }

    /// This node's local jobs, by id.
    pub(super) fn locals(&self) -> &BTreeMap<String, LocalJob> {
        &self.local
    }

    /// Whether this node has runner `key` registered.
    pub fn has_runner(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// The group's status changed: the state this node applied, its epoch in force and its
    /// entitlement.
    pub fn set_group(
        &mut self,
        now: Instant,
        wall_ms: u64,
        state: Arc<ClusterState>,
        epoch: Option<u64>,
        entitlement: Option<Entitlement>,
    ) {
        self.state = state;
        if epoch != self.epoch {
            self.runners_until = None;
        }
        self.epoch = epoch;
        self.entitlement = entitlement;
        // No table lives outside the log: changes need no action (a move needs no hand-over).
        let _ = self.own.update(&self.state, epoch);
        for command in self.own.proposals(entitlement) {
            self.outputs.push_back(Output::Propose(command));
        }
        self.touch(now, wall_ms);
    }

    /// This node runs jobs with runner `key` from now on.
    pub fn register(&mut self, key: &str) {
        if self.keys.insert(key.to_owned()) {
            self.runners_until = None;
            self.dirty = true;
        }
    }

    /// This node stops being a candidate for runner `key`; its jobs stay scheduled.
    pub fn unregister(&mut self, key: &str) {
        if self.keys.remove(key) {
            self.runners_until = None;
            self.dirty = true;
        }
    }

    /// Creates or replaces job `id` (the last one the group applies wins); a local job goes
    /// into this node's own schedule.
    ///
    /// # Errors
    /// [`ScheduleJobError`] for a configuration without a valid schedule.
    pub fn schedule(
        &mut self,
        now: Instant,
        wall_ms: u64,
        id: &str,
        config: &JobConfig,
    ) -> Result<(), ScheduleJobError> {
        let schedule = config
            .schedule
            .clone()
            .ok_or(ScheduleJobError::NoSchedule)?;
        schedule.check()?;
        let first_due = schedule.first_due_ms(wall_ms);
        let bytes = encode_config(config);
        match config.run_mode {
            RunMode::Locally => {
                let running = self.local.get(id).and_then(|j| j.running);
                self.local.insert(
                    id.to_owned(),
                    LocalJob {
                        config: config.clone(),
                        bytes,
                        schedule,
                        next_due: first_due,
                        running,
                    },
                );
            }
            RunMode::OncePerCluster => {
                self.outputs
                    .push_back(Output::Propose(Command::Jobs(JobCommand::Schedule {
                        job: id.to_owned(),
                        runner: config.runner.clone(),
                        overlap: config.overlap == super::Overlap::Allow,
                        first_due,
                        history: self.config.history,
                        config: bytes.into(),
                    })));
            }
        }
        self.touch(now, wall_ms);
        Ok(())
    }

    /// Removes job `id`, local or cluster-wide.
    pub fn unschedule(&mut self, id: &str) {
        if self.local.remove(id).is_none() {
            self.outputs
                .push_back(Output::Propose(Command::Jobs(JobCommand::Unschedule {
                    job: id.to_owned(),
                })));
        }
    }

    /// The run `run` ended as `ended` says.
    pub fn run_finished(&mut self, now: Instant, wall_ms: u64, run: &Run, ended: Ended) {
        if run.local {
            if let Some(job) = self.local.get_mut(&run.job)
                && job.running == Some(run.token)
            {
                job.running = None;
            }
        } else {
            if let Some(s) = self.started.get_mut(&run.token) {
                s.live = false;
            }
            let command = Command::Jobs(JobCommand::Finish {
                job: run.job.clone(),
                token: run.token,
                outcome: ended.outcome,
                message: ended.message,
                started: ended.started,
                millis: ended.millis,
            });
            self.outputs.push_back(Output::Propose(command.clone()));
            // Asked again until the fire is closed; one closed already is asked once (fenced).
            if self.started.contains_key(&run.token) {
                self.finishing
                    .set(&run.token, now + self.config.retry, command);
            }
        }
        self.touch(now, wall_ms);
    }

    /// A command this core asked for failed (it may still apply later). Job commands are asked
    /// again when their retry time comes, not at once: a group without a leader fails a
    /// proposal as soon as it is made, and the status that reports it would ask again at once.
    pub fn proposal_failed(&mut self, command: &Command) {
        self.own.proposal_failed(command);
    }

    /// The time [`SchedulerCore::poll_timeout`] named has come.
    pub fn handle_timeout(&mut self, now: Instant, wall_ms: u64) {
        self.touch(now, wall_ms);
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.dirty {
            self.dirty = false;
            self.tick(self.now, self.wall);
        }
        self.outputs.pop_front()
    }

    /// When to call [`SchedulerCore::handle_timeout`] next; current once
    /// [`SchedulerCore::poll_output`] returned `None`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wake
    }

    /// Notes the clock readings of an input; the next `poll_output` ticks with them.
    fn touch(&mut self, now: Instant, wall_ms: u64) {
        self.now = now;
        self.wall = wall_ms;
        self.dirty = true;
    }

    fn entitled(&self, now: Instant) -> Option<u64> {
        let e = self.entitlement?;
        (Some(e.epoch) == self.epoch && e.until > now).then_some(e.epoch)
    }

    /// Everything time or the state may have made due.
    fn tick(&mut self, now: Instant, wall_ms: u64) {
        self.now = now;
        self.wall = wall_ms;
        let state = self.state.clone();
        let seen = std::mem::replace(&mut self.seen, state.clone());
        let grounds = Grounds {
            epoch: self.epoch,
            entitled: self.entitlement.filter(|e| e.until > now).map(|e| e.epoch),
            serving: (0..SLOTS)
                .map(|slot| match self.own.view(slot) {
                    SlotView::Serving { epoch, .. } => Some(epoch),
                    _ => None,
                })
                .collect(),
        };
        let every = self.every_job
            || self.grounds.as_ref() != Some(&grounds)
            || !(Arc::ptr_eq(&seen, &state) || same_grounds(&seen, &state));
        self.grounds = Some(grounds);
        // The ids looked at (every id when `every`), removed ones included.
        let mut ids = Vec::new();
        let jobs: Vec<(&String, &Job)> = if every {
            // Nothing to wait for any more for removed jobs.
            let exists = |id: &str| state.jobs.jobs.contains_key(id);
            self.pending.retain(exists);
            self.dues.retain(exists);
            state.jobs.jobs.iter().map(|(id, j)| (id, &**j)).collect()
        } else {
            if !Arc::ptr_eq(&seen, &state) {
                ids.extend(state.jobs.changed_since(&seen.jobs).cloned());
            }
            self.dues.expired(wall_ms, &mut ids);
            self.pending.expired(now, &mut ids);
            ids.sort_unstable();
            ids.dedup();
            let mut jobs = Vec::with_capacity(ids.len());
            for id in &ids {
                match state.jobs.jobs.get_key_value(id) {
                    Some((id, job)) => jobs.push((id, &**job)),
                    None => {
                        self.pending.clear(id.as_str());
                        self.dues.clear(id.as_str());
                    }
                }
            }
            jobs
        };
        self.visited += jobs.len() as u64;
        let mut wake = Vec::new();
        self.keep_runners(now, &mut wake);
        self.runs(now, &state, &jobs, (!every).then_some(&ids[..]), &mut wake);
        self.own_jobs(now, wall_ms, &state, &jobs);
        self.local_jobs(now, wall_ms, &mut wake);
        wake.extend(self.dues.first().map(|due| at(now, wall_ms, due)));
        wake.extend(self.pending.first());
        self.wake = wake.into_iter().min();
    }

    /// Registers this node's runner keys in its epoch, unless the state has them already.
    fn keep_runners(&mut self, now: Instant, wake: &mut Vec<Instant>) {
        let Some(epoch) = self.entitled(now) else {
            return;
        };
        let settled = *self.settled.get_or_insert(now + self.config.settle);
        if self.keys.is_empty() && now < settled {
            wake.push(settled);
            return;
        }
        let keys: Vec<String> = self.keys.iter().cloned().collect();
        let recorded = self.state.jobs.runners.get(&self.me);
        // Stated even when empty: owners wait for every live node's keys before they decide
        // that no node has a runner (`plan::runners_known`).
        let current = recorded.is_some_and(|(e, k)| *e == epoch && *k == keys);
        if current {
            self.runners_until = None;
            return;
        }
        match self.runners_until {
            Some(until) if until > now => wake.push(until),
            _ => {
                let until = now + self.config.retry;
                self.runners_until = Some(until);
                wake.push(until);
                self.outputs
                    .push_back(Output::Propose(Command::Jobs(JobCommand::Runners {
                        replica: self.me,
                        epoch,
                        keys,
                    })));
            }
        }
    }

    /// Starts the runs the state gives this node in `jobs`, stops those it lost, and asks again
    /// for the `Finish` of runs whose fire is still open. Only the runs of the jobs of `ids`
    /// (removed ones included) can have moved, or every run when every job is looked at
    /// (`None`).
    fn runs(
        &mut self,
        now: Instant,
        state: &ClusterState,
        jobs: &[(&String, &Job)],
        ids: Option<&[String]>,
        wake: &mut Vec<Instant>,
    ) {
        let entitled = self.entitled(now);
        let open = |token: &u64, job: &str| {
            state
                .jobs
                .jobs
                .get(job)
                .and_then(|j| j.open.get(token))
                .map(|f| f.runner)
        };
        let tokens: Vec<u64> = match ids {
            None => self.started.keys().copied().collect(),
            Some(ids) => {
                let mut tokens = Vec::new();
                for id in ids {
                    tokens.extend(
                        self.started_jobs
                            .range((id.clone(), 0)..)
                            .take_while(|(job, _)| job == id)
                            .map(|(_, token)| *token),
                    );
                }
                tokens
            }
        };
        // Stop runs whose fire this node lost, and forget closed ones.
        for token in tokens {
            let Some(s) = self.started.get_mut(&token) else {
                continue;
            };
            let holder = open(&token, &s.job);
            let mine = holder == Some((self.me, s.epoch)) && entitled == Some(s.epoch);
            if s.live && !mine {
                s.live = false;
                self.outputs.push_back(Output::Abort {
                    job: s.job.clone(),
                    token,
                });
            }
            if holder.is_none() {
                let job = s.job.clone();
                self.started.remove(&token);
                self.started_jobs.remove(&(job, token));
                self.finishing.clear(&token);
            }
        }
        let Some(epoch) = entitled else {
            return;
        };
        for (id, job) in jobs {
            for (token, fire) in &job.open {
                if fire.runner != (self.me, epoch) || self.started.contains_key(token) {
                    continue;
                }
                self.started.insert(
                    *token,
                    Started {
                        job: (*id).clone(),
                        epoch,
                        live: true,
                    },
                );
                self.started_jobs.insert(((*id).clone(), *token));
                self.outputs.push_back(Output::Start(Run {
                    job: (*id).clone(),
                    config: job.config.to_vec(),
                    due: fire.due,
                    attempt: fire.attempt,
                    token: *token,
                    local: false,
                }));
            }
        }
        // A run still going when the entitlement ends is stopped then (a finished one wakes
        // the core needlessly: cheaper than counting).
        if !self.started.is_empty()
            && let Some(e) = self.entitlement
        {
            wake.push(e.until);
        }
        let mut due = Vec::new();
        self.finishing.expired(now, &mut due);
        for token in due {
            if let Some((_, command)) = self.finishing.get(&token) {
                let command = command.clone();
                self.outputs.push_back(Output::Propose(command.clone()));
                self.finishing.set(&token, now + self.config.retry, command);
            }
        }
        wake.extend(self.finishing.first());
    }

    /// The owner's duty: for each job of `jobs` in a slot this node serves, the next command
    /// when due; its due time or its proposal's retry time set to look at it again.
    fn own_jobs(
        &mut self,
        now: Instant,
        wall: u64,
        state: &ClusterState,
        jobs: &[(&String, &Job)],
    ) {
        self.quarantined
            .retain(|(id, g)| state.jobs.jobs.get(id).is_some_and(|j| j.generation == *g));
        let grace = self.config.grace.as_millis() as u64;
        for (id, job) in jobs {
            self.dues.clear(id.as_str());
            if let Some((until, basis)) = self.pending.get(id.as_str()) {
                if basis.holds(job) && until > now {
                    continue;
                }
                self.pending.clear(id.as_str());
            }
            if !self
                .own
                .may_serve(slot_of(id.as_bytes()), now, self.entitlement)
            {
                continue;
            }
            // Most jobs most of the time: nothing due, no runner lost; look again at the due
            // time.
            let lost = job
                .open
                .values()
                .any(|f| !state.in_force(f.runner.0, f.runner.1));
            if !lost && job.next_due.is_none_or(|d| d > wall) {
                if let Some(due) = job.next_due {
                    self.dues.set(id.as_str(), due, ());
                }
                continue;
            }
            let config = match decode_config(&job.config) {
                Ok(config) => config,
                Err(reason) => {
                    if self.quarantined.insert(((*id).clone(), job.generation)) {
                        self.outputs.push_back(Output::Quarantined {
                            job: (*id).clone(),
                            reason,
                        });
                    }
                    continue;
                }
            };
            // None: due but waiting for a run to end, or for runner keys; the job's next change
            // or the grounds' bring it back.
            if let Some(command) = plan::next_command(state, id, job, &config, wall, grace) {
                self.pending
                    .set(id.as_str(), now + self.config.retry, Basis::of(job));
                self.outputs
                    .push_back(Output::Propose(Command::Jobs(command)));
            }
        }
    }

    /// Fires the local jobs due on this node's wall clock.
    fn local_jobs(&mut self, now: Instant, wall: u64, wake: &mut Vec<Instant>) {
        let grace = self.config.grace.as_millis() as u64;
        let mut starts = Vec::new();
        for (id, job) in &mut self.local {
            while let Step::Fire(due) = job.step(wall, grace) {
                self.local_tokens += 1;
                job.running = Some(self.local_tokens);
                starts.push(Run {
                    job: id.clone(),
                    config: job.bytes.clone(),
                    due,
                    attempt: 1,
                    token: self.local_tokens,
                    local: true,
                });
            }
            if let Some(due) = job.next_due.filter(|d| *d > wall) {
                wake.push(at(now, wall, due));
            }
        }
        self.outputs.extend(starts.into_iter().map(Output::Start));
    }
}

/// The time on the monotonic clock at which the wall clock reads `due`, by readings `now` and
/// `wall` taken together (a wall clock that jumps is read again at the wake-up).
fn at(now: Instant, wall: u64, due: u64) -> Instant {
    now + Duration::from_millis(due.saturating_sub(wall))
}
