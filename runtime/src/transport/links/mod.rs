//! Links: the only lane that carries requests between nodes.
//!
//! A link is one TCP connection per direction and node pair, on the node's own port,
//! authenticated by a mutual challenge-response on the cookie, so each connection speaks for
//! exactly one node ([`crate::transport::Request::from`]). The caller writes its frame from its
//! own task, the serving end answers inside the connection's task.
//!
//! Links follow membership (`dial`): each node dials its own link to every member not counted
//! out, closes it when the member is declared down, leaves or is cut off, and redials with
//! backoff. A request for a member whose link is still dialling waits for it ([`Links::wait_for`]).

mod client;
mod dial;
mod frame;
mod handshake;
mod server;

pub(crate) use client::{Call, CallError, Link, Replies};
pub(crate) use dial::follow_membership;
pub(crate) use handshake::{LinkKey, MAGIC};

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dashmap::DashMap;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::admission::Permit;
use super::dispatch::Dispatcher;
use super::{RequestError, TransportStats};
use crate::NodeId;
use crate::membership::View;

/// Whether this node is cut off from a peer: by the test fault filter (through the peer's gossip
/// address), or for good because the node is stopping.
#[derive(Clone)]
pub(crate) struct Cut {
    pub blocked: watch::Receiver<HashSet<SocketAddr>>,
    pub view: watch::Receiver<Arc<View>>,
    pub stopping: watch::Receiver<bool>,
}

impl Cut {
    pub(crate) fn is_cut(&self, peer: NodeId) -> bool {
        let blocked = self.blocked.borrow();
        !blocked.is_empty()
            && self
                .view
                .borrow()
                .members
                .iter()
                .any(|m| m.id == peer && blocked.contains(&m.addr))
    }

    /// Whether a member this node knows of (in any state but gone) lives at `ip`.
    pub(crate) fn hosts_member(&self, ip: std::net::IpAddr) -> bool {
        self.view
            .borrow()
            .members
            .iter()
            .any(|m| m.addr.ip() == ip && !m.state.is_gone())
    }

    /// The span every line about the link with `peer` is logged in: it names the peer, by
    /// its member name when this node knows it, and by id.
    pub(crate) fn span(&self, peer: NodeId) -> tracing::Span {
        let view = self.view.borrow();
        let name = view
            .members
            .iter()
            .find(|m| m.id == peer)
            .map(|m| m.name.as_str());
        tracing::info_span!("link", peer = %name.unwrap_or("?"), id = %peer)
    }

    /// Whether membership counts `peer` out (down or left).
    fn is_gone(&self, peer: NodeId) -> bool {
        self.view
            .borrow()
            .members
            .iter()
            .any(|m| m.id == peer && m.state.is_gone())
    }

    /// Whether `peer` is a member this node lists and has not counted out: one it dials.
    fn is_member(&self, peer: NodeId) -> bool {
        self.view
            .borrow()
            .members
            .iter()
            .any(|m| m.id == peer && !m.state.is_gone())
    }

    /// Resolves once a link from `peer` must end: the peer is cut off or counted out, or this
    /// node stops.
    pub(crate) async fn wait(&mut self, peer: NodeId) {
        loop {
            if self.is_cut(peer) || self.is_gone(peer) || *self.stopping.borrow() {
                return;
            }
            tokio::select! {
                changed = self.blocked.changed() => if changed.is_err() { return },
                changed = self.stopping.changed() => if changed.is_err() { return },
                changed = self.view.changed() => if changed.is_err() { return },
            }
        }
    }
}

/// This node's links: the outgoing ones by peer, and what incoming ones serve.
pub(crate) struct Links {
    pub local: NodeId,
    pub key: LinkKey,
    pub frame_limit: usize,
    pub outgoing: DashMap<NodeId, Link>,
    /// Reads the replies of every outgoing link.
    pub replies: Replies,
    /// Touched whenever a link opens: requests waiting for one look again.
    pub opened: watch::Sender<()>,
    pub services: Arc<DashMap<Arc<str>, Dispatcher>>,
    pub cut: Cut,
    pub stats: Arc<TransportStats>,
}

impl Links {
    /// The open link to `peer`, if there is one.
    pub(crate) fn get(&self, peer: NodeId) -> Option<Link> {
        self.outgoing
            .get(&peer)
            .map(|l| l.clone())
            .filter(|l| !l.is_closed())
    }

    /// How many outgoing links are open.
    pub(crate) fn open(&self) -> usize {
        self.outgoing.iter().filter(|l| !l.is_closed()).count()
    }

    /// The open link to `peer`, waiting until `deadline` while the peer is a member whose link
    /// is not open yet (still dialling, or redialling after it closed). Fails at once, with
    /// nothing sent, when the peer is cut off, is no member (unknown, down or left), or this
    /// node stops; `NotConnected` if no link opened by `deadline`. `timeout` is only reported.
    pub(crate) async fn wait_for(
        &self,
        peer: NodeId,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Link, RequestError> {
        if let Some(link) = self.get(peer) {
            return Ok(link);
        }
        // Subscribed before looking, so that a link opening in between is not missed.
        let mut opened = self.opened.subscribe();
        let mut cut = self.cut.clone();
        let expired = tokio::time::sleep_until(deadline);
        tokio::pin!(expired);
        loop {
            opened.borrow_and_update();
            cut.view.borrow_and_update();
            cut.blocked.borrow_and_update();
            if *cut.stopping.borrow_and_update() {
                return Err(RequestError::ShuttingDown);
            }
            if let Some(link) = self.get(peer) {
                return Ok(link);
            }
            if cut.is_cut(peer) {
                return Err(RequestError::Unreachable(peer));
            }
            if !cut.is_member(peer) {
                return Err(RequestError::NotMember(peer));
            }
            let changed = tokio::select! {
                changed = opened.changed() => changed,
                changed = cut.view.changed() => changed,
                changed = cut.blocked.changed() => changed,
                changed = cut.stopping.changed() => changed,
                () = &mut expired => {
                    return Err(RequestError::NotConnected { node: peer, after: timeout });
                }
            };
            // A sender is gone only once the node has stopped.
            if changed.is_err() {
                return Err(RequestError::ShuttingDown);
            }
        }
    }

    /// Serves a connection whose first bytes were [`MAGIC`]: handshake by `deadline`, then
    /// requests. `permit` is the connection's slot among the unauthenticated ones: given back
    /// once the handshake is over, whatever its outcome.
    pub(crate) async fn accept(
        self: Arc<Self>,
        mut stream: TcpStream,
        permit: Permit,
        deadline: tokio::time::Instant,
    ) {
        let proven = tokio::time::timeout_at(
            deadline,
            handshake::server(&mut stream, &self.key, self.local),
        )
        .await;
        drop(permit);
        let peer = match proven {
            Ok(Ok(peer)) => peer,
            Ok(Err(e)) => return self.refused(&stream, &e.to_string()),
            Err(_) => return self.refused(&stream, "no handshake within the timeout"),
        };
        if self.cut.is_cut(peer) {
            return;
        }
        server::serve(
            stream,
            peer,
            self.services.clone(),
            self.frame_limit,
            self.cut.clone(),
            self.stats.clone(),
        )
        .await;
    }

    fn refused(&self, stream: &TcpStream, why: &str) {
        self.stats
            .handshake_failures
            .fetch_add(1, Ordering::Relaxed);
        let peer = stream.peer_addr().ok();
        tracing::warn!(?peer, "link refused: {why}");
    }
}
