//! The scheduler cores under faults: every run ends with every checker passing.
//!
//! A failing seed prints itself; replay it with a trace:
//! `COLONY_SIM_SEED=<seed> COLONY_SIM_TRACE=1 cargo test -p colony-actors --lib
//! scheduler::sim::tests::replay -- --nocapture` (add `COLONY_SIM_SCRIPT=paused` for the
//! paused runner's script). `COLONY_SIM_SOAK=20` runs twenty times as many seeds.

use std::time::Duration;

use colony_runtime::consensus::jobs::{JobCommand, JobOutcome};
use colony_runtime::sim::env;
use colony_runtime::sim::group::{
    FAULTS, GroupWorld, GroupWorldConfig, Script, Status, check as group_check,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{SchedNode, WALL0, cluster_jobs};
use crate::scheduler::check;
use crate::scheduler::{Overlap, decode_config};

type World = GroupWorld<SchedNode>;

/// Graceful leaves that ended in a retire (the node's jobs slots moved with no hand-over).
static RETIRED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn settled(seed: u64, nodes: usize) -> World {
    World::start_settled(GroupWorldConfig::spread(seed, nodes))
}

/// What broke a promise, by every checker.
fn broken(w: &World) -> Vec<String> {
    let r = w.record();
    let applied = check::applied_jobs(w.history().outcomes.values());
    let overlap = |job: &str| {
        cluster_jobs()
            .into_iter()
            .find(|(id, _, _)| *id == job)
            .map_or(Overlap::Skip, |(_, c, _)| c.overlap)
    };
    let mut broken = check::runs(&r.starts, overlap);
    broken.extend(check::log(&applied));
    broken.extend(check::starts_match_fires(&r.starts, &applied));
    broken.extend(check::policies(&r.proposed));
    broken.extend(local_runs_do_not_overlap(w));
    broken.extend(group_check::all(w.history()));
    broken
}

/// Local runs of a node's process never overlap (the local job skips overlaps).
fn local_runs_do_not_overlap(w: &World) -> Vec<String> {
    let local = &w.record().local;
    let mut broken = Vec::new();
    for (i, a) in local.iter().enumerate() {
        for b in &local[i + 1..] {
            let same = (a.node, a.incarnation) == (b.node, b.incarnation);
            if same && a.end_us.is_none_or(|end| b.at_us < end) {
                broken.push(format!("local runs overlap: {a:?} and {b:?}"));
            }
        }
    }
    broken
}

fn assert_clean(w: &World, script: &str) {
    let broken = broken(w);
    assert!(
        broken.is_empty(),
        "seed {seed} ({script}) broke a promise; replay with COLONY_SIM_SEED={seed}:\n{}",
        broken.join("\n"),
        seed = w.seed(),
    );
}

/// Heals everything, restarts every killed node, and runs until every node is registered and
/// entitled and every jobs slot served, then a while more; every periodic job is then keeping up
/// with the wall clocks.
fn recover(w: &mut World, script: &str) {
    w.set_faults(0.0, 0.0);
    w.heal();
    for i in 0..w.len() {
        if w.status(i) == Status::Killed {
            w.restart(i);
        }
    }
    if !w.run_until(entitled, Duration::from_secs(60)) {
        let nodes: Vec<String> = (0..w.len())
            .map(|i| {
                let core = w.core(i);
                format!(
                    "n{i} {:?}: epoch {:?}, entitled {:?}, leader {:?}, commit {:?}",
                    w.status(i),
                    core.and_then(|c| c.epoch()),
                    core.map(|c| c.entitlement(w.clock(i)).is_some()),
                    core.and_then(|c| c.leader()),
                    core.map(|c| c.commit_index()),
                )
            })
            .collect();
        panic!(
            "seed {} ({script}): did not settle after the faults:\n{}",
            w.seed(),
            nodes.join("\n")
        );
    }
    w.run_for(Duration::from_millis(1_500));
    keeps_up(w, script);
}

/// Settled, and every running node entitled: an owner fires only while entitled (seed 528
/// once ended with a restarted owner whose heartbeats had not committed yet).
fn entitled(w: &World) -> bool {
    World::settled(w)
        && (0..w.len())
            .filter(|i| w.status(*i) == Status::Running)
            .all(|i| {
                w.core(i)
                    .is_some_and(|c| c.entitlement(w.clock(i)).is_some())
            })
}

/// Every periodic job's next due time is close to the wall clocks: nothing is stuck.
fn keeps_up(w: &World, script: &str) {
    // The cluster's state as the most advanced running node applied it: a node still paused
    // by the script lags behind (seed 2722 judged a paused node's state).
    let Some(core) = (0..w.len())
        .filter(|i| w.status(*i) == Status::Running)
        .filter_map(|i| w.core(i))
        .max_by_key(|c| c.applied_index())
    else {
        return;
    };
    let oldest_wall = (0..w.len())
        .filter(|i| w.status(*i) == Status::Running)
        .map(|i| WALL0 + w.wall(i).as_millis() as u64)
        .min()
        .unwrap_or(WALL0);
    for (id, job) in &core.state().jobs.jobs {
        let Some(due) = job.next_due else {
            continue;
        };
        let periodic =
            decode_config(&job.config).is_ok_and(|c| id != "once" && c.schedule.is_some());
        let slot = colony_runtime::ownership::slot_of(id.as_bytes());
        assert!(
            !periodic || due + 2_500 >= oldest_wall,
            "seed {} ({script}): {id} is stuck at {due}, the slowest wall clock reads \
             {oldest_wall}; open fires {:?}, slot {:?}, liveness {:?}",
            w.seed(),
            job.open,
            core.state()
                .slot(colony_runtime::consensus::Domain::Jobs, slot),
            core.state().liveness,
        );
    }
}

/// A random fault script on 3 to 5 nodes: pauses (often longer than the liveness period, so a
/// running node's fires go elsewhere), kills and restarts, partitions, loss and duplication,
/// graceful restarts (the jobs slots move with no hand-over and the node retires) and joins.
fn chaos(seed: u64) -> World {
    let nodes = 3 + (seed % 3) as usize;
    let mut w = settled(seed, nodes);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5c4e_d01e);
    w.set_faults(0.01, 0.01);
    w.run_for(Duration::from_millis(rng.random_range(300..1_000)));
    let script = Script {
        steps: 3,
        faults: &FAULTS,
        gap_ms: (300, 1_500),
    };
    // Graceful leaves are counted, not required: under loss a lock slot's hand-over record
    // can take longer than the wait (seeds 433 and 707; see the report).
    let played = w.play_chaos(&mut rng, script, |_, _, _, _| {});
    RETIRED.fetch_add(played.retired, std::sync::atomic::Ordering::Relaxed);
    recover(&mut w, "chaos");
    assert_clean(&w, "chaos");
    w
}

/// A node is paused (SIGSTOP) while it runs a job, for longer than an election and the liveness
/// period: the fire runs again elsewhere with a higher token and attempt, only after the paused
/// run's entitlement ended, and the paused run's late finish is fenced.
fn paused_runner(seed: u64) -> World {
    let nodes = 3 + (seed % 3) as usize;
    let mut w = settled(seed, nodes);
    // Until every node votes: the others keep a quorum without the paused one.
    w.run_for(Duration::from_secs(3));
    // A run of a job whose runner another node has too (`rare`'s is on one node only).
    let running = |w: &World| {
        (0..w.len()).find_map(|i| {
            let run = w.service(i)?.running_cluster_run()?;
            (w.record().starts[run.1].job != "rare").then_some((i, run))
        })
    };
    assert!(
        w.run_until(|w| running(w).is_some(), Duration::from_secs(10)),
        "seed {seed}: nothing ran"
    );
    let (i, (token, index)) = running(&w).expect("found above");
    let (job, due) = {
        let s = &w.record().starts[index];
        (s.job.clone(), s.due)
    };
    // Long enough even when the paused node leads the group: an election (one to two 1-2 s
    // rounds) and then the 1 s liveness pass before the others revoke its epoch (seed 13 paused
    // the leader for 3 s and resumed it just before the revocation).
    w.pause(i, Duration::from_secs(6));
    w.run_for(Duration::from_secs(7));
    recover(&mut w, "paused");
    assert_clean(&w, "paused");
    let starts = &w.record().starts;
    assert!(
        starts
            .iter()
            .any(|s| s.job == job && s.due == due && s.token > token && s.attempt > 1),
        "seed {seed}: {job} {due} was not run again after its runner was paused"
    );
    let late: Vec<String> = check::applied_jobs(w.history().outcomes.values())
        .into_iter()
        .filter(|(c, o)| {
            matches!(c, JobCommand::Finish { token: t, .. } if *t == token)
                && !matches!(o, JobOutcome::Refused(_))
        })
        .map(|(c, o)| format!("{c:?}: {o:?}"))
        .collect();
    assert!(
        late.is_empty(),
        "seed {seed}: the paused run's finish was taken: {late:?}"
    );
    w
}

#[test]
fn a_runner_paused_past_its_entitlement_is_fenced_and_its_fire_runs_again() {
    for seed in 0..16 * env::soak() {
        paused_runner(seed);
    }
}

#[test]
fn replay() {
    let Some(seed) = env::replay_seed() else {
        return;
    };
    let w = match std::env::var("COLONY_SIM_SCRIPT").as_deref() {
        Ok("paused") => paused_runner(seed),
        _ => chaos(seed),
    };
    eprintln!("{}", summary(&w));
}

fn summary(w: &World) -> String {
    let r = w.record();
    let reruns = r.starts.iter().filter(|s| s.attempt > 1).count();
    format!(
        "seed {}: {} runs ({reruns} re-runs), {} finished, {} aborted, {} local runs, {} \
         proposals",
        w.seed(),
        r.starts.len(),
        r.finishes,
        r.aborts,
        r.local.len(),
        r.proposed.len()
    )
}

#[test]
fn no_fault_script_breaks_a_scheduler_promise() {
    let (mut runs, mut reruns, mut aborts, mut local) = (0, 0, 0, 0);
    for seed in 0..200 * env::soak() {
        let w = chaos(seed);
        let r = w.record();
        runs += r.starts.len();
        reruns += r.starts.iter().filter(|s| s.attempt > 1).count();
        aborts += r.aborts;
        local += r.local.len();
    }
    // The runs reached the paths under test.
    let retired = RETIRED.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        runs > 0 && reruns > 0 && aborts > 0 && local > 0 && retired > 0,
        "{runs} runs, {reruns} re-runs, {aborts} aborts, {local} local runs, {retired} retired"
    );
}

/// Seeds that once broke a promise, each with the fix; the exact-output tests beside the core
/// and the state prove each fix on its own too.
#[test]
fn fault_scripts_that_once_failed() {
    // A proposer whose Fire was not applied within its retry planned again from the outdated
    // next due time and counted the passed times from it; both fires applied. A Fire now names
    // the next due time it was planned from (`JobCommand::Fire::from`).
    chaos(4);
    // A group without a leader fails a proposal at once; asking again on the status that
    // reported it spun without time passing (`SchedulerCore::proposal_failed`).
    chaos(14);
    // The simulator's own lock slots asked for their hand-overs' records on every status; a
    // leaderless group failed each at once, and the status reporting it asked again (the
    // records are now asked on the resend timer and when a table arrives).
    chaos(824);
    chaos(846);
    // A restarted owner whose heartbeats had not committed yet was taken for settled, and its
    // jobs for stuck (the recovery now waits for every node's entitlement).
    chaos(528);
}
