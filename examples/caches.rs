//! Cluster caches in one process: a loader-backed invalidation cache, a copy cache, a cached
//! reference, statistics and entry events.
//!
//! Run it with `cargo run --example caches`. On a cluster the same code keeps every node's
//! entries coherent: see `docs/caches.md`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use colony::{CacheSettings, CachesExt, Loader};

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

    // The system of record: a slow lookup the cache saves us from.
    let lookups = Arc::new(AtomicU64::new(0));
    let counted = lookups.clone();
    let users = node.caches().get_cache::<u64, String>(
        "com.example.users",
        Some(Loader::new(move |id: u64| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, std::io::Error>(format!("user #{id}"))
            }
        })),
        // Values stay on each node; a change anywhere removes the key everywhere else.
        CacheSettings::replicate_via_invalidation()
            .synchronous()
            .expire_after_write(Duration::from_secs(600))
            .max_entries(10_000),
    )?;
    let mut events = users.subscribe(64);

    // Ten concurrent reads of a cold key share one lookup.
    let reads: Vec<_> = (0..10)
        .map(|_| {
            let users = users.clone();
            tokio::spawn(async move { users.get(&42).await })
        })
        .collect();
    for read in reads {
        read.await??;
    }
    println!(
        "10 concurrent reads, {} lookup(s)",
        lookups.load(Ordering::Relaxed)
    );

    // Write the system of record first, then the cache: the write replaces the entry here and
    // invalidates it on every other node before `put` returns.
    users.put(42, "user #42 (renamed)".into()).await?;
    println!("after put: {:?}", users.get(&42).await?);
    users.remove(&42).await?;
    println!("after remove, reloaded: {:?}", users.get(&42).await?);
    let kinds: Vec<_> = std::iter::from_fn(|| events.try_recv())
        .map(|e| e.kind)
        .collect();
    println!("entry events: {kinds:?}");
    println!("statistics: {:?}", users.stats());

    // A copy cache sends values to every node; a cached reference holds one value.
    let flags = node.caches().get_cache::<String, bool>(
        "com.example.flags",
        None,
        CacheSettings::replicate_via_copy(),
    )?;
    flags.put("dark-mode".into(), true).await?;
    let config = node.caches().get_cached_reference(
        "com.example.config",
        Loader::new(|()| async { Ok::<_, String>("loaded once".to_string()) }),
        CacheSettings::replicate_via_invalidation(),
    )?;
    println!("config: {}", config.get().await?);

    node.shutdown().await;
    Ok(())
}
