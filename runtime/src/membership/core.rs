//! The membership core: SWIM (foca) plus Colony's member table, with no IO.
//!
//! Drive it like this: feed one input (`handle_packet`, `handle_timeout`, `join`, `leave`,
//! `set_blocked`) with the current [`Instant`], then drain [`MembershipCore::poll_output`] until
//! it returns `None`, then sleep until [`MembershipCore::poll_timeout`]. Outputs are packets to
//! send, membership events, and facts the shell should persist or log.
//!
//! ```
//! use std::time::Instant;
//! use colony_runtime::config::MembershipTimings;
//! use colony_runtime::membership::{MembershipCore, NodeIdentity, Output, GossipKey};
//! use colony_runtime::NodeId;
//!
//! let ident = |n: u128, port| NodeIdentity {
//!     id: NodeId::from_u128(n), name: format!("n{n}"),
//!     addr: format!("127.0.0.1:{port}").parse().unwrap(), incarnation: 1, replica: 0,
//! };
//! let key = GossipKey::from_cookie("secret");
//! let mut a = MembershipCore::new(ident(1, 7001), MembershipTimings::default(), 2, key.clone(), 1);
//! let mut b = MembershipCore::new(ident(2, 7002), MembershipTimings::default(), 2, key, 2);
//! let now = Instant::now();
//! b.join(now, &["127.0.0.1:7001".parse().unwrap()]);
//! // Carry packets between the two cores until both are quiet.
//! fn pump(from: &mut MembershipCore, to: &mut MembershipCore, now: Instant) -> bool {
//!     let mut moved = false;
//!     while let Some(out) = from.poll_output() {
//!         if let Output::Send { packet, .. } = out {
//!             to.handle_packet(now, from.local().addr, &packet);
//!             moved = true;
//!         }
//!     }
//!     moved
//! }
//! while pump(&mut b, &mut a, now) | pump(&mut a, &mut b, now) {}
//! assert_eq!(a.up_count(), 2);
//! assert_eq!(b.up_count(), 2);
//! ```

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::time::{Duration, Instant};

use foca::{Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::event::{Member, MemberEvent, MemberState};
use super::packet::{self, GossipKey, Kind, PacketError};
use super::{MembershipStats, NodeIdentity};
use crate::NodeId;
use crate::config::MembershipTimings;

/// How often a node that lacks members re-announces itself to its seeds.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// How long down and left members stay listed before they are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// The largest UDP datagram we send (a safe size under the usual 1500-byte MTU).
pub const MAX_DATAGRAM: usize = 1400;
/// Cap on the refusal rate-limit table, so junk from many addresses cannot grow it.
const MAX_REFUSAL_ENTRIES: usize = 1024;

/// Something the shell must do or know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Send this datagram.
    Send {
        /// Destination.
        to: SocketAddr,
        /// A sealed packet.
        packet: Vec<u8>,
    },
    /// Tell local subscribers.
    Event(MemberEvent),
    /// The local identity was renewed after being declared down: persist its incarnation.
    Renewed(NodeIdentity),
    /// A packet failed authentication (rate-limited to one report per sender per second).
    Rejected {
        /// Who sent it.
        from: SocketAddr,
        /// Why.
        error: PacketError,
    },
    /// A peer refused our packet: our cookie differs from the cluster's.
    RefusedBy(SocketAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Announce,
    /// A down verdict held back for a goodbye that may still arrive (see `hold_down`).
    SettleDown,
}

#[derive(Debug)]
enum Timer {
    Foca(foca::Timer<NodeIdentity>),
    Own(TimerKind),
}

#[derive(Debug)]
struct Record {
    identity: NodeIdentity,
    state: MemberState,
    since: Instant,
    /// When it was first counted out (suspected, down or left) since it was last up.
    lost: Option<Instant>,
}

type Swim = Foca<NodeIdentity, PostcardCodec, StdRng, NoCustomBroadcast>;

/// SWIM membership with Colony's states, authentication and fault filter. See the module doc.
pub struct MembershipCore {
    foca: Swim,
    runtime: foca::AccumulatingRuntime<NodeIdentity>,
    key: GossipKey,
    cluster_size: usize,
    /// A suspicion older than this is settled by the core itself (see `settle_stale_suspicions`).
    stale_suspicion: Duration,
    /// How long a down verdict for a member never suspected here waits for its goodbye.
    down_grace: Duration,
    /// Such verdicts, with when they stand.
    held_downs: BTreeMap<NodeId, (NodeIdentity, Instant)>,
    seeds: Vec<SocketAddr>,
    local_state: MemberState,
    /// foca is probing and answering: it said `Active` and has not said `Idle` or `Defunct`, nor
    /// renewed its identity, since.
    connected: bool,
    /// The identity was just renewed: announce it to every known address before going quiet.
    reannounce: bool,
    members: HashMap<NodeId, Record>,
    /// New id to the id it replaced, for a `Rename` waiting for its `MemberUp`.
    renamed: HashMap<NodeId, NodeId>,
    timers: BTreeMap<(Instant, u64), Timer>,
    next_timer: u64,
    outputs: VecDeque<Output>,
    blocked: HashSet<SocketAddr>,
    last_refusal: HashMap<SocketAddr, Instant>,
    stats: MembershipStats,
    version: u64,
}

impl MembershipCore {
    /// A core for `identity` in a cluster meant to hold `cluster_size` nodes; `seed` seeds the
    /// random choices of SWIM so that simulations replay.
    pub fn new(
        identity: NodeIdentity,
        timings: MembershipTimings,
        cluster_size: usize,
        key: GossipKey,
        seed: u64,
    ) -> Self {
        let foca = Foca::new(
            identity,
            swim_config(&timings, cluster_size),
            StdRng::seed_from_u64(seed),
            PostcardCodec,
        );
        MembershipCore {
            foca,
            runtime: foca::AccumulatingRuntime::new(),
            key,
            cluster_size,
            stale_suspicion: timings.suspect_to_down + timings.probe_period * 2,
            down_grace: timings.probe_rtt,
            held_downs: BTreeMap::new(),
            seeds: Vec::new(),
            // Until `join` says otherwise: a node is not up before it has started.
            local_state: MemberState::Joining,
            connected: false,
            reannounce: false,
            members: HashMap::new(),
            renamed: HashMap::new(),
            timers: BTreeMap::new(),
            next_timer: 0,
            outputs: VecDeque::new(),
            blocked: HashSet::new(),
            last_refusal: HashMap::new(),
            stats: MembershipStats::default(),
            version: 0,
        }
    }

    // ---- getters ----

    /// The local node as a member.
    pub fn local(&self) -> Member {
        Member::from_identity(self.foca.identity(), self.local_state)
    }

    /// Every known member, the local node first, then by name.
    pub fn members(&self) -> Vec<Member> {
        let mut others: Vec<Member> = self
            .members
            .values()
            .map(|r| Member::from_identity(&r.identity, r.state))
            .collect();
        others.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
        let mut all = vec![self.local()];
        all.extend(others);
        all
    }

    /// Nodes that are up, the local one included if it is.
    pub fn up_count(&self) -> usize {
        usize::from(self.local_state.is_up())
            + self.members.values().filter(|r| r.state.is_up()).count()
    }

    /// Ids of the nodes that are up, the local one included if it is.
    pub fn up_ids(&self) -> Vec<NodeId> {
        let local = self.local_state.is_up().then(|| self.foca.identity().id);
        local
            .into_iter()
            .chain(
                self.members
                    .values()
                    .filter(|r| r.state.is_up())
                    .map(|r| r.identity.id),
            )
            .collect()
    }

    /// Packet counters.
    pub fn stats(&self) -> MembershipStats {
        self.stats
    }

    /// Grows whenever the member table changes; lets a shell skip republishing views.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The earliest deadline at which [`Self::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// The next output to carry out.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    // ---- commands ----

    /// Starts joining through `seeds` (its own address is skipped). With no seeds, the node is a
    /// cluster of one and up at once.
    pub fn join(&mut self, now: Instant, seeds: &[SocketAddr]) {
        let own = self.foca.identity().addr;
        self.seeds = seeds.iter().copied().filter(|s| *s != own).collect();
        if self.seeds.is_empty() {
            self.local_state = MemberState::Up;
            self.version += 1;
        } else {
            self.announce_to(self.seeds.clone());
        }
        self.schedule(now + ANNOUNCE_EVERY, Timer::Own(TimerKind::Announce));
        self.drain(now);
    }

    /// Leaves on purpose: tells every member directly, then gossips the departure.
    pub fn leave(&mut self, now: Instant) {
        self.local_state = MemberState::Leaving;
        self.version += 1;
        let own = self.foca.identity().clone();
        // A node still joining may be listed by the seeds it announced to before it heard back
        // from any of them: they are told too, and pass it on.
        let seeds = self.seeds.clone();
        self.send_leave(&own, &seeds);
        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::debug!(error = %e, "leave_cluster");
        }
        self.drain(now);
        self.local_state = MemberState::Left;
    }

    /// Replaces the fault filter: packets from and to these addresses are dropped (tests only).
    pub fn set_blocked(&mut self, blocked: HashSet<SocketAddr>) {
        self.blocked = blocked;
    }

    /// Whether `addr` is cut off by the fault filter.
    pub fn is_blocked(&self, addr: &SocketAddr) -> bool {
        self.blocked.contains(addr)
    }

    // ---- inputs ----

    /// A datagram arrived from `from`.
    pub fn handle_packet(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.stats.packets_in += 1;
        if self.blocked.contains(&from) {
            self.stats.dropped_by_fault += 1;
            return;
        }
        match self.key.open(bytes) {
            Err(error) => {
                match error {
                    PacketError::Malformed => self.stats.malformed += 1,
                    PacketError::BadTag => self.stats.bad_tag += 1,
                }
                self.report_rejection(now, from, error);
            }
            Ok((Kind::Gossip, body)) => {
                // foca's `leave_cluster` gossips "I am down" from the leaver itself, alongside
                // our Leave packet. When that gossip arrives first (datagrams reorder) or the
                // Leave packet is lost, foca reports MemberDown and a graceful leave would surface
                // as NodeDown (found by the simulator: `sim::tests::leave`). A sender declaring
                // itself down is leaving, whichever packet says so first.
                if let Some(who) = self_declared_leave(body)
                    && self.mark_left(now, &who)
                {
                    self.send_leave(&who, &[]);
                }
                if let Err(e) = self.foca.handle_data(body, &mut self.runtime) {
                    self.stats.swim_errors += 1;
                    tracing::debug!(%from, error = %e, "gossip packet not accepted");
                }
            }
            Ok((Kind::Leave, body)) => match crate::wire::decode_payload::<NodeIdentity>(body) {
                Ok(who) => {
                    // Only first-hand news is passed on, so a goodbye travels at most two hops.
                    if self.mark_left(now, &who) && from == who.addr {
                        self.send_leave(&who, &[]);
                    }
                }
                Err(_) => self.stats.malformed += 1,
            },
            Ok((Kind::Refused, _)) => {
                self.stats.refusals_received += 1;
                self.outputs.push_back(Output::RefusedBy(from));
            }
        }
        self.drain(now);
    }

    /// Fires every timer due at `now`, in deadline order.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Timer::Foca(t) if self.suspicion_refuted(&t) => {}
                Timer::Foca(t) => {
                    if let Err(e) = self.foca.handle_timer(t, &mut self.runtime) {
                        tracing::debug!(error = %e, "swim timer");
                    }
                }
                Timer::Own(TimerKind::Announce) => {
                    if !self.connected {
                        // Joining, renewed, or every peer declared down: foca announces to down
                        // members only while it still has live ones, so knock on every known
                        // door, not only the seeds (which may be the ones that died).
                        self.announce_to_known();
                    } else if self.up_count() < self.cluster_size {
                        // Missing members after a partition: ask the seeds again.
                        self.announce_to(self.seeds.clone());
                    }
                    self.settle_stale_suspicions(now);
                    self.forget_old(now);
                    self.schedule(now + ANNOUNCE_EVERY, Timer::Own(TimerKind::Announce));
                }
                Timer::Own(TimerKind::SettleDown) => self.settle_held_downs(now),
            }
        }
        self.drain(now);
    }

    // ---- internals ----

    /// Whether `timer` would turn a suspect down though it refuted the suspicion (or is gone).
    ///
    /// foca 2.0 checks the refutation before marking the member down, but then sends it
    /// `TurnUndead` anyway, and the member, unable to refute a death, renews its identity. So
    /// every refuted suspicion forced a renewal (and `NodeRejoined` on every node) one suspicion
    /// timeout later, as the simulator showed after short partitions (`sim::tests::faults`).
    /// Dropping the stale timer here keeps foca from sending that message.
    fn suspicion_refuted(&self, timer: &foca::Timer<NodeIdentity>) -> bool {
        let foca::Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } = timer
        else {
            return false;
        };
        !self.foca.iter_membership_state().any(|m| {
            m.id() == member_id
                && m.state() == foca::State::Suspect
                && m.incarnation() == *incarnation
        })
    }

    /// Announces the local identity to each of `addrs`, in order, but our own address and the
    /// blocked ones.
    fn announce_to(&mut self, addrs: Vec<SocketAddr>) {
        let own = self.foca.identity().addr;
        for addr in addrs {
            if addr == own || self.blocked.contains(&addr) {
                continue;
            }
            // Only the address of an announce target is used; the real identity comes back.
            let target = NodeIdentity {
                id: NodeId::from_u128(0),
                name: String::new(),
                addr,
                incarnation: 0,
                replica: 0,
            };
            if let Err(e) = self.foca.announce(target, &mut self.runtime) {
                tracing::debug!(error = %e, "announce");
            }
        }
    }

    fn schedule(&mut self, at: Instant, timer: Timer) {
        self.next_timer += 1;
        self.timers.insert((at, self.next_timer), timer);
    }

    fn send(&mut self, to: SocketAddr, packet: Vec<u8>) {
        if self.blocked.contains(&to) {
            self.stats.dropped_by_fault += 1;
            return;
        }
        self.stats.packets_out += 1;
        self.outputs.push_back(Output::Send { to, packet });
    }

    fn report_rejection(&mut self, now: Instant, from: SocketAddr, error: PacketError) {
        if self.last_refusal.len() >= MAX_REFUSAL_ENTRIES {
            self.last_refusal
                .retain(|_, at| now.saturating_duration_since(*at) < Duration::from_secs(1));
            if self.last_refusal.len() >= MAX_REFUSAL_ENTRIES {
                return;
            }
        }
        let due = self
            .last_refusal
            .get(&from)
            .is_none_or(|at| now.saturating_duration_since(*at) >= Duration::from_secs(1));
        if !due {
            return;
        }
        self.last_refusal.insert(from, now);
        self.outputs.push_back(Output::Rejected { from, error });
        if error == PacketError::BadTag {
            // Tell a misconfigured node why it cannot join; junk gets no answer.
            self.send(from, packet::refusal());
        }
    }

    /// Moves what foca produced into outputs and the member table.
    fn drain(&mut self, now: Instant) {
        loop {
            while let Some((to, data)) = self.runtime.to_send() {
                let packet = self.key.seal(Kind::Gossip, &data);
                self.send(to.addr, packet);
            }
            while let Some((after, timer)) = self.runtime.to_schedule() {
                self.schedule(now + after, Timer::Foca(timer));
            }
            while let Some(note) = self.runtime.to_notify() {
                self.apply(now, note);
            }
            if !std::mem::take(&mut self.reannounce) {
                break;
            }
            self.announce_to_known();
        }
        self.reconcile_renames(now);
        self.reconcile_suspects(now);
    }

    /// Settles renames that no `MemberUp` will complete.
    ///
    /// A rename whose old identity we hold as left or down waits for foca's `MemberUp` of the new
    /// one. But we mark a member left as soon as its Leave packet arrives, while foca may still
    /// count it alive; if the node then restarts at the same address, foca swaps one live
    /// identity for another, its active set does not change, and no `MemberUp` comes. The
    /// simulator found the restarted node listed as left for good (`sim::tests::faults`). Any
    /// `MemberUp` of this batch was applied before this runs, so what is left is settled here.
    fn reconcile_renames(&mut self, now: Instant) {
        let mut waiting: Vec<(NodeId, NodeId)> =
            self.renamed.iter().map(|(new, old)| (*new, *old)).collect();
        waiting.sort();
        for (new, previous) in waiting {
            let live = self
                .foca
                .iter_members()
                .find(|m| m.id().id == new)
                .map(|m| m.id().clone());
            if let Some(identity) = live {
                self.renamed.remove(&new);
                let lost_for = self.lost_for(now, &new);
                let member = self.set(now, &identity, MemberState::Up);
                self.outputs
                    .push_back(Output::Event(MemberEvent::NodeRejoined {
                        member,
                        previous,
                        lost_for,
                    }));
            }
        }
    }

    /// Announces the local identity to the seeds and to every member we know of.
    ///
    /// Used whenever foca is disconnected, which the simulator showed can last (both found by
    /// `sim::tests::faults`):
    /// - After a renewal foca waits for someone to address the new identity, and drops payloads
    ///   addressed to the old one; its own renewal gossip goes to the identities it knows, so it
    ///   is lost on peers that renewed at the same moment. A node stayed silent that way, its
    ///   table still showing everyone up, until the others declared it down again.
    /// - A node that declared every peer down stops probing and announcing; when the seeds are
    ///   the nodes that died, two survivors that had declared each other down never met again.
    ///
    /// An announce is accepted by address, whatever identity the receiver knows.
    fn announce_to_known(&mut self) {
        let mut targets: Vec<SocketAddr> = self.seeds.clone();
        targets.extend(self.members.values().map(|r| r.identity.addr));
        targets.sort();
        targets.dedup();
        self.announce_to(targets);
    }

    fn apply(&mut self, now: Instant, note: OwnedNotification<NodeIdentity>) {
        match note {
            OwnedNotification::MemberUp(id) => {
                self.held_downs.remove(&id.id);
                let previous = self.renamed.remove(&id.id).or_else(|| {
                    self.members
                        .get(&id.id)
                        .filter(|r| r.state.is_gone())
                        .map(|_| id.id)
                });
                let lost_for = self.lost_for(now, &id.id);
                let member = self.set(now, &id, MemberState::Up);
                self.outputs.push_back(Output::Event(match previous {
                    Some(previous) => MemberEvent::NodeRejoined {
                        member,
                        previous,
                        lost_for,
                    },
                    None => MemberEvent::NodeUp(member),
                }));
            }
            OwnedNotification::MemberDown(id) => self.hold_down(now, id),
            OwnedNotification::Rename(old, new) => {
                self.held_downs.remove(&old.id);
                self.held_downs.remove(&new.id);
                let lost_at = self.members.get(&old.id).and_then(|r| r.lost);
                let old_state = self
                    .members
                    .remove(&old.id)
                    .map_or(MemberState::Down, |r| r.state);
                self.version += 1;
                if matches!(old_state, MemberState::Up | MemberState::Suspect) {
                    // No liveness change follows: the swap is the whole event.
                    let member = self.set(now, &new, MemberState::Up);
                    self.outputs
                        .push_back(Output::Event(MemberEvent::NodeRejoined {
                            member,
                            previous: old.id,
                            lost_for: lost_at.map_or(Duration::ZERO, |at| now - at),
                        }));
                } else {
                    self.set(now, &new, old_state);
                    // The new identity is still counted out: since the old one was.
                    if let (Some(at), Some(record)) = (lost_at, self.members.get_mut(&new.id)) {
                        record.lost = Some(at);
                    }
                    self.renamed.insert(new.id, old.id);
                }
            }
            OwnedNotification::Active => {
                self.connected = true;
                if self.local_state == MemberState::Joining {
                    self.local_state = MemberState::Up;
                    self.version += 1;
                }
            }
            OwnedNotification::Rejoin(new) => {
                if matches!(self.local_state, MemberState::Joining | MemberState::Up) {
                    self.local_state = MemberState::Up;
                }
                // Renewing resets foca to disconnected: announce the new identity at once.
                self.connected = false;
                self.reannounce = true;
                self.version += 1;
                self.outputs.push_back(Output::Renewed(new));
            }
            OwnedNotification::Idle | OwnedNotification::Defunct => self.connected = false,
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    /// How long `id` has been counted out (suspected, down or left); zero if it is not.
    fn lost_for(&self, now: Instant, id: &NodeId) -> Duration {
        self.members
            .get(id)
            .and_then(|r| r.lost)
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at))
    }

    fn set(&mut self, now: Instant, id: &NodeIdentity, state: MemberState) -> Member {
        self.version += 1;
        let record = self.members.entry(id.id).or_insert_with(|| Record {
            identity: id.clone(),
            state,
            since: now,
            lost: None,
        });
        record.identity = id.clone();
        record.state = state;
        record.since = now;
        record.lost = (state != MemberState::Up).then(|| record.lost.unwrap_or(now));
        Member::from_identity(id, state)
    }

    /// foca declared `id` down: says so now, or, for a member this node still holds up (it
    /// never saw it suspected), after `down_grace`.
    ///
    /// A leaver's own "I am down" reaches members that missed its goodbye second-hand, in foca
    /// gossip from a member that relayed the goodbye in a datagram of its own a moment before:
    /// the two datagrams may swap on the way, and the member saw the leaver down, then left
    /// (found by `sim::tests::leave`, seed 2065803316761366451). A failure verdict is preceded
    /// by a suspicion gossiped for the whole `suspect_to_down`, so a member seldom learns a real
    /// death unsuspected, and then learns it one probe round trip later.
    fn hold_down(&mut self, now: Instant, id: NodeIdentity) {
        let unsuspected = self
            .members
            .get(&id.id)
            .is_some_and(|r| r.state == MemberState::Up && r.identity == id);
        if unsuspected {
            let at = now + self.down_grace;
            self.held_downs.insert(id.id, (id, at));
            self.schedule(at, Timer::Own(TimerKind::SettleDown));
        } else {
            self.declare_down(now, &id);
        }
    }

    /// Declares down the held verdicts that stand: no goodbye and no new identity came.
    fn settle_held_downs(&mut self, now: Instant) {
        let due: Vec<NodeId> = self
            .held_downs
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some((identity, _)) = self.held_downs.remove(&id) else {
                continue;
            };
            let unchanged = self
                .members
                .get(&id)
                .is_some_and(|r| r.identity == identity && !r.state.is_gone());
            if unchanged {
                self.declare_down(now, &identity);
            }
        }
    }

    /// Records that `id` is down, unless it left.
    fn declare_down(&mut self, now: Instant, id: &NodeIdentity) {
        let left = self
            .members
            .get(&id.id)
            .is_some_and(|r| r.state == MemberState::Left);
        if !left {
            let member = self.set(now, id, MemberState::Down);
            self.outputs
                .push_back(Output::Event(MemberEvent::NodeDown(member)));
        }
    }

    /// Records that `who` left; whether this is news.
    fn mark_left(&mut self, now: Instant, who: &NodeIdentity) -> bool {
        self.held_downs.remove(&who.id);
        let known = self.members.get(&who.id).is_some_and(|r| {
            r.identity.incarnation <= who.incarnation && r.state != MemberState::Left
        });
        if known {
            let member = self.set(now, who, MemberState::Left);
            self.outputs
                .push_back(Output::Event(MemberEvent::NodeLeft(member)));
        }
        known
    }

    /// Sends a Leave packet about `who` to every up or suspect member but `who` itself, and to
    /// `also`.
    ///
    /// The leaver sends it, and so does every member that heard the goodbye first-hand: the
    /// leaver's datagram to some member may be lost, and then foca's gossip of the departure
    /// arrives second-hand, looks like any other death, and that member would see *down* after
    /// a graceful leave (found by `sim::tests::leave` with one link cut).
    fn send_leave(&mut self, who: &NodeIdentity, also: &[SocketAddr]) {
        let body = crate::wire::encode_payload(who).unwrap_or_default();
        let packet = self.key.seal(Kind::Leave, &body);
        // `who` is never among them: a relay has just marked it left, and the local node is never
        // listed up or suspect (foca turns every identity at our address into a down one).
        let mut targets: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|r| matches!(r.state, MemberState::Up | MemberState::Suspect))
            .map(|r| r.identity.addr)
            .chain(also.iter().copied())
            .collect();
        // The member table is a HashMap, whose order changes from run to run: sort, so that the
        // same inputs give the same outputs and a simulation replays from its seed.
        targets.sort();
        targets.dedup();
        for to in targets {
            self.send(to, packet.clone());
        }
    }

    /// foca has no suspicion notifications: read them off its member list.
    fn reconcile_suspects(&mut self, now: Instant) {
        let mut changes = Vec::new();
        for m in self.foca.iter_membership_state() {
            let Some(record) = self.members.get(&m.id().id) else {
                continue;
            };
            if record.identity != *m.id() {
                continue;
            }
            match (m.state(), record.state) {
                (foca::State::Suspect, MemberState::Up) => {
                    changes.push((m.id().clone(), MemberState::Suspect))
                }
                (foca::State::Alive, MemberState::Suspect) => {
                    changes.push((m.id().clone(), MemberState::Up))
                }
                _ => {}
            }
        }
        for (id, state) in changes {
            let member = self.set(now, &id, state);
            self.outputs.push_back(Output::Event(match state {
                MemberState::Suspect => MemberEvent::NodeSuspect(member),
                _ => MemberEvent::NodeUp(member),
            }));
        }
    }

    /// Declares down the members suspected for longer than foca itself would have allowed.
    ///
    /// foca drops its pending suspicion timers whenever the local identity is renewed (after this
    /// node was declared down, e.g. across a healed partition), so a member suspected just before
    /// would stay suspect forever: never probed down, never refuted. The verdict foca's timer
    /// would have given is applied here instead, and gossiped like any other.
    fn settle_stale_suspicions(&mut self, now: Instant) {
        let stale: Vec<foca::Member<NodeIdentity>> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Suspect)
            .filter(|m| {
                self.members.get(&m.id().id).is_some_and(|r| {
                    r.state == MemberState::Suspect
                        && now.saturating_duration_since(r.since) >= self.stale_suspicion
                })
            })
            .map(|m| foca::Member::new(m.id().clone(), m.incarnation(), foca::State::Down))
            .collect();
        if stale.is_empty() {
            return;
        }
        tracing::debug!(count = stale.len(), "settling suspicions foca forgot");
        if let Err(e) = self
            .foca
            .apply_many(stale.into_iter(), true, &mut self.runtime)
        {
            tracing::debug!(error = %e, "settling stale suspicions");
        }
    }

    fn forget_old(&mut self, now: Instant) {
        let before = self.members.len();
        self.members.retain(|_, r| {
            !r.state.is_gone() || now.saturating_duration_since(r.since) < FORGET_AFTER
        });
        if self.members.len() != before {
            self.version += 1;
        }
    }
}

/// The sender, if this foca packet has it declaring itself down: that is how foca leaves.
///
/// Only a leaving node gossips its own death; a failure verdict is always sent by someone else.
fn self_declared_leave(mut body: &[u8]) -> Option<NodeIdentity> {
    use foca::Codec;

    let mut codec = PostcardCodec;
    let header: foca::Header<NodeIdentity> = codec.decode_header(&mut body).ok()?;
    // The layout foca writes after the header: a big-endian u16 count, then the updates.
    let &[hi, lo, ref rest @ ..] = body else {
        return None;
    };
    let mut updates: &[u8] = rest;
    if header.message == foca::Message::Broadcast {
        return None;
    }
    for _ in 0..u16::from_be_bytes([hi, lo]) {
        let update: foca::Member<NodeIdentity> = codec.decode_member(&mut updates).ok()?;
        if update.state() == foca::State::Down && *update.id() == header.src {
            return Some(header.src);
        }
    }
    None
}

/// SWIM settings from Colony's timings.
fn swim_config(timings: &MembershipTimings, cluster_size: usize) -> foca::Config {
    let size =
        NonZeroU32::new(cluster_size.clamp(1, u32::MAX as usize) as u32).unwrap_or(NonZeroU32::MIN);
    let mut c = foca::Config::new_lan(size);
    c.probe_period = timings.probe_period;
    c.probe_rtt = timings.probe_rtt;
    c.suspect_to_down_after = timings.suspect_to_down;
    // More retransmissions than LAN defaults: a missed Down update costs a whole suspicion cycle.
    c.max_transmissions = c
        .max_transmissions
        .max(NonZeroU8::new(6).expect("non-zero"));
    c.max_packet_size = NonZeroUsize::new(MAX_DATAGRAM - packet::OVERHEAD).expect("non-zero");
    // After a partition heals, each side must hear from the other soon.
    c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(1),
        num_members: NonZeroUsize::new(2).expect("non-zero"),
    });
    c
}
