//! Request round trip between two processes: Colony's request over a link next to the
//! loopback floor (a bare TCP echo), measured in the same run.
//!
//! Run with `cargo bench --bench roundtrip` (options after `--`: `--payload BYTES`,
//! `--calls N` per batch, `--batches N`, `--warmup N`). Results are in `docs/benchmarks.md`.
//! Under `cargo test --benches` it makes a smoke run with a few calls.
//!
//! # Shape
//! A process holds one node, so this binary plays several roles, chosen by the
//! `COLONY_BENCH_ROLE` variable, and the orchestrator (no role) re-executes itself for each:
//!
//! - two servers: a `colony node` process (the real binary, through the testkit) and a
//!   `bare-server` process (a tokio TCP echo of length-prefixed frames);
//! - two clients: `colony-client` starts a Colony node seeded to the `colony node` process and
//!   calls `node.request_raw(peer, "node", "echo", ..)`; `bare-client` connects to the bare
//!   server and writes a frame and reads its echo. Both send the same payload one call at a
//!   time from a runtime task, with the same 5 s timeout.
//!
//! Each client connects and warms up once, then runs a batch of timed calls each time the
//! orchestrator writes a line to its stdin, and answers with the batch's samples as JSON. The
//! orchestrator alternates the two clients batch by batch (and which goes first), so that the
//! bursts of load on a shared machine hit both sides alike; it reports the percentiles over all
//! batches and the median of the per-batch ratios.

#[allow(dead_code, reason = "each bench uses a subset of the helpers")]
#[path = "../common/mod.rs"]
mod common;

mod bare;
mod colony;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use colony_runtime::testkit::{ClusterSpec, TestCluster, free_port};
use tokio::io::AsyncBufReadExt;

use common::process::Worker;
use common::{Batch, Invocation, median, median_f64, quantile, ratio, us};

/// The variable that selects this process's role; unset for the orchestrator.
const ROLE_VAR: &str = "COLONY_BENCH_ROLE";
/// The timeout of every call on both sides: Colony's default `request_timeout`.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to reach its server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// The target Colony/bare ratio of the median round trip: what Colony adds to a bare TCP
/// round trip (an envelope each way, the link's framing, the dispatcher) stays under half of it.
const TARGET_RATIO: f64 = 1.5;

/// The processes this binary can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    BareServer,
    BareClient,
    ColonyClient,
}

impl Role {
    const ALL: [Role; 3] = [Role::BareServer, Role::BareClient, Role::ColonyClient];

    fn as_str(self) -> &'static str {
        match self {
            Role::BareServer => "bare-server",
            Role::BareClient => "bare-client",
            Role::ColonyClient => "colony-client",
        }
    }
}

/// Settings shared by the orchestrator and every role.
#[derive(Debug, Clone)]
pub struct Options {
    /// Payload size in bytes, both ways.
    pub payload: usize,
    /// Timed calls per batch.
    pub calls: usize,
    /// Batches per client.
    pub batches: usize,
    /// Untimed calls before the first batch.
    pub warmup: usize,
    /// The server a client calls, or the address a server listens on.
    pub target: Option<SocketAddr>,
    /// The cluster cookie.
    pub cookie: String,
    /// Whether this is a measurement (`cargo bench`) rather than a smoke run.
    pub measuring: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            payload: 64,
            calls: 2_000,
            batches: 50,
            warmup: 5_000,
            target: None,
            cookie: ClusterSpec::new("colony", 1).cookie,
            measuring: true,
        }
    }
}

impl Options {
    /// Few calls, for a smoke run under `cargo test --benches`.
    fn smoke() -> Self {
        Options {
            calls: 50,
            batches: 2,
            warmup: 10,
            measuring: false,
            ..Options::default()
        }
    }

    /// The options of `invocation` over the defaults (the smoke ones unless measuring).
    fn parse(invocation: Invocation) -> anyhow::Result<Options> {
        let mut parsed = if invocation.measure {
            Options::default()
        } else {
            Options::smoke()
        };
        for (flag, value) in invocation.options {
            let number = || common::number(&flag, &value);
            match flag.as_str() {
                "--payload" => parsed.payload = number()?,
                "--calls" => parsed.calls = number()?,
                "--batches" => parsed.batches = number()?,
                "--warmup" => parsed.warmup = number()?,
                "--target" => parsed.target = Some(value.parse().context("--target")?),
                "--cookie" => parsed.cookie = value,
                other => bail!("unknown option {other}"),
            }
        }
        if parsed.calls == 0 || parsed.batches == 0 {
            bail!("--calls and --batches must be above 0");
        }
        Ok(parsed)
    }

    /// The arguments that give a child process these options, aimed at `target`.
    fn child_args(&self, target: SocketAddr) -> Vec<String> {
        vec![
            "--payload".into(),
            self.payload.to_string(),
            "--calls".into(),
            self.calls.to_string(),
            "--warmup".into(),
            self.warmup.to_string(),
            "--target".into(),
            target.to_string(),
            "--cookie".into(),
            self.cookie.clone(),
        ]
    }

    /// The target address, required in every role.
    pub fn target(&self) -> anyhow::Result<SocketAddr> {
        self.target.context("--target is required in this role")
    }
}

/// The client loop shared by both sides. `call` sends `payload` once and checks that the same
/// number of bytes came back.
///
/// Calls until the first success (the server may still be joining), then `warmup` times
/// untimed; prints `ready`, then runs one batch of timed calls per line read from stdin and
/// prints each batch as JSON, until stdin closes. The calls run on a runtime task, not on the
/// `block_on` thread, whose wake-ups cost several microseconds per call.
pub async fn serve_batches<F, Fut>(options: &Options, call: F) -> anyhow::Result<()>
where
    F: Fn(Vec<u8>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let payload = vec![0x5A; options.payload];
    let (warmup, calls) = (options.warmup, options.calls);
    let task = tokio::spawn(async move {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        while let Err(e) = call(payload.clone()).await {
            if Instant::now() > deadline {
                return Err(anyhow!("the server never answered: {e}"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for _ in 0..warmup {
            let _ = call(payload.clone()).await;
        }
        println!("ready");
        let mut commands = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while commands.next_line().await?.is_some() {
            let mut batch = Batch {
                samples: Vec::with_capacity(calls),
                ..Batch::default()
            };
            for _ in 0..calls {
                let start = Instant::now();
                let ok = call(payload.clone()).await.is_ok();
                batch.record(start, ok);
            }
            println!("{}", batch.to_json());
        }
        Ok(())
    });
    task.await?
}

fn main() -> anyhow::Result<()> {
    let Some(invocation) = common::invocation("roundtrip", std::env::args().skip(1))? else {
        return Ok(());
    };
    let options = Options::parse(invocation)?;
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return orchestrate(&options);
    };
    let role = Role::ALL
        .into_iter()
        .find(|r| r.as_str() == role)
        .with_context(|| format!("unknown {ROLE_VAR} {role}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match role {
            Role::BareServer => bare::serve(&options).await,
            Role::BareClient => bare::client(&options).await,
            Role::ColonyClient => colony::client(&options).await,
        }
    })
}

/// Starts `role` aimed at `target` and waits for its `ready` line.
fn start(role: Role, options: &Options, target: SocketAddr) -> anyhow::Result<Worker> {
    let mut worker = Worker::start(ROLE_VAR, role.as_str(), &options.child_args(target))?;
    worker.read_line()?;
    Ok(worker)
}

/// Has the client `worker` run one batch and returns it.
fn batch(worker: &mut Worker) -> anyhow::Result<Batch> {
    let role = worker.role().to_owned();
    worker.batch("run", |errors| format!("{role}: {errors} calls failed"))
}

/// Starts the servers and clients, alternates batches and prints the comparison.
fn orchestrate(options: &Options) -> anyhow::Result<()> {
    let mut spec = ClusterSpec::new(env!("CARGO_BIN_EXE_colony"), 1);
    spec.cluster_size = Some(2);
    spec.cookie = options.cookie.clone();
    let cluster = TestCluster::start(spec)?;
    cluster
        .wait_until(CONNECT_TIMEOUT, |c| c.admin(0).healthy())
        .context("the colony node never became healthy")?;
    let bare_target = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _bare_server = start(Role::BareServer, options, bare_target)?;
    let mut bare = start(Role::BareClient, options, bare_target)?;
    let mut colony = start(Role::ColonyClient, options, cluster.addr(0))?;

    println!(
        "round trip, {} B payload, {} batches of {} calls per side (after {} warm-up calls), \
         alternating",
        options.payload, options.batches, options.calls, options.warmup
    );
    let (mut bare_all, mut colony_all, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..options.batches {
        let (b, c) = if i % 2 == 0 {
            let b = batch(&mut bare)?;
            (b, batch(&mut colony)?)
        } else {
            let c = batch(&mut colony)?;
            (batch(&mut bare)?, c)
        };
        ratios.push(ratio(&c.samples, &b.samples, 0.5));
        bare_all.extend(b.samples);
        colony_all.extend(c.samples);
    }

    let mut table = Vec::new();
    for (name, samples) in [("bare  ", &bare_all), ("colony", &colony_all)] {
        table.push(format!(
            "  {name} p50 {} p99 {} ({} calls)",
            us(median(samples)),
            us(quantile(samples, 0.99)),
            samples.len()
        ));
    }
    println!("{}", table.join("\n"));
    let p50 = ratio(&colony_all, &bare_all, 0.5);
    let per_batch = median_f64(&mut ratios);
    println!(
        "  colony/bare: p50 {p50:.2}x, p99 {:.2}x; median of the per-batch p50 ratios {per_batch:.2}x \
         (spread {:.2}x..{:.2}x)",
        ratio(&colony_all, &bare_all, 0.99),
        ratios[0],
        ratios[ratios.len() - 1],
    );
    let verdict = if !options.measuring {
        "not judged (smoke run)"
    } else if p50.max(per_batch) <= TARGET_RATIO {
        "met"
    } else {
        "MISSED"
    };
    println!("  target p50 <= {TARGET_RATIO}x: {verdict}");
    Ok(())
}
