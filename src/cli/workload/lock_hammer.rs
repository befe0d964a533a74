//! Clients that take, hold and release locks in a loop, recording every hold.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use colony::{LocksExt, Node};
use serde::Deserialize;
use serde_json::json;

use super::history::{History, wall_us, wall_us_of};
use super::sink::FencedSink;

#[derive(Debug, Clone, Deserialize)]
pub struct LockHammer {
    /// Lock names the clients cycle through.
    names: Vec<String>,
    /// Concurrent clients on this node.
    clients: usize,
    /// How long a client holds a lock (its "work").
    hold_ms: u64,
    /// Pause between two holds of one client.
    pause_ms: u64,
    /// JSON-lines history file, relative to the node's local home.
    history: PathBuf,
    /// A fenced sink directory each hold writes to with its token, relative to the shared home.
    sink: Option<PathBuf>,
}

impl LockHammer {
    pub async fn run(self, node: Node) -> anyhow::Result<()> {
        let history = History::open(&node.local_home().root().join(&self.history))?;
        let sink = FencedSink::shared(&node, self.sink.as_deref())?;
        let me = Arc::new(self);
        let mut clients = Vec::new();
        for client in 0..me.clients {
            let (me, node, history, sink) =
                (me.clone(), node.clone(), history.clone(), sink.clone());
            clients.push(tokio::spawn(async move {
                me.client(client, node, history, sink).await;
            }));
        }
        for c in clients {
            let _ = c.await;
        }
        Ok(())
    }

    async fn client(
        &self,
        client: usize,
        node: Node,
        history: History,
        sink: Option<Arc<FencedSink>>,
    ) {
        let locks = node.locks();
        for round in 0.. {
            let name = &self.names[(client + round) % self.names.len()];
            let lock = match locks.lock_for_name(name) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "bad lock name in workload");
                    return;
                }
            };
            let guard = match lock.lock().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(error = %e, "lock failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let token = guard.token();
            history.record(&json!({
                "event": "acquired", "name": name, "token": token, "node": node.name(),
                "client": client, "at_us": wall_us(), "valid_until_us": wall_us_of(guard.valid_until()),
            }));
            let lost = tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(self.hold_ms)) => false,
                () = guard.lost() => true,
            };
            if lost {
                history.record(&json!({
                    "event": "lost", "name": name, "token": token, "node": node.name(), "at_us": wall_us(),
                }));
            }
            if let Some(sink) = &sink {
                // Write even after a loss: the sink's fencing is what keeps a stale holder out.
                let accepted = sink.write(name, token).unwrap_or(false);
                history.record(&json!({
                    "event": "write", "name": name, "token": token, "node": node.name(),
                    "accepted": accepted, "lost": lost || guard.is_lost(), "at_us": wall_us(),
                }));
            }
            // Stop relying on the lock before asking to release it.
            history.record(&json!({
                "event": "released", "name": name, "token": token, "node": node.name(),
                "at_us": wall_us(), "valid_until_us": wall_us_of(guard.valid_until()),
            }));
            let _ = guard.unlock().await;
            tokio::time::sleep(Duration::from_millis(self.pause_ms)).await;
        }
    }
}
