//! Sending changes to the other nodes: synchronous writes wait for every up node, asynchronous
//! ones go through one ordered queue per peer.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colony_runtime::transport::RequestError;
use colony_runtime::{Node, NodeId, wire};
use tokio::sync::mpsc;

use super::msg::{Batch, Op, SERVICE};

/// Changes queued for one peer before the queue overflows into a full clear.
const QUEUE: usize = 10_000;
/// Changes sent in one asynchronous request at most.
const BATCH: usize = 512;
/// How long one asynchronous request may take.
const ASYNC_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct Replicator {
    node: Node,
    greetings: Arc<super::peers::Peers>,
    peers: Mutex<HashMap<NodeId, Peer>>,
}

struct Peer {
    tx: mpsc::Sender<(String, Op)>,
    /// Caches ever sent to this peer: what to clear if its queue overflows.
    names: Arc<Mutex<BTreeSet<String>>>,
    overflowed: Arc<std::sync::atomic::AtomicBool>,
}

impl Replicator {
    pub(crate) fn new(node: Node, greetings: Arc<super::peers::Peers>) -> Self {
        Replicator {
            node,
            greetings,
            peers: Mutex::new(HashMap::new()),
        }
    }

    fn peers(&self) -> Vec<NodeId> {
        // The shared view itself: cloning the member list would cost an allocation per member
        // on every write.
        let view = self.node.watch_members().borrow().clone();
        self.greetings.targets(self.node.id(), &view.members)
    }

    /// Sends `ops` to every other up node and waits for all of them, at most `timeout`.
    /// Returns how many did not acknowledge; each is logged.
    pub(crate) async fn send_sync(&self, ops: Vec<(String, Op)>, timeout: Duration) -> u64 {
        let peers = self.peers();
        if peers.is_empty() {
            return 0;
        }
        let Ok(payload) = wire::encode_payload(&Batch { ops }) else {
            return peers.len() as u64;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        // One request to every peer at once, from the writer's own task.
        let answers = self
            .node
            .request_each(&peers, SERVICE, "apply", payload.clone(), Some(timeout))
            .await;
        // A peer not connected yet (it just joined, or its session is being redialled) is
        // waited for: skipping it would leave it stale.
        let retries = peers.iter().zip(answers).map(|(&peer, answer)| {
            let payload = &payload;
            async move {
                let answer = match answer {
                    Err(e) if not_yet_connected(&e) && is_reachable(&self.node, peer) => {
                        deliver(&self.node, peer, payload, deadline).await
                    }
                    answer => answer.map(drop),
                };
                (peer, answer)
            }
        });
        let mut unacked = 0;
        for (peer, answer) in futures_util::future::join_all(retries).await {
            if let Err(e) = answer {
                unacked += 1;
                tracing::warn!(%peer, error = %e, "cache change not acknowledged");
            }
        }
        unacked
    }

    /// Queues `op` for every other up node; each peer gets changes in the order queued.
    pub(crate) fn send_async(&self, cache: &str, op: Op) {
        let mut peers = self.peers.lock().expect("peers lock");
        for peer in self.peers() {
            let entry = peers.entry(peer).or_insert_with(|| self.spawn_peer(peer));
            entry
                .names
                .lock()
                .expect("names lock")
                .insert(cache.to_owned());
            if entry.tx.try_send((cache.to_owned(), op.clone())).is_err() {
                // Full: what is queued no longer matters, the peer will be told to clear.
                entry
                    .overflowed
                    .store(true, std::sync::atomic::Ordering::Release);
            }
        }
        peers.retain(|_, p| !p.tx.is_closed());
    }

    fn spawn_peer(&self, peer: NodeId) -> Peer {
        let (tx, mut rx) = mpsc::channel::<(String, Op)>(QUEUE);
        let names: Arc<Mutex<BTreeSet<String>>> = Arc::new(Mutex::new(BTreeSet::new()));
        let overflowed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (node, names2, overflowed2) = (self.node.clone(), names.clone(), overflowed.clone());
        tokio::spawn(async move {
            let mut ops = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut ops, BATCH).await > 0 {
                if overflowed2.swap(false, std::sync::atomic::Ordering::AcqRel) {
                    while rx.try_recv().is_ok() {}
                    let stamp = super::stamp::LOADED;
                    ops = names2
                        .lock()
                        .expect("names lock")
                        .iter()
                        .map(|n| (n.clone(), Op::Clear { stamp }))
                        .collect();
                    tracing::warn!(%peer, "cache change queue overflowed; the peer clears its replicated caches");
                }
                let batch = Batch {
                    ops: std::mem::take(&mut ops),
                };
                let Ok(payload) = wire::encode_payload(&batch) else {
                    continue;
                };
                // Retry while the peer is up: dropping a change would leave it stale.
                let mut backoff = Duration::from_millis(20);
                loop {
                    let answer = node
                        .request_raw(peer, SERVICE, "apply", payload.clone(), Some(ASYNC_TIMEOUT))
                        .await;
                    if answer.is_ok() {
                        break;
                    }
                    if !is_reachable(&node, peer) {
                        // Down: it clears its replicated caches when it comes back.
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        });
        Peer {
            tx,
            names,
            overflowed,
        }
    }
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
        RequestError::NoSession(_) | RequestError::UnknownService { .. }
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
