//! Sending changes to the other nodes: synchronous writes wait for every target, asynchronous
//! ones go through one ordered queue per peer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use colony_runtime::transport::RequestError;
use colony_runtime::{Node, NodeId, wire};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::core::SyncWrite;
use super::msg::{Batch, Op, SERVICE};
use super::registry::Shared;

/// Changes queued for one peer before the queue overflows: it is then emptied and the peer
/// told to clear.
const QUEUE: usize = 10_000;
/// Changes sent in one asynchronous request at most.
const BATCH: usize = 512;
/// How long one asynchronous request may take.
const ASYNC_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct Replicator {
    node: Node,
    peers: Mutex<HashMap<NodeId, Peer>>,
}

struct Peer {
    tx: mpsc::Sender<(String, Op)>,
    overflowed: Arc<AtomicBool>,
}

impl Replicator {
    pub(crate) fn new(node: Node) -> Self {
        Replicator {
            node,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Sends the synchronous change `write` (`ops`) to `targets` and waits for all of them, at
    /// most until `deadline`; then, for each target that did not acknowledge, until the lease it may
    /// hold has run out ([`SyncWrite::holds`]). Returns how many did not acknowledge; each is
    /// logged.
    pub(crate) async fn send_sync(
        &self,
        targets: &[NodeId],
        write: &SyncWrite,
        ops: Vec<(String, Op)>,
        deadline: tokio::time::Instant,
    ) -> u64 {
        if targets.is_empty() {
            return 0;
        }
        let batch = Batch {
            seq: Some(write.seq),
            dropped: 0,
            ops,
        };
        let Ok(payload) = wire::encode_payload(&batch) else {
            return targets.len() as u64;
        };
        let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
        // One request to every target at once, from the writer's own task.
        let answers = self
            .node
            .request_each(targets, SERVICE, "apply", payload.clone(), Some(timeout))
            .await;
        // A peer whose link did not open within the timeout, or whose cache service is not
        // registered yet (it just joined), is tried again until the deadline: skipping it would
        // leave it stale.
        let mut unacked = Vec::new();
        let mut refused = |peer: NodeId, e: RequestError| {
            tracing::warn!(peer = %self.node.member_name(peer), id = %peer, error = %e, "cache change not acknowledged");
            unacked.push(peer);
        };
        let mut again = Vec::new();
        for (&peer, answer) in targets.iter().zip(answers) {
            match answer {
                Ok(_) => {}
                Err(e) if not_yet_connected(&e) && is_reachable(&self.node, peer) => {
                    again.push(peer)
                }
                Err(e) => refused(peer, e),
            }
        }
        if !again.is_empty() {
            let retried = again
                .iter()
                .map(|&peer| deliver(&self.node, peer, &payload, deadline));
            let answers = futures_util::future::join_all(retried).await;
            for (peer, answer) in again.into_iter().zip(answers) {
                if let Err(e) = answer {
                    refused(peer, e);
                }
            }
        }
        // A peer that did not acknowledge may still serve under a lease granted before this
        // change: return only once that lease has run out, so it clears before serving again.
        if let Some(until) = write.hold_until(&unacked).filter(|t| *t > Instant::now()) {
            tokio::time::sleep_until(until.into()).await;
        }
        unacked.len() as u64
    }

    /// Queues `op` for each of `targets`; each peer gets changes in the order queued.
    pub(crate) fn send_async(&self, shared: &Arc<Shared>, targets: &[NodeId], cache: &str, op: Op) {
        let mut peers = self.peers.lock().expect("peers lock");
        peers.retain(|_, p| !p.tx.is_closed());
        for &peer in targets {
            let entry = peers
                .entry(peer)
                .or_insert_with(|| spawn_peer(Arc::downgrade(shared), peer));
            match entry.tx.try_send((cache.to_owned(), op.clone())) {
                Ok(()) => {}
                // Full: what is queued no longer matters, the peer will be told to clear.
                Err(TrySendError::Full(_)) => entry.overflowed.store(true, Ordering::Release),
                // Its queue gave up meanwhile (and told the core): start a new one.
                Err(TrySendError::Closed(item)) => {
                    *entry = spawn_peer(Arc::downgrade(shared), peer);
                    if entry.tx.try_send(item).is_err() {
                        entry.overflowed.store(true, Ordering::Release);
                    }
                }
            }
        }
    }
}

/// Starts the ordered queue to `peer`: batches of changes, retried while the peer is not gone.
/// Every change it cannot deliver ends in a count the peer sees ([`Batch::dropped`]), so the
/// peer clears: nothing is lost silently.
fn spawn_peer(shared: Weak<Shared>, peer: NodeId) -> Peer {
    let (tx, mut rx) = mpsc::channel::<(String, Op)>(QUEUE);
    let overflowed = Arc::new(AtomicBool::new(false));
    let flag = overflowed.clone();
    tokio::spawn(async move {
        let mut ops = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut ops, BATCH).await > 0 {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if flag.swap(false, Ordering::AcqRel) {
                // Everything queued so far is dropped, then counted: the peer's clear comes
                // after all of it.
                ops.clear();
                while rx.try_recv().is_ok() {}
                shared.with_core(|core, _, _| core.gave_up_async(peer));
                tracing::warn!(peer = %shared.node.member_name(peer), id = %peer, "cache change queue overflowed; the peer clears its replicated caches");
                continue;
            }
            let dropped = shared.with_core(|core, _, _| core.dropped_for(peer));
            let batch = Batch {
                seq: None,
                dropped,
                ops: std::mem::take(&mut ops),
            };
            let Ok(payload) = wire::encode_payload(&batch) else {
                continue;
            };
            // Retry while the peer is not gone: dropping a change would leave it stale.
            let mut backoff = Duration::from_millis(20);
            loop {
                let answer = shared
                    .node
                    .request_raw(peer, SERVICE, "apply", payload.clone(), Some(ASYNC_TIMEOUT))
                    .await;
                if answer.is_ok() {
                    break;
                }
                if !is_reachable(&shared.node, peer) {
                    // Closed first, counted after: whatever was queued precedes the count.
                    rx.close();
                    while rx.try_recv().is_ok() {}
                    shared.with_core(|core, _, _| core.gave_up_async(peer));
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    });
    Peer { tx, overflowed }
}

/// Sends one batch to `peer` by `deadline`, waiting while it is up but not connected yet.
async fn deliver(
    node: &Node,
    peer: NodeId,
    payload: &[u8],
    deadline: tokio::time::Instant,
) -> Result<(), RequestError> {
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let answer = node
            .request_raw(peer, SERVICE, "apply", payload.to_vec(), Some(left))
            .await;
        match answer {
            Ok(_) => return Ok(()),
            Err(e) if not_yet_connected(&e) && !left.is_zero() && is_reachable(node, peer) => {
                tokio::time::sleep(Duration::from_millis(5).min(left)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a request failed only because the peer is not connected (yet): nothing was sent.
fn not_yet_connected(error: &RequestError) -> bool {
    matches!(
        error,
        RequestError::NotConnected { .. } | RequestError::UnknownService { .. }
    )
}

/// Whether `peer` may still answer: not known to be down or gone.
fn is_reachable(node: &Node, peer: NodeId) -> bool {
    let view = node.watch_members().borrow().clone();
    !view
        .members
        .iter()
        .any(|m| m.id == peer && m.state.is_gone())
}
