//! The lock actor: the shell around this node's [`LockTable`] and [`Holdings`].
//!
//! Each message becomes one core call with the current time, then one `flush` carries out the
//! outputs in a fixed order (table replies, renewals to send, lost signals) and re-arms the
//! single timer at the earliest deadline of both cores.
//!
//! The state sits behind a mutex that the actor and [`LockHandle::table`] share: an operation
//! on the table (from the `locks` gateway, or from this node for a name it owns) takes the same
//! step in the caller's task instead of a hand-off to the actor's task and back, which on a busy
//! machine cost more than the rest of a remote acquire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use colony_runtime::membership::View;
use colony_runtime::{Node, NodeId};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{oneshot, watch};

use super::core::{self, Answer, Holder, LockTable, RequestId, TableConfig, Wait};
use super::holdings::{self, Holdings, HoldingsConfig, RenewFailure};
use super::msg::{LeaseMsg, SERVICE};

/// An operation on the lock table of the owner.
#[derive(Debug, Clone)]
pub(crate) enum TableOp {
    Acquire {
        name: String,
        holder: Holder,
        wait: Option<Duration>,
    },
    Renew {
        name: String,
        holder: Holder,
        token: u64,
    },
    Release {
        name: String,
        holder: Holder,
        token: u64,
    },
    Cancel {
        name: String,
        holder: Holder,
    },
}

/// The actor's messages. Local only: remote requests arrive through the `locks` gateway.
pub(crate) enum LockMsg {
    /// An owner-side operation; the answer goes to `reply`.
    Table(TableOp, oneshot::Sender<Answer>),
    /// A guard of this node was granted `name`; renew it and keep `lease` up to date.
    Held {
        guard: u64,
        name: String,
        token: u64,
        sent_at: Instant,
        lease: watch::Sender<Lease>,
    },
    /// A guard released or gave up its lock.
    Forget(u64),
    /// A renewal came back.
    Renewed {
        guard: u64,
        sent_at: Instant,
        outcome: Result<(), RenewFailure>,
    },
    /// Membership changed.
    View(Arc<View>),
    /// The earliest deadline passed.
    Tick,
    /// The steady beat by which the actor notices that it did not run for a while.
    Heartbeat,
    /// Report the sizes of both tables.
    Stats(oneshot::Sender<LockStats>),
}

/// How much state the lock service of a node keeps: both numbers return to zero when nothing
/// is held or awaited, however many names were ever used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct LockStats {
    /// Names this node owns that have a holder or a waiter.
    pub owned_names: usize,
    /// Guards of this node that hold a lock.
    pub held_guards: usize,
    /// Answers owed to callers (waits in progress).
    pub pending_answers: usize,
}

impl ractor::Message for LockMsg {}

/// A guard's lease as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    /// When it ends if not renewed.
    pub valid_until: Instant,
    /// Whether it was lost.
    pub lost: bool,
}

#[derive(Clone)]
pub(crate) struct LockActor {
    pub node: Node,
    pub table: TableConfig,
    pub holdings: HoldingsConfig,
    /// A gap between two handled messages longer than this means the process was paused.
    pub pause_threshold: Duration,
}

pub(crate) struct LockState {
    table: LockTable,
    holdings: Holdings,
    pending: HashMap<RequestId, oneshot::Sender<Answer>>,
    next_request: RequestId,
    leases: HashMap<u64, watch::Sender<Lease>>,
    /// The earliest deadline of both cores, watched by the timer task.
    deadline: watch::Sender<Option<Instant>>,
    /// When the actor last handled a message.
    alive: Instant,
}

/// How often the actor wakes even when idle, so that a pause shows as a gap.
const HEARTBEAT: Duration = Duration::from_millis(100);

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The lock service's state, shared by the actor and [`LockHandle`].
pub(crate) type SharedState = Arc<Mutex<LockState>>;

impl LockActor {
    /// The empty state, and the receiving end of its deadline for the actor's timer task.
    pub(crate) fn initial_state(&self) -> (SharedState, watch::Receiver<Option<Instant>>) {
        let (deadline, wake) = watch::channel(None::<Instant>);
        let state = LockState {
            table: LockTable::new(self.node.id(), self.table),
            holdings: Holdings::new(self.holdings),
            pending: HashMap::new(),
            next_request: 0,
            leases: HashMap::new(),
            deadline,
            alive: Instant::now(),
        };
        (Arc::new(Mutex::new(state)), wake)
    }
}

/// A way into the lock service that runs table operations in the caller's task.
#[derive(Clone)]
pub(crate) struct LockHandle {
    pub actor: ActorRef<LockMsg>,
    /// The actor's settings (a node handle and numbers: cheap to clone).
    pub config: LockActor,
    pub state: SharedState,
}

/// The lock service has stopped: its node is stopping.
#[derive(Debug)]
pub(crate) struct Stopped;

impl LockHandle {
    /// Handles `message` now, in the caller's task, as the actor would.
    pub(crate) fn send(&self, message: LockMsg) -> Result<(), Stopped> {
        // Without the actor nothing renews, ticks or follows membership: act on nothing.
        if self.actor.get_status() != ractor::ActorStatus::Running {
            return Err(Stopped);
        }
        let mut state = self.state.lock().expect("lock state");
        self.config
            .step(&self.actor, &self.state, &mut state, message);
        Ok(())
    }

    /// Applies `op` now; the answer comes on the receiver (at once, unless `op` waits).
    pub(crate) fn table(&self, op: TableOp) -> Result<oneshot::Receiver<Answer>, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.send(LockMsg::Table(op, tx))?;
        Ok(rx)
    }
}

impl Actor for LockActor {
    type Msg = LockMsg;
    type State = SharedState;
    type Arguments = (SharedState, watch::Receiver<Option<Instant>>);

    async fn pre_start(
        &self,
        myself: ActorRef<LockMsg>,
        (state, mut wake): (SharedState, watch::Receiver<Option<Instant>>),
    ) -> Result<SharedState, ActorProcessingErr> {
        myself.send_interval(HEARTBEAT, || LockMsg::Heartbeat);
        // One long-lived timer task, told the earliest deadline through a watch: cheaper than a
        // spawned timer each time the deadline moves (every grant and release).
        let me = myself.clone();
        tokio::spawn(async move {
            loop {
                let at = *wake.borrow_and_update();
                let fired = match at {
                    Some(at) => tokio::select! {
                        changed = wake.changed() => { if changed.is_err() { return } false }
                        () = tokio::time::sleep_until(at.into()) => true,
                    },
                    None => {
                        if wake.changed().await.is_err() {
                            return;
                        }
                        false
                    }
                };
                // After a tick, wait for the actor to set the next deadline.
                if fired && (me.cast(LockMsg::Tick).is_err() || wake.changed().await.is_err()) {
                    return;
                }
            }
        });
        // Feed every membership change to the actor, the current view first.
        let mut views = self.node.watch_members();
        let me = myself.clone();
        tokio::spawn(async move {
            loop {
                let view = views.borrow_and_update().clone();
                if me.cast(LockMsg::View(view)).is_err() {
                    return;
                }
                if views.changed().await.is_err() {
                    // The node left the cluster: the lock service ends with it.
                    me.stop(None);
                    return;
                }
            }
        });
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<LockMsg>,
        message: LockMsg,
        state: &mut SharedState,
    ) -> Result<(), ActorProcessingErr> {
        let shared = state.clone();
        let mut state = shared.lock().expect("lock state");
        self.step(&myself, &shared, &mut state, message);
        Ok(())
    }
}

impl LockActor {
    /// Handles one message, wherever it came from: the actor's mailbox or a [`LockHandle`].
    fn step(
        &self,
        myself: &ActorRef<LockMsg>,
        shared: &SharedState,
        state: &mut LockState,
        message: LockMsg,
    ) {
        let now = Instant::now();
        // A gap longer than the pause threshold means this process did not run: everything it
        // knows may be stale, so it must not act on it before anything else.
        if now.saturating_duration_since(state.alive) > self.pause_threshold {
            tracing::warn!(
                gap_ms = now.saturating_duration_since(state.alive).as_millis() as u64,
                "the lock service did not run for a while; starting a new term"
            );
            state.table.went_dark(state.alive, now, wall_ms());
            state.holdings.handle_timeout(now);
        }
        state.alive = now;
        match message {
            LockMsg::Heartbeat => {}
            LockMsg::Table(op, reply) => {
                state.next_request += 1;
                let request = state.next_request;
                state.pending.insert(request, reply);
                apply(&mut state.table, now, op, request);
            }
            LockMsg::Held {
                guard,
                name,
                token,
                sent_at,
                lease,
            } => {
                state.holdings.granted(now, guard, name, token, sent_at);
                state.leases.insert(guard, lease);
            }
            LockMsg::Forget(guard) => {
                state.holdings.released(guard);
                state.leases.remove(&guard);
            }
            LockMsg::Renewed {
                guard,
                sent_at,
                outcome,
            } => match outcome {
                Ok(()) => state.holdings.renewed(now, guard, sent_at),
                Err(why) => state.holdings.renew_failed(now, guard, why),
            },
            LockMsg::View(view) => {
                let has_quorum = self.node.is_quorum(view.up.len());
                state
                    .table
                    .set_view(now, wall_ms(), view.up.clone(), has_quorum);
                if !has_quorum {
                    state.holdings.quorum_lost();
                }
            }
            LockMsg::Stats(reply) => {
                let _ = reply.send(LockStats {
                    owned_names: state.table.len(),
                    held_guards: state.holdings.len(),
                    pending_answers: state.pending.len(),
                });
            }
            LockMsg::Tick => {
                state.table.handle_timeout(now);
                state.holdings.handle_timeout(now);
                self.flush(myself, shared, state);
                // The timer task waits for this answer, even if the deadline did not move.
                let next = next_deadline(state);
                state.deadline.send_replace(next);
                return;
            }
        }
        self.flush(myself, shared, state);
    }
}

fn apply(table: &mut LockTable, now: Instant, op: TableOp, request: RequestId) {
    match op {
        TableOp::Acquire { name, holder, wait } => {
            let wait = wait.map_or(Wait::No, |w| Wait::Until(now + w));
            table.acquire(now, &name, holder, request, wait);
        }
        TableOp::Renew {
            name,
            holder,
            token,
        } => table.renew(now, &name, holder, token, request),
        TableOp::Release {
            name,
            holder,
            token,
        } => table.release(now, &name, holder, token, request),
        TableOp::Cancel { name, holder } => table.cancel(now, &name, holder, request),
    }
}

impl LockActor {
    /// Carries out the outputs of both cores and moves the timer's deadline.
    fn flush(&self, myself: &ActorRef<LockMsg>, shared: &SharedState, state: &mut LockState) {
        while let Some(core::Output::Reply { request, answer }) = state.table.poll_output() {
            if let Some(reply) = state.pending.remove(&request) {
                // The caller may have given up; its cancel will follow.
                let _ = reply.send(answer);
            }
        }
        while let Some(output) = state.holdings.poll_output() {
            match output {
                holdings::Output::Renew { guard, name, token } => {
                    let holder = Holder {
                        node: self.node.id(),
                        guard,
                    };
                    let timeout = self.holdings.renew_every();
                    let service = LockHandle {
                        actor: myself.clone(),
                        config: self.clone(),
                        state: shared.clone(),
                    };
                    tokio::spawn(renew(
                        self.node.clone(),
                        service,
                        holder,
                        name,
                        token,
                        timeout,
                    ));
                }
                holdings::Output::Extended { guard, valid_until } => {
                    if let Some(lease) = state.leases.get(&guard) {
                        lease.send_modify(|l| l.valid_until = valid_until);
                    }
                }
                holdings::Output::Lost { guard } => {
                    if let Some(lease) = state.leases.remove(&guard) {
                        lease.send_modify(|l| l.lost = true);
                    }
                }
            }
        }
        let next = next_deadline(state);
        state.deadline.send_if_modified(|d| {
            let moved = *d != next;
            *d = next;
            moved
        });
    }
}

fn next_deadline(state: &LockState) -> Option<Instant> {
    [state.table.poll_timeout(), state.holdings.poll_timeout()]
        .into_iter()
        .flatten()
        .min()
}

/// Sends one renewal to the name's current owner and reports back to the actor.
async fn renew(
    node: Node,
    service: LockHandle,
    holder: Holder,
    name: String,
    token: u64,
    timeout: Duration,
) {
    let sent_at = Instant::now();
    let answer = ask(
        &node,
        &service,
        TableOp::Renew {
            name,
            holder,
            token,
        },
        timeout,
    )
    .await;
    let outcome = match answer {
        Some(Answer::Renewed) => Ok(()),
        Some(Answer::NotHeld) => Err(RenewFailure::NotHeld),
        _ => Err(RenewFailure::Unreachable),
    };
    let _ = service.actor.cast(LockMsg::Renewed {
        guard: holder.guard,
        sent_at,
        outcome,
    });
}

/// Sends `op` to the owner of its name, this node or another; `None` when no answer came.
pub(crate) async fn ask(
    node: &Node,
    service: &LockHandle,
    op: TableOp,
    timeout: Duration,
) -> Option<Answer> {
    let name = match &op {
        TableOp::Acquire { name, .. }
        | TableOp::Renew { name, .. }
        | TableOp::Release { name, .. }
        | TableOp::Cancel { name, .. } => name.clone(),
    };
    let owner: NodeId = node.owner_of(&core::key(&name))?;
    if owner == node.id() {
        let answer = service.table(op).ok()?;
        return tokio::time::timeout(timeout, answer).await.ok()?.ok();
    }
    let (kind, payload) = match op {
        TableOp::Acquire { name, holder, wait } => (
            "acquire",
            colony_runtime::wire::encode_payload(&super::msg::AcquireMsg {
                name,
                holder,
                wait_ms: wait.map_or(0, |w| w.as_millis() as u64),
            }),
        ),
        TableOp::Renew {
            name,
            holder,
            token,
        } => (
            "renew",
            colony_runtime::wire::encode_payload(&LeaseMsg {
                name,
                holder,
                token,
            }),
        ),
        TableOp::Release {
            name,
            holder,
            token,
        } => (
            "release",
            colony_runtime::wire::encode_payload(&LeaseMsg {
                name,
                holder,
                token,
            }),
        ),
        TableOp::Cancel { name, holder } => (
            "cancel",
            colony_runtime::wire::encode_payload(&super::msg::CancelMsg { name, holder }),
        ),
    };
    let bytes = node
        .request_raw(owner, SERVICE, kind, payload.ok()?, Some(timeout))
        .await
        .ok()?;
    colony_runtime::wire::decode_payload(&bytes).ok()
}
