//! Cluster caches: Colony next to Redis, and the loopback TCP round trip as the floor, measured
//! in one run that prints them side by side with the ratios and the targets.
//!
//! Run with `cargo bench --bench caches` (options after `--`: `--rounds N`, `--calls N` per
//! batch of writes, requests or loopback round trips, `--hits N` runs of 1000 local gets per batch, `--redis-calls N`,
//! `--depth N` and `--pipelines N` for the pipelined GETs, `--warmup N`, `--redis no`, `--only
//! step,step` to make only some of the measurements, for profiling, `--settle MS` of quiet
//! before every batch, to see what one batch leaves to the next). Results
//! are in `docs/benchmarks.md`. Under `cargo test --benches` it makes a quick smoke run without
//! Redis, and judges nothing.
//!
//! # What runs
//! - **Redis**: `redis-server` (installed from Debian if missing) on a free 127.0.0.1 port with
//!   no persistence (`--save '' --appendonly no`), read by this process through a minimal RESP
//!   client (see [`redis`]): single GETs of an 8-byte value on one connection, one at a time,
//!   and pipelines of `--depth` GETs on another.
//! - **Colony**: two clusters of three nodes, one per replication mode measured, each of two
//!   `colony node` processes and a `writer` process, this binary re-executed with a Colony node
//!   in-process (see [`cluster`] and [`writer`]). The writer times synchronous `put`s of u64
//!   values to the cache its peers created, and, in the invalidation cluster, `get`s of a warm
//!   key of a local cache, `echo` requests to its peers, and the loopback round trip to an
//!   `echo` process of this binary, and to two of them at once (see [`loopback`]).
//! - **Paired writes**, which the write targets are judged on: each writer also times batches of
//!   puts in which every put comes right after a round trip to both echo servers at once, timed
//!   too (`pair`). How fast a batch runs on a shared 2-vCPU machine depends on what ran just
//!   before it in the same processes, which the rotation cannot even out (each step always
//!   follows the same one); a put and the fan-out timed just before it see the machine in the
//!   same state.
//! - **Asynchronous copy puts**: the copy cluster's writer also times `put`s to an asynchronous
//!   copy cache its peers hold (`aput`), reported as puts per second next to pipelined Redis
//!   `SET`s on one connection (a figure and its ratio, no target).
//! - **The machine**: before the rest starts, the same round trip between two threads of this
//!   process pinned to one CPU, then to two (see [`placement`]): what a wake-up on another CPU
//!   costs here, which a write to two peers at once cannot avoid.
//!
//! Against the noise of a shared machine, every process stays up for the whole run and the
//! orchestrator alternates the measurements round by round, rotating which goes first; the
//! report gives figures over all samples and the median of the per-round ratios.
//!
//! Throughputs are for one client on one core: the local hits are one task's loop, the pipelined
//! GETs one connection (Redis itself serves from one thread). Each is counted from the median
//! time of one sample (1000 gets, or one pipeline), so a burst of load from other work does not
//! weigh on it.

#[allow(dead_code, reason = "each bench uses a subset of the helpers")]
#[path = "../common/mod.rs"]
mod common;

mod cluster;
mod loopback;
mod placement;
mod redis;
mod writer;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use colony::actors::caches::Mode;
use colony_runtime::testkit::ClusterSpec;

use common::process::Worker;
use common::{Batch, Invocation, median, median_f64, quantile, us};

/// The variable that selects this process's role; unset for the orchestrator.
const ROLE_VAR: &str = "COLONY_BENCH_ROLE";
/// The role of the writer processes.
const WRITER: &str = "writer";
/// The role of the loopback echo server.
const ECHO: &str = "echo";
/// Nodes in each Colony cluster.
const NODES: usize = 3;
/// The Redis key read, and its value's size (a u64's 8 bytes, as Colony's values).
const REDIS_KEY: &[u8] = b"bench:key";
const REDIS_VALUE: &[u8] = b"12345678";
/// The Redis key the pipelined SETs write (not the one the GETs read).
const REDIS_SET_KEY: &[u8] = b"bench:set";

/// Target: Redis GET p50 over Colony's local hit.
const TARGET_HIT_VS_GET: f64 = 100.0;
/// Target: Colony's local-hit throughput over Redis's pipelined GET throughput.
const TARGET_HIT_VS_PIPELINE: f64 = 5.0;
/// Target: synchronous invalidation and copy put p50 over the p50 of one 64-byte write to two
/// echo servers at once (the raw two-peer fan-out of the same run), at most (issue 9); judged
/// on paired batches, each put right after a fan-out.
const TARGET_PUT_VS_FAN_OUT: f64 = 1.5;

/// Settings shared by the orchestrator and the roles.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rounds of alternating measurements.
    pub rounds: usize,
    /// Timed operations per batch of writes, of requests, or of loopback round trips.
    pub calls: usize,
    /// Samples of `writer::HIT_CHUNK` local gets per local-hit batch.
    pub hits: usize,
    /// Timed single GETs per Redis batch.
    pub redis_calls: usize,
    /// GETs per pipeline.
    pub depth: usize,
    /// Timed pipelines per Redis batch.
    pub pipelines: usize,
    /// Untimed operations of each kind before the first round.
    pub warmup: usize,
    /// Milliseconds of quiet before each batch (`--settle`).
    pub settle: u64,
    /// Whether to run Redis.
    pub redis: bool,
    /// Whether this is a measurement (`cargo bench`) rather than a smoke run.
    pub measuring: bool,
    /// The cluster cookie.
    pub cookie: String,
    /// A writer's replication mode.
    pub mode: Option<Mode>,
    /// A writer's seed: a peer of its cluster.
    pub seed: Option<SocketAddr>,
    /// A writer's loopback echo servers (the first alone, or both at once).
    pub echo: Vec<SocketAddr>,
    /// The measurements to make (`--only`, for profiling one of them); all if empty.
    pub only: Vec<String>,
}

impl Options {
    fn parse(invocation: Invocation) -> anyhow::Result<Options> {
        let mut options = Options {
            rounds: 20,
            calls: 1_000,
            hits: 200,
            redis_calls: 1_000,
            depth: 64,
            pipelines: 200,
            warmup: 2_000,
            settle: 0,
            redis: true,
            measuring: true,
            cookie: ClusterSpec::new("colony", 1).cookie,
            mode: None,
            seed: None,
            echo: Vec::new(),
            only: Vec::new(),
        };
        if !invocation.measure {
            options = Options {
                rounds: 1,
                calls: 20,
                hits: 5,
                redis_calls: 20,
                pipelines: 5,
                warmup: 10,
                redis: false,
                measuring: false,
                ..options
            };
        }
        for (flag, value) in invocation.options {
            let number = || common::number(&flag, &value);
            match flag.as_str() {
                "--rounds" => options.rounds = number()?,
                "--calls" => options.calls = number()?,
                "--hits" => options.hits = number()?,
                "--redis-calls" => options.redis_calls = number()?,
                "--depth" => options.depth = number()?,
                "--pipelines" => options.pipelines = number()?,
                "--warmup" => options.warmup = number()?,
                "--settle" => options.settle = number()? as u64,
                "--redis" => options.redis = value != "no",
                "--cookie" => options.cookie = value,
                "--mode" => {
                    options.mode = Some(match value.as_str() {
                        "invalidation" => Mode::Invalidation,
                        "copy" => Mode::Copy,
                        other => bail!("unknown --mode {other}"),
                    });
                }
                "--seed" => options.seed = Some(value.parse().context("--seed")?),
                "--echo" => options.echo.push(value.parse().context("--echo")?),
                "--only" => options.only = value.split(',').map(str::to_lowercase).collect(),
                other => bail!("unknown option {other}"),
            }
        }
        let sizes = [options.rounds, options.calls, options.hits];
        let redis_sizes = [options.redis_calls, options.depth, options.pipelines];
        if sizes.contains(&0) || (options.redis && redis_sizes.contains(&0)) {
            bail!("every count must be above 0");
        }
        Ok(options)
    }

    /// Whether `--only` leaves `step` in.
    fn runs(&self, step: Step) -> bool {
        self.only.is_empty() || self.only.contains(&format!("{step:?}").to_lowercase())
    }
}

/// The name of a replication mode, as the `cache_hammer` workload and `--mode` spell it.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Local => "local",
        Mode::Invalidation => "invalidation",
        Mode::Copy => "copy",
    }
}

fn main() -> anyhow::Result<()> {
    let Some(invocation) = common::invocation("caches", std::env::args().skip(1))? else {
        return Ok(());
    };
    let options = Options::parse(invocation)?;
    let role = std::env::var(ROLE_VAR).ok();
    let Some(role) = role.as_deref() else {
        return orchestrate(&options);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match role {
        WRITER => runtime.block_on(writer::run(&options)),
        ECHO => runtime.block_on(loopback::serve()),
        other => bail!("unknown {ROLE_VAR} {other}"),
    }
}

/// The measurements of a round, in the order of the first round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    RedisGet,
    RedisPipeline,
    LocalHit,
    Loopback,
    LoopbackBoth,
    Request,
    FanOut,
    Invalidation,
    Copy,
    PairedInvalidation,
    PairedCopy,
    AsyncCopy,
    RedisSetPipeline,
}

impl Step {
    const ALL: [Step; 13] = [
        Step::RedisGet,
        Step::RedisPipeline,
        Step::LocalHit,
        Step::Loopback,
        Step::LoopbackBoth,
        Step::Request,
        Step::FanOut,
        Step::Invalidation,
        Step::Copy,
        Step::PairedInvalidation,
        Step::PairedCopy,
        Step::AsyncCopy,
        Step::RedisSetPipeline,
    ];
}

/// Everything this run starts; dropping it stops it all.
struct Systems {
    redis: Option<(redis::Redis, redis::Client, redis::Client)>,
    _echo: [Worker; 2],
    invalidation: cluster::Cluster,
    copy: cluster::Cluster,
}

impl Systems {
    /// Starts Redis (unless off), the echo server and both Colony clusters, and checks that the
    /// peers apply the writes. Runs on the main thread: see `common::process::Owned`.
    fn start(options: &Options) -> anyhow::Result<Systems> {
        let redis = if options.redis {
            let server = redis::Redis::start().context("start Redis")?;
            let (mut single, pipelined) = (server.connect()?, server.connect()?);
            single.call(&[b"SET", REDIS_KEY, REDIS_VALUE])?;
            println!("redis: {}", server.version);
            Some((server, single, pipelined))
        } else {
            println!("redis: skipped (smoke run or --redis no)");
            None
        };
        let mut echo_servers = [
            Worker::start(ROLE_VAR, ECHO, &[])?,
            Worker::start(ROLE_VAR, ECHO, &[])?,
        ];
        let mut echo = Vec::new();
        for server in &mut echo_servers {
            echo.push(
                server
                    .read_line()?
                    .trim()
                    .parse()
                    .context("the echo address")?,
            );
        }
        let mut invalidation = cluster::Cluster::start(Mode::Invalidation, options, &echo)?;
        let mut copy = cluster::Cluster::start(Mode::Copy, options, &echo)?;
        for cluster in [&mut invalidation, &mut copy] {
            cluster.ready()?;
            cluster.check_peers_apply()?;
        }
        Ok(Systems {
            redis,
            _echo: echo_servers,
            invalidation,
            copy,
        })
    }

    /// Runs one batch of `step`: its samples, or `None` when the step's system is off. Every
    /// step but the copy writes runs in the invalidation cluster's writer, or in this process.
    fn run(&mut self, step: Step, options: &Options) -> anyhow::Result<Option<Batch>> {
        let len = REDIS_VALUE.len();
        let writer = match step {
            Step::LocalHit => format!("hit {}", options.hits),
            Step::Loopback => format!("echo {}", options.calls),
            Step::LoopbackBoth => format!("echo2 {}", options.calls),
            Step::Request => format!("request {}", options.calls),
            Step::FanOut => format!("fanout {}", options.calls),
            Step::Invalidation => format!("put {}", options.calls),
            Step::PairedInvalidation => format!("pair {}", options.calls),
            Step::Copy => return self.copy.batch(&format!("put {}", options.calls)).map(Some),
            Step::PairedCopy => {
                return self
                    .copy
                    .batch(&format!("pair {}", options.calls))
                    .map(Some);
            }
            Step::AsyncCopy => {
                return self
                    .copy
                    .batch(&format!("aput {}", options.calls))
                    .map(Some);
            }
            Step::RedisGet | Step::RedisPipeline | Step::RedisSetPipeline => {
                let Some((_, single, pipelined)) = &mut self.redis else {
                    return Ok(None);
                };
                return match step {
                    Step::RedisGet => single.timed_gets(REDIS_KEY, len, options.redis_calls),
                    Step::RedisPipeline => {
                        pipelined.timed_pipelines(REDIS_KEY, len, options.depth, options.pipelines)
                    }
                    _ => pipelined.timed_set_pipelines(
                        REDIS_SET_KEY,
                        REDIS_VALUE,
                        options.depth,
                        options.pipelines,
                    ),
                }
                .map(Some);
            }
        };
        self.invalidation.batch(&writer).map(Some)
    }
}

fn orchestrate(options: &Options) -> anyhow::Result<()> {
    // Before anything else starts: the machine's own figure, on quiet CPUs.
    let placement = placement::same_and_other_cpu(options.calls * 5)?;
    let mut systems = Systems::start(options)?;
    if let Some((_, single, pipelined)) = &mut systems.redis {
        let len = REDIS_VALUE.len();
        single.timed_gets(REDIS_KEY, len, options.warmup)?;
        pipelined.timed_pipelines(REDIS_KEY, len, options.depth, options.warmup / 10 + 1)?;
    }
    println!(
        "caches: {} rounds, alternating; per round {} calls of each Colony kind and of the \
         loopback, {} x {} local gets, {} Redis GETs, {} pipelines of {} GETs (after {} warm-up \
         operations of each kind)",
        options.rounds,
        options.calls,
        options.hits,
        writer::HIT_CHUNK,
        options.redis_calls,
        options.pipelines,
        options.depth,
        options.warmup,
    );
    let mut rounds = Vec::with_capacity(options.rounds);
    for r in 0..options.rounds {
        let mut round: Vec<Option<Batch>> = Step::ALL.iter().map(|_| None).collect();
        for i in 0..Step::ALL.len() {
            let s = (r + i) % Step::ALL.len();
            if !options.runs(Step::ALL[s]) {
                continue;
            }
            std::thread::sleep(Duration::from_millis(options.settle));
            round[s] = systems.run(Step::ALL[s], options)?;
        }
        rounds.push(round);
    }
    report(options, &rounds, placement);
    Ok(())
}

/// The figures of some rounds: `rounds[r][s]` is round r's batch of `Step::ALL[s]`.
struct Figures {
    /// The p50 and p99 of each step's samples, `None` for a step that did not run.
    quantiles: Vec<Option<(Duration, Duration)>>,
    /// The same of each paired step's reference samples, `None` for other steps.
    references: Vec<Option<(Duration, Duration)>>,
    /// GETs per pipeline.
    depth: usize,
}

impl Figures {
    fn of(rounds: &[Vec<Option<Batch>>], depth: usize) -> Figures {
        let over = |part: fn(&Batch) -> &[Duration]| -> Vec<Option<(Duration, Duration)>> {
            (0..Step::ALL.len())
                .map(|s| {
                    let samples: Vec<Duration> = rounds
                        .iter()
                        .filter_map(|round| round[s].as_ref())
                        .flat_map(|b| part(b).iter().copied())
                        .collect();
                    (!samples.is_empty()).then(|| (median(&samples), quantile(&samples, 0.99)))
                })
                .collect()
        };
        Figures {
            quantiles: over(|b| &b.samples),
            references: over(|b| &b.reference),
            depth,
        }
    }

    fn get(&self, step: Step) -> Option<(Duration, Duration)> {
        self.quantiles[step as usize]
    }

    /// The p50 of `step`'s samples over the p50 of the reference they were paired with.
    fn paired(&self, step: Step) -> f64 {
        let reference = self.references[step as usize];
        reference.map_or(f64::NAN, |(p50, _)| self.p50(step) / p50.as_secs_f64())
    }

    /// `step`'s p50 in seconds (NaN when it did not run).
    fn p50(&self, step: Step) -> f64 {
        self.get(step)
            .map_or(f64::NAN, |(p50, _)| p50.as_secs_f64())
    }

    /// Seconds per local hit, at the median.
    fn hit(&self) -> f64 {
        self.p50(Step::LocalHit) / f64::from(writer::HIT_CHUNK)
    }

    /// Redis GETs per second in pipelines, at the median.
    fn pipelined(&self) -> f64 {
        self.depth as f64 / self.p50(Step::RedisPipeline)
    }

    /// Redis SETs per second in pipelines, at the median.
    fn pipelined_sets(&self) -> f64 {
        self.depth as f64 / self.p50(Step::RedisSetPipeline)
    }

    /// The ratios the targets are about, in the order of [`TARGETS`]; NaN without Redis.
    fn ratios(&self) -> [f64; 4] {
        [
            self.p50(Step::RedisGet) / self.hit(),
            1.0 / self.hit() / self.pipelined(),
            self.paired(Step::PairedInvalidation),
            self.paired(Step::PairedCopy),
        ]
    }
}

/// The targets: a name, the bound, and whether the ratio must be at least (else at most) it.
const TARGETS: [(&str, f64, bool); 4] = [
    ("Redis GET p50 / local hit", TARGET_HIT_VS_GET, true),
    (
        "local-hit throughput / Redis pipelined",
        TARGET_HIT_VS_PIPELINE,
        true,
    ),
    (
        "sync invalidation put p50 / two-server fan-out p50, paired",
        TARGET_PUT_VS_FAN_OUT,
        false,
    ),
    (
        "sync copy put p50 / two-server fan-out p50, paired",
        TARGET_PUT_VS_FAN_OUT,
        false,
    ),
];

/// A ratio with `decimals` decimals, or `-` when it could not be measured.
fn times(ratio: f64, decimals: usize) -> String {
    if ratio.is_nan() {
        "-".to_owned()
    } else {
        format!("{ratio:.decimals$}x")
    }
}

/// Throughput with a unit, or `-`.
fn rate(per_sec: f64) -> String {
    if per_sec.is_nan() {
        "-".to_owned()
    } else if per_sec >= 1e6 {
        format!("{:.2} M/s", per_sec / 1e6)
    } else {
        format!("{:.0} k/s", per_sec / 1e3)
    }
}

/// Prints the table over every sample, then each target's verdict, judged on both the figures
/// over every sample and the median of the per-round ratios.
fn report(
    options: &Options,
    rounds: &[Vec<Option<Batch>>],
    placement: Option<(Duration, Duration)>,
) {
    let all = Figures::of(rounds, options.depth);
    let pair = |step: Step| {
        all.get(step).map_or_else(
            || "-".to_owned(),
            |(p50, p99)| format!("{} / {}", us(p50), us(p99)),
        )
    };
    let ratios = all.ratios();
    let mut rows = vec![
        (
            "read a warm key, p50 (/ p99)",
            format!("{:.1} ns (local hit)", all.hit() * 1e9),
            format!("{} (GET)", pair(Step::RedisGet)),
            times(ratios[0], 0),
        ),
        (
            "reads per second, one client",
            rate(1.0 / all.hit()),
            format!("{} (pipelines of {})", rate(all.pipelined()), options.depth),
            times(ratios[1], 1),
        ),
        (
            "loopback TCP round trip, p50 / p99",
            String::new(),
            pair(Step::Loopback),
            String::new(),
        ),
        (
            "the same to two servers at once",
            String::new(),
            pair(Step::LoopbackBoth),
            times(all.p50(Step::LoopbackBoth) / all.p50(Step::Loopback), 2) + " the floor",
        ),
    ];
    if let Some((same, other)) = placement {
        rows.push((
            "the same, threads on one CPU / two",
            String::new(),
            format!("{} / {}", us(same), us(other)),
            times(other.as_secs_f64() / same.as_secs_f64(), 2) + " across CPUs",
        ));
    }
    // What a synchronous write is made of, then the writes: each against the floor.
    for (name, step) in [
        ("request to one peer", Step::Request),
        ("requests to both peers at once", Step::FanOut),
        ("sync invalidation put", Step::Invalidation),
        ("sync copy put", Step::Copy),
    ] {
        let floor = all.p50(step) / all.p50(Step::Loopback);
        let mut ratio = times(floor, 2) + " the floor";
        if step != Step::Request {
            let both = all.p50(step) / all.p50(Step::LoopbackBoth);
            ratio += &format!(", {} the two-server floor", times(both, 2));
        }
        rows.push((name, pair(step), String::new(), ratio));
    }
    // The targets' measure: each write against the raw fan-out timed just before it.
    for (name, step) in [
        ("sync invalidation put, paired", Step::PairedInvalidation),
        ("sync copy put, paired", Step::PairedCopy),
    ] {
        let reference = all.references[step as usize].map_or_else(
            || "-".to_owned(),
            |(p50, p99)| format!("{} / {} (fan-outs)", us(p50), us(p99)),
        );
        let ratio = times(all.paired(step), 2) + " the fan-outs alongside";
        rows.push((name, pair(step), reference, ratio));
    }
    // Asynchronous copy puts: a figure and a ratio, no target (issue 9).
    let async_puts = 1.0 / all.p50(Step::AsyncCopy);
    rows.push((
        "async copy puts per second, one client",
        rate(async_puts),
        format!(
            "{} (SET pipelines of {})",
            rate(all.pipelined_sets()),
            options.depth
        ),
        times(async_puts / all.pipelined_sets(), 2),
    ));
    println!(
        "  {:<36} {:<24} {:<32} ratio",
        "", "Colony", "Redis / floor"
    );
    for (name, colony, other, ratio) in rows {
        println!("  {name:<36} {colony:<24} {other:<32} {ratio}");
    }
    let per_round: Vec<[f64; 4]> = rounds
        .iter()
        .map(|round| Figures::of(std::slice::from_ref(round), options.depth).ratios())
        .collect();
    for (t, (name, bound, at_least)) in TARGETS.iter().enumerate() {
        let mut values: Vec<f64> = per_round.iter().map(|r| r[t]).collect();
        let median = median_f64(&mut values);
        let (low, high) = (values[0], values[values.len() - 1]);
        let worst = if *at_least {
            ratios[t].min(median)
        } else {
            ratios[t].max(median)
        };
        let verdict = if !options.measuring {
            "not judged (smoke run)".to_owned()
        } else if worst.is_nan() {
            "not judged (a step it needs did not run: --redis no or --only)".to_owned()
        } else if (*at_least && worst >= *bound) || (!*at_least && worst <= *bound) {
            "met".to_owned()
        } else {
            let by = if *at_least {
                bound / worst
            } else {
                worst / bound
            };
            format!("MISSED by {by:.2}x")
        };
        let sign = if *at_least { ">=" } else { "<=" };
        println!(
            "  target {name} {sign} {bound}x: {verdict} (all samples {}; per-round median {}, \
             spread {}..{})",
            times(ratios[t], 2),
            times(median, 2),
            times(low, 2),
            times(high, 2)
        );
    }
}
