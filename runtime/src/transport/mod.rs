//! The transport: authenticated TCP sessions between nodes (ractor_cluster), one gateway actor
//! per service, and a request/response helper with ids, timeouts and size limits.
//!
//! Sessions follow membership rather than the other way round: ractor_cluster has no failure
//! detector and no reconnect, so `sessions` dials members that gossip reports up, drops those
//! it reports down, and redials with backoff. Remote actor references are looked up for each
//! request (through the process group of the target's gateway), never kept across sessions.
//!
//! A request's sender, as services see it ([`Request::from`]), is the node its connection
//! authenticated, not what the envelope claims; connections that have not authenticated yet
//! are capped and given a deadline (`admission`), so junk cannot exhaust the node.

mod admission;
mod gateway;
mod links;
mod listener;
mod request;
mod sessions;

pub use gateway::{GatewayMsg, Request, Service, ServiceError, ServiceFuture};
pub use request::RequestError;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use ractor::{Actor, ActorRef};
use ractor_cluster::{NodeServer, NodeServerMessage};
use tokio::sync::{mpsc, watch};

use crate::NodeId;
use crate::membership::View;
use admission::Admission;
use gateway::{Dispatcher, Gateway, GatewayStats};
use links::{Cut, LinkKey, Links};
use sessions::{Forwarder, Session, SessionTask};

/// Frame room for the envelope and ractor's own framing on top of `max_message_bytes`.
const FRAME_SLACK: usize = 64 * 1024;

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The TCP listener or an actor could not be started (often: the port is taken).
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
    pub dials: AtomicU64,
    pub requests: AtomicU64,
    pub request_failures: AtomicU64,
    pub link_requests: AtomicU64,
    pub link_dials: AtomicU64,
    pub refused_connections: AtomicU64,
}

/// A snapshot of the transport counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct TransportCounters {
    /// Connections closed before authenticating (wrong cookie, junk, timeouts).
    pub handshake_failures: u64,
    /// Session dial attempts (one side of each pair dials).
    pub dials: u64,
    /// Requests sent by this node.
    pub requests: u64,
    /// Requests that failed at this node (timeouts, no session, remote errors).
    pub request_failures: u64,
    /// Requests handled by this node's gateways.
    pub handled: u64,
    /// Incoming requests that did not decode.
    pub bad_requests: u64,
    /// Incoming requests refused because too many were in flight.
    pub busy: u64,
    /// Peers with a ready session.
    pub sessions: usize,
    /// Requests this node sent over a link rather than a session.
    pub link_requests: u64,
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
}

/// The node's transport.
#[derive(Clone)]
pub(crate) struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    local: NodeId,
    server: ActorRef<NodeServerMessage>,
    sessions: Arc<DashMap<NodeId, Session>>,
    links: Arc<Links>,
    /// Every service's dispatcher, shared by the gateways and the links.
    services: Arc<DashMap<Arc<str>, Dispatcher>>,
    accepting: tokio::task::JoinHandle<()>,
    /// Connections accepted and not yet authenticated.
    admission: Arc<Admission>,
    /// Set when the node stops: closes the links it serves.
    stopping: watch::Sender<bool>,
    gateways: DashMap<String, ActorRef<GatewayMsg>>,
    blocked: watch::Sender<HashSet<SocketAddr>>,
    max_message_bytes: usize,
    next_request: AtomicU64,
    stats: Arc<TransportStats>,
    gateway_stats: Arc<GatewayStats>,
}

impl Transport {
    /// Starts the TCP listener on `bind` and the session task.
    pub(crate) async fn start(
        local: NodeId,
        bind: SocketAddr,
        cookie: &str,
        max_message_bytes: usize,
        view: watch::Receiver<Arc<View>>,
    ) -> Result<Transport, TransportError> {
        let fail = |reason: String| TransportError::Start { addr: bind, reason };
        let tcp = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| fail(e.to_string()))?;
        // Peers reach sessions through `listener` on the node's port; ractor_cluster's own
        // listener cannot be turned off, so it gets a port nobody is told about, on 127.0.0.2:
        // an ephemeral port there never collides with a port another node (or a test cluster
        // that picked its ports in advance) is about to bind on 127.0.0.1 or a real address.
        let server = NodeServer::new(
            0,
            cookie.to_owned(),
            local.to_string(),
            bind.ip().to_string(),
            None,
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(std::net::Ipv4Addr::new(127, 0, 0, 2).into())
        .with_max_inbound_frame_size((max_message_bytes + FRAME_SLACK) as u64);
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let stats = Arc::new(TransportStats::default());
        let admission = Admission::new(stats.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "colony-sessions".into(),
                subscription: Box::new(Forwarder {
                    events: tx,
                    admission: admission.clone(),
                }),
            })
            .map_err(|e| fail(e.to_string()))?;
        let sessions = Arc::new(DashMap::new());
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
            services: services.clone(),
            cut: cut.clone(),
            stats: stats.clone(),
        });
        let accepting = listener::spawn(tcp, server.clone(), links.clone(), admission.clone());
        tokio::spawn(
            SessionTask {
                local,
                server: server.clone(),
                sessions: sessions.clone(),
                cut,
                links: links.clone(),
                stats: stats.clone(),
            }
            .run(rx),
        );
        Ok(Transport {
            inner: Arc::new(Inner {
                local,
                server,
                sessions,
                links,
                services,
                accepting,
                admission,
                stopping,
                gateways: DashMap::new(),
                blocked,
                max_message_bytes,
                next_request: AtomicU64::new(1),
                stats,
                gateway_stats: Arc::default(),
            }),
        })
    }

    /// Starts the gateway of `name` and makes it reachable from every peer.
    pub(crate) async fn register(
        &self,
        name: &str,
        service: Arc<dyn Service>,
    ) -> Result<(), TransportError> {
        if self.inner.gateways.contains_key(name) {
            return Err(TransportError::DuplicateService(name.into()));
        }
        if name.len() > usize::from(u8::MAX) {
            return Err(TransportError::ServiceName(name.into()));
        }
        let dispatcher = Dispatcher::new(
            name,
            service,
            self.inner.max_message_bytes,
            self.inner.gateway_stats.clone(),
        );
        let gateway = Gateway {
            dispatcher: dispatcher.clone(),
            sessions: self.inner.sessions.clone(),
            view: self.inner.links.cut.view.clone(),
        };
        let (actor, _) =
            Actor::spawn(None, gateway, ())
                .await
                .map_err(|e| TransportError::Start {
                    addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                    reason: e.to_string(),
                })?;
        ractor::pg::join(
            gateway_group(name, self.inner.local),
            vec![actor.get_cell()],
        );
        self.inner.gateways.insert(name.into(), actor);
        self.inner.services.insert(name.into(), dispatcher);
        Ok(())
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

    pub(crate) fn has_session(&self, peer: NodeId) -> bool {
        self.inner.sessions.contains_key(&peer)
    }

    /// Replaces the fault filter (tests only).
    pub(crate) fn set_blocked(&self, blocked: HashSet<SocketAddr>) {
        self.inner.blocked.send_replace(blocked);
    }

    pub(crate) fn counters(&self) -> TransportCounters {
        let s = &self.inner.stats;
        let g = &self.inner.gateway_stats;
        TransportCounters {
            handshake_failures: s.handshake_failures.load(Ordering::Relaxed),
            dials: s.dials.load(Ordering::Relaxed),
            requests: s.requests.load(Ordering::Relaxed),
            request_failures: s.request_failures.load(Ordering::Relaxed),
            handled: g.handled.load(Ordering::Relaxed),
            bad_requests: g.bad_requests.load(Ordering::Relaxed),
            busy: g.busy.load(Ordering::Relaxed),
            sessions: self.inner.sessions.len(),
            link_requests: s.link_requests.load(Ordering::Relaxed),
            links: self.inner.links.open(),
            link_dials: s.link_dials.load(Ordering::Relaxed),
            refused_connections: s.refused_connections.load(Ordering::Relaxed),
            unauthenticated: self.inner.admission.unauthenticated(),
            forged_senders: g.forged_senders.load(Ordering::Relaxed),
        }
    }

    /// The gateway of `service` on another node, looked up afresh: proxies die with their
    /// session.
    pub(crate) fn gateway(
        &self,
        service: &str,
        node: NodeId,
    ) -> Result<ActorRef<GatewayMsg>, RequestError> {
        if !self.inner.sessions.contains_key(&node) {
            return Err(RequestError::NoSession(node));
        }
        let found = ractor::pg::get_members(&gateway_group(service, node))
            .into_iter()
            .next()
            .map(ActorRef::<GatewayMsg>::from);
        found.ok_or_else(|| RequestError::UnknownService {
            node,
            service: service.to_owned(),
        })
    }

    /// Stops the listener, every session and every gateway.
    pub(crate) fn stop(&self) {
        self.inner.accepting.abort();
        self.inner.stopping.send_replace(true);
        for link in self.inner.links.outgoing.iter() {
            link.close();
        }
        for g in self.inner.gateways.iter() {
            g.stop(None);
        }
        self.inner.server.stop(Some("node shutting down".into()));
    }
}

/// The process group holding `node`'s gateway for `service`.
///
/// Colony looks gateways up here for every request; tests use it to send raw bytes to a gateway.
pub fn gateway_group(service: &str, node: NodeId) -> String {
    format!("colony.gw.{service}.{node}")
}
