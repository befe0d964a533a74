//! The scheduler's state machine, command by command.

use std::cell::Cell;
use std::collections::BTreeSet;

use super::*;

const R1: ReplicaId = ReplicaId(1);
const R2: ReplicaId = ReplicaId(2);
const T: u64 = 1_800_000_000_000;

/// A table and the world around it: which epochs are in force, and the token counter.
struct World {
    table: JobTable,
    live: BTreeSet<(ReplicaId, u64)>,
    next_token: Cell<u64>,
}

impl World {
    fn new() -> Self {
        let mut w = World {
            table: JobTable::default(),
            live: [(R1, 1), (R2, 1)].into(),
            next_token: Cell::new(100),
        };
        for r in [R1, R2] {
            assert_eq!(
                w.apply(&JobCommand::Runners {
                    replica: r,
                    epoch: 1,
                    keys: vec!["report".into()],
                }),
                JobOutcome::Done
            );
        }
        w
    }

    fn apply(&mut self, c: &JobCommand) -> JobOutcome {
        let live = &self.live;
        let next = &self.next_token;
        self.table.apply(
            c,
            |r, e| live.contains(&(r, e)),
            || {
                let t = next.get();
                next.set(t + 1);
                Some(t)
            },
        )
    }

    fn schedule(&mut self, overlap: bool) -> u64 {
        match self.apply(&schedule(overlap)) {
            JobOutcome::Scheduled { generation } => generation,
            other => panic!("{other:?}"),
        }
    }

    fn job(&self) -> &Job {
        &self.table.jobs["j"]
    }
}

fn schedule(overlap: bool) -> JobCommand {
    JobCommand::Schedule {
        job: "j".into(),
        runner: "report".into(),
        overlap,
        first_due: Some(T),
        history: 3,
        config: Default::default(),
    }
}

fn fire(generation: u64, due: u64, attempt: u32, runner: ReplicaId) -> JobCommand {
    JobCommand::Fire {
        job: "j".into(),
        generation,
        from: due,
        due,
        attempt,
        runner: (runner, 1),
        next_due: Some(due + 1000),
        passed: 0,
    }
}

fn finish(token: u64, message: &str) -> JobCommand {
    JobCommand::Finish {
        job: "j".into(),
        token,
        outcome: RunOutcome::Succeeded,
        message: message.into(),
        started: T,
        millis: 5,
    }
}

fn fired(o: JobOutcome) -> u64 {
    match o {
        JobOutcome::Fired { token } => token,
        other => panic!("expected a fire, got {other:?}"),
    }
}

#[test]
fn a_due_time_fires_once_however_many_propose_it() {
    let mut w = World::new();
    let g = w.schedule(false);
    let t1 = fired(w.apply(&fire(g, T, 1, R1)));
    // Another node (or a retry) proposing the same due time changes nothing.
    assert_eq!(
        w.apply(&fire(g, T, 1, R2)),
        JobOutcome::Refused(JobRefusal::Stale)
    );
    assert_eq!(w.apply(&finish(t1, "ok")), JobOutcome::Done);
    let t2 = fired(w.apply(&fire(g, T + 1000, 1, R2)));
    assert!(t2 > t1, "tokens increase per job");
    assert_eq!(w.job().next_due, Some(T + 2000));
}

#[test]
fn only_a_live_node_with_the_runner_can_be_given_a_fire() {
    let mut w = World::new();
    let g = w.schedule(false);
    let stranger = ReplicaId(9);
    w.live.insert((stranger, 1));
    assert_eq!(
        w.apply(&fire(g, T, 1, stranger)),
        JobOutcome::Refused(JobRefusal::NoRunner)
    );
    w.live.remove(&(R1, 1));
    assert_eq!(
        w.apply(&fire(g, T, 1, R1)),
        JobOutcome::Refused(JobRefusal::NoRunner)
    );
    // Registering runners needs an epoch in force.
    assert_eq!(
        w.apply(&JobCommand::Runners {
            replica: R1,
            epoch: 1,
            keys: vec!["report".into()],
        }),
        JobOutcome::Refused(JobRefusal::NoRunner)
    );
    w.table.forget_runners(|r, e| w.live.contains(&(r, e)));
    assert!(!w.table.runners.contains_key(&R1));
}

#[test]
fn overlapping_runs_only_when_the_job_allows_them() {
    let mut w = World::new();
    let g = w.schedule(false);
    fired(w.apply(&fire(g, T, 1, R1)));
    assert_eq!(
        w.apply(&fire(g, T + 1000, 1, R2)),
        JobOutcome::Refused(JobRefusal::Running)
    );
    let g = w.schedule(true);
    fired(w.apply(&fire(g, T, 1, R2)));
    assert_eq!(w.job().open.len(), 2);
}

#[test]
fn a_run_is_fired_again_only_once_its_runner_s_epoch_ended_and_the_old_run_is_fenced() {
    let mut w = World::new();
    let g = w.schedule(false);
    let first = fired(w.apply(&fire(g, T, 1, R1)));
    // While R1's epoch is in force, its run may be alive: no second attempt.
    assert_eq!(
        w.apply(&fire(g, T, 2, R2)),
        JobOutcome::Refused(JobRefusal::Running)
    );
    w.live.remove(&(R1, 1));
    let second = fired(w.apply(&fire(g, T, 2, R2)));
    assert!(second > first);
    // The first run's late completion is refused; the second's is recorded.
    assert_eq!(
        w.apply(&finish(first, "late")),
        JobOutcome::Refused(JobRefusal::Fenced)
    );
    assert_eq!(w.apply(&finish(second, "done")), JobOutcome::Done);
    let what: Vec<(u64, RunEnd)> = w.job().history.iter().map(|r| (r.token, r.what)).collect();
    assert_eq!(
        what,
        [
            (first, RunEnd::Ran(RunOutcome::Lost)),
            (second, RunEnd::Ran(RunOutcome::Succeeded))
        ]
    );
    assert_eq!(
        w.job().next_due,
        Some(T + 1000),
        "a re-run moves nothing on"
    );
}

#[test]
fn a_replaced_job_refuses_fires_planned_for_the_old_one() {
    let mut w = World::new();
    let old = w.schedule(false);
    let new = w.schedule(false);
    assert!(new > old);
    assert_eq!(
        w.apply(&fire(old, T, 1, R1)),
        JobOutcome::Refused(JobRefusal::Stale)
    );
    fired(w.apply(&fire(new, T, 1, R1)));
}

#[test]
fn passed_due_times_are_recorded_and_the_history_is_bounded() {
    let mut w = World::new();
    let g = w.schedule(false);
    let pass = |due: u64| JobCommand::Pass {
        job: "j".into(),
        generation: g,
        due,
        count: 1,
        why: PassReason::NoRunner,
        next_due: Some(due + 1000),
    };
    for i in 0..5 {
        assert_eq!(w.apply(&pass(T + i * 1000)), JobOutcome::Done);
    }
    assert_eq!(
        w.apply(&pass(T)),
        JobOutcome::Refused(JobRefusal::Stale),
        "a due time passes once"
    );
    assert_eq!(w.job().history.len(), 3);
    assert_eq!(w.job().history[0].due, T + 2000);
    // A long message is cut on a character boundary.
    let token = fired(w.apply(&fire(g, T + 5000, 1, R1)));
    w.apply(&finish(token, &"é".repeat(MAX_MESSAGE)));
    let kept = &w.job().history.back().unwrap().message;
    assert!(kept.len() <= MAX_MESSAGE && kept.chars().all(|c| c == 'é'));
}

#[test]
fn unscheduling_removes_the_job() {
    let mut w = World::new();
    w.schedule(false);
    let unschedule = JobCommand::Unschedule { job: "j".into() };
    assert_eq!(w.apply(&unschedule), JobOutcome::Done);
    assert_eq!(
        w.apply(&unschedule),
        JobOutcome::Refused(JobRefusal::NoSuchJob)
    );
}

#[test]
fn a_fire_may_jump_to_a_later_due_time_recording_the_ones_passed_but_never_back() {
    let mut w = World::new();
    let g = w.schedule(false);
    let mut late = fire(g, T + 5000, 1, R1);
    if let JobCommand::Fire { from, passed, .. } = &mut late {
        (*from, *passed) = (T, 5);
    }
    let token = fired(w.apply(&late));
    let record = w.job().history.back().unwrap();
    assert_eq!(
        (record.due, record.what),
        (
            T,
            RunEnd::Passed {
                why: PassReason::Missed,
                count: 5
            }
        )
    );
    assert_eq!(w.job().next_due, Some(T + 6000));
    w.apply(&finish(token, "ok"));
    // An earlier due time, one planned from an outdated next due time, or one whose next
    // due time is not after it, never fires.
    assert_eq!(
        w.apply(&fire(g, T + 1000, 1, R2)),
        JobOutcome::Refused(JobRefusal::Stale)
    );
    let mut outdated = fire(g, T + 7000, 1, R2);
    if let JobCommand::Fire { from, .. } = &mut outdated {
        *from = T;
    }
    assert_eq!(w.apply(&outdated), JobOutcome::Refused(JobRefusal::Stale));
    let mut stuck = fire(g, T + 6000, 1, R2);
    if let JobCommand::Fire { next_due, .. } = &mut stuck {
        *next_due = Some(T + 6000);
    }
    assert_eq!(w.apply(&stuck), JobOutcome::Refused(JobRefusal::Stale));
}

#[test]
fn a_copy_of_the_table_shares_its_jobs_and_a_refused_command_copies_nothing() {
    let mut w = World::new();
    let g = w.schedule(false);
    w.table
        .jobs
        .insert("other".into(), w.table.jobs["j"].clone());
    let copy = w.table.clone();
    let same = |a: &JobTable, b: &JobTable, id: &str| Shared::ptr_eq(&a.jobs[id], &b.jobs[id]);
    assert!(same(&copy, &w.table, "j"));
    let token = fired(w.apply(&fire(g, T, 1, R1)));
    // The fired job was copied, the other is still shared, and the copy kept its view.
    assert!(!same(&copy, &w.table, "j"));
    assert!(same(&copy, &w.table, "other"));
    assert!(copy.jobs["j"].open.is_empty());
    // Refused: a stale fire, a fenced finish, a stale pass.
    let before = w.table.clone();
    for refused in [
        fire(g, T, 1, R2),
        finish(token + 1, "late"),
        JobCommand::Pass {
            job: "j".into(),
            generation: g,
            due: T,
            count: 1,
            why: PassReason::Missed,
            next_due: None,
        },
    ] {
        assert!(
            matches!(w.apply(&refused), JobOutcome::Refused(_)),
            "{refused:?}"
        );
        assert!(same(&before, &w.table, "j"), "{refused:?} copied the job");
    }
}
