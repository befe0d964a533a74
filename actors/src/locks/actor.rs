//! The lock service's driver: this node's [`LockTable`] and [`Holdings`] in the runtime's actor
//! shell, fed the group's status and the membership view.
//!
//! Requests reach the table in the caller's task ([`Shell::send`]); renewals, hand-overs and
//! proposals the cores ask for go out on their own tasks and come back as inputs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_runtime::consensus::{Command, GroupStatus, ReplicaId};
use colony_runtime::membership::View;
use colony_runtime::shell::{Caster, Driven, Shell};
use colony_runtime::{Node, NodeId};
use tokio::sync::{oneshot, watch};

use super::core::{self, Answer, Holder, LockTable, RequestId};
use super::holdings::{self, Holdings, RenewFailure};
use super::msg::{KIND, LockRequest, SERVICE};

/// How long a proposal of the lock service may take.
const PROPOSE_WITHIN: Duration = Duration::from_secs(2);

/// The driver's inputs.
pub(crate) enum LockInput {
    /// A request for this node's table; the answer goes to the sender.
    Table(LockRequest, oneshot::Sender<Answer>),
    /// A guard of this node was granted `name`; renew it and keep `lease` up to date.
    Held {
        guard: u64,
        name: String,
        token: u64,
        sent_at: Instant,
        lease_ms: u64,
        lease: watch::Sender<Lease>,
    },
    /// A guard released or gave up its lock.
    Forget(u64),
    /// A renewal came back.
    Renewed {
        guard: u64,
        sent_at: Instant,
        outcome: Result<u64, RenewFailure>,
    },
    /// The group's status changed.
    Group(Arc<GroupStatus>),
    /// A proposal the table asked for (a hand-over's record, another block) failed.
    ProposalFailed(Command),
    /// Report the sizes of both tables.
    Stats(oneshot::Sender<LockStats>),
}

/// How much state the lock service of a node keeps: both numbers return to zero when nothing
/// is held or awaited, however many names were ever used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct LockStats {
    /// Names this node serves that have a holder or a waiter.
    pub owned_names: usize,
    /// Guards of this node that hold a lock.
    pub held_guards: usize,
    /// Answers owed to callers (waits in progress).
    pub pending_answers: usize,
}

/// What this node's lock service has done since it started, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LockCounters {
    /// Grants this node made as owner.
    pub grants: u64,
    /// Of those, grants to a request that had to queue first.
    pub granted_after_wait: u64,
    /// Try-locks refused because the name was held.
    pub busy: u64,
    /// Waits that ended without a grant.
    pub timed_out: u64,
    /// Guards of this node that lost their lease.
    pub lease_losses: u64,
    /// Slot tables this node handed over to a slot's next owner.
    pub hand_overs: u64,
}

impl LockCounters {
    fn answered(&mut self, answer: &Answer) {
        match answer {
            Answer::Granted { waited_us, .. } => {
                self.grants += 1;
                if *waited_us > 0 {
                    self.granted_after_wait += 1;
                }
            }
            Answer::Busy => self.busy += 1,
            Answer::TimedOut => self.timed_out += 1,
            _ => {}
        }
    }
}

/// A guard's lease as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    /// When it ends if not renewed.
    pub valid_until: Instant,
    /// Whether it was lost.
    pub lost: bool,
}

pub(crate) struct LockDriver {
    pub node: Node,
    pub table: LockTable,
    pub holdings: Holdings,
    pub shell: Option<Caster<LockInput>>,
    pending: HashMap<RequestId, oneshot::Sender<Answer>>,
    next_request: RequestId,
    leases: HashMap<u64, watch::Sender<Lease>>,
    nodes: HashMap<ReplicaId, NodeId>,
    renew_timeout: Duration,
    pub counters: LockCounters,
}

/// The lock service's shell.
pub(crate) type LockHandle = Shell<LockDriver>;

impl LockDriver {
    pub(crate) fn new(
        node: Node,
        table: LockTable,
        holdings: Holdings,
        renew_timeout: Duration,
    ) -> Self {
        LockDriver {
            node,
            table,
            holdings,
            shell: None,
            pending: HashMap::new(),
            next_request: 0,
            leases: HashMap::new(),
            nodes: HashMap::new(),
            renew_timeout,
            counters: LockCounters::default(),
        }
    }

    /// The `GET /locks` report.
    pub(crate) fn report(&self, now: Instant) -> super::report::LocksReport {
        let names = self
            .node
            .members()
            .into_iter()
            .map(|m| (m.id, m.name))
            .collect();
        super::report::LocksReport::of(
            &self.table,
            self.holdings.len(),
            self.node.name(),
            &names,
            now,
        )
    }

    fn apply(&mut self, now: Instant, request: LockRequest, reply: oneshot::Sender<Answer>) {
        self.next_request += 1;
        let id = self.next_request;
        match super::serve::serve(&mut self.table, now, request, id) {
            Some(answer) => {
                self.counters.answered(&answer);
                let _ = reply.send(answer);
            }
            None => {
                self.pending.insert(id, reply);
            }
        }
    }

    /// Sends `request` to member `to` without awaiting the answer: the table sends it again
    /// while it matters.
    fn tell(&self, to: ReplicaId, request: LockRequest) {
        let Some(node_id) = self.nodes.get(&to).copied() else {
            return;
        };
        let node = self.node.clone();
        tokio::spawn(async move {
            let _ = call(&node, node_id, &request, PROPOSE_WITHIN).await;
        });
    }
}

impl Driven for LockDriver {
    type Input = LockInput;

    fn input(&mut self, now: Instant, input: LockInput) {
        match input {
            LockInput::Table(request, reply) => self.apply(now, request, reply),
            LockInput::Held {
                guard,
                name,
                token,
                sent_at,
                lease_ms,
                lease,
            } => {
                self.holdings
                    .granted(now, guard, name, token, sent_at, lease_ms);
                if let Some(valid_until) = self.holdings.valid_until(guard) {
                    lease.send_modify(|l| l.valid_until = valid_until);
                }
                self.leases.insert(guard, lease);
            }
            LockInput::Forget(guard) => {
                self.holdings.released(guard);
                self.leases.remove(&guard);
            }
            LockInput::Renewed {
                guard,
                sent_at,
                outcome,
            } => match outcome {
                Ok(lease_ms) => self.holdings.renewed(now, guard, sent_at, lease_ms),
                Err(why) => self.holdings.renew_failed(now, guard, why),
            },
            LockInput::Group(status) => {
                self.table
                    .set_group(now, status.state.clone(), status.epoch, status.entitlement)
            }
            LockInput::ProposalFailed(command) => self.table.proposal_failed(now, &command),
            LockInput::Stats(reply) => {
                let _ = reply.send(LockStats {
                    owned_names: self.table.len(),
                    held_guards: self.holdings.len(),
                    pending_answers: self.pending.len(),
                });
            }
        }
    }

    fn view(&mut self, _: Instant, view: &Arc<View>) {
        self.nodes = crate::wiring::members_by_replica(view);
    }

    fn timeout(&mut self, now: Instant) {
        self.table.handle_timeout(now);
        self.holdings.handle_timeout(now);
    }

    fn flush(&mut self, _: Instant) {
        while let Some(output) = self.table.poll_output() {
            match output {
                core::Output::Reply { request, answer } => {
                    self.counters.answered(&answer);
                    if let Some(reply) = self.pending.remove(&request) {
                        // The caller may have given up; its cancel will follow.
                        let _ = reply.send(answer);
                    }
                }
                core::Output::HandOver { to, table } => {
                    self.counters.hand_overs += 1;
                    self.tell(to, LockRequest::HandOver { table });
                }
                core::Output::Fetch {
                    from,
                    slot,
                    generation,
                } => self.tell(from, LockRequest::Fetch { slot, generation }),
                core::Output::Propose(command) => {
                    let (node, shell) = (self.node.clone(), self.shell.clone());
                    tokio::spawn(async move {
                        let done = node.group().propose(command.clone(), PROPOSE_WITHIN).await;
                        if let (Err(_), Some(shell)) = (done, shell) {
                            let _ = shell.cast(LockInput::ProposalFailed(command));
                        }
                    });
                }
            }
        }
        while let Some(output) = self.holdings.poll_output() {
            match output {
                holdings::Output::Renew { guard, name, token } => {
                    let holder = Holder {
                        node: self.node.id(),
                        guard,
                    };
                    if let Some(shell) = self.shell.clone() {
                        tokio::spawn(renew(
                            self.node.clone(),
                            shell,
                            holder,
                            name,
                            token,
                            self.renew_timeout,
                        ));
                    }
                }
                holdings::Output::Extended { guard, valid_until } => {
                    if let Some(lease) = self.leases.get(&guard) {
                        lease.send_modify(|l| l.valid_until = valid_until);
                    }
                }
                holdings::Output::Lost { guard } => {
                    tracing::debug!(guard, "lock lease lost");
                    self.counters.lease_losses += 1;
                    if let Some(lease) = self.leases.remove(&guard) {
                        lease.send_modify(|l| l.lost = true);
                    }
                }
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        [self.table.poll_timeout(), self.holdings.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Sends one renewal to the name's current owner and reports back to the driver.
async fn renew(
    node: Node,
    shell: Caster<LockInput>,
    holder: Holder,
    name: String,
    token: u64,
    timeout: Duration,
) {
    let sent_at = Instant::now();
    let request = LockRequest::Renew {
        name,
        holder,
        token,
    };
    let answer = ask_holder(&node, &request, timeout).await;
    if !matches!(answer, Some(Answer::Renewed { .. })) {
        tracing::debug!(guard = holder.guard, ?answer, elapsed = ?sent_at.elapsed(), "lock renewal failed");
    }
    let _ = shell.cast(LockInput::Renewed {
        guard: holder.guard,
        sent_at,
        outcome: holdings::renew_outcome(answer),
    });
}

/// The node that serves `name`'s slot, as this node's group state and membership view say.
pub(crate) fn owner_of(node: &Node, name: &str) -> Option<NodeId> {
    let replica = node
        .group()
        .status()
        .state
        .slot(
            colony_runtime::consensus::Domain::Locks,
            colony_runtime::ownership::slot_of(name.as_bytes()),
        )?
        .owner?
        .0;
    node_of(node, replica)
}

/// The node of member `replica`, if it is in this node's membership view.
fn node_of(node: &Node, replica: ReplicaId) -> Option<NodeId> {
    node.members()
        .into_iter()
        .find(|m| m.replica == replica.0 && !m.state.is_gone())
        .map(|m| m.id)
}

/// Sends `request` to the owner of its name, this node or another, through the same encoded
/// path; `None` when there is no owner or no answer came.
pub(crate) async fn ask(node: &Node, request: LockRequest, timeout: Duration) -> Option<Answer> {
    let owner = owner_of(node, request.name()?)?;
    call(node, owner, &request, timeout).await
}

/// Sends a request about a hold (a renewal or a release) along the name's [`core::RenewRoute`]:
/// the previous owner first while a hand-over is pending, then the owner, and the next owner an
/// old one names; the last answer.
pub(crate) async fn ask_holder(
    node: &Node,
    request: &LockRequest,
    timeout: Duration,
) -> Option<Answer> {
    along_route(node, request, timeout, core::RenewRoute::next).await
}

/// Tells every member along the name's [`core::RenewRoute`] of a cancel, whatever each
/// answers: during a move the previous owner may still lend the guard's grant while the next
/// one holds its wait for the table, and an old owner whose table left names where it went.
pub(crate) async fn tell_holders(node: &Node, request: &LockRequest, timeout: Duration) {
    along_route(node, request, timeout, core::RenewRoute::next_to_tell).await;
}

/// Walks the name's route, asking each member `next` picks after the last answer; the last
/// answer. A member not in this node's view counts as no longer serving the slot.
async fn along_route(
    node: &Node,
    request: &LockRequest,
    timeout: Duration,
    next: fn(&mut core::RenewRoute, Option<&Answer>) -> Option<ReplicaId>,
) -> Option<Answer> {
    let name = request.name()?;
    let mut route = core::RenewRoute::new(&node.group().status().state, name);
    let mut answer = None;
    let mut to = next(&mut route, None);
    while let Some(replica) = to {
        answer = match node_of(node, replica) {
            Some(peer) => call(node, peer, request, timeout).await,
            None => Some(Answer::NotOwner),
        };
        to = next(&mut route, answer.as_ref());
    }
    answer
}

async fn call(node: &Node, to: NodeId, request: &LockRequest, timeout: Duration) -> Option<Answer> {
    node.request(to, SERVICE, KIND, request, Some(timeout))
        .await
        .ok()
}
