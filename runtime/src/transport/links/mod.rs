//! Links: Colony's own request lane between two nodes, beside the ractor_cluster sessions.
//!
//! A request through a ractor_cluster session crosses about ten tasks and actors each way
//! (`docs/benchmarks.md`), which made one request 5-16 times a loopback round trip. A link is
//! one TCP connection per direction and node pair, on the node's own port (the listener tells
//! links from sessions by their first bytes), authenticated by a challenge-response on the
//! cookie. It carries the same envelopes to the same services: the caller writes its frame from
//! its own task, the serving end answers inside the connection's task.
//!
//! Links follow membership like sessions do, and requests fall back to the session when a peer
//! has no open link (still dialling, or an older node), so links change speed, not behaviour.

mod client;
mod frame;
mod handshake;
mod server;

pub(crate) use client::{Call, CallError, Link};
pub(crate) use handshake::{LinkKey, MAGIC};

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use dashmap::DashMap;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::TransportStats;
use super::admission::Permit;
use super::gateway::Dispatcher;
use super::sessions::{Dial, HANDSHAKE_TIMEOUT};
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

    /// Whether membership counts `peer` out (down or left).
    fn is_gone(&self, peer: NodeId) -> bool {
        self.view
            .borrow()
            .members
            .iter()
            .any(|m| m.id == peer && m.state.is_gone())
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

    /// Dials links to the wanted peers that lack one, and closes links to the others.
    pub(crate) fn reconcile(
        self: &Arc<Self>,
        wanted: &HashMap<NodeId, SocketAddr>,
        dials: &mut HashMap<NodeId, Dial>,
    ) {
        self.outgoing.retain(|peer, link| {
            let keep = wanted.contains_key(peer) && !link.is_closed();
            if !keep {
                link.close();
            }
            keep
        });
        dials.retain(|peer, _| wanted.contains_key(peer) && !self.outgoing.contains_key(peer));
        let now = Instant::now();
        for (&peer, &addr) in wanted {
            if self.outgoing.contains_key(&peer) || !dials.entry(peer).or_default().due(now) {
                continue;
            }
            self.stats.link_dials.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(self.clone().dial(peer, addr));
        }
    }

    async fn dial(self: Arc<Self>, peer: NodeId, addr: SocketAddr) {
        let attempt = async {
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            handshake::client(&mut stream, &self.key, self.local, peer).await?;
            Ok::<_, handshake::HandshakeError>(stream)
        };
        let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(%peer, %addr, error = %e, "link dial failed; will retry");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, %addr, "link handshake timed out; will retry");
                return;
            }
        };
        // Stopped meanwhile: `Transport::stop` has closed the links already.
        if *self.cut.stopping.borrow() {
            return;
        }
        // A link that closes later is dropped (and redialled) by the next reconcile.
        let link = Link::start(stream, peer, self.frame_limit);
        if let Some(old) = self.outgoing.insert(peer, link) {
            old.close();
        }
        tracing::debug!(%peer, "link ready");
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
