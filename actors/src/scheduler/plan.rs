//! What the owner of a job's slot proposes next for it, from the cluster state and its wall
//! clock: one command at a time, or nothing. No IO, no clock of its own.
//!
//! In order: a fire whose runner's epoch ended runs again on another runner (attempt + 1), or
//! is recorded as lost when no live node has the runner; a due time that comes while a run of a
//! job that does not allow overlaps is in progress passes (`Overlap`) if it is on time, and
//! waits for the run to end otherwise (then the misfire policy decides); a due time fires on a
//! runner chosen among live nodes with the job's runner key, after the misfire policy folded
//! or skipped the missed ones, or passes (`NoRunner`, `Missed`).
//!
//! "No live node has the runner" is only decided once every live node stated its runner keys
//! in its current epoch ([`runners_known`]): a node that just started, after a full restart
//! say, registers its keys a moment after it becomes live, and until then a fire would be
//! recorded lost, or a cluster's downtime passed as `NoRunner`, for want of a runner that is
//! about to be there.

use colony_runtime::consensus::jobs::{Job, JobCommand, PassReason, RunOutcome};
use colony_runtime::consensus::{ClusterState, Phase, ReplicaId};
use colony_runtime::placement::owner_by;

use super::config::JobConfig;
use super::misfire;

/// Message of a run recorded as lost because nobody can run it again.
pub const NO_RERUN: &str = "its runner's node died and no live node has the runner";

/// The node that runs `due` of job `id` with runner `key`: a live (not leaving) node whose
/// epoch in force registered the key, by rendezvous on the job and due time so that runs
/// spread over the runners.
pub fn pick_runner(
    state: &ClusterState,
    id: &str,
    key: &str,
    due: u64,
) -> Option<(ReplicaId, u64)> {
    let live = |r: &ReplicaId, e: u64| {
        state
            .liveness
            .get(r)
            .is_some_and(|l| l.in_force(e) && l.phase == Phase::Live)
    };
    let candidates = state
        .jobs
        .runners
        .iter()
        .filter(|(r, (e, keys))| live(r, *e) && keys.iter().any(|k| k == key))
        .map(|(r, (e, _))| (*r, *e));
    let mut at = id.as_bytes().to_vec();
    at.push(0);
    at.extend_from_slice(&due.to_be_bytes());
    owner_by(&at, candidates, |(r, _)| r.0.to_be_bytes())
}

/// Whether every live node stated its runner keys (possibly none) in its current epoch.
pub fn runners_known(state: &ClusterState) -> bool {
    state
        .liveness
        .iter()
        .filter(|(_, l)| l.phase == Phase::Live)
        .all(|(r, l)| {
            state
                .jobs
                .runners
                .get(r)
                .is_some_and(|(e, _)| *e == l.epoch)
        })
}

/// The next command for job `id` (whose decoded configuration is `config`) at wall time `wall`
/// (UTC milliseconds); due times up to `grace` late are on time.
pub fn next_command(
    state: &ClusterState,
    id: &str,
    job: &Job,
    config: &JobConfig,
    wall: u64,
    grace: u64,
) -> Option<JobCommand> {
    let schedule = config.schedule.as_ref()?;
    // A fire whose runner's epoch ended: its run is fenced; run it again or record it lost.
    if let Some((token, fire)) = job
        .open
        .iter()
        .find(|(_, f)| !state.in_force(f.runner.0, f.runner.1))
    {
        return match pick_runner(state, id, &job.runner, fire.due) {
            Some(runner) => Some(JobCommand::Fire {
                job: id.to_owned(),
                generation: job.generation,
                from: fire.due,
                due: fire.due,
                attempt: fire.attempt + 1,
                runner,
                next_due: job.next_due,
                passed: 0,
            }),
            None if !runners_known(state) => None,
            None => Some(JobCommand::Finish {
                job: id.to_owned(),
                token: *token,
                outcome: RunOutcome::Lost,
                message: NO_RERUN.to_owned(),
                started: 0,
                millis: 0,
            }),
        };
    }
    let due = job.next_due.filter(|d| *d <= wall)?;
    let pass = |count, why, next_due| JobCommand::Pass {
        job: id.to_owned(),
        generation: job.generation,
        due,
        count,
        why,
        next_due,
    };
    if !job.overlap && !job.open.is_empty() {
        let on_time = wall - due <= grace;
        return on_time.then(|| pass(1, PassReason::Overlap, schedule.next_after_ms(due)));
    }
    let plan = misfire::plan(schedule, config.misfire, due, wall, grace);
    let Some(first) = plan.fire.first().copied() else {
        return Some(pass(plan.passed, PassReason::Missed, plan.next_due));
    };
    let Some(runner) = pick_runner(state, id, &job.runner, first) else {
        if !runners_known(state) {
            return None;
        }
        let count = plan.passed + plan.fire.len() as u64;
        return Some(pass(count, PassReason::NoRunner, plan.next_due));
    };
    // One fire at a time; the rest of a catch-up is planned again once this one applied.
    Some(JobCommand::Fire {
        job: id.to_owned(),
        generation: job.generation,
        from: due,
        due: first,
        attempt: 1,
        runner,
        next_due: plan.fire.get(1).copied().or(plan.next_due),
        passed: plan.passed,
    })
}
