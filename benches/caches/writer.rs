//! The `writer` role: a Colony node in this process, the third member of a cluster with two
//! `colony node` processes, that times synchronous writes to the replicated cache the peers
//! created, and on request what a write is made of: Colony requests to one peer and to both at
//! once, and the loopback floor; and local hits. Driven line by line by the orchestrator (see
//! [`Writer::command`]); every timed operation runs on a runtime task, not on the `block_on`
//! thread, whose wake-ups cost several microseconds.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use colony::actors::caches::{Cache, CacheSettings, CachesExt, Mode};
use colony::{Node, NodeId};
use tokio::io::AsyncBufReadExt;

use crate::common::Batch;
use crate::{NODES, Options, loopback};

/// The cache the peers' `cache_hammer` workload creates (String keys, u64 values).
pub const REPLICATED: &str = "hammer";
/// The asynchronous copy cache of the copy cluster, for `aput`.
pub const ASYNC_COPY: &str = "hammer-async";
/// The key of the end-to-end check (see `cluster::Cluster::check_peers_apply`).
pub const PROBE_KEY: &str = "probe";
/// The key of the local hits.
const HIT_KEY: &str = "warm";
/// Gets per sample of a local-hit batch: enough that reading the clock is negligible.
pub const HIT_CHUNK: u32 = 1000;
/// Distinct keys the writes cycle through.
const KEYS: usize = 1000;
/// How long the node may take to see both peers up and connected.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The settings of the replicated cache in `mode`: synchronous, otherwise the defaults.
fn replicated_settings(mode: Mode) -> CacheSettings {
    match mode {
        Mode::Copy => CacheSettings::replicate_via_copy(),
        Mode::Invalidation => CacheSettings::replicate_via_invalidation(),
        Mode::Local => CacheSettings::local(),
    }
    .synchronous()
}

/// Runs the role: joins the cluster, warms up, prints `ready`, then answers commands until
/// stdin closes.
///
/// # Errors
/// The node did not start or join, or a command failed.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    let mode = options.mode.context("--mode is required in this role")?;
    let seed = options.seed.context("--seed is required in this role")?;
    let home = tempfile::tempdir()?;
    let node = colony::node()
        .name(format!("bench-{}", crate::mode_name(mode)))
        .home(home.path())
        .bind("127.0.0.1:0")
        .seeds([seed])
        .cookie(options.cookie.clone())
        .cluster_size(NODES)
        .start()
        .await
        .context("start the writer node")?;
    let (task_node, options_copy) = (node.clone(), options.clone());
    let served = tokio::spawn(async move { serve(&options_copy, &task_node, mode).await }).await;
    node.shutdown().await;
    served?
}

async fn serve(options: &Options, node: &Node, mode: Mode) -> anyhow::Result<()> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let peers = loop {
        let up = node.up_members();
        if up.len() == NODES && up.iter().all(|id| node.is_connected(*id)) {
            break up.into_iter().filter(|id| *id != node.id()).collect();
        }
        if Instant::now() > deadline {
            bail!("the writer node did not see {NODES} nodes up and connected");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let caches = node.caches();
    let local = caches.get_cache("bench.local", None, CacheSettings::local())?;
    local.put(HIT_KEY.to_owned(), 7).await?;
    let mut echo = Vec::new();
    for addr in &options.echo {
        echo.push(loopback::Client::connect(*addr).await?);
    }
    let mut writer = Writer {
        replicated: caches.get_cache(REPLICATED, None, replicated_settings(mode))?,
        async_copy: (mode == Mode::Copy)
            .then(|| {
                caches.get_cache(
                    ASYNC_COPY,
                    None,
                    CacheSettings::replicate_via_copy().asynchronous(),
                )
            })
            .transpose()?,
        local,
        echo,
        node: node.clone(),
        peers,
        keys: (0..KEYS).map(|i| format!("bench-{i}")).collect(),
        writes: 0,
    };
    writer.puts(options.warmup).await;
    writer.requests(options.warmup, false).await;
    if !writer.echo.is_empty() {
        writer.echoes(options.warmup, false).await?;
    }
    if writer.echo.len() > 1 {
        writer.echoes(options.warmup, true).await?;
    }
    writer.hits(10).await;
    println!("ready");
    let mut commands = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(command) = commands.next_line().await? {
        println!("{}", writer.command(&command).await?);
    }
    Ok(())
}

struct Writer {
    replicated: Cache<String, u64>,
    /// The asynchronous copy cache (copy cluster only).
    async_copy: Option<Cache<String, u64>>,
    local: Cache<String, u64>,
    echo: Vec<loopback::Client>,
    node: Node,
    /// The two other nodes.
    peers: Vec<NodeId>,
    keys: Vec<String>,
    /// Writes made so far: the next key and value.
    writes: u64,
}

impl Writer {
    /// Answers one command with one line:
    /// - `put N`: N timed writes to the replicated cache, as a [`Batch`];
    /// - `echo N`: N timed loopback round trips, as a [`Batch`];
    /// - `echo2 N`: the same to both echo servers at once, each sample until both answered;
    /// - `request N`: N timed `echo` requests of [`loopback::MESSAGE`] bytes to one peer (the
    ///   built-in `node` service, which sends the payload back), as a [`Batch`];
    /// - `fanout N`: the same to both peers at once, each sample until both answered;
    /// - `hit N`: N timed runs of [`HIT_CHUNK`] gets of a warm key of a local cache, as a
    ///   [`Batch`];
    /// - `probe V`: writes V under [`PROBE_KEY`] to the replicated cache, answers `ok`.
    async fn command(&mut self, command: &str) -> anyhow::Result<String> {
        let (verb, n) = command
            .split_once(' ')
            .and_then(|(verb, n)| Some((verb, n.trim().parse::<u64>().ok()?)))
            .with_context(|| format!("bad command {command:?}"))?;
        Ok(match verb {
            "put" => self.puts(n as usize).await.to_json(),
            "echo" => self.echoes(n as usize, false).await?.to_json(),
            "echo2" => self.echoes(n as usize, true).await?.to_json(),
            "pair" => self.pairs(n as usize).await?.to_json(),
            "request" => self.requests(n as usize, false).await.to_json(),
            "fanout" => self.requests(n as usize, true).await.to_json(),
            "hit" => self.hits(n as usize).await.to_json(),
            "aput" => self.async_puts(n as usize).await?.to_json(),
            "probe" => {
                self.replicated.put(PROBE_KEY.to_owned(), n).await?;
                "ok".to_owned()
            }
            _ => bail!("unknown command {command:?}"),
        })
    }

    /// Times `n` writes, each of a new value under the next key. A write that failed, or that
    /// some peer did not acknowledge in time, counts as an error.
    async fn puts(&mut self, n: usize) -> Batch {
        let unacknowledged = self.replicated.stats().unacknowledged;
        let mut batch = Batch::default();
        for _ in 0..n {
            self.writes += 1;
            let key = self.keys[self.writes as usize % self.keys.len()].clone();
            let start = Instant::now();
            let ok = self.replicated.put(key, self.writes).await.is_ok();
            batch.record(start, ok);
        }
        batch.errors += (self.replicated.stats().unacknowledged - unacknowledged) as usize;
        batch
    }

    /// Times `n` writes as [`Self::puts`] does, each right after a round trip to both echo
    /// servers at once, timed too. A write and the raw fan-out before it see the machine in the
    /// same state: on a shared 2-vCPU machine, how fast a batch runs depends on what ran just
    /// before it, more than on what it does (see `docs/benchmarks.md`, section 5, "Paired writes").
    async fn pairs(&mut self, n: usize) -> anyhow::Result<Batch> {
        let mut paired = Batch::default();
        for _ in 0..n {
            let raw = self.echoes(1, true).await?;
            let write = self.puts(1).await;
            paired.reference.extend(raw.samples);
            paired.samples.extend(write.samples);
            paired.errors += raw.errors + write.errors;
        }
        Ok(paired)
    }

    /// Times `n` asynchronous copy puts, each of a new value under the next key: each returns
    /// once its change is queued for both peers.
    async fn async_puts(&mut self, n: usize) -> anyhow::Result<Batch> {
        let cache = self
            .async_copy
            .as_ref()
            .context("aput needs the copy cluster's writer")?;
        let mut batch = Batch::default();
        for _ in 0..n {
            self.writes += 1;
            let key = self.keys[self.writes as usize % self.keys.len()].clone();
            let start = Instant::now();
            let ok = cache.put(key, self.writes).await.is_ok();
            batch.record(start, ok);
        }
        Ok(batch)
    }

    /// Times `n` echo requests to the first peer, or to both at once if `both`.
    async fn requests(&self, n: usize, both: bool) -> Batch {
        let call = |peer: NodeId| {
            self.node
                .request_raw(peer, "node", "echo", vec![0x5A; loopback::MESSAGE], None)
        };
        let mut batch = Batch::default();
        for _ in 0..n {
            let start = Instant::now();
            let ok = if both {
                let message = vec![0x5A; loopback::MESSAGE];
                let answers = self
                    .node
                    .request_each(&self.peers, "node", "echo", message, None);
                answers.await.iter().all(Result::is_ok)
            } else {
                call(self.peers[0]).await.is_ok()
            };
            batch.record(start, ok);
        }
        batch
    }

    /// Times `n` loopback round trips to the first echo server, or to both at once if `both`.
    async fn echoes(&mut self, n: usize, both: bool) -> anyhow::Result<Batch> {
        let mut batch = Batch::default();
        match &mut self.echo[..] {
            [a, b, ..] if both => {
                for _ in 0..n {
                    let start = Instant::now();
                    let (x, y) = tokio::join!(a.round_trip(), b.round_trip());
                    batch.record(start, x.is_ok() && y.is_ok());
                }
            }
            [a, ..] if !both => {
                for _ in 0..n {
                    let start = Instant::now();
                    let ok = a.round_trip().await.is_ok();
                    batch.record(start, ok);
                }
            }
            _ => bail!("this writer has too few echo servers"),
        }
        Ok(batch)
    }

    /// Times `n` runs of [`HIT_CHUNK`] gets of the warm key; a get that does not find it counts
    /// as an error.
    async fn hits(&mut self, n: usize) -> Batch {
        let key = HIT_KEY.to_owned();
        let mut batch = Batch::default();
        for _ in 0..n {
            let mut missed = 0;
            let start = Instant::now();
            for _ in 0..HIT_CHUNK {
                let value = self.local.get(black_box(&key)).await;
                if !matches!(black_box(value), Ok(Some(_))) {
                    missed += 1;
                }
            }
            batch.samples.push(start.elapsed());
            batch.errors += missed;
        }
        batch
    }
}
