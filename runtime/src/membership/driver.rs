//! The membership shell: one task that owns the UDP socket, the core and its timers.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use super::core::{MAX_DATAGRAM, MembershipCore, Output};
use super::event::MemberEvent;
use super::incarnation::record_incarnation;
use super::{MembershipStats, View};
use crate::events::Events;

enum Command {
    Leave(oneshot::Sender<()>),
    SetBlocked(HashSet<SocketAddr>),
}

/// The node's handle on its membership task.
#[derive(Clone)]
pub(crate) struct MembershipHandle {
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<Arc<View>>,
    stats: Arc<Mutex<MembershipStats>>,
}

impl MembershipHandle {
    pub(crate) fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    pub(crate) fn stats(&self) -> MembershipStats {
        *self.stats.lock().expect("stats lock")
    }

    /// Leaves the cluster; returns once the goodbye packets are sent.
    pub(crate) async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    pub(crate) async fn set_blocked(&self, blocked: HashSet<SocketAddr>) {
        let _ = self.commands.send(Command::SetBlocked(blocked)).await;
    }
}

/// Prepares the membership task on `socket`; nothing is sent until [`Pending::start`].
pub(crate) fn prepare(
    core: MembershipCore,
    socket: UdpSocket,
    events: Events,
    state_dir: PathBuf,
) -> (MembershipHandle, Pending) {
    let (view_tx, view) = watch::channel(Arc::new(snapshot(&core)));
    let (commands, rx) = mpsc::channel(16);
    let stats = Arc::new(Mutex::new(core.stats()));
    let shell = Shell {
        core,
        socket,
        events,
        state_dir,
        view_tx,
        stats: stats.clone(),
        published: u64::MAX,
    };
    let handle = MembershipHandle {
        commands,
        view,
        stats,
    };
    (handle, Pending { shell, rx })
}

/// A membership task that has not started yet.
pub(crate) struct Pending {
    shell: Shell,
    rx: mpsc::Receiver<Command>,
}

impl Pending {
    /// Starts the task and begins joining through `seeds`.
    pub(crate) fn start(mut self, seeds: &[SocketAddr]) {
        self.shell.core.join(Instant::now(), seeds);
        // Publish the joining state at once: `Node::joined` must not read the view from before.
        self.shell.published = self.shell.core.version();
        self.shell
            .view_tx
            .send_replace(Arc::new(snapshot(&self.shell.core)));
        tokio::spawn(self.shell.run(self.rx));
    }
}

fn snapshot(core: &MembershipCore) -> View {
    View {
        members: core.members(),
        up: core.up_ids(),
        stats: core.stats(),
    }
}

struct Shell {
    core: MembershipCore,
    socket: UdpSocket,
    events: Events,
    state_dir: PathBuf,
    view_tx: watch::Sender<Arc<View>>,
    stats: Arc<Mutex<MembershipStats>>,
    published: u64,
}

impl Shell {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        // Larger than any datagram we send, so an oversized one is cut and fails its tag check.
        let mut buf = vec![0u8; MAX_DATAGRAM + 512];
        self.flush().await;
        loop {
            let deadline = self
                .core
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Command::Leave(done)) => {
                        self.core.leave(Instant::now());
                        self.flush().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(Command::SetBlocked(blocked)) => self.core.set_blocked(blocked),
                    None => return,
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => self.core.handle_packet(Instant::now(), from, &buf[..n]),
                    // ICMP errors from earlier sends surface here on Linux; they say nothing new.
                    Err(e) => tracing::trace!(error = %e, "gossip recv"),
                },
                () = tokio::time::sleep_until(deadline.into()) => self.core.handle_timeout(Instant::now()),
            }
            self.flush().await;
        }
    }

    /// Carries out every queued output, then republishes the view if it changed.
    async fn flush(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Send { to, packet } => {
                    if let Err(e) = self.socket.send_to(&packet, to).await {
                        tracing::trace!(%to, error = %e, "gossip send");
                    }
                }
                Output::Event(event) => {
                    log_event(&event);
                    self.events.publish(event);
                }
                Output::Renewed(identity) => {
                    // This node itself comes back: services that may have missed changes while
                    // it was counted out (caches) hear it like any other rejoin.
                    let member = super::Member::from_identity(&identity, self.core.local().state);
                    self.events.publish(MemberEvent::NodeRejoined {
                        previous: member.id,
                        member,
                        lost_for: std::time::Duration::ZERO,
                    });
                    tracing::warn!(
                        incarnation = identity.incarnation,
                        "this node was declared down by the cluster; rejoined with a new incarnation"
                    );
                    if let Err(e) = record_incarnation(&self.state_dir, identity.incarnation) {
                        tracing::error!(error = %e, "cannot record the incarnation in the state directory");
                    }
                }
                Output::Rejected { from, error } => {
                    tracing::warn!(%from, "gossip packet rejected: {error}");
                }
                Output::RefusedBy(peer) => {
                    tracing::error!(
                        %peer,
                        "refused by the cluster: this node's cookie differs from the cluster's; \
                         set the same --cookie (or COLONY_COOKIE) on every node"
                    );
                }
            }
        }
        *self.stats.lock().expect("stats lock") = self.core.stats();
        if self.core.version() != self.published {
            self.published = self.core.version();
            self.view_tx.send_replace(Arc::new(snapshot(&self.core)));
        }
    }
}

fn log_event(event: &MemberEvent) {
    let m = event.member();
    match event {
        MemberEvent::NodeUp(_) => {
            tracing::info!(node = %m.name, id = %m.id, addr = %m.addr, "member up")
        }
        MemberEvent::NodeSuspect(_) => tracing::warn!(node = %m.name, id = %m.id, "member suspect"),
        MemberEvent::NodeDown(_) => tracing::warn!(node = %m.name, id = %m.id, "member down"),
        MemberEvent::NodeLeft(_) => tracing::info!(node = %m.name, id = %m.id, "member left"),
        MemberEvent::NodeRejoined { previous, .. } => tracing::info!(
            node = %m.name, id = %m.id, %previous, incarnation = m.incarnation, "member rejoined"
        ),
    }
}
