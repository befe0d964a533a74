//! Writers and a reader on one cache: each node writes its own keys (or, with `shared_keys`,
//! keys every node writes in turn), with increasing values, first to a "database" in the shared
//! home and then to the cache; and reads every node's keys through the cache, whose loader
//! reads the database. Every write and read is recorded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use colony::Node;
use colony::actors::caches::{Cache, CacheSettings, CachesExt, Loader};
use serde::{Deserialize, Deserializer};
use serde_json::json;

use super::history::{History, wall_us};

#[derive(Debug, Clone, Deserialize)]
pub struct CacheHammer {
    /// How the cache replicates: `local`, `invalidation` or `copy`.
    mode: HammerMode,
    /// Synchronous replication (else asynchronous).
    synchronous: bool,
    /// Keys each node writes; at least one.
    #[serde(deserialize_with = "at_least_one")]
    keys_per_node: usize,
    /// Pause between two writes of this node.
    write_every_ms: u64,
    /// Pause between two reads of this node.
    read_every_ms: u64,
    /// Stop writing after this many writes per node (reads go on).
    writes: u64,
    /// Every node writes the same keys, one write of a key after another cluster-wide (a file
    /// lock per key in the database orders them), each writing the key's next value.
    #[serde(default)]
    shared_keys: bool,
    /// The node (by name) that also empties the whole cache with `remove_all` after every
    /// `remove_all_every` of its writes; none by default.
    #[serde(default)]
    remove_all_from: Option<String>,
    /// See `remove_all_from`.
    #[serde(default = "default_remove_all_every")]
    remove_all_every: u64,
    /// The cache's name (default `hammer`).
    #[serde(default = "default_cache")]
    cache: String,
    /// The database directory, relative to the shared home.
    db: PathBuf,
    /// JSON-lines history file, relative to the local home.
    history: PathBuf,
}

/// The replication mode of the hammered cache, by its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum HammerMode {
    Local,
    Invalidation,
    Copy,
}

fn default_remove_all_every() -> u64 {
    20
}

fn default_cache() -> String {
    "hammer".to_owned()
}

fn at_least_one<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    match usize::deserialize(deserializer)? {
        0 => Err(serde::de::Error::custom(
            "keys_per_node must be at least 1: every node writes its own keys",
        )),
        n => Ok(n),
    }
}

fn read_db(db: &Path, key: &str) -> std::io::Result<u64> {
    std::fs::read_to_string(db.join(key))?
        .trim()
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Waits for this node's turn to write `key`: an exclusive lock on `.{key}.lock` in the database,
/// held while the returned file is open.
async fn take_turn(db: &Path, key: &str) -> std::io::Result<std::fs::File> {
    let path = db.join(format!(".{key}.lock"));
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::create(path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(std::io::Error::other)?
}

fn write_db(db: &Path, key: &str, value: u64) -> std::io::Result<()> {
    let tmp = db.join(format!(".{key}.tmp"));
    std::fs::write(&tmp, value.to_string())?;
    std::fs::rename(tmp, db.join(key))
}

impl CacheHammer {
    pub async fn run(self, node: Node) -> anyhow::Result<()> {
        let db = node.shared_home().root().join(&self.db);
        std::fs::create_dir_all(&db)?;
        let history = History::open(&node.local_home().root().join(&self.history))?;
        let settings = match self.mode {
            HammerMode::Local => CacheSettings::local(),
            HammerMode::Invalidation => CacheSettings::replicate_via_invalidation(),
            HammerMode::Copy => CacheSettings::replicate_via_copy(),
        };
        let settings = if self.synchronous {
            settings.synchronous()
        } else {
            settings.asynchronous()
        };
        let loader_db = db.clone();
        let cache: Cache<String, u64> = node.caches().get_cache(
            &self.cache,
            Some(Loader::new(move |key: String| {
                let db = loader_db.clone();
                async move { read_db(&db, &key) }
            })),
            settings,
        )?;
        // One task for both: aborting the workload stops the writer along with the reader.
        tokio::join!(
            self.write(&node, &cache, &db, &history),
            self.read(&node, &cache, &db, &history),
        );
        Ok(())
    }

    async fn write(&self, node: &Node, cache: &Cache<String, u64>, db: &Path, history: &History) {
        let owner = if self.shared_keys {
            "shared"
        } else {
            node.name()
        };
        let keys: Vec<String> = (0..self.keys_per_node)
            .map(|i| format!("{owner}-{i}"))
            .collect();
        for n in 1..=self.writes {
            let key = &keys[n as usize % keys.len()];
            // Shared keys: held until the cache write returned, so the next write of the key
            // (from any node) starts after this one returned, and values only grow.
            let turn = match self.shared_keys {
                true => match take_turn(db, key).await {
                    Ok(turn) => Some(turn),
                    Err(e) => {
                        tracing::error!(error = %e, "key lock failed");
                        continue;
                    }
                },
                false => None,
            };
            let value = match &turn {
                Some(_) => read_db(db, key).unwrap_or(0) + 1,
                None => n,
            };
            if let Err(e) = write_db(db, key, value) {
                tracing::error!(error = %e, "database write failed");
                continue;
            }
            let start_us = wall_us();
            // Alternate the two kinds of change: a put of the new value, or a removal that
            // makes every node load it from the database.
            let op = if n % 2 == 0 { "put" } else { "remove" };
            let result = if op == "put" {
                cache.put(key.clone(), value).await
            } else {
                cache.remove(key).await
            };
            history.record(&json!({
                "event": "write", "op": op, "key": key, "value": value, "node": node.name(),
                "start_us": start_us, "end_us": wall_us(), "ok": result.is_ok(),
            }));
            drop(turn);
            if self.remove_all_from.as_deref() == Some(node.name())
                && n % self.remove_all_every.max(1) == 0
            {
                // The system of record keeps its values: every node loads them again.
                let start_us = wall_us();
                let result = cache.remove_all().await;
                history.record(&json!({
                    "event": "remove_all", "node": node.name(),
                    "start_us": start_us, "end_us": wall_us(), "ok": result.is_ok(),
                }));
            }
            tokio::time::sleep(Duration::from_millis(self.write_every_ms)).await;
        }
        // What the coherence core refused and cleared, for tests that must reach those paths.
        if let Some(stats) = node.caches().coherence_stats() {
            history.record(&json!({
                "event": "coherence", "node": node.name(),
                "refused_ahead": stats.refused_ahead, "clears": stats.clears,
            }));
        }
    }

    async fn read(&self, node: &Node, cache: &Cache<String, u64>, db: &Path, history: &History) {
        let mut round = 0usize;
        loop {
            let mut keys: Vec<String> = std::fs::read_dir(db)
                .map(|dir| {
                    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .filter(|n| !n.starts_with('.'))
                        .collect()
                })
                .unwrap_or_default();
            keys.sort();
            if let Some(key) = keys.get(round % keys.len().max(1)) {
                let start_us = wall_us();
                let value = cache.get(key).await;
                history.record(&json!({
                    "event": "read", "key": key, "node": node.name(),
                    "value": value.as_ref().ok().cloned().flatten(),
                    "start_us": start_us, "end_us": wall_us(),
                }));
            }
            round += 1;
            tokio::time::sleep(Duration::from_millis(self.read_every_ms)).await;
        }
    }
}
