//! The coherence core of a node's caches: stamps, what to keep, what to refuse and when to
//! clear, as plain data driven by `(input, now)`. No IO, no tasks, no clock reads: the shell
//! (`registry`, `gateway`, `replicator`) passes `now` (monotonic) and `wall` (wall-clock
//! microseconds from the node's [`WallClock`](colony_runtime::clock::WallClock)), and carries
//! out the [`Output`]s. The entries themselves (moka or a map) stay in the shell.
//!
//! # The protocol
//! - **Stamps** come from a hybrid logical clock ([`Hlc`]): a change made after another one
//!   was seen is later, whatever the wall clocks say. A stamp more than
//!   [`CoreConfig::max_ahead`] ahead of this node's wall clock is refused and counted: an
//!   invalidation still drops its key, a copied value is not stored (its key is dropped), a clear
//!   still clears, but the stamp is never adopted and never raises a removal floor.
//! - **Leases**: a node serves cached values of its replicated caches only while it holds a
//!   lease from every peer it lists as not gone. It asks each peer (`sync`) every quarter lease;
//!   the answer carries the peer's last synchronous sequence number (`mark`). The lease runs
//!   from when the *question* left (so a delayed answer cannot stretch it) and is granted only
//!   if every synchronous change up to `mark` was received: a gap stops renewals. A lease that
//!   runs out clears every replicated cache and restarts the sequence past `mark`; so does a
//!   gap seen while no lease is held, and a peer that goes gone while its lease runs. The first
//!   answer from a peer clears too: what was missed before it is unknown.
//! - **Writers**: a synchronous change gets the next number of the writer's one sequence. A
//!   peer that did not acknowledge it may still hold a lease granted before the change was
//!   numbered; the writer returns no earlier than that lease can last ([`SyncWrite::holds`]).
//!   After that the peer has either applied the change or, before serving again, cleared.
//! - **Asynchronous changes** carry, per receiver, how many times the writer gave up a queue
//!   to it (or stopped sending to it because it went down). A receiver that sees the count
//!   change clears: no change is lost silently.
//! - A synchronous change numbered below a restart of the sequence arrives after the clear
//!   that covered it: it still drops its key but stores nothing.
//!
//! # Driving it
//! Feed one input (`handle_*`, or a command such as [`CoherenceCore::stamp_sync`]), then
//! drain [`CoherenceCore::poll_output`] until `None`, carrying out each output in order, then
//! arm one timer at [`CoherenceCore::poll_timeout`] that calls
//! [`CoherenceCore::handle_timeout`]. Publish [`CoherenceCore::lease`] for readers after every
//! input.
//!
//! # Examples
//! ```
//! use std::time::{Duration, Instant};
//! use colony_actors::caches::core::{Change, ClearReason, CoherenceCore, CoreConfig, Lease, Output};
//! use colony_actors::caches::msg::{Batch, Op, SyncRequest};
//! use colony_actors::NodeId;
//!
//! let (a, b) = (NodeId::from_u128(1), NodeId::from_u128(2));
//! let t0 = Instant::now();
//! let wall = 1_700_000_000_000_000;
//! let mut writer = CoherenceCore::new(a, CoreConfig::default());
//! let mut reader = CoherenceCore::new(b, CoreConfig::default());
//! writer.handle_view(t0, [(a, false), (b, false)]);
//! reader.handle_view(t0, [(a, false), (b, false)]);
//! while writer.poll_output().is_some() {}
//!
//! // The reader asks the writer for a lease; until the answer it serves nothing cached.
//! assert_eq!(reader.poll_output(), Some(Output::SendSync { to: a, id: 1 }));
//! assert_eq!(reader.lease(), Lease::Expired);
//! let answer = writer.handle_sync_request(t0, b, SyncRequest {});
//! reader.handle_sync_reply(t0, wall, a, 1, answer);
//! assert_eq!(reader.poll_output(), Some(Output::Clear(ClearReason::Joined(a))));
//! assert_eq!(reader.lease(), Lease::Until(t0 + CoreConfig::default().lease));
//!
//! // A synchronous write: numbered, stamped, applied by the reader.
//! let write = writer.stamp_sync(t0, wall);
//! let op = Op::Invalidate { key: b"k".to_vec(), stamp: write.stamp };
//! let batch = Batch { seq: Some(write.seq), dropped: 0, ops: vec![("users".into(), op)] };
//! reader.handle_batch(t0, wall, a, batch);
//! assert_eq!(
//!     reader.poll_output(),
//!     Some(Output::Apply {
//!         cache: "users".into(),
//!         change: Change::Remove { key: b"k".to_vec(), stamp: Some(write.stamp) },
//!     })
//! );
//! // The writer would wait this long for a reader that did not acknowledge.
//! assert!(write.holds.iter().any(|(peer, until)| *peer == b && *until > t0));
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use colony_runtime::NodeId;

use super::msg::{Batch, Op, Stamp, SyncReply, SyncRequest};
pub use super::stamp::{Hlc, TooFarAhead};

/// Synchronous changes received ahead of a gap that a stream keeps at most; past it the
/// stream restarts with a clear (memory stays bounded whatever a peer sends).
const MAX_AHEAD_SEQS: usize = 4096;
/// Lease questions in flight to one peer at most.
const MAX_ASKED: usize = 8;

/// Settings of the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreConfig {
    /// How long an answered `sync` lets this node serve cached values. Shorter: a writer whose
    /// peer stopped answering returns sooner (it waits about 1.1 leases at most), but a slow
    /// peer costs more clears. Questions go out every quarter lease.
    pub lease: Duration,
    /// How far ahead of this node's wall clock a received stamp may be. Must exceed the largest
    /// difference between two nodes' clocks; stamps beyond it are refused and counted.
    pub max_ahead: Duration,
}

impl Default for CoreConfig {
    /// A 400 ms lease and a 1 s bound ahead.
    fn default() -> Self {
        CoreConfig {
            lease: Duration::from_millis(400),
            max_ahead: Duration::from_secs(1),
        }
    }
}

impl CoreConfig {
    /// How long after its last lease answer to a peer a writer waits for that peer when it
    /// does not acknowledge: the lease plus 10% for clocks that run at different rates (up to
    /// about 5% apart).
    pub fn hold(&self) -> Duration {
        self.lease + self.lease / 10
    }
}

/// What the shell must do, in the order given.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a `sync` question to `to`; feed its answer to
    /// [`CoherenceCore::handle_sync_reply`] with the same `id`.
    SendSync {
        /// The peer.
        to: NodeId,
        /// The question's number.
        id: u64,
    },
    /// Apply a change to the cache named `cache` (a cache this node does not have ignores it).
    Apply {
        /// The cache's name.
        cache: String,
        /// What to do to it.
        change: Change,
    },
    /// Empty every replicated cache and mark loads in progress stale: changes may have been
    /// missed.
    Clear(ClearReason),
}

/// A decided change to one cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Drop the key. With a stamp, a copy-mode cache keeps a newer value and remembers the
    /// removal; in invalidation mode, and without a stamp, the key is always dropped.
    Remove {
        /// The encoded key.
        key: Vec<u8>,
        /// The accepted stamp; `None` when refused or covered by a clear.
        stamp: Option<Stamp>,
    },
    /// Store the value unless a newer write or removal is known.
    Put {
        /// The encoded key.
        key: Vec<u8>,
        /// The encoded value.
        value: Vec<u8>,
        /// The accepted stamp.
        stamp: Stamp,
    },
    /// Drop every key; with a stamp, refuse older writes from now on.
    Clear {
        /// The accepted stamp; `None` when refused.
        stamp: Option<Stamp>,
    },
}

/// Why every replicated cache is cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClearReason {
    /// The first lease from this peer: what it changed before is unknown.
    Joined(NodeId),
    /// The lease from this peer ran out (silence, or a gap in its sequence).
    LeaseExpired(NodeId),
    /// This node holds no lease from this peer and its answer showed a gap: the sequence
    /// starts again past it.
    Gap(NodeId),
    /// This node stopped hearing from this peer (gone in its view) while holding its lease.
    Gone(NodeId),
    /// This peer gave up asynchronous changes for this node.
    AsyncLost(NodeId),
    /// More synchronous changes arrived ahead of a gap than a stream keeps.
    TooFarAhead(NodeId),
    /// A member came back from being down (this node may have been cut off too).
    Rejoined,
}

/// Whether cached values of replicated caches may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// No peer to hear from: always.
    Unbounded,
    /// Until this instant (exclusive).
    Until(Instant),
    /// Not now: some peer's lease is missing.
    Expired,
}

impl Lease {
    /// Whether cached values may be served at `now`.
    pub fn allows(&self, now: Instant) -> bool {
        match self {
            Lease::Unbounded => true,
            Lease::Until(t) => now < *t,
            Lease::Expired => false,
        }
    }
}

/// A synchronous change numbered by [`CoherenceCore::stamp_sync`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct SyncWrite {
    /// Its stamp.
    pub stamp: Stamp,
    /// Its number in this node's sequence.
    pub seq: u64,
    /// Peers that may hold a lease granted before this change, and until when: a peer that does
    /// not acknowledge the change keeps the writer waiting until then (past the replication
    /// timeout if need be). Peers not listed need no wait.
    pub holds: Vec<(NodeId, Instant)>,
}

impl SyncWrite {
    /// Until when the writer must wait, given the peers that did not acknowledge the change:
    /// the end of the latest lease any of them may hold. `None`: no wait.
    pub fn hold_until(&self, unacked: &[NodeId]) -> Option<Instant> {
        self.holds
            .iter()
            .filter(|(peer, _)| unacked.contains(peer))
            .map(|(_, until)| *until)
            .max()
    }
}

/// Counters of the core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Received stamps refused for being too far ahead of the local wall clock.
    pub refused_ahead: u64,
    /// Clears of every replicated cache, for any reason.
    pub clears: u64,
    /// Clears because asynchronous changes were given up.
    pub async_lost: u64,
    /// Lease answers that showed a gap in a peer's sequence.
    pub gaps: u64,
}

/// What this node knows of one peer's changes (the peer as an origin).
#[derive(Debug)]
struct Stream {
    /// Every synchronous number below it was received or covered by a clear; `None` before
    /// the first lease answer.
    next: Option<u64>,
    /// Numbers received above a gap.
    ahead: BTreeSet<u64>,
    /// The largest mark the peer answered.
    mark: u64,
    lease_until: Option<Instant>,
    /// The peer's count of asynchronous queues given up for this node, as last seen.
    dropped: Option<u64>,
    /// Questions in flight: `(id, sent at)`.
    asked: VecDeque<(u64, Instant)>,
    next_ask: Instant,
}

impl Stream {
    fn new(now: Instant) -> Self {
        Stream {
            next: None,
            ahead: BTreeSet::new(),
            mark: 0,
            lease_until: None,
            dropped: None,
            asked: VecDeque::new(),
            next_ask: now,
        }
    }

    /// Restarts the sequence past everything known: the caller clears.
    fn restart(&mut self) {
        let past = self.ahead.last().copied().unwrap_or(0).max(self.mark);
        self.next = Some(self.next.unwrap_or(0).max(past.saturating_add(1)));
        self.ahead.clear();
    }

    /// Records number `seq`; says whether a clear already covered it.
    fn received(&mut self, seq: u64) -> bool {
        let Some(next) = self.next else {
            return false;
        };
        if seq < next {
            return true;
        }
        if seq == next {
            // Numbers come from the network: saturate rather than overflow on `u64::MAX`.
            let mut n = next.saturating_add(1);
            while n < u64::MAX && self.ahead.remove(&n) {
                n += 1;
            }
            self.next = Some(n);
        } else {
            self.ahead.insert(seq);
        }
        false
    }

    fn complete_to(&self, mark: u64) -> bool {
        self.next.is_some_and(|n| n > mark)
    }
}

/// One peer as a reader of this node's changes.
#[derive(Debug, Clone, Copy)]
struct Reader {
    /// When this node last answered its lease question.
    answered: Option<Instant>,
    /// Asynchronous queues to it given up so far.
    dropped: u64,
    /// Whether it is gone in this node's view.
    gone: bool,
}

/// The coherence core of one node. See the module doc for the protocol and the drain order.
#[derive(Debug)]
pub struct CoherenceCore {
    me: NodeId,
    config: CoreConfig,
    hlc: Hlc,
    seq: u64,
    /// Peers this node must hold a lease from: every member not gone.
    streams: BTreeMap<NodeId, Stream>,
    /// Peers that read this node's changes: members, and askers not (yet) in the view.
    readers: BTreeMap<NodeId, Reader>,
    /// Every member of the last view, gone or not.
    members: BTreeSet<NodeId>,
    next_id: u64,
    outputs: VecDeque<Output>,
    stats: CoreStats,
}

impl CoherenceCore {
    /// A core for node `me`.
    pub fn new(me: NodeId, config: CoreConfig) -> Self {
        CoherenceCore {
            me,
            config,
            hlc: Hlc::new(me, config.max_ahead),
            seq: 0,
            streams: BTreeMap::new(),
            readers: BTreeMap::new(),
            members: BTreeSet::new(),
            next_id: 0,
            outputs: VecDeque::new(),
            stats: CoreStats::default(),
        }
    }

    // ---- getters ----

    /// The settings.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Whether cached values of replicated caches may be served now (see [`Lease::allows`]).
    pub fn lease(&self) -> Lease {
        let mut until: Option<Instant> = None;
        for stream in self.streams.values() {
            match stream.lease_until {
                None => return Lease::Expired,
                Some(t) => until = Some(until.map_or(t, |u| u.min(t))),
            }
        }
        until.map_or(Lease::Unbounded, Lease::Until)
    }

    /// Where this node's changes go at `now`: every member not gone, and every peer that may
    /// still hold a lease from this node.
    pub fn targets(&self, now: Instant) -> Vec<NodeId> {
        let hold = self.config.hold();
        self.readers
            .iter()
            .filter(|(_, r)| !r.gone || r.answered.is_some_and(|t| t + hold > now))
            .map(|(id, _)| *id)
            .collect()
    }

    /// How many asynchronous queues to `peer` this node gave up: sent with every batch to it.
    pub fn dropped_for(&self, peer: NodeId) -> u64 {
        self.readers.get(&peer).map_or(0, |r| r.dropped)
    }

    /// Counters.
    pub fn stats(&self) -> CoreStats {
        self.stats
    }

    // ---- commands ----

    /// The stamp of an asynchronous or local change made now.
    pub fn stamp(&mut self, wall: u64) -> Stamp {
        self.hlc.tick(wall)
    }

    /// Stamps and numbers a synchronous change made now, and says how long each peer that
    /// does not acknowledge it must be waited for.
    pub fn stamp_sync(&mut self, now: Instant, wall: u64) -> SyncWrite {
        self.seq += 1;
        let hold = self.config.hold();
        let holds = self
            .readers
            .iter()
            .filter_map(|(id, r)| Some((*id, r.answered? + hold)))
            .filter(|(_, until)| *until > now)
            .collect();
        SyncWrite {
            stamp: self.hlc.tick(wall),
            seq: self.seq,
            holds,
        }
    }

    /// The asynchronous queue to `peer` could not deliver and was dropped: the next batch or
    /// lease answer tells it to clear.
    pub fn gave_up_async(&mut self, peer: NodeId) {
        self.reader(peer).dropped += 1;
    }

    // ---- inputs ----

    /// The membership view changed: `(id, gone)` for every member, this node included.
    pub fn handle_view(&mut self, now: Instant, members: impl IntoIterator<Item = (NodeId, bool)>) {
        self.expire(now);
        let members: BTreeMap<NodeId, bool> = members
            .into_iter()
            .filter(|(id, _)| *id != self.me)
            .collect();
        self.members = members.keys().copied().collect();
        // A peer this node stops hearing from while its lease runs may have changed what this
        // node holds (its writer waits that lease out, not longer): clear now.
        let mut left = Vec::new();
        self.streams.retain(|id, stream| {
            let keep = members.get(id).is_some_and(|gone| !gone);
            if !keep && stream.lease_until.is_some() {
                left.push(*id);
            }
            keep
        });
        for id in left {
            self.clear(ClearReason::Gone(id));
        }
        for (&id, &gone) in &members {
            if !gone {
                self.streams.entry(id).or_insert_with(|| Stream::new(now));
            }
            let reader = self.reader(id);
            if gone && !reader.gone {
                // It will miss what this node sends from now on: tell it when it is back.
                reader.dropped += 1;
            }
            reader.gone = gone;
        }
        // Askers that are not members are kept only while they may hold a lease.
        let hold = self.config.hold();
        self.readers
            .retain(|id, r| members.contains_key(id) || r.answered.is_some_and(|t| t + hold > now));
        for (id, r) in &mut self.readers {
            if !members.contains_key(id) {
                r.gone = true;
            }
        }
        self.ask(now);
    }

    /// A member came back from being down: this node may have been cut off too.
    pub fn handle_rejoined(&mut self, now: Instant) {
        self.expire(now);
        self.clear(ClearReason::Rejoined);
    }

    /// `from` asks for a lease; returns the answer. `from` is the peer its link authenticated.
    pub fn handle_sync_request(
        &mut self,
        now: Instant,
        from: NodeId,
        _ask: SyncRequest,
    ) -> SyncReply {
        self.expire(now);
        let reader = self.reader(from);
        reader.answered = Some(now);
        let dropped = reader.dropped;
        SyncReply {
            mark: self.seq,
            clock: self.hlc.last(),
            dropped,
        }
    }

    /// The answer to question `id`, sent to `from`.
    pub fn handle_sync_reply(
        &mut self,
        now: Instant,
        wall: u64,
        from: NodeId,
        id: u64,
        reply: SyncReply,
    ) {
        self.expire(now);
        if self.hlc.observe(reply.clock, wall).is_err() {
            self.stats.refused_ahead += 1;
        }
        let lease = self.config.lease;
        let Some(stream) = self.streams.get_mut(&from) else {
            return; // not (or no longer) a peer to hear from
        };
        let Some(pos) = stream.asked.iter().position(|(i, _)| *i == id) else {
            return; // an answer to a forgotten question
        };
        let (_, sent_at) = stream.asked[pos];
        stream.asked.drain(..=pos);
        let mut reasons = Vec::new();
        if stream.dropped.is_some_and(|d| d != reply.dropped) {
            reasons.push(ClearReason::AsyncLost(from));
        }
        stream.dropped = Some(reply.dropped);
        stream.mark = stream.mark.max(reply.mark);
        let renew = if stream.next.is_none() {
            stream.restart();
            reasons.push(ClearReason::Joined(from));
            true
        } else if stream.complete_to(reply.mark) {
            true
        } else if stream.lease_until.is_none() {
            // Not leased, so serving nothing cached: clear now and start again past the mark,
            // rather than wait for a lease that a gap would never let come.
            self.stats.gaps += 1;
            stream.restart();
            reasons.push(ClearReason::Gap(from));
            true
        } else {
            // Leased: keep serving until the lease runs out, unless the gap fills first.
            self.stats.gaps += 1;
            false
        };
        if renew {
            let until = sent_at + lease;
            if now < until {
                stream.lease_until = Some(stream.lease_until.map_or(until, |t| t.max(until)));
            }
        }
        for reason in reasons {
            self.clear(reason);
        }
    }

    /// Changes from `from` (the peer its link authenticated): decides each and queues
    /// [`Output::Apply`]. Always succeeds: a refused stamp only makes its change drop keys.
    pub fn handle_batch(&mut self, now: Instant, wall: u64, from: NodeId, batch: Batch) {
        self.expire(now);
        let mut covered = false;
        let mut reasons = Vec::new();
        if let Some(stream) = self.streams.get_mut(&from) {
            match batch.seq {
                Some(seq) => {
                    covered = stream.received(seq);
                    if stream.ahead.len() > MAX_AHEAD_SEQS {
                        stream.restart();
                        stream.lease_until = None;
                        reasons.push(ClearReason::TooFarAhead(from));
                    }
                }
                None => {
                    if stream.dropped.is_some_and(|d| d != batch.dropped) {
                        reasons.push(ClearReason::AsyncLost(from));
                    }
                    stream.dropped = Some(batch.dropped);
                }
            }
        }
        for reason in reasons {
            self.clear(reason);
        }
        for (cache, op) in batch.ops {
            let change = self.decide(op, wall, covered);
            self.outputs.push_back(Output::Apply { cache, change });
        }
    }

    /// Expires leases and asks for new ones.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
        self.ask(now);
    }

    fn ask(&mut self, now: Instant) {
        let (lease, every) = (self.config.lease, self.config.lease / 4);
        let mut asks = Vec::new();
        for (id, stream) in &mut self.streams {
            while stream.asked.front().is_some_and(|(_, t)| *t + lease <= now)
                || stream.asked.len() >= MAX_ASKED
            {
                stream.asked.pop_front();
            }
            if stream.next_ask <= now {
                self.next_id += 1;
                stream.asked.push_back((self.next_id, now));
                stream.next_ask = now + every;
                asks.push(Output::SendSync {
                    to: *id,
                    id: self.next_id,
                });
            }
        }
        self.outputs.extend(asks);
    }

    // ---- outputs ----

    /// The next thing for the shell to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Self::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.streams
            .values()
            .flat_map(|s| [Some(s.next_ask), s.lease_until])
            .flatten()
            .min()
    }

    // ---- internals ----

    /// The record of `peer` as a reader; one outside the view counts as gone (a target only
    /// while the lease it asked for may last).
    fn reader(&mut self, peer: NodeId) -> &mut Reader {
        let gone = !self.members.contains(&peer);
        self.readers.entry(peer).or_insert(Reader {
            answered: None,
            dropped: 0,
            gone,
        })
    }

    fn clear(&mut self, reason: ClearReason) {
        self.stats.clears += 1;
        if matches!(reason, ClearReason::AsyncLost(_)) {
            self.stats.async_lost += 1;
        }
        self.outputs.push_back(Output::Clear(reason));
    }

    /// Leases that ran out by `now` clear every replicated cache, once each.
    fn expire(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (id, stream) in &mut self.streams {
            if stream.lease_until.is_some_and(|t| t <= now) {
                stream.lease_until = None;
                stream.restart();
                expired.push(*id);
            }
        }
        for id in expired {
            self.clear(ClearReason::LeaseExpired(id));
        }
    }

    fn accept(&mut self, stamp: Stamp, wall: u64) -> Option<Stamp> {
        match self.hlc.observe(stamp, wall) {
            Ok(()) => Some(stamp),
            Err(_) => {
                self.stats.refused_ahead += 1;
                None
            }
        }
    }

    fn decide(&mut self, op: Op, wall: u64, covered: bool) -> Change {
        match op {
            Op::Invalidate { key, stamp } => Change::Remove {
                key,
                stamp: self.accept(stamp, wall),
            },
            Op::Put { key, value, stamp } => match self.accept(stamp, wall) {
                Some(stamp) if !covered => Change::Put { key, value, stamp },
                _ => Change::Remove { key, stamp: None },
            },
            Op::Clear { stamp } => Change::Clear {
                stamp: self.accept(stamp, wall),
            },
        }
    }
}
