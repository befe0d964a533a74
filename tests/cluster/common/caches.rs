//! Cache workloads on node processes, and the checks of their histories.

use std::path::Path;
use std::time::Duration;

use colony_runtime::testkit::check::{Read, Write, no_stale_reads, reads_never_go_back};
use colony_runtime::testkit::{ClusterSpec, TestCluster};
use serde_json::{Value, json};

/// Writes each node makes in a coherence run, unless told otherwise.
pub const WRITES: u64 = 150;

/// A cache workload on every node of a new cluster.
pub struct Hammer {
    /// `local`, `invalidation` or `copy`.
    pub mode: &'static str,
    /// Synchronous replication (else asynchronous).
    pub synchronous: bool,
    /// Every node writes the same keys, one write of a key after another.
    pub shared_keys: bool,
    /// Wall-clock offsets of the nodes, in milliseconds.
    pub clock_offsets_ms: Vec<i64>,
    /// Writes per node.
    pub writes: u64,
    /// The node (by name, `n1`...) that also calls `remove_all` after every 20 of its writes.
    pub remove_all_from: Option<&'static str>,
}

impl Hammer {
    pub fn new(mode: &'static str, synchronous: bool) -> Self {
        Hammer {
            mode,
            synchronous,
            shared_keys: false,
            clock_offsets_ms: Vec::new(),
            writes: WRITES,
            remove_all_from: None,
        }
    }

    /// Starts `nodes` nodes running the workload and waits until they converge.
    pub fn start(&self, dir: &Path, nodes: usize) -> TestCluster {
        let workload = dir.join("workload.json");
        std::fs::write(
            &workload,
            json!({
                "kind": "cache_hammer", "mode": self.mode, "synchronous": self.synchronous,
                "keys_per_node": 3, "write_every_ms": 10, "read_every_ms": 2,
                "writes": self.writes, "shared_keys": self.shared_keys,
                "db": "cachedb", "history": "log/cache.jsonl",
                "remove_all_from": self.remove_all_from,
            })
            .to_string(),
        )
        .unwrap();
        let mut spec: ClusterSpec =
            super::spec(nodes).clock_offsets_ms(self.clock_offsets_ms.iter().copied());
        spec.extra_args = vec!["--workload".into(), workload.display().to_string()];
        let cluster = TestCluster::start(spec).expect("spawn nodes");
        super::assert_converges(&cluster, "no convergence");
        cluster
    }
}

/// Every recorded event of the kind `event` (`write`, `read`, `remove_all`, `coherence`).
pub fn recorded(cluster: &TestCluster, event: &str) -> Vec<Value> {
    events(cluster)
        .into_iter()
        .filter(|e| e["event"] == event)
        .collect()
}

fn events(cluster: &TestCluster) -> Vec<Value> {
    super::histories(cluster, "log/cache.jsonl")
}

/// The recorded writes that succeeded, and the reads that returned a value.
pub fn history(cluster: &TestCluster) -> (Vec<Write>, Vec<Read>) {
    let events = events(cluster);
    let u = |e: &Value, f: &str| e[f].as_u64().unwrap_or(0);
    let s = |e: &Value, f: &str| e[f].as_str().unwrap_or("").to_owned();
    let writes = events
        .iter()
        .filter(|e| e["event"] == "write" && e["ok"] == true)
        .map(|e| Write {
            key: s(e, "key"),
            value: u(e, "value"),
            start_us: u(e, "start_us"),
            end_us: u(e, "end_us"),
        })
        .collect();
    let reads = events
        .iter()
        .filter(|e| e["event"] == "read" && e["value"].is_u64())
        .map(|e| Read {
            node: s(e, "node"),
            key: s(e, "key"),
            value: u(e, "value"),
            start_us: u(e, "start_us"),
            end_us: u(e, "end_us"),
        })
        .collect();
    (writes, reads)
}

/// Waits until every node has made `writes` writes.
pub fn wait_writes(cluster: &TestCluster, writes: u64, timeout: Duration) -> bool {
    let want = writes as usize * cluster.len();
    cluster
        .wait_until(timeout, |c| {
            events(c).iter().filter(|e| e["event"] == "write").count() >= want
        })
        .is_some()
}

/// The reads never went back on any node, and (for synchronous runs) never served a value
/// older than a returned write.
pub fn check_writes(cluster: &TestCluster, synchronous: bool, each: u64) {
    let (writes, reads) = history(cluster);
    assert!(
        writes.len() as u64 >= each * cluster.len() as u64,
        "too few writes: {} (every node makes {each})",
        writes.len()
    );
    assert!(reads.len() > 500, "too few reads: {}", reads.len());
    let back = reads_never_go_back(&reads);
    assert!(
        back.is_empty(),
        "a node read an older value after a newer one: {:#?}",
        &back[..back.len().min(5)]
    );
    if synchronous {
        let stale = no_stale_reads(&writes, &reads);
        assert!(
            stale.is_empty(),
            "stale reads after returned writes: {:#?}",
            &stale[..stale.len().min(5)]
        );
    }
}
