//! The real lock cores of 3 to 7 nodes on the seeded group world
//! ([`colony_runtime::sim::group`]): each node runs the real consensus core, the real
//! [`LockTable`] (owner side) and [`Holdings`] (holder side), fed as the lock service's shell
//! feeds them: the group's status after every change, requests through the same encoded
//! protocol ([`serve`]), renewals answered as [`holdings::renew_outcome`] reads them, and
//! clients that acquire as [`Attempt`] says.
//!
//! Each node has a few clients that contend for a few names: `try_lock`, `try_lock_for` and
//! `lock`, some giving up early (a dropped future: its wait is cancelled), holds spanning
//! several leases (so they renew), then a release. What happened is recorded in a
//! [`LockRecord`]: every hold from its holder's grant to the latest lease end any renewal gave
//! it as the holder counts it ([`Holdings::valid_until`], on world time), every grant and
//! renewal at its granter with the entitlement it had, and every hold lost.
//!
//! [`serve`]: super::serve::serve
//! [`Attempt`]: super::attempt::Attempt

mod client;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_runtime::NodeId;
use colony_runtime::consensus::{Command, Entitlement, GroupStatus, ReplicaId};
use colony_runtime::ownership::{Ownership, slot_of};
use colony_runtime::sim::group::{Ctx, Service};
use colony_runtime::testkit::check::{Entitled, Grant, Hold};
use colony_runtime::wire;

use super::attempt::WIRE_SLACK;
use super::core::{self, Answer, LockTable, RenewRoute, RequestId, TableConfig};
use super::holdings::{self, Holdings, HoldingsConfig, RenewFailure};
use super::msg::LockRequest;
use crate::executor::{self, CoreConfig, ExecutorCore};
use client::Client;

/// Clients per node.
const CLIENTS: usize = 3;
/// The names they contend for.
const NAMES: [&str; 4] = ["alpha", "beta", "gamma", "delta"];

/// A message between two nodes' lock services: a request or its answer, encoded as the
/// `locks` service carries them.
#[derive(Debug, Clone)]
pub(crate) enum LockMsg {
    Request {
        rpc: u64,
        bytes: Vec<u8>,
    },
    Answer {
        rpc: u64,
        bytes: Vec<u8>,
    },
    /// An executor slot's (empty) hand-over: every node serves executor slots too, and a
    /// node retires only once it handed over every slot of every domain.
    ExecHandOver {
        slot: u16,
        generation: u64,
    },
}

/// Why a hold was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The owner answered a renewal with `NotHeld`.
    NotHeld,
    /// No renewal succeeded before the margin.
    Expired,
}

/// A hold its holder lost before releasing it.
#[derive(Debug, Clone)]
pub(crate) struct Lost {
    pub holder: String,
    pub name: String,
    pub token: u64,
    pub at: Duration,
    pub cause: Cause,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (holder, name, token, at, cause) =
            (&self.holder, &self.name, self.token, self.at, self.cause);
        write!(f, "{holder} lost {name} #{token} at {at:?} ({cause:?})")
    }
}

/// What every node's lock service recorded.
#[derive(Debug, Default)]
pub(crate) struct LockRecord {
    pub holds: Vec<Hold>,
    pub grants: Vec<Grant>,
    pub entitled: Vec<Entitled>,
    pub lost: Vec<Lost>,
    pub renewals: u64,
    pub releases: u64,
    pub busy: u64,
    pub gave_up: u64,
    pub cancels: u64,
    pub trace: bool,
}

/// What a request this node sent was for.
#[derive(Debug, Clone)]
enum Purpose {
    Acquire {
        client: usize,
    },
    Renew {
        guard: u64,
        sent_at: Instant,
        /// The members to ask next if this one does not serve the slot.
        route: RenewRoute,
        request: LockRequest,
    },
    /// A release, along the renewals' route.
    Release {
        route: RenewRoute,
        request: LockRequest,
    },
    /// A cancel, told to every member along the renewals' route.
    Cancel {
        route: RenewRoute,
        request: LockRequest,
    },
    Other,
}

#[derive(Debug)]
struct Call {
    purpose: Purpose,
    deadline: Instant,
}

/// A request this node's table owes an answer to.
#[derive(Debug)]
struct Owed {
    from: ReplicaId,
    rpc: u64,
    request: LockRequest,
}

/// One node's lock service. See the module doc.
pub(crate) struct LockNode {
    id: NodeId,
    table: LockTable,
    /// The executor service with no executor open: it hands its slots over and takes them.
    exec: ExecutorCore,
    holdings: Holdings,
    holdings_config: HoldingsConfig,
    margin: Duration,
    renew_timeout: Duration,
    clients: Vec<Client>,
    owed: HashMap<RequestId, Owed>,
    next_request: RequestId,
    calls: BTreeMap<u64, Call>,
    next_rpc: u64,
    next_guard: u64,
    entitlement: Option<Entitlement>,
    /// Guards whose renewal the owner answered `NotHeld`.
    not_held: Vec<u64>,
}

/// The executor core's time: no executor is open, so no task's due time is ever compared.
fn exec_now(ctx: &Ctx<'_, LockNode>) -> executor::Now {
    executor::Now {
        at: ctx.now,
        wall_ms: 0,
    }
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

impl LockNode {
    /// The member that serves `name`, as this node's group state says.
    fn owner(&self, name: &str) -> Option<ReplicaId> {
        self.table.owner(name)
    }

    /// Sends `request` to `to` and remembers why.
    fn call(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        to: ReplicaId,
        request: &LockRequest,
        purpose: Purpose,
        timeout: Duration,
    ) -> u64 {
        self.next_rpc += 1;
        let rpc = self.next_rpc;
        let bytes = wire::encode_payload(request).expect("a lock request encodes");
        ctx.send(to, LockMsg::Request { rpc, bytes });
        let deadline = ctx.now + timeout;
        self.calls.insert(rpc, Call { purpose, deadline });
        rpc
    }

    /// A request this node's table must answer.
    fn serve(&mut self, ctx: &mut Ctx<'_, Self>, from: ReplicaId, rpc: u64, bytes: &[u8]) {
        let Ok(request) = wire::decode_payload::<LockRequest>(bytes) else {
            return;
        };
        if ctx.record.trace {
            eprintln!("{:>9?} {} serves {request:?}", ctx.world, ctx.name);
        }
        self.next_request += 1;
        let id = self.next_request;
        match super::serve::serve(&mut self.table, ctx.now, request.clone(), id) {
            Some(answer) => reply(ctx, from, rpc, &answer),
            None => {
                self.owed.insert(id, Owed { from, rpc, request });
            }
        }
    }

    /// An answer (`None`: none in time) to request `rpc` of this node.
    fn answered(&mut self, ctx: &mut Ctx<'_, Self>, rpc: u64, answer: Option<Answer>) {
        let Some(call) = self.calls.remove(&rpc) else {
            return;
        };
        match call.purpose {
            Purpose::Acquire { client } => client::answered(self, ctx, client, rpc, answer),
            Purpose::Renew {
                guard,
                sent_at,
                mut route,
                request,
            } => match answer.as_ref().and_then(|a| route.next(Some(a))) {
                Some(to) => self.renew_at(ctx, to, guard, sent_at, route, request),
                None => self.renewal_answered(ctx, guard, sent_at, answer),
            },
            Purpose::Release { mut route, request } => {
                if let Some(to) = answer.as_ref().and_then(|a| route.next(Some(a))) {
                    self.along_route(ctx, to, Purpose::Release { route, request });
                }
            }
            Purpose::Cancel { mut route, request } => {
                if let Some(to) = route.next_to_tell(answer.as_ref()) {
                    self.along_route(ctx, to, Purpose::Cancel { route, request });
                }
            }
            Purpose::Other => {}
        }
    }

    /// The answer (`None`: none in time) that settles a renewal of `guard` sent at `sent_at`.
    fn renewal_answered(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        guard: u64,
        sent_at: Instant,
        answer: Option<Answer>,
    ) {
        match holdings::renew_outcome(answer) {
            Ok(lease_ms) => {
                ctx.record.renewals += 1;
                self.holdings.renewed(ctx.now, guard, sent_at, lease_ms);
            }
            Err(why) => {
                if why == RenewFailure::NotHeld {
                    self.not_held.push(guard);
                }
                self.holdings.renew_failed(ctx.now, guard, why);
            }
        }
    }

    /// Asks `to` to renew `guard`'s lease, the next members of `route` after it.
    fn renew_at(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        to: ReplicaId,
        guard: u64,
        sent_at: Instant,
        route: RenewRoute,
        request: LockRequest,
    ) {
        let call = request.clone();
        let purpose = Purpose::Renew {
            guard,
            sent_at,
            route,
            request,
        };
        let timeout = self.renew_timeout;
        self.call(ctx, to, &call, purpose, timeout);
    }

    /// Sends a release or a cancel (`purpose` holds it) to `to`, then the next members of its
    /// route, as the shell's `ask_holder` and `tell_holders` do.
    fn along_route(&mut self, ctx: &mut Ctx<'_, Self>, to: ReplicaId, purpose: Purpose) {
        let (Purpose::Release { request, .. } | Purpose::Cancel { request, .. }) = &purpose else {
            return;
        };
        let request = request.clone();
        self.call(ctx, to, &request, purpose, WIRE_SLACK);
    }

    /// Carries out the cores' outputs, the table's first, as the shell's flush does.
    ///
    /// Both cores keep hash maps, whose iteration order differs from one process to the next:
    /// outputs about different names or guards made by one call come out in any order. Each
    /// batch is sorted before it is carried out, so that a seed replays exactly.
    fn flush(&mut self, ctx: &mut Ctx<'_, Self>) {
        while let Some(output) = self.exec.poll_output() {
            match output {
                executor::Output::Propose(command) => ctx.propose(command),
                executor::Output::HandOver {
                    to,
                    slot,
                    generation,
                } => ctx.send(to, LockMsg::ExecHandOver { slot, generation }),
                // No executor is open: no batch runs.
                _ => {}
            }
        }
        loop {
            let mut table: Vec<core::Output> =
                std::iter::from_fn(|| self.table.poll_output()).collect();
            let mut held: Vec<holdings::Output> =
                std::iter::from_fn(|| self.holdings.poll_output()).collect();
            if table.is_empty() && held.is_empty() {
                return;
            }
            table.sort_by_cached_key(table_order);
            held.sort_by_key(holdings_order);
            self.carry_out(ctx, table, held);
        }
    }

    fn carry_out(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        table: Vec<core::Output>,
        held: Vec<holdings::Output>,
    ) {
        for output in table {
            match output {
                core::Output::Reply { request, answer } => {
                    if let Some(owed) = self.owed.remove(&request) {
                        self.record_grant(ctx, &owed.request, &answer);
                        reply(ctx, owed.from, owed.rpc, &answer);
                    }
                }
                core::Output::HandOver { to, table } => {
                    let request = LockRequest::HandOver { table };
                    let timeout = Duration::from_secs(2);
                    self.call(ctx, to, &request, Purpose::Other, timeout);
                }
                core::Output::Fetch {
                    from,
                    slot,
                    generation,
                } => {
                    let request = LockRequest::Fetch { slot, generation };
                    let timeout = Duration::from_secs(2);
                    self.call(ctx, from, &request, Purpose::Other, timeout);
                }
                core::Output::Propose(command) => ctx.propose(command),
            }
        }
        for output in held {
            match output {
                holdings::Output::Renew { guard, name, token } => {
                    let holder = core::Holder {
                        node: self.id,
                        guard,
                    };
                    let request = LockRequest::Renew {
                        name: name.clone(),
                        holder,
                        token,
                    };
                    let mut route = RenewRoute::from(self.table.renew_route(&name));
                    match route.next(None) {
                        Some(to) => self.renew_at(ctx, to, guard, ctx.now, route, request),
                        None => self.holdings.renew_failed(
                            ctx.now,
                            guard,
                            holdings::renew_outcome(None).expect_err("no answer"),
                        ),
                    }
                }
                holdings::Output::Extended { guard, valid_until } => {
                    client::extended(self, ctx, guard, valid_until)
                }
                holdings::Output::Lost { guard } => {
                    let cause = if self.not_held.contains(&guard) {
                        Cause::NotHeld
                    } else {
                        Cause::Expired
                    };
                    self.not_held.retain(|g| *g != guard);
                    client::lost(self, ctx, guard, cause);
                }
            }
        }
    }

    /// Records a grant or renewal this node's table made, with the entitlement it had.
    fn record_grant(&self, ctx: &mut Ctx<'_, Self>, request: &LockRequest, answer: &Answer) {
        let (name, token, lease_ms, renewal) = match (request, answer) {
            (
                LockRequest::Acquire { name, .. },
                Answer::Granted {
                    token, lease_ms, ..
                },
            ) => (name, *token, *lease_ms, false),
            (LockRequest::Renew { name, token, .. }, Answer::Renewed { lease_ms }) => {
                (name, *token, *lease_ms, true)
            }
            _ => return,
        };
        let end = ctx.world_of(ctx.now + Duration::from_millis(lease_ms));
        let grant = Grant {
            name: name.clone(),
            scope: format!("slot-{}", slot_of(name.as_bytes())),
            granter: ctx.name.to_owned(),
            epoch: self.entitlement.map_or(0, |e| e.epoch),
            token,
            renewal,
            at_us: us(ctx.world),
            lease_end_us: us(end),
        };
        if ctx.record.trace {
            eprintln!(
                "{:>9?} {} grants {name} #{token} for {lease_ms} ms",
                ctx.world, ctx.name
            );
        }
        ctx.record.grants.push(grant);
    }

    /// A name this node serves that another node holds while one of this node's own clients
    /// waits for it: isolating this node puts the owner and a waiter on one side.
    pub(crate) fn contended_here(&self) -> Option<String> {
        self.table
            .holds()
            .filter(|(name, holder, ..)| holder.node != self.id && self.table.waiting(name) > 0)
            .map(|(name, ..)| name.to_owned())
            .find(|name| self.clients.iter().any(|c| c.waits_for(name)))
    }

    /// A hold of one of this node's clients that has at least `left` of its lease to run, as
    /// the holder counts it: its guard and its index in the record.
    pub(crate) fn holding(&self, now: Instant, left: Duration) -> Option<(u64, usize)> {
        self.clients
            .iter()
            .filter_map(Client::holding)
            .find(|(guard, _)| {
                self.holdings
                    .valid_until(*guard)
                    .is_some_and(|v| v >= now + left)
            })
    }

    /// When the node's next deadline is, of its cores, its calls and its clients.
    fn deadline(&self) -> Option<Instant> {
        [
            self.table.poll_timeout(),
            self.holdings.poll_timeout(),
            self.exec.poll_timeout(),
            self.calls.values().map(|c| c.deadline).min(),
            self.clients.iter().filter_map(Client::deadline).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// A canonical order of the table's outputs of one call: replies by request, then hand-overs
/// by slot, then proposals.
fn table_order(output: &core::Output) -> (u8, u64, String) {
    match output {
        core::Output::Reply { request, .. } => (0, *request, String::new()),
        core::Output::HandOver { table, .. } => (1, u64::from(table.slot), String::new()),
        core::Output::Propose(command) => (2, 0, format!("{command:?}")),
        core::Output::Fetch { slot, .. } => (3, u64::from(*slot), String::new()),
    }
}

/// A canonical order of the holdings' outputs of one call: by guard.
fn holdings_order(output: &holdings::Output) -> (u64, u8) {
    match output {
        holdings::Output::Renew { guard, .. } => (*guard, 0),
        holdings::Output::Extended { guard, .. } => (*guard, 1),
        holdings::Output::Lost { guard } => (*guard, 2),
    }
}

fn reply(ctx: &mut Ctx<'_, LockNode>, to: ReplicaId, rpc: u64, answer: &Answer) {
    let bytes = wire::encode_payload(answer).expect("an answer encodes");
    ctx.send(to, LockMsg::Answer { rpc, bytes });
}

impl Service for LockNode {
    type Msg = LockMsg;
    type Record = LockRecord;

    // Requests and answers of the `locks` service travel on the transport's sessions. The
    // table relies on it: an acquire repeated by a guard that holds the name is taken for a
    // retry after a grant it never saw, and the grant is withdrawn.
    const AT_MOST_ONCE: bool = true;

    fn start(ctx: &mut Ctx<'_, Self>) -> Self {
        let group = ctx.config.group;
        let lease = group.liveness;
        let holdings = HoldingsConfig {
            lease,
            margin: lease / 5,
            drift_permille: group.drift_permille,
        };
        let table = LockTable::new(
            ctx.replica,
            TableConfig {
                lease,
                drift_permille: group.drift_permille,
                resend: Duration::from_millis(300),
            },
        );
        ctx.record.trace = std::env::var_os("COLONY_SIM_TRACE").is_some();
        let clients = (0..CLIENTS).map(|_| Client::new(ctx)).collect();
        LockNode {
            // A new process on every start, as a restarted node has a new id.
            id: NodeId::from_u128((u128::from(ctx.replica.0) << 64) | u128::from(ctx.incarnation)),
            table,
            exec: ExecutorCore::new(
                ctx.replica,
                colony_runtime::consensus::Domain::Executor,
                CoreConfig {
                    resend: Duration::from_millis(300),
                    retry: Duration::from_millis(200),
                },
            ),
            holdings: Holdings::new(holdings),
            holdings_config: holdings,
            margin: holdings.margin,
            renew_timeout: holdings.renew_every(),
            clients,
            owed: HashMap::new(),
            next_request: 0,
            calls: BTreeMap::new(),
            // Request ids of one process: an answer to the previous process's request must
            // not match this one's (a real answer comes back on the connection it went out on).
            next_rpc: ctx.incarnation << 40,
            next_guard: 0,
            entitlement: None,
            not_held: Vec::new(),
        }
    }

    fn status(&mut self, ctx: &mut Ctx<'_, Self>, status: &Arc<GroupStatus>) {
        if status.entitlement != self.entitlement
            && let Some(e) = status.entitlement
        {
            let until = ctx.world_of(e.until);
            ctx.record.entitled.push(Entitled {
                granter: ctx.name.to_owned(),
                epoch: e.epoch,
                at_us: us(ctx.world),
                until_us: us(until),
            });
        }
        self.entitlement = status.entitlement;
        self.table.set_group(
            ctx.now,
            status.state.clone(),
            status.epoch,
            status.entitlement,
        );
        self.exec.set_group(
            exec_now(ctx),
            status.state.clone(),
            status.epoch,
            status.entitlement,
        );
        self.flush(ctx);
    }

    fn message(&mut self, ctx: &mut Ctx<'_, Self>, from: ReplicaId, msg: LockMsg) {
        match msg {
            LockMsg::Request { rpc, bytes } => self.serve(ctx, from, rpc, &bytes),
            LockMsg::Answer { rpc, bytes } => {
                if let Ok(answer) = wire::decode_payload::<Answer>(&bytes) {
                    self.answered(ctx, rpc, Some(answer));
                }
            }
            LockMsg::ExecHandOver { slot, generation } => {
                let _ = self.exec.received(exec_now(ctx), slot, generation);
            }
        }
        self.flush(ctx);
    }

    fn timeout(&mut self, ctx: &mut Ctx<'_, Self>) {
        let now = ctx.now;
        self.table.handle_timeout(now);
        self.holdings.handle_timeout(now);
        self.exec.handle_timeout(exec_now(ctx));
        self.flush(ctx);
        let expired: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(rpc, _)| *rpc)
            .collect();
        for rpc in expired {
            self.answered(ctx, rpc, None);
        }
        for i in 0..self.clients.len() {
            client::tick(self, ctx, i);
        }
        self.flush(ctx);
    }

    fn proposal_failed(&mut self, ctx: &mut Ctx<'_, Self>, command: &Command) {
        self.table.proposal_failed(ctx.now, command);
        self.exec.proposed(exec_now(ctx), command, None);
        self.flush(ctx);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline()
    }

    fn ownership(&self) -> &Ownership {
        self.table.ownership()
    }
}
