//! Membership events reach local subscribers: up, suspect, down, rejoined, left.

// Each test runs on its own runtime; the lock only keeps whole tests from overlapping.
#![allow(clippy::await_holding_lock)]

use std::time::Duration;

use crate::common::{converged_cluster, serial};
use colony_runtime::events::Subscription;
use colony_runtime::{MemberEvent, Node};

async fn next_about(
    sub: &mut Subscription<MemberEvent>,
    name: &str,
    want: fn(&MemberEvent) -> bool,
) -> MemberEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let event = tokio::time::timeout_at(deadline, sub.recv())
            .await
            .unwrap_or_else(|_| panic!("no matching event about {name}"))
            .expect("bus open");
        if event.member().name == name && want(&event) {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_down_rejoined_and_left() {
    let _serial = serial();
    let mut cluster = tokio::task::block_in_place(|| converged_cluster(2));
    let home = tempfile::tempdir().unwrap();
    let node = Node::builder()
        .name("watcher")
        .home(home.path())
        .bind("127.0.0.1:0")
        .seeds([cluster.addr(0)])
        .cookie("colony-test-cookie")
        .cluster_size(cluster.cluster_size())
        .start()
        .await
        .unwrap();
    let mut sub = node.subscribe(64);
    // Node up events may have come before we subscribed; wait for the view instead.
    for _ in 0..400 {
        if node.up_members().len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(node.up_members().len(), 3);
    let victim = cluster.name(1).to_owned();
    let old_id = node.members().iter().find(|m| m.name == victim).unwrap().id;

    let killed = std::time::Instant::now();
    tokio::task::block_in_place(|| cluster.kill(1));
    next_about(&mut sub, &victim, |e| {
        matches!(e, MemberEvent::NodeSuspect(_))
    })
    .await;
    let suspected = std::time::Instant::now();
    next_about(&mut sub, &victim, |e| matches!(e, MemberEvent::NodeDown(_))).await;

    let restarted = std::time::Instant::now();
    tokio::task::block_in_place(|| cluster.restart(1)).unwrap();
    match next_about(&mut sub, &victim, |e| {
        matches!(e, MemberEvent::NodeRejoined { .. })
    })
    .await
    {
        MemberEvent::NodeRejoined {
            member,
            previous,
            lost_for,
        } => {
            assert_eq!(previous, old_id);
            assert_ne!(member.id, old_id, "a restarted process has a new id");
            // Lost when this node first suspected it (after the kill), until it came back.
            let lost_at = std::time::Instant::now() - lost_for;
            assert!(lost_at >= killed, "{lost_for:?}");
            assert!(lost_for >= restarted - suspected, "{lost_for:?}");
        }
        other => panic!("{other:?}"),
    }

    tokio::task::block_in_place(|| cluster.terminate(1, Duration::from_secs(10)));
    next_about(&mut sub, &victim, |e| matches!(e, MemberEvent::NodeLeft(_))).await;
    assert_eq!(sub.dropped(), 0);
    node.shutdown().await;
}
