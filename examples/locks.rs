//! Cluster locks in one process: a named lock, fencing tokens, and entity locks.
//!
//! Run it with `cargo run --example locks`. The same code runs unchanged on a node of a
//! larger cluster: start it with seeds and a cluster size (see `docs/locks.md`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colony::LocksExt;

/// A store that refuses writes carrying a token lower than the highest it has seen: what every
/// store written under a cluster lock should do, so that a holder that stalled past its lease
/// cannot overwrite newer work.
#[derive(Default)]
struct FencedStore {
    last_token: Mutex<HashMap<String, u64>>,
}

impl FencedStore {
    fn write(&self, key: &str, token: u64) -> Result<(), String> {
        let mut last = self.last_token.lock().unwrap();
        let seen = last.entry(key.to_owned()).or_insert(0);
        if token < *seen {
            return Err(format!("stale token {token} < {seen}"));
        }
        *seen = token;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let home = tempfile::tempdir()?;
    let node = colony::node()
        .name("example")
        .home(home.path())
        .bind("127.0.0.1:0")
        .cookie("example-cookie")
        .start()
        .await?;
    let store = Arc::new(FencedStore::default());

    // A named lock: one holder in the whole cluster at a time.
    let report = node.locks().lock_for_name("com.example.nightly-report")?;
    let guard = report.lock().await?;
    println!(
        "holding {} with fencing token {}",
        guard.name(),
        guard.token()
    );
    store.write("report", guard.token())?;
    // Not re-entrant: even this task cannot take it twice.
    assert!(report.try_lock().await?.is_none());
    guard.unlock().await?;

    // Entity locks: one lock per repository id; different ids run concurrently.
    let repos = node.locks().entity_lock::<u64>("com.example.repository")?;
    let mut tasks = Vec::new();
    for id in [1u64, 2, 3, 1, 2, 3] {
        let (repos, store) = (repos.clone(), store.clone());
        tasks.push(tokio::spawn(async move {
            repos
                .with_lock(&id, async |guard| {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    store.write(&format!("repo-{id}"), guard.token())
                })
                .await
        }));
    }
    for task in tasks {
        task.await??
            .map_err(|e| format!("fenced write refused: {e}"))?;
    }
    println!("six repository updates ran, one at a time per repository");

    // What the node keeps once nothing is held: nothing.
    println!("lock state left: {:?}", node.locks().stats().await);
    node.shutdown().await;
    Ok(())
}
