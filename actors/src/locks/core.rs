//! The lock table of the slots this node serves, with no IO.
//!
//! A lock name belongs to a slot ([`slot_of`]); the consensus group gives each slot to one node
//! under an epoch, and [`Ownership`] says when this node may act on it. The table grants leases,
//! queues waiters in FIFO order, renews and releases, and hands a slot's holds to the next owner
//! when the slot moves. Drive it with one input (`acquire`, `renew`, `release`, `cancel`,
//! `received`, `set_group`, `handle_timeout`), then drain [`LockTable::poll_output`], then sleep
//! until [`LockTable::poll_timeout`].
//!
//! # Safety argument
//! - Only a node the group entitled to a slot grants or renews its names, and only while its
//!   own entitlement lasts ([`Ownership::may_serve`]); a grant or renewal never outlives that
//!   entitlement ([`Ownership::lease`]). A node whose epoch ended granted nothing still valid,
//!   so the next owner starts with an empty table; a live owner hands its holds over before the
//!   next owner serves.
//! - A live owner that applied a move keeps renewing (and releasing) the slot's holds, within
//!   its own entitlement, until the next owner asks for the table ([`Output::Fetch`]) or a lease
//!   has passed: the next owner serves only from the table, which is taken once, after the last
//!   renewal, so the two never serve the slot at once. A next owner that applies the move late
//!   (or is paused) costs the holders nothing.
//! - The lease on the wire is a duration from the owner's receipt of the request. The holder
//!   counts it from before it sent the request, shortened by the drift allowance, so it never
//!   believes it holds longer than the owner granted.
//! - Tokens come from the slot's block, drawn by the group above every earlier block: they
//!   strictly increase per name across owners, with no clock involved.
//! - Entries with no holder and no waiter are removed: ever-new names leave nothing behind.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_runtime::NodeId;
use colony_runtime::consensus::{ClusterState, Command, Domain, Entitlement, ReplicaId, SLOTS};
use colony_runtime::ownership::{Change, Ownership, SlotView, slot_of};
use serde::{Deserialize, Serialize};

/// Who holds or waits: a guard on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Holder {
    /// The node the guard lives on.
    pub node: NodeId,
    /// The guard's id, unique on that node.
    pub guard: u64,
}

/// One name in a lock table, as [`LockTable::names`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameState<'a> {
    /// The lock's name.
    pub name: &'a str,
    /// Its holder, fencing token and lease end, if held.
    pub hold: Option<(Holder, u64, Instant)>,
    /// The guards waiting for it, first in line first.
    pub waiters: Vec<Holder>,
}

/// The shell's handle for an answer owed to a caller.
pub type RequestId = u64;

/// How an acquire waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Answer at once.
    No,
    /// Queue until granted or until this deadline.
    Until(Instant),
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// The lock is held with this token for `lease_ms` from the grant.
    Granted {
        /// The fencing token.
        token: u64,
        /// How long the grant lasts from when the owner made it, in milliseconds.
        lease_ms: u64,
        /// How long the request waited in the queue before the grant, in microseconds.
        waited_us: u64,
    },
    /// Someone else holds it and the caller did not wait.
    Busy,
    /// The wait ended without a grant.
    TimedOut,
    /// The lease was renewed for `lease_ms` from the owner's receipt of the renewal.
    Renewed {
        /// How long the renewal lasts, in milliseconds.
        lease_ms: u64,
    },
    /// The lock was released.
    Released,
    /// The caller does not hold the lock (its lease ended or was never granted).
    NotHeld,
    /// This node does not serve the name's slot now (it moved, or this node's entitlement
    /// lapsed): ask the owner the group names.
    NotOwner,
    /// The waiter was withdrawn.
    Cancelled,
    /// A hand-over was taken (or was not awaited; the sender tries again while it matters).
    Received,
    /// As `NotOwner`, from a node that handed the name's slot over to `to`: ask `to` (the
    /// asker's node may not have applied the move yet).
    Moved {
        /// The slot's next owner.
        to: ReplicaId,
    },
}

/// Where a holder sends a renewal of `name`, in order, by `state` as its node applied it: the
/// previous owner while a hand-over of the slot is pending, then the owner. The holder's node
/// may apply a move before the previous owner does; until then the previous owner still serves
/// the hold (and hands it over with the renewed lease), while the new owner cannot serve it
/// before the table arrives. Ask the next member only when one answers `NotOwner` (see
/// [`RenewRoute`], which also follows an old owner's [`Answer::Moved`]).
pub fn renew_route(state: &ClusterState, name: &str) -> Vec<ReplicaId> {
    let Some(slot) = state.slot(Domain::Locks, slot_of(name.as_bytes())) else {
        return Vec::new();
    };
    let from = slot
        .from
        .filter(|(r, e)| state.in_force(*r, *e) && Some(*r) != slot.owner.map(|(o, _)| o))
        .map(|(r, _)| r);
    from.into_iter().chain(slot.owner.map(|(r, _)| r)).collect()
}

/// The members a renewal asks in turn: [`renew_route`], and, ahead of the rest, the next
/// owner an old owner names in a [`Answer::Moved`]; each member once.
///
/// # Examples
/// ```
/// use colony_actors::locks::core::{Answer, RenewRoute};
/// use colony_runtime::consensus::{ClusterState, ReplicaId};
///
/// let mut route = RenewRoute::new(&ClusterState::new(), "reindex");
/// assert_eq!(route.next(None), None, "no owner known");
/// let mut route = RenewRoute::from(vec![ReplicaId(1)]);
/// assert_eq!(route.next(None), Some(ReplicaId(1)));
/// let moved = Answer::Moved { to: ReplicaId(2) };
/// assert_eq!(route.next(Some(&moved)), Some(ReplicaId(2)));
/// assert_eq!(route.next(Some(&Answer::NotOwner)), None);
/// // A cancel is told to every member, whatever each answers.
/// let mut route = RenewRoute::from(vec![ReplicaId(1), ReplicaId(3)]);
/// assert_eq!(route.next_to_tell(None), Some(ReplicaId(1)));
/// assert_eq!(route.next_to_tell(Some(&Answer::Cancelled)), Some(ReplicaId(3)));
/// assert_eq!(route.next_to_tell(Some(&moved)), Some(ReplicaId(2)));
/// assert_eq!(route.next_to_tell(None), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenewRoute {
    left: VecDeque<ReplicaId>,
    asked: Vec<ReplicaId>,
}

impl From<Vec<ReplicaId>> for RenewRoute {
    fn from(route: Vec<ReplicaId>) -> Self {
        RenewRoute {
            left: route.into(),
            asked: Vec::new(),
        }
    }
}

impl RenewRoute {
    /// The route of a renewal of `name` by `state` as the holder's node applied it.
    pub fn new(state: &ClusterState, name: &str) -> Self {
        renew_route(state, name).into()
    }

    /// The member to ask next after `answer` from the last one (`None` before the first ask),
    /// or `None` when the renewal is settled or no member is left to ask.
    pub fn next(&mut self, answer: Option<&Answer>) -> Option<ReplicaId> {
        match answer {
            None if !self.asked.is_empty() => return None,
            None | Some(Answer::NotOwner) => {}
            Some(Answer::Moved { to }) => self.left.push_front(*to),
            Some(_) => return None,
        }
        self.unasked()
    }

    /// The member to tell next after `answer` from the last one, whatever it was (a cancel
    /// goes to every member that may hold the guard's wait or grant), or `None` at the end.
    pub fn next_to_tell(&mut self, answer: Option<&Answer>) -> Option<ReplicaId> {
        if let Some(Answer::Moved { to }) = answer {
            self.left.push_front(*to);
        }
        self.unasked()
    }

    fn unasked(&mut self) -> Option<ReplicaId> {
        while let Some(member) = self.left.pop_front() {
            if !self.asked.contains(&member) {
                self.asked.push(member);
                return Some(member);
            }
        }
        None
    }
}

/// One hold as it travels to the next owner of its slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedHold {
    /// The lock's key.
    pub name: String,
    /// Its holder.
    pub holder: Holder,
    /// Its token.
    pub token: u64,
    /// What was left of its lease when it was sent, in milliseconds.
    pub left_ms: u64,
    /// The holder's attempt that was granted (see [`LockTable::acquire_attempt`]); 0 from a
    /// node that numbers no attempts.
    #[serde(default)]
    pub attempt: u64,
}

/// A slot's table on its way to the next owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotTable {
    /// The slot.
    pub slot: u16,
    /// The new owner's generation.
    pub generation: u64,
    /// The holds.
    #[serde(deserialize_with = "colony_runtime::wire::codec::seq_as_read")]
    pub holds: Vec<MovedHold>,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Answer request `request`.
    Reply {
        /// The request.
        request: RequestId,
        /// The answer.
        answer: Answer,
    },
    /// Send `table` to `to`, the slot's next owner (again until the group records it).
    HandOver {
        /// The next owner.
        to: ReplicaId,
        /// The table.
        table: SlotTable,
    },
    /// Propose `command` to the group.
    Propose(Command),
    /// Ask `from`, the slot's previous owner, to send the table now (again until it arrives):
    /// this node applied the move and is ready to serve.
    Fetch {
        /// The previous owner.
        from: ReplicaId,
        /// The slot.
        slot: u16,
        /// This node's generation of it.
        generation: u64,
    },
}

#[derive(Debug, Clone)]
struct Hold {
    holder: Holder,
    token: u64,
    expires: Instant,
    /// The holder's attempt it was granted to.
    attempt: u64,
}

#[derive(Debug, Clone)]
struct Waiter {
    holder: Holder,
    /// The holder's attempt the request is.
    attempt: u64,
    request: RequestId,
    deadline: Instant,
    since: Instant,
}

#[derive(Debug)]
struct Entry {
    slot: u16,
    hold: Option<Hold>,
    waiters: VecDeque<Waiter>,
    /// This entry's one timer, at its earliest deadline.
    timer: Option<(Instant, u64)>,
}

/// Timing of the lock table.
#[derive(Debug, Clone, Copy)]
pub struct TableConfig {
    /// How long a grant or renewal lasts, at most.
    pub lease: Duration,
    /// The drift allowance, in parts per thousand: a lease carried over to another node is
    /// stretched by it.
    pub drift_permille: u32,
    /// How often a slot's table is sent again while its hand-over is not recorded.
    pub resend: Duration,
}

/// The lock table. See the module doc.
#[derive(Debug)]
pub struct LockTable {
    config: TableConfig,
    own: Ownership,
    state: Arc<ClusterState>,
    entitlement: Option<Entitlement>,
    entries: HashMap<String, Entry>,
    timers: BTreeMap<(Instant, u64), String>,
    next_timer: u64,
    /// When each slot being handed over is sent next.
    resend: BTreeMap<u16, Instant>,
    /// Slots this node moved away but still serves renewals of, until the next owner fetches
    /// the table or the loan ends.
    lending: BTreeMap<u16, Loan>,
    /// Moves this node has not applied yet whose next owner already asked for the table, by
    /// slot: the table goes at once when the move applies.
    fetched: BTreeMap<u16, u64>,
    /// When each slot this node awaits the table of is asked for next.
    fetching: BTreeMap<u16, Instant>,
    /// Failed proposals, and when they are asked again.
    failed: Option<(Instant, Vec<Command>)>,
    /// Tables that arrived before this node applied the move they belong to.
    early: BTreeMap<u16, (Instant, SlotTable)>,
    /// Requests for slots this node was given and awaits the table of, answered once it serves
    /// them (or `NotOwner` at their deadline).
    parked: Vec<Parked>,
    outputs: VecDeque<Output>,
}

/// A slot moved away whose holds this node still renews.
#[derive(Debug, Clone, Copy)]
struct Loan {
    /// The epoch this node served the slot in.
    epoch: u64,
    /// When the table is sent anyway (a next owner that never asks, an older one say).
    until: Instant,
}

/// A request held while its slot's table is on its way to this node.
#[derive(Debug)]
struct Parked {
    slot: u16,
    until: Instant,
    request: RequestId,
    op: ParkedOp,
}

#[derive(Debug)]
enum ParkedOp {
    Acquire {
        name: String,
        holder: Holder,
        attempt: u64,
        wait: Wait,
        /// When it arrived.
        since: Instant,
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

/// Whether a holder's request numbered `attempt` replaces one numbered `seen`: a later one
/// does, and so does any request from a node that numbers none (0), as before attempts.
fn supersedes(attempt: u64, seen: u64) -> bool {
    attempt == 0 || seen == 0 || attempt > seen
}

impl LockTable {
    /// An empty table for member `me`.
    pub fn new(me: ReplicaId, config: TableConfig) -> Self {
        LockTable {
            config,
            own: Ownership::new(me, Domain::Locks),
            state: Arc::new(ClusterState::new()),
            entitlement: None,
            entries: HashMap::new(),
            timers: BTreeMap::new(),
            next_timer: 0,
            resend: BTreeMap::new(),
            lending: BTreeMap::new(),
            fetched: BTreeMap::new(),
            fetching: BTreeMap::new(),
            failed: None,
            early: BTreeMap::new(),
            parked: Vec::new(),
            outputs: VecDeque::new(),
        }
    }

    // ---- getters ----

    /// Names with a holder or a waiter.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no name has a holder or a waiter.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The current holder of `name` and its token, as this node's table has it.
    pub fn holder(&self, name: &str) -> Option<(Holder, u64)> {
        let hold = self.entries.get(name)?.hold.as_ref()?;
        Some((hold.holder, hold.token))
    }

    /// Waiters queued for `name`.
    pub fn waiting(&self, name: &str) -> usize {
        self.entries.get(name).map_or(0, |e| e.waiters.len())
    }

    /// Every name with a holder or a waiter: its hold (holder, token, lease end) if held, and
    /// its waiters in queue order.
    pub fn names(&self) -> impl Iterator<Item = NameState<'_>> + '_ {
        self.entries.iter().map(|(name, e)| NameState {
            name,
            hold: e.hold.as_ref().map(|h| (h.holder, h.token, h.expires)),
            waiters: e.waiters.iter().map(|w| w.holder).collect(),
        })
    }

    /// Every held name: key, holder, token and lease end.
    pub fn holds(&self) -> impl Iterator<Item = (&str, Holder, u64, Instant)> + '_ {
        self.entries.iter().filter_map(|(name, e)| {
            e.hold
                .as_ref()
                .map(|h| (name.as_str(), h.holder, h.token, h.expires))
        })
    }

    /// Where a renewal of `name` goes, in order: see [`renew_route`].
    pub fn renew_route(&self, name: &str) -> Vec<ReplicaId> {
        renew_route(&self.state, name)
    }

    /// The member the group gives `name`'s slot to, in this node's applied state.
    pub fn owner(&self, name: &str) -> Option<ReplicaId> {
        self.state
            .slot(Domain::Locks, slot_of(name.as_bytes()))?
            .owner
            .map(|(r, _)| r)
    }

    /// Which slots this node serves, as it stands.
    pub fn ownership(&self) -> &Ownership {
        &self.own
    }

    /// When the next deadline is.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.keys().next().map(|(at, _)| *at);
        let resend = self.resend.values().min().copied();
        let lent = self.lending.values().map(|l| l.until).min();
        let fetch = self.fetching.values().min().copied();
        let parked = self.parked.iter().map(|p| p.until).min();
        let retry = self.failed.as_ref().map(|(at, _)| *at);
        [timer, resend, lent, fetch, parked, retry]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    // ---- inputs ----

    /// The group's state as this node applied it, and this node's epoch and entitlement.
    pub fn set_group(
        &mut self,
        now: Instant,
        state: Arc<ClusterState>,
        epoch: Option<u64>,
        entitlement: Option<Entitlement>,
    ) {
        self.state = state;
        self.entitlement = entitlement;
        for change in self.own.update(&self.state, epoch) {
            tracing::debug!(?change, "lock slot");
            match change {
                Change::ServeFresh { slot } => self.clear_slot(slot),
                Change::Resume { slot } => {
                    self.resend.remove(&slot);
                    self.lending.remove(&slot);
                }
                Change::HandOver {
                    slot, generation, ..
                } => {
                    self.stop_waiters(slot);
                    let asked = self.fetched.remove(&slot) == Some(generation);
                    let held = self
                        .entries
                        .values()
                        .any(|e| e.slot == slot && e.hold.is_some());
                    // Once the table left, another node may have served from it: this one
                    // never serves it again (unless the slot comes back, `Resume`).
                    let sent = self.resend.contains_key(&slot);
                    // Only an entitlement in the epoch the slot was served in can renew.
                    let entitled = entitlement.filter(|e| Some(e.epoch) == epoch && e.until > now);
                    match entitled {
                        // Lend the holds until the next owner is ready for them, at most a
                        // lease and within the entitlement (a loan carries over to a move that
                        // supersedes this one, with its end).
                        Some(e) if held && !asked && !sent => {
                            let until = (now + self.config.lease).min(e.until);
                            let epoch = e.epoch;
                            self.lending.entry(slot).or_insert(Loan { epoch, until });
                        }
                        _ => self.end_loan(now, slot),
                    }
                }
                Change::Handed { slot } | Change::Drop { slot } => {
                    self.resend.remove(&slot);
                    self.lending.remove(&slot);
                    self.clear_slot(slot);
                }
            }
        }
        // Only fetches of moves still to apply are worth keeping.
        let state = &self.state;
        self.fetched.retain(|slot, generation| {
            state
                .slot(Domain::Locks, *slot)
                .is_some_and(|s| s.generation < *generation)
        });
        // A table that came before this node applied its move can be taken now.
        for (_, (at, table)) in std::mem::take(&mut self.early) {
            self.take_table(now, at, table);
        }
        // Ask for the tables this node still awaits.
        for slot in 0..SLOTS {
            if matches!(self.own.view(slot), SlotView::Awaiting { .. }) {
                self.fetching.entry(slot).or_insert(now);
            }
        }
        self.propose();
        self.send_due(now);
        // A lapsed entitlement that came back, or a new block: waiters may be granted now.
        let ready: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.hold.is_none() && !e.waiters.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        for name in ready {
            self.promote(now, &name);
        }
        self.unpark(now);
    }

    /// A slot's table arrived from its previous owner.
    pub fn received(&mut self, now: Instant, table: SlotTable) {
        if table.slot >= SLOTS {
            return;
        }
        self.take_table(now, now, table);
        self.unpark(now);
    }

    /// The next owner of `slot` at `generation` asks for its table: it applied the move. A
    /// loan ends and the table goes now; for a move this node has not applied yet, it goes as
    /// soon as it does.
    pub fn fetch(&mut self, now: Instant, slot: u16, generation: u64) {
        if slot >= SLOTS {
            return;
        }
        match self.own.view(slot) {
            SlotView::HandingOver { generation: g, .. } if g == generation => {
                if self.lending.contains_key(&slot) {
                    self.end_loan(now, slot);
                    self.send_due(now);
                }
            }
            _ => {
                let current = self
                    .state
                    .slot(Domain::Locks, slot)
                    .map_or(0, |s| s.generation);
                if generation > current {
                    self.fetched.insert(slot, generation);
                }
            }
        }
    }

    /// Installs `table`, which arrived at `at`, if this node awaits it; keeps it if it is for a
    /// move this node has not applied yet.
    fn take_table(&mut self, now: Instant, at: Instant, table: SlotTable) {
        let current = self
            .state
            .slot(Domain::Locks, table.slot)
            .map_or(0, |s| s.generation);
        // Time spent waiting here is taken off the leases it carries; a lease measured on the
        // sender's clock is stretched by the drift allowance.
        let waited = now.saturating_duration_since(at);
        let slot = table.slot;
        let drift = self.config.drift_permille;
        let holds: Vec<(String, Hold)> = table
            .holds
            .iter()
            .filter(|h| slot_of(h.name.as_bytes()) == slot)
            .filter_map(|h| {
                let left = Duration::from_millis(h.left_ms);
                let left = (left + left * drift / 1000).checked_sub(waited)?;
                let hold = Hold {
                    holder: h.holder,
                    token: h.token,
                    expires: now + left,
                    attempt: h.attempt,
                };
                Some((h.name.clone(), hold))
            })
            .collect();
        let until = holds.iter().map(|(_, h)| h.expires).max().unwrap_or(now);
        if !self
            .own
            .received(&self.state, slot, table.generation, until)
        {
            tracing::debug!(
                slot,
                generation = table.generation,
                current,
                "lock table not awaited"
            );
            if table.generation > current {
                self.early.insert(slot, (at, table));
            }
            return;
        }
        tracing::debug!(slot, holds = holds.len(), ?waited, "lock table taken");
        for (name, hold) in holds {
            self.entry(&name).hold = Some(hold);
            self.rearm(&name);
        }
        self.propose();
    }

    /// `holder` asks for `name`, as a node that numbers no attempts (attempt 0): every
    /// request counts as the holder's newest. See [`Self::acquire_attempt`].
    pub fn acquire(
        &mut self,
        now: Instant,
        name: &str,
        holder: Holder,
        wait: Wait,
        request: RequestId,
    ) {
        self.acquire_attempt(now, name, holder, 0, wait, request);
    }

    /// `holder` asks for `name` with its `attempt`-th request (numbered from 1, increasing).
    /// A later attempt than the one granted or queued replaces it: the caller never saw that
    /// grant, or could not use it, and gives it back. An earlier or the same attempt (a request
    /// held up on the way, or delivered twice) changes nothing and is answered `Cancelled`:
    /// taken as a give-back, it would end a grant its holder is using.
    pub fn acquire_attempt(
        &mut self,
        now: Instant,
        name: &str,
        holder: Holder,
        attempt: u64,
        wait: Wait,
        request: RequestId,
    ) {
        self.acquire_since(now, now, name, (holder, attempt), wait, request);
    }

    /// [`LockTable::acquire_attempt`] of a request that arrived at `since` (earlier if it was
    /// held for its slot's table): its wait counts from then.
    fn acquire_since(
        &mut self,
        now: Instant,
        since: Instant,
        name: &str,
        (holder, attempt): (Holder, u64),
        wait: Wait,
        request: RequestId,
    ) {
        let slot = slot_of(name.as_bytes());
        if !self.own.may_serve(slot, now, self.entitlement) {
            self.park_or_refuse(now, slot, request, || ParkedOp::Acquire {
                name: name.to_owned(),
                holder,
                attempt,
                wait,
                since,
            });
            return;
        }
        let entry = self.entry(name);
        let mine = entry.hold.as_ref().filter(|h| h.holder == holder);
        let queued = entry.waiters.iter().find(|w| w.holder == holder);
        if mine
            .map(|h| h.attempt)
            .into_iter()
            .chain(queued.map(|w| w.attempt))
            .any(|seen| !supersedes(attempt, seen))
        {
            self.reply(request, Answer::Cancelled);
            return;
        }
        let held_by_other = entry.hold.as_ref().is_some_and(|h| h.holder != holder);
        // A repeated acquire of a grant the caller never saw (or could not use): the grant is
        // given back, and made afresh below unless others wait.
        if mine.is_some() {
            entry.hold = None;
        }
        if held_by_other || !entry.waiters.is_empty() {
            match wait {
                Wait::No => self.reply(request, Answer::Busy),
                Wait::Until(deadline) => {
                    self.enqueue(since, name, (holder, attempt), request, deadline);
                }
            }
            // The first waiter's turn, if the name was given back.
            self.promote(now, name);
            return;
        }
        match (self.grant(now, name, holder, attempt), wait) {
            (Some((token, lease)), _) => self.reply(
                request,
                Answer::Granted {
                    token,
                    lease_ms: lease.as_millis() as u64,
                    waited_us: now.saturating_duration_since(since).as_micros() as u64,
                },
            ),
            // Nothing worth granting now (a late heartbeat or a spent block): the waiter is
            // granted once the group extends this node's entitlement or the block.
            (None, Wait::Until(deadline)) => {
                self.enqueue(since, name, (holder, attempt), request, deadline);
            }
            (None, Wait::No) => {
                self.reply(request, Answer::NotOwner);
                self.forget_if_empty(name);
            }
        }
    }

    /// Queues `holder` for `name` until `deadline`, its wait counted from `since`; a holder
    /// already queued keeps its place with the new request (the old one is answered
    /// `Cancelled`).
    fn enqueue(
        &mut self,
        since: Instant,
        name: &str,
        (holder, attempt): (Holder, u64),
        request: RequestId,
        deadline: Instant,
    ) {
        let entry = self.entry(name);
        if let Some(w) = entry.waiters.iter_mut().find(|w| w.holder == holder) {
            let old = std::mem::replace(&mut w.request, request);
            w.attempt = attempt;
            w.deadline = deadline;
            // The caller counts the wait from this request's send time.
            w.since = since;
            self.reply(old, Answer::Cancelled);
        } else {
            entry.waiters.push_back(Waiter {
                holder,
                attempt,
                request,
                deadline,
                since,
            });
        }
        self.rearm(name);
    }

    /// `holder` renews its lease on `name` granted with `token`.
    pub fn renew(
        &mut self,
        now: Instant,
        name: &str,
        holder: Holder,
        token: u64,
        request: RequestId,
    ) {
        let slot = slot_of(name.as_bytes());
        let (Some(e), true) = (self.entitlement, self.may_renew(slot, now)) else {
            self.park_or_refuse(now, slot, request, || ParkedOp::Renew {
                name: name.to_owned(),
                holder,
                token,
            });
            return;
        };
        let lease = Ownership::lease(now, e, self.config.lease);
        let renewed = match self.entries.get_mut(name).and_then(|e| e.hold.as_mut()) {
            Some(h) if h.holder == holder && h.token == token && h.expires > now => {
                // A renewal cut short at this node's entitlement never shortens what the holder
                // may already count on (a lease handed over from the previous owner, say).
                h.expires = h.expires.max(now + lease);
                true
            }
            _ => false,
        };
        if renewed {
            self.rearm(name);
            self.reply(
                request,
                Answer::Renewed {
                    lease_ms: lease.as_millis() as u64,
                },
            );
        } else {
            self.reply(request, Answer::NotHeld);
        }
    }

    /// `holder` releases `name`.
    pub fn release(
        &mut self,
        now: Instant,
        name: &str,
        holder: Holder,
        token: u64,
        request: RequestId,
    ) {
        let slot = slot_of(name.as_bytes());
        if !self.frees_holds(slot) {
            // Held while the table is on its way here, as a renewal is; refused otherwise (once
            // the table has left, with where it went).
            return self.park_or_refuse(now, slot, request, || ParkedOp::Release {
                name: name.to_owned(),
                holder,
                token,
            });
        }
        let released = match self.entries.get_mut(name) {
            Some(e)
                if e.hold
                    .as_ref()
                    .is_some_and(|h| h.holder == holder && h.token == token) =>
            {
                e.hold = None;
                true
            }
            _ => false,
        };
        if released {
            self.reply(request, Answer::Released);
            self.promote(now, name);
        } else {
            self.reply(request, Answer::NotHeld);
        }
    }

    /// `holder` withdraws its wait for `name` (or gives back a grant it never saw).
    pub fn cancel(&mut self, now: Instant, name: &str, holder: Holder, request: RequestId) {
        let slot = slot_of(name.as_bytes());
        if matches!(self.own.view(slot), SlotView::Awaiting { .. }) {
            // Its requests held here end now; a grant it never saw may come with the table,
            // so the cancel waits for the table too.
            let mut withdrawn = Vec::new();
            self.parked.retain(|p| match &p.op {
                ParkedOp::Acquire {
                    name: n, holder: h, ..
                } if n == name && *h == holder => {
                    withdrawn.push(p.request);
                    false
                }
                _ => true,
            });
            for r in withdrawn {
                self.reply(r, Answer::Cancelled);
            }
            return self.park_or_refuse(now, slot, request, || ParkedOp::Cancel {
                name: name.to_owned(),
                holder,
            });
        }
        // A node that neither serves nor lends the slot says where it went, so the cancel
        // reaches the node that holds the grant now.
        let frees = self.frees_holds(slot);
        let answer = if frees {
            Answer::Cancelled
        } else {
            self.refusal(slot)
        };
        let Some(entry) = self.entries.get_mut(name) else {
            self.reply(request, answer);
            return;
        };
        let withdrawn: Vec<RequestId> = entry
            .waiters
            .iter()
            .filter(|w| w.holder == holder)
            .map(|w| w.request)
            .collect();
        entry.waiters.retain(|w| w.holder != holder);
        let held = entry.hold.as_ref().is_some_and(|h| h.holder == holder);
        if held && frees {
            self.entry(name).hold = None;
        }
        for r in withdrawn {
            self.reply(r, Answer::Cancelled);
        }
        self.reply(request, answer);
        self.promote(now, name);
    }

    /// Expires leases and waits whose time has come, and sends due hand-overs again.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(((at, id), name)) = self.timers.first_key_value() {
            if *at > now {
                break;
            }
            let (at, id, name) = (*at, *id, name.clone());
            self.timers.remove(&(at, id));
            if let Some(e) = self.entries.get_mut(&name) {
                e.timer = None;
            }
            self.expire(now, &name);
        }
        if let Some((_, failed)) = self.failed.take_if(|(at, _)| *at <= now) {
            for command in &failed {
                self.own.proposal_failed(command);
            }
            self.propose();
        }
        for slot in due(&self.lending, now, |l| l.until) {
            self.end_loan(now, slot);
        }
        self.send_due(now);
        self.unpark(now);
    }

    /// A proposal this table asked for failed at `now`: it is asked again a resend period
    /// later, not at once (a group without a leader fails a proposal as soon as it is made,
    /// and the status that reports the failure would ask again at once).
    pub fn proposal_failed(&mut self, now: Instant, command: &Command) {
        let at = now + self.config.resend;
        let (_, failed) = self.failed.get_or_insert((at, Vec::new()));
        failed.push(command.clone());
    }

    // ---- internals ----

    /// Whether this node renews holds of `slot` now: it serves the slot, or lends it within
    /// the epoch it served it in.
    fn may_renew(&self, slot: u16, now: Instant) -> bool {
        let lends = self.lending.get(&slot).is_some_and(|l| {
            self.entitlement
                .is_some_and(|e| e.epoch == l.epoch && e.until > now)
        });
        lends || self.own.may_serve(slot, now, self.entitlement)
    }

    /// Stops lending `slot` (if it was): its table is sent from `now` on, until the group
    /// records the hand-over, and this node never serves it again.
    fn end_loan(&mut self, now: Instant, slot: u16) {
        self.lending.remove(&slot);
        self.resend.insert(slot, now);
    }

    fn propose(&mut self) {
        for command in self.own.proposals(self.entitlement) {
            self.outputs.push_back(Output::Propose(command));
        }
    }

    /// A request for `slot`, which this node may not serve now: held if the slot was given to
    /// this node and its table is on the way (a holder whose node applied the move first asks
    /// here before the previous owner even sent its holds), refused otherwise.
    /// The request is only copied when it is held: a refusal costs nothing more.
    fn park_or_refuse(
        &mut self,
        now: Instant,
        slot: u16,
        request: RequestId,
        op: impl FnOnce() -> ParkedOp,
    ) {
        match self.own.view(slot) {
            SlotView::Awaiting { .. } => self.parked.push(Parked {
                slot,
                until: now + self.config.lease / 2,
                request,
                op: op(),
            }),
            _ => self.reply(request, self.refusal(slot)),
        }
    }

    /// What this node answers a request for `slot` it does not serve: where the slot went, if
    /// this node handed its table over, else `NotOwner`.
    fn refusal(&self, slot: u16) -> Answer {
        match self.own.view(slot) {
            SlotView::HandingOver { to, .. } => Answer::Moved { to },
            _ => Answer::NotOwner,
        }
    }

    /// Whether this node may end `slot`'s holds (a release, a cancel): it serves the slot, or
    /// still lends the holds of a slot that moved.
    fn frees_holds(&self, slot: u16) -> bool {
        self.lending.contains_key(&slot) || matches!(self.own.view(slot), SlotView::Serving { .. })
    }

    /// Answers the held requests whose slot this node now serves (or no longer awaits), and
    /// refuses those held past their deadline.
    fn unpark(&mut self, now: Instant) {
        if self.parked.is_empty() {
            return;
        }
        for p in std::mem::take(&mut self.parked) {
            let waiting = matches!(self.own.view(p.slot), SlotView::Awaiting { .. });
            if waiting && p.until > now {
                self.parked.push(p);
                continue;
            }
            if waiting {
                self.reply(p.request, Answer::NotOwner);
                continue;
            }
            // Served (or refused) as if it arrived now.
            match p.op {
                ParkedOp::Acquire {
                    name,
                    holder,
                    attempt,
                    wait,
                    since,
                } => self.acquire_since(now, since, &name, (holder, attempt), wait, p.request),
                ParkedOp::Renew {
                    name,
                    holder,
                    token,
                } => self.renew(now, &name, holder, token, p.request),
                ParkedOp::Release {
                    name,
                    holder,
                    token,
                } => self.release(now, &name, holder, token, p.request),
                ParkedOp::Cancel { name, holder } => self.cancel(now, &name, holder, p.request),
            }
        }
    }

    fn entry(&mut self, name: &str) -> &mut Entry {
        self.entries
            .entry(name.to_owned())
            .or_insert_with(|| Entry {
                slot: slot_of(name.as_bytes()),
                hold: None,
                waiters: VecDeque::new(),
                timer: None,
            })
    }

    fn send_due(&mut self, now: Instant) {
        for slot in due(&self.fetching, now, |at| *at) {
            let SlotView::Awaiting { generation } = self.own.view(slot) else {
                self.fetching.remove(&slot);
                continue;
            };
            let from = self.state.slot(Domain::Locks, slot).and_then(|s| s.from);
            if let Some((from, _)) = from {
                self.outputs.push_back(Output::Fetch {
                    from,
                    slot,
                    generation,
                });
            }
            self.fetching.insert(slot, now + self.config.resend);
        }
        for slot in due(&self.resend, now, |at| *at) {
            let SlotView::HandingOver { generation, to } = self.own.view(slot) else {
                self.resend.remove(&slot);
                continue;
            };
            let holds = self
                .entries
                .iter()
                .filter(|(_, e)| e.slot == slot)
                .filter_map(|(name, e)| {
                    let h = e.hold.as_ref().filter(|h| h.expires > now)?;
                    Some(MovedHold {
                        name: name.clone(),
                        holder: h.holder,
                        token: h.token,
                        left_ms: h.expires.saturating_duration_since(now).as_millis() as u64 + 1,
                        attempt: h.attempt,
                    })
                })
                .collect();
            self.outputs.push_back(Output::HandOver {
                to,
                table: SlotTable {
                    slot,
                    generation,
                    holds,
                },
            });
            self.resend.insert(slot, now + self.config.resend);
        }
    }

    /// Answers the waiters of `slot`'s names with `NotOwner`: they ask the new owner.
    fn stop_waiters(&mut self, slot: u16) {
        let mut answers = Vec::new();
        for e in self.entries.values_mut().filter(|e| e.slot == slot) {
            answers.extend(e.waiters.drain(..).map(|w| w.request));
        }
        for r in answers {
            self.reply(r, Answer::NotOwner);
        }
    }

    fn clear_slot(&mut self, slot: u16) {
        self.stop_waiters(slot);
        let names: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.slot == slot)
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            if let Some(e) = self.entries.remove(&name)
                && let Some(t) = e.timer
            {
                self.timers.remove(&t);
            }
        }
    }

    fn expire(&mut self, now: Instant, name: &str) {
        let Some(entry) = self.entries.get_mut(name) else {
            return;
        };
        if entry.hold.as_ref().is_some_and(|h| h.expires <= now) {
            entry.hold = None;
        }
        let mut timed_out = Vec::new();
        entry.waiters.retain(|w| {
            let keep = w.deadline > now;
            if !keep {
                timed_out.push(w.request);
            }
            keep
        });
        for r in timed_out {
            self.reply(r, Answer::TimedOut);
        }
        self.promote(now, name);
    }

    /// Grants `name` to its first waiter if it is free, and re-arms its timer.
    fn promote(&mut self, now: Instant, name: &str) {
        let free = self
            .entries
            .get(name)
            .is_some_and(|e| e.hold.is_none() && !e.waiters.is_empty());
        if free {
            let Waiter {
                holder, attempt, ..
            } = self.entries[name].waiters[0];
            if let Some((token, lease)) = self.grant(now, name, holder, attempt) {
                let w = self
                    .entries
                    .get_mut(name)
                    .and_then(|e| e.waiters.pop_front())
                    .expect("checked above");
                let waited = now.saturating_duration_since(w.since);
                self.reply(
                    w.request,
                    Answer::Granted {
                        token,
                        lease_ms: lease.as_millis() as u64,
                        waited_us: waited.as_micros() as u64,
                    },
                );
            }
        }
        self.forget_if_empty(name);
        self.rearm(name);
    }

    /// Gives `name` to `holder`: a token from the slot's block and a lease cut at this node's
    /// entitlement. `None` if this node may not serve the slot now, its entitlement is too
    /// close to its end ([`Ownership::grant_lease`]) or its block is used up.
    fn grant(
        &mut self,
        now: Instant,
        name: &str,
        holder: Holder,
        attempt: u64,
    ) -> Option<(u64, Duration)> {
        let slot = slot_of(name.as_bytes());
        let e = self.entitlement?;
        let lease = Ownership::grant_lease(now, e, self.config.lease)?;
        let token = self.own.issue(slot, now, Some(e))?;
        self.propose();
        self.entry(name).hold = Some(Hold {
            holder,
            token,
            expires: now + lease,
            attempt,
        });
        Some((token, lease))
    }

    fn forget_if_empty(&mut self, name: &str) {
        if self
            .entries
            .get(name)
            .is_some_and(|e| e.hold.is_none() && e.waiters.is_empty())
            && let Some(e) = self.entries.remove(name)
            && let Some(t) = e.timer
        {
            self.timers.remove(&t);
        }
    }

    fn rearm(&mut self, name: &str) {
        let Some(entry) = self.entries.get_mut(name) else {
            return;
        };
        let next = entry
            .hold
            .as_ref()
            .map(|h| h.expires)
            .into_iter()
            .chain(entry.waiters.iter().map(|w| w.deadline))
            .min();
        if entry.timer.map(|(at, _)| at) == next {
            return;
        }
        if let Some(old) = entry.timer.take() {
            self.timers.remove(&old);
        }
        if let Some(at) = next {
            let id = self.next_timer;
            self.next_timer += 1;
            entry.timer = Some((at, id));
            self.timers.insert((at, id), name.to_owned());
        }
    }

    fn reply(&mut self, request: RequestId, answer: Answer) {
        self.outputs.push_back(Output::Reply { request, answer });
    }
}

/// The slots of `map` whose time (`at` of the value) has come by `now`.
fn due<V>(map: &BTreeMap<u16, V>, now: Instant, at: impl Fn(&V) -> Instant) -> Vec<u16> {
    map.iter()
        .filter(|(_, v)| at(v) <= now)
        .map(|(s, _)| *s)
        .collect()
}
