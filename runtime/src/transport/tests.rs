//! Requests between two transports in one process, over real links on loopback. The tests run
//! on tokio's current-thread runtime: no other task runs until a test awaits, so "the link is
//! not open yet" holds by construction, not by timing.

use std::time::Duration;

use futures_util::FutureExt;
use tokio::net::TcpListener;

use super::*;
use crate::membership::{Member, MemberState};

/// Answers with the payload it got.
struct Echo;

impl Service for Echo {
    fn call(&self, request: Request) -> ServiceFuture {
        Box::pin(async move { Ok(request.payload) })
    }
}

const LONG: Duration = Duration::from_secs(30);

fn member(id: NodeId, addr: SocketAddr, state: MemberState) -> Member {
    Member {
        id,
        name: id.to_string(),
        addr,
        state,
        incarnation: 1,
        replica: 0,
    }
}

fn view(members: Vec<Member>) -> Arc<View> {
    let up = members
        .iter()
        .filter(|m| m.state.is_up())
        .map(|m| m.id)
        .collect();
    Arc::new(View {
        members,
        up,
        stats: Default::default(),
    })
}

/// A node: its transport with an `echo` service, its address, and the sender of its view
/// (which lists only itself until a test says otherwise).
struct TestNode {
    transport: Transport,
    me: Member,
    view: watch::Sender<Arc<View>>,
}

impl TestNode {
    async fn start(n: u128) -> TestNode {
        let id = NodeId::from_u128(n);
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let me = member(id, tcp.local_addr().unwrap(), MemberState::Up);
        let (view_tx, view_rx) = watch::channel(view(vec![me.clone()]));
        let transport = Transport::serve(id, tcp, "cookie", 4096, view_rx);
        transport.register("echo", Arc::new(Echo)).unwrap();
        TestNode {
            transport,
            me,
            view: view_tx,
        }
    }

    /// Lists `others` besides itself.
    fn sees(&self, others: &[Member]) {
        let mut members = vec![self.me.clone()];
        members.extend_from_slice(others);
        self.view.send_replace(view(members));
    }

    async fn echo(&self, to: NodeId, payload: &[u8]) -> Result<Vec<u8>, RequestError> {
        let t = &self.transport;
        t.request(to, "echo", "echo", payload.to_vec(), LONG).await
    }
}

/// Issue 8: requests travel only over links, and a request to a member whose link is still
/// dialling (it just came up) waits for the link instead of failing.
#[tokio::test]
async fn a_request_to_a_member_that_just_came_up_waits_for_its_link() {
    let (a, b) = (TestNode::start(1).await, TestNode::start(2).await);
    let b_id = b.me.id;
    a.sees(std::slice::from_ref(&b.me));
    // Nothing has run since `a` learned of `b`: no dial, no link.
    assert!(!a.transport.has_link(b_id));
    assert_eq!(a.echo(b_id, b"first").await.unwrap(), b"first");
    assert!(a.transport.has_link(b_id));
    let counters = a.transport.counters();
    assert_eq!((counters.link_requests, counters.request_failures), (1, 0));
    a.transport.stop();
    b.transport.stop();
}

/// The same through `request_each`, with this node among the targets: one timer covers a node
/// whose link is opening and the local service.
#[tokio::test]
async fn request_each_waits_for_a_link_that_is_opening() {
    let (a, b) = (TestNode::start(1).await, TestNode::start(2).await);
    let (a_id, b_id) = (a.me.id, b.me.id);
    a.sees(std::slice::from_ref(&b.me));
    assert!(!a.transport.has_link(b_id));
    let answers = a
        .transport
        .request_each(&[b_id, a_id], "echo", "echo", b"all".to_vec(), LONG)
        .await;
    for answer in answers {
        assert_eq!(answer.unwrap(), b"all");
    }
    a.transport.stop();
    b.transport.stop();
}

/// A node that is no member (unknown, declared down, or left) fails on the request's first
/// poll, with nothing sent; a member declared down while a request waits for its link fails
/// it then, not at the request's timeout; so does this node stopping.
#[tokio::test]
async fn a_request_to_a_node_that_is_no_member_fails_at_once() {
    let a = TestNode::start(1).await;
    let stranger = NodeId::from_u128(9);
    let first_poll = a.echo(stranger, b"?").now_or_never();
    assert!(
        matches!(first_poll, Some(Err(RequestError::NotMember(n))) if n == stranger),
        "{first_poll:?}"
    );
    // An address where nobody answers: a listed member's link cannot open.
    let nobody = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    for state in [MemberState::Down, MemberState::Left] {
        a.sees(&[member(stranger, nobody, state)]);
        let first_poll = a.echo(stranger, b"?").now_or_never();
        assert!(
            matches!(first_poll, Some(Err(RequestError::NotMember(n))) if n == stranger),
            "{state}: {first_poll:?}"
        );
    }

    let up = member(stranger, nobody, MemberState::Up);
    let declared_down = waiting_then(&a, up, |a| {
        a.sees(&[member(stranger, nobody, MemberState::Down)]);
    });
    let failed = declared_down.await;
    assert!(
        matches!(failed, Err(RequestError::NotMember(n)) if n == stranger),
        "{failed:?}"
    );
    let suspect = member(stranger, nobody, MemberState::Suspect);
    let failed = waiting_then(&a, suspect, |a| a.transport.stop()).await;
    assert!(
        matches!(failed, Err(RequestError::ShuttingDown)),
        "{failed:?}"
    );

    let counters = a.transport.counters();
    assert_eq!((counters.link_requests, counters.request_failures), (0, 5));
}

/// Lists `peer` (at an address where nothing answers), starts a request to it, checks that the
/// request waits for the link, runs `then`, and returns how the request ended.
async fn waiting_then(
    node: &TestNode,
    peer: Member,
    then: impl FnOnce(&TestNode),
) -> Result<Vec<u8>, RequestError> {
    node.sees(std::slice::from_ref(&peer));
    let waiting = node.echo(peer.id, b"?");
    tokio::pin!(waiting);
    assert!(
        waiting.as_mut().now_or_never().is_none(),
        "it waits for the link"
    );
    then(node);
    waiting.await
}
