//! A seeded world of consensus group cores, each with a service on top (the primitive under
//! test), under a simulated network and per-node clocks.
//!
//! Every node runs the real [`GroupCore`]; the world plays its shell (it persists, routes
//! messages, publishes the group's status) and feeds a [`Service`] on each node as that
//! service's shell would: the status after every change, messages from the services of other
//! nodes, timers. [`SlotLocks`] is the runtime's own service (the real [`Ownership`] with one
//! lock per slot); the lock service of `colony-actors` runs its real lock cores on it too.
//! Faults: kills and restarts (what was persisted survives), wiped stores, pauses, partitions,
//! loss, duplication and reordering, graceful leaves, and clocks that start apart and drift.
//! The group's side of what happened is recorded in a [`GroupHistory`], judged by [`check`];
//! the service records its own.
//!
//! [`Ownership`]: crate::ownership::Ownership

mod chaos;
pub mod check;
mod clock;
mod empty;
mod service;
mod slots;

pub use chaos::{FAULTS, Fault, Played, Script};
pub use clock::Clock;
pub use empty::{EmptySlots, EmptyTable};
pub use service::{Ctx, Service};
pub use slots::SlotLocks;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::{Message, Snapshot};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::consensus::{
    ClusterSettings, Command, GroupConfig, GroupCore, GroupStatus, Identity, Log, MemberInfo,
    Outcome, Output, PeerState, ReplicaId,
};
use service::Effect;

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
    /// Mean time between two grant attempts of one node ([`SlotLocks`]).
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

impl GroupWorldConfig {
    /// As [`GroupWorldConfig::new`], with clocks up to a fifth of a second, a second or ten
    /// seconds apart, by the seed.
    pub fn spread(seed: u64, nodes: usize) -> Self {
        let mut config = GroupWorldConfig::new(seed, nodes);
        config.max_offset = [200, 1_000, 10_000][(seed % 3) as usize] * Duration::from_millis(1);
        config
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

/// What the world recorded of the group.
#[derive(Debug, Clone, Default)]
pub struct GroupHistory {
    /// Each node that became leader, with its term and when.
    pub leaders: Vec<(u64, ReplicaId, Duration)>,
    /// Each command applied, by node and place (index, position in the entry's batch).
    pub applied: Vec<(ReplicaId, (u64, u32), Command)>,
    /// Each place's command and outcome, as the first node to apply it had them (every node
    /// applies the same: [`check::logs_agree`]).
    pub outcomes: BTreeMap<(u64, u32), (Command, Outcome)>,
}

enum Payload<M> {
    Raft {
        group: u64,
        msg: Message,
    },
    Service(M),
    /// A snapshot the node's core asked for, made (as on a blocking thread) by the process of
    /// that incarnation.
    Captured {
        incarnation: u64,
        snapshot: Snapshot,
    },
}

impl<M: Clone> Clone for Payload<M> {
    fn clone(&self) -> Self {
        match self {
            Payload::Raft { group, msg } => Payload::Raft {
                group: *group,
                msg: msg.clone(),
            },
            Payload::Service(m) => Payload::Service(m.clone()),
            Payload::Captured {
                incarnation,
                snapshot,
            } => Payload::Captured {
                incarnation: *incarnation,
                snapshot: snapshot.clone(),
            },
        }
    }
}

struct Flight<M> {
    from: usize,
    to: usize,
    payload: Payload<M>,
}

struct SimNode<S: Service> {
    name: String,
    identity: Identity,
    clock: Clock,
    core: Option<GroupCore>,
    disk: Log,
    group: u64,
    service: Option<S>,
    /// The status last published to the service.
    published: Option<Arc<GroupStatus>>,
    incarnation: u64,
    status: Status,
    held: Vec<Flight<S::Msg>>,
}

/// The world. See the module doc.
pub struct GroupWorld<S: Service = SlotLocks> {
    config: GroupWorldConfig,
    rng: StdRng,
    base: Instant,
    now: Duration,
    nodes: Vec<SimNode<S>>,
    flights: BTreeMap<u64, Flight<S::Msg>>,
    arrivals: BinaryHeap<Reverse<(Duration, u64)>>,
    next_flight: u64,
    cut: BTreeSet<(usize, usize)>,
    /// Extra delay on directed links (a congested or retransmitting connection).
    slow: BTreeMap<(usize, usize), Duration>,
    loss: f64,
    dup: f64,
    history: GroupHistory,
    record: S::Record,
}

impl<S: Service> Drop for GroupWorld<S> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("group world seed: {}", self.config.seed);
        }
    }
}

impl<S: Service> GroupWorld<S> {
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
            slow: BTreeMap::new(),
            loss: 0.0,
            dup: 0.0,
            history: GroupHistory::default(),
            record: S::Record::default(),
        };
        for i in 0..config.nodes {
            world.add_node(i == 0, group);
        }
        world
    }

    /// Starts the world and runs it until [`GroupWorld::settled`].
    ///
    /// # Panics
    /// If it does not settle within 30 s, naming the seed.
    pub fn start_settled(config: GroupWorldConfig) -> Self {
        let (seed, nodes) = (config.seed, config.nodes);
        let mut w = Self::start(config);
        assert!(
            w.run_until(Self::settled, Duration::from_secs(30)),
            "seed {seed}: {nodes} nodes did not settle"
        );
        w
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
                incarnation: 1,
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
            service: None,
            published: None,
            incarnation: 0,
            status: Status::Running,
            held: Vec::new(),
        });
        self.start_service(i);
        i
    }

    fn start_service(&mut self, i: usize) {
        let mut ctx = self.ctx(i);
        let service = S::start(&mut ctx);
        let effects = std::mem::take(&mut ctx.effects);
        self.nodes[i].service = Some(service);
        self.carry_out(i, effects);
        self.drain(i);
    }

    fn random_duration(&mut self, max: Duration) -> Duration {
        Duration::from_nanos(self.rng.random_range(0..=max.as_nanos() as u64))
    }

    // ---- getters ----

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// How the world was built.
    pub fn config(&self) -> &GroupWorldConfig {
        &self.config
    }

    /// World time since the start.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// What happened to the group so far.
    pub fn history(&self) -> &GroupHistory {
        &self.history
    }

    /// What the services recorded so far.
    pub fn record(&self) -> &S::Record {
        &self.record
    }

    /// What the services recorded, to change how a script goes on (a flag the services read).
    pub fn record_mut(&mut self) -> &mut S::Record {
        &mut self.record
    }

    /// Node `i`'s core, unless it is killed.
    pub fn core(&self, i: usize) -> Option<&GroupCore> {
        self.nodes[i].core.as_ref()
    }

    /// Node `i`'s service, unless it is killed.
    pub fn service(&self, i: usize) -> Option<&S> {
        self.nodes[i].service.as_ref()
    }

    /// Where node `i`'s process stands.
    pub fn status(&self, i: usize) -> Status {
        self.nodes[i].status
    }

    /// Node `i`'s name (`n1`, ...).
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Node `i`'s clock reading now.
    pub fn clock(&self, i: usize) -> Instant {
        self.local(i)
    }

    /// Node `i`'s wall clock now: its reading past the world's common origin, as
    /// [`Ctx::wall`] gives it to the node's service.
    pub fn wall(&self, i: usize) -> Duration {
        self.nodes[i].clock.since_origin(self.local(i))
    }

    /// Node `i`'s member id.
    pub fn replica(&self, i: usize) -> ReplicaId {
        self.nodes[i].identity.replica
    }

    /// The latest node with member id `replica` (a wiped node's id is never reused).
    pub fn index_of(&self, replica: ReplicaId) -> Option<usize> {
        self.nodes
            .iter()
            .rposition(|n| n.identity.replica == replica)
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
        let running: Vec<&SimNode<S>> = self
            .nodes
            .iter()
            .filter(|n| n.status == Status::Running && n.core.is_some())
            .collect();
        let all_registered = running
            .iter()
            .all(|n| n.core.as_ref().and_then(GroupCore::epoch).is_some());
        let served: BTreeSet<u16> = running
            .iter()
            .filter_map(|n| n.service.as_ref())
            .flat_map(|s| s.ownership().serving())
            .collect();
        all_registered && served.len() == usize::from(crate::consensus::SLOTS)
    }

    // ---- faults ----

    /// SIGKILL: the node stops; what it persisted stays.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.core = None;
        node.service = None;
        node.published = None;
        node.status = Status::Killed;
        node.held.clear();
    }

    /// Starts a killed node again from its store.
    pub fn restart(&mut self, i: usize) {
        let seed = self.rng.random();
        let node = &mut self.nodes[i];
        let now = node.clock.local(self.now);
        node.identity.info.incarnation += 1;
        node.core = Some(GroupCore::restore(
            node.identity.clone(),
            self.config.group,
            node.group,
            node.disk.clone(),
            now,
            seed,
        ));
        node.incarnation += 1;
        node.status = Status::Running;
        self.start_service(i);
    }

    /// Kills node `i` and starts a new member in its place with an empty store.
    pub fn replace(&mut self, i: usize) -> usize {
        self.kill(i);
        self.join()
    }

    /// Starts one more node, a new member with an empty store.
    pub fn join(&mut self) -> usize {
        self.add_node(false, 0)
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
        self.slow.clear();
    }

    /// Delays every message from node `from` to node `to` by `extra` more (nothing is lost:
    /// a connection that retransmits); [`Self::heal`] ends it.
    pub fn slow(&mut self, from: usize, to: usize, extra: Duration) {
        self.slow.insert((from, to), extra);
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
    pub fn run_until(&mut self, done: impl Fn(&Self) -> bool, limit: Duration) -> bool {
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
            let node = &self.nodes[i];
            let due = |t: Option<Instant>| t.is_some_and(|t| node.clock.world(t) <= self.now);
            let core_due = due(node.core.as_ref().and_then(GroupCore::poll_timeout));
            let service_due = due(node.service.as_ref().and_then(S::poll_timeout));
            if core_due {
                self.tick(i);
            }
            if service_due {
                self.call(i, |s, ctx| s.timeout(ctx));
                self.drain(i);
            }
        }
        true
    }

    fn next_event(&self) -> Option<Duration> {
        let mut next = self.arrivals.peek().map(|Reverse((t, _))| *t);
        let mut consider = |t: Duration| next = Some(next.map_or(t, |n: Duration| n.min(t)));
        for node in &self.nodes {
            match node.status {
                Status::Running => {
                    let core = node.core.as_ref().and_then(GroupCore::poll_timeout);
                    let service = node.service.as_ref().and_then(S::poll_timeout);
                    for t in core.into_iter().chain(service) {
                        consider(node.clock.world(t).max(self.now));
                    }
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

    fn deliver(&mut self, flight: Flight<S::Msg>) {
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
            Payload::Service(msg) => self.call(to, |s, ctx| s.message(ctx, from, msg)),
            Payload::Captured {
                incarnation,
                snapshot,
            } => {
                let node = &mut self.nodes[to];
                if let Some(core) = node
                    .core
                    .as_mut()
                    .filter(|_| node.incarnation == incarnation)
                {
                    core.captured(snapshot);
                }
            }
        }
        self.drain(to);
    }

    /// A service's window for one call on node `i`.
    fn ctx(&mut self, i: usize) -> Ctx<'_, S> {
        let now = self.local(i);
        let node = &self.nodes[i];
        Ctx {
            node: i,
            name: &node.name,
            replica: node.identity.replica,
            incarnation: node.incarnation,
            now,
            world: self.now,
            rng: &mut self.rng,
            record: &mut self.record,
            config: &self.config,
            clock: node.clock,
            effects: Vec::new(),
        }
    }

    /// Calls node `i`'s service (if it runs) and carries out what it asked for.
    fn call(&mut self, i: usize, f: impl FnOnce(&mut S, &mut Ctx<'_, S>)) {
        let Some(mut service) = self.nodes[i].service.take() else {
            return;
        };
        let mut ctx = self.ctx(i);
        f(&mut service, &mut ctx);
        let effects = std::mem::take(&mut ctx.effects);
        self.nodes[i].service = Some(service);
        self.carry_out(i, effects);
    }

    fn carry_out(&mut self, i: usize, effects: Vec<Effect<S::Msg>>) {
        let now = self.local(i);
        // What one step proposes goes in one entry, as the node's group driver batches what
        // one burst of its inbox proposes.
        let mut proposed = Vec::new();
        for effect in effects {
            match effect {
                Effect::Send(to, msg) => {
                    if let Some(to) = self.index_of(to) {
                        self.send(i, to, Payload::Service(msg));
                    }
                }
                Effect::Propose(command) => proposed.push(command),
            }
        }
        if !proposed.is_empty()
            && let Some(core) = self.nodes[i].core.as_mut()
        {
            core.propose_many(now, proposed);
        }
    }

    /// Carries out node `i`'s outputs and publishes its status to its service, until neither
    /// has anything more.
    fn drain(&mut self, i: usize) {
        loop {
            let mut busy = false;
            while let Some(output) = self.nodes[i].core.as_mut().and_then(GroupCore::poll_output) {
                busy = true;
                self.carry_out_group(i, output);
            }
            let now = self.local(i);
            let node = &mut self.nodes[i];
            let Some(core) = node.core.as_ref() else {
                return;
            };
            if let Some(status) = GroupStatus::after(node.published.as_deref(), core, now, &None) {
                let status = Arc::new(status);
                node.published = Some(status.clone());
                self.call(i, |s, ctx| s.status(ctx, &status));
                busy = true;
            }
            if !busy {
                return;
            }
        }
    }

    fn carry_out_group(&mut self, i: usize, output: Output) {
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
            Output::Applied(a) => {
                self.history
                    .outcomes
                    .entry((a.index, a.position))
                    .or_insert_with(|| (a.command.clone(), a.outcome.clone()));
                if a.proposal.is_some() {
                    self.call(i, |s, ctx| s.proposal_applied(ctx, &a.command, &a.outcome));
                }
                self.history
                    .applied
                    .push((me, (a.index, a.position), a.command));
            }
            Output::Leader { term, leader } => {
                if leader == Some(me) {
                    self.history.leaders.push((term, me, self.now));
                }
            }
            Output::Failed { command, .. } => {
                self.call(i, |s, ctx| s.proposal_failed(ctx, &command))
            }
            Output::Disagrees(_) => {}
            // Made meanwhile, as the node's driver makes it on another thread: raft goes on.
            Output::Capture(capture) => {
                let payload = Payload::Captured {
                    incarnation: self.nodes[i].incarnation,
                    snapshot: capture.encode(),
                };
                let delay = self.random_duration(CAPTURE_TIME);
                self.schedule(i, i, payload, delay);
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, payload: Payload<S::Msg>) {
        if self.cut.contains(&(from, to)) || self.rng.random_bool(self.loss) {
            return;
        }
        // Drawn for every message, so that a service's choice does not shift the draws.
        let dup = self.rng.random_bool(self.dup);
        let once = S::AT_MOST_ONCE && matches!(payload, Payload::Service(_));
        let copies = if dup && !once { 2 } else { 1 };
        let mut payload = Some(payload);
        for copy in 0..copies {
            let slow = self.slow.get(&(from, to)).copied().unwrap_or_default();
            let delay = self.config.delay + self.random_duration(self.config.jitter) + slow;
            let p = if copy + 1 == copies {
                payload.take().expect("one payload per copy")
            } else {
                payload.clone().expect("kept for the last copy")
            };
            self.schedule(from, to, p, delay);
        }
    }

    fn schedule(&mut self, from: usize, to: usize, payload: Payload<S::Msg>, delay: Duration) {
        let id = self.next_flight;
        self.next_flight += 1;
        self.flights.insert(id, Flight { from, to, payload });
        self.arrivals.push(Reverse((self.now + delay, id)));
    }
}

/// Up to how long a node takes to encode and write a snapshot.
const CAPTURE_TIME: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests;
