//! Scripted workloads a node runs for the project's multi-process tests and benchmarks
//! (`colony node --workload FILE`, hidden). Each writes what happened, one JSON line per event,
//! so that checkers can judge the run afterwards.

mod cache_hammer;
mod chatter;
mod exec_hammer;
mod history;
mod lock_hammer;
mod lock_probe;
mod sched_hammer;
mod sink;

use std::path::Path;

use anyhow::Context;
use colony::Node;
use serde::Deserialize;

/// A workload, read from a JSON file.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Workload {
    /// Clients that take, hold and release locks in a loop.
    LockHammer(lock_hammer::LockHammer),
    /// Probers that record when some node answered for each lock name.
    LockProbe(lock_probe::LockProbe),
    /// Writers and a reader on one replicated cache.
    CacheHammer(cache_hammer::CacheHammer),
    /// Numbered messages on one cluster channel, published and received.
    Chatter(chatter::Chatter),
    /// Numbered tasks submitted to one bucketed executor, and the batches that ran them.
    ExecHammer(exec_hammer::ExecHammer),
    /// Once-per-cluster interval jobs, their runs and their run history.
    SchedHammer(sched_hammer::SchedHammer),
}

impl Workload {
    pub fn load(path: &Path) -> anyhow::Result<Workload> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read workload {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parse workload {}", path.display()))
    }

    pub async fn run(self, node: Node) {
        let result = match self {
            Workload::LockHammer(w) => w.run(node).await,
            Workload::LockProbe(w) => w.run(node).await,
            Workload::CacheHammer(w) => w.run(node).await,
            Workload::Chatter(w) => w.run(node).await,
            Workload::ExecHammer(w) => w.run(node).await,
            Workload::SchedHammer(w) => w.run(node).await,
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "workload failed");
        }
    }
}
