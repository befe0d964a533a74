//! Cluster messages: each node says hello (number 0) on one channel until it has heard hello
//! from `peers` other nodes (so every channel is open), then publishes one message over the
//! channel's limit and `count` numbered messages, one after another. It records every message
//! it receives (with the authenticated sender) and every publish.

use std::path::PathBuf;
use std::time::Duration;

use colony::Node;
use colony_runtime::messaging::ChannelSettings;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::history::{History, wall_us};

#[derive(Debug, Clone, Deserialize)]
pub struct Chatter {
    /// The channel.
    channel: String,
    /// Other nodes to wait for before publishing.
    peers: usize,
    /// Messages this node publishes.
    count: u64,
    /// Pause between two publishes.
    every_ms: u64,
    /// The channel's size limit, in bytes.
    max_bytes: usize,
    /// JSON-lines history file, relative to the local home.
    history: PathBuf,
}

/// One message: who says it sent it, and its number.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Said {
    name: String,
    n: u64,
    padding: String,
}

impl Chatter {
    pub async fn run(self, node: Node) -> anyhow::Result<()> {
        let history = History::open(&node.local_home().root().join(&self.history))?;
        let channel = node.messaging().channel_with::<Said>(
            &self.channel,
            ChannelSettings {
                max_bytes: self.max_bytes,
                ..ChannelSettings::default()
            },
        )?;
        let mut inbox = channel.subscribe();
        let (me, received, members) = (node.name().to_owned(), history.clone(), node.clone());
        let heard = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        let hearing = heard.clone();
        tokio::spawn(async move {
            while let Some(message) = inbox.recv().await {
                hearing.lock().unwrap().insert(message.value.name.clone());
                // The authenticated sender, by its member name.
                let from = members
                    .members()
                    .into_iter()
                    .find(|m| m.id == message.from)
                    .map_or_else(|| message.from.to_string(), |m| m.name);
                received.record(&json!({
                    "event": "received", "node": me, "from": from,
                    "claimed": message.value.name, "n": message.value.n, "at_us": wall_us(),
                }));
            }
        });
        // A hello heard from a node proves its channel open; one more hello after hearing
        // everyone reaches every node whose channel is open.
        let hello = Said {
            name: node.name().to_owned(),
            n: 0,
            padding: String::new(),
        };
        loop {
            let everyone = heard.lock().unwrap().len() >= self.peers;
            channel.publish(&hello).await?;
            if everyone {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let too_big = Said {
            name: node.name().to_owned(),
            n: 0,
            padding: "x".repeat(self.max_bytes),
        };
        let refused = channel.publish(&too_big).await;
        history.record(&json!({
            "event": "oversized", "node": node.name(), "refused": refused.is_err(),
        }));
        for n in 1..=self.count {
            let said = Said {
                name: node.name().to_owned(),
                n,
                padding: String::new(),
            };
            let published = channel.publish(&said).await?;
            history.record(&json!({
                "event": "published", "node": node.name(), "n": n,
                "delivered": published.delivered, "unconfirmed": published.unconfirmed,
            }));
            tokio::time::sleep(Duration::from_millis(self.every_ms)).await;
        }
        let stats = node.messaging().stats();
        history.record(&json!({ "event": "done", "node": node.name(), "stats": stats }));
        Ok(())
    }
}
