//! Links follow membership: dial a member when it comes up (or is merely suspected), close the
//! link when it is declared down, leaves or is cut off, redial with backoff.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tracing::Instrument;

use super::{Link, Links, handshake};
use crate::NodeId;

/// A dialled link that has not finished its handshake by then is given up (accepted ones have
/// `admission::ACCEPT_DEADLINE`, counted from the accept).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often links are reconciled besides membership changes: redials after backoff, and
/// links that closed on their own.
const RECONCILE_EVERY: Duration = Duration::from_millis(250);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// When to try dialling a peer next: at once, then with a backoff that doubles up to a cap.
struct Dial {
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
    fn due(&mut self, now: Instant) -> bool {
        if self.next_try.is_some_and(|t| t > now) {
            return false;
        }
        self.next_try = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        true
    }
}

/// Keeps this node's outgoing links in step with membership until the node stops.
pub(crate) async fn follow_membership(links: Arc<Links>) {
    let mut cut = links.cut.clone();
    let mut dials: HashMap<NodeId, Dial> = HashMap::new();
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *cut.stopping.borrow_and_update() {
            return;
        }
        links.reconcile(&mut dials);
        let changed = tokio::select! {
            changed = cut.view.changed() => changed,
            changed = cut.blocked.changed() => changed,
            changed = cut.stopping.changed() => changed,
            _ = tick.tick() => Ok(()),
        };
        if changed.is_err() {
            return;
        }
    }
}

impl Links {
    /// Dials links to the members not counted out that lack one, and closes links to the others.
    fn reconcile(self: &Arc<Self>, dials: &mut HashMap<NodeId, Dial>) {
        let view = self.cut.view.borrow().clone();
        let blocked = self.cut.blocked.borrow().clone();
        let wanted: HashMap<NodeId, SocketAddr> = view
            .members
            .iter()
            .skip(1)
            // A merely suspected peer keeps its link (it may refute the suspicion, and a
            // caller's own timeout says how long to wait for it); it goes when the peer is
            // declared down or leaves.
            .filter(|m| !m.state.is_gone() && !blocked.contains(&m.addr))
            .map(|m| (m.id, m.addr))
            .collect();
        self.outgoing.retain(|peer, link| {
            let keep = wanted.contains_key(peer) && !link.is_closed();
            if !keep {
                link.close();
            }
            keep
        });
        dials.retain(|peer, _| wanted.contains_key(peer) && !self.outgoing.contains_key(peer));
        let now = Instant::now();
        // Each side dials its own link, which carries its own requests.
        for (&peer, &addr) in &wanted {
            if self.outgoing.contains_key(&peer) || !dials.entry(peer).or_default().due(now) {
                continue;
            }
            self.stats.link_dials.fetch_add(1, Ordering::Relaxed);
            let span = self.cut.span(peer);
            tokio::spawn(self.clone().dial(peer, addr).instrument(span));
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
                tracing::debug!(%addr, error = %e, "link dial failed; will retry");
                return;
            }
            Err(_) => {
                tracing::debug!(%addr, "link handshake timed out; will retry");
                return;
            }
        };
        // A link that closes later is dropped (and redialled) by the next reconcile.
        let link = Link::start(stream, self.frame_limit, self.stats.clone(), &self.replies);
        if let Some(old) = self.outgoing.insert(peer, link.clone()) {
            old.close();
        }
        // Stopped meanwhile: `Transport::stop` may have closed the others before this one
        // was in the table.
        if *self.cut.stopping.borrow() {
            link.close();
            return;
        }
        // Requests waiting for this link go now.
        self.opened.send_replace(());
        tracing::debug!("link ready");
    }
}
