//! (g) A rolling restart of 5 Colony node processes under lock load (Colony only).
//!
//! Every node runs two workloads (the hidden `--workload` option of `colony node`):
//! - `lock_hammer`: 8 clients per node over 8 names (client `i` starts on name `i`, then takes
//!   the next), each hold lasting 3 leases (so it lives on renewals), then a 5 ms pause: every
//!   name is held nearly all the time, by one of 40 clients, with others queued behind it.
//!   Every hold and every loss is recorded.
//! - `lock_probe`: 2 staggered probers per name, each a `try_lock` every 50 ms (a grant is
//!   released at once); it records the intervals in which some owner answered for the name.
//!
//! Once the group has its 5 voters and the holds renew, every node in turn is stopped with
//! SIGTERM (a graceful leave: its slots are handed over with their holds), started again on the
//! same home, and the bench waits until every node sees every node up and the group has 5
//! voters again. Then:
//! - **longest time without a grantable owner**, per name: the longest hole in the union of
//!   every node's answered intervals, between the first SIGTERM and a settling time after the
//!   last restart. An answer is "granted" or "someone else holds it", so a hole is a time in
//!   which no node's probe found an owner serving the name. Holes shorter than twice the probe
//!   period (100 ms) are not seen: a prober records an interval as unbroken across them, and
//!   the report shows such a name as "< 100 ms".
//! - **holds lost on planned moves**: guards told lost (a renewal refused or unanswered) on a
//!   node that was not the one restarting at that moment.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use colony_runtime::testkit::{ClusterSpec, TestCluster};
use serde_json::{Value, json};

use crate::colony::BINARY;
use crate::common::median;

/// Node processes.
const NODES: usize = 5;
/// Names under load.
const NAMES: usize = 8;
/// How long the cluster may take to form, or to recover after a restart.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to leave gracefully.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(15);
/// The probe period, in milliseconds.
const PROBE_PERIOD_MS: u64 = 50;
/// Answers of one prober further apart than this (milliseconds) leave a hole; shorter holes
/// are not seen.
const PROBE_GAP_MS: u64 = 2 * PROBE_PERIOD_MS;

/// What a rolling restart showed.
pub struct Rolling {
    /// Per name, the longest time no node could grant it.
    pub holes: BTreeMap<String, Duration>,
    /// Holds lost on a node that was not restarting.
    pub lost: usize,
    /// Holds lost by the node that was restarting (its guards go with it).
    pub lost_restarting: usize,
    /// Holds granted during the window.
    pub holds: usize,
    /// Per node, from SIGTERM until the cluster was whole again.
    pub restarts: Vec<Duration>,
}

impl Rolling {
    /// The longest hole of any name.
    pub fn worst(&self) -> Duration {
        self.holes.values().copied().max().unwrap_or_default()
    }

    /// Prints the figures.
    pub fn print(&self) {
        let holes: Vec<String> = self
            .holes
            .iter()
            .map(|(n, d)| format!("{n} {}", hole(*d)))
            .collect();
        println!(
            "  (g) rolling restart of {NODES} nodes: longest time without a grantable owner {} \
             (per name: {}); holds lost on planned moves {} of {} granted ({} lost by the \
             restarting node itself); restart to whole cluster median {}",
            hole(self.worst()),
            holes.join(", "),
            self.lost,
            self.holds,
            self.lost_restarting,
            crate::common::ms(median(&self.restarts)),
        );
    }
}

/// A hole's length for the report; a hole of zero is one below the probe's resolution.
pub fn hole(d: Duration) -> String {
    if d.is_zero() {
        format!("< {PROBE_GAP_MS} ms")
    } else {
        crate::common::ms(d)
    }
}

/// Microseconds since the Unix epoch, the clock every workload records with.
fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Runs the rolling restart with lock lease `lease`.
///
/// # Errors
/// The cluster did not form or recover in time, or a node did not restart.
pub fn run(lease: Duration) -> anyhow::Result<Rolling> {
    let dir = tempfile::tempdir()?;
    let names: Vec<String> = (0..NAMES).map(|i| format!("rolling-{i}")).collect();
    let lease_ms = lease.as_millis() as u64;
    let hammer = dir.path().join("hammer.json");
    std::fs::write(
        &hammer,
        json!({
            "kind": "lock_hammer", "names": names, "clients": NAMES, "hold_ms": 3 * lease_ms,
            "pause_ms": 5, "history": "locks.jsonl",
        })
        .to_string(),
    )?;
    let probe = dir.path().join("probe.json");
    std::fs::write(
        &probe,
        json!({
            "kind": "lock_probe", "names": names, "probers": 2, "period_ms": PROBE_PERIOD_MS,
            "gap_ms": PROBE_GAP_MS, "history": "probes.jsonl",
        })
        .to_string(),
    )?;
    let mut spec = ClusterSpec::new(BINARY, NODES);
    spec.extra_args = vec![
        "--workload".into(),
        hammer.display().to_string(),
        "--workload".into(),
        probe.display().to_string(),
        "--lock-lease-ms".into(),
        lease_ms.to_string(),
    ];
    let mut cluster = TestCluster::start(spec)?;
    whole(&cluster).context("the 5 nodes did not form a group with 5 voters")?;
    // Until the holds renew: each lasts 3 leases.
    std::thread::sleep(lease * 2);
    let window_start = wall_us();
    let mut windows = Vec::new();
    let mut restarts = Vec::new();
    for i in 0..NODES {
        let (from, started) = (wall_us(), Instant::now());
        if cluster.terminate(i, LEAVE_TIMEOUT).is_none() {
            bail!("{} did not leave within {LEAVE_TIMEOUT:?}", cluster.name(i));
        }
        cluster.restart(i)?;
        whole(&cluster).with_context(|| format!("after restarting {}", cluster.name(i)))?;
        restarts.push(started.elapsed());
        windows.push((cluster.name(i).to_owned(), from, wall_us()));
    }
    // Moves that follow the last restart settle within a lease or two.
    std::thread::sleep(lease * 2);
    let window_end = wall_us();
    for i in cluster.all() {
        cluster.terminate(i, LEAVE_TIMEOUT);
    }
    let events: Vec<Value> = cluster
        .all()
        .into_iter()
        .flat_map(|i| ["locks.jsonl", "probes.jsonl"].map(|f| cluster.home(i).join(f)))
        .flat_map(|path| {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect();
    let restarting = |e: &Value| {
        let at = e["at_us"].as_u64().unwrap_or(0);
        windows
            .iter()
            .any(|(node, from, to)| e["node"] == node.as_str() && (*from..=*to).contains(&at))
    };
    let in_window =
        |e: &Value| (window_start..=window_end).contains(&e["at_us"].as_u64().unwrap_or(0));
    let lost: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "lost" && in_window(e))
        .collect();
    let holes = names
        .iter()
        .map(|name| {
            let intervals = events
                .iter()
                .filter(|e| e["event"] == "answered" && e["name"] == name.as_str())
                .filter_map(|e| Some((e["from_us"].as_u64()?, e["to_us"].as_u64()?)));
            let hole = longest_hole(intervals.collect(), window_start, window_end);
            (name.clone(), Duration::from_micros(hole))
        })
        .collect();
    Ok(Rolling {
        holes,
        lost: lost.iter().filter(|e| !restarting(e)).count(),
        lost_restarting: lost.iter().filter(|e| restarting(e)).count(),
        holds: events
            .iter()
            .filter(|e| e["event"] == "acquired" && in_window(e))
            .count(),
        restarts,
    })
}

/// Waits until every node sees every node up and the group has its 5 voters, no learner and
/// no joint configuration.
fn whole(cluster: &TestCluster) -> anyhow::Result<()> {
    let all = cluster.all();
    cluster
        .wait_until(SETUP_TIMEOUT, |c| {
            c.converged(&all)
                && c.status(0).is_some_and(|s| {
                    s.consensus.voters.len() == NODES
                        && s.consensus.learners.is_empty()
                        && s.consensus.outgoing.is_empty()
                })
        })
        .map(drop)
        .context("not whole in time")
}

/// The longest stretch of `[start, end]` that no interval covers, in microseconds.
fn longest_hole(mut intervals: Vec<(u64, u64)>, start: u64, end: u64) -> u64 {
    intervals.sort_unstable();
    let (mut covered_to, mut longest) = (start, 0);
    for (from, to) in intervals {
        if from > covered_to {
            longest = longest.max(from.min(end).saturating_sub(covered_to));
        }
        covered_to = covered_to.max(to);
        if covered_to >= end {
            return longest;
        }
    }
    longest.max(end.saturating_sub(covered_to))
}
