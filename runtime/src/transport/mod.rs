//! The transport: Colony's authenticated links between nodes, the services registered on this
//! node, and a request/response helper with ids, timeouts and size limits.
//!
//! Requests travel only over links (`links`): one TCP connection per direction and node pair,
//! opened with a mutual challenge-response on the cookie, so that a request's sender as services
//! see it ([`Request::from`]) is the node its connection authenticated, never what the envelope
//! claims. Links follow membership rather than the other way round: each node dials members
//! gossip lists, closes links to those it counts out, and redials with backoff. Connections that
//! have not authenticated yet are capped and given a deadline (`admission`), so junk cannot
//! exhaust the node.

mod admission;
mod dispatch;
mod links;
mod listener;
mod request;
#[cfg(test)]
mod tests;

pub use dispatch::{Request, Service, ServiceError, ServiceFuture};
pub use request::RequestError;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::watch;

use crate::NodeId;
use crate::membership::View;
use admission::Admission;
use dispatch::{DispatchStats, Dispatcher};
use links::{Cut, LinkKey, Links, Replies};

/// Frame room for the envelope and the link's framing on top of `max_message_bytes`.
const FRAME_SLACK: usize = 64 * 1024;

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The TCP listener could not be started (often: the port is taken).
    #[error("cannot start the TCP transport on {addr}: {reason}")]
    Start {
        /// The bind address.
        addr: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// A service of that name is already registered on this node.
    #[error("a service named `{0}` is already registered on this node")]
    DuplicateService(String),
    /// A service name longer than a link frame can carry.
    #[error("service name `{0}` is longer than 255 bytes; choose a shorter one")]
    ServiceName(String),
}

/// Transport counters.
#[derive(Debug, Default)]
pub(crate) struct TransportStats {
    pub handshake_failures: AtomicU64,
    pub requests: AtomicU64,
    pub request_failures: AtomicU64,
    pub link_requests: AtomicU64,
    pub local_requests: AtomicU64,
    pub link_dials: AtomicU64,
    pub refused_connections: AtomicU64,
    /// Link bytes read (frames from peers) and written (frames to peers), after the handshake.
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// A snapshot of the transport counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct TransportCounters {
    /// Connections closed before authenticating (wrong cookie, junk that is no link, timeouts).
    pub handshake_failures: u64,
    /// Requests sent by this node.
    pub requests: u64,
    /// Requests that failed at this node (timeouts, no link, remote errors).
    pub request_failures: u64,
    /// Requests handled by this node's services.
    pub handled: u64,
    /// Incoming requests that did not decode.
    pub bad_requests: u64,
    /// Incoming requests refused because too many were in flight.
    pub busy: u64,
    /// Requests this node wrote on a link to another node (its requests to itself take none).
    pub link_requests: u64,
    /// Requests this node sent to its own services (they take no link).
    pub local_requests: u64,
    /// Peers this node has an open link to.
    pub links: usize,
    /// Link dial attempts (each side dials its own).
    pub link_dials: u64,
    /// Connections closed as soon as they were accepted: too many connections that have not
    /// authenticated were open already, overall or from the same address.
    pub refused_connections: u64,
    /// Connections open now that have not authenticated yet (at most 256, 32 per address).
    pub unauthenticated: usize,
    /// Incoming requests refused because the envelope's `from` is not the node the connection
    /// authenticated.
    pub forged_senders: u64,
    /// Bytes read from links (requests and replies from peers), after the handshake.
    pub bytes_in: u64,
    /// Bytes written to links (or queued behind a full socket), after the handshake.
    pub bytes_out: u64,
}

/// The node's transport.
#[derive(Clone)]
pub(crate) struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    local: NodeId,
    links: Arc<Links>,
    /// Every service's dispatcher, shared with the links.
    services: Arc<DashMap<Arc<str>, Dispatcher>>,
    accepting: tokio::task::JoinHandle<()>,
    /// Connections accepted and not yet authenticated.
    admission: Arc<Admission>,
    /// Set when the node stops: closes the links it serves and ends the dialling.
    stopping: watch::Sender<bool>,
    blocked: watch::Sender<HashSet<SocketAddr>>,
    max_message_bytes: usize,
    next_request: AtomicU64,
    stats: Arc<TransportStats>,
    dispatch_stats: Arc<DispatchStats>,
}

impl Transport {
    /// Starts the TCP listener on `bind` and the task that dials links to members.
    pub(crate) async fn start(
        local: NodeId,
        bind: SocketAddr,
        cookie: &str,
        max_message_bytes: usize,
        view: watch::Receiver<Arc<View>>,
    ) -> Result<Transport, TransportError> {
        let tcp = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| TransportError::Start {
                addr: bind,
                reason: e.to_string(),
            })?;
        Ok(Transport::serve(
            local,
            tcp,
            cookie,
            max_message_bytes,
            view,
        ))
    }

    /// The transport of `local` on a bound listener.
    fn serve(
        local: NodeId,
        tcp: tokio::net::TcpListener,
        cookie: &str,
        max_message_bytes: usize,
        view: watch::Receiver<Arc<View>>,
    ) -> Transport {
        let stats = Arc::new(TransportStats::default());
        let admission = Admission::new(stats.clone());
        let (blocked, blocked_rx) = watch::channel(HashSet::new());
        let (stopping, stopping_rx) = watch::channel(false);
        let cut = Cut {
            blocked: blocked_rx,
            view,
            stopping: stopping_rx,
        };
        let services = Arc::new(DashMap::new());
        let links = Arc::new(Links {
            local,
            key: LinkKey::from_cookie(cookie),
            frame_limit: max_message_bytes + FRAME_SLACK,
            outgoing: DashMap::new(),
            replies: Replies::start(),
            opened: watch::Sender::new(()),
            services: services.clone(),
            cut,
            stats: stats.clone(),
        });
        let accepting = listener::spawn(tcp, links.clone(), admission.clone());
        tokio::spawn(links::follow_membership(links.clone()));
        Transport {
            inner: Arc::new(Inner {
                local,
                links,
                services,
                accepting,
                admission,
                stopping,
                blocked,
                max_message_bytes,
                next_request: AtomicU64::new(1),
                stats,
                dispatch_stats: Arc::default(),
            }),
        }
    }

    /// Registers `service` under `name`: reachable from every peer's links and from this node.
    pub(crate) fn register(
        &self,
        name: &str,
        service: Arc<dyn Service>,
    ) -> Result<(), TransportError> {
        if name.len() > usize::from(u8::MAX) {
            return Err(TransportError::ServiceName(name.into()));
        }
        match self.inner.services.entry(name.into()) {
            Entry::Occupied(_) => Err(TransportError::DuplicateService(name.into())),
            Entry::Vacant(slot) => {
                slot.insert(Dispatcher::new(
                    name,
                    service,
                    self.inner.max_message_bytes,
                    self.inner.dispatch_stats.clone(),
                ));
                Ok(())
            }
        }
    }

    pub(crate) fn local(&self) -> NodeId {
        self.inner.local
    }

    pub(crate) fn max_message_bytes(&self) -> usize {
        self.inner.max_message_bytes
    }

    pub(crate) fn next_request_id(&self) -> u64 {
        self.inner.next_request.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn has_link(&self, peer: NodeId) -> bool {
        self.inner.links.get(peer).is_some()
    }

    /// Replaces the fault filter (tests only).
    pub(crate) fn set_blocked(&self, blocked: HashSet<SocketAddr>) {
        self.inner.blocked.send_replace(blocked);
    }

    pub(crate) fn counters(&self) -> TransportCounters {
        let s = &self.inner.stats;
        let g = &self.inner.dispatch_stats;
        TransportCounters {
            handshake_failures: s.handshake_failures.load(Ordering::Relaxed),
            requests: s.requests.load(Ordering::Relaxed),
            request_failures: s.request_failures.load(Ordering::Relaxed),
            handled: g.handled.load(Ordering::Relaxed),
            bad_requests: g.bad_requests.load(Ordering::Relaxed),
            busy: g.busy.load(Ordering::Relaxed),
            link_requests: s.link_requests.load(Ordering::Relaxed),
            local_requests: s.local_requests.load(Ordering::Relaxed),
            links: self.inner.links.open(),
            link_dials: s.link_dials.load(Ordering::Relaxed),
            refused_connections: s.refused_connections.load(Ordering::Relaxed),
            unauthenticated: self.inner.admission.unauthenticated(),
            forged_senders: g.forged_senders.load(Ordering::Relaxed),
            bytes_in: s.bytes_in.load(Ordering::Relaxed),
            bytes_out: s.bytes_out.load(Ordering::Relaxed),
        }
    }

    /// Stops the listener, the dialling and every link.
    pub(crate) fn stop(&self) {
        self.inner.accepting.abort();
        self.inner.stopping.send_replace(true);
        for link in self.inner.links.outgoing.iter() {
            link.close();
        }
    }
}
