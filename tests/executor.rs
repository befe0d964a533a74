//! Bucketed executors across node processes: every node submits numbered tasks to 50 buckets,
//! and the checkers of `testkit::check` judge the processors' records: per-bucket FIFO per
//! submitter, no overlapping batches of a bucket across nodes, rising tokens, and every
//! accepted task processed at least once, with every node up or with one killed mid-run.

mod common;

use std::time::{Duration, Instant};

use colony_runtime::testkit::TestCluster;
use colony_runtime::testkit::check::{
    Accepted, BatchRun, every_accepted_processed, exclusive_batches, fifo_per_submitter,
};
use common::{logs, serial};
use serde_json::{Value, json};

const NODES: usize = 3;
const BUCKETS: u64 = 50;

fn start(dir: &std::path::Path, count: u64) -> TestCluster {
    let workload = json!({
        "kind": "exec_hammer", "executor": "hammer", "buckets": BUCKETS, "count": count,
        "work_ms": 5, "batch_size": 4, "history": "log/exec.jsonl",
    });
    common::cluster_with_workload(dir, NODES, &workload)
}

fn events(cluster: &TestCluster) -> Vec<Value> {
    common::histories(cluster, "log/exec.jsonl")
}

fn runs(events: &[Value]) -> Vec<BatchRun> {
    events.iter().filter_map(BatchRun::from_record).collect()
}

fn accepted(events: &[Value]) -> Vec<Accepted> {
    events.iter().filter_map(Accepted::from_record).collect()
}

/// Waits until `submitters` nodes finished submitting and every accepted task ran, then checks
/// every promise over the histories.
fn finish_and_check(cluster: TestCluster, submitters: usize, within: Duration) {
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
    let nodes: std::collections::BTreeSet<&str> = runs.iter().map(|r| r.node.as_str()).collect();
    assert!(nodes.len() >= 2, "buckets ran on {nodes:?} only");
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
    finish_and_check(cluster, NODES, Duration::from_secs(90));
}

#[test]
fn a_node_killed_mid_run_loses_no_accepted_task_and_its_buckets_run_on_in_order() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 300);
    common::wait_voters(&cluster, NODES);
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
    finish_and_check(cluster, NODES - 1, Duration::from_secs(120));
}
