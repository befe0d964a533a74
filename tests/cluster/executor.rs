//! Bucketed executors across node processes: every node submits numbered tasks to 50 buckets,
//! and the checkers of `testkit::check` judge the processors' records: per-bucket FIFO per
//! submitter, no overlapping batches of a bucket across nodes, rising tokens, and every
//! accepted task processed at least once: with every node up, with one killed mid-run, with a
//! worker paused (SIGSTOP) past its entitlement, across a 2|3 partition and its healing, and
//! across a stop and start of every node with tasks queued. Batches write under their token to
//! a fenced store, so a paused worker's late side effects are refused and never recorded.

use std::time::{Duration, Instant};

use crate::common::{logs, serial};
use colony_runtime::testkit::TestCluster;
use colony_runtime::testkit::check::{
    Accepted, BatchRun, every_accepted_processed, exclusive_batches, fifo_per_submitter,
};
use serde_json::{Value, json};

const NODES: usize = 3;
const BUCKETS: u64 = 50;

fn start(dir: &std::path::Path, count: u64) -> TestCluster {
    start_with(dir, NODES, count, 5, 4)
}

/// As [`start_hammer`], with processors that await their work (a dropped call stops them).
fn start_with(
    dir: &std::path::Path,
    nodes: usize,
    count: u64,
    work_ms: u64,
    batch_size: usize,
) -> TestCluster {
    start_hammer(dir, nodes, count, work_ms, batch_size, false)
}

/// `nodes` nodes, each submitting `count` tasks; a batch of at most `batch_size` takes
/// `work_ms` and writes under its token to a fenced store (on a blocking thread if
/// `blocking`: a dropped call does not stop it).
fn start_hammer(
    dir: &std::path::Path,
    nodes: usize,
    count: u64,
    work_ms: u64,
    batch_size: usize,
    blocking: bool,
) -> TestCluster {
    let workload = json!({
        "kind": "exec_hammer", "executor": "hammer", "buckets": BUCKETS, "count": count,
        "work_ms": work_ms, "batch_size": batch_size, "history": "log/exec.jsonl",
        "sink": "fenced", "blocking": blocking,
    });
    crate::common::cluster_with_workload(dir, nodes, &workload)
}

fn events(cluster: &TestCluster) -> Vec<Value> {
    crate::common::histories(cluster, "log/exec.jsonl")
}

fn runs(events: &[Value]) -> Vec<BatchRun> {
    events.iter().filter_map(BatchRun::from_record).collect()
}

fn accepted(events: &[Value]) -> Vec<Accepted> {
    events.iter().filter_map(Accepted::from_record).collect()
}

/// Waits until `submitters` processes finished submitting and every accepted task ran, then
/// checks every promise over the histories; returns the batches run.
fn finish_and_check(cluster: TestCluster, submitters: usize, within: Duration) -> Vec<BatchRun> {
    let deadline = Instant::now() + within;
    loop {
        let all = events(&cluster);
        let submitted = all.iter().filter(|e| e["event"] == "submitted").count();
        let missing = every_accepted_processed(&runs(&all), &[], &accepted(&all));
        if submitted >= submitters && missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{submitted} of {submitters} nodes submitted everything; {} accepted tasks never ran, \
             first {:?}:\n{}",
            missing.len(),
            missing.first(),
            logs(&cluster)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let all = events(&cluster);
    let (runs, accepted) = (runs(&all), accepted(&all));
    assert!(accepted.len() > 100, "{} tasks accepted", accepted.len());
    let overlaps = exclusive_batches(&runs);
    assert!(overlaps.is_empty(), "{overlaps:#?}");
    let disorder = fifo_per_submitter(&runs, &accepted);
    assert!(disorder.is_empty(), "{disorder:#?}");
    let nodes: std::collections::BTreeSet<String> = runs.iter().map(|r| r.node.clone()).collect();
    assert!(nodes.len() >= 2, "buckets ran on {nodes:?} only");
    let fenced = all.iter().filter(|e| e["event"] == "fenced").count();
    // Shown with --nocapture.
    eprintln!(
        "{} accepted, {} batches on {nodes:?}, {fenced} late writes fenced",
        accepted.len(),
        runs.len()
    );
    runs
}

/// Batches of more than one task were taken.
fn assert_batched(runs: &[BatchRun]) {
    assert!(
        runs.iter().any(|r| r.tasks.len() > 1),
        "no batch held more than one task"
    );
}

#[test]
fn every_node_submits_to_fifty_buckets_and_every_promise_holds() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path(), 150);
    assert_batched(&finish_and_check(cluster, NODES, Duration::from_secs(90)));
}

#[test]
fn a_node_killed_mid_run_loses_no_accepted_task_and_its_buckets_run_on_in_order() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 300);
    crate::common::wait_voters(&cluster, NODES);
    let victim = NODES - 1;
    let started = cluster.wait_until(Duration::from_secs(60), |c| {
        let all = events(c);
        let name = c.name(victim);
        all.iter()
            .filter(|e| e["event"] == "batch" && e["node"] == name)
            .count()
            >= 10
    });
    assert!(
        started.is_some(),
        "the victim ran no batch:\n{}",
        logs(&cluster)
    );
    cluster.kill(victim);
    assert_batched(&finish_and_check(
        cluster,
        NODES - 1,
        Duration::from_secs(120),
    ));
}

/// Microseconds since the Unix epoch, the clock the workload records on.
fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The batches node `i` recorded.
fn batches_of(cluster: &TestCluster, i: usize) -> usize {
    let name = cluster.name(i);
    events(cluster)
        .iter()
        .filter(|e| e["event"] == "batch" && e["node"] == name)
        .count()
}

#[test]
fn a_worker_paused_past_its_entitlement_is_fenced_and_its_buckets_go_on_elsewhere() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // Batches of 200 ms on blocking threads: the pause catches the worker mid-batch, and its
    // writes go on when it wakes, whether or not its calls were dropped meanwhile.
    let cluster = start_hammer(dir.path(), NODES, 600, 200, 2, true);
    crate::common::wait_voters(&cluster, NODES);
    let sleeper = NODES - 1;
    let ran = cluster.wait_until(Duration::from_secs(60), |c| batches_of(c, sleeper) >= 10);
    assert!(
        ran.is_some(),
        "the sleeper ran no batch:\n{}",
        logs(&cluster)
    );
    let paused_at = wall_us();
    cluster.pause(sleeper);
    // Past its entitlement, an election and the revocation of its epoch.
    std::thread::sleep(Duration::from_secs(8));
    let resumed_at = wall_us();
    cluster.resume(sleeper);
    // Its batches in flight write on waking, under tokens others passed meanwhile: refused.
    let sleeper_name = cluster.name(sleeper).to_owned();
    let fenced_of = |c: &TestCluster| -> Vec<(String, u64)> {
        events(c)
            .iter()
            .filter(|e| e["event"] == "fenced" && e["node"] == sleeper_name.as_str())
            .map(|e| {
                (
                    e["bucket"].as_str().unwrap().to_owned(),
                    e["token"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let fenced = cluster.wait_until(Duration::from_secs(10), |c| !fenced_of(c).is_empty());
    assert!(
        fenced.is_some(),
        "no late write of the sleeper was refused:\n{}",
        cluster.log(sleeper)
    );
    // Those buckets went on elsewhere during the pause, with higher tokens.
    let all = runs(&events(&cluster));
    for (bucket, token) in fenced_of(&cluster) {
        assert!(
            all.iter().any(|r| r.bucket == bucket
                && r.node != sleeper_name
                && r.token > token
                && (paused_at..resumed_at).contains(&r.start_us)),
            "{bucket} did not go on elsewhere after the sleeper's #{token}"
        );
    }
    finish_and_check(cluster, NODES, Duration::from_secs(120));
}

#[test]
fn a_two_three_partition_then_its_healing_loses_no_accepted_task_and_keeps_every_promise() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let nodes = 5;
    let cluster = start_with(dir.path(), nodes, 200, 20, 4);
    crate::common::wait_voters(&cluster, nodes);
    let ran = cluster.wait_until(Duration::from_secs(60), |c| runs(&events(c)).len() >= 50);
    assert!(ran.is_some(), "no batch ran:\n{}", logs(&cluster));
    cluster.partition(&[&[0, 1], &[2, 3, 4]]).unwrap();
    let cut_at = wall_us();
    // The majority goes on: batches start on its side after the cut.
    let majority: Vec<String> = (2..nodes).map(|i| cluster.name(i).to_owned()).collect();
    let went_on = cluster.wait_until(Duration::from_secs(30), |c| {
        runs(&events(c))
            .iter()
            .filter(|r| r.start_us > cut_at + 3_000_000 && majority.contains(&r.node))
            .count()
            >= 20
    });
    cluster.heal().unwrap();
    assert!(
        went_on.is_some(),
        "the majority side ran nothing after the cut:\n{}",
        logs(&cluster)
    );
    crate::common::assert_converges(&cluster, "no single view after healing");
    finish_and_check(cluster, nodes, Duration::from_secs(120));
}

#[test]
fn every_node_stopped_and_started_with_tasks_queued_loses_no_accepted_task() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // Slow batches of one: the queues grow faster than they drain.
    let mut cluster = start_with(dir.path(), NODES, 150, 1_000, 1);
    crate::common::wait_voters(&cluster, NODES);
    let queued = |c: &TestCluster| {
        c.admin(0).view("executors").ok().and_then(|v| {
            v["executors"]
                .as_array()?
                .iter()
                .find(|e| e["name"] == "hammer")?["stats"]["queued"]
                .as_u64()
        })
    };
    let full = cluster.wait_until(Duration::from_secs(60), |c| {
        queued(c).is_some_and(|q| q >= 100)
    });
    assert!(
        full.is_some(),
        "100 tasks were never queued (queued: {:?}):\n{}",
        queued(&cluster),
        logs(&cluster)
    );
    let left = queued(&cluster).unwrap_or(0);
    for i in 0..NODES {
        cluster.kill(i);
    }
    // Processes that finished submitting before the stop.
    let done_before = events(&cluster)
        .iter()
        .filter(|e| e["event"] == "submitted")
        .count();
    for i in 0..NODES {
        cluster.restart(i).unwrap();
    }
    crate::common::assert_converges(&cluster, "no convergence after the restart");
    // Each restarted process submits its own tasks too: wait for them as well.
    finish_and_check(cluster, done_before + NODES, Duration::from_secs(180));
    // Shown with --nocapture.
    eprintln!("{left} tasks were queued when every node stopped");
}
