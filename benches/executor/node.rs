//! The `node` role: one Colony node in this process, with the bench's executors open, driven
//! by one command per stdin line and answering each with one stdout line.
//!
//! Every node opens the same three executors, so every node may be given any bucket:
//! - `b1` and `b100`: tasks counted as they are processed, in batches of 1 and of 100;
//! - `hold`: a processor that records when each batch starts and never finishes, so submitted
//!   tasks stay queued (memory), and a bucket's head runs again only where its bucket moved
//!   (recovery after a kill).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use colony::{BucketedExecutor, BucketedExecutorSettings, ConcurrencyExt, ConcurrencyPolicy, Node};
use tokio::io::AsyncBufReadExt;

use crate::common::{Batch, concurrently, wall_us};
use crate::{BUCKETS, Options};

/// Buckets one node processes at once: all of them, so that throughput is the executor's, not a
/// limit's.
const PER_NODE: u32 = BUCKETS as u32;

/// What the processors of this node saw.
#[derive(Default)]
struct Seen {
    /// Tasks processed here, per executor.
    processed: BTreeMap<&'static str, AtomicU64>,
    /// Starts of `hold` batches here: bucket and wall time in µs.
    starts: Mutex<Vec<(String, u64)>>,
    /// The buckets whose `hold` batch is in process here now.
    holding: Arc<Mutex<BTreeSet<String>>>,
}

/// A `hold` batch in process: its bucket leaves the set when the batch is dropped (the node
/// lost the bucket).
struct Holding(Arc<Mutex<BTreeSet<String>>>, String);

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.lock().unwrap().remove(&self.1);
    }
}

fn bucket(seq: &u64) -> String {
    format!("b{}", seq % BUCKETS)
}

/// Opens executor `name` with batches of `batch`; `work` is what a batch does besides being
/// counted.
fn open<F, Fut>(
    node: &Node,
    seen: &Arc<Seen>,
    name: &'static str,
    batch: usize,
    work: F,
) -> anyhow::Result<BucketedExecutor<u64>>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let seen = seen.clone();
    let work = Arc::new(work);
    let settings = BucketedExecutorSettings::new(bucket, move |b: String, tasks: Vec<u64>, _| {
        let (seen, work) = (seen.clone(), work.clone());
        async move {
            work(b).await;
            seen.processed[name].fetch_add(tasks.len() as u64, Ordering::Relaxed);
            Ok::<(), std::io::Error>(())
        }
    })
    .batch_size(batch)
    .max_concurrency(PER_NODE, ConcurrencyPolicy::PerNode)
    .max_attempts(1_000)
    .max_queued(u64::MAX / 2);
    Ok(node.concurrency().bucketed_executor(name, settings)?)
}

/// Runs the role until stdin closes.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    let (node, _home) = options.node.start_node(crate::NODES).await?;
    let seen = Arc::new(Seen {
        processed: ["b1", "b100", "hold"]
            .into_iter()
            .map(|n| (n, AtomicU64::new(0)))
            .collect(),
        ..Seen::default()
    });
    let mut executors = BTreeMap::new();
    executors.insert("b1", open(&node, &seen, "b1", 1, |_| async {})?);
    executors.insert("b100", open(&node, &seen, "b100", 100, |_| async {})?);
    let record = seen.clone();
    let hold = move |b: String| {
        record.starts.lock().unwrap().push((b.clone(), wall_us()));
        record.holding.lock().unwrap().insert(b.clone());
        let holding = Holding(record.holding.clone(), b);
        async move {
            let _holding = holding;
            std::future::pending::<()>().await
        }
    };
    executors.insert("hold", open(&node, &seen, "hold", 1, hold)?);
    println!("ready");

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["submit", exec, n, conc] => {
                let exec = executors.get(exec).context("no such executor")?.clone();
                submit(exec, n.parse()?, conc.parse()?).await.to_json()
            }
            ["processed", exec] => seen
                .processed
                .get(exec)
                .context("no such executor")?
                .load(Ordering::Relaxed)
                .to_string(),
            ["rss"] => crate::common::rss()?.to_string(),
            ["held"] => {
                let status = node.group().status();
                let leads = status.leader == Some(status.replica);
                let held = seen.holding.lock().unwrap();
                serde_json::json!({ "buckets": *held, "leader": leads }).to_string()
            }
            ["first_after", at_us] => {
                let at: u64 = at_us.parse()?;
                let starts = seen.starts.lock().unwrap();
                let mut first: BTreeMap<&String, u64> = BTreeMap::new();
                for (b, start) in starts.iter() {
                    if *start >= at {
                        let e = first.entry(b).or_insert(*start);
                        *e = (*e).min(*start);
                    }
                }
                serde_json::to_string(&first)?
            }
            ["cast", n, window] => cast(&node, n.parse()?, window.parse()?)
                .await?
                .as_nanos()
                .to_string(),
            other => bail!("unknown command {other:?}"),
        };
        println!("{answer}");
    }
    node.shutdown().await;
    Ok(())
}

/// Submits `n` tasks numbered from a random base, `conc` submits at a time; each submit's
/// latency is a sample.
async fn submit(exec: BucketedExecutor<u64>, n: usize, conc: usize) -> Batch {
    let base = u64::from(rand_base());
    concurrently(n, conc, move |i| {
        let exec = exec.clone();
        async move { exec.submit(base + i as u64).await.is_ok() }
    })
    .await
}

/// A base for task numbers, so that submits from the nodes spread over every bucket alike.
fn rand_base() -> u32 {
    (wall_us() % u64::from(u32::MAX)) as u32
}

/// The raw floor: `n` echo requests of 64 bytes to another node over the same links, `window`
/// at a time, with no consensus and no disk. Returns how long they took.
async fn cast(node: &Node, n: usize, window: usize) -> anyhow::Result<Duration> {
    let me = node.local().id;
    let peer = node
        .members()
        .into_iter()
        .find(|m| m.id != me && m.state.is_up())
        .context("no other node is up")?
        .id;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..window.max(1) {
        let (node, next) = (node.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                node.request_raw(peer, "node", "echo", vec![0x5A; 64], None)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(start.elapsed())
}
