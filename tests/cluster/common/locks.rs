//! Lock workloads on node processes, and the checks of their histories.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use colony_runtime::testkit::check::{Hold, no_two_holders, tokens_increase};
use colony_runtime::testkit::{ClusterSpec, TestCluster};
use serde_json::{Value, json};

/// Lease used by lock tests: short, so that faults resolve quickly.
pub const LEASE_MS: u64 = 1000;

/// Holds recorded so far, counting renewals: how many lasted longer than `lease_ms`.
pub fn renewed_holds(cluster: &TestCluster, lease_ms: u64) -> usize {
    holds(&all_events(cluster))
        .iter()
        .filter(|h| h.end_us.saturating_sub(h.start_us) > lease_ms * 1000)
        .count()
}

/// Waits until `at_least` recorded holds have outlived their first lease; fails the test
/// otherwise.
pub fn assert_renewing(cluster: &TestCluster, at_least: usize, within: Duration) {
    let renewed = cluster.wait_until(within, |c| renewed_holds(c, LEASE_MS) >= at_least);
    assert!(
        renewed.is_some(),
        "fewer than {at_least} holds outlived their first lease:\n{}",
        super::logs(cluster)
    );
}

/// A cluster whose every node hammers `names` with `clients` clients holding for `hold_ms`.
pub fn hammer(
    dir: &Path,
    nodes: usize,
    names: &[&str],
    clients: usize,
    hold_ms: u64,
) -> TestCluster {
    hammer_on_clocks(dir, nodes, names, clients, hold_ms, &[], &[])
}

/// [`hammer`] with node `i`'s wall clock shifted by `offsets_ms[i]` milliseconds and `args`
/// added to every node's command line.
pub fn hammer_on_clocks(
    dir: &Path,
    nodes: usize,
    names: &[&str],
    clients: usize,
    hold_ms: u64,
    offsets_ms: &[i64],
    args: &[&str],
) -> TestCluster {
    let workload = dir.join("workload.json");
    std::fs::write(
        &workload,
        json!({
            "kind": "lock_hammer", "names": names, "clients": clients, "hold_ms": hold_ms,
            "pause_ms": 5, "history": "log/locks.jsonl", "sink": "fenced",
        })
        .to_string(),
    )
    .unwrap();
    let mut spec: ClusterSpec = super::spec(nodes).clock_offsets_ms(offsets_ms.iter().copied());
    spec.extra_args = vec![
        "--workload".into(),
        workload.display().to_string(),
        "--lock-lease-ms".into(),
        LEASE_MS.to_string(),
    ];
    spec.extra_args.extend(args.iter().map(|a| a.to_string()));
    let cluster = TestCluster::start(spec).expect("spawn nodes");
    super::assert_converges(&cluster, "no convergence");
    cluster
}

/// Every event node `i` recorded.
pub fn events(cluster: &TestCluster, i: usize) -> Vec<Value> {
    std::fs::read_to_string(cluster.home(i).join("log/locks.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Every event of every node.
pub fn all_events(cluster: &TestCluster) -> Vec<Value> {
    cluster
        .all()
        .into_iter()
        .flat_map(|i| events(cluster, i))
        .collect()
}

/// Acquisitions recorded by node `i`.
pub fn acquired(cluster: &TestCluster, i: usize) -> usize {
    events(cluster, i)
        .iter()
        .filter(|e| e["event"] == "acquired")
        .count()
}

/// Whether node `i` holds a lock right now, per its history.
pub fn holding(cluster: &TestCluster, i: usize) -> bool {
    let mut open: HashMap<(String, u64), bool> = HashMap::new();
    for e in events(cluster, i) {
        let key = (
            e["name"].as_str().unwrap_or("").to_owned(),
            e["token"].as_u64().unwrap_or(0),
        );
        match e["event"].as_str() {
            Some("acquired") => {
                open.insert(key, true);
            }
            Some("released") => {
                open.remove(&key);
            }
            _ => {}
        }
    }
    !open.is_empty()
}

/// Holds built from the events: valid from acquisition until release, loss or the end of the
/// lease, whichever came first, where the lease's end is the latest any renewal gave it (the
/// holder records its lease's end again when it releases).
pub fn holds(events: &[Value]) -> Vec<Hold> {
    let mut holds: HashMap<(String, u64), Hold> = HashMap::new();
    for e in events.iter().filter(|e| e["event"] == "acquired") {
        let (name, token) = (
            e["name"].as_str().unwrap().to_owned(),
            e["token"].as_u64().unwrap(),
        );
        holds.insert(
            (name.clone(), token),
            Hold {
                name,
                token,
                holder: format!("{}#{}", e["node"], e["client"]),
                start_us: e["at_us"].as_u64().unwrap(),
                end_us: e["valid_until_us"].as_u64().unwrap(),
            },
        );
    }
    let mut stopped: HashMap<(String, u64), u64> = HashMap::new();
    for e in events
        .iter()
        .filter(|e| e["event"] == "released" || e["event"] == "lost")
    {
        let key = (
            e["name"].as_str().unwrap().to_owned(),
            e["token"].as_u64().unwrap(),
        );
        if let Some(h) = holds.get_mut(&key) {
            if let Some(renewed_to) = e["valid_until_us"].as_u64() {
                h.end_us = h.end_us.max(renewed_to);
            }
            let at = e["at_us"].as_u64().unwrap();
            let first = stopped.entry(key).or_insert(at);
            *first = (*first).min(at);
        }
    }
    for (key, at) in stopped {
        if let Some(h) = holds.get_mut(&key) {
            h.end_us = h.end_us.min(at);
        }
    }
    holds.into_values().collect()
}

/// Stops every node gracefully and checks the promises over the whole history.
pub fn stop_and_check(mut cluster: TestCluster) -> Vec<Value> {
    for i in cluster.all() {
        cluster.terminate(i, Duration::from_secs(10));
    }
    let events = all_events(&cluster);
    let holds = holds(&events);
    let overlaps = no_two_holders(&holds);
    assert!(overlaps.is_empty(), "two holders at once: {overlaps:#?}");
    let backwards = tokens_increase(&holds);
    assert!(backwards.is_empty(), "tokens went back: {backwards:#?}");
    let refused_fresh: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "write" && e["accepted"] == false && e["lost"] == false)
        .collect();
    assert!(
        refused_fresh.is_empty(),
        "a valid holder's write was refused: {refused_fresh:?}"
    );
    events
}

/// Waits until the cluster has recorded `more` acquisitions beyond `from` in total.
pub fn wait_progress(cluster: &TestCluster, from: usize, more: usize, timeout: Duration) -> bool {
    cluster
        .wait_until(timeout, |c| {
            c.all().into_iter().map(|i| acquired(c, i)).sum::<usize>() >= from + more
        })
        .is_some()
}

/// Waits for `more` acquisitions from now on; fails the test, saying `what`, otherwise.
pub fn assert_progress(cluster: &TestCluster, more: usize, within: Duration, what: &str) {
    let before = total(cluster);
    assert!(
        wait_progress(cluster, before, more, within),
        "{what}:\n{}",
        super::logs(cluster)
    );
}

/// Total acquisitions so far.
pub fn total(cluster: &TestCluster) -> usize {
    cluster
        .all()
        .into_iter()
        .map(|i| acquired(cluster, i))
        .sum()
}
