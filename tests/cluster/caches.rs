//! Cache coherence across node processes: writers and readers on every node, histories
//! checked afterwards (DESIGN: Caches).

// Each async test runs on its own runtime; the lock only keeps whole tests from overlapping.
#![allow(clippy::await_holding_lock)]

use std::time::{Duration, Instant};

use crate::common::caches::{Hammer, check_writes, history, recorded, wait_writes};
use crate::common::{converged_cluster, logs, serial, wait_up_and_connected};
use colony::actors::caches::{CacheSettings, CachesExt, Loader};
use colony::{MemberEvent, MemberState, Node};
use colony_runtime::testkit::TestCluster;

/// Runs `hammer` on three nodes, applies `fault` once they converged, and judges the run:
/// no read went back on any node and, for synchronous runs, none served a value older than a
/// write that had returned before it began; asynchronous runs converge. Returns the cluster
/// for further checks.
fn coherent(hammer: Hammer, fault: impl FnOnce(&mut TestCluster)) -> TestCluster {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = hammer.start(dir.path(), 3);
    fault(&mut cluster);
    assert!(
        wait_writes(&cluster, hammer.writes, Duration::from_secs(90)),
        "writes stalled:\n{}",
        logs(&cluster)
    );
    // Let the readers see the last values, then judge the whole run.
    let (writes, _) = history(&cluster);
    let last = writes.iter().map(|w| w.end_us).max().unwrap_or(0);
    let settled = cluster.wait_until(Duration::from_secs(20), |c| {
        let (_, reads) = history(c);
        reads.iter().filter(|r| r.start_us > last).count() > 100
    });
    assert!(settled.is_some(), "readers stopped:\n{}", logs(&cluster));
    check_writes(&cluster, hammer.synchronous, hammer.writes);
    if !hammer.synchronous {
        // Asynchronous replication converges: every node ends up reading the last values.
        let (writes, _) = history(&cluster);
        let converged = cluster.wait_until(Duration::from_secs(20), |c| {
            let (_, reads) = history(c);
            // Every node's latest read of every key returns the key's last value.
            let mut latest: std::collections::HashMap<(&str, &str), (u64, u64)> =
                Default::default();
            for r in &reads {
                let e = latest
                    .entry((r.node.as_str(), r.key.as_str()))
                    .or_insert((0, 0));
                if r.start_us > e.0 {
                    *e = (r.start_us, r.value);
                }
            }
            let last_value = |key: &str| {
                writes
                    .iter()
                    .filter(|w| w.key == key)
                    .map(|w| w.value)
                    .max()
            };
            latest.values().any(|(start, _)| *start > last)
                && latest.iter().all(|((_, key), (start, value))| {
                    *start <= last || Some(*value) == last_value(key)
                })
        });
        assert!(
            converged.is_some(),
            "asynchronous replication did not converge"
        );
    }
    cluster
}

/// Waits until the nodes have made `n` writes in all.
fn after_writes(cluster: &TestCluster, n: usize) {
    let started = cluster.wait_until(Duration::from_secs(30), |c| history(c).0.len() >= n);
    assert!(started.is_some(), "no writes:\n{}", logs(cluster));
}

#[test]
fn synchronous_invalidation_never_serves_a_value_older_than_a_returned_write() {
    let _serial = serial();
    coherent(Hammer::new("invalidation", true), |_| {});
}

#[test]
fn synchronous_copy_never_serves_a_value_older_than_a_returned_write() {
    let _serial = serial();
    coherent(Hammer::new("copy", true), |_| {});
}

#[test]
fn asynchronous_invalidation_keeps_each_origins_order_and_converges() {
    let _serial = serial();
    coherent(Hammer::new("invalidation", false), |_| {});
}

/// Writers that share keys, on clocks 200 ms ahead, right, and 200 ms behind: a write that
/// starts after another returned is later on every node, whatever the clocks say (issue 9,
/// finding 1).
fn shared_keys_on_skewed_clocks(mode: &'static str) {
    let hammer = Hammer {
        shared_keys: true,
        clock_offsets_ms: vec![200, 0, -200],
        ..Hammer::new(mode, true)
    };
    coherent(hammer, |_| {});
}

#[test]
fn invalidation_writers_sharing_keys_on_clocks_400_ms_apart_never_serve_an_older_value() {
    let _serial = serial();
    shared_keys_on_skewed_clocks("invalidation");
}

#[test]
fn copy_writers_sharing_keys_on_clocks_400_ms_apart_never_serve_an_older_value() {
    let _serial = serial();
    shared_keys_on_skewed_clocks("copy");
}

/// Writers sharing keys on clocks 1.5 s ahead, right, and 1.5 s behind: every pair is further
/// apart than the 1 s a received stamp may be ahead of the receiver's clock, so the slower
/// nodes refuse the faster ones' stamps, and a write that starts after another returned can
/// carry the older stamp. The fast node also empties the cache with `remove_all` after every
/// 20 of its writes, which raises its own removal floor past every write the others make for
/// the next 1.5 to 3 s. No read serves a value older than a write that returned before it
/// began, and no read goes back (issue 9: clocks apart beyond the stamp bound).
fn shared_keys_on_clocks_beyond_the_stamp_bound(mode: &'static str) {
    let hammer = Hammer {
        shared_keys: true,
        clock_offsets_ms: vec![1_500, 0, -1_500],
        writes: 400,
        remove_all_from: Some("n1"),
        ..Hammer::new(mode, true)
    };
    let cluster = coherent(hammer, |_| {});
    // The run reached the paths under test: the fast node emptied the cache 20 times, and the
    // others refused its stamps.
    let emptied = recorded(&cluster, "remove_all").len();
    assert_eq!(emptied, 400 / 20, "remove_all calls of the fast node");
    let reported = cluster.wait_until(Duration::from_secs(20), |c| {
        recorded(c, "coherence").len() == c.len()
    });
    assert!(
        reported.is_some(),
        "every node reports its coherence counters when its writes end"
    );
    let stats = recorded(&cluster, "coherence");
    let refused = |node: &str| {
        stats
            .iter()
            .filter(|s| s["node"] == node)
            .map(|s| s["refused_ahead"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert!(
        refused("n2") > 0 && refused("n3") > 0,
        "the slower nodes refused no stamp: {stats:?}"
    );
}

#[test]
fn invalidation_writers_sharing_keys_on_clocks_beyond_the_stamp_bound_never_serve_an_older_value() {
    let _serial = serial();
    shared_keys_on_clocks_beyond_the_stamp_bound("invalidation");
}

#[test]
fn copy_writers_sharing_keys_on_clocks_beyond_the_stamp_bound_never_serve_an_older_value() {
    let _serial = serial();
    shared_keys_on_clocks_beyond_the_stamp_bound("copy");
}

#[test]
fn a_peer_paused_past_suspicion_serves_nothing_stale_when_it_resumes() {
    let _serial = serial();
    let hammer = Hammer {
        shared_keys: true,
        writes: 250,
        ..Hammer::new("invalidation", true)
    };
    coherent(hammer, |cluster| {
        after_writes(cluster, 60);
        cluster.pause(1);
        // Resumed once another node suspects it (or has declared it down): the writers went
        // on without it, and what it reads from then on is judged with everything else.
        let suspected = cluster.wait_until(Duration::from_secs(10), |c| {
            c.sees(0, 1, MemberState::Suspect) || c.sees(0, 1, MemberState::Down)
        });
        cluster.resume(1);
        assert!(suspected.is_some(), "the paused node was never suspected");
    });
}

#[test]
fn asynchronous_changes_after_a_false_down_verdict_are_applied_or_cleared() {
    let _serial = serial();
    let hammer = Hammer {
        writes: 300,
        ..Hammer::new("invalidation", false)
    };
    coherent(hammer, |cluster| {
        after_writes(cluster, 60);
        // Node 1 keeps running while the others declare it down; then the link heals and it
        // comes back with the same id. The changes made meanwhile must reach it or make it clear.
        cluster.partition(&[&[0, 2], &[1]]).unwrap();
        let down = cluster.wait_until(Duration::from_secs(20), |c| {
            c.sees(0, 1, MemberState::Down) && c.sees(2, 1, MemberState::Down)
        });
        cluster.heal().unwrap();
        assert!(down.is_some(), "the cut node was never declared down");
    });
}

async fn in_process(
    cluster: &colony_runtime::testkit::TestCluster,
    home: &std::path::Path,
    name: &str,
) -> Node {
    colony::node()
        .name(name)
        .home(home)
        .shared_home(cluster.shared_home())
        .bind("127.0.0.1:0")
        .seeds([cluster.addr(0)])
        .cookie("colony-test-cookie")
        .cluster_size(cluster.cluster_size())
        .fault_injection(true)
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_by_a_partition_drops_its_replicated_entries_when_it_rejoins() {
    let _serial = serial();
    let cluster = tokio::task::block_in_place(|| converged_cluster(2));
    let home = tempfile::tempdir().unwrap();
    let node = in_process(&cluster, home.path(), "island").await;
    let db = cluster.shared_home().join("partition-db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("k"), "1").unwrap();
    let loader_db = db.clone();
    let cache = node
        .caches()
        .get_cache::<String, u64>(
            "partitioned",
            Some(Loader::new(move |k: String| {
                let db = loader_db.clone();
                async move {
                    Ok::<u64, String>(
                        std::fs::read_to_string(db.join(k))
                            .map_err(|e| e.to_string())?
                            .parse()
                            .unwrap(),
                    )
                }
            })),
            CacheSettings::replicate_via_invalidation(),
        )
        .unwrap();
    // A node caches nothing until every peer has answered its greeting: wait until it does.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cache.contains_key(&"k".into()) {
        assert!(Instant::now() < deadline, "the cache never warmed up");
        assert_eq!(cache.get(&"k".into()).await.unwrap(), Some(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut events = node.subscribe(64);
    node.set_blocked([cluster.addr(0), cluster.addr(1)].into_iter().collect())
        .await;
    // Meanwhile the value changes underneath: cut off, the node keeps serving its cached
    // entry. That is the stale entry the rejoin must clear.
    std::fs::write(db.join("k"), "2").unwrap();
    assert_eq!(
        cache.get(&"k".into()).await.unwrap(),
        Some(1),
        "cut off, it serves what it has"
    );
    // Wait until this node has declared the others down, then heal.
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.up_members().len() > 1 {
        assert!(
            Instant::now() < deadline,
            "the others were never declared down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.set_blocked(Default::default()).await;
    let rejoined = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(e) = events.recv().await {
            if matches!(e, MemberEvent::NodeRejoined { .. }) {
                return;
            }
        }
    })
    .await;
    assert!(rejoined.is_ok(), "no rejoin after healing");
    // The rejoin cleared the replicated cache: the next read loads the current value.
    let mut value = None;
    for _ in 0..100 {
        value = cache.get(&"k".into()).await.unwrap();
        if value == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(value, Some(2), "a stale entry survived the rejoin");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_paused_peer_holds_synchronous_writers_up_no_longer_than_the_timeout() {
    let _serial = serial();
    let mut cluster = tokio::task::block_in_place(|| converged_cluster(2));
    let home = tempfile::tempdir().unwrap();
    let node = in_process(&cluster, home.path(), "writer").await;
    let timeout = Duration::from_millis(500);
    let cache = node
        .caches()
        .get_cache::<u64, u64>(
            "timed",
            None,
            CacheSettings::replicate_via_copy().replication_timeout(timeout),
        )
        .unwrap();
    wait_up_and_connected(&node, 3, Duration::from_secs(20)).await;
    cache.put(1, 1).await.unwrap();
    assert_eq!(cache.stats().unacknowledged, 0, "every peer acknowledged");

    cluster.pause(1);
    let started = Instant::now();
    cache.put(2, 2).await.unwrap();
    let took = started.elapsed();
    cluster.resume(1);
    assert!(
        took < timeout + Duration::from_millis(500),
        "a paused peer held the writer for {took:?}"
    );
    assert_eq!(
        cache.stats().unacknowledged,
        1,
        "the paused peer was reported"
    );

    tokio::task::block_in_place(|| cluster.kill(1));
    let started = Instant::now();
    cache.put(3, 3).await.unwrap();
    assert!(started.elapsed() < timeout + Duration::from_millis(500));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_from_the_admin_endpoint_empties_flushable_caches_on_every_node() {
    let _serial = serial();
    let cluster = tokio::task::block_in_place(|| converged_cluster(2));
    let home = tempfile::tempdir().unwrap();
    let node = in_process(&cluster, home.path(), "flushed").await;
    let caches = node.caches();
    let flushable = caches
        .get_cache::<u64, u64>("flushable", None, CacheSettings::local())
        .unwrap();
    let kept = caches
        .get_cache::<u64, u64>("kept", None, CacheSettings::local().flushable(false))
        .unwrap();
    flushable.put(1, 1).await.unwrap();
    kept.put(1, 1).await.unwrap();
    wait_up_and_connected(&node, 3, Duration::from_secs(20)).await;
    // Asked on another node, the flush reaches this one.
    let answer = tokio::task::block_in_place(|| cluster.admin(0).action("caches.flush")).unwrap();
    assert_eq!(
        answer["unconfirmed"].as_array().map(Vec::len),
        Some(0),
        "{answer}"
    );
    assert!(!flushable.contains_key(&1));
    assert!(kept.contains_key(&1));
    assert!(tokio::task::block_in_place(|| cluster.admin(0).action("no.such.action")).is_err());
    node.shutdown().await;
}
