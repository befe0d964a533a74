//! A bucketed executor under load: every node opens the same executor, submits `count`
//! numbered tasks round-robin over `buckets` buckets, one submit at a time, and records each
//! accepted task; its processor records every batch it ran (bucket, token, tasks, node, start
//! and end). The checkers of `testkit::check` judge the merged histories.

use std::path::PathBuf;
use std::time::Duration;

use colony::{BucketedExecutorSettings, ConcurrencyExt, ConcurrencyPolicy, ExecutorError, Node};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::history::{History, wall_us};

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
        let (me, work, ran) = (
            node.name().to_owned(),
            Duration::from_millis(self.work_ms),
            history.clone(),
        );
        let settings = BucketedExecutorSettings::new(
            |job: &Job| job.bucket.clone(),
            move |bucket: String, jobs: Vec<Job>, token: u64| {
                let (me, ran) = (me.clone(), ran.clone());
                async move {
                    let start_us = wall_us();
                    tokio::time::sleep(work).await;
                    let tasks: Vec<(String, u64)> =
                        jobs.into_iter().map(|j| (j.submitter, j.seq)).collect();
                    ran.record(&json!({
                        "event": "batch", "node": me, "bucket": bucket, "token": token,
                        "tasks": tasks, "start_us": start_us, "end_us": wall_us(),
                    }));
                    Ok::<(), std::io::Error>(())
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
        let me = node.name().to_owned();
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
