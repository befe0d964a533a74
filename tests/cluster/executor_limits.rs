//! A per-cluster concurrency limit across node processes, measured from the processors'
//! records: `max_concurrency(6, PerCluster)` lets each of 3 nodes run 2 buckets at once, and
//! each of the 2 left after a SIGKILL run 3.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{logs, serial};
use colony_runtime::testkit::TestCluster;
use colony_runtime::testkit::check::{BatchRun, exclusive_batches, max_in_process};
use serde_json::json;

const NODES: usize = 3;
const LIMIT: u32 = 6;

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// The limit node `i` reports for the executor on `GET /executors`.
fn limit(cluster: &TestCluster, i: usize) -> Option<usize> {
    let view = cluster.admin(i).view("executors").ok()?;
    view["executors"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == "limited")?["stats"]["limit"]
        .as_u64()
        .map(|n| n as usize)
}

fn runs(cluster: &TestCluster) -> Vec<BatchRun> {
    crate::common::histories(cluster, "log/exec.jsonl")
        .iter()
        .filter_map(BatchRun::from_record)
        .collect()
}

#[test]
fn a_per_cluster_limit_is_divided_over_the_live_nodes_and_recomputed_when_one_dies() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // 30 buckets with 150 ms batches: far more work than the limit lets run at once.
    let mut spec = crate::common::workload_spec(
        NODES,
        dir.path(),
        &json!({
            "kind": "exec_hammer", "executor": "limited", "buckets": 30, "count": 200,
            "work_ms": 150, "batch_size": 1, "history": "log/exec.jsonl", "per_cluster": LIMIT,
        }),
    );
    spec.extra_args
        .extend(["--lock-lease-ms".into(), "2000".into()]);
    let mut cluster = TestCluster::start(spec).expect("spawn nodes");
    crate::common::assert_converges(&cluster, "no convergence");
    crate::common::wait_voters(&cluster, NODES);
    let three_per_node = LIMIT.div_ceil(3) as usize;
    let counts_three = cluster.wait_until(Duration::from_secs(30), |c| {
        c.all()
            .into_iter()
            .all(|i| limit(c, i) == Some(three_per_node))
    });
    assert!(
        counts_three.is_some(),
        "the nodes never all counted three live nodes:\n{}",
        logs(&cluster)
    );
    // From here every node counts three live nodes; three seconds of work at that.
    let three_from = wall_us();
    std::thread::sleep(Duration::from_secs(3));
    let victim = NODES - 1;
    let killed = wall_us();
    cluster.kill(victim);
    // Once the group revokes the dead node's epoch, each survivor counts two live nodes.
    let per_node = LIMIT.div_ceil(2) as usize;
    let recomputed = cluster.wait_until(Duration::from_secs(30), |c| {
        max_in_process(&runs(c), killed, u64::MAX)
            .values()
            .any(|n| *n >= per_node)
    });
    assert!(
        recomputed.is_some(),
        "no survivor ran {per_node} buckets at once after the kill:\n{}",
        logs(&cluster)
    );

    let runs = runs(&cluster);
    let overlaps = exclusive_batches(&runs);
    assert!(overlaps.is_empty(), "{overlaps:#?}");
    // A batch started before every node counted three (under a higher limit) runs to its end:
    // the limit binds from the end of the last of those.
    let settled = runs
        .iter()
        .filter(|r| r.start_us < three_from)
        .map(|r| r.end_us)
        .max()
        .unwrap_or(three_from)
        .max(three_from);
    assert!(settled < killed, "no time at three nodes");
    let three = max_in_process(&runs, settled, killed);
    assert_eq!(three.len(), NODES, "every node ran batches: {three:?}");
    assert!(
        three.values().all(|n| *n <= three_per_node),
        "with 3 nodes each may run {three_per_node} at once: {three:?}\n{}",
        logs(&cluster)
    );
    assert!(
        three.values().any(|n| *n == three_per_node),
        "no node reached its limit of {three_per_node} ({three:?}, {} ms at three nodes)",
        (killed - settled) / 1_000
    );
    // The group revokes the dead node's epoch no sooner than a lease (2 s, plus 2%) after it
    // applied its last heartbeat, sent at most a quarter lease before the kill: until 1.5 s
    // after the kill every survivor still counts three.
    let still_three = max_in_process(&runs, killed, killed + 1_500_000);
    assert!(
        still_three.values().all(|n| *n <= three_per_node),
        "a survivor ran more than {three_per_node} before the dead node's epoch could end: {still_three:?}"
    );
    let mut two = max_in_process(&runs, killed, u64::MAX);
    two.remove(cluster.name(victim));
    eprintln!("most in process per node: {three:?} with 3 nodes, {two:?} with 2");
    assert_eq!(two.len(), NODES - 1, "both survivors ran batches: {two:?}");
    assert!(
        two.values().all(|n| *n <= per_node) && two.values().any(|n| *n == per_node),
        "with 2 nodes each may run {per_node} at once, and some did: {two:?}\n{}",
        logs(&cluster)
    );
}
