//! `colony demo`: a local 3-node cluster that loses a node and gets it back, and a cluster lock
//! that passes to a waiter on another node when its holder is killed.

use std::time::Duration;

use anyhow::{Context, bail};
use colony_runtime::MemberState;
use colony_runtime::testkit::{ClusterSpec, TestCluster};
use serde_json::json;

use super::status::table;

const NODES: usize = 3;
const LOCK: &str = "demo-lock";
const LEASE_MS: u64 = 1500;
const WAIT: Duration = Duration::from_secs(30);
const CACHE_WRITES: u64 = 6;
/// The lock workload's history, relative to each node's home.
const LOCK_HISTORY: &str = "log/demo-locks.jsonl";
/// The cache workload's history, relative to each node's home.
const CACHE_HISTORY: &str = "log/demo-cache.jsonl";

pub fn run() -> anyhow::Result<()> {
    let binary = std::env::current_exe().context("find the colony binary")?;
    let scratch = tempfile::tempdir().context("create a scratch directory")?;
    // Every node runs one client that takes the demo lock and holds it until it dies.
    let workload = scratch.path().join("workload.json");
    std::fs::write(
        &workload,
        json!({
            "kind": "lock_hammer", "names": [LOCK], "clients": 1, "hold_ms": 3_600_000u64,
            "pause_ms": 0, "history": LOCK_HISTORY,
        })
        .to_string(),
    )?;
    // And every node writes a few keys of a cache replicated by invalidation, and reads all.
    let caching = scratch.path().join("caching.json");
    std::fs::write(
        &caching,
        json!({
            "kind": "cache_hammer", "mode": "invalidation", "synchronous": true,
            "keys_per_node": 1, "write_every_ms": 300, "read_every_ms": 50, "writes": CACHE_WRITES,
            "db": "demo-db", "history": CACHE_HISTORY,
        })
        .to_string(),
    )?;
    let mut spec = ClusterSpec::new(binary, NODES);
    spec.extra_args = vec![
        "--workload".into(),
        workload.display().to_string(),
        "--workload".into(),
        caching.display().to_string(),
        "--lock-lease-ms".into(),
        LEASE_MS.to_string(),
    ];
    println!(
        "Starting {NODES} node processes on 127.0.0.1 with temporary homes and a common shared home..."
    );
    let mut cluster = TestCluster::start(spec).context("start the nodes")?;
    let all = cluster.all();
    for i in &all {
        println!(
            "  {} listens on {} (admin {})",
            cluster.name(*i),
            cluster.addr(*i),
            cluster.admin_addr(*i)
        );
    }
    println!("  shared home: {}", cluster.shared_home().display());

    let Some(took) = cluster.wait_converged(&all, WAIT) else {
        bail!(
            "the nodes did not converge; their logs:\n{}",
            logs(&cluster)
        );
    };
    println!(
        "\nMembership converged in {} ms. As n1 sees it:",
        took.as_millis()
    );
    show(&cluster, 0);

    show_invalidation(&cluster)?;

    println!(
        "\nEach node asks for the cluster lock `{LOCK}` (lease {LEASE_MS} ms); one gets it, the others wait in line."
    );
    let mut holder = None;
    cluster.wait_until(WAIT, |c| {
        holder = latest_grant(c);
        holder.is_some()
    });
    let Some((victim, token)) = holder else {
        bail!("nobody got the lock; logs:\n{}", logs(&cluster));
    };
    println!(
        "{} holds `{LOCK}` with fencing token {token}.",
        cluster.name(victim)
    );

    println!(
        "\nKilling {} (the lock holder) with SIGKILL...",
        cluster.name(victim)
    );
    let killed_at = std::time::Instant::now();
    cluster.kill(victim);
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
    let observer = survivors[0];
    let Some(took) = cluster.wait_until(WAIT, |c| {
        survivors
            .iter()
            .all(|&s| c.sees(s, victim, MemberState::Down))
    }) else {
        bail!(
            "the survivors did not mark {} down; logs:\n{}",
            cluster.name(victim),
            logs(&cluster)
        );
    };
    println!(
        "Every survivor marked {} down after {} ms. As {} sees it:",
        cluster.name(victim),
        took.as_millis(),
        cluster.name(observer)
    );
    show(&cluster, observer);
    let mut next = None;
    if cluster
        .wait_until(WAIT, |c| {
            next = latest_grant(c).filter(|(_, t)| *t > token);
            next.is_some()
        })
        .is_none()
    {
        bail!("the lock did not pass on; logs:\n{}", logs(&cluster));
    };
    let (heir, heir_token) = next.expect("set when the wait succeeded");
    println!(
        "{} got `{LOCK}` {} ms after the kill, with token {heir_token} (> {token}): a store fenced by tokens refuses the dead holder's writes.",
        cluster.name(heir),
        killed_at.elapsed().as_millis()
    );

    println!(
        "\nRestarting {} on the same address and home...",
        cluster.name(victim)
    );
    cluster.restart(victim).context("restart the node")?;
    let Some(took) = cluster.wait_converged(&all, WAIT) else {
        bail!(
            "{} did not rejoin; logs:\n{}",
            cluster.name(victim),
            logs(&cluster)
        );
    };
    println!(
        "{} rejoined after {} ms with a new id and a higher incarnation:",
        cluster.name(victim),
        took.as_millis()
    );
    show(&cluster, observer);

    println!("\nStopping every node gracefully (SIGTERM) and removing the temporary files.");
    for i in all.iter().rev() {
        cluster.terminate(*i, Duration::from_secs(10));
    }
    drop(cluster);
    println!("Done.");
    Ok(())
}

/// Waits for n1's last cache write, then shows what every node reads for that key.
fn show_invalidation(cluster: &TestCluster) -> anyhow::Result<()> {
    println!(
        "\nEach node writes its key of a cache replicated by invalidation ({CACHE_WRITES} writes, \
         the system of record first, then the cache) and reads every node's key through the cache."
    );
    let key = format!("{}-0", cluster.name(0));
    let last_write = || {
        cache_events(cluster, 0)
            .into_iter()
            .filter(|e| e["event"] == "write" && e["key"] == key.as_str())
            .filter_map(|e| Some((e["value"].as_u64()?, e["end_us"].as_u64()?)))
            .max()
    };
    if cluster
        .wait_until(WAIT, |_| {
            last_write().is_some_and(|(v, _)| v >= CACHE_WRITES - 1)
        })
        .is_none()
    {
        bail!("n1 did not finish writing; logs:\n{}", logs(cluster));
    }
    let (value, written_at) = last_write().expect("waited for it");
    // The first read of the key on each node that began after the write returned.
    let read_after = |i: usize| {
        cache_events(cluster, i)
            .into_iter()
            .filter(|e| e["event"] == "read" && e["key"] == key.as_str())
            .filter(|e| e["start_us"].as_u64().is_some_and(|s| s > written_at))
            .find_map(|e| e["value"].as_u64())
    };
    if cluster
        .wait_until(WAIT, |c| {
            c.all().into_iter().all(|i| read_after(i).is_some())
        })
        .is_none()
    {
        bail!("the nodes stopped reading; logs:\n{}", logs(cluster));
    }
    println!(
        "n1 wrote {key} = {value}; the synchronous write returned once every node had dropped its old entry."
    );
    for i in cluster.all() {
        let seen = read_after(i).expect("waited for it");
        println!("  {} then read {key} = {seen}", cluster.name(i));
    }
    Ok(())
}

/// The events node `i` recorded so far in the JSON-lines history `file` (relative to its
/// home); none while the file is missing.
fn events(cluster: &TestCluster, i: usize, file: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(cluster.home(i).join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn cache_events(cluster: &TestCluster, i: usize) -> Vec<serde_json::Value> {
    events(cluster, i, CACHE_HISTORY)
}

/// The node that most recently took the demo lock, and its token.
fn latest_grant(cluster: &TestCluster) -> Option<(usize, u64)> {
    cluster
        .all()
        .into_iter()
        .flat_map(|i| {
            events(cluster, i, LOCK_HISTORY)
                .into_iter()
                .filter(|e| e["event"] == "acquired")
                .filter_map(|e| e["token"].as_u64())
                .map(move |t| (i, t))
        })
        .max_by_key(|(_, t)| *t)
}

fn show(cluster: &TestCluster, i: usize) {
    match cluster.status(i) {
        Some(status) => print!("{}", table(&status)),
        None => println!("({} did not answer)", cluster.name(i)),
    }
}

fn logs(cluster: &TestCluster) -> String {
    cluster
        .all()
        .into_iter()
        .map(|i| format!("--- {} ---\n{}", cluster.name(i), cluster.log(i)))
        .collect()
}
