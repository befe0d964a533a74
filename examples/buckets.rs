//! A bucketed executor in one process: the seeds' example of repository events, keyed by
//! repository id, processed in order per repository, in batches, with a deleted repository
//! skipped and the fencing token handed to the store.
//!
//! Run it with `cargo run --example buckets`. On a cluster the same code spreads repositories
//! over every node, one worker per repository at a time: see `docs/executor.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colony::{BucketedExecutorSettings, ConcurrencyExt, ConcurrencyPolicy};
use serde::{Deserialize, Serialize};

/// Something to do for one repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum RepoEvent {
    /// Index a pushed commit.
    Push { repo: u64, commit: String },
    /// The repository was deleted: later events for it are skipped.
    Delete { repo: u64 },
}

impl RepoEvent {
    fn repo(&self) -> u64 {
        match self {
            RepoEvent::Push { repo, .. } | RepoEvent::Delete { repo } => *repo,
        }
    }
}

/// The index the processor writes: per repository, the commits indexed and the highest token
/// written (a write with a lower token comes from a worker that was cut off: refused).
#[derive(Default)]
struct Index {
    commits: BTreeMap<u64, Vec<String>>,
    tokens: BTreeMap<u64, u64>,
    deleted: BTreeSet<u64>,
}

impl Index {
    fn apply(&mut self, repo: u64, token: u64, events: &[RepoEvent]) -> Result<(), String> {
        let last = self.tokens.entry(repo).or_default();
        if token < *last {
            return Err(format!("stale token {token} for repository {repo}"));
        }
        *last = token;
        for event in events {
            match event {
                RepoEvent::Push { .. } if self.deleted.contains(&repo) => {}
                RepoEvent::Push { commit, .. } => {
                    self.commits.entry(repo).or_default().push(commit.clone())
                }
                RepoEvent::Delete { .. } => {
                    self.deleted.insert(repo);
                    self.commits.remove(&repo);
                }
            }
        }
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

    let index = Arc::new(Mutex::new(Index::default()));
    let store = index.clone();
    let events = node.concurrency().bucketed_executor(
        "com.example.repo-events",
        BucketedExecutorSettings::new(
            // One bucket per repository: its events run in order, one batch at a time.
            |event: &RepoEvent| event.repo().to_string(),
            move |repo: String, batch: Vec<RepoEvent>, token: u64| {
                let store = store.clone();
                async move {
                    let repo: u64 = repo.parse().map_err(|_| "bad bucket".to_owned())?;
                    println!("repository {repo}: {} event(s), token {token}", batch.len());
                    store.lock().unwrap().apply(repo, token, &batch)
                }
            },
        )
        .batch_size(10)
        .max_attempts(5)
        .retry_backoff(Duration::from_millis(50), Duration::from_secs(2))
        .max_concurrency(4, ConcurrencyPolicy::PerCluster)
        .dead_letters(|dead| eprintln!("gave up on repository {}: {:?}", dead.bucket, dead.tasks)),
    )?;

    for n in 0..5 {
        for repo in [1, 2, 3] {
            let commit = format!("c{n}");
            events.submit(RepoEvent::Push { repo, commit }).await?;
        }
    }
    events.submit(RepoEvent::Delete { repo: 2 }).await?;
    events
        .submit(RepoEvent::Push {
            repo: 2,
            commit: "after-delete".into(),
        })
        .await?;

    while events.stats().queued > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    {
        let index = index.lock().unwrap();
        for (repo, commits) in &index.commits {
            println!("repository {repo}: indexed {commits:?}");
            assert_eq!(
                commits,
                &["c0", "c1", "c2", "c3", "c4"],
                "in submission order"
            );
        }
        assert!(
            !index.commits.contains_key(&2),
            "the deleted repository is skipped"
        );
    }
    println!("{:?}", events.stats());
    node.shutdown().await;
    Ok(())
}
