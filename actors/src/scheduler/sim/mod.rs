//! The real scheduler cores of 3 to 5 nodes on the seeded group world
//! ([`colony_runtime::sim::group`]), fed as the scheduler's shell will feed them: the group's
//! status after every change, timers, and runs that end.
//!
//! Each node's wall clock is its own simulated clock (they start apart and drift). Nodes
//! register runner keys by their index (`a` everywhere but on the second node, `b` on the
//! third only), so some jobs have few candidates; every node schedules the cluster's jobs
//! while its state lacks them (so two nodes often schedule the same id at once: the last
//! one applied wins). Runs take a random time, some longer than their job's period, and end
//! early when the core says the run lost its fire. What happened is recorded in a
//! [`SchedRecord`] for [`super::check`].
//!
//! The lock domain's slots are placed too; no lock is taken here, so each node hands its
//! (empty) lock tables over when those slots move, as the lock service would: a leaving node
//! can then retire.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_runtime::consensus::jobs::{JobCommand, RunOutcome};
use colony_runtime::consensus::{ClusterState, Command, Entitlement, GroupStatus, ReplicaId};
use colony_runtime::ownership::Ownership;
use colony_runtime::sim::group::{Ctx, EmptySlots, EmptyTable, Service};
use rand::RngExt;

use super::check::{Proposed, RunStart};
use super::core::{CoreConfig, Ended, Output, Run, ScheduleJobError, SchedulerCore};
use super::{JobConfig, MisfirePolicy, Overlap, RunMode, Schedule, decode_config, from_ms};

/// The wall clock's reading at the world's origin (UTC milliseconds): 2027-01-15.
pub(crate) const WALL0: u64 = 1_800_000_000_000;
/// How often a node schedules the jobs its state lacks, at most.
const SCHEDULE_EVERY: Duration = Duration::from_secs(1);
/// The cluster's jobs: id, configuration, and how long a run takes at most.
pub(crate) fn cluster_jobs() -> Vec<(&'static str, JobConfig, Duration)> {
    let every = |ms| Schedule::interval(Duration::from_millis(ms), from_ms(WALL0)).unwrap();
    let ms = Duration::from_millis;
    vec![
        // Runs often longer than the period: overlaps pass.
        (
            "tick",
            JobConfig::for_runner("a").schedule(every(200)),
            ms(450),
        ),
        (
            "catch",
            JobConfig::for_runner("a")
                .schedule(every(300))
                .misfire(MisfirePolicy::CatchUp { max: 3 }),
            ms(150),
        ),
        (
            "rare",
            JobConfig::for_runner("b")
                .schedule(every(250))
                .misfire(MisfirePolicy::Skip)
                .overlap(Overlap::Allow),
            ms(600),
        ),
        (
            "cron",
            JobConfig::for_runner("a")
                .schedule(Schedule::cron("* * * * * *", "Europe/Berlin").unwrap()),
            ms(300),
        ),
        (
            "once",
            JobConfig::for_runner("a").schedule(Schedule::once(from_ms(WALL0 + 4_000)).unwrap()),
            ms(100),
        ),
    ]
}

/// A local job each node schedules on itself.
const LOCAL: &str = "local";

/// The runner keys of the node with index `i`.
pub(crate) fn keys_of(i: usize) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if i != 1 {
        keys.push("a");
    }
    if i == 2 {
        keys.push("b");
    }
    keys
}

/// A local run, as its node saw it.
#[derive(Debug, Clone)]
pub(crate) struct LocalRun {
    pub node: usize,
    pub incarnation: u64,
    pub at_us: u64,
    pub end_us: Option<u64>,
}

/// What every node's scheduler recorded.
#[derive(Debug, Default)]
pub(crate) struct SchedRecord {
    pub starts: Vec<RunStart>,
    pub proposed: Vec<Proposed>,
    pub local: Vec<LocalRun>,
    pub aborts: u64,
    pub finishes: u64,
    pub quarantined: u64,
    pub trace: bool,
}

/// A run in progress on this node.
#[derive(Debug)]
struct Running {
    run: Run,
    ends: Instant,
    started_wall: u64,
    /// Its entry in the record.
    index: usize,
}

/// One node's scheduler. See the module doc.
pub(crate) struct SchedNode {
    core: Checked,
    keys: Vec<&'static str>,
    state: Arc<ClusterState>,
    epoch: Option<u64>,
    entitlement: Option<Entitlement>,
    running: BTreeMap<(bool, u64), Running>,
    next_schedule: Instant,
    grace: u64,
    /// The slots of the other domains that hand over (locks, executor buckets): this node
    /// opens none, so it hands them over empty, as a real node with no lock held does.
    others: EmptySlots,
}

/// A node's core beside a reference core that looks at every job on every tick, both fed the
/// same inputs: the core's tick, which looks only at the jobs that changed or whose time came,
/// must say exactly what the reference says, when it says it.
struct Checked {
    core: SchedulerCore,
    reference: SchedulerCore,
}

impl Checked {
    fn new(me: ReplicaId, config: CoreConfig, now: Instant, wall_ms: u64) -> Self {
        Checked {
            core: SchedulerCore::new(me, config, now, wall_ms),
            reference: SchedulerCore::new(me, config, now, wall_ms).looking_at_every_job(),
        }
    }

    fn register(&mut self, key: &str) {
        self.core.register(key);
        self.reference.register(key);
    }

    fn schedule(
        &mut self,
        now: Instant,
        wall_ms: u64,
        id: &str,
        config: &JobConfig,
    ) -> Result<(), ScheduleJobError> {
        let expected = self.reference.schedule(now, wall_ms, id, config).is_ok();
        let result = self.core.schedule(now, wall_ms, id, config);
        assert_eq!(result.is_ok(), expected);
        result
    }

    fn set_group(
        &mut self,
        now: Instant,
        wall_ms: u64,
        state: Arc<ClusterState>,
        epoch: Option<u64>,
        entitlement: Option<Entitlement>,
    ) {
        self.reference
            .set_group(now, wall_ms, state.clone(), epoch, entitlement);
        self.core.set_group(now, wall_ms, state, epoch, entitlement);
    }

    fn run_finished(&mut self, now: Instant, wall_ms: u64, run: &Run, ended: Ended) {
        self.reference
            .run_finished(now, wall_ms, run, ended.clone());
        self.core.run_finished(now, wall_ms, run, ended);
    }

    fn handle_timeout(&mut self, now: Instant, wall_ms: u64) {
        self.reference.handle_timeout(now, wall_ms);
        self.core.handle_timeout(now, wall_ms);
    }

    fn proposal_failed(&mut self, command: &Command) {
        self.reference.proposal_failed(command);
        self.core.proposal_failed(command);
    }

    fn poll_output(&mut self) -> Option<Output> {
        let output = self.core.poll_output();
        assert_eq!(
            output,
            self.reference.poll_output(),
            "the incremental tick and the walk over every job disagree"
        );
        if output.is_none()
            && let Some(expected) = self.reference.poll_timeout()
        {
            // It may wake earlier (a retry time of a job it no longer serves), never later.
            let wake = self.core.poll_timeout();
            assert!(
                wake.is_some_and(|w| w <= expected),
                "the core wakes at {wake:?}, after the reference's {expected:?}"
            );
        }
        output
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    fn ownership(&self) -> &Ownership {
        self.core.ownership()
    }
}

fn wall(ctx: &Ctx<'_, SchedNode>) -> u64 {
    WALL0 + ctx.wall().as_millis() as u64
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

impl SchedNode {
    /// Carries out what the core asked for, until it asks nothing more.
    fn drain(&mut self, ctx: &mut Ctx<'_, Self>) {
        while let Some(output) = self.core.poll_output() {
            if ctx.record.trace {
                eprintln!("{:>9?} {} {output:?}", ctx.world, ctx.name);
            }
            match output {
                Output::Propose(command) => {
                    self.note_proposal(ctx, &command);
                    ctx.propose(command);
                }
                Output::Start(run) => self.start(ctx, run),
                Output::Abort { token, .. } => {
                    if let Some(r) = self.running.remove(&(false, token)) {
                        ctx.record.aborts += 1;
                        self.ended(ctx, r, RunOutcome::Aborted);
                    }
                }
                Output::Quarantined { .. } => ctx.record.quarantined += 1,
            }
        }
    }

    fn note_proposal(&self, ctx: &mut Ctx<'_, Self>, command: &Command) {
        let Command::Jobs(c @ (JobCommand::Fire { job, .. } | JobCommand::Pass { job, .. })) =
            command
        else {
            return;
        };
        let Some(config) = self
            .state
            .jobs
            .jobs
            .get(job)
            .and_then(|j| decode_config(&j.config).ok())
        else {
            return;
        };
        ctx.record.proposed.push(Proposed {
            command: c.clone(),
            config,
            wall: wall(ctx),
            grace: self.grace,
        });
    }

    fn start(&mut self, ctx: &mut Ctx<'_, Self>, run: Run) {
        let longest = decode_config(&run.config)
            .ok()
            .and_then(|c| {
                let key = c.runner;
                cluster_jobs()
                    .into_iter()
                    .find(|(id, _, _)| *id == run.job)
                    .map(|(_, _, d)| (d, key))
            })
            .unwrap_or((Duration::from_millis(100), String::new()));
        let took = Duration::from_micros(ctx.rng.random_range(1_000..=us(longest.0)));
        let index = if run.local {
            ctx.record.local.push(LocalRun {
                node: ctx.node,
                incarnation: ctx.incarnation,
                at_us: us(ctx.world),
                end_us: None,
            });
            ctx.record.local.len() - 1
        } else {
            let until = self
                .entitlement
                .map_or(ctx.world, |e| ctx.world_of(e.until));
            ctx.record.starts.push(RunStart {
                job: run.job.clone(),
                due: run.due,
                token: run.token,
                attempt: run.attempt,
                node: ctx.name.to_owned(),
                runner: (ctx.replica, self.epoch.unwrap_or(0)),
                at_us: us(ctx.world),
                until_us: us(until),
                had_runner: self.keys.contains(&longest.1.as_str()),
            });
            ctx.record.starts.len() - 1
        };
        let key = (run.local, run.token);
        self.running.insert(
            key,
            Running {
                run,
                ends: ctx.now + took,
                started_wall: wall(ctx),
                index,
            },
        );
    }

    /// A run ended now: the record notes its end, the core is told.
    fn ended(&mut self, ctx: &mut Ctx<'_, Self>, r: Running, outcome: RunOutcome) {
        let now_us = us(ctx.world);
        if r.run.local {
            ctx.record.local[r.index].end_us = Some(now_us);
        } else {
            let s = &mut ctx.record.starts[r.index];
            s.until_us = s.until_us.min(now_us);
            ctx.record.finishes += 1;
        }
        let millis = wall(ctx).saturating_sub(r.started_wall);
        let (now, w) = (ctx.now, wall(ctx));
        self.core.run_finished(
            now,
            w,
            &r.run,
            Ended {
                outcome,
                message: String::new(),
                started: r.started_wall,
                millis,
            },
        );
    }

    /// A cluster run in progress here: its token and its record's index.
    pub(crate) fn running_cluster_run(&self) -> Option<(u64, usize)> {
        self.running
            .values()
            .find(|r| !r.run.local)
            .map(|r| (r.run.token, r.index))
    }

    /// Hands over the lock slots that moved away.
    fn keep_other_slots(&mut self, ctx: &mut Ctx<'_, Self>) {
        for (to, table) in self.others.update(&self.state, self.epoch) {
            ctx.send(to, table);
        }
    }

    /// Asks what those slots need (the records of hand-overs received). Not on every status:
    /// a group without a leader fails a proposal at once, and the status reporting that would
    /// ask again at once (seed 824 spun so).
    fn ask_for_other_slots(&mut self, ctx: &mut Ctx<'_, Self>) {
        ctx.propose_all(self.others.proposals(self.entitlement));
    }

    /// Sends again the lock tables whose hand-over is not recorded yet.
    fn resend_tables(&mut self, ctx: &mut Ctx<'_, Self>) {
        if let Some(tables) = self.others.resend(ctx.now) {
            self.ask_for_other_slots(ctx);
            for (to, table) in tables {
                ctx.send(to, table);
            }
        }
    }

    /// Schedules the cluster's jobs this node's state lacks (every node does: some at once).
    fn schedule_missing(&mut self, ctx: &mut Ctx<'_, Self>) {
        if ctx.now < self.next_schedule || self.epoch.is_none() {
            return;
        }
        self.next_schedule = ctx.now + SCHEDULE_EVERY;
        let (now, w) = (ctx.now, wall(ctx));
        for (id, config, _) in cluster_jobs() {
            if !self.state.jobs.jobs.contains_key(id) {
                self.core
                    .schedule(now, w, id, &config)
                    .expect("the simulator's jobs are valid");
            }
        }
    }
}

impl Service for SchedNode {
    type Msg = EmptyTable;
    type Record = SchedRecord;

    fn start(ctx: &mut Ctx<'_, Self>) -> Self {
        ctx.record.trace = std::env::var("COLONY_SIM_TRACE").is_ok();
        let config = CoreConfig {
            grace: Duration::from_millis(400),
            retry: Duration::from_millis(500),
            history: 8,
            settle: Duration::from_secs(1),
        };
        let w = wall(ctx);
        let mut core = Checked::new(ctx.replica, config, ctx.now, w);
        let keys = keys_of(ctx.node);
        for key in &keys {
            core.register(key);
        }
        let local = JobConfig::for_runner("a")
            .schedule(Schedule::interval(Duration::from_millis(300), from_ms(WALL0)).unwrap())
            .run_mode(RunMode::Locally);
        core.schedule(ctx.now, w, LOCAL, &local)
            .expect("a valid local job");
        let mut node = SchedNode {
            core,
            keys,
            state: Arc::new(ClusterState::new()),
            epoch: None,
            entitlement: None,
            running: BTreeMap::new(),
            next_schedule: ctx.now,
            grace: config.grace.as_millis() as u64,
            others: EmptySlots::new(ctx.replica, &[], ctx.now),
        };
        node.drain(ctx);
        node
    }

    fn status(&mut self, ctx: &mut Ctx<'_, Self>, status: &Arc<GroupStatus>) {
        self.state = status.state.clone();
        self.epoch = status.epoch;
        self.entitlement = status.entitlement;
        // A renewed entitlement extends how long the runs in progress may act.
        if let Some(e) = status.entitlement {
            let until = us(ctx.world_of(e.until));
            for r in self.running.values().filter(|r| !r.run.local) {
                let s = &mut ctx.record.starts[r.index];
                if s.runner.1 == e.epoch {
                    s.until_us = s.until_us.max(until);
                }
            }
        }
        let (now, w) = (ctx.now, wall(ctx));
        self.core.set_group(
            now,
            w,
            status.state.clone(),
            status.epoch,
            status.entitlement,
        );
        self.drain(ctx);
        self.schedule_missing(ctx);
        self.drain(ctx);
        self.keep_other_slots(ctx);
    }

    fn message(&mut self, ctx: &mut Ctx<'_, Self>, _: ReplicaId, msg: EmptyTable) {
        if self.others.received(&self.state, msg, ctx.now) {
            self.ask_for_other_slots(ctx);
        }
    }

    fn timeout(&mut self, ctx: &mut Ctx<'_, Self>) {
        let done: Vec<(bool, u64)> = self
            .running
            .iter()
            .filter(|(_, r)| r.ends <= ctx.now)
            .map(|(k, _)| *k)
            .collect();
        for key in done {
            if let Some(r) = self.running.remove(&key) {
                let outcome = if ctx.rng.random_bool(0.1) {
                    RunOutcome::Failed
                } else {
                    RunOutcome::Succeeded
                };
                self.ended(ctx, r, outcome);
            }
        }
        let (now, w) = (ctx.now, wall(ctx));
        self.core.handle_timeout(now, w);
        self.drain(ctx);
        self.schedule_missing(ctx);
        self.drain(ctx);
        self.resend_tables(ctx);
    }

    fn proposal_failed(&mut self, ctx: &mut Ctx<'_, Self>, command: &Command) {
        self.others.proposal_failed(command);
        self.core.proposal_failed(command);
        self.drain(ctx);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let runs = self.running.values().map(|r| r.ends).min();
        let schedule = self.epoch.map(|_| self.next_schedule);
        let resend = self.epoch.map(|_| self.others.next_resend());
        [self.core.poll_timeout(), runs, schedule, resend]
            .into_iter()
            .flatten()
            .min()
    }

    fn ownership(&self) -> &Ownership {
        self.core.ownership()
    }
}
