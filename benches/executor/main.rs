//! The bucketed executor on three processes: end-to-end tasks per second in batches of 1 and of
//! 100 next to the raw floor of the same links, submit latency, memory per queued task, and the
//! time from an owner's SIGKILL until its buckets run again.
//!
//! Run with `cargo bench --bench executor` (options after `--`: `--tasks N` per node per run,
//! `--rounds N`, `--conc N` submits in flight per node, `--casts N` and `--window N` (requests
//! in flight) for the floor, `--queued N` for the memory figure, `--lease-ms N`). Results are in `docs/benchmarks.md`.
//! Under `cargo test --benches` it makes a smoke run with few tasks.
//!
//! # Shape
//! This binary plays the three nodes (the `node` role, see [`node`]), each a Colony node with
//! the bench's executors open, driven line by line from the orchestrator (no role):
//! - **floor**: one node sends 64-byte echo requests to another over the same links, 256 in
//!   flight: what a message costs with no consensus and no disk (`ractor_cluster`, the cast the
//!   issue names, left Colony with issue 8; Colony's links are the transport it replaced, at
//!   about a tenth of its round trip, so the floor is the stricter one);
//! - **throughput**: every node submits `--tasks` tasks over 50 buckets, `--conc` at a time,
//!   and the run ends when the processors on all nodes counted every task; rounds alternate
//!   the floor and both batch sizes so that the machine's noise hits all of them alike;
//! - **memory**: tasks queued behind a processor that never finishes; each node's resident set
//!   before and after, over the tasks queued (every node holds every queue: the log);
//! - **recovery**: with every bucket's head held in process on some node, the node holding the
//!   most is SIGKILLed, and the survivors report when each of its buckets' heads started again.

#[allow(dead_code, reason = "each bench uses a subset of the helpers")]
#[path = "../common/mod.rs"]
mod common;

mod node;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use common::nodes::{NodeArgs, Nodes};
use common::process::Worker;
use common::{Batch, Invocation, median_f64, ms, quantile, wall_us};

/// The variable that selects this process's role; unset for the orchestrator.
const ROLE_VAR: &str = "COLONY_BENCH_ROLE";
/// Nodes in the cluster.
pub const NODES: usize = 3;
/// Buckets the tasks spread over.
pub const BUCKETS: u64 = 50;
/// The target: end-to-end tasks per second at least half the raw floor's messages per second.
const TARGET: f64 = 0.5;
/// How long the processors may take to count every task of a run.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// Settings shared by the orchestrator and the roles.
#[derive(Debug, Clone)]
pub struct Options {
    /// Tasks each node submits per throughput run.
    tasks: usize,
    /// Rounds of (floor, batch 1, batch 100).
    rounds: usize,
    /// Submits in flight per node.
    conc: usize,
    /// Echo requests in the floor's run.
    casts: usize,
    /// Echo requests in flight in the floor's run.
    window: usize,
    /// Tasks queued for the memory figure, over all nodes.
    queued: usize,
    /// The nodes' cookie and lease (2 s, as the lock benches use); in the node role, its port
    /// and seed.
    pub node: NodeArgs,
    measuring: bool,
}

impl Options {
    fn parse(invocation: Invocation) -> anyhow::Result<Options> {
        let mut o = if invocation.measure {
            Options {
                tasks: 30_000,
                rounds: 3,
                // A submit returns after a durable commit, so a node sustains at most its
                // calls in flight per commit latency (Little's law): 64 per node measured that
                // bound (about 20,000/s at 8 ms), not the executor. 512 lets the rate show.
                conc: 512,
                casts: 200_000,
                window: 256,
                queued: 150_000,
                node: NodeArgs::bench(),
                measuring: true,
            }
        } else {
            Options {
                tasks: 200,
                rounds: 1,
                conc: 8,
                casts: 2_000,
                window: 256,
                queued: 1_500,
                node: NodeArgs::bench(),
                measuring: false,
            }
        };
        for (flag, value) in invocation.options {
            let number = || common::number(&flag, &value);
            match flag.as_str() {
                "--tasks" => o.tasks = number()?,
                "--rounds" => o.rounds = number()?,
                "--conc" => o.conc = number()?,
                "--casts" => o.casts = number()?,
                "--window" => o.window = number()?,
                "--queued" => o.queued = number()?,
                other if o.node.take(other, &value)? => {}
                other => bail!("unknown option {other}"),
            }
        }
        Ok(o)
    }
}

fn main() -> anyhow::Result<()> {
    common::nodes::main(
        "executor",
        ROLE_VAR,
        Options::parse,
        orchestrate,
        |o, runtime| runtime.block_on(node::run(o)),
    )
}

/// The three node processes.
struct Cluster {
    nodes: Nodes,
}

impl Cluster {
    fn start(options: &Options) -> anyhow::Result<Cluster> {
        let lease = options.node.lease;
        let nodes = Nodes::start(ROLE_VAR, NODES, &options.node.cookie, lease)?;
        Ok(Cluster { nodes })
    }

    fn node(&mut self, i: usize) -> anyhow::Result<&mut Worker> {
        self.nodes.node(i)
    }

    fn alive(&self) -> Vec<usize> {
        self.nodes.alive()
    }

    /// Tasks of `exec` processed on every live node.
    fn processed(&mut self, exec: &str) -> anyhow::Result<u64> {
        let mut sum = 0;
        for i in self.alive() {
            sum += self
                .node(i)?
                .request(&format!("processed {exec}"))?
                .trim()
                .parse::<u64>()?;
        }
        Ok(sum)
    }

    /// Has every live node submit `n` tasks to `exec`, `conc` at a time, all at once; returns
    /// the submits' batch.
    fn submit_everywhere(&mut self, exec: &str, n: usize, conc: usize) -> anyhow::Result<Batch> {
        let alive = self.alive();
        for i in &alive {
            self.node(*i)?
                .write_line(&format!("submit {exec} {n} {conc}"))?;
        }
        let mut all = Batch::default();
        for i in alive {
            let b = Batch::from_json(&self.node(i)?.read_line()?)?;
            all.samples.extend(b.samples);
            all.errors += b.errors;
        }
        Ok(all)
    }

    /// Waits until `exec` processed `target` tasks in all.
    fn drain(&mut self, exec: &str, target: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.processed(exec)? < target {
            if Instant::now() > deadline {
                bail!("{exec}: {} of {target} processed", self.processed(exec)?);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

/// One throughput run of `exec`: tasks per second end to end, and the submits' latencies.
fn throughput(
    cluster: &mut Cluster,
    exec: &str,
    options: &Options,
) -> anyhow::Result<(f64, Batch)> {
    let before = cluster.processed(exec)?;
    let start = Instant::now();
    let batch = cluster.submit_everywhere(exec, options.tasks, options.conc)?;
    let accepted = batch.samples.len() as u64;
    cluster.drain(exec, before + accepted)?;
    Ok((accepted as f64 / start.elapsed().as_secs_f64(), batch))
}

/// The floor: echo requests per second from node 0 to another node.
fn floor(cluster: &mut Cluster, options: &Options) -> anyhow::Result<f64> {
    let nanos: u64 = cluster
        .node(0)?
        .request(&format!("cast {} {}", options.casts, options.window))?
        .trim()
        .parse()?;
    Ok(options.casts as f64 / Duration::from_nanos(nanos).as_secs_f64())
}

fn orchestrate(options: &Options) -> anyhow::Result<()> {
    let mut cluster = Cluster::start(options)?;
    // Warm-up: the group formed and every executor's slots placed.
    let warm = cluster.submit_everywhere("b1", 100, 8)?;
    cluster.drain("b1", warm.samples.len() as u64)?;

    let (mut floors, mut rates) = (Vec::new(), BTreeMap::<&str, Vec<f64>>::new());
    let mut latencies: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for round in 0..options.rounds {
        let f = floor(&mut cluster, options)?;
        floors.push(f);
        let mut line = format!("round {round}: floor {f:.0}/s");
        // Which batch size goes first alternates.
        let order = if round % 2 == 0 {
            ["b1", "b100"]
        } else {
            ["b100", "b1"]
        };
        for exec in order {
            let (rate, batch) = throughput(&mut cluster, exec, options)?;
            if batch.errors > 0 {
                eprintln!("{exec}: {} submits refused", batch.errors);
            }
            line += &format!(", {exec} {rate:.0} tasks/s ({:.2}×)", rate / f);
            rates.entry(exec).or_default().push(rate);
            latencies.entry(exec).or_default().extend(batch.samples);
        }
        println!("{line}");
    }
    let floor_median = median_f64(&mut floors);
    println!(
        "\nraw floor (64 B echo requests over the links, {} in flight): {floor_median:.0}/s",
        options.window
    );
    let mut met = true;
    for (exec, mut r) in rates {
        let rate = median_f64(&mut r);
        let l = &latencies[exec];
        let ratio = rate / floor_median;
        met &= ratio >= TARGET;
        println!(
            "{exec}: {rate:.0} tasks/s end to end ({ratio:.2}× the floor; target ≥ {TARGET}×), \
             submit p50 {} p99 {} ({} submits)",
            ms(quantile(l, 0.5)),
            ms(quantile(l, 0.99)),
            l.len()
        );
    }

    memory(&mut cluster, options)?;
    recovery(&mut cluster, options)?;
    if options.measuring {
        println!(
            "\nthroughput target: {}",
            if met { "met" } else { "NOT met" }
        );
    }
    Ok(())
}

/// Memory per queued task: every node's resident set before and after queueing
/// `options.queued` tasks behind a processor that never finishes.
fn memory(cluster: &mut Cluster, options: &Options) -> anyhow::Result<()> {
    let rss = |c: &mut Cluster| -> anyhow::Result<Vec<f64>> {
        (0..NODES)
            .map(|i| Ok(c.node(i)?.request("rss")?.trim().parse::<f64>()?))
            .collect()
    };
    let before = rss(cluster)?;
    let per_node = options.queued / NODES;
    let batch = cluster.submit_everywhere("hold", per_node, options.conc)?;
    let queued = batch.samples.len() as f64;
    // Every node applies the log: wait until the last submit is in every node's state.
    std::thread::sleep(Duration::from_secs(2));
    let after = rss(cluster)?;
    let mut per_task: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b) / queued)
        .collect();
    println!(
        "\nmemory: {queued:.0} tasks queued (8-byte tasks): resident set +{:.0} bytes per task \
         per node (median of the {NODES} nodes; each holds every queue)",
        median_f64(&mut per_task)
    );
    Ok(())
}

/// Time from SIGKILL of the node (not the group's leader) holding the most buckets (the `hold` executor's, queued by
/// [`memory`]) until each of them starts its head again on another node.
fn recovery(cluster: &mut Cluster, options: &Options) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (victim, buckets) = loop {
        let mut held: Vec<(usize, Vec<String>, bool)> = Vec::new();
        for i in 0..NODES {
            let line: serde_json::Value = serde_json::from_str(&cluster.node(i)?.request("held")?)?;
            let buckets = serde_json::from_value(line["buckets"].clone())?;
            held.push((i, buckets, line["leader"].as_bool().unwrap_or(false)));
        }
        let all: usize = held.iter().map(|(_, b, _)| b.len()).sum();
        if all == BUCKETS as usize {
            // Not the group's leader: its death adds an election to the wait.
            break held
                .into_iter()
                .filter(|(_, _, leads)| !leads)
                .max_by_key(|(_, b, _)| b.len())
                .map(|(i, b, _)| (i, b))
                .context("no node but the leader")?;
        }
        if Instant::now() > deadline {
            bail!("{all} of {BUCKETS} buckets held after 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let killed_at = wall_us();
    cluster.nodes.kill(victim);
    let deadline = Instant::now() + Duration::from_secs(60);
    let resumed = loop {
        let mut first: BTreeMap<String, u64> = BTreeMap::new();
        for i in cluster.alive() {
            let line = cluster
                .node(i)?
                .request(&format!("first_after {killed_at}"))?;
            let seen: BTreeMap<String, u64> = serde_json::from_str(&line)?;
            for (b, at) in seen {
                let e = first.entry(b).or_insert(at);
                *e = (*e).min(at);
            }
        }
        let back: Vec<u64> = buckets
            .iter()
            .filter_map(|b| first.get(b).copied())
            .collect();
        if back.len() == buckets.len() {
            break back;
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} buckets ran again within 60 s",
                back.len(),
                buckets.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut waits: Vec<Duration> = resumed
        .iter()
        .map(|at| Duration::from_micros(at.saturating_sub(killed_at)))
        .collect();
    waits.sort();
    println!(
        "\nrecovery: SIGKILL of a node (not the leader) holding {} buckets; their heads ran again on the \
         survivors after median {} max {} ({} ms lease)",
        buckets.len(),
        ms(quantile(&waits, 0.5)),
        ms(quantile(&waits, 1.0)),
        options.node.lease.as_millis()
    );
    Ok(())
}
