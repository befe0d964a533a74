//! A bucketed executor under load: every node opens the same executor, submits `count`
//! numbered tasks round-robin over `buckets` buckets, one submit at a time, and records each
//! accepted task; its processor records every batch it ran (bucket, token, tasks, node, start
//! and end). The checkers of `testkit::check` judge the merged histories.
//!
//! Each process submits as itself (the node's name and its process id), so a node started
//! again numbers its tasks afresh. With a `sink`, a batch's side effect is a write under its
//! token to a fenced store shared by every node: a batch whose token is below one written
//! already (a worker that woke from a pause past its entitlement) is refused there, recorded
//! as `fenced` and failed, and only an accepted batch is recorded as run.

use std::path::PathBuf;
use std::time::Duration;

use colony::{BucketedExecutorSettings, ConcurrencyExt, ConcurrencyPolicy, ExecutorError, Node};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::history::{History, wall_us};
use super::sink::FencedSink;

#[derive(Debug, Clone, Deserialize)]
pub struct ExecHammer {
    /// The executor's name.
    executor: String,
    /// Buckets the tasks go to.
    buckets: u64,
    /// Tasks this node submits.
    count: u64,
    /// How long the processor works on a batch.
    work_ms: u64,
    /// Most tasks per batch.
    batch_size: usize,
    /// JSON-lines history file, relative to the local home.
    history: PathBuf,
    /// A per-cluster limit of buckets in process (`ConcurrencyPolicy::PerCluster`); the
    /// default per-node limit without it.
    #[serde(default)]
    per_cluster: Option<u32>,
    /// A fenced sink directory each batch writes to with its token, relative to the shared
    /// home.
    #[serde(default)]
    sink: Option<PathBuf>,
    /// The processor works on a blocking thread, which a dropped call does not stop (its
    /// write can come after its entitlement ended: the sink refuses it).
    #[serde(default)]
    blocking: bool,
}

/// A batch's side effect: its write to the sink under its token, then its record.
struct Batch {
    me: String,
    bucket: String,
    token: u64,
    tasks: Vec<(String, u64)>,
    start_us: u64,
}

impl Batch {
    /// Writes under the token (refused: recorded as `fenced`, and an error), then records the
    /// batch as run. With a sink, the batch ends when its write took effect (see
    /// [`FencedSink::write_at`]): a worker paused inside the write is ordered where it took the
    /// sink's lock, not where it woke.
    fn write(self, ran: &History, sink: Option<&FencedSink>) -> std::io::Result<()> {
        let Batch {
            me,
            bucket,
            token,
            tasks,
            start_us,
        } = self;
        let end_us = match sink {
            None => wall_us(),
            Some(sink) => match sink.write_at(&bucket, token)? {
                Some(at) => at,
                None => {
                    ran.record(&json!({
                        "event": "fenced", "node": me, "bucket": bucket, "token": token,
                        "at_us": wall_us(),
                    }));
                    return Err(std::io::Error::other("fenced: a later token wrote"));
                }
            },
        };
        ran.record(&json!({
            "event": "batch", "node": me, "bucket": bucket, "token": token,
            "tasks": tasks, "start_us": start_us, "end_us": end_us,
        }));
        Ok(())
    }
}

/// One task: its bucket, who submitted it and its number there.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    bucket: String,
    submitter: String,
    seq: u64,
}

impl ExecHammer {
    pub async fn run(self, node: Node) -> anyhow::Result<()> {
        let history = History::open(&node.local_home().root().join(&self.history))?;
        let sink = FencedSink::shared(&node, self.sink.as_deref())?;
        let (me, work, ran, blocking) = (
            node.name().to_owned(),
            Duration::from_millis(self.work_ms),
            history.clone(),
            self.blocking,
        );
        let settings = BucketedExecutorSettings::new(
            |job: &Job| job.bucket.clone(),
            move |bucket: String, jobs: Vec<Job>, token: u64| {
                let (me, ran, sink) = (me.clone(), ran.clone(), sink.clone());
                async move {
                    let start_us = wall_us();
                    let tasks: Vec<(String, u64)> =
                        jobs.into_iter().map(|j| (j.submitter, j.seq)).collect();
                    let batch = Batch {
                        me,
                        bucket,
                        token,
                        tasks,
                        start_us,
                    };
                    if blocking {
                        // Dropping the call does not stop this thread: a late side effect.
                        tokio::task::spawn_blocking(move || {
                            std::thread::sleep(work);
                            batch.write(&ran, sink.as_deref())
                        })
                        .await
                        .map_err(std::io::Error::other)?
                    } else {
                        tokio::time::sleep(work).await;
                        batch.write(&ran, sink.as_deref())
                    }
                }
            },
        )
        .batch_size(self.batch_size)
        .max_attempts(1_000)
        .max_queued(1_000_000);
        let exec = node.concurrency().bucketed_executor(
            &self.executor,
            match self.per_cluster {
                Some(n) => settings.max_concurrency(n, ConcurrencyPolicy::PerCluster),
                None => settings,
            },
        )?;
        // This process, not the node: a node started again submits under a new name.
        let me = format!("{}#{}", node.name(), std::process::id());
        for seq in 1..=self.count {
            let bucket = format!("b{}", seq % self.buckets);
            let job = Job {
                bucket: bucket.clone(),
                submitter: me.clone(),
                seq,
            };
            match exec.submit(job).await {
                Ok(id) => history.record(&json!({
                    "event": "accepted", "submitter": me, "seq": seq, "bucket": bucket,
                    "id": id, "at_us": wall_us(),
                })),
                Err(e @ (ExecutorError::Unknown | ExecutorError::Busy { .. })) => {
                    history.record(
                        &json!({ "event": "not_accepted", "seq": seq, "why": e.to_string() }),
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        history.record(&json!({ "event": "submitted", "submitter": me, "count": self.count }));
        Ok(())
    }
}
