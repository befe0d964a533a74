//! The cluster scheduler across node processes: a once-per-cluster job every 200 ms for 20 s
//! fires every due time exactly once, and a SIGKILL of the node running a long job runs the
//! fire again on another node (attempt 2, a higher token, after the kill). Judged by the
//! scheduler's shared checkers (`colony_actors::scheduler::check`) over every node's records:
//! its runs, and its view of the job's run history.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::{logs, serial};
use colony::actors::scheduler::{
    Overlap, PassReason, RunEnd, RunOutcome, Schedule, check, from_ms,
};
use colony_runtime::consensus::ReplicaId;
use colony_runtime::consensus::jobs::RunRecord;
use colony_runtime::testkit::TestCluster;
use serde_json::{Value, json};

const NODES: usize = 3;

fn start(dir: &std::path::Path, jobs: Value) -> TestCluster {
    start_with(dir, json!({ "jobs": jobs }))
}

/// A cluster whose nodes run `sched_hammer` with `fields` (the jobs and more).
fn start_with(dir: &std::path::Path, fields: Value) -> TestCluster {
    start_skewed(dir, fields, [0; NODES])
}

/// As [`start_with`], each node's wall clock offset by `offsets_ms`.
fn start_skewed(dir: &std::path::Path, fields: Value, offsets_ms: [i64; NODES]) -> TestCluster {
    let mut workload = json!({
        "kind": "sched_hammer", "scheduler": "n1", "poll_ms": 300,
        "history": "log/sched.jsonl",
    });
    for (k, v) in fields.as_object().unwrap() {
        workload[k] = v.clone();
    }
    let spec = crate::common::workload_spec(NODES, dir, &workload).clock_offsets_ms(offsets_ms);
    let cluster = TestCluster::start(spec).expect("spawn nodes");
    crate::common::assert_converges(&cluster, "no convergence");
    cluster
}

fn events(cluster: &TestCluster) -> Vec<Value> {
    crate::common::histories(cluster, "log/sched.jsonl")
}

/// The runs of `job` as their nodes recorded them; a run with no end recorded could act until
/// `open_until_us`.
fn starts(events: &[Value], job: &str, open_until_us: u64) -> Vec<check::RunStart> {
    let ends: BTreeMap<u64, u64> = events
        .iter()
        .filter(|e| e["event"] == "end" && e["job"] == job)
        .map(|e| (e["token"].as_u64().unwrap(), e["end_us"].as_u64().unwrap()))
        .collect();
    events
        .iter()
        .filter(|e| e["event"] == "start" && e["run"]["job"] == job)
        .map(|e| {
            let r = &e["run"];
            let token = r["token"].as_u64().unwrap();
            check::RunStart {
                job: job.to_owned(),
                due: r["due"].as_u64().unwrap(),
                token,
                attempt: r["attempt"].as_u64().unwrap() as u32,
                node: r["node"].as_str().unwrap().to_owned(),
                runner: (
                    ReplicaId(r["replica"].as_u64().unwrap()),
                    r["epoch"].as_u64().unwrap_or(0),
                ),
                at_us: r["at_us"].as_u64().unwrap(),
                until_us: ends.get(&token).copied().unwrap_or(open_until_us),
                had_runner: true,
            }
        })
        .collect()
}

/// Every history record of `job` any node saw, once each (every poll records the whole
/// bounded history).
fn records(events: &[Value], job: &str) -> Vec<RunRecord> {
    let mut seen = BTreeSet::new();
    events
        .iter()
        .filter(|e| e["event"] == "history" && e["job"] == job)
        .flat_map(|e| serde_json::from_value::<Vec<RunRecord>>(e["records"].clone()).unwrap())
        .filter(|r| seen.insert((r.due, r.token, r.attempt, format!("{:?}", r.what))))
        .collect()
}

/// The first due time of `job` that some poll saw fired and open, and that no run record
/// closes.
fn unfinished(events: &[Value], job: &str, records: &[RunRecord]) -> Option<u64> {
    let ran: BTreeSet<u64> = records
        .iter()
        .filter(|r| matches!(r.what, RunEnd::Ran(_)))
        .map(|r| r.due)
        .collect();
    events
        .iter()
        .filter(|e| e["event"] == "history" && e["job"] == job)
        .flat_map(|e| e["open"].as_array().cloned().unwrap_or_default())
        .filter_map(|due| due.as_u64())
        .filter(|due| !ran.contains(due))
        .min()
}

/// `job`'s schedule as the scheduling node recorded it.
fn schedule(events: &[Value], job: &str) -> Schedule {
    let e = events
        .iter()
        .find(|e| e["event"] == "scheduled" && e["job"] == job)
        .expect("the job was scheduled");
    Schedule::interval(
        Duration::from_millis(e["every_ms"].as_u64().unwrap()),
        from_ms(e["first_ms"].as_u64().unwrap()),
    )
    .unwrap()
}

/// Every promise over the records of `job`: runs never overlap and a due time runs again only
/// as a later attempt after the previous run could no longer act; each run started matches
/// the history; every due time from the first to the last recorded is accounted for exactly
/// once. Returns the history records.
fn check_job(events: &[Value], job: &str, open_until_us: u64) -> Vec<RunRecord> {
    check_job_with(events, job, open_until_us, |_| {})
}

/// [`check_job`], with each run's record adjusted by `adjust` first.
fn check_job_with(
    events: &[Value],
    job: &str,
    open_until_us: u64,
    adjust: impl Fn(&mut check::RunStart),
) -> Vec<RunRecord> {
    let mut starts = starts(events, job, open_until_us);
    starts.iter_mut().for_each(adjust);
    let broken = check::runs(&starts, |_| Overlap::Skip);
    assert!(broken.is_empty(), "{broken:#?}");
    let records = records(events, job);
    let (Some(from), Some(last)) = (
        records.iter().map(|r| r.due).min(),
        records.iter().map(|r| r.due).max(),
    ) else {
        panic!("no history of {job}");
    };
    // A fire still open at the last poll has no record yet, while later due times may (passed
    // as overlapping it): the window ends before the first such due time.
    let to = unfinished(events, job, &records).map_or(last, |due| last.min(due - 1));
    let broken = check::history(&schedule(events, job), &records, from, to);
    if !broken.is_empty() {
        let mut seen: Vec<(u64, u64, u32, String)> = records
            .iter()
            .map(|r| {
                (
                    r.due,
                    r.token,
                    r.attempt,
                    format!("{:?} {:?}", r.what, r.runner),
                )
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        seen.sort();
        panic!("{broken:#?}\nrecords:\n{seen:#?}");
    }
    // Each start the history has closed is recorded with its due time and attempt.
    let closed: BTreeMap<u64, (u64, u32)> = records
        .iter()
        .filter(|r| matches!(r.what, RunEnd::Ran(_)))
        .map(|r| (r.token, (r.due, r.attempt)))
        .collect();
    let last = closed.keys().max().copied().unwrap_or(0);
    for s in &starts {
        match closed.get(&s.token) {
            Some(said) => assert_eq!(*said, (s.due, s.attempt), "{s:?}"),
            None => assert!(s.token > last, "{s:?} is in no history record"),
        }
    }
    records
}

#[test]
fn a_job_every_200_ms_fires_each_due_time_exactly_once_across_three_processes() {
    every_due_time_once([0; NODES]);
}

/// Wall clocks seconds apart (each more than a lease) decide nothing: the owner fires each due
/// time by its own clock, early or late, and still exactly once.
#[test]
fn a_job_on_nodes_whose_clocks_are_seconds_apart_fires_each_due_time_exactly_once() {
    every_due_time_once([2_500, 0, -2_500]);
}

/// A job every 200 ms on nodes with clocks `offsets_ms` apart: 100 due times, each started
/// once, over several nodes.
fn every_due_time_once(offsets_ms: [i64; NODES]) {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_skewed(
        dir.path(),
        json!({ "jobs": [{ "id": "tick", "every_ms": 200, "work_ms": 20 }] }),
        offsets_ms,
    );
    let counted = cluster.wait_until(Duration::from_secs(60), |c| {
        records(&events(c), "tick")
            .iter()
            .map(|r| r.due)
            .collect::<BTreeSet<_>>()
            .len()
            >= 100
    });
    assert!(
        counted.is_some(),
        "100 due times in 60 s:\n{}",
        logs(&cluster)
    );
    let all = events(&cluster);
    let records = check_job(&all, "tick", u64::MAX);
    let runs: Vec<&RunRecord> = records
        .iter()
        .filter(|r| r.what == RunEnd::Ran(RunOutcome::Succeeded))
        .collect();
    // Fires on time on an idle cluster: nearly every due time ran.
    assert!(runs.len() >= 90, "{} of 100 due times ran", runs.len());
    let nodes: BTreeSet<_> = starts(&all, "tick", u64::MAX)
        .into_iter()
        .map(|s| s.node)
        .collect();
    assert!(nodes.len() >= 2, "runs spread over nodes: {nodes:?}");
}

#[test]
fn a_runner_on_one_node_only_takes_every_fire_and_once_unregistered_none_is_consumed() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_with(
        dir.path(),
        json!({
            "jobs": [{ "id": "tick", "every_ms": 200, "work_ms": 10 }],
            "runners_on": ["n2"], "unregister_after_ms": 8000,
        }),
    );
    let unregistered = |c: &TestCluster| {
        events(c)
            .iter()
            .find(|e| e["event"] == "unregistering")
            .and_then(|e| e["at_us"].as_u64())
    };
    let unregistered_us = cluster
        .wait_until(Duration::from_secs(40), |c| unregistered(c).is_some())
        .and_then(|_| unregistered(&cluster))
        .unwrap_or_else(|| panic!("n2 did not unregister:\n{}", logs(&cluster)));
    // Due times after it pass as having no runner (before n2's registration applied, the
    // first ones may have too).
    let passed_no_runner = |c: &TestCluster| {
        records(&events(c), "tick")
            .iter()
            .filter(|r| {
                r.due * 1000 > unregistered_us
                    && matches!(
                        r.what,
                        RunEnd::Passed {
                            why: PassReason::NoRunner,
                            ..
                        }
                    )
            })
            .count()
            >= 5
    };
    assert!(
        cluster
            .wait_until(Duration::from_secs(30), passed_no_runner)
            .is_some(),
        "no fires recorded without a runner:\n{}",
        logs(&cluster)
    );
    let all = events(&cluster);
    let starts = starts(&all, "tick", u64::MAX);
    assert!(
        starts.len() >= 10,
        "{} runs before the unregistration",
        starts.len()
    );
    assert!(
        starts.iter().all(|s| s.node == "n2"),
        "only n2 has the runner"
    );
    // The unregistration reaches the cluster state within a proposal's round trip.
    let late: Vec<_> = starts
        .iter()
        .filter(|s| s.at_us > unregistered_us + 2_000_000)
        .collect();
    assert!(
        late.is_empty(),
        "runs after the runner was unregistered: {late:?}"
    );
    check_job(&all, "tick", u64::MAX);
}

#[test]
fn sigkill_of_the_node_entitled_to_fire_moves_the_job_and_no_due_time_is_lost_or_doubled() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ticking(dir.path());
    let owner = |c: &TestCluster| {
        let all = events(c);
        let runs = records(&all, "tick")
            .iter()
            .filter(|r| r.what == RunEnd::Ran(RunOutcome::Succeeded))
            .count();
        let owner = all
            .iter()
            .rev()
            .find(|e| e["event"] == "history" && e["owner"].is_string())
            .and_then(|e| e["owner"].as_str().map(str::to_owned));
        owner.filter(|_| runs >= 10)
    };
    let name = cluster
        .wait_until(Duration::from_secs(30), |c| owner(c).is_some())
        .and_then(|_| owner(&cluster))
        .unwrap_or_else(|| panic!("no owner of the job's slot:\n{}", logs(&cluster)));
    let victim = (0..NODES).find(|i| cluster.name(*i) == name).unwrap();
    cluster.kill(victim);
    let killed_us = colony_wall_us();
    // The job fires on: runs of due times after the kill, on the other nodes.
    let on = cluster.wait_until(Duration::from_secs(60), |c| {
        records(&events(c), "tick")
            .iter()
            .filter(|r| {
                r.due * 1000 > killed_us + 1_000_000 && r.what == RunEnd::Ran(RunOutcome::Succeeded)
            })
            .count()
            >= 10
    });
    assert!(
        on.is_some(),
        "the job stopped with its owner:\n{}",
        logs(&cluster)
    );
    let all = events(&cluster);
    // The latest view of a survivor (the victim's file ends at the kill).
    let moved = all
        .iter()
        .rev()
        .find(|e| e["event"] == "history" && e["owner"].is_string() && e["node"] != name.as_str());
    assert_ne!(
        moved.and_then(|e| e["owner"].as_str()),
        Some(name.as_str()),
        "the slot moved"
    );
    check_job(&all, "tick", killed_us);
}

#[test]
fn a_2_3_partition_fires_on_the_majority_side_and_no_due_time_is_lost_or_doubled() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cluster = ticking(dir.path());
    let runs_after = |c: &TestCluster, after_ms: u64, n: usize| {
        records(&events(c), "tick")
            .iter()
            .filter(|r| r.due > after_ms && r.what == RunEnd::Ran(RunOutcome::Succeeded))
            .count()
            >= n
    };
    assert!(
        cluster
            .wait_until(Duration::from_secs(30), |c| runs_after(c, 0, 10))
            .is_some(),
        "no runs:\n{}",
        logs(&cluster)
    );
    cluster.partition(&[&[0], &[1, 2]]).unwrap();
    let cut_ms = colony_wall_us() / 1000;
    // The majority side fires on (after the lone node's slots move to it).
    let on = cluster.wait_until(Duration::from_secs(60), |c| {
        runs_after(c, cut_ms + 1_000, 10)
    });
    assert!(
        on.is_some(),
        "the majority side did not fire:\n{}",
        logs(&cluster)
    );
    cluster.heal().unwrap();
    let healed_ms = colony_wall_us() / 1000;
    let on = cluster.wait_until(Duration::from_secs(60), |c| {
        runs_after(c, healed_ms + 1_000, 10)
    });
    assert!(on.is_some(), "no fires after the heal:\n{}", logs(&cluster));
    let all = events(&cluster);
    check_job(&all, "tick", u64::MAX);
    let during: BTreeSet<String> = starts(&all, "tick", u64::MAX)
        .into_iter()
        .filter(|s| s.at_us / 1000 > cut_ms + 1_000 && s.at_us / 1000 < healed_ms)
        .map(|s| s.node)
        .collect();
    assert!(
        !during.contains(cluster.name(0)),
        "the cut-off node ran during the partition: {during:?}"
    );
}

/// Starts a cluster running a 200 ms job, with every node voting.
fn ticking(dir: &std::path::Path) -> TestCluster {
    let cluster = start(
        dir,
        json!([{ "id": "tick", "every_ms": 200, "work_ms": 10 }]),
    );
    crate::common::wait_voters(&cluster, NODES);
    cluster
}

/// Starts a cluster running a long job and waits for a run of it in progress; returns the
/// cluster, the run and the index of its node.
fn long_run(dir: &std::path::Path) -> (TestCluster, check::RunStart, usize) {
    let cluster = start(
        dir,
        json!([{ "id": "long", "every_ms": 4000, "work_ms": 2500 }]),
    );
    crate::common::wait_voters(&cluster, NODES);
    let running = |c: &TestCluster| {
        let all = events(c);
        let ended: BTreeSet<u64> = all
            .iter()
            .filter(|e| e["event"] == "end")
            .filter_map(|e| e["token"].as_u64())
            .collect();
        starts(&all, "long", u64::MAX)
            .into_iter()
            .find(|s| !ended.contains(&s.token))
    };
    let run = cluster
        .wait_until(Duration::from_secs(30), |c| running(c).is_some())
        .and_then(|_| running(&cluster))
        .unwrap_or_else(|| panic!("no run of the long job:\n{}", logs(&cluster)));
    let node = (0..NODES).find(|i| cluster.name(*i) == run.node).unwrap();
    (cluster, run, node)
}

/// Waits for `first`'s due time to run again on another node, with a higher attempt and token,
/// after `cut_us`; then for the history to record `first` as lost and a later due time run.
fn assert_run_again(cluster: &TestCluster, first: &check::RunStart, cut_us: u64) {
    let rerun = |c: &TestCluster| {
        starts(&events(c), "long", u64::MAX)
            .into_iter()
            .find(|s| s.due == first.due && s.attempt >= 2)
    };
    let again = cluster
        .wait_until(Duration::from_secs(60), |c| rerun(c).is_some())
        .and_then(|_| rerun(cluster))
        .unwrap_or_else(|| panic!("the fire was not run again:\n{}", logs(cluster)));
    assert_ne!(again.node, first.node);
    assert!(again.token > first.token, "{again:?} after {first:?}");
    assert!(
        again.at_us > cut_us,
        "{again:?} ran before its first node was cut off"
    );
    let closed = cluster.wait_until(Duration::from_secs(30), |c| {
        let records = records(&events(c), "long");
        let lost = records
            .iter()
            .any(|r| r.token == first.token && r.what == RunEnd::Ran(RunOutcome::Lost));
        let after = records
            .iter()
            .any(|r| r.due > first.due && r.what == RunEnd::Ran(RunOutcome::Succeeded));
        lost && after
    });
    assert!(
        closed.is_some(),
        "history:\n{:#?}",
        records(&events(cluster), "long")
    );
}

#[test]
fn sigkill_of_the_node_running_a_long_job_runs_the_fire_again_elsewhere() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, first, victim) = long_run(dir.path());
    cluster.kill(victim);
    let killed_us = colony_wall_us();
    assert_run_again(&cluster, &first, killed_us);
    check_job(&events(&cluster), "long", killed_us);
}

#[test]
fn a_paused_runner_past_its_lease_is_fenced_and_the_fire_runs_elsewhere() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (cluster, first, victim) = long_run(dir.path());
    cluster.pause(victim);
    let paused_us = colony_wall_us();
    assert_run_again(&cluster, &first, paused_us);
    cluster.resume(victim);
    // Back, the paused run may still reach its end, but its finish is refused by token: the
    // history keeps it lost (check_job refuses a token recorded two ways), and the job goes on
    // with the node back among the runners.
    let more = cluster.wait_until(Duration::from_secs(30), |c| {
        let all = events(c);
        let name = c.name(victim);
        starts(&all, "long", u64::MAX)
            .iter()
            .any(|s| s.node == name && s.at_us > paused_us)
            || records(&all, "long")
                .iter()
                .filter(|r| r.due > first.due && r.what == RunEnd::Ran(RunOutcome::Succeeded))
                .count()
                >= 3
    });
    assert!(more.is_some(), "the job did not go on:\n{}", logs(&cluster));
    let all = events(&cluster);
    // The paused run could act only until the pause; after it, only fenced.
    let records = check_job_with(&all, "long", u64::MAX, |s| {
        if s.token == first.token {
            s.until_us = s.until_us.min(paused_us);
        }
    });
    assert!(
        records
            .iter()
            .all(|r| r.token != first.token || r.what == RunEnd::Ran(RunOutcome::Lost)),
        "the paused run's late finish was refused: {records:#?}"
    );
}

#[test]
fn after_a_full_stop_and_start_the_job_comes_back_and_its_missed_times_fire_once() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // Each node registers its runner a moment after it starts: until then it states no runner
    // key, and the downtime's due times must still fire once (FireOnce), not pass as NoRunner.
    let mut cluster = start_with(
        dir.path(),
        json!({
            "jobs": [{ "id": "tick", "every_ms": 200, "work_ms": 10 }],
            "register_after_ms": 700,
        }),
    );
    crate::common::wait_voters(&cluster, NODES);
    let ran = |c: &TestCluster, n: usize| {
        records(&events(c), "tick")
            .iter()
            .filter(|r| r.what == RunEnd::Ran(RunOutcome::Succeeded))
            .count()
            >= n
    };
    assert!(
        cluster
            .wait_until(Duration::from_secs(30), |c| ran(c, 10))
            .is_some(),
        "no runs:\n{}",
        logs(&cluster)
    );
    let all: Vec<usize> = cluster.all();
    let stopping_ms = colony_wall_us() / 1000;
    for i in &all {
        cluster.terminate(*i, Duration::from_secs(15));
    }
    let stopped_us = colony_wall_us();
    let stopped_ms = stopped_us / 1000;
    std::thread::sleep(Duration::from_secs(3));
    for i in &all {
        cluster.restart(*i).unwrap();
    }
    // Runs of due times after the restart, with the downtime's due times coalesced (FireOnce):
    // one run for the latest missed time, the others recorded as missed.
    let back = cluster.wait_until(Duration::from_secs(60), |c| {
        records(&events(c), "tick")
            .iter()
            .any(|r| r.due > stopped_ms + 3_000 && r.what == RunEnd::Ran(RunOutcome::Succeeded))
    });
    assert!(
        back.is_some(),
        "the job did not come back:\n{}",
        logs(&cluster)
    );
    let all_events = events(&cluster);
    let scheduled = all_events
        .iter()
        .filter(|e| e["event"] == "scheduled")
        .count();
    assert_eq!(
        scheduled, 1,
        "scheduled once, recovered from the cluster state"
    );
    let records = check_job_with(&all_events, "tick", u64::MAX, ended_by(stopped_us));
    let missed: u64 = records
        .iter()
        .filter_map(|r| match r.what {
            RunEnd::Passed {
                why: PassReason::Missed,
                count,
                // Labelled with the first missed time: the job's next due time as the group stopped.
            } if r.due + 1_000 >= stopping_ms => Some(count),
            _ => None,
        })
        .sum();
    let around: Vec<&RunRecord> = records
        .iter()
        .filter(|r| r.due + 1_000 >= stopping_ms)
        .collect();
    assert!(
        missed >= 10,
        "the downtime's due times recorded as missed: {missed}; the records from the stop on: \
         {around:?}"
    );
}

/// For a cluster whose every process was stopped at `stopped_us`: a run that started before
/// and recorded no end (its process stopped in the middle of it) could act until then at most.
fn ended_by(stopped_us: u64) -> impl Fn(&mut check::RunStart) {
    move |run| {
        if run.at_us < stopped_us {
            run.until_us = run.until_us.min(stopped_us);
        }
    }
}

fn colony_wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Why each node's `GET /jobs` says job `id` is quarantined (`None`: not said, or the node
/// did not answer).
fn quarantined(cluster: &TestCluster, id: &str) -> Vec<Option<String>> {
    cluster
        .all()
        .into_iter()
        .map(|i| {
            let (status, body) = cluster.admin(i).get_text("jobs").ok()?;
            let jobs: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
            let job = jobs["jobs"].as_array()?.iter().find(|j| j["id"] == id)?;
            job["quarantined"].as_str().map(str::to_owned)
        })
        .collect()
}

#[test]
fn a_stored_job_that_does_not_decode_is_quarantined_and_never_stops_a_node_from_starting() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_with(
        dir.path(),
        json!({
            "jobs": [{ "id": "tick", "every_ms": 200, "work_ms": 10 }],
            "corrupt": ["garbled"],
        }),
    );
    crate::common::wait_voters(&cluster, NODES);
    let reported_everywhere = |c: &TestCluster| {
        quarantined(c, "garbled")
            .iter()
            .all(|why| why.as_ref().is_some_and(|w| !w.is_empty()))
    };
    let ran_after = |c: &TestCluster, from_ms: u64| {
        records(&events(c), "tick")
            .iter()
            .filter(|r| r.due >= from_ms && r.what == RunEnd::Ran(RunOutcome::Succeeded))
            .count()
            >= 5
    };
    assert!(
        cluster
            .wait_until(Duration::from_secs(30), |c| {
                c.all().len() == NODES && reported_everywhere(c) && ran_after(c, 0)
            })
            .is_some(),
        "the corrupt job was not reported by every node, or the good one did not run: {:?}\n{}",
        quarantined(&cluster, "garbled"),
        logs(&cluster)
    );
    // Every node stopped and started: the record is still in the group's log and snapshot.
    let all = cluster.all();
    for i in &all {
        cluster.terminate(*i, Duration::from_secs(15));
    }
    let stopped_us = colony_wall_us();
    for i in &all {
        cluster.restart(*i).unwrap();
    }
    let back_ms = colony_wall_us() / 1000;
    assert!(
        cluster
            .wait_until(Duration::from_secs(60), |c| {
                reported_everywhere(c) && ran_after(c, back_ms)
            })
            .is_some(),
        "after a full restart: {:?}\n{}",
        quarantined(&cluster, "garbled"),
        logs(&cluster)
    );
    let all_events = events(&cluster);
    assert_eq!(
        all_events
            .iter()
            .filter(|e| e["event"] == "corrupted")
            .count(),
        1
    );
    assert!(
        !all_events
            .iter()
            .any(|e| e["event"] == "start" && e["run"]["job"] == "garbled"),
        "the corrupt job ran"
    );
    check_job_with(&all_events, "tick", u64::MAX, ended_by(stopped_us));
}
