//! Cluster locks: Colony next to a 3-member etcd cluster, the same workloads in one run.
//!
//! Run with `cargo bench --bench locks` (options after `--`: `--secs S` per timed run,
//! `--rounds N`, `--takeovers N`, `--lease-ms MS`, `--warmup-secs S`, `--etcd no`, `--only
//! abcdefgh` to run some workloads, `--distinct-names hashed` to place Colony's names of (d) by
//! the hash alone). Results are in `docs/benchmarks.md`. Under `cargo test --benches` it makes a
//! quick smoke run of the Colony side only (no etcd, no rolling restart), and judges nothing.
//!
//! # What runs
//! - **Colony**: two `colony node` processes (the real binary, through the testkit) and a third
//!   node inside this process (`colony::node_with(..)`), which runs every client. All three
//!   have the same lease (`--lock-lease-ms` and `LockSettings { lease }`). See [`colony`].
//! - **etcd**: a 3-member etcd cluster on 127.0.0.1 (installed from Debian if missing, started
//!   on free ports with temporary data directories, stopped at the end or on failure), driven
//!   through its JSON gRPC gateway (`/v3/lock/lock`, `/v3/lock/unlock`, `/v3/lease/*`,
//!   `/v3/kv/put`) by blocking clients, one connection each. See [`etcd`].
//!
//! # Workloads (the same on both)
//! Each client loops "acquire, release" until the run's time is up; a timed run counts the
//! completed cycles and times each one.
//! - (a) one client, uncontended, at the authority: a name the bench's own node owns (Colony);
//!   the leader's endpoint (etcd).
//! - (b) one client, uncontended, away from it: a name another node owns (Colony); a follower's
//!   endpoint, which forwards to the leader (etcd).
//! - (c) 8 clients on one name (Colony: owned by another node; etcd: clients spread over the
//!   three endpoints).
//! - (d) 16 clients on 16 distinct names (Colony: all owned by the two other nodes; etcd: clients
//!   spread over the endpoints).
//! - (e) takeover: a holder in another process holds a name, a waiter queues for it, the holder
//!   is SIGKILLed; the time from the kill until the waiter holds the lock. Same lease on both.
//! - (f) takeover when the authority dies with the holder: the holder's node is the name's owner
//!   (Colony); etcdctl talks to the leader only, and both are SIGKILLed (etcd).
//! - (g) Colony only: a rolling restart of 5 node processes under lock load. See [`rolling`].
//! - (h) the consensus group itself: one proposer committing commands one after the other
//!   (latency), and 16 at once (commits per second); etcd: `put`s the same way.
//!
//! Against the noise of a shared machine, the timed runs of (a) to (d) and (h) alternate
//! between the two systems round by round (and which goes first), and so do the takeover runs;
//! the report gives medians over rounds and the ratio of the medians. (g) runs last, after the
//! other clusters are stopped.

#[allow(dead_code, reason = "each bench uses a subset of the helpers")]
#[path = "../common/mod.rs"]
mod common;

mod colony;
mod etcd;
mod rolling;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use common::{Batch, Invocation, median, median_f64, ms, number, quantile, us};

/// Target: Colony's uncontended ops/s from a non-owner node over etcd's.
const TARGET_NON_OWNER: f64 = 20.0;
/// Target: Colony's ops/s over etcd's with 8 clients on one name, and with 16 on distinct names.
const TARGET_PARALLEL: f64 = 50.0;
/// Target: Colony's owner-local acquire+release at the median.
const TARGET_OWNER_P50: Duration = Duration::from_micros(20);
/// Target: Colony's median takeover after the owner and holder died, over etcd's.
const TARGET_OWNER_TAKEOVER: f64 = 1.5;
/// Target: the longest time a name has no grantable owner during a rolling restart.
const TARGET_ROLLING_HOLE: Duration = Duration::from_secs(1);

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Length of one timed run of a workload.
    pub secs: Duration,
    /// Timed runs per workload and system.
    pub rounds: usize,
    /// Untimed run of each workload on each system before the first round.
    pub warmup: Duration,
    /// Takeover runs per system, each of (e) and (f).
    pub takeovers: usize,
    /// The lock lease of both systems (etcd's lease TTL for the takeover's holder).
    pub lease: Duration,
    /// Whether to run etcd too.
    pub etcd: bool,
    /// The workloads to run, by letter (`a` to `h`).
    pub only: String,
    /// Whether Colony's names of (d) are placed by the hash alone (about a third owned by the
    /// bench node) rather than all owned by the two other nodes.
    pub hashed: bool,
    /// Whether this is a measurement (`cargo bench`) rather than a smoke run.
    pub measuring: bool,
}

impl Options {
    fn parse(invocation: Invocation) -> anyhow::Result<Options> {
        let mut options = if invocation.measure {
            Options {
                secs: Duration::from_secs(3),
                rounds: 5,
                warmup: Duration::from_secs(1),
                takeovers: 7,
                lease: Duration::from_secs(2),
                etcd: true,
                only: "abcdefgh".into(),
                hashed: false,
                measuring: true,
            }
        } else {
            Options {
                secs: Duration::from_millis(200),
                rounds: 1,
                warmup: Duration::from_millis(100),
                takeovers: 1,
                lease: Duration::from_secs(1),
                etcd: false,
                // (g) restarts 5 processes one by one: too long for a smoke run.
                only: "abcdefh".into(),
                hashed: false,
                measuring: false,
            }
        };
        for (flag, value) in invocation.options {
            let seconds = || {
                value
                    .parse::<f64>()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .with_context(|| format!("{flag} {value}"))
            };
            match flag.as_str() {
                "--secs" => options.secs = seconds()?,
                "--warmup-secs" => options.warmup = seconds()?,
                "--rounds" => options.rounds = number(&flag, &value)?,
                "--takeovers" => options.takeovers = number(&flag, &value)?,
                "--lease-ms" => {
                    options.lease = Duration::from_millis(number(&flag, &value)? as u64)
                }
                "--etcd" => {
                    options.etcd = match value.as_str() {
                        "yes" => true,
                        "no" => false,
                        _ => bail!("--etcd yes|no"),
                    }
                }
                "--only" => options.only = value,
                "--distinct-names" => {
                    options.hashed = match value.as_str() {
                        "remote" => false,
                        "hashed" => true,
                        _ => bail!("--distinct-names remote|hashed"),
                    }
                }
                other => bail!("unknown option {other}"),
            }
        }
        if options.rounds == 0 {
            bail!("--rounds must be above 0");
        }
        if options.etcd && options.lease.subsec_nanos() != 0 {
            bail!("etcd leases are whole seconds: --lease-ms must be a multiple of 1000");
        }
        Ok(options)
    }
}

/// A workload of the comparison; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// (a) One client at the authority.
    Owner,
    /// (b) One client away from the authority.
    NonOwner,
    /// (c) 8 clients on one name.
    Contended,
    /// (d) 16 clients on distinct names.
    Distinct,
    /// (h) One proposer committing one command after another (etcd: `put`s).
    Commit,
    /// (h) 16 proposers at once.
    Commits,
}

impl Workload {
    const ALL: [Workload; 6] = [
        Workload::Owner,
        Workload::NonOwner,
        Workload::Contended,
        Workload::Distinct,
        Workload::Commit,
        Workload::Commits,
    ];

    /// Concurrent clients.
    pub fn clients(self) -> usize {
        match self {
            Workload::Owner | Workload::NonOwner | Workload::Commit => 1,
            Workload::Contended => 8,
            Workload::Distinct | Workload::Commits => 16,
        }
    }

    /// Whether this workload commits through the consensus group rather than takes locks.
    pub fn is_commit(self) -> bool {
        matches!(self, Workload::Commit | Workload::Commits)
    }

    /// Distinct names the clients use (client `i` uses name `i % names`).
    pub fn names(self) -> usize {
        match self {
            Workload::Distinct => 16,
            _ => 1,
        }
    }

    /// The workload's letter in the report and in `--only`.
    fn letter(self) -> char {
        self.label().chars().nth(1).unwrap_or('?')
    }

    fn label(self) -> &'static str {
        match self {
            Workload::Owner => "(a) uncontended, owner / leader",
            Workload::NonOwner => "(b) uncontended, non-owner / follower",
            Workload::Contended => "(c) 8 clients, one name",
            Workload::Distinct => "(d) 16 clients, 16 names",
            Workload::Commit => "(h) commits, 1 proposer / put",
            Workload::Commits => "(h) commits, 16 proposers / puts",
        }
    }
}

/// How long a client pauses after a failed cycle, so that a client of a broken system does not
/// spin.
pub const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// One timed run of a workload: every client's cycles, and the time until the last client
/// finished its last cycle.
#[derive(Debug, Default)]
pub struct Run {
    /// The time of each completed cycle, all clients.
    pub samples: Vec<Duration>,
    /// Failed cycles.
    pub errors: usize,
    /// From the start of the run until every client stopped.
    pub elapsed: Duration,
}

impl Run {
    /// Gathers the clients' results of a run that started at `start`: one [`Batch`] per client,
    /// a cycle per operation.
    pub fn gather(start: Instant, clients: impl IntoIterator<Item = Batch>) -> Run {
        let mut run = Run::default();
        for client in clients {
            run.samples.extend(client.samples);
            run.errors += client.errors;
        }
        run.elapsed = start.elapsed();
        run
    }

    /// Completed cycles per second.
    pub fn rate(&self) -> f64 {
        self.samples.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// A system under comparison.
pub trait System {
    /// Its name in the report.
    fn name(&self) -> &str;
    /// Runs `workload` for `length`: lock cycles, or commits for (h).
    ///
    /// # Errors
    /// The clients could not run.
    fn run(&mut self, workload: Workload, length: Duration) -> anyhow::Result<Run>;
    /// One takeover run (number `run`): from the SIGKILL of a holder process until a waiter
    /// holds the lock.
    ///
    /// # Errors
    /// The holder or the waiter failed.
    fn takeover(&mut self, run: usize) -> anyhow::Result<Duration>;
    /// One takeover run (number `run`) of (f): from the SIGKILL of the holder together with the
    /// authority over its name until a waiter holds the lock.
    ///
    /// # Errors
    /// The holder, the waiter, or the restart of what was killed failed.
    fn owner_takeover(&mut self, run: usize) -> anyhow::Result<Duration>;
}

/// Everything measured for one system.
#[derive(Default)]
struct Measured {
    runs: Vec<Vec<Run>>,
    takeovers: Vec<Duration>,
    owner_takeovers: Vec<Duration>,
}

fn main() -> anyhow::Result<()> {
    let Some(invocation) = common::invocation("locks", std::env::args().skip(1))? else {
        return Ok(());
    };
    let options = Options::parse(invocation)?;
    // etcd first, from the main thread: its processes die with it (`common::process::Owned`).
    let etcd = if options.etcd {
        Some(etcd::Etcd::start(options.lease).context("start etcd")?)
    } else {
        println!("etcd: skipped (smoke run or --etcd no)");
        None
    };
    let colony =
        colony::Colony::start(options.lease, options.hashed).context("start the Colony cluster")?;
    let mut systems: Vec<Box<dyn System>> = vec![Box::new(colony)];
    if let Some(etcd) = etcd {
        systems.push(Box::new(etcd));
    }
    println!(
        "locks: {} rounds of {:.1} s per workload and system (after {:.1} s of warm-up), {} \
         takeover runs each, lease {} ms, alternating",
        options.rounds,
        options.secs.as_secs_f64(),
        options.warmup.as_secs_f64(),
        options.takeovers,
        options.lease.as_millis()
    );
    let measured = measure(&options, &mut systems)?;
    let names: Vec<String> = systems.iter().map(|s| s.name().to_owned()).collect();
    // (g) has the machine to itself: the other clusters stop first.
    drop(systems);
    let rolling = if options.only.contains('g') {
        println!(
            "(g) rolling restart of 5 Colony nodes, lease {} ms",
            options.lease.as_millis()
        );
        Some(rolling::run(options.lease).context("(g) rolling restart")?)
    } else {
        None
    };
    report(&options, &names, &measured, rolling.as_ref());
    Ok(())
}

/// Runs every workload and the takeovers on every system, alternating.
fn measure(options: &Options, systems: &mut [Box<dyn System>]) -> anyhow::Result<Vec<Measured>> {
    let mut measured: Vec<Measured> = systems.iter().map(|_| Measured::default()).collect();
    let count = systems.len();
    // Which system goes first alternates round by round.
    let order = move |round: usize| -> Vec<usize> {
        let mut order: Vec<usize> = (0..count).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        order
    };
    for workload in Workload::ALL {
        if !options.only.contains(workload.letter()) {
            measured.iter_mut().for_each(|m| m.runs.push(Vec::new()));
            continue;
        }
        for s in order(0) {
            systems[s].run(workload, options.warmup)?;
        }
        let mut runs: Vec<Vec<Run>> = systems.iter().map(|_| Vec::new()).collect();
        for round in 0..options.rounds {
            for s in order(round) {
                let run = systems[s]
                    .run(workload, options.secs)
                    .with_context(|| format!("{} {}", systems[s].name(), workload.label()))?;
                println!(
                    "  {} round {}: {:<7} {:>9.0} ops/s, p50 {}, {} errors",
                    workload.label(),
                    round + 1,
                    systems[s].name(),
                    run.rate(),
                    us(median(&run.samples)),
                    run.errors
                );
                runs[s].push(run);
            }
        }
        for (m, r) in measured.iter_mut().zip(runs) {
            m.runs.push(r);
        }
    }
    // (e) then (f), each alternating between the systems run by run.
    type Kill = fn(&mut dyn System, usize) -> anyhow::Result<Duration>;
    type Record = fn(&mut Measured) -> &mut Vec<Duration>;
    let kinds: [(char, &str, Kill, Record); 2] = [
        (
            'e',
            "(e) takeover",
            |s, run| s.takeover(run),
            |m| &mut m.takeovers,
        ),
        (
            'f',
            "(f) owner and holder killed",
            |s, run| s.owner_takeover(run),
            |m| &mut m.owner_takeovers,
        ),
    ];
    for (letter, label, kill, record) in kinds {
        if !options.only.contains(letter) {
            continue;
        }
        for run in 0..options.takeovers {
            for s in order(run) {
                let took = kill(systems[s].as_mut(), run)
                    .with_context(|| format!("{} {label} run {}", systems[s].name(), run + 1))?;
                println!(
                    "  {label} run {}: {:<7} {}",
                    run + 1,
                    systems[s].name(),
                    ms(took)
                );
                record(&mut measured[s]).push(took);
            }
        }
    }
    Ok(measured)
}

/// One system's figures for one workload.
struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

impl Figures {
    fn of(runs: &[Run]) -> Figures {
        let all: Vec<Duration> = runs.iter().flat_map(|r| r.samples.clone()).collect();
        Figures {
            rate: median_f64(&mut runs.iter().map(Run::rate).collect::<Vec<_>>()),
            p50: median(&all),
            p99: quantile(&all, 0.99),
            errors: runs.iter().map(|r| r.errors).sum(),
        }
    }

    fn cell(&self) -> String {
        let latency = |d: Duration| {
            if d < Duration::from_millis(1) {
                us(d)
            } else {
                ms(d)
            }
        };
        format!(
            "{:.0} ops/s, p50 {} p99 {}{}",
            self.rate,
            latency(self.p50),
            latency(self.p99),
            if self.errors > 0 {
                format!(", {} errors", self.errors)
            } else {
                String::new()
            }
        )
    }
}

fn report(
    options: &Options,
    names: &[String],
    measured: &[Measured],
    rolling: Option<&rolling::Rolling>,
) {
    println!("summary (medians over rounds; latency percentiles over all cycles):");
    let both = measured.len() == 2;
    // Colony's ops/s over etcd's per workload: the lower of the ratio of the medians and the
    // median of the per-round ratios.
    let mut ratios = Vec::new();
    for (w, workload) in Workload::ALL.into_iter().enumerate() {
        if measured[0].runs[w].is_empty() {
            ratios.push(None);
            continue;
        }
        let figures: Vec<Figures> = measured.iter().map(|m| Figures::of(&m.runs[w])).collect();
        let cells: Vec<String> = names
            .iter()
            .zip(&figures)
            .map(|(n, f)| format!("{n}: {}", f.cell()))
            .collect();
        let ratio = both.then(|| {
            let mut per_round: Vec<f64> = measured[0].runs[w]
                .iter()
                .zip(&measured[1].runs[w])
                .map(|(c, e)| c.rate() / e.rate())
                .collect();
            (
                figures[0].rate / figures[1].rate,
                median_f64(&mut per_round),
            )
        });
        let ratio_text = ratio.map_or(String::new(), |(of_medians, per_round)| {
            format!(" | ratio {of_medians:.1}x (per-round median {per_round:.1}x)")
        });
        println!(
            "  {:<38} {}{ratio_text}",
            workload.label(),
            cells.join(" | ")
        );
        ratios.push(ratio.map(|(a, b)| a.min(b)));
    }
    // Colony's median takeover over etcd's, for (e) and (f).
    let takeover = |label: &str, of: fn(&Measured) -> &Vec<Duration>| {
        if of(&measured[0]).is_empty() {
            return None;
        }
        let ratio = both.then(|| {
            median(of(&measured[0])).as_secs_f64() / median(of(&measured[1])).as_secs_f64()
        });
        let cells: Vec<String> = names
            .iter()
            .zip(measured)
            .map(|(n, m)| {
                let runs = of(m);
                let min = runs.iter().min().copied().unwrap_or_default();
                let max = runs.iter().max().copied().unwrap_or_default();
                format!(
                    "{n}: median {} ({}..{}, {} runs)",
                    ms(median(runs)),
                    ms(min),
                    ms(max),
                    runs.len()
                )
            })
            .collect();
        println!(
            "  {label:<38} {}{}",
            cells.join(" | "),
            ratio.map_or(String::new(), |r| format!(" | ratio {r:.2}x"))
        );
        ratio
    };
    let takeover_ratio = takeover("(e) takeover after SIGKILL", |m| &m.takeovers);
    let owner_ratio = takeover("(f) owner and holder SIGKILLed", |m| &m.owner_takeovers);
    if let Some(rolling) = rolling {
        rolling.print();
    }

    println!("targets:");
    let judged = |met: Option<bool>, what: String| {
        let verdict = match met {
            _ if !options.measuring => "not judged (smoke run)",
            None => "not judged (not run, or no etcd)",
            Some(true) => "met",
            Some(false) => "MISSED",
        };
        println!("  {what}: {verdict}");
    };
    let owner = &measured[0].runs[0];
    let owner_p50 = Figures::of(owner).p50;
    judged(
        (!owner.is_empty()).then_some(owner_p50 <= TARGET_OWNER_P50),
        format!(
            "(a) Colony owner-local p50 {} <= {}",
            us(owner_p50),
            us(TARGET_OWNER_P50)
        ),
    );
    for (w, target) in [
        (1, TARGET_NON_OWNER),
        (2, TARGET_PARALLEL),
        (3, TARGET_PARALLEL),
    ] {
        judged(
            ratios[w].map(|r| r >= target),
            format!(
                "({}) Colony >= {target:.0}x etcd ops/s ({})",
                Workload::ALL[w].letter(),
                ratios[w].map_or("-".into(), |r| format!("{r:.0}x"))
            ),
        );
    }
    judged(
        takeover_ratio.map(|r| r <= 1.0),
        format!(
            "(e) Colony takeover no slower than etcd with the same lease ({})",
            takeover_ratio.map_or("-".into(), |r| format!("{r:.2}x"))
        ),
    );
    judged(
        owner_ratio.map(|r| r <= TARGET_OWNER_TAKEOVER),
        format!(
            "(f) Colony takeover after the owner+holder's SIGKILL <= {TARGET_OWNER_TAKEOVER}x \
             etcd's after its leader+holder's ({})",
            owner_ratio.map_or("-".into(), |r| format!("{r:.2}x"))
        ),
    );
    judged(
        rolling.map(|r| r.worst() <= TARGET_ROLLING_HOLE && r.lost == 0),
        format!(
            "(g) rolling restart: no name without a grantable owner for more than {} ({}), no \
             hold lost on a planned move ({})",
            ms(TARGET_ROLLING_HOLE),
            rolling.map_or("-".into(), |r| rolling::hole(r.worst())),
            rolling.map_or("-".into(), |r| r.lost.to_string())
        ),
    );
    println!("  (h) commit latency and commits/s: figures only, next to etcd puts (above)");
}
