//! The cache coherence core of 3 to 5 nodes under a seeded, deterministic world: per-node
//! clock skew and drift, message loss, reordering, duplication, partitions, pauses, false down
//! verdicts, and loads that race changes. Each node keeps its entries in the real [`Store`]
//! and applies the core's outputs as the shell does; loads read a shared system of record.
//!
//! One seed fixes a run: the world panics with its seed and a replay hint when a checker
//! finds a violation. The checkers are the process tests' own
//! (`colony_runtime::testkit::check`): a read that started after a synchronous write of
//! version `v` returned sees `v` or newer, and no node reads an older value after a newer one
//! (asynchronous changes keep their origin's order).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use colony_runtime::NodeId;
use colony_runtime::sim::{Net, SkewedClock, node_addr};
use colony_runtime::testkit::check::{Read, StaleRead, Write, no_stale_reads, reads_never_go_back};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::core::{Change, CoherenceCore, CoreConfig, Output, SyncWrite};
use super::msg::{Batch, Op, Stamp, SyncReply, SyncRequest};
use super::settings::{CacheSettings, Mode};
use super::stamp::LOADED;
use super::store::Store;

const CACHE: &str = "sim";
const START_WALL: u64 = 1_700_000_000_000_000;
const TIMEOUT: Duration = Duration::from_millis(500);
/// Asynchronous changes queued for one peer before the queue overflows.
const QUEUE: usize = 64;

/// What a run exercises.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scenario {
    pub mode: Mode,
    pub synchronous: bool,
    pub run_for: Duration,
    /// Each node's clock is off by up to this much, either way.
    pub max_skew: Duration,
}

#[derive(Debug, Clone)]
enum Body {
    Apply { batch: Batch, write: u64 },
    Ack { write: u64 },
    AsyncApply { batch: Batch, tag: u64 },
    AsyncAck { tag: u64 },
    Ask { id: u64 },
    Answer { id: u64, reply: SyncReply },
}

#[derive(Debug, Clone)]
enum Ev {
    Msg {
        from: usize,
        to: usize,
        body: Body,
    },
    Timer {
        node: usize,
        generation: u64,
    },
    Resume {
        node: usize,
    },
    Client {
        node: usize,
        key: u32,
        write: bool,
    },
    LoadRead {
        node: usize,
        load: u64,
    },
    LoadDone {
        node: usize,
        load: u64,
    },
    WriteBegin {
        node: usize,
        write: u64,
    },
    WriteDeadline {
        node: usize,
        write: u64,
    },
    WriteDone {
        node: usize,
        write: u64,
    },
    AsyncRetry {
        node: usize,
        peer: usize,
        tag: u64,
    },
    Partition(Vec<Vec<usize>>),
    Heal,
    Pause {
        node: usize,
        for_: Duration,
    },
    Gone {
        observer: usize,
        subject: usize,
        gone: bool,
    },
}

impl Ev {
    /// The node whose process handles it (held while that node is paused).
    fn node(&self) -> Option<usize> {
        match self {
            Ev::Msg { to, .. } => Some(*to),
            Ev::Timer { node, .. }
            | Ev::Client { node, .. }
            | Ev::LoadRead { node, .. }
            | Ev::LoadDone { node, .. }
            | Ev::WriteBegin { node, .. }
            | Ev::WriteDeadline { node, .. }
            | Ev::WriteDone { node, .. }
            | Ev::AsyncRetry { node, .. } => Some(*node),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Queue {
    ops: VecDeque<(String, Op)>,
    inflight: Option<(u64, usize)>,
}

struct SimNode {
    id: NodeId,
    core: CoherenceCore,
    clock: SkewedClock,
    store: Store<u32, u64>,
    paused_until: Option<Duration>,
    held: Vec<Ev>,
    generation: u64,
    /// Peers this node's membership view has as gone.
    gone: BTreeSet<usize>,
    queues: BTreeMap<usize, Queue>,
}

struct Load {
    node: usize,
    key: u32,
    shared: bool,
    stale: bool,
    value: u64,
    readers: Vec<Duration>,
}

struct PendingWrite {
    key: u32,
    value: u64,
    start: Duration,
    remove: bool,
    began: Option<(SyncWrite, Vec<usize>)>,
    acked: BTreeSet<usize>,
    done: bool,
}

/// The world. See the module doc.
pub(crate) struct CacheWorld {
    seed: u64,
    scenario: Scenario,
    rng: StdRng,
    epoch: Instant,
    now: Duration,
    nodes: Vec<SimNode>,
    net: Net,
    duplicate: f64,
    events: BTreeMap<(Duration, u64), Ev>,
    seq: u64,
    /// The system of record: the last value written per key.
    sor: BTreeMap<u32, u64>,
    busy: BTreeSet<u32>,
    next_value: u64,
    writes: BTreeMap<u64, PendingWrite>,
    loads: BTreeMap<u64, Load>,
    next_id: u64,
    history_writes: Vec<Write>,
    history_reads: Vec<Read>,
    /// Who wrote each `(key, value)`.
    writers: BTreeMap<(u32, u64), usize>,
    /// `(observer, subject, from, to)`: when a node's view had another as gone.
    verdicts: Vec<(usize, usize, Duration, Duration)>,
    pub clears: u64,
    /// Print every event (`COLONY_SIM_TRACE`).
    trace: bool,
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

impl CacheWorld {
    /// A world of 3 to 5 nodes with clocks, faults and clients drawn from `seed`.
    pub(crate) fn new(seed: u64, scenario: Scenario) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = rng.random_range(3..=5usize);
        let settings = match scenario.mode {
            Mode::Copy => CacheSettings::replicate_via_copy(),
            _ => CacheSettings::replicate_via_invalidation(),
        };
        let mut net = Net::new(
            Duration::from_micros(200),
            Duration::from_micros(rng.random_range(100..3_000)),
        );
        let ids: Vec<NodeId> = (0..n)
            .map(|i| NodeId::from_u128(((seed as u128) << 8) | (i as u128 + 1)))
            .collect();
        let nodes = (0..n)
            .map(|i| {
                net.add_node(node_addr(i));
                let clock = SkewedClock {
                    skew_micros: {
                        let max = micros(scenario.max_skew) as i64;
                        rng.random_range(-max..=max)
                    },
                    drift_ppm: rng.random_range(-20_000..=20_000),
                };
                SimNode {
                    id: ids[i],
                    core: CoherenceCore::new(ids[i], CoreConfig::default()),
                    clock,
                    store: Store::new(&settings),
                    paused_until: None,
                    held: Vec::new(),
                    generation: 0,
                    gone: BTreeSet::new(),
                    queues: BTreeMap::new(),
                }
            })
            .collect();
        let mut world = CacheWorld {
            seed,
            scenario,
            duplicate: rng.random_range(0.0..0.03),
            rng,
            epoch: Instant::now(),
            now: Duration::ZERO,
            nodes,
            net,
            events: BTreeMap::new(),
            seq: 0,
            sor: BTreeMap::new(),
            busy: BTreeSet::new(),
            next_value: 0,
            writes: BTreeMap::new(),
            loads: BTreeMap::new(),
            next_id: 0,
            history_writes: Vec::new(),
            history_reads: Vec::new(),
            writers: BTreeMap::new(),
            verdicts: Vec::new(),
            clears: 0,
            trace: std::env::var_os("COLONY_SIM_TRACE").is_some(),
        };
        for i in 0..n {
            world.feed_view(i);
        }
        world.script();
        world
    }

    /// Clients and faults for the whole run.
    fn script(&mut self) {
        let n = self.nodes.len();
        let end = self.scenario.run_for;
        let keys = 4u32;
        let mut t = Duration::ZERO;
        while t < end {
            t += Duration::from_micros(self.rng.random_range(200..2_000));
            let node = self.rng.random_range(0..n);
            let key = self.rng.random_range(0..keys);
            // Asynchronous keys have one writer each: order is promised per origin only.
            let write = self.rng.random_bool(0.2)
                && (self.scenario.synchronous || key as usize % n == node);
            self.at(t, Ev::Client { node, key, write });
        }
        for _ in 0..self.rng.random_range(0..3) {
            let (a, b) = (self.rng.random_range(0..n), self.rng.random_range(0..n));
            if a != b {
                let loss = self.rng.random_range(0.02..0.3);
                self.net.drop(node_addr(a), node_addr(b), loss);
            }
        }
        for _ in 0..self.rng.random_range(0..3) {
            let at = self.random_time();
            let mut groups = vec![Vec::new(), Vec::new()];
            for i in 0..n {
                groups[self.rng.random_range(0..2usize)].push(i);
            }
            self.at(at, Ev::Partition(groups));
            let heal = at + Duration::from_millis(self.rng.random_range(100..1_500));
            self.at(heal, Ev::Heal);
        }
        for _ in 0..self.rng.random_range(0..4) {
            let at = self.random_time();
            let node = self.rng.random_range(0..n);
            let for_ = Duration::from_millis(self.rng.random_range(20..1_500));
            self.at(at, Ev::Pause { node, for_ });
        }
        for _ in 0..self.rng.random_range(0..3) {
            let at = self.random_time();
            let (observer, subject) = (self.rng.random_range(0..n), self.rng.random_range(0..n));
            if observer != subject {
                self.at(
                    at,
                    Ev::Gone {
                        observer,
                        subject,
                        gone: true,
                    },
                );
                let back = at + Duration::from_millis(self.rng.random_range(50..800));
                self.at(
                    back,
                    Ev::Gone {
                        observer,
                        subject,
                        gone: false,
                    },
                );
            }
        }
    }

    fn random_time(&mut self) -> Duration {
        let end = self.scenario.run_for.as_micros() as u64;
        Duration::from_micros(self.rng.random_range(0..end))
    }

    fn at(&mut self, at: Duration, ev: Ev) {
        self.seq += 1;
        self.events.insert((at, self.seq), ev);
    }

    /// Runs the whole scenario, then a quiet second for writes to return and loads to finish.
    pub(crate) fn run(&mut self) {
        let end = self.scenario.run_for + Duration::from_secs(1);
        while let Some(((at, _), ev)) = self.events.pop_first() {
            if at > end {
                break;
            }
            self.now = at;
            self.process(ev);
        }
    }

    /// Every promise the scenario makes; panics with the seed on a violation.
    pub(crate) fn check(&self) {
        let back = reads_never_go_back(&self.history_reads);
        assert!(
            back.is_empty(),
            "seed {}: a node read an older value after a newer one (replay with \
             CacheWorld::new({}, {:?})): {:#?}",
            self.seed,
            self.seed,
            self.scenario,
            &back[..back.len().min(3)]
        );
        if self.scenario.synchronous {
            // The promise covers readers that count the writer as a member: a reader whose
            // view has the writer down neither needs its lease nor hears its changes, until
            // it sees the writer again (and then clears). See `docs/caches.md`.
            let stale: Vec<_> = no_stale_reads(&self.history_writes, &self.history_reads)
                .into_iter()
                .filter(|v| !self.excused(v))
                .collect();
            assert!(
                stale.is_empty(),
                "seed {}: stale reads after returned writes (replay with \
                 CacheWorld::new({}, {:?})): {:#?}",
                self.seed,
                self.seed,
                self.scenario,
                &stale[..stale.len().min(3)]
            );
        }
    }

    /// Whether the reader had the writer of the newer value down at some time between that
    /// write's start and the read's start.
    fn excused(&self, v: &StaleRead) -> bool {
        let reader: usize = v.read.node[1..].parse().expect("node names are n<i>");
        let key: u32 = v.newer.key.parse().expect("numeric keys");
        let Some(&writer) = self.writers.get(&(key, v.newer.value)) else {
            return false;
        };
        let (from, to) = (
            Duration::from_micros(v.newer.start_us),
            Duration::from_micros(v.read.start_us),
        );
        self.verdicts
            .iter()
            .any(|&(o, s, a, b)| o == reader && s == writer && a <= to && from <= b)
    }

    /// How many reads and returned writes were recorded.
    pub(crate) fn recorded(&self) -> (usize, usize) {
        (self.history_reads.len(), self.history_writes.len())
    }

    // ---- the nodes' processes ----

    fn process(&mut self, ev: Ev) {
        if self.trace {
            eprintln!("{:>10?} {ev:?}", self.now);
        }
        if let Some(i) = ev.node()
            && self.nodes[i].paused_until.is_some()
        {
            if !matches!(ev, Ev::Client { .. }) {
                self.nodes[i].held.push(ev);
            }
            return;
        }
        match ev {
            Ev::Msg { from, to, body } => self.deliver(from, to, body),
            Ev::Timer { node, generation } => {
                if self.nodes[node].generation == generation {
                    self.input(node, |core, now, _| core.handle_timeout(now));
                }
            }
            Ev::Resume { node } => {
                self.nodes[node].paused_until = None;
                for ev in std::mem::take(&mut self.nodes[node].held) {
                    self.process(ev);
                }
                self.arm(node);
            }
            Ev::Client { node, key, write } => {
                if write {
                    self.client_write(node, key);
                } else {
                    self.client_read(node, key);
                }
            }
            Ev::LoadRead { load, .. } => {
                if let Some(l) = self.loads.get_mut(&load) {
                    l.value = self.sor.get(&l.key).copied().unwrap_or(0);
                }
            }
            Ev::LoadDone { load, .. } => self.load_done(load),
            Ev::WriteBegin { node, write } => self.begin(node, write),
            Ev::WriteDeadline { node, write } => self.deadline(node, write),
            Ev::WriteDone { write, .. } => self.complete(write),
            Ev::AsyncRetry { node, peer, tag } => self.async_retry(node, peer, tag),
            Ev::Partition(groups) => {
                let groups: Vec<Vec<_>> = groups
                    .iter()
                    .map(|g| g.iter().map(|&i| node_addr(i)).collect())
                    .collect();
                self.net.partition(&groups);
            }
            Ev::Heal => self.net.heal(),
            Ev::Pause { node, for_ } => {
                if self.nodes[node].paused_until.is_none() {
                    let until = self.now + for_;
                    self.nodes[node].paused_until = Some(until);
                    self.at(until, Ev::Resume { node });
                }
            }
            Ev::Gone {
                observer,
                subject,
                gone,
            } => {
                if gone {
                    if self.nodes[observer].gone.insert(subject) {
                        self.verdicts
                            .push((observer, subject, self.now, Duration::MAX));
                    }
                } else if self.nodes[observer].gone.remove(&subject)
                    && let Some(v) = self
                        .verdicts
                        .iter_mut()
                        .rev()
                        .find(|v| (v.0, v.1) == (observer, subject))
                {
                    v.3 = self.now;
                }
                self.feed_view(observer);
            }
        }
    }

    fn feed_view(&mut self, i: usize) {
        let members: Vec<(NodeId, bool)> = (0..self.nodes.len())
            .map(|j| (self.nodes[j].id, self.nodes[i].gone.contains(&j)))
            .collect();
        self.input(i, |core, now, _| core.handle_view(now, members));
    }

    fn index(&self, id: NodeId) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .expect("a node of this world")
    }

    fn local(&self, i: usize) -> (Instant, u64) {
        let clock = self.nodes[i].clock;
        (
            clock.instant(self.epoch, self.now),
            clock.wall_micros(START_WALL, self.now),
        )
    }

    /// Feeds node `i`'s core one input, then carries out its outputs as the shell does.
    fn input<T>(
        &mut self,
        i: usize,
        feed: impl FnOnce(&mut CoherenceCore, Instant, u64) -> T,
    ) -> T {
        let (now, wall) = self.local(i);
        let result = feed(&mut self.nodes[i].core, now, wall);
        while let Some(output) = self.nodes[i].core.poll_output() {
            match output {
                Output::SendSync { to, id } => {
                    let to = self.index(to);
                    self.send(i, to, Body::Ask { id });
                }
                Output::Apply { change, .. } => self.apply(i, change),
                Output::Clear(reason) => {
                    if self.trace {
                        eprintln!("{:>10?} n{i} clears: {reason:?}", self.now);
                    }
                    self.clears += 1;
                    self.changed(i, None);
                    self.nodes[i].store.clear(LOADED);
                }
            }
        }
        self.arm(i);
        result
    }

    fn arm(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.generation += 1;
        if let Some(t) = node.core.poll_timeout() {
            let at = node.clock.world_of(self.epoch, t).max(self.now);
            let generation = node.generation;
            self.at(
                at,
                Ev::Timer {
                    node: i,
                    generation,
                },
            );
        }
    }

    fn send(&mut self, from: usize, to: usize, body: Body) {
        let copies = if self.rng.random_bool(self.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            if let Some(delay) = self
                .net
                .route(node_addr(from), node_addr(to), &mut self.rng)
            {
                let body = body.clone();
                self.at(self.now + delay, Ev::Msg { from, to, body });
            }
        }
    }

    fn deliver(&mut self, from: usize, to: usize, body: Body) {
        let from_id = self.nodes[from].id;
        match body {
            Body::Apply { batch, write } => {
                self.input(to, |core, now, wall| {
                    core.handle_batch(now, wall, from_id, batch)
                });
                self.send(to, from, Body::Ack { write });
            }
            Body::Ack { write } => {
                let all = self.writes.get_mut(&write).is_some_and(|w| {
                    w.acked.insert(from);
                    w.began
                        .as_ref()
                        .is_some_and(|(_, targets)| targets.iter().all(|t| w.acked.contains(t)))
                });
                if all {
                    self.complete(write);
                }
            }
            Body::AsyncApply { batch, tag } => {
                self.input(to, |core, now, wall| {
                    core.handle_batch(now, wall, from_id, batch)
                });
                self.send(to, from, Body::AsyncAck { tag });
            }
            Body::AsyncAck { tag } => {
                let q = self.nodes[to].queues.entry(from).or_default();
                if let Some((t, n)) = q.inflight
                    && t == tag
                {
                    q.ops.drain(..n.min(q.ops.len()));
                    q.inflight = None;
                    self.pump(to, from);
                }
            }
            Body::Ask { id } => {
                let reply = self.input(to, |core, now, _| {
                    core.handle_sync_request(now, from_id, SyncRequest {})
                });
                self.send(to, from, Body::Answer { id, reply });
            }
            Body::Answer { id, reply } => {
                self.input(to, |core, now, wall| {
                    core.handle_sync_reply(now, wall, from_id, id, reply)
                });
            }
        }
    }

    /// Applies a decided change to node `i`'s store, as `Replica::apply` does.
    fn apply(&mut self, i: usize, change: Change) {
        if self.trace {
            eprintln!("{:>10?} n{i} applies {change:?}", self.now);
        }
        let key = |k: &[u8]| Ok(u32::from_le_bytes(k.try_into().expect("4-byte keys")));
        let value = |v: &[u8]| Ok(u64::from_le_bytes(v.try_into().expect("8-byte values")));
        let mut changed = Vec::new();
        let applied = self.nodes[i]
            .store
            .apply(self.scenario.mode, &change, key, value, |k| {
                changed.push(k.copied())
            });
        applied.expect("the simulation's changes decode");
        for k in changed {
            self.changed(i, k);
        }
    }

    /// A change to `key` (every key: `None`) on node `i`: shared loads in progress go stale.
    fn changed(&mut self, i: usize, key: Option<u32>) {
        for load in self.loads.values_mut() {
            if load.node == i && load.shared && key.is_none_or(|k| k == load.key) {
                load.stale = true;
            }
        }
    }

    fn leased(&self, i: usize) -> bool {
        let (now, _) = self.local(i);
        self.nodes[i].core.lease().allows(now)
    }

    fn client_read(&mut self, i: usize, key: u32) {
        let leased = self.leased(i);
        if leased && let Some(value) = self.nodes[i].store.get(&key) {
            self.history_reads.push(Read {
                node: format!("n{i}"),
                key: key.to_string(),
                value,
                start_us: micros(self.now),
                end_us: micros(self.now),
            });
            return;
        }
        if self.scenario.mode == Mode::Copy {
            // Copy mode is for caches without a loader: a miss answers nothing. (With one, a
            // load can read the system of record ahead of an older copy still in flight.)
            return;
        }
        let joinable = self
            .loads
            .iter_mut()
            .find(|(_, l)| l.node == i && l.key == key && l.shared && !l.stale);
        if leased && let Some((_, load)) = joinable {
            load.readers.push(self.now);
            return;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.loads.insert(
            id,
            Load {
                node: i,
                key,
                shared: leased,
                stale: false,
                value: 0,
                readers: vec![self.now],
            },
        );
        let read = self.now + Duration::from_micros(self.rng.random_range(0..3_000));
        let done = read + Duration::from_micros(self.rng.random_range(0..3_000));
        self.at(read, Ev::LoadRead { node: i, load: id });
        self.at(done, Ev::LoadDone { node: i, load: id });
    }

    fn load_done(&mut self, id: u64) {
        let Some(load) = self.loads.remove(&id) else {
            return;
        };
        let i = load.node;
        if self.trace {
            eprintln!(
                "{:>10?} n{i} load of {} done: {} shared {} stale {}",
                self.now, load.key, load.value, load.shared, load.stale
            );
        }
        if load.shared {
            let stale = load.stale;
            let store = &self.nodes[i].store;
            if !store.put_loaded(load.key, load.value, || stale) && stale {
                store.drop_key(&load.key);
            }
        } else {
            self.changed(i, Some(load.key));
            self.nodes[i].store.drop_key(&load.key);
        }
        for start in load.readers {
            self.history_reads.push(Read {
                node: format!("n{i}"),
                key: load.key.to_string(),
                value: load.value,
                start_us: micros(start),
                end_us: micros(self.now),
            });
        }
    }

    fn client_write(&mut self, i: usize, key: u32) {
        if !self.busy.insert(key) {
            return; // the previous write of this key has not returned
        }
        self.next_value += 1;
        let value = self.next_value;
        // The system of record first, then the cache.
        self.sor.insert(key, value);
        self.writers.insert((key, value), i);
        self.next_id += 1;
        let id = self.next_id;
        let remove = self.rng.random_bool(0.3);
        self.writes.insert(
            id,
            PendingWrite {
                key,
                value,
                start: self.now,
                remove,
                began: None,
                acked: BTreeSet::new(),
                done: false,
            },
        );
        if self.scenario.synchronous {
            self.begin(i, id);
        } else {
            self.write_async(i, id);
        }
    }

    fn op(&self, w: &PendingWrite, stamp: Stamp) -> Op {
        let key = w.key.to_le_bytes().to_vec();
        if w.remove || self.scenario.mode == Mode::Invalidation {
            Op::Invalidate { key, stamp }
        } else {
            let value = w.value.to_le_bytes().to_vec();
            Op::Put { key, value, stamp }
        }
    }

    fn store_locally(&mut self, i: usize, id: u64, stamp: Stamp) {
        let w = &self.writes[&id];
        let (key, value, remove) = (w.key, w.value, w.remove);
        self.changed(i, Some(key));
        let store = &self.nodes[i].store;
        match (remove, self.scenario.mode) {
            (true, Mode::Copy) => store.remove(&key, stamp),
            (true, _) => store.drop_key(&key),
            (false, _) => {
                store.put(key, value, stamp);
            }
        }
    }

    /// A synchronous write: as `Cache::begin` and `Replicator::send_sync`.
    fn begin(&mut self, i: usize, id: u64) {
        let start = self.writes[&id].start;
        if self.scenario.mode == Mode::Copy && !self.leased(i) && self.now < start + TIMEOUT {
            let retry = self.now + Duration::from_millis(5);
            self.at(retry, Ev::WriteBegin { node: i, write: id });
            return;
        }
        let (write, targets) = self.input(i, |core, now, wall| {
            (core.stamp_sync(now, wall), core.targets(now))
        });
        let targets: Vec<usize> = targets.into_iter().map(|t| self.index(t)).collect();
        if self.trace {
            let w = &self.writes[&id];
            eprintln!(
                "{:>10?} n{i} begins write {id} key {} value {} remove {}: {:?} seq {} to {targets:?}",
                self.now, w.key, w.value, w.remove, write.stamp, write.seq
            );
        }
        self.store_locally(i, id, write.stamp);
        let batch = Batch {
            seq: Some(write.seq),
            dropped: 0,
            ops: vec![(CACHE.into(), self.op(&self.writes[&id], write.stamp))],
        };
        for &t in &targets {
            self.send(
                i,
                t,
                Body::Apply {
                    batch: batch.clone(),
                    write: id,
                },
            );
        }
        let empty = targets.is_empty();
        self.writes.get_mut(&id).expect("pending").began = Some((write, targets));
        if empty {
            self.complete(id);
        } else {
            // One timeout, on the writer's clock, covers the wait for leases and the fan-out.
            let clock = self.nodes[i].clock;
            let deadline = clock.world(clock.local(start) + TIMEOUT).max(self.now);
            self.at(deadline, Ev::WriteDeadline { node: i, write: id });
        }
    }

    fn deadline(&mut self, i: usize, id: u64) {
        let Some(w) = self.writes.get(&id) else {
            return;
        };
        if w.done {
            return;
        }
        let Some((write, targets)) = &w.began else {
            return;
        };
        let ids: Vec<NodeId> = targets
            .iter()
            .filter(|t| !w.acked.contains(t))
            .map(|&t| self.nodes[t].id)
            .collect();
        // Wait out the lease an unacknowledging peer may hold.
        match write.hold_until(&ids) {
            Some(until) => {
                let at = self.nodes[i]
                    .clock
                    .world_of(self.epoch, until)
                    .max(self.now);
                self.at(at, Ev::WriteDone { node: i, write: id });
            }
            None => self.complete(id),
        }
    }

    fn complete(&mut self, id: u64) {
        let Some(w) = self.writes.get_mut(&id) else {
            return;
        };
        if w.done {
            return;
        }
        w.done = true;
        let w = self.writes.remove(&id).expect("pending");
        self.busy.remove(&w.key);
        self.history_writes.push(Write {
            key: w.key.to_string(),
            value: w.value,
            start_us: micros(w.start),
            end_us: micros(self.now),
        });
    }

    fn write_async(&mut self, i: usize, id: u64) {
        let (stamp, targets) =
            self.input(i, |core, now, wall| (core.stamp(wall), core.targets(now)));
        self.store_locally(i, id, stamp);
        let op = self.op(&self.writes[&id], stamp);
        for t in targets {
            let t = self.index(t);
            let q = self.nodes[i].queues.entry(t).or_default();
            if q.ops.len() >= QUEUE {
                // Overflow: emptied, then counted, so the peer's clear comes after all of it.
                q.ops.clear();
                q.inflight = None;
                let peer = self.nodes[t].id;
                self.input(i, |core, _, _| core.gave_up_async(peer));
            }
            self.nodes[i]
                .queues
                .entry(t)
                .or_default()
                .ops
                .push_back((CACHE.into(), op.clone()));
            self.pump(i, t);
        }
        self.complete(id);
    }

    fn pump(&mut self, i: usize, peer: usize) {
        let dropped = self.nodes[i].core.dropped_for(self.nodes[peer].id);
        let q = self.nodes[i].queues.entry(peer).or_default();
        if q.inflight.is_some() || q.ops.is_empty() {
            return;
        }
        let n = q.ops.len().min(16);
        let ops: Vec<(String, Op)> = q.ops.iter().take(n).cloned().collect();
        self.next_id += 1;
        let tag = self.next_id;
        q.inflight = Some((tag, n));
        let batch = Batch {
            seq: None,
            dropped,
            ops,
        };
        self.send(i, peer, Body::AsyncApply { batch, tag });
        let retry = self.now + Duration::from_millis(50);
        self.at(retry, Ev::AsyncRetry { node: i, peer, tag });
    }

    /// Stamps the nodes refused for being too far ahead of their clocks.
    fn refused_ahead(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.core.stats().refused_ahead)
            .sum()
    }

    fn async_retry(&mut self, i: usize, peer: usize, tag: u64) {
        let q = self.nodes[i].queues.entry(peer).or_default();
        if q.inflight.is_none_or(|(t, _)| t != tag) {
            return;
        }
        q.inflight = None;
        if self.nodes[i].gone.contains(&peer) {
            // Gone: the queue gives up, and the count tells the peer to clear when it is back.
            self.nodes[i].queues.remove(&peer);
            let id = self.nodes[peer].id;
            self.input(i, |core, _, _| core.gave_up_async(id));
        } else {
            self.pump(i, peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `seeds` seeds of `scenario` (times `COLONY_SIM_SOAK`, for a soak run) and checks
    /// every promise of each.
    fn seeds(scenario: Scenario, seeds: std::ops::Range<u64>) {
        let soak: u64 = std::env::var("COLONY_SIM_SOAK")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let seeds = seeds.start..seeds.start + (seeds.end - seeds.start) * soak;
        let (mut reads, mut writes, mut clears, mut refused) = (0, 0, 0, 0);
        for seed in seeds {
            let mut world = CacheWorld::new(seed, scenario);
            world.run();
            world.check();
            let (r, w) = world.recorded();
            reads += r;
            writes += w;
            clears += world.clears;
            refused += world.refused_ahead();
        }
        // The runs did reach the paths under test.
        assert!(
            reads > 0 && writes > 0 && clears > 0,
            "{reads} {writes} {clears}"
        );
        // Clocks beyond the bound: stamps were refused for being too far ahead.
        assert!(
            (scenario.max_skew <= SKEW) == (refused == 0),
            "{refused} stamps refused with clocks up to {:?} off",
            scenario.max_skew
        );
    }

    const RUN: Duration = Duration::from_secs(2);
    /// Clocks within the bound a received stamp may be ahead (1 s): ±300 ms.
    const SKEW: Duration = Duration::from_millis(300);
    /// Clocks beyond that bound: ±1.5 s.
    const FAR_SKEW: Duration = Duration::from_millis(1_500);

    /// Replays one seed with a trace on stderr: `COLONY_SIM_TRACE=1 COLONY_SIM_SEED=7
    /// COLONY_SIM_MODE=copy cargo test -p colony-actors --lib replay -- --nocapture` (and
    /// `COLONY_SIM_SKEW_MS=1500` for the seeds with clocks beyond the stamp bound).
    #[test]
    fn replay() {
        let Some(seed) = std::env::var("COLONY_SIM_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
        else {
            return;
        };
        let mode = match std::env::var("COLONY_SIM_MODE").as_deref() {
            Ok("copy") => Mode::Copy,
            _ => Mode::Invalidation,
        };
        let synchronous = std::env::var("COLONY_SIM_ASYNC").is_err();
        let max_skew = std::env::var("COLONY_SIM_SKEW_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(SKEW, Duration::from_millis);
        seeds(
            Scenario {
                mode,
                synchronous,
                run_for: RUN,
                max_skew,
            },
            seed..seed + 1,
        );
    }

    #[test]
    fn synchronous_invalidation_never_serves_a_value_older_than_a_returned_write() {
        let scenario = Scenario {
            mode: Mode::Invalidation,
            synchronous: true,
            run_for: RUN,
            max_skew: SKEW,
        };
        seeds(scenario, 0..150);
    }

    #[test]
    fn synchronous_copy_never_serves_a_value_older_than_a_returned_write() {
        let scenario = Scenario {
            mode: Mode::Copy,
            synchronous: true,
            run_for: RUN,
            max_skew: SKEW,
        };
        seeds(scenario, 1_000..1_100);
    }

    #[test]
    fn asynchronous_invalidation_keeps_each_origins_order() {
        let scenario = Scenario {
            mode: Mode::Invalidation,
            synchronous: false,
            run_for: RUN,
            max_skew: SKEW,
        };
        seeds(scenario, 2_000..2_100);
    }

    #[test]
    fn asynchronous_copy_keeps_each_origins_order() {
        let scenario = Scenario {
            mode: Mode::Copy,
            synchronous: false,
            run_for: RUN,
            max_skew: SKEW,
        };
        seeds(scenario, 5_000..5_100);
    }

    /// Clocks up to 3 s apart, beyond the 1 s a received stamp may be ahead: a fast node's
    /// stamps are refused by the slow ones, whose later writes then carry older stamps than
    /// the fast node's earlier ones. Nothing older than a returned write is served all the same.
    #[test]
    fn synchronous_copy_on_clocks_beyond_the_stamp_bound_never_serves_an_older_value() {
        let scenario = Scenario {
            mode: Mode::Copy,
            synchronous: true,
            run_for: RUN,
            max_skew: FAR_SKEW,
        };
        seeds(scenario, 3_000..3_050);
    }

    /// As above, in invalidation mode.
    #[test]
    fn synchronous_invalidation_on_clocks_beyond_the_stamp_bound_never_serves_an_older_value() {
        let scenario = Scenario {
            mode: Mode::Invalidation,
            synchronous: true,
            run_for: RUN,
            max_skew: FAR_SKEW,
        };
        seeds(scenario, 4_000..4_050);
    }
}
