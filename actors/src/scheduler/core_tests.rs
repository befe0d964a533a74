//! Exact-output tests of the scheduler core over group states built by applying commands.

use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_runtime::consensus::jobs::{JobCommand, JobOutcome, PassReason, RunOutcome};
use colony_runtime::consensus::{
    ClusterState, Command, Domain, Entitlement, MemberInfo, Outcome, ReplicaId,
};

use super::core::*;
use super::plan::NO_RERUN;
use super::{JobConfig, MisfirePolicy, Overlap, RunMode, Schedule, encode_config, from_ms};

const R1: ReplicaId = ReplicaId(1);
const R2: ReplicaId = ReplicaId(2);
const R3: ReplicaId = ReplicaId(3);
const T0: u64 = 1_800_000_000_000;
const EVERY: u64 = 1_000;

fn config() -> CoreConfig {
    CoreConfig {
        grace: Duration::from_millis(500),
        retry: Duration::from_secs(2),
        history: 5,
        settle: Duration::ZERO,
    }
}

fn job_config(misfire: MisfirePolicy, overlap: Overlap) -> JobConfig {
    JobConfig::for_runner("k")
        .schedule(Schedule::interval(Duration::from_millis(EVERY), from_ms(T0)).unwrap())
        .misfire(misfire)
        .overlap(overlap)
}

/// A group state, and a clock pair (monotonic, wall) that moves together.
struct Fixture {
    state: ClusterState,
    t0: Instant,
}

impl Fixture {
    /// Three live nodes in epoch 1; every jobs slot owned by node 1; node 2 runs `k`, the
    /// others have no runner.
    fn new() -> Self {
        let mut f = Fixture {
            state: ClusterState::new(),
            t0: Instant::now(),
        };
        for r in [R1, R2, R3] {
            f.apply(Command::Register {
                replica: r,
                info: MemberInfo {
                    name: format!("{r}"),
                    addr: "127.0.0.1:1".parse().unwrap(),
                    incarnation: 1,
                },
            });
        }
        for slot in 0..colony_runtime::consensus::SLOTS {
            f.apply(Command::Assign {
                domain: Domain::Jobs,
                slot,
                generation: 0,
                to: R1,
            });
        }
        f.runners(R2, &["k"]);
        f.runners(R1, &[]);
        f.runners(R3, &[]);
        f
    }

    fn apply(&mut self, c: Command) -> Outcome {
        self.state.apply(&c)
    }

    fn runners(&mut self, r: ReplicaId, keys: &[&str]) {
        let keys = keys.iter().map(|k| k.to_string()).collect();
        let outcome = self.apply(Command::Jobs(JobCommand::Runners {
            replica: r,
            epoch: 1,
            keys,
        }));
        assert_eq!(outcome, Outcome::Job(JobOutcome::Done));
    }

    /// Schedules job `j` as node 1's core would at wall time `T0`.
    fn schedule(&mut self, config: &JobConfig) {
        let mut core = SchedulerCore::new(R1, self::config(), self.t0, T0);
        core.schedule(self.t0, T0, "j", config).unwrap();
        let out = drain(&mut core);
        let [Output::Propose(c)] = &out[..] else {
            panic!("{out:?}");
        };
        self.apply(c.clone());
    }

    /// The monotonic instant at wall time `wall`.
    fn at(&self, wall: u64) -> Instant {
        self.t0 + Duration::from_millis(wall - T0)
    }

    /// Feeds `core` the state at wall time `wall`, entitled in epoch 1 for 10 s.
    fn feed(&self, core: &mut SchedulerCore, wall: u64) -> Vec<Output> {
        let now = self.at(wall);
        let entitlement = Entitlement {
            epoch: 1,
            until: now + Duration::from_secs(10),
        };
        core.set_group(
            now,
            wall,
            Arc::new(self.state.clone()),
            Some(1),
            Some(entitlement),
        );
        drain(core)
    }

    /// Applies the one command in `out`, returning the token of a fire.
    fn apply_proposal(&mut self, out: &[Output]) -> Option<u64> {
        let [Output::Propose(c)] = out else {
            panic!("one proposal expected: {out:?}");
        };
        match self.apply(c.clone()) {
            Outcome::Job(JobOutcome::Fired { token }) => Some(token),
            Outcome::Job(JobOutcome::Done) => None,
            other => panic!("{c:?}: {other:?}"),
        }
    }
}

/// A fixture with job `j` (every second from `T0`, overlaps skipped) and node 1's core.
fn scheduled(policy: MisfirePolicy) -> (Fixture, SchedulerCore) {
    let mut f = Fixture::new();
    f.schedule(&job_config(policy, Overlap::Skip));
    let owner = SchedulerCore::new(R1, config(), f.t0, T0);
    (f, owner)
}

fn ended(outcome: RunOutcome, started: u64, millis: u64) -> Ended {
    Ended {
        outcome,
        message: String::new(),
        started,
        millis,
    }
}

fn drain(core: &mut SchedulerCore) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

/// A fire of `due` planned from `passed` due times before it (one period apart).
fn fire(due: u64, attempt: u32, runner: ReplicaId, next_due: u64, passed: u64) -> Output {
    Output::Propose(Command::Jobs(JobCommand::Fire {
        job: "j".into(),
        generation: 1,
        from: due - passed * EVERY,
        due,
        attempt,
        runner: (runner, 1),
        next_due: Some(next_due),
        passed,
    }))
}

fn finish(token: u64, outcome: RunOutcome, message: &str, started: u64, millis: u64) -> Command {
    Command::Jobs(JobCommand::Finish {
        job: "j".into(),
        token,
        outcome,
        message: message.into(),
        started,
        millis,
    })
}

fn pass(due: u64, count: u64, why: PassReason, next_due: u64) -> Output {
    Output::Propose(Command::Jobs(JobCommand::Pass {
        job: "j".into(),
        generation: 1,
        due,
        count,
        why,
        next_due: Some(next_due),
    }))
}

#[test]
fn a_runner_key_is_registered_in_the_node_s_epoch_once() {
    let f = Fixture::new();
    let mut core = SchedulerCore::new(R1, config(), f.t0, T0);
    core.register("k");
    assert_eq!(drain(&mut core), [], "no epoch yet: nothing to register in");
    let runners = Output::Propose(Command::Jobs(JobCommand::Runners {
        replica: R1,
        epoch: 1,
        keys: vec!["k".into()],
    }));
    assert_eq!(f.feed(&mut core, T0), std::slice::from_ref(&runners));
    assert_eq!(f.feed(&mut core, T0 + 10), [], "asked once until the retry");
    assert_eq!(f.feed(&mut core, T0 + 2_000), [runners]);
}

#[test]
fn a_node_states_it_has_no_runner_only_after_settling_and_a_key_registered_meanwhile_at_once() {
    // A node of epoch 1 that has stated no keys yet (the fixture's three all have).
    const R4: ReplicaId = ReplicaId(4);
    let f = Fixture::new();
    let settling = CoreConfig {
        settle: Duration::from_secs(2),
        ..config()
    };
    let none = Output::Propose(Command::Jobs(JobCommand::Runners {
        replica: R4,
        epoch: 1,
        keys: vec![],
    }));
    // First entitled, no key yet: nothing stated (owners wait for it), woken when it settles.
    let mut core = SchedulerCore::new(R4, settling, f.t0, T0);
    assert_eq!(f.feed(&mut core, T0 + 500), []);
    assert_eq!(core.poll_timeout(), Some(f.at(T0 + 2_500)));
    core.handle_timeout(f.at(T0 + 2_499), T0 + 2_499);
    assert_eq!(drain(&mut core), []);
    core.handle_timeout(f.at(T0 + 2_500), T0 + 2_500);
    assert_eq!(drain(&mut core), [none]);
    // A key registered before it settles is stated at once.
    let mut core = SchedulerCore::new(R4, settling, f.t0, T0);
    assert_eq!(f.feed(&mut core, T0 + 500), []);
    core.register("k");
    let keys = Output::Propose(Command::Jobs(JobCommand::Runners {
        replica: R4,
        epoch: 1,
        keys: vec!["k".into()],
    }));
    assert_eq!(f.feed(&mut core, T0 + 600), [keys]);
}

#[test]
fn the_owner_fires_a_due_time_on_the_time_on_a_node_with_the_runner_and_once() {
    let (mut f, mut owner) = scheduled(MisfirePolicy::FireOnce);
    assert_eq!(f.feed(&mut owner, T0), [fire(T0, 1, R2, T0 + EVERY, 0)]);
    // Asked once: the same state again asks nothing until the retry.
    assert_eq!(f.feed(&mut owner, T0 + 10), []);
    let token = f.apply_proposal(&[fire(T0, 1, R2, T0 + EVERY, 0)]).unwrap();
    assert_eq!(f.feed(&mut owner, T0 + 20), []);
    assert_eq!(owner.poll_timeout(), Some(f.at(T0 + EVERY)));
    // Node 2 starts the run it was given, once.
    let mut runner = SchedulerCore::new(R2, config(), f.t0, T0);
    runner.register("k");
    let run = Run {
        job: "j".into(),
        config: encode_config(&job_config(MisfirePolicy::FireOnce, Overlap::Skip)),
        due: T0,
        attempt: 1,
        token,
        local: false,
    };
    assert_eq!(f.feed(&mut runner, T0 + 20), [Output::Start(run.clone())]);
    assert_eq!(f.feed(&mut runner, T0 + 30), []);
    // The next due time comes while the run is in progress: passed for overlap.
    let overlap = pass(T0 + EVERY, 1, PassReason::Overlap, T0 + 2 * EVERY);
    owner.handle_timeout(f.at(T0 + EVERY), T0 + EVERY);
    assert_eq!(drain(&mut owner), std::slice::from_ref(&overlap));
    f.apply_proposal(&[overlap]);
    runner.run_finished(
        f.at(T0 + 1_500),
        T0 + 1_500,
        &run,
        ended(RunOutcome::Succeeded, T0, 9),
    );
    let finished = drain(&mut runner);
    assert_eq!(
        finished,
        [Output::Propose(finish(
            token,
            RunOutcome::Succeeded,
            "",
            T0,
            9
        ))]
    );
    f.apply_proposal(&finished);
    assert_eq!(
        f.feed(&mut owner, T0 + 2 * EVERY),
        [fire(T0 + 2 * EVERY, 1, R2, T0 + 3 * EVERY, 0)]
    );
}

#[test]
fn a_node_not_serving_the_job_s_slot_or_not_entitled_fires_nothing() {
    let mut f = Fixture::new();
    f.schedule(&job_config(MisfirePolicy::FireOnce, Overlap::Skip));
    let mut other = SchedulerCore::new(R2, config(), f.t0, T0);
    other.register("k");
    assert_eq!(f.feed(&mut other, T0), []);
    let mut owner = SchedulerCore::new(R1, config(), f.t0, T0);
    let now = f.at(T0);
    let lapsed = Entitlement {
        epoch: 1,
        until: now,
    };
    owner.set_group(now, T0, Arc::new(f.state.clone()), Some(1), Some(lapsed));
    assert_eq!(drain(&mut owner), []);
}

#[test]
fn missed_due_times_follow_the_misfire_policy_and_are_counted() {
    // Down from T0 to T0 + 4.7 s: five due times, the last one on time.
    for (policy, expected) in [
        (
            MisfirePolicy::FireOnce,
            fire(T0 + 4_000, 1, R2, T0 + 5_000, 4),
        ),
        (
            MisfirePolicy::CatchUp { max: 2 },
            fire(T0 + 3_000, 1, R2, T0 + 4_000, 3),
        ),
        (MisfirePolicy::Skip, fire(T0 + 4_000, 1, R2, T0 + 5_000, 4)),
    ] {
        let (f, mut owner) = scheduled(policy);
        assert_eq!(f.feed(&mut owner, T0 + 4_300), [expected], "{policy:?}");
    }
    // Under Skip, a late one passes with nothing fired.
    let (f, mut owner) = scheduled(MisfirePolicy::Skip);
    assert_eq!(
        f.feed(&mut owner, T0 + 4_700),
        [pass(T0, 5, PassReason::Missed, T0 + 5_000)]
    );
}

#[test]
fn a_catch_up_fires_its_times_one_after_another_and_a_late_one_waits_for_the_run() {
    let mut f = Fixture::new();
    f.schedule(&job_config(
        MisfirePolicy::CatchUp { max: 2 },
        Overlap::Skip,
    ));
    let mut owner = SchedulerCore::new(R1, config(), f.t0, T0);
    let first = f.feed(&mut owner, T0 + 4_300);
    let token = f.apply_proposal(&first).unwrap();
    // T0 + 4 s is late for the overlap rule by now: it waits for the run, not passes.
    assert_eq!(f.feed(&mut owner, T0 + 4_600), []);
    f.apply(finish(token, RunOutcome::Succeeded, "", 0, 0));
    assert_eq!(
        f.feed(&mut owner, T0 + 4_700),
        [fire(T0 + 4_000, 1, R2, T0 + 5_000, 0)]
    );
}

#[test]
fn no_runner_anywhere_passes_the_due_time_and_a_node_without_the_runner_is_never_chosen() {
    let (mut f, mut owner) = scheduled(MisfirePolicy::FireOnce);
    f.runners(R2, &["other"]);
    assert_eq!(
        f.feed(&mut owner, T0 + 100),
        [pass(T0, 1, PassReason::NoRunner, T0 + EVERY)]
    );
}

#[test]
fn no_runner_is_decided_only_once_every_live_node_stated_its_keys() {
    // As after a full restart: node 3 is live in its new epoch but has not stated its runner
    // keys yet, and node 2's are gone with its old epoch.
    let (mut f, mut owner) = scheduled(MisfirePolicy::FireOnce);
    f.state.jobs.runners.remove(&R3);
    f.runners(R2, &[]);
    assert_eq!(f.feed(&mut owner, T0 + 4_300), [], "nothing decided yet");
    // Node 3's keys: a runner, so the downtime's due times fold into one fire on it.
    f.runners(R3, &["k"]);
    assert_eq!(
        f.feed(&mut owner, T0 + 4_400),
        [fire(T0 + 4_000, 1, R3, T0 + 5_000, 4)]
    );
    // Stated with no runner: then the due times pass as `NoRunner`.
    let (mut f, mut owner) = scheduled(MisfirePolicy::FireOnce);
    f.state.jobs.runners.remove(&R3);
    f.runners(R2, &[]);
    assert_eq!(f.feed(&mut owner, T0 + 4_300), []);
    f.runners(R3, &[]);
    assert_eq!(
        f.feed(&mut owner, T0 + 4_400),
        [pass(T0, 5, PassReason::NoRunner, T0 + 5_000)]
    );
}

#[test]
fn a_core_states_its_runner_keys_even_when_it_has_none() {
    let mut f = Fixture::new();
    f.state.jobs.runners.remove(&R3);
    let mut core = SchedulerCore::new(R3, config(), f.t0, T0);
    assert_eq!(
        f.feed(&mut core, T0),
        [Output::Propose(Command::Jobs(JobCommand::Runners {
            replica: R3,
            epoch: 1,
            keys: vec![],
        }))]
    );
}

#[test]
fn a_fire_whose_runner_died_runs_again_with_a_higher_token_and_the_old_run_is_aborted() {
    let (mut f, mut owner) = scheduled(MisfirePolicy::FireOnce);
    f.runners(R3, &["k"]);
    let out = f.feed(&mut owner, T0);
    let Output::Propose(Command::Jobs(JobCommand::Fire { runner, .. })) = &out[0] else {
        panic!("{out:?}");
    };
    let (dead, other) = if runner.0 == R2 { (R2, R3) } else { (R3, R2) };
    let first = f.apply_proposal(&out).unwrap();
    let mut old = SchedulerCore::new(dead, config(), f.t0, T0);
    old.register("k");
    assert!(matches!(&f.feed(&mut old, T0 + 10)[..], [Output::Start(_)]));
    // The runner's entitlement ends: its run is told before anyone can fire it again.
    let now = f.at(T0 + 20);
    let lapsed = Entitlement {
        epoch: 1,
        until: now,
    };
    old.set_group(
        now,
        T0 + 20,
        Arc::new(f.state.clone()),
        Some(1),
        Some(lapsed),
    );
    assert_eq!(
        drain(&mut old),
        [Output::Abort {
            job: "j".into(),
            token: first
        }]
    );
    f.apply(Command::Revoke {
        replica: dead,
        epoch: 1,
        seq: 0,
    });
    let again = f.feed(&mut owner, T0 + 30);
    assert_eq!(again, [fire(T0, 2, other, T0 + EVERY, 0)]);
    let second = f.apply_proposal(&again).unwrap();
    assert!(second > first);
    // The old run's node learns its fire went elsewhere; the run's end is proposed once, not
    // asked again for ever.
    assert_eq!(f.feed(&mut old, T0 + 40), []);
    let stale = Run {
        job: "j".into(),
        config: encode_config(&job_config(MisfirePolicy::FireOnce, Overlap::Skip)),
        due: T0,
        attempt: 1,
        token: first,
        local: false,
    };
    let end = ended(RunOutcome::Aborted, T0, 40);
    old.run_finished(f.at(T0 + 40), T0 + 40, &stale, end);
    assert_eq!(
        drain(&mut old),
        [Output::Propose(finish(
            first,
            RunOutcome::Aborted,
            "",
            T0,
            40
        ))]
    );
    assert_eq!(f.feed(&mut old, T0 + 5_000), []);
    // The old run's late completion is fenced.
    assert!(matches!(
        f.apply(finish(first, RunOutcome::Succeeded, "", 0, 0)),
        Outcome::Job(JobOutcome::Refused(_))
    ));
}

#[test]
fn runs_spread_over_the_nodes_with_the_runner() {
    let mut f = Fixture::new();
    f.runners(R3, &["k"]);
    let picked: std::collections::BTreeSet<ReplicaId> = (0..20)
        .filter_map(|i| super::plan::pick_runner(&f.state, "j", "k", T0 + i * EVERY))
        .map(|(r, _)| r)
        .collect();
    assert_eq!(picked, [R2, R3].into());
    f.apply(Command::Leave {
        replica: R3,
        epoch: 1,
    });
    assert_eq!(
        super::plan::pick_runner(&f.state, "j", "k", T0),
        Some((R2, 1)),
        "a leaving node is not chosen"
    );
}

#[test]
fn a_fire_nobody_can_run_again_is_recorded_lost() {
    let (mut f, mut owner) = scheduled(MisfirePolicy::FireOnce);
    let token = f.apply_proposal(&f.feed(&mut owner, T0)).unwrap();
    f.apply(Command::Revoke {
        replica: R2,
        epoch: 1,
        seq: 0,
    });
    assert_eq!(
        f.feed(&mut owner, T0 + 30),
        [Output::Propose(finish(
            token,
            RunOutcome::Lost,
            NO_RERUN,
            0,
            0
        ))]
    );
}

#[test]
fn a_job_whose_stored_configuration_does_not_decode_is_quarantined_once() {
    let mut f = Fixture::new();
    f.apply(Command::Jobs(JobCommand::Schedule {
        job: "j".into(),
        runner: "k".into(),
        overlap: false,
        first_due: Some(T0),
        history: 5,
        config: b"junk".to_vec().into(),
    }));
    let mut owner = SchedulerCore::new(R1, config(), f.t0, T0);
    let out = f.feed(&mut owner, T0);
    assert!(
        matches!(&out[..], [Output::Quarantined { job, .. }] if job == "j"),
        "{out:?}"
    );
    assert_eq!(f.feed(&mut owner, T0 + 10), []);
}

#[test]
fn a_local_job_fires_on_the_node_s_wall_clock_without_the_group_and_skips_overlaps() {
    let f = Fixture::new();
    let config = job_config(MisfirePolicy::FireOnce, Overlap::Skip).run_mode(RunMode::Locally);
    let mut core = SchedulerCore::new(R1, self::config(), f.t0, T0 - 50);
    core.schedule(f.at(T0) - Duration::from_millis(50), T0 - 50, "j", &config)
        .unwrap();
    assert_eq!(drain(&mut core), []);
    assert_eq!(core.poll_timeout(), Some(f.at(T0)));
    core.handle_timeout(f.at(T0), T0);
    let run = Run {
        job: "j".into(),
        config: encode_config(&config),
        due: T0,
        attempt: 1,
        token: 1,
        local: true,
    };
    assert_eq!(drain(&mut core), [Output::Start(run.clone())]);
    // Still running at the next due time: it passes.
    core.handle_timeout(f.at(T0 + EVERY), T0 + EVERY);
    assert_eq!(drain(&mut core), []);
    core.run_finished(
        f.at(T0 + 1_100),
        T0 + 1_100,
        &run,
        ended(RunOutcome::Succeeded, T0, 1_100),
    );
    assert_eq!(drain(&mut core), []);
    core.handle_timeout(f.at(T0 + 2 * EVERY), T0 + 2 * EVERY);
    assert_eq!(
        drain(&mut core),
        [Output::Start(Run {
            due: T0 + 2 * EVERY,
            token: 2,
            ..run
        })]
    );
}

/// Seed 14 of the simulator once spun: a group without a leader fails a proposal at once, the
/// status reporting the failure asked again at once, and so on without time passing.
#[test]
fn a_failed_proposal_is_asked_again_at_its_retry_not_at_once() {
    let (f, mut owner) = scheduled(MisfirePolicy::FireOnce);
    let first = f.feed(&mut owner, T0);
    let [Output::Propose(command)] = &first[..] else {
        panic!("{first:?}");
    };
    owner.proposal_failed(command);
    assert_eq!(f.feed(&mut owner, T0 + 1), []);
    assert_eq!(owner.poll_timeout(), Some(f.at(T0) + config().retry));
    // Asked again at the retry, planned anew (the due times since fold into one fire).
    assert_eq!(
        f.feed(&mut owner, T0 + 2_000),
        [fire(T0 + 2_000, 1, R2, T0 + 3_000, 2)]
    );
}

#[test]
fn a_tick_looks_only_at_the_jobs_that_changed_or_came_due() {
    const JOBS: u64 = 500;
    let mut f = Fixture::new();
    let mut scheduler = SchedulerCore::new(R1, config(), f.t0, T0);
    let later = JobConfig::for_runner("k")
        .schedule(Schedule::interval(Duration::from_millis(EVERY), from_ms(T0 + 10_000)).unwrap());
    for i in 0..JOBS {
        scheduler
            .schedule(f.t0, T0, &format!("j{i:03}"), &later)
            .unwrap();
    }
    for c in drain(&mut scheduler) {
        let Output::Propose(c) = c else {
            panic!("{c:?}")
        };
        f.apply(c);
    }
    let mut core = SchedulerCore::new(R1, config(), f.t0, T0);
    assert_eq!(f.feed(&mut core, T0), []);
    assert_eq!(core.visited(), JOBS, "the first tick looks at every job");
    assert_eq!(core.poll_timeout(), Some(f.at(T0 + 10_000)));

    // One job changes (scheduled again, due sooner): that one job is looked at.
    let sooner = JobConfig::for_runner("k")
        .schedule(Schedule::interval(Duration::from_millis(EVERY), from_ms(T0 + 2_000)).unwrap());
    scheduler.schedule(f.t0, T0, "j007", &sooner).unwrap();
    let [Output::Propose(c)] = &drain(&mut scheduler)[..] else {
        panic!("one proposal expected")
    };
    f.apply(c.clone());
    assert_eq!(f.feed(&mut core, T0 + 1_000), []);
    assert_eq!(core.visited(), JOBS + 1);
    assert_eq!(core.poll_timeout(), Some(f.at(T0 + 2_000)));

    // Its due time comes: it alone is looked at, and fired.
    core.handle_timeout(f.at(T0 + 2_000), T0 + 2_000);
    let out = drain(&mut core);
    assert!(
        matches!(&out[..], [Output::Propose(Command::Jobs(JobCommand::Fire { job, .. }))] if job == "j007"),
        "{out:?}"
    );
    assert_eq!(core.visited(), JOBS + 2);

    // A member's epoch ends: every job is looked at again (a fire on it must run elsewhere).
    let revoked = f.apply(Command::Revoke {
        replica: R3,
        epoch: 1,
        seq: 0,
    });
    assert!(
        f.state.liveness[&R3].phase == colony_runtime::consensus::Phase::Ended,
        "{revoked:?}"
    );
    assert_eq!(f.feed(&mut core, T0 + 2_100), []);
    assert_eq!(core.visited(), 2 * JOBS + 2);
}

/// A tick that looks only at the jobs that changed still looks at the runs of a job removed
/// meanwhile: its run here is stopped and forgotten (its `Finish` is not asked again).
#[test]
fn a_run_whose_job_is_unscheduled_meanwhile_is_aborted_and_forgotten() {
    let (mut f, mut owner) = scheduled(MisfirePolicy::FireOnce);
    let out = f.feed(&mut owner, T0);
    let token = f.apply_proposal(&out).unwrap();
    let mut runner = SchedulerCore::new(R2, config(), f.t0, T0);
    runner.register("k");
    let out = f.feed(&mut runner, T0 + 10);
    let [Output::Start(run)] = &out[..] else {
        panic!("{out:?}");
    };
    let run = run.clone();
    assert_eq!(f.feed(&mut runner, T0 + 20), []);
    let visited = runner.visited();
    f.apply(Command::Jobs(JobCommand::Unschedule { job: "j".into() }));
    assert_eq!(
        f.feed(&mut runner, T0 + 30),
        [Output::Abort {
            job: "j".into(),
            token
        }]
    );
    assert_eq!(runner.visited(), visited, "looked at no job: none is left");
    // The run's end is proposed once, and not asked again: its fire is gone.
    runner.run_finished(
        f.at(T0 + 40),
        T0 + 40,
        &run,
        ended(RunOutcome::Aborted, T0, 30),
    );
    assert_eq!(
        drain(&mut runner),
        [Output::Propose(finish(
            token,
            RunOutcome::Aborted,
            "",
            T0,
            30
        ))]
    );
    assert_eq!(f.feed(&mut runner, T0 + 60_000), []);
}
