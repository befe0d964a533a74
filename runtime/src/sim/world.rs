//! The world: N membership cores keyed by address, a simulated clock, and datagrams in flight.
//!
//! [`World`] drives every core exactly as the UDP shell does (one input, then drain every output,
//! then sleep until `poll_timeout`), except that sleeping is a jump of the simulated clock to the
//! earliest thing due: a datagram arriving, a core's deadline, or a paused node waking up. Ties
//! are broken in a fixed order, and every random choice (ids, core seeds, jitter, loss) comes from
//! one generator seeded with [`WorldConfig::seed`], so a seed replays a run exactly. If a test
//! panics while a world is alive, the world prints its seed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

use super::history::{Happening, History};
use super::net::{Net, NetChange};
use crate::NodeId;
use crate::config::MembershipTimings;
use crate::membership::{GossipKey, Member, MemberState, MembershipCore, NodeIdentity, Output};

/// The address the world gives node `i`: `10.0.0.(i+1):7000`.
pub fn node_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, (i + 1) as u8], 7000))
}

/// How to build a [`World`].
#[derive(Debug, Clone)]
pub struct WorldConfig {
    /// The one seed of the run: print it to replay a failure.
    pub seed: u64,
    /// How many nodes start with the cluster cookie (and the cluster size they are told).
    pub nodes: usize,
    /// Failure-detection timings of every node.
    pub timings: MembershipTimings,
    /// The cluster cookie.
    pub cookie: String,
    /// How many of the first nodes every node lists as seeds.
    pub seed_nodes: usize,
    /// How long a datagram travels on a healthy link, before jitter.
    pub delay: Duration,
    /// Up to how much longer a datagram may travel (drawn per datagram, so they can reorder).
    pub jitter: Duration,
}

impl WorldConfig {
    /// `nodes` nodes with default timings, two seed nodes, and 1 ms links with 1 ms jitter.
    pub fn new(seed: u64, nodes: usize) -> Self {
        WorldConfig {
            seed,
            nodes,
            timings: MembershipTimings::default(),
            cookie: "colony-sim".into(),
            seed_nodes: 2,
            delay: Duration::from_millis(1),
            jitter: Duration::from_millis(1),
        }
    }
}

/// Where a node's process stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Polled and fed datagrams.
    Running,
    /// Not polled until `until`; datagrams to it wait and arrive when it resumes.
    Paused {
        /// When it resumes (time since the start of the run).
        until: Duration,
    },
    /// Gone: datagrams to it are lost.
    Killed,
    /// Left the cluster on purpose and stopped.
    Left,
}

/// Counters of the simulated network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorldStats {
    /// Datagrams the cores sent.
    pub sent: u64,
    /// Datagrams handed to a core.
    pub delivered: u64,
    /// Datagrams lost to cuts, loss, dead receivers or unknown addresses.
    pub lost: u64,
}

/// [`World::run_until`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "condition not met after {waited:?} of simulated time (now {now:?}); replay with seed {seed}"
)]
pub struct Timeout {
    /// The world's seed.
    pub seed: u64,
    /// How long it waited.
    pub waited: Duration,
    /// The simulated time it gave up at.
    pub now: Duration,
}

struct Slot {
    addr: SocketAddr,
    name: String,
    cookie: String,
    seeds: Vec<SocketAddr>,
    core: MembershipCore,
    status: Status,
    /// The highest incarnation this address used: a restart must exceed it.
    incarnation: u64,
    /// Datagrams that reached it while it was paused.
    held: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Its fault filter is not empty.
    blocked: bool,
    published: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Duration,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    packet: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wake {
    // Declared in tie-break order: at one instant, wake-ups go first, then datagrams, then timers.
    Resume(usize),
    Deliver,
    Timer(usize),
}

/// N membership cores, a clock and a network, all simulated. See the module doc.
pub struct World {
    config: WorldConfig,
    rng: StdRng,
    /// The origin of simulated time. Read once from the real clock only because `Instant` has no
    /// other constructor; nothing depends on its value, since cores only compare instants.
    epoch: Instant,
    now: Duration,
    slots: Vec<Slot>,
    index: BTreeMap<SocketAddr, usize>,
    net: Net,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    history: History,
    stats: WorldStats,
}

impl World {
    /// Starts `config.nodes` nodes at time zero, each joining through the seed nodes.
    ///
    /// # Panics
    /// If `config.nodes` is zero or above 250.
    pub fn new(config: WorldConfig) -> Self {
        assert!((1..=250).contains(&config.nodes), "1 to 250 nodes");
        let mut world = World {
            rng: StdRng::seed_from_u64(config.seed),
            net: Net::new(config.delay, config.jitter),
            config,
            epoch: Instant::now(),
            now: Duration::ZERO,
            slots: Vec::new(),
            index: BTreeMap::new(),
            in_flight: BinaryHeap::new(),
            seq: 0,
            history: History::new(),
            stats: WorldStats::default(),
        };
        let cookie = world.config.cookie.clone();
        for _ in 0..world.config.nodes {
            world.add_node(&cookie);
        }
        world
    }

    /// A world of `nodes` nodes with the defaults of [`WorldConfig::new`].
    pub fn start(seed: u64, nodes: usize) -> Self {
        World::new(WorldConfig::new(seed, nodes))
    }

    // ---- getters ----

    /// The seed that replays this run.
    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &WorldConfig {
        &self.config
    }

    /// Simulated time since the start of the run.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// How many nodes (addresses) the world has, whatever their status.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the world has no nodes (never true once built).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The address of node `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.slots[i].addr
    }

    /// The core at node `i` (the last one, if its process stopped).
    pub fn core(&self, i: usize) -> &MembershipCore {
        &self.slots[i].core
    }

    /// The current id of node `i`.
    pub fn id(&self, i: usize) -> NodeId {
        self.slots[i].core.local().id
    }

    /// Where node `i`'s process stands.
    pub fn status(&self, i: usize) -> Status {
        self.slots[i].status
    }

    /// Nodes whose process runs (paused ones included) and that hold the cluster cookie.
    pub fn live(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| {
                matches!(self.status(i), Status::Running | Status::Paused { .. })
                    && self.slots[i].cookie == self.config.cookie
            })
            .collect()
    }

    /// How node `observer` sees node `subject`'s current identity, if it lists it.
    pub fn state_seen(&self, observer: usize, subject: usize) -> Option<MemberState> {
        let id = self.id(subject);
        self.core(observer)
            .members()
            .into_iter()
            .find(|m| m.id == id)
            .map(|m| m.state)
    }

    /// Whether every live node is up and sees exactly the live nodes (current ids) as up.
    pub fn converged(&self) -> bool {
        let live = self.live();
        let mut want: Vec<NodeId> = live.iter().map(|&i| self.id(i)).collect();
        want.sort();
        live.iter().all(|&i| {
            let mut up = self.core(i).up_ids();
            up.sort();
            up == want
        })
    }

    /// Everything that happened so far.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Network counters.
    pub fn stats(&self) -> WorldStats {
        self.stats
    }

    /// The member list of every node, for failure messages.
    pub fn describe(&self) -> String {
        let mut out = format!("seed {} at {:?}\n", self.seed(), self.now);
        for (i, s) in self.slots.iter().enumerate() {
            let members: Vec<String> = s
                .core
                .members()
                .iter()
                .map(|m: &Member| format!("{}#{}:{}", m.name, m.incarnation, m.state))
                .collect();
            out += &format!("  {i} {:?}: {}\n", s.status, members.join(" "));
        }
        out
    }

    // ---- scenario steps ----

    /// Adds and starts a node with `cookie` at the next address; returns its index.
    pub fn add_node(&mut self, cookie: &str) -> usize {
        let i = self.slots.len();
        let addr = node_addr(i);
        let seeds = (0..self.config.seed_nodes.min(self.config.nodes))
            .map(node_addr)
            .collect();
        let name = format!("n{i}");
        let core = self.new_core(addr, &name, cookie, 1);
        self.slots.push(Slot {
            addr,
            name,
            cookie: cookie.into(),
            seeds,
            core,
            status: Status::Running,
            incarnation: 1,
            held: VecDeque::new(),
            blocked: false,
            published: u64::MAX,
        });
        self.index.insert(addr, i);
        self.net.add_node(addr);
        self.boot(i);
        i
    }

    /// Kills node `i`'s process: it is no longer polled and datagrams to it are lost.
    pub fn kill(&mut self, i: usize) {
        if matches!(self.status(i), Status::Running | Status::Paused { .. }) {
            let slot = &mut self.slots[i];
            slot.status = Status::Killed;
            slot.held.clear();
            let node = slot.addr;
            self.history.push(self.now, Happening::Killed { node });
        }
    }

    /// Starts a new process at node `i`'s address: a new core, a new id, a higher incarnation.
    /// A process still running there is killed first.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let slot = &self.slots[i];
        let (addr, name, cookie, incarnation) = (
            slot.addr,
            slot.name.clone(),
            slot.cookie.clone(),
            slot.incarnation + 1,
        );
        let core = self.new_core(addr, &name, &cookie, incarnation);
        let slot = &mut self.slots[i];
        slot.core = core;
        slot.incarnation = incarnation;
        slot.status = Status::Running;
        slot.blocked = false;
        slot.published = u64::MAX;
        self.boot(i);
    }

    /// Stops polling node `i` for `duration`, as SIGSTOP does; datagrams to it wait.
    pub fn pause(&mut self, i: usize, duration: Duration) {
        if self.status(i) == Status::Running {
            self.slots[i].status = Status::Paused {
                until: self.now + duration,
            };
            let node = self.addr(i);
            self.history.push(self.now, Happening::Paused { node });
        }
    }

    /// Node `i` leaves the cluster on purpose, then its process stops.
    pub fn leave(&mut self, i: usize) {
        if self.status(i) == Status::Running {
            self.input(i, |core, now| core.leave(now));
            self.slots[i].status = Status::Left;
            let node = self.addr(i);
            self.history.push(self.now, Happening::Left { node });
        }
    }

    /// Hands node `i` raw bytes as if `from` sent them (for junk and forgeries).
    pub fn inject(&mut self, i: usize, from: SocketAddr, bytes: &[u8]) {
        if self.status(i) == Status::Running {
            self.input(i, |core, now| core.handle_packet(now, from, bytes));
        }
    }

    /// Cuts both directions between nodes `a` and `b`.
    pub fn cut(&mut self, a: usize, b: usize) {
        let (a, b) = (self.addr(a), self.addr(b));
        self.net.cut(a, b);
        self.net_changed(NetChange::Cut(a, b));
    }

    /// Cuts node `a` from every other node.
    pub fn isolate(&mut self, a: usize) {
        let a = self.addr(a);
        self.net.isolate(a);
        self.net_changed(NetChange::Isolated(a));
    }

    /// Splits the network into these groups of nodes; a node in no group is isolated.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        let groups: Vec<Vec<SocketAddr>> = groups
            .iter()
            .map(|g| g.iter().map(|&i| self.addr(i)).collect())
            .collect();
        self.net.partition(&groups);
        self.net_changed(NetChange::Partitioned(groups));
    }

    /// Loses datagrams between nodes `a` and `b` with chance `loss` (0.0 to 1.0).
    pub fn drop(&mut self, a: usize, b: usize, loss: f64) {
        let (a, b) = (self.addr(a), self.addr(b));
        self.net.drop(a, b, loss);
        self.net_changed(NetChange::Lossy(a, b, loss));
    }

    /// Makes datagrams between nodes `a` and `b` take `delay` (plus jitter).
    pub fn delay(&mut self, a: usize, b: usize, delay: Duration) {
        let (a, b) = (self.addr(a), self.addr(b));
        self.net.delay(a, b, delay);
        self.net_changed(NetChange::Delayed(a, b, delay));
    }

    /// Sets node `i`'s own fault filter (`MembershipCore::set_blocked`) to these peers.
    pub fn block(&mut self, i: usize, peers: &[usize]) {
        let peers: Vec<SocketAddr> = peers.iter().map(|&p| self.addr(p)).collect();
        let slot = &mut self.slots[i];
        slot.core.set_blocked(peers.iter().copied().collect());
        slot.blocked = !peers.is_empty();
        let node = self.addr(i);
        self.net_changed(NetChange::Blocked(node, peers));
    }

    /// Removes every network fault and clears every fault filter.
    pub fn heal(&mut self) {
        self.net.heal();
        for slot in &mut self.slots {
            slot.core.set_blocked(HashSet::new());
            slot.blocked = false;
        }
        self.net_changed(NetChange::Healed);
    }

    /// Runs the world for `duration` of simulated time.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while let Some((at, wake)) = self.next_wake() {
            if at > end {
                break;
            }
            self.now = at;
            self.process(wake);
        }
        self.now = end;
        self.history.extend_to(end);
    }

    /// Runs until `done` holds (checked before each step) or `limit` passes; returns the
    /// simulated time it took.
    ///
    /// # Errors
    /// [`Timeout`] if `limit` passed first; the world then stands at the limit.
    pub fn run_until(
        &mut self,
        mut done: impl FnMut(&World) -> bool,
        limit: Duration,
    ) -> Result<Duration, Timeout> {
        let start = self.now;
        let end = start + limit;
        loop {
            if done(self) {
                self.history.extend_to(self.now);
                return Ok(self.now - start);
            }
            match self.next_wake() {
                Some((at, wake)) if at <= end => {
                    self.now = at;
                    self.process(wake);
                }
                _ => {
                    self.now = end;
                    self.history.extend_to(end);
                    return Err(Timeout {
                        seed: self.seed(),
                        waited: limit,
                        now: end,
                    });
                }
            }
        }
    }

    // ---- internals ----

    fn new_core(
        &mut self,
        addr: SocketAddr,
        name: &str,
        cookie: &str,
        incarnation: u64,
    ) -> MembershipCore {
        let identity = NodeIdentity {
            id: NodeId::from_u128(self.rng.random()),
            name: name.into(),
            addr,
            incarnation,
            replica: 0,
        };
        MembershipCore::new(
            identity,
            self.config.timings,
            self.config.nodes,
            GossipKey::from_cookie(cookie),
            self.rng.next_u64(),
        )
    }

    /// Records the start of node `i`'s process and joins.
    fn boot(&mut self, i: usize) {
        let slot = &self.slots[i];
        let started = Happening::Started {
            node: slot.addr,
            identity: NodeIdentity {
                id: slot.core.local().id,
                name: slot.name.clone(),
                addr: slot.addr,
                incarnation: slot.incarnation,
                replica: 0,
            },
            cookie: slot.cookie.clone(),
        };
        self.history.push(self.now, started);
        let seeds = self.slots[i].seeds.clone();
        self.input(i, |core, now| core.join(now, &seeds));
    }

    fn net_changed(&mut self, change: NetChange) {
        let healthy = self.net.is_healthy() && self.slots.iter().all(|s| !s.blocked);
        self.history
            .push(self.now, Happening::Net { change, healthy });
    }

    fn next_wake(&self) -> Option<(Duration, Wake)> {
        let mut best: Option<(Duration, Wake)> = None;
        let mut consider = |at: Duration, wake: Wake| {
            if best.is_none_or(|b| (at, wake) < b) {
                best = Some((at, wake));
            }
        };
        if let Some(Reverse(p)) = self.in_flight.peek() {
            consider(p.at, Wake::Deliver);
        }
        for (i, slot) in self.slots.iter().enumerate() {
            match slot.status {
                Status::Running => {
                    if let Some(at) = slot.core.poll_timeout() {
                        let at = at.saturating_duration_since(self.epoch).max(self.now);
                        consider(at, Wake::Timer(i));
                    }
                }
                Status::Paused { until } => consider(until, Wake::Resume(i)),
                Status::Killed | Status::Left => {}
            }
        }
        best
    }

    fn process(&mut self, wake: Wake) {
        match wake {
            Wake::Resume(i) => {
                self.slots[i].status = Status::Running;
                let node = self.addr(i);
                self.history.push(self.now, Happening::Resumed { node });
                // Like the shell after SIGCONT: queued datagrams first, then overdue timers.
                while let Some((from, packet)) = self.slots[i].held.pop_front() {
                    self.stats.delivered += 1;
                    self.input(i, |core, now| core.handle_packet(now, from, &packet));
                }
            }
            Wake::Deliver => {
                let Some(Reverse(p)) = self.in_flight.pop() else {
                    return;
                };
                let i = self.index[&p.to];
                match self.status(i) {
                    Status::Running => {
                        self.stats.delivered += 1;
                        self.input(i, |core, now| core.handle_packet(now, p.from, &p.packet));
                    }
                    Status::Paused { .. } => self.slots[i].held.push_back((p.from, p.packet)),
                    Status::Killed | Status::Left => self.stats.lost += 1,
                }
            }
            Wake::Timer(i) => self.input(i, |core, now| core.handle_timeout(now)),
        }
    }

    /// Feeds node `i` one input, then carries out everything it asked for.
    fn input(&mut self, i: usize, feed: impl FnOnce(&mut MembershipCore, Instant)) {
        let now = self.epoch + self.now;
        feed(&mut self.slots[i].core, now);
        let node = self.addr(i);
        while let Some(output) = self.slots[i].core.poll_output() {
            let what = match output {
                Output::Send { to, packet } => {
                    self.transmit(node, to, packet);
                    continue;
                }
                Output::Event(event) => Happening::Event { node, event },
                Output::Renewed(identity) => {
                    let slot = &mut self.slots[i];
                    slot.incarnation = slot.incarnation.max(identity.incarnation);
                    Happening::Renewed { node, identity }
                }
                Output::Rejected { from, .. } => Happening::Rejected { node, from },
                Output::RefusedBy(peer) => Happening::RefusedBy { node, peer },
            };
            self.history.push(self.now, what);
        }
        let slot = &mut self.slots[i];
        if slot.core.version() != slot.published {
            slot.published = slot.core.version();
            let members = slot.core.members();
            self.history
                .push(self.now, Happening::View { node, members });
        }
    }

    fn transmit(&mut self, from: SocketAddr, to: SocketAddr, packet: Vec<u8>) {
        self.stats.sent += 1;
        let route = if self.index.contains_key(&to) {
            self.net.route(from, to, &mut self.rng)
        } else {
            None
        };
        match route {
            Some(delay) => {
                self.seq += 1;
                self.in_flight.push(Reverse(InFlight {
                    at: self.now + delay,
                    seq: self.seq,
                    from,
                    to,
                    packet,
                }));
            }
            None => self.stats.lost += 1,
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "simulation failed; replay with seed {}\n{}",
                self.seed(),
                self.describe()
            );
        }
    }
}
