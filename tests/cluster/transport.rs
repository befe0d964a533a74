//! Requests between a node in this test process and node processes: the envelope, size limits,
//! damaged payloads and a newer protocol version. DESIGN principle 3 and "Every remote request
//! has a timeout, an id".

// Each test runs on its own runtime; the lock only keeps whole tests from overlapping.
#![allow(clippy::await_holding_lock)]

use std::time::Duration;

use std::net::{IpAddr, Ipv4Addr};

use crate::common::{
    LIMIT, OBSERVATION_SLACK, RawLink, converged_cluster, detection_bound, join, peer_id, serial,
};
use colony_runtime::NodeId;
use colony_runtime::transport::RequestError;
use colony_runtime::wire::{self, ErrorCode};
use futures_util::FutureExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cross_processes_through_the_envelope_and_survive_bad_input() {
    let _serial = serial();
    let cluster = tokio::task::block_in_place(|| converged_cluster(2));
    let home = tempfile::tempdir().unwrap();
    let node = join(&cluster, home.path()).await;
    let peer = peer_id(&node, &cluster, 1).await;

    // Requests to other nodes travel over links only.
    let peers = cluster.all().len();
    for _ in 0..200 {
        if node.stats().transport.links == peers {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(node.stats().transport.links, peers, "{:?}", node.stats());
    // The consensus group talks over the same links meanwhile: count this node's requests to
    // itself, which only this test sends, and the requests written on links.
    let counts = |node: &colony_runtime::Node| {
        let t = node.stats().transport;
        (t.local_requests, t.link_requests)
    };
    let (local_before, linked_before) = counts(&node);

    // A round trip, and the same through the local gateway (serialization included).
    let echo: Vec<u8> = node
        .request_raw(peer, "node", "echo", b"ping".to_vec(), None)
        .await
        .expect("echo");
    assert_eq!(echo, b"ping");
    let local: Vec<u8> = node
        .request_raw(node.id(), "node", "echo", b"me".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(local, b"me");
    let info: colony_runtime::Member = node.request(peer, "node", "info", &(), None).await.unwrap();
    assert_eq!(info.name, cluster.name(1));
    // Two remote requests, both over the link; the local one takes no link.
    let (local_after, linked_after) = counts(&node);
    assert_eq!(local_after, local_before + 1);
    assert!(linked_after >= linked_before + 2);

    // Too large: refused at the caller, nothing sent, the link stays up.
    let err = node
        .request_raw(peer, "node", "echo", vec![7; LIMIT + 1], None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::TooLarge { limit: LIMIT, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was sent"), "{err}");
    assert!(node.is_connected(peer));
    let again = node
        .request_raw(peer, "node", "echo", b"still".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(again, b"still");

    // Unknown kinds and services are errors, not silence.
    let err = node
        .request_raw(peer, "node", "nope", vec![], None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::Remote { ref error, .. } if error.code() == ErrorCode::UnknownKind),
        "{err}"
    );
    let err = node
        .request_raw(peer, "no-such-service", "x", vec![], None)
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::UnknownService { .. }), "{err}");

    // Bytes that are no envelope, over a link opened by hand: counted, logged, answered with
    // an error.
    let stranger = NodeId::random();
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut link = RawLink::open(cluster.addr(1), localhost, stranger)
        .await
        .unwrap();
    let before = cluster.admin(1).stats().unwrap()["transport"]["bad_requests"]
        .as_u64()
        .unwrap();
    let reply = link
        .call_bytes("node", b"\xc1 definitely not an envelope")
        .await;
    assert_eq!(reply.error.map(|e| e.code()), Some(ErrorCode::BadRequest));
    let after = cluster.admin(1).stats().unwrap()["transport"]["bad_requests"]
        .as_u64()
        .unwrap();
    assert_eq!(after, before + 1);
    assert!(
        cluster.log(1).contains("undecodable request"),
        "{}",
        cluster.log(1)
    );

    // A newer protocol version that adds fields is understood by this (older) node.
    #[derive(serde::Serialize)]
    struct EnvelopeV2 {
        version: u16,
        request_id: u64,
        from: NodeId,
        kind: String,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        trace_parent: String,
    }
    let newer = EnvelopeV2 {
        version: wire::PROTOCOL_VERSION + 1,
        request_id: 42,
        from: stranger,
        kind: "echo".into(),
        payload: b"from the future".to_vec(),
        trace_parent: "00-abc-def-01".into(),
    };
    let reply = link
        .call_bytes("node", &wire::encode(&newer, LIMIT).unwrap())
        .await;
    assert_eq!(reply.error, None);
    assert_eq!(reply.request_id, 42);
    assert_eq!(reply.ok.as_deref(), Some(&b"from the future"[..]));

    // The node is still healthy and the cluster still one.
    assert!(cluster.admin(1).healthy());
    assert!(!cluster.log(1).contains("panicked"));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_to_many_nodes_answers_each_and_a_paused_node_fails_alone() {
    let _serial = serial();
    let cluster = tokio::task::block_in_place(|| converged_cluster(2));
    let home = tempfile::tempdir().unwrap();
    let node = join(&cluster, home.path()).await;
    let (a, b) = (
        peer_id(&node, &cluster, 0).await,
        peer_id(&node, &cluster, 1).await,
    );
    let nodes = [a, node.id(), b];

    // Every node answers, in the order asked; this node through its own gateway.
    let answers = node
        .request_each(&nodes, "node", "echo", b"all".to_vec(), None)
        .await;
    assert_eq!(answers.len(), 3);
    for answer in &answers {
        assert_eq!(answer.as_deref().expect("an answer"), b"all");
    }

    // A paused node times out alone: the others still answer, and its error is a Timeout
    // naming it and carrying the timeout given.
    cluster.pause(1);
    let timeout = Duration::from_millis(500);
    let answers = node
        .request_each(&nodes, "node", "echo", b"some".to_vec(), Some(timeout))
        .await;
    cluster.resume(1);
    assert_eq!(answers[0].as_deref().expect("a answers"), b"some");
    assert_eq!(answers[1].as_deref().expect("this node answers"), b"some");
    assert!(
        matches!(answers[2], Err(RequestError::Timeout { node: n, after }) if n == b && after == timeout),
        "{:?}",
        answers[2]
    );

    // Too large for the limit: refused for every node, nothing sent.
    let answers = node
        .request_each(&nodes, "node", "echo", vec![7; LIMIT + 1], None)
        .await;
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Err(RequestError::TooLarge { limit: LIMIT, .. }))),
        "{answers:?}"
    );

    // The resumed node answers again.
    let again = node
        .request_each(&[b], "node", "echo", b"back".to_vec(), None)
        .await;
    assert_eq!(
        again[0].as_deref().expect("b answers after resuming"),
        b"back"
    );
    node.shutdown().await;
}

/// Issue 8: a request to a node that is no member fails on its first poll with nothing sent,
/// whether the node was never listed or was declared down; the other members still answer.
/// (That a request to a member whose link is still opening waits for it is proved, without
/// timing, by `runtime/src/transport/tests.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_node_that_is_no_member_fails_at_once() {
    let _serial = serial();
    let mut cluster = tokio::task::block_in_place(|| converged_cluster(3));
    let home = tempfile::tempdir().unwrap();
    let node = join(&cluster, home.path()).await;
    let (a, victim) = (
        peer_id(&node, &cluster, 0).await,
        peer_id(&node, &cluster, 2).await,
    );
    let long = Some(Duration::from_secs(60));

    fails_at_once(&node, NodeId::random());

    tokio::task::block_in_place(|| cluster.kill(2));
    let mut view = node.watch_members();
    let declared_down = view.wait_for(|v| {
        v.members
            .iter()
            .any(|m| m.id == victim && m.state.is_gone())
    });
    let allowed = detection_bound(cluster.len() + 1) + OBSERVATION_SLACK;
    tokio::time::timeout(allowed, declared_down)
        .await
        .unwrap_or_else(|_| panic!("the killed node was not declared down within {allowed:?}"))
        .unwrap();
    fails_at_once(&node, victim);
    let answers = node
        .request_each(&[victim, a], "node", "echo", b"left".to_vec(), long)
        .await;
    assert!(
        matches!(answers[0], Err(RequestError::NotMember(n)) if n == victim),
        "{:?}",
        answers[0]
    );
    assert_eq!(answers[1].as_deref().expect("a answers"), b"left");
    node.shutdown().await;
}

/// A request from `node` to `target`, with a long timeout, fails on its first poll as sent to
/// no member.
fn fails_at_once(node: &colony_runtime::Node, target: NodeId) {
    let long = Some(Duration::from_secs(60));
    let first_poll = node
        .request_raw(target, "node", "echo", b"?".to_vec(), long)
        .now_or_never();
    assert!(
        matches!(first_poll, Some(Err(RequestError::NotMember(n))) if n == target),
        "{first_poll:?}"
    );
}
