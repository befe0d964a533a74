//! A seeded world of consensus group cores, each with the ownership of one domain's slots and
//! a one-lock table per slot, under a simulated network and per-node clocks.
//!
//! Every node runs the real [`GroupCore`] and [`Ownership`]; the world plays the shell (it
//! persists, routes messages, hands tables over) and the users (each node now and then grants
//! the lock of a slot it may serve, for a random lease cut short at its entitlement). Faults:
//! kills and restarts (what was persisted survives), wiped stores, pauses, partitions, loss,
//! duplication and reordering, and clocks that start apart and drift. What happened is
//! recorded in a [`GroupHistory`], judged by [`check`].
//!
//! Holds are recorded with the granter's lease end: a holder counts its lease from before the
//! grant, so this is the latest any holder could believe it holds.

pub mod check;
mod clock;

pub use clock::Clock;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use raft::eraftpb::Message;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::check::Hold;
use crate::consensus::{
    ClusterSettings, Command, Domain, GroupConfig, GroupCore, Identity, Log, MemberInfo, Output,
    PeerState, ReplicaId,
};
use crate::ownership::{Change, Ownership, SlotView};

/// How to build a [`GroupWorld`].
#[derive(Debug, Clone)]
pub struct GroupWorldConfig {
    /// The one seed of the run.
    pub seed: u64,
    /// Nodes at the start; node 0 founds the group.
    pub nodes: usize,
    /// The group's timings (its liveness is the lock lease).
    pub group: GroupConfig,
    /// Message delay on a healthy link, before jitter.
    pub delay: Duration,
    /// Up to how much longer a message may take (so messages reorder).
    pub jitter: Duration,
    /// Largest offset between two nodes' clocks.
    pub max_offset: Duration,
    /// Largest drift of a clock from world time, in parts per million (either way).
    pub max_drift_ppm: i64,
    /// Mean time between two grant attempts of one node.
    pub grant_every: Duration,
}

impl GroupWorldConfig {
    /// `nodes` nodes with a 1 s liveness, 1–3 ms links, clocks up to 10 s apart drifting up to
    /// 0.8% (the group allows 2%).
    pub fn new(seed: u64, nodes: usize) -> Self {
        GroupWorldConfig {
            seed,
            nodes,
            group: GroupConfig::with_liveness(Duration::from_secs(1)),
            delay: Duration::from_millis(1),
            jitter: Duration::from_millis(2),
            max_offset: Duration::from_secs(10),
            max_drift_ppm: 8_000,
            grant_every: Duration::from_millis(20),
        }
    }
}

/// Where a node's process stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Stepped and fed messages.
    Running,
    /// Not stepped until `until`; messages to it wait.
    Paused {
        /// World time it resumes at.
        until: Duration,
    },
    /// Gone; its store survives.
    Killed,
}

/// What the world recorded.
#[derive(Debug, Clone, Default)]
pub struct GroupHistory {
    /// Each node that became leader, with its term and when.
    pub leaders: Vec<(u64, ReplicaId, Duration)>,
    /// Each command applied, by node and index.
    pub applied: Vec<(ReplicaId, u64, Command)>,
    /// Each grant of a slot's lock, in world microseconds.
    pub holds: Vec<Hold>,
}

#[derive(Clone)]
enum Payload {
    Raft {
        group: u64,
        msg: Message,
    },
    /// A slot's table: its one hold, as a token and the lease left when sent.
    Handover {
        slot: u16,
        generation: u64,
        hold: Option<(u64, Duration)>,
    },
}

struct Flight {
    from: usize,
    to: usize,
    payload: Payload,
}

struct SimNode {
    name: String,
    identity: Identity,
    clock: Clock,
    core: Option<GroupCore>,
    disk: Log,
    group: u64,
    own: Ownership,
    /// The one lock of each slot this node serves or hands over: its token and lease end.
    tables: BTreeMap<u16, Option<(u64, Instant)>>,
    status: Status,
    held: Vec<Flight>,
    next_grant: Duration,
}

/// The world. See the module doc.
pub struct GroupWorld {
    config: GroupWorldConfig,
    rng: StdRng,
    base: Instant,
    now: Duration,
    nodes: Vec<SimNode>,
    flights: BTreeMap<u64, Flight>,
    arrivals: BinaryHeap<Reverse<(Duration, u64)>>,
    next_flight: u64,
    cut: BTreeSet<(usize, usize)>,
    loss: f64,
    dup: f64,
    next_resend: Duration,
    history: GroupHistory,
}

impl Drop for GroupWorld {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("group world seed: {}", self.config.seed);
        }
    }
}

const DOMAIN: Domain = Domain::Locks;

impl GroupWorld {
    /// Starts `config.nodes` nodes; node 0 founds the group, the others wait to be added.
    pub fn start(config: GroupWorldConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let base = Instant::now();
        let group = rng.random::<u64>() | 1;
        let mut world = GroupWorld {
            config: config.clone(),
            rng,
            base,
            now: Duration::ZERO,
            nodes: Vec::new(),
            flights: BTreeMap::new(),
            arrivals: BinaryHeap::new(),
            next_flight: 0,
            cut: BTreeSet::new(),
            loss: 0.0,
            dup: 0.0,
            next_resend: Duration::ZERO,
            history: GroupHistory::default(),
        };
        for i in 0..config.nodes {
            world.add_node(i == 0, group);
        }
        world
    }

    fn settings(&self) -> ClusterSettings {
        ClusterSettings {
            cluster_size: self.config.nodes as u32,
            quorum: (self.config.nodes / 2 + 1) as u32,
            lock_lease_ms: self.config.group.liveness.as_millis() as u64,
            probe_period_ms: 400,
            probe_rtt_ms: 150,
            suspect_to_down_ms: 1200,
        }
    }

    /// Adds a node with a fresh store; `found`: it founds group `group`.
    fn add_node(&mut self, found: bool, group: u64) -> usize {
        let i = self.nodes.len();
        let replica = ReplicaId(self.rng.random::<u64>() | 1);
        let offset = self.random_duration(self.config.max_offset);
        let d = self.config.max_drift_ppm;
        let rate = self.rng.random_range(-d..=d);
        let clock = Clock::new(self.base, offset, rate);
        let identity = Identity {
            replica,
            info: MemberInfo {
                name: format!("n{}", i + 1),
                addr: crate::sim::node_addr(i),
            },
            settings: self.settings(),
        };
        let now = clock.local(self.now);
        let seed = self.rng.random();
        let core = if found {
            GroupCore::found(identity.clone(), self.config.group, group, now, seed)
        } else {
            GroupCore::restore(
                identity.clone(),
                self.config.group,
                0,
                Log::default(),
                now,
                seed,
            )
        };
        self.nodes.push(SimNode {
            name: format!("n{}", i + 1),
            identity,
            clock,
            core: Some(core),
            disk: Log::default(),
            group: if found { group } else { 0 },
            own: Ownership::new(replica, DOMAIN),
            tables: BTreeMap::new(),
            status: Status::Running,
            held: Vec::new(),
            next_grant: self.now,
        });
        self.drain(i);
        i
    }

    fn random_duration(&mut self, max: Duration) -> Duration {
        Duration::from_nanos(self.rng.random_range(0..=max.as_nanos() as u64))
    }

    // ---- getters ----

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// World time since the start.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// What happened so far.
    pub fn history(&self) -> &GroupHistory {
        &self.history
    }

    /// Node `i`'s core, unless it is killed.
    pub fn core(&self, i: usize) -> Option<&GroupCore> {
        self.nodes[i].core.as_ref()
    }

    /// Number of nodes ever started.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the world has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether every running node is registered in an epoch and every slot is served by a
    /// running node: the cluster can grant every lock.
    pub fn settled(&self) -> bool {
        let running: Vec<&SimNode> = self
            .nodes
            .iter()
            .filter(|n| n.status == Status::Running && n.core.is_some())
            .collect();
        let all_registered = running
            .iter()
            .all(|n| n.core.as_ref().and_then(GroupCore::epoch).is_some());
        let served: BTreeSet<u16> = running.iter().flat_map(|n| n.own.serving()).collect();
        all_registered && served.len() == usize::from(crate::consensus::SLOTS)
    }

    // ---- faults ----

    /// SIGKILL: the node stops; what it persisted stays.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.core = None;
        node.status = Status::Killed;
        node.held.clear();
    }

    /// Starts a killed node again from its store.
    pub fn restart(&mut self, i: usize) {
        let seed = self.rng.random();
        let node = &mut self.nodes[i];
        let now = node.clock.local(self.now);
        node.core = Some(GroupCore::restore(
            node.identity.clone(),
            self.config.group,
            node.group,
            node.disk.clone(),
            now,
            seed,
        ));
        node.own = Ownership::new(node.identity.replica, DOMAIN);
        node.tables.clear();
        node.status = Status::Running;
        self.drain(i);
    }

    /// Kills node `i` and starts a new member in its place with an empty store.
    pub fn replace(&mut self, i: usize) -> usize {
        self.kill(i);
        let group = 0;
        self.add_node(false, group)
    }

    /// SIGSTOP for `d`: messages to it wait; it resumes with its clock moved on.
    pub fn pause(&mut self, i: usize, d: Duration) {
        if self.nodes[i].status == Status::Running {
            self.nodes[i].status = Status::Paused {
                until: self.now + d,
            };
        }
    }

    /// Cuts every link between the sides (each a list of node indices).
    pub fn partition(&mut self, sides: &[&[usize]]) {
        for (a, side) in sides.iter().enumerate() {
            for other in &sides[a + 1..] {
                for &x in *side {
                    for &y in *other {
                        self.cut.insert((x, y));
                        self.cut.insert((y, x));
                    }
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Loses each message with probability `loss` and duplicates it with probability `dup`.
    pub fn set_faults(&mut self, loss: f64, dup: f64) {
        self.loss = loss;
        self.dup = dup;
    }

    /// Node `i` leaves gracefully: its slots move away with their tables, then it retires.
    pub fn leave(&mut self, i: usize) {
        let now = self.local(i);
        if let Some(core) = self.nodes[i].core.as_mut() {
            core.leave(now);
        }
        self.drain(i);
    }

    // ---- running ----

    /// Runs for `d` of world time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.step(end) {}
        self.now = end;
    }

    /// Runs until `done` holds, at most `limit`; returns whether it held.
    pub fn run_until(&mut self, done: impl Fn(&GroupWorld) -> bool, limit: Duration) -> bool {
        let end = self.now + limit;
        while !done(self) {
            if !self.step(end) {
                return done(self);
            }
        }
        true
    }

    fn local(&self, i: usize) -> Instant {
        self.nodes[i].clock.local(self.now)
    }

    /// Moves to the next event before `end` and handles it; false if there is none.
    fn step(&mut self, end: Duration) -> bool {
        let Some(next) = self.next_event().filter(|t| *t <= end) else {
            return false;
        };
        self.now = self.now.max(next);
        for i in 0..self.nodes.len() {
            if let Status::Paused { until } = self.nodes[i].status
                && until <= self.now
            {
                self.nodes[i].status = Status::Running;
                for flight in std::mem::take(&mut self.nodes[i].held) {
                    self.deliver(flight);
                }
            }
        }
        while let Some(Reverse((at, id))) = self.arrivals.peek().copied() {
            if at > self.now {
                break;
            }
            self.arrivals.pop();
            if let Some(flight) = self.flights.remove(&id) {
                self.deliver(flight);
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].status != Status::Running {
                continue;
            }
            let due = self.nodes[i]
                .core
                .as_ref()
                .and_then(GroupCore::poll_timeout)
                .is_some_and(|t| self.nodes[i].clock.world(t) <= self.now);
            if due {
                self.tick(i);
            }
            if self.nodes[i].next_grant <= self.now {
                self.try_grant(i);
            }
        }
        if self.next_resend <= self.now {
            self.next_resend = self.now + Duration::from_millis(200);
            for i in 0..self.nodes.len() {
                self.resend_handovers(i);
            }
        }
        true
    }

    fn next_event(&self) -> Option<Duration> {
        let mut next = self.arrivals.peek().map(|Reverse((t, _))| *t);
        let mut consider = |t: Duration| next = Some(next.map_or(t, |n: Duration| n.min(t)));
        consider(self.next_resend);
        for node in &self.nodes {
            match node.status {
                Status::Running => {
                    if let Some(t) = node.core.as_ref().and_then(GroupCore::poll_timeout) {
                        consider(node.clock.world(t).max(self.now));
                    }
                    consider(node.next_grant.max(self.now));
                }
                Status::Paused { until } => consider(until),
                Status::Killed => {}
            }
        }
        next
    }

    fn tick(&mut self, i: usize) {
        let now = self.local(i);
        let peers = self.peers_of(i);
        if let Some(core) = self.nodes[i].core.as_mut() {
            core.set_peers(now, peers);
            core.handle_timeout(now);
        }
        self.drain(i);
    }

    /// Gossip's view from node `i`: up if running or paused and not cut off.
    fn peers_of(&self, i: usize) -> Vec<(ReplicaId, PeerState)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, n)| {
                let reachable = n.status != Status::Killed && !self.cut.contains(&(i, j));
                let state = if reachable {
                    PeerState::Up
                } else {
                    PeerState::Unreachable
                };
                (n.identity.replica, state)
            })
            .collect()
    }

    fn deliver(&mut self, flight: Flight) {
        let to = flight.to;
        match self.nodes[to].status {
            Status::Killed => return,
            Status::Paused { .. } => {
                self.nodes[to].held.push(flight);
                return;
            }
            Status::Running => {}
        }
        let now = self.local(to);
        let from = self.nodes[flight.from].identity.replica;
        match flight.payload {
            Payload::Raft { group, msg } => {
                if let Some(core) = self.nodes[to].core.as_mut() {
                    let _ = core.handle_message(now, group, from, msg);
                }
            }
            Payload::Handover {
                slot,
                generation,
                hold,
            } => {
                let node = &mut self.nodes[to];
                let Some(core) = node.core.as_mut() else {
                    return;
                };
                if let Some(accept) = node.own.received(core.state(), slot, generation) {
                    // A duration measured on another clock is stretched by the drift allowance.
                    let drift = self.config.group.drift_permille;
                    let stretch = |left: Duration| left + left * drift / 1000;
                    node.tables
                        .insert(slot, hold.map(|(token, left)| (token, now + stretch(left))));
                    core.propose(now, accept);
                }
            }
        }
        self.drain(to);
    }

    /// Carries out node `i`'s outputs, then brings its ownership in line.
    fn drain(&mut self, i: usize) {
        loop {
            let Some(output) = self.nodes[i].core.as_mut().and_then(GroupCore::poll_output) else {
                break;
            };
            let me = self.nodes[i].identity.replica;
            match output {
                Output::Send(msg) => {
                    let group = self.nodes[i].core.as_ref().map_or(0, GroupCore::group);
                    if let Some(to) = self.index_of(ReplicaId(msg.to)) {
                        self.send(i, to, Payload::Raft { group, msg });
                    }
                }
                Output::Persist(p) => {
                    let node = &mut self.nodes[i];
                    node.disk.apply(&p);
                    node.group = node.core.as_ref().map_or(node.group, GroupCore::group);
                }
                Output::Applied(a) => self.history.applied.push((me, a.index, a.command)),
                Output::Leader { term, leader } => {
                    if leader == Some(me) {
                        self.history.leaders.push((term, me, self.now));
                    }
                }
                Output::Failed { command, .. } => {
                    if let Command::Extend { slot, .. } = command {
                        self.nodes[i].own.extension_failed(slot);
                    }
                }
                Output::Disagrees(_) => {}
            }
        }
        self.settle_ownership(i);
    }

    fn settle_ownership(&mut self, i: usize) {
        let now = self.local(i);
        let node = &mut self.nodes[i];
        let Some(core) = node.core.as_mut() else {
            return;
        };
        let changes = node.own.update(core.state(), core.epoch());

        let extensions = node.own.extensions();
        let mut handovers = Vec::new();
        for change in changes {
            match change {
                Change::ServeFresh { slot } => {
                    node.tables.insert(slot, None);
                }
                Change::Resume { .. } => {}
                Change::HandOver {
                    slot,
                    to,
                    generation,
                } => handovers.push((slot, to, generation)),
                Change::Handed { slot } | Change::Drop { slot } => {
                    node.tables.remove(&slot);
                }
            }
        }
        let mut proposed = false;
        for command in extensions {
            core.propose(now, command);
            proposed = true;
        }
        for (slot, to, generation) in handovers {
            self.send_handover(i, slot, to, generation);
        }
        if proposed {
            self.drain(i);
        }
    }

    fn send_handover(&mut self, i: usize, slot: u16, to: ReplicaId, generation: u64) {
        let Some(to) = self.index_of(to) else {
            return;
        };
        let now = self.local(i);
        let hold = self.nodes[i]
            .tables
            .get(&slot)
            .copied()
            .flatten()
            .map(|(token, end)| (token, end.saturating_duration_since(now)));
        self.send(
            i,
            to,
            Payload::Handover {
                slot,
                generation,
                hold,
            },
        );
    }

    fn resend_handovers(&mut self, i: usize) {
        if self.nodes[i].status != Status::Running {
            return;
        }
        let pending: Vec<(u16, ReplicaId, u64)> = (0..crate::consensus::SLOTS)
            .filter_map(|slot| match self.nodes[i].own.view(slot) {
                SlotView::HandingOver { generation, to } => Some((slot, to, generation)),
                _ => None,
            })
            .collect();
        for (slot, to, generation) in pending {
            self.send_handover(i, slot, to, generation);
        }
    }

    fn index_of(&self, replica: ReplicaId) -> Option<usize> {
        // The latest node with that replica id (a wiped node's id is never reused).
        self.nodes
            .iter()
            .rposition(|n| n.identity.replica == replica)
    }

    fn send(&mut self, from: usize, to: usize, payload: Payload) {
        if self.cut.contains(&(from, to)) || self.rng.random_bool(self.loss) {
            return;
        }
        let copies = if self.rng.random_bool(self.dup) { 2 } else { 1 };
        let mut payload = Some(payload);
        for copy in 0..copies {
            let delay = self.config.delay + self.random_duration(self.config.jitter);
            let p = if copy + 1 == copies {
                payload.take().expect("one payload per copy")
            } else {
                payload.clone().expect("kept for the last copy")
            };
            let id = self.next_flight;
            self.next_flight += 1;
            self.flights.insert(
                id,
                Flight {
                    from,
                    to,
                    payload: p,
                },
            );
            self.arrivals.push(Reverse((self.now + delay, id)));
        }
    }

    /// Grants the lock of a random free slot this node may serve, for a random lease cut short
    /// at its entitlement, and records the hold.
    fn try_grant(&mut self, i: usize) {
        let every = self.config.grant_every;
        self.nodes[i].next_grant = self.now + every / 2 + self.random_duration(every);
        let now = self.local(i);
        let lease = self.config.group.liveness;
        let min = lease / 10;
        let wanted = min + self.random_duration(lease - min);
        let pick: u64 = self.rng.random();
        let node = &mut self.nodes[i];
        let Some(core) = node.core.as_ref() else {
            return;
        };
        let entitlement = core.entitlement(now);
        let free: Vec<u16> = node
            .own
            .serving()
            .filter(|s| node.own.may_serve(*s, now, entitlement))
            .filter(|s| {
                node.tables
                    .get(s)
                    .copied()
                    .flatten()
                    .is_none_or(|(_, end)| end <= now)
            })
            .collect();
        if free.is_empty() {
            return;
        }
        let slot = free[(pick % free.len() as u64) as usize];
        let (Some(token), Some(e)) = (node.own.issue(slot, now, entitlement), entitlement) else {
            return;
        };
        let lease = Ownership::lease(now, e, wanted);
        node.tables.insert(slot, Some((token, now + lease)));
        let end = node.clock.world(now + lease);
        self.history.holds.push(Hold {
            name: format!("slot-{slot}"),
            token,
            holder: node.name.clone(),
            start_us: self.now.as_micros() as u64,
            end_us: end.as_micros() as u64,
        });
    }
}

#[cfg(test)]
mod tests;
