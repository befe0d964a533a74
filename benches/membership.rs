//! Membership timing on a cluster of 5 `colony node` processes with the default timings:
//! convergence after a cold start, detection of a SIGKILLed node, and false suspicion.
//!
//! Run with `cargo bench --bench membership` (options after `--`: `--runs N`,
//! `--idle-secs N`). Results are in `docs/benchmarks.md`. Under `cargo test --benches` it makes
//! a smoke run: one run, no idling.
//!
//! Each run:
//! 1. starts 5 nodes together (node 0 is the seed of the others) and measures, from just before
//!    the processes are spawned, the time until every node sees all 5 up;
//! 2. idles (20 s by default) while watching every node for a member it reports not up;
//! 3. SIGKILLs a non-seed node (a different one each run) and measures the time until each
//!    survivor reports it down (first survivor and all survivors);
//! 4. reads every node's log for `member suspect` and `member down` lines about any node other
//!    than the killed one, which catches suspicions too short-lived for polling to see.
//!
//! Observation goes through each node's admin endpoint (`GET /cluster`), polled by one thread per
//! node on a keep-alive connection: every 5 ms while measuring, every 100 ms while idling. A time
//! is taken when the answer that first shows the state arrives, so the figures include up to one
//! poll interval plus one HTTP round trip (well under 1 ms on loopback) of observation delay.

#[allow(dead_code, reason = "each bench uses a subset of the helpers")]
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use colony_runtime::config::MembershipTimings;
use colony_runtime::testkit::{AdminClient, ClusterSpec, TestCluster};
use colony_runtime::{ClusterStatus, MemberState};

use common::{median, ms};

const NODES: usize = 5;
/// Poll interval while a time is being measured.
const TIGHT_POLL: Duration = Duration::from_millis(5);
/// Poll interval while idling.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How long a phase may take before the run counts as failed.
const PHASE_TIMEOUT: Duration = Duration::from_secs(20);
/// Target: every node sees all nodes up within this long after the processes start.
const CONVERGE_TARGET: Duration = Duration::from_secs(2);
/// Target: every survivor sees a killed node down within this long.
const DETECT_TARGET: Duration = Duration::from_secs(3);

/// What one run measured.
struct Run {
    victim: String,
    converge: Duration,
    detect_first: Duration,
    detect_all: Duration,
    /// Reports of a live node as suspect or down, by polling or in the logs.
    false_reports: BTreeSet<String>,
}

fn main() -> anyhow::Result<()> {
    let Some(invocation) = common::invocation("membership", std::env::args().skip(1))? else {
        return Ok(());
    };
    // A smoke run under `cargo test --benches`: one run, no idling.
    let (mut runs, mut idle) = if invocation.measure {
        (5, Duration::from_secs(20))
    } else {
        (1, Duration::ZERO)
    };
    for (flag, value) in invocation.options {
        match flag.as_str() {
            "--runs" => runs = value.parse().context("--runs")?,
            "--idle-secs" => idle = Duration::from_secs(value.parse().context("--idle-secs")?),
            other => bail!("unknown option {other}"),
        }
    }
    let timings = MembershipTimings::default();
    println!(
        "membership, {NODES} nodes, {runs} runs, default timings: probe {} ms, probe rtt {} ms, \
         suspect-to-down {} ms (detection bound {} ms)",
        timings.probe_period.as_millis(),
        timings.probe_rtt.as_millis(),
        timings.suspect_to_down.as_millis(),
        timings.detection_bound(NODES).as_millis(),
    );
    let mut results = Vec::new();
    for run in 0..runs {
        // Never the seed (node 0), and a different node each run.
        let victim = 1 + run % (NODES - 1);
        let r = one_run(victim, idle).with_context(|| format!("run {}", run + 1))?;
        println!(
            "run {}: converged {} | killed {}: first survivor {}, all survivors {} | false reports: {}",
            run + 1,
            ms(r.converge),
            r.victim,
            ms(r.detect_first),
            ms(r.detect_all),
            r.false_reports.len()
        );
        for report in &r.false_reports {
            println!("  false report: {report}");
        }
        results.push(r);
    }
    summarize(&results);
    Ok(())
}

fn summarize(results: &[Run]) {
    let column = |f: fn(&Run) -> Duration| results.iter().map(f).collect::<Vec<_>>();
    let verdict = |all: &[Duration], target: Duration| {
        let worst = all.iter().max().copied().unwrap_or_default();
        if worst <= target {
            format!("met (max {} <= {})", ms(worst), ms(target))
        } else {
            format!("MISSED (max {} > {})", ms(worst), ms(target))
        }
    };
    let converge = column(|r| r.converge);
    let first = column(|r| r.detect_first);
    let all = column(|r| r.detect_all);
    let max = |d: &[Duration]| d.iter().max().copied().unwrap_or_default();
    println!("summary over {} runs:", results.len());
    println!(
        "  converge:                 median {} max {}; target: {}",
        ms(median(&converge)),
        ms(max(&converge)),
        verdict(&converge, CONVERGE_TARGET)
    );
    println!(
        "  down, first survivor:     median {} max {}",
        ms(median(&first)),
        ms(max(&first))
    );
    println!(
        "  down, all survivors:      median {} max {}; target: {}",
        ms(median(&all)),
        ms(max(&all)),
        verdict(&all, DETECT_TARGET)
    );
    let false_reports: usize = results.iter().map(|r| r.false_reports.len()).sum();
    println!("  false suspect/down reports: {false_reports}");
}

fn one_run(victim: usize, idle: Duration) -> anyhow::Result<Run> {
    let spec = ClusterSpec::new(env!("CARGO_BIN_EXE_colony"), NODES);
    let start = Instant::now();
    let mut cluster = TestCluster::start(spec)?;
    let all = cluster.all();
    let names: BTreeSet<String> = all.iter().map(|&i| cluster.name(i).to_owned()).collect();
    let clients: Vec<AdminClient> = all.iter().map(|&i| cluster.admin(i)).collect();

    let converged = first_seen(&clients, TIGHT_POLL, |s| up_names(s) == names)
        .context("the cluster did not converge")?;
    let converge = latest(&converged) - start;

    let mut false_reports = watch_idle(&clients, &names, idle);

    let victim_name = cluster.name(victim).to_owned();
    let survivors: Vec<AdminClient> = all
        .iter()
        .filter(|&&i| i != victim)
        .map(|&i| clients[i].clone())
        .collect();
    let killed = Instant::now();
    cluster.kill(victim);
    let detected = first_seen(&survivors, TIGHT_POLL, |s| {
        state_of(s, &victim_name) == Some(MemberState::Down)
    })
    .with_context(|| format!("not every survivor saw {victim_name} down"))?;
    let detect_first = detected.iter().min().copied().unwrap_or(killed) - killed;
    let detect_all = latest(&detected) - killed;

    for &i in &all {
        let observer = cluster.name(i);
        false_reports.extend(false_reports_in_log(
            &cluster.log(i),
            observer,
            &victim_name,
        ));
    }
    Ok(Run {
        victim: victim_name,
        converge,
        detect_first,
        detect_all,
        false_reports,
    })
}

/// Polls every node in parallel, each every `every`, until `done` holds on its answer; returns,
/// per node, when the answer that first showed it arrived. `None` if a node did not get there
/// within [`PHASE_TIMEOUT`].
fn first_seen(
    clients: &[AdminClient],
    every: Duration,
    done: impl Fn(&ClusterStatus) -> bool + Sync,
) -> Option<Vec<Instant>> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    std::thread::scope(|scope| {
        let pollers: Vec<_> = clients
            .iter()
            .map(|client| {
                let done = &done;
                scope.spawn(move || {
                    while Instant::now() < deadline {
                        if client.cluster().is_ok_and(|s| done(&s)) {
                            return Some(Instant::now());
                        }
                        std::thread::sleep(every);
                    }
                    None
                })
            })
            .collect();
        pollers
            .into_iter()
            .map(|p| p.join().expect("poller thread"))
            .collect()
    })
}

/// Polls every node for `idle` and returns each report of a member (of `names`) not up.
fn watch_idle(
    clients: &[AdminClient],
    names: &BTreeSet<String>,
    idle: Duration,
) -> BTreeSet<String> {
    let end = Instant::now() + idle;
    std::thread::scope(|scope| {
        let pollers: Vec<_> = clients
            .iter()
            .map(|client| {
                scope.spawn(move || {
                    let mut reports = BTreeSet::new();
                    while Instant::now() < end {
                        match client.cluster() {
                            Ok(s) => reports.extend(
                                s.members
                                    .iter()
                                    .filter(|m| names.contains(&m.name) && !m.state.is_up())
                                    .map(|m| {
                                        format!("{} saw {} {} while idle", s.name, m.name, m.state)
                                    }),
                            ),
                            Err(e) => {
                                reports.insert(format!("admin endpoint unreachable: {e}"));
                            }
                        }
                        std::thread::sleep(IDLE_POLL);
                    }
                    reports
                })
            })
            .collect();
        pollers
            .into_iter()
            .flat_map(|p| p.join().expect("poller thread"))
            .collect()
    })
}

/// The latest of `times`.
fn latest(times: &[Instant]) -> Instant {
    times.iter().max().copied().expect("at least one node")
}

/// The names of the members `status` reports up.
fn up_names(status: &ClusterStatus) -> BTreeSet<String> {
    status
        .members
        .iter()
        .filter(|m| m.state.is_up())
        .map(|m| m.name.clone())
        .collect()
}

/// The state `status` reports for the latest incarnation of the member called `name`.
fn state_of(status: &ClusterStatus, name: &str) -> Option<MemberState> {
    status
        .members
        .iter()
        .filter(|m| m.name == name)
        .max_by_key(|m| m.incarnation)
        .map(|m| m.state)
}

/// Lines of `observer`'s log that report a member other than `victim` suspect or down.
fn false_reports_in_log(log: &str, observer: &str, victim: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains("member suspect") || line.contains("member down"))
        .filter(|line| {
            let subject = line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("node="));
            subject != Some(victim)
        })
        .map(|line| format!("{observer} logged: {}", line.trim()))
        .collect()
}
