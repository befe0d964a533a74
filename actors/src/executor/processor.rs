//! What an application hands the executor: its processor, its dead-letter handler, and the
//! settings of one executor; and the type-erased form the driver runs.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

use super::config::{Backoff, Concurrency, ExecutorSettings};

/// What a task type needs: it travels through the consensus log, even on a one-node cluster.
pub trait ExecutorTask: Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> ExecutorTask for T {}

/// Processes the tasks of one bucket, a batch at a time. A batch succeeds or fails as a whole;
/// a panic counts as a failure. `token` increases strictly per bucket across the cluster: pass
/// it to the stores the processor writes so that a late write of a worker that was cut off is
/// refused. Processing is at least once: a batch may run again (with a higher token).
///
/// A batch is dropped (its future is not polled again) when this node's entitlement ends: a
/// processor should await its IO rather than block a thread for long.
///
/// Any `Fn(String, Vec<T>, u64) -> impl Future<Output = Result<(), E>>` is a processor.
///
/// # Examples
/// ```
/// use colony_actors::executor::BucketProcessor;
/// struct Indexer;
/// impl BucketProcessor<u64> for Indexer {
///     type Error = std::io::Error;
///     async fn process(&self, bucket: String, tasks: Vec<u64>, token: u64) -> Result<(), Self::Error> {
///         println!("{bucket}: {tasks:?} with token {token}");
///         Ok(())
///     }
/// }
/// ```
pub trait BucketProcessor<T>: Send + Sync + 'static {
    /// Why a batch failed.
    type Error: Display + Send + 'static;

    /// Processes `tasks` of `bucket`, in order, with the batch's fencing `token`.
    fn process(
        &self,
        bucket: String,
        tasks: Vec<T>,
        token: u64,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

impl<T, F, Fut, E> BucketProcessor<T> for F
where
    F: Fn(String, Vec<T>, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    type Error = E;

    fn process(
        &self,
        bucket: String,
        tasks: Vec<T>,
        token: u64,
    ) -> impl Future<Output = Result<(), E>> + Send {
        self(bucket, tasks, token)
    }
}

/// A batch given up after its last attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter<T> {
    /// The bucket.
    pub bucket: String,
    /// Its tasks, in order (a task that no longer decodes as `T` is logged instead).
    pub tasks: Vec<T>,
    /// The token of the batch.
    pub token: u64,
}

/// How an executor's per-node limit is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConcurrencyPolicy {
    /// At most `n` buckets in process on each node.
    PerNode,
    /// At most `n` in the cluster: `ceil(n / live members)` on each node.
    PerCluster,
}

type BucketFn<T> = Arc<dyn Fn(&T) -> String + Send + Sync>;
type DeadLetterFn<T> = Arc<dyn Fn(DeadLetter<T>) + Send + Sync>;
type ProcessFn<T> = Arc<dyn Fn(String, Vec<T>, u64) -> BoxFuture<Result<(), String>> + Send + Sync>;

/// The settings of one executor: how a task finds its bucket, the processor, and the limits.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use colony_actors::executor::{BucketedExecutorSettings, ConcurrencyPolicy};
/// let settings = BucketedExecutorSettings::new(
///     |repo: &u64| repo.to_string(),
///     |repo: String, tasks: Vec<u64>, token: u64| async move {
///         println!("repository {repo}: {tasks:?} (token {token})");
///         Ok::<(), std::io::Error>(())
///     },
/// )
/// .batch_size(10)
/// .max_attempts(5)
/// .retry_backoff(Duration::from_millis(50), Duration::from_secs(5))
/// .max_concurrency(8, ConcurrencyPolicy::PerCluster)
/// .max_queued(10_000)
/// .dead_letters(|dead| eprintln!("gave up on {} tasks of {}", dead.tasks.len(), dead.bucket));
/// ```
pub struct BucketedExecutorSettings<T> {
    pub(crate) bucket_fn: BucketFn<T>,
    pub(crate) process: ProcessFn<T>,
    pub(crate) dead_letters: Option<DeadLetterFn<T>>,
    pub(crate) core: ExecutorSettings,
    pub(crate) max_queued: u64,
}

impl<T: ExecutorTask> BucketedExecutorSettings<T> {
    /// Tasks go to the bucket `bucket_fn` names (1 to 256 bytes) and are processed by
    /// `processor`. Defaults: batches of 1, 3 attempts, backoff from 100 ms to 10 s,
    /// 16 buckets per node, 100 000 tasks queued, dead letters logged.
    pub fn new(
        bucket_fn: impl Fn(&T) -> String + Send + Sync + 'static,
        processor: impl BucketProcessor<T>,
    ) -> Self {
        let processor = Arc::new(processor);
        let process: ProcessFn<T> = Arc::new(move |bucket, tasks, token| {
            let processor = processor.clone();
            Box::pin(async move {
                processor
                    .process(bucket, tasks, token)
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        BucketedExecutorSettings {
            bucket_fn: Arc::new(bucket_fn),
            process,
            dead_letters: None,
            core: ExecutorSettings::default(),
            max_queued: 100_000,
        }
    }

    /// Most tasks per batch (at least 1).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.core.batch_size = n.max(1);
        self
    }

    /// Attempts on a batch before it goes to the dead-letter handler (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.core.max_attempts = n.max(1);
        self
    }

    /// The wait after the first failure, doubled per further failure up to `max`.
    pub fn retry_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.core.backoff = Backoff {
            first,
            max: max.max(first),
        };
        self
    }

    /// How many buckets run at once (at least 1).
    pub fn max_concurrency(mut self, n: u32, policy: ConcurrencyPolicy) -> Self {
        self.core.concurrency = match policy {
            ConcurrencyPolicy::PerNode => Concurrency::PerNode(n.max(1)),
            ConcurrencyPolicy::PerCluster => Concurrency::PerCluster(n.max(1)),
        };
        self
    }

    /// Most tasks the executor holds in the cluster (queued and not yet processed); past it,
    /// `submit` fails with `Busy`.
    pub fn max_queued(mut self, n: u64) -> Self {
        self.max_queued = n.max(1);
        self
    }

    /// Called with each batch given up after its last attempt (run on its own task). Without
    /// one, dead letters are logged. Either way they are counted.
    pub fn dead_letters(mut self, handler: impl Fn(DeadLetter<T>) + Send + Sync + 'static) -> Self {
        self.dead_letters = Some(Arc::new(handler));
        self
    }

    /// The settings the driver runs: the dead-letter handler joined to the processor.
    pub(crate) fn build(self) -> (BucketFn<T>, Arc<dyn Runner>, ExecutorSettings, u64) {
        let runner = Arc::new(Typed {
            process: self.process,
            dead_letters: self.dead_letters,
        });
        (self.bucket_fn, runner, self.core, self.max_queued)
    }
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A processor and dead-letter handler with the task type erased: tasks as their bytes.
pub(crate) trait Runner: Send + Sync + 'static {
    /// Decodes and processes a batch; `Err` says why it failed.
    fn process(
        &self,
        bucket: String,
        tasks: &[ByteBuf],
        token: u64,
    ) -> BoxFuture<Result<(), String>>;

    /// Decodes and hands a batch to the dead-letter handler.
    fn dead_letter(&self, bucket: String, tasks: &[ByteBuf], token: u64) -> BoxFuture<()>;
}

struct Typed<T> {
    process: ProcessFn<T>,
    dead_letters: Option<DeadLetterFn<T>>,
}

/// Decodes a batch's tasks; the first that does not decode is the error.
fn decode<T: ExecutorTask>(tasks: &[ByteBuf]) -> Result<Vec<T>, String> {
    tasks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            colony_runtime::wire::decode_payload(b)
                .map_err(|e| format!("task {i} of the batch does not decode: {e}"))
        })
        .collect()
}

impl<T: ExecutorTask> Runner for Typed<T> {
    fn process(
        &self,
        bucket: String,
        tasks: &[ByteBuf],
        token: u64,
    ) -> BoxFuture<Result<(), String>> {
        match decode::<T>(tasks) {
            Ok(tasks) => (self.process)(bucket, tasks, token),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn dead_letter(&self, bucket: String, tasks: &[ByteBuf], token: u64) -> BoxFuture<()> {
        let mut decoded = Vec::with_capacity(tasks.len());
        for (i, b) in tasks.iter().enumerate() {
            match colony_runtime::wire::decode_payload::<T>(b) {
                Ok(t) => decoded.push(t),
                Err(e) => tracing::error!(%bucket, token, task = i, error = %e,
                    "a dead-lettered task does not decode: logged here only"),
            }
        }
        let handler = self.dead_letters.clone();
        Box::pin(async move {
            let count = decoded.len();
            let dead = DeadLetter {
                bucket,
                tasks: decoded,
                token,
            };
            match handler {
                Some(h) => h(dead),
                None => tracing::warn!(bucket = %dead.bucket, token, count,
                    "executor batch dead-lettered (no handler set)"),
            }
        })
    }
}
