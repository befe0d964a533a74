//! Sessions follow membership: dial a peer when it is up, drop it when it is down, redial with
//! backoff, and close connections that never authenticate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ractor::{ActorId, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServerMessage, NodeSessionMessage};
use tokio::sync::mpsc;

use super::TransportStats;
use super::admission::Admission;
use super::links::{Cut, Links};
use crate::NodeId;

/// A dialled connection that has not authenticated by then is closed (accepted ones have
/// `admission::ACCEPT_DEADLINE`, counted from the accept).
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const RECONCILE_EVERY: Duration = Duration::from_millis(250);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Session callbacks from ractor_cluster, turned into messages for the session task.
pub(crate) enum SessionEvent {
    Opened(NodeServerSessionInformation),
    Authenticated(NodeServerSessionInformation),
    Ready(NodeServerSessionInformation),
    Disconnected(NodeServerSessionInformation),
}

pub(crate) struct Forwarder {
    pub events: mpsc::UnboundedSender<SessionEvent>,
    pub admission: Arc<Admission>,
}

// Channel sends and short locks only: the callbacks run inside the NodeServer actor and must not
// block it. The channel is unbounded but each event stands for a TCP connection, which the OS
// and the admission caps bound.
impl NodeEventSubscription for Forwarder {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        let _ = self.events.send(SessionEvent::Opened(ses));
    }
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        self.admission.forget(&ses.peer_addr);
        let _ = self.events.send(SessionEvent::Disconnected(ses));
    }
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        // Here rather than in the session task: the session's stream stops checking its
        // frames one hop sooner.
        self.admission.authenticated(&ses.peer_addr);
        let _ = self.events.send(SessionEvent::Authenticated(ses));
    }
    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        let _ = self.events.send(SessionEvent::Ready(ses));
    }
}

/// A ready session to a peer.
#[derive(Clone)]
pub(crate) struct Session {
    pub actor: ActorRef<NodeSessionMessage>,
}

/// The peer's Colony id, from the ractor node name `"<node id>@<host>"`.
pub(crate) fn peer_id(ses: &NodeServerSessionInformation) -> Option<NodeId> {
    let name = &ses.peer_name.as_ref()?.name;
    NodeId::parse(name.split('@').next()?)
}

/// When to try dialling a peer next: at once, then with a backoff that doubles up to a cap.
pub(crate) struct Dial {
    next_try: Option<Instant>,
    backoff: Duration,
}

impl Default for Dial {
    fn default() -> Self {
        Dial {
            next_try: None,
            backoff: BACKOFF_MIN,
        }
    }
}

impl Dial {
    /// Whether a dial is due at `now`; if so, the next one is pushed back.
    pub(crate) fn due(&mut self, now: Instant) -> bool {
        if self.next_try.is_some_and(|t| t > now) {
            return false;
        }
        self.next_try = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        true
    }
}

pub(crate) struct SessionTask {
    pub local: NodeId,
    pub server: ActorRef<NodeServerMessage>,
    pub sessions: Arc<DashMap<NodeId, Session>>,
    pub cut: Cut,
    pub links: Arc<Links>,
    pub stats: Arc<TransportStats>,
}

impl SessionTask {
    pub(crate) async fn run(mut self, mut events: mpsc::UnboundedReceiver<SessionEvent>) {
        let mut pending: HashMap<ActorId, (ActorRef<NodeSessionMessage>, Instant)> = HashMap::new();
        let mut dials: HashMap<NodeId, Dial> = HashMap::new();
        let mut link_dials: HashMap<NodeId, Dial> = HashMap::new();
        let mut tick = tokio::time::interval(RECONCILE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.on_event(event, &mut pending),
                    None => return,
                },
                changed = self.cut.view.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.reconcile(&mut dials, &mut link_dials);
                }
                _ = tick.tick() => {
                    self.expire_handshakes(&mut pending);
                    self.reconcile(&mut dials, &mut link_dials);
                }
            }
        }
    }

    fn on_event(
        &mut self,
        event: SessionEvent,
        pending: &mut HashMap<ActorId, (ActorRef<NodeSessionMessage>, Instant)>,
    ) {
        match event {
            SessionEvent::Opened(ses) => {
                pending.insert(ses.actor.get_id(), (ses.actor.clone(), Instant::now()));
            }
            SessionEvent::Authenticated(ses) => {
                pending.remove(&ses.actor.get_id());
                if let Some(peer) = peer_id(&ses)
                    && self.cut.is_cut(peer)
                {
                    ses.actor
                        .stop(Some("peer cut off by the fault filter".into()));
                }
            }
            SessionEvent::Ready(ses) => match peer_id(&ses) {
                Some(peer) if !self.cut.is_cut(peer) => {
                    tracing::debug!(%peer, "session ready");
                    self.sessions.insert(peer, Session { actor: ses.actor });
                }
                _ => ses.actor.stop(Some("session not wanted".into())),
            },
            SessionEvent::Disconnected(ses) => {
                if pending.remove(&ses.actor.get_id()).is_some() {
                    self.stats
                        .handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer = %ses.peer_addr, "connection closed before authenticating");
                }
                if let Some(peer) = peer_id(&ses) {
                    self.sessions
                        .remove_if(&peer, |_, s| s.actor.get_id() == ses.actor.get_id());
                }
            }
        }
    }

    fn expire_handshakes(
        &mut self,
        pending: &mut HashMap<ActorId, (ActorRef<NodeSessionMessage>, Instant)>,
    ) {
        let now = Instant::now();
        pending.retain(|_, (actor, opened)| {
            if now.duration_since(*opened) < HANDSHAKE_TIMEOUT {
                return true;
            }
            self.stats
                .handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("connection did not authenticate within {HANDSHAKE_TIMEOUT:?}; closed");
            actor.stop(Some("handshake timeout".into()));
            false
        });
    }

    /// Dials up members we lack a session to, and drops sessions to members no longer up.
    fn reconcile(
        &mut self,
        dials: &mut HashMap<NodeId, Dial>,
        link_dials: &mut HashMap<NodeId, Dial>,
    ) {
        let view = self.cut.view.borrow().clone();
        let blocked = self.cut.blocked.borrow().clone();
        let wanted: HashMap<NodeId, SocketAddr> = view
            .members
            .iter()
            .skip(1)
            // Links and sessions follow membership: a merely suspected peer keeps them (it may
            // refute the suspicion, and a caller's own timeout says how long to wait for it);
            // they go when it is declared down or leaves.
            .filter(|m| !m.state.is_gone() && !blocked.contains(&m.addr))
            .map(|m| (m.id, m.addr))
            .collect();
        self.sessions.retain(|peer, session| {
            let keep = wanted.contains_key(peer);
            if !keep {
                tracing::debug!(%peer, "dropping session to a member that is not up");
                session.actor.stop(Some("member not up".into()));
            }
            keep
        });
        // Each side dials its own link, which carries its own requests.
        self.links.reconcile(&wanted, link_dials);
        dials.retain(|peer, _| wanted.contains_key(peer) && !self.sessions.contains_key(peer));
        let now = Instant::now();
        for (peer, addr) in wanted {
            // One side dials, so that the two never race to build duplicate sessions.
            if peer < self.local || self.sessions.contains_key(&peer) {
                continue;
            }
            if !dials.entry(peer).or_default().due(now) {
                continue;
            }
            self.stats.dials.fetch_add(1, Ordering::Relaxed);
            let server = self.server.clone();
            tokio::spawn(async move {
                if let Err(e) = ractor_cluster::client_connect(&server, addr).await {
                    tracing::debug!(%peer, %addr, error = %e, "dial failed; will retry");
                }
            });
        }
    }
}
