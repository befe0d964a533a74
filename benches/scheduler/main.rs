//! The cluster scheduler on three processes: fire latency (due time to the runner's start),
//! sustained runs per second with thousands of jobs due every second, memory per scheduled
//! job, and the time from SIGKILL of the node running a job until that run starts elsewhere.
//!
//! Run with `cargo bench --bench scheduler` (options after `--`: `--jobs N` due every second
//! for the throughput run, `--seconds N` it lasts, `--conc N` schedule calls in flight,
//! `--lease-ms N`). Results are in `docs/benchmarks.md`. Under `cargo test --benches` it makes
//! a smoke run with few jobs.
//!
//! # Shape
//! This binary plays the three nodes (the `node` role, see [`node`]), each a Colony node with
//! the runner `bench` registered (every node may run every job), driven line by line from the
//! orchestrator (no role):
//! - **latency**: 50 once-per-cluster jobs every second for `--seconds`; the lateness of each
//!   run (its start on the runner's node minus its due time; one machine, one clock);
//! - **throughput and memory**: `--jobs` jobs every second; each node's resident set before and
//!   after scheduling them, and the runs started per second over `--seconds` once they are due,
//!   with their lateness;
//! - **failover**: a job every 500 ms whose runs take 400 ms; once a node other than node 0
//!   runs it, that node is SIGKILLed, and the survivors report when the same due time started
//!   again (attempt 2).

#[allow(dead_code, reason = "each bench uses a subset of the helpers")]
#[path = "../common/mod.rs"]
mod common;

mod node;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use common::nodes::{NodeArgs, Nodes};
use common::{Batch, Invocation, median_f64, ms, quantile, wall_us};

/// The variable that selects this process's role; unset for the orchestrator.
const ROLE_VAR: &str = "COLONY_BENCH_ROLE";
/// Nodes in the cluster.
pub const NODES: usize = 3;
/// Jobs in the latency run.
const LATENCY_JOBS: usize = 50;

/// Settings shared by the orchestrator and the roles.
#[derive(Debug, Clone)]
pub struct Options {
    /// Jobs due every second in the throughput run.
    jobs: usize,
    /// How long the latency and throughput runs measure.
    seconds: u64,
    /// Schedule calls in flight.
    conc: usize,
    /// How long a run of a `slow*` job takes (the failover job).
    pub work_ms: u64,
    /// The nodes' cookie and lease; in the node role, its port and seed.
    pub node: NodeArgs,
}

impl Options {
    fn parse(invocation: Invocation) -> anyhow::Result<Options> {
        let node = NodeArgs::bench();
        let mut o = Options {
            jobs: if invocation.measure { 10_000 } else { 100 },
            seconds: if invocation.measure { 10 } else { 2 },
            conc: 256,
            work_ms: 400,
            node,
        };
        for (flag, value) in invocation.options {
            let number = || common::number(&flag, &value);
            match flag.as_str() {
                "--jobs" => o.jobs = number()?,
                "--seconds" => o.seconds = number()? as u64,
                "--conc" => o.conc = number()?,
                other if o.node.take(other, &value)? => {}
                other => bail!("unknown option {other}"),
            }
        }
        Ok(o)
    }
}

fn main() -> anyhow::Result<()> {
    common::nodes::main(
        "scheduler",
        ROLE_VAR,
        Options::parse,
        orchestrate,
        |o, runtime| runtime.block_on(node::run(o)),
    )
}

/// Schedules `n` jobs `prefix*` every `every_ms` from node 0, the first due `delay_ms` from
/// now; returns the schedule calls and the first due time (ms).
fn schedule(
    nodes: &mut Nodes,
    prefix: &str,
    n: usize,
    every_ms: u64,
    delay_ms: u64,
    conc: usize,
) -> anyhow::Result<(Batch, u64)> {
    let line = nodes.node(0)?.request(&format!(
        "schedule {prefix} {n} {every_ms} {delay_ms} {conc}"
    ))?;
    let answer: serde_json::Value = serde_json::from_str(&line)?;
    let batch = Batch::from_json(answer["batch"].as_str().context("batch")?)?;
    if batch.errors > 0 {
        bail!("{} of {n} schedule calls failed", batch.errors);
    }
    Ok((batch, answer["first_ms"].as_u64().context("first_ms")?))
}

/// The runs of jobs `prefix*` started from `from_us` on every live node.
fn runs(nodes: &mut Nodes, prefix: &str, from_us: u64) -> anyhow::Result<Vec<Duration>> {
    let mut late = Vec::new();
    for i in nodes.alive() {
        let line = nodes
            .node(i)?
            .request(&format!("runs {prefix} {from_us}"))?;
        late.extend(Batch::from_json(&line)?.samples);
    }
    Ok(late)
}

/// Every node's group counters (see the node's `group` command).
fn group(nodes: &mut Nodes) -> anyhow::Result<Vec<serde_json::Value>> {
    (0..NODES)
        .map(|i| Ok(serde_json::from_str(&nodes.node(i)?.request("group")?)?))
        .collect()
}

/// Sleeps until the wall clock reaches `at_us`.
fn sleep_until(at_us: u64) {
    let now = wall_us();
    if at_us > now {
        std::thread::sleep(Duration::from_micros(at_us - now));
    }
}

fn orchestrate(options: &Options) -> anyhow::Result<()> {
    let mut nodes = Nodes::start(ROLE_VAR, NODES, &options.node.cookie, options.node.lease)?;
    let seconds = options.seconds;

    // Latency: a few jobs, nothing else due.
    let (_, first_ms) = schedule(&mut nodes, "lat", LATENCY_JOBS, 1_000, 2_000, 16)?;
    let from = first_ms * 1_000;
    sleep_until(from + seconds * 1_000_000);
    let late = runs(&mut nodes, "lat", from)?;
    println!(
        "latency: {} runs of {LATENCY_JOBS} jobs due every second over {seconds} s: due time to \
         runner start p50 {} p99 {}",
        late.len(),
        ms(quantile(&late, 0.5)),
        ms(quantile(&late, 0.99))
    );
    nodes
        .node(0)?
        .request(&format!("unschedule lat {LATENCY_JOBS} 16"))?;

    // Throughput and memory.
    let rss = |nodes: &mut Nodes| -> anyhow::Result<Vec<f64>> {
        (0..NODES)
            .map(|i| Ok(nodes.node(i)?.request("rss")?.trim().parse::<f64>()?))
            .collect()
    };
    let before = rss(&mut nodes)?;
    let jobs = options.jobs;
    let started = Instant::now();
    // Due once every job is scheduled (at a few thousand a second here).
    let delay = 5_000 + jobs as u64;
    let (calls, first_ms) = schedule(&mut nodes, "tp", jobs, 1_000, delay, options.conc)?;
    println!(
        "\nscheduled {jobs} jobs in {} ({:.0} per second; schedule call p50 {} p99 {})",
        ms(started.elapsed()),
        jobs as f64 / started.elapsed().as_secs_f64(),
        ms(quantile(&calls.samples, 0.5)),
        ms(quantile(&calls.samples, 0.99))
    );
    std::thread::sleep(Duration::from_secs(1));
    let after = rss(&mut nodes)?;
    let mut per_job: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b) / jobs as f64)
        .collect();
    println!(
        "memory: resident set +{:.0} bytes per scheduled job per node (median of {NODES}; every \
         node holds every job)",
        median_f64(&mut per_job)
    );
    // Measure from the second second on: the first due time fires every job at once.
    let from = (first_ms + 1_000) * 1_000;
    sleep_until(from);
    let group_before = group(&mut nodes)?;
    sleep_until(from + seconds * 1_000_000);
    let late = runs(&mut nodes, "tp", from)?;
    let group_after = group(&mut nodes)?;
    let in_window = late.len() as f64 / seconds as f64;
    println!(
        "throughput: {jobs} jobs due every second: {in_window:.0} runs started per second over \
         {seconds} s (of {jobs} due); lateness p50 {} p99 {}",
        ms(quantile(&late, 0.5)),
        ms(quantile(&late, 0.99))
    );
    let counter = |key: &str| {
        let of = |g: &[serde_json::Value]| g.iter().map(|n| n[key].as_u64().unwrap_or(0)).max();
        of(&group_after).unwrap_or(0) - of(&group_before).unwrap_or(0)
    };
    println!(
        "  the group meanwhile: {:.0} entries applied per second; {} proposals failed, {} leader \
         changes, {} snapshots (on the busiest node)",
        counter("applied") as f64 / seconds as f64,
        counter("failed"),
        counter("leader_changes"),
        counter("snapshots"),
    );
    // A saturated group fails some unschedules (unconfirmed in time): again until none is left,
    // so that the failover is measured on a cluster with nothing else due.
    let started = Instant::now();
    let mut passes = 0;
    loop {
        passes += 1;
        let line = nodes
            .node(0)?
            .request(&format!("unschedule tp {jobs} {}", options.conc))?;
        let left = Batch::from_json(&line)?.errors;
        if left == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("{left} of {jobs} jobs still scheduled after {passes} passes");
        }
    }
    println!(
        "  unscheduled the {jobs} jobs in {} ({passes} passes)",
        ms(started.elapsed())
    );

    failover(&mut nodes, options)
}

/// A run that started, as the runner recorded it.
#[derive(Debug, serde::Deserialize)]
struct Start {
    due_ms: u64,
    start_us: u64,
    attempt: u32,
}

/// SIGKILL of a node running the `slow` job until that due time starts on a survivor.
fn failover(nodes: &mut Nodes, options: &Options) -> anyhow::Result<()> {
    // The group may still be busy with the throughput run's unschedules: try for a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = schedule(nodes, "slow", 1, 500, 1_000, 1) {
        if Instant::now() > deadline {
            return Err(e);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    // A node other than node 0 (the orchestrator's channel) in the middle of a run.
    let (victim, due) = loop {
        let mut latest: Option<(usize, Start)> = None;
        for i in 1..NODES {
            let line = nodes.node(i)?.request("starts slow")?;
            let starts: Vec<Start> = serde_json::from_str(&line)?;
            if let Some(s) = starts.into_iter().max_by_key(|s| s.start_us)
                && latest.as_ref().is_none_or(|(_, l)| s.start_us > l.start_us)
            {
                latest = Some((i, s));
            }
        }
        if let Some((i, s)) = latest
            && wall_us() < s.start_us + 200_000
        {
            break (i, s.due_ms);
        }
        if Instant::now() > deadline {
            for i in nodes.alive() {
                eprintln!("node {i}: {}", nodes.node(i)?.request("state slow0")?);
            }
            bail!("no node but node 0 ran the job");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let killed = wall_us();
    nodes.kill(victim);
    let again = loop {
        let mut found = None;
        for i in nodes.alive() {
            let line = nodes.node(i)?.request("starts slow")?;
            let starts: Vec<Start> = serde_json::from_str(&line)?;
            found = found.or(starts
                .into_iter()
                .find(|s| s.due_ms == due && s.attempt > 1));
        }
        if let Some(s) = found {
            break s;
        }
        if Instant::now() > deadline {
            for i in nodes.alive() {
                eprintln!("node {i}: {}", nodes.node(i)?.request("state slow0")?);
            }
            bail!("the due time never ran again");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "\nfailover: SIGKILL of the node running a job; the same due time started again on a \
         survivor {} later (attempt {}, {} ms lease)",
        ms(Duration::from_micros(again.start_us.saturating_sub(killed))),
        again.attempt,
        options.node.lease.as_millis()
    );
    Ok(())
}
