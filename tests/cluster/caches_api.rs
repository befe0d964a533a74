//! The cache API on one node: loaders, expiry, bounds, statistics, events and errors.

// Each test runs on its own runtime; the lock only keeps whole tests from overlapping.
#![allow(clippy::await_holding_lock)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::serial;
use colony::Node;
use colony::actors::caches::{CacheError, CacheSettings, CachesExt, EntryEventKind, Loader};
use serde::{Serialize, Serializer};

async fn solo(home: &std::path::Path, max_message_bytes: usize) -> Node {
    colony::node()
        .name("solo")
        .home(home)
        .bind("127.0.0.1:0")
        .cookie("c")
        .max_message_bytes(max_message_bytes)
        .start()
        .await
        .unwrap()
}

fn counting_loader(loads: Arc<AtomicUsize>) -> Loader<u64, String> {
    Loader::new(move |k: u64| {
        let loads = loads.clone();
        async move {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, std::io::Error>(format!("value-{k}"))
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_of_one_key_share_one_load_and_are_counted() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = solo(home.path(), 1 << 20).await;
    let loads = Arc::new(AtomicUsize::new(0));
    let cache = node
        .caches()
        .get_cache(
            "users",
            Some(counting_loader(loads.clone())),
            CacheSettings::replicate_via_invalidation(),
        )
        .unwrap();
    let mut gets = Vec::new();
    for _ in 0..100 {
        let cache = cache.clone();
        gets.push(tokio::spawn(async move { cache.get(&7).await }));
    }
    for g in gets {
        assert_eq!(g.await.unwrap().unwrap().as_deref(), Some("value-7"));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1, "one load per key per node");
    assert_eq!(cache.get(&7).await.unwrap().as_deref(), Some("value-7"));
    let stats = cache.stats();
    assert_eq!(stats.loads, 1);
    assert_eq!(stats.misses, 100);
    assert_eq!(stats.hits, 1);
    assert!(stats.load_micros >= 50_000);
    node.shutdown().await;
}

#[tokio::test]
async fn entries_expire_after_write_and_after_access() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = solo(home.path(), 1 << 20).await;
    let ttl = Duration::from_millis(200);
    let written = node
        .caches()
        .get_cache::<u64, u64>("ttl", None, CacheSettings::local().expire_after_write(ttl))
        .unwrap();
    let idle = node
        .caches()
        .get_cache::<u64, u64>("tti", None, CacheSettings::local().expire_after_access(ttl))
        .unwrap();
    written.put(1, 1).await.unwrap();
    idle.put(1, 1).await.unwrap();
    // Reading keeps the access-expiring entry alive past the write-expiring one.
    for _ in 0..6 {
        tokio::time::sleep(ttl / 4).await;
        assert_eq!(idle.get(&1).await.unwrap(), Some(1));
    }
    assert_eq!(written.get(&1).await.unwrap(), None, "expired after write");
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(idle.get(&1).await.unwrap(), None, "expired after access");
    assert!(written.stats().evictions + idle.stats().evictions >= 1);
    node.shutdown().await;
}

#[tokio::test]
async fn max_entries_bounds_the_cache_and_counts_evictions() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = solo(home.path(), 1 << 20).await;
    let cache = node
        .caches()
        .get_cache::<u64, u64>("bounded", None, CacheSettings::local().max_entries(100))
        .unwrap();
    for i in 0..1_000 {
        cache.put(i, i).await.unwrap();
    }
    assert!(cache.len() <= 100, "{} entries", cache.len());
    assert!(cache.stats().evictions >= 900);
    node.shutdown().await;
}

#[tokio::test]
async fn writes_reads_and_events_on_one_node() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = solo(home.path(), 1 << 20).await;
    let cache = node
        .caches()
        .get_cache::<String, u32>("plain", None, CacheSettings::replicate_via_copy())
        .unwrap();
    let mut events = cache.subscribe(16);
    let k = "k".to_string();
    assert_eq!(cache.put_if_absent(k.clone(), 1).await.unwrap(), None);
    assert_eq!(cache.put_if_absent(k.clone(), 2).await.unwrap(), Some(1));
    assert!(!cache.replace(k.clone(), &5, 6).await.unwrap());
    assert!(cache.replace(k.clone(), &1, 3).await.unwrap());
    assert!(cache.contains_key(&k));
    assert_eq!(cache.keys(), vec![k.clone()]);
    assert_eq!(
        cache
            .get_with(&"other".to_string(), || async { Ok::<_, String>(9) })
            .await
            .unwrap(),
        9
    );
    cache.remove(&k).await.unwrap();
    assert_eq!(cache.get(&k).await.unwrap(), None);
    cache.remove_all().await.unwrap();
    assert!(cache.is_empty());
    let kinds: Vec<EntryEventKind> = std::iter::from_fn(|| events.try_recv())
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EntryEventKind::Added,
            EntryEventKind::Updated,
            EntryEventKind::Added,
            EntryEventKind::Removed
        ]
    );
    // The same name gives the same cache; other types are refused.
    let again = node
        .caches()
        .get_cache::<String, u32>("plain", None, CacheSettings::local())
        .unwrap();
    assert!(again.settings().is_replicated(), "the first settings stay");
    let err = node
        .caches()
        .get_cache::<u64, u32>("plain", None, CacheSettings::local())
        .err()
        .unwrap();
    assert!(matches!(err, CacheError::TypeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("plain"));
    node.shutdown().await;
}

/// A value whose serialization always fails.
#[derive(Clone, serde::Deserialize)]
struct Unsendable;

impl Serialize for Unsendable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value cannot cross the wire",
        ))
    }
}

#[tokio::test]
async fn unserializable_and_oversized_values_fail_at_put_and_change_nothing() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = solo(home.path(), 64 * 1024).await;
    let odd = node
        .caches()
        .get_cache::<u64, Unsendable>("odd", None, CacheSettings::replicate_via_invalidation())
        .unwrap();
    let err = odd.put(1, Unsendable).await.unwrap_err();
    assert!(
        matches!(err, CacheError::Serialize { what: "value", .. }),
        "{err}"
    );
    assert!(!odd.contains_key(&1));
    let big = node
        .caches()
        .get_cache::<u64, Vec<u8>>("big", None, CacheSettings::replicate_via_copy())
        .unwrap();
    let err = big.put(1, vec![0; 100 * 1024]).await.unwrap_err();
    assert!(matches!(err, CacheError::TooLarge { .. }), "{err}");
    assert!(!big.contains_key(&1));
    big.put(2, vec![0; 1024]).await.unwrap();
    node.shutdown().await;
}

#[tokio::test]
async fn a_cached_reference_is_supplied_once_until_reset() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = solo(home.path(), 1 << 20).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let config = node
        .caches()
        .get_cached_reference(
            "config",
            Loader::new(move |()| {
                let n = c.fetch_add(1, Ordering::SeqCst);
                async move { Ok::<_, String>(n) }
            }),
            CacheSettings::replicate_via_invalidation(),
        )
        .unwrap();
    assert_eq!(config.get().await.unwrap(), 0);
    assert_eq!(config.get().await.unwrap(), 0);
    config.reset().await.unwrap();
    assert_eq!(config.get().await.unwrap(), 1);
    node.shutdown().await;
}
