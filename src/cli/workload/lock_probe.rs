//! A prober that asks for lock names without waiting, over and over, and records when some
//! node answered for them: what a new client would have found. The rolling-restart bench
//! (`benches/locks/rolling.rs`) merges every node's records to find, per name, the longest time
//! no node could grant it.
//!
//! An answer is a grant (released at once) or "someone else holds it": either way the name's
//! owner served the request. Errors (no entitled owner, unreachable owner) are not answers.
//! Each name has `probers` tasks, each asking every `period_ms` (a `try_lock` that meets no
//! owner retries with backoff, so several staggered tasks keep the resolution near the period).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colony::actors::locks::LockError;
use colony::{ClusterLock, LocksExt, Node};
use serde::Deserialize;
use serde_json::json;

use super::history::{History, wall_us};

/// An open interval is recorded once it spans this long (microseconds), so that a stopped
/// prober leaves out at most this much of what it saw.
const INTERVAL_US: u64 = 1_000_000;

#[derive(Debug, Clone, Deserialize)]
pub struct LockProbe {
    /// Lock names to probe.
    names: Vec<String>,
    /// Tasks per name.
    probers: usize,
    /// Pause between two probes of one task.
    period_ms: u64,
    /// Answers further apart than this (milliseconds) start a new interval.
    gap_ms: u64,
    /// JSON-lines history file, relative to the node's local home.
    history: PathBuf,
}

/// One name's current interval of answers, in wall-clock microseconds.
struct Answered {
    from: u64,
    last: u64,
}

impl LockProbe {
    pub async fn run(self, node: Node) -> anyhow::Result<()> {
        let history = History::open(&node.local_home().root().join(&self.history))?;
        let me = Arc::new(self);
        let mut tasks = Vec::new();
        for name in &me.names {
            let lock = node.locks().lock_for_name(name)?;
            let answered = Arc::new(Mutex::new(None::<Answered>));
            for prober in 0..me.probers {
                let (me, node, history, lock, answered) = (
                    me.clone(),
                    node.clone(),
                    history.clone(),
                    lock.clone(),
                    answered.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    // Staggered, so that the tasks of a name do not probe in step.
                    let offset = me.period_ms * prober as u64 / me.probers as u64;
                    tokio::time::sleep(Duration::from_millis(offset)).await;
                    me.probe(&node, &lock, &history, &answered).await;
                }));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    }

    async fn probe(
        &self,
        node: &Node,
        lock: &ClusterLock,
        history: &History,
        answered: &Mutex<Option<Answered>>,
    ) {
        loop {
            let ok = match lock.try_lock().await {
                Ok(Some(guard)) => {
                    let _ = guard.unlock().await;
                    true
                }
                Ok(None) => true,
                Err(LockError::ShuttingDown) => return,
                Err(_) => false,
            };
            if ok {
                self.answered(node, lock.name(), history, answered, wall_us());
            }
            tokio::time::sleep(Duration::from_millis(self.period_ms)).await;
        }
    }

    /// Extends the name's interval with an answer at `now`, recording the interval when a gap
    /// ends it or when it grew long.
    fn answered(
        &self,
        node: &Node,
        name: &str,
        history: &History,
        answered: &Mutex<Option<Answered>>,
        now: u64,
    ) {
        let record = |from: u64, to: u64| {
            history.record(&json!({
                "event": "answered", "name": name, "node": node.name(), "from_us": from, "to_us": to,
            }));
        };
        let mut answered = answered.lock().unwrap_or_else(|e| e.into_inner());
        let current = answered.get_or_insert(Answered {
            from: now,
            last: now,
        });
        if now.saturating_sub(current.last) > self.gap_ms * 1000 {
            record(current.from, current.last);
            current.from = now;
        }
        current.last = current.last.max(now);
        if current.last - current.from >= INTERVAL_US {
            record(current.from, current.last);
            current.from = current.last;
        }
    }
}
