//! The lock API in one process: names, namespaces, waiting, dropping, re-entrancy, residue and
//! a lease lost to a partition.

// Each test runs on its own runtime; the lock only keeps whole tests from overlapping.
#![allow(clippy::await_holding_lock)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::common::serial;
use colony::actors::locks::{LockSettings, NameError, UnlockError};
use colony::{LocksExt, Node, Primitives};

const LEASE: Duration = Duration::from_millis(1000);

async fn solo(home: &std::path::Path) -> Node {
    colony::node_with(Primitives {
        locks: LockSettings { lease: LEASE },
        ..Primitives::default()
    })
    .name("solo")
    .home(home)
    .bind("127.0.0.1:0")
    .cookie("c")
    .start()
    .await
    .unwrap()
}

#[tokio::test]
async fn names_and_namespaces_are_checked() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = solo(home.path()).await;
    let locks = node.locks();
    assert_eq!(locks.lock_for_name("").err(), Some(NameError::Empty));
    assert_eq!(
        locks.lock_for_name(&"n".repeat(256)).err(),
        Some(NameError::TooLong { len: 256 })
    );
    assert!(locks.lock_for_name(&"n".repeat(255)).is_ok());
    let reserved = locks.entity_lock::<u64>("colony.internal").err().unwrap();
    assert!(reserved.to_string().contains("reserved"), "{reserved}");
    node.shutdown().await;
}

#[tokio::test]
async fn a_held_lock_is_not_re_entrant_and_passes_on_when_dropped() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = solo(home.path()).await;
    let lock = node.locks().lock_for_name("report").unwrap();
    let first = lock.try_lock().await.unwrap().expect("free lock");
    // Not re-entrant: the same task, the same node, still has to wait.
    assert!(lock.try_lock().await.unwrap().is_none());
    let started = Instant::now();
    assert!(
        lock.try_lock_for(Duration::from_millis(200))
            .await
            .unwrap()
            .is_none()
    );
    assert!(started.elapsed() >= Duration::from_millis(200));

    let waiter = {
        let lock = lock.clone();
        tokio::spawn(async move { lock.lock().await })
    };
    let token = first.token();
    drop(first); // no unlock: the drop releases
    let second = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("waiter got the dropped lock")
        .unwrap()
        .unwrap();
    assert!(second.token() > token);
    second.unlock().await.unwrap();
    node.shutdown().await;
}

#[tokio::test]
async fn a_dropped_wait_is_withdrawn_and_never_granted() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = solo(home.path()).await;
    let lock = node.locks().lock_for_name("queue").unwrap();
    let holder = lock.try_lock().await.unwrap().unwrap();
    let waiter = {
        let lock = lock.clone();
        tokio::spawn(async move { lock.try_lock_for(Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    waiter.abort();
    let _ = waiter.await;
    holder.unlock().await.unwrap();
    // Had the aborted wait stayed queued, it would now hold the lock for a whole lease.
    let mut free = None;
    for _ in 0..50 {
        free = lock.try_lock().await.unwrap();
        if free.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(free.is_some(), "the dropped wait was granted the lock");
    node.shutdown().await;
}

#[tokio::test]
async fn a_guard_held_past_several_leases_is_renewed_not_lost() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = solo(home.path()).await;
    let guard = node
        .locks()
        .lock_for_name("long")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let first_end = guard.valid_until();
    tokio::select! {
        () = guard.lost() => panic!("a renewed lease was reported lost"),
        () = tokio::time::sleep(LEASE * 3) => {}
    }
    assert!(
        guard.valid_until() > first_end + LEASE,
        "renewals did not extend the lease"
    );
    guard.unlock().await.unwrap();
    node.shutdown().await;
}

#[tokio::test]
async fn ten_thousand_entity_ids_leave_no_residue() {
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = solo(home.path()).await;
    let repos = node
        .locks()
        .entity_lock::<u64>("com.example.repository")
        .unwrap();
    let mut tokens = HashSet::new();
    for id in 0..10_000u64 {
        let token = repos.with_lock(&id, async |g| g.token()).await.unwrap();
        assert!(tokens.insert(token));
    }
    // Releases on the owner are asynchronous to `with_lock` returning; wait for the last one.
    let mut stats = node.locks().stats().await.unwrap();
    for _ in 0..100 {
        if stats == Default::default() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        stats = node.locks().stats().await.unwrap();
    }
    assert_eq!(stats, Default::default(), "state left behind: {stats:?}");
    // Namespaces are independent: the same key in another namespace is a different lock.
    let prs = node
        .locks()
        .entity_lock::<u64>("com.example.pull-request")
        .unwrap();
    let held = repos.lock(&7).await.unwrap();
    // Granted while `held` is held: a different lock.
    let other = prs.with_lock(&7, async |g| g.token()).await.unwrap();
    assert_ne!(other, held.token());
    held.unlock().await.unwrap();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_holder_is_told_before_its_lease_ends_and_unlock_reports_the_loss() {
    let _serial = serial();
    let cluster = tokio::task::block_in_place(|| {
        let mut spec = crate::common::spec(2);
        // The lease is a cluster setting: the processes run with the test's.
        spec.extra_args = vec!["--lock-lease-ms".into(), LEASE.as_millis().to_string()];
        let cluster = colony_runtime::testkit::TestCluster::start(spec).expect("spawn nodes");
        crate::common::assert_converges(&cluster, "cluster did not converge");
        cluster
    });
    let home = tempfile::tempdir().unwrap();
    let node = colony::node_with(Primitives {
        locks: LockSettings { lease: LEASE },
        ..Primitives::default()
    })
    .name("holder")
    .home(home.path())
    .bind("127.0.0.1:0")
    .seeds([cluster.addr(0)])
    .cookie("colony-test-cookie")
    .cluster_size(cluster.cluster_size())
    .fault_injection(true)
    .start()
    .await
    .unwrap();
    // A name this node serves, so the grant is local and the cut leaves it without the group.
    let deadline = Instant::now() + Duration::from_secs(30);
    let name = loop {
        let mine = (0..200)
            .map(|i| format!("local-{i}"))
            .find(|n| node.locks().owner_of(n) == Some(node.id()));
        if let Some(name) = mine {
            break name;
        }
        assert!(Instant::now() < deadline, "this node serves no lock name");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let guard = tokio::time::timeout(
        Duration::from_secs(30),
        node.locks().lock_for_name(&name).unwrap().lock(),
    )
    .await
    .expect("granted after the takeover delay")
    .unwrap();
    let lease_end = guard.valid_until();
    node.set_blocked([cluster.addr(0), cluster.addr(1)].into_iter().collect())
        .await;
    tokio::time::timeout(Duration::from_secs(20), guard.lost())
        .await
        .expect("lost() fired");
    let told_at = Instant::now();
    // No renewal succeeded after the cut, so this is the lease's real end: told before it.
    assert!(
        told_at < guard.valid_until(),
        "lost() fired {:?} after the lease ended",
        told_at - guard.valid_until()
    );
    assert!(guard.valid_until() >= lease_end);
    assert!(matches!(
        guard.unlock().await,
        Err(UnlockError::Lost { .. })
    ));
    node.shutdown().await;
}
