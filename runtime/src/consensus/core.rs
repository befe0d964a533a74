//! The group core: one node's raft-rs [`RawNode`] and the cluster state it applies, with no IO.
//!
//! Drive it with one input (`handle_message`, `handle_timeout`, `set_peers`, `propose`,
//! `leave`), then drain [`GroupCore::poll_output`] **in order** (a [`Output::Persist`] must be
//! on disk before any [`Output::Send`] queued after it goes out), then sleep until
//! [`GroupCore::poll_timeout`]. Time is always an argument; randomness comes from the seed.
//!
//! Besides raft itself the core keeps this node's liveness (it registers and heartbeats on its
//! own, and knows until when it is entitled), and, while it leads, the group's duties: revoking
//! epochs that stopped heartbeating, placing slots, and changing voters (the `duties` module).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType,
    Snapshot,
};
use raft::{RawNode, StateRole};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::command::{Command, MemberInfo, Outcome, Refusal, ReplicaId};
use super::config::GroupConfig;
use super::log::{Log, Persist};
use super::settings::{ClusterSettings, Disagreement};
use super::state::{ClusterState, Phase};

/// The local handle of a proposal, unique within one core.
pub type ProposalId = u64;

/// Who this node is to the group.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Its member id.
    pub replica: ReplicaId,
    /// Its name and address.
    pub info: MemberInfo,
    /// The settings it was started with, checked against the cluster's.
    pub settings: ClusterSettings,
}

/// How gossip sees a member, as the shell reports it with [`GroupCore::set_peers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Up or merely suspected.
    Up,
    /// Down, or not heard of.
    Unreachable,
    /// Left on purpose.
    Left,
}

/// One applied command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Its log index.
    pub index: u64,
    /// Its place in the entry's [`Command::Batch`] (0 for an entry of one command).
    pub position: u32,
    /// The command.
    pub command: Command,
    /// What it did.
    pub outcome: Outcome,
    /// This node's handle, if this node proposed it in this run.
    pub proposal: Option<ProposalId>,
}

/// Something the shell must do or may want to know, in queue order.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Output {
    /// Send a raft message to `msg.to`.
    Send(Message),
    /// Write this to disk before sending anything queued after it.
    Persist(Persist),
    /// A command was applied.
    Applied(Applied),
    /// A proposal of this node was not applied within the proposal timeout (or could not be
    /// proposed): it may still apply later.
    Failed {
        /// The handle.
        proposal: ProposalId,
        /// The command.
        command: Command,
    },
    /// The leader or term changed.
    Leader {
        /// The term.
        term: u64,
        /// The leader, if one is known.
        leader: Option<ReplicaId>,
    },
    /// This node's settings disagree with the cluster's: it takes no part in the cluster.
    Disagrees(Disagreement),
    /// Snapshot the state: [`Capture::encode`] it (anywhere: it takes time in proportion to
    /// the state) and hand the result back through [`GroupCore::captured`]. The core goes on
    /// meanwhile and asks for no other capture until then.
    Capture(Capture),
}

/// The cluster state as of an applied index, to be encoded as a snapshot off the core's thread
/// (a copy of the state shares its large tables with the core's, so taking one is cheap).
#[derive(Debug, Clone, PartialEq)]
pub struct Capture {
    index: u64,
    term: u64,
    conf_state: ConfState,
    state: ClusterState,
}

impl Capture {
    /// The applied index the state is as of.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The snapshot: the encoded state and its place in the log.
    pub fn encode(&self) -> Snapshot {
        let mut snapshot = Snapshot {
            data: encode_state(&self.state).into(),
            ..Default::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = self.index;
        meta.term = self.term;
        meta.set_conf_state(self.conf_state.clone());
        snapshot
    }
}

/// Why a message was not stepped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The message is for another group.
    #[error("message for group {theirs:x}, this node is in group {ours:x}")]
    OtherGroup {
        /// This node's group.
        ours: u64,
        /// The message's.
        theirs: u64,
    },
    /// The message names another sender than the one its connection authenticated, or another
    /// receiver than this node.
    #[error("message from {claimed} to {to}, but it came from {from} to {me}")]
    Misaddressed {
        /// The authenticated sender.
        from: ReplicaId,
        /// The sender it names.
        claimed: ReplicaId,
        /// This node.
        me: ReplicaId,
        /// The receiver it names.
        to: ReplicaId,
    },
    /// The sender is not in this node's configuration, and the message is not a leader's.
    #[error("message from {0}, which is not a member of the group")]
    Stranger(ReplicaId),
    /// The sender was removed from the group's configuration.
    #[error("message from {0}, which was removed from the group")]
    Removed(ReplicaId),
    /// A message no correct peer sends (a local message type, a commit past this node's log,
    /// entries that do not follow each other, a snapshot that does not decode).
    #[error("malformed raft message: {0}")]
    Malformed(&'static str),
}

/// This node's own liveness.
#[derive(Debug, Default)]
pub(super) struct Mine {
    /// The epoch this process registered in.
    pub epoch: Option<u64>,
    /// Until when it is entitled (its last applied heartbeat's send time plus the liveness).
    pub until: Option<Instant>,
    /// When it heartbeats or registers next.
    pub next: Option<Instant>,
    /// Send times of its liveness proposals (register and heartbeat) still in flight.
    pub sent: BTreeMap<ProposalId, Instant>,
    /// Leaving: no new registration; retire once it owns nothing.
    pub leaving: bool,
}

/// A node's entitlement: its epoch, in force until `until` on its monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entitlement {
    /// The epoch.
    pub epoch: u64,
    /// When it ends unless a heartbeat extends it.
    pub until: Instant,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupStats {
    /// Messages refused before stepping: undecodable, from a node that is no member, for
    /// another group, misaddressed, or shaped as no correct peer sends them.
    pub refused: u64,
    /// Leader changes seen.
    pub leader_changes: u64,
    /// Proposals that failed or timed out.
    pub failed_proposals: u64,
    /// Snapshots made.
    pub snapshots: u64,
    /// Snapshots received from a leader and installed (this node had fallen behind its log).
    pub installed: u64,
}

/// One node's part in the consensus group. See the module doc.
pub struct GroupCore {
    pub(super) me: Identity,
    pub(super) config: GroupConfig,
    pub(super) group: u64,
    pub(super) raw: RawNode<Log>,
    pub(super) state: ClusterState,
    pub(super) rng: StdRng,
    /// Tags this process's proposals apart from an earlier run's entries.
    boot: u64,
    next_tick: Instant,
    pub(super) outputs: VecDeque<Output>,
    next_proposal: ProposalId,
    pub(super) pending: BTreeMap<ProposalId, (Instant, Command)>,
    /// When this node applied each member's last registration or heartbeat.
    pub(super) heard: BTreeMap<ReplicaId, Instant>,
    /// Gossip's view, and since when.
    pub(super) peers: BTreeMap<ReplicaId, (PeerState, Instant)>,
    pub(super) mine: Mine,
    /// The leader's own proposals in flight, by command, to propose each once.
    pub(super) duties: HashMap<Command, Instant>,
    leader: (u64, u64),
    pub(super) disagrees: Option<Disagreement>,
    pub(super) stats: GroupStats,
    /// The configuration changed since the last snapshot: raft-rs refuses a snapshot whose
    /// configuration does not name the receiver, so a member added later needs a newer one.
    snapshot_due: bool,
    /// Bytes of the entries applied since the last snapshot.
    since_snapshot: u64,
    /// The index of the capture handed out and not yet back.
    capturing: Option<u64>,
    /// Members this node saw removed from the configuration (at most [`REMOVED_KEPT`]): their
    /// messages are refused, as etcd refuses a removed member's.
    removed: BTreeSet<u64>,
}

/// At most this many commands go in one entry of [`GroupCore::propose_many`]...
const BATCH_MAX: usize = 1024;
/// ...and at most this many of their encoded bytes.
const BATCH_BYTES: usize = 256 << 10;

/// How many removed members a node remembers. Forgetting one past this only weakens a defence:
/// raft itself ignores a removed member's stale terms and logs.
const REMOVED_KEPT: usize = 1024;

impl std::fmt::Debug for GroupCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCore")
            .field("me", &self.me.replica)
            .field("term", &self.raw.raft.term)
            .field("role", &self.raw.raft.state)
            .finish_non_exhaustive()
    }
}

/// The raft-rs logger: raft-rs reports through slog; Colony says what matters through tracing.
fn discard() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

impl GroupCore {
    /// A core for a node that founds a new group `group` as its only voter.
    pub fn found(me: Identity, config: GroupConfig, group: u64, now: Instant, seed: u64) -> Self {
        let log = Log::founding(me.replica.0, encode_state(&ClusterState::new()));
        // The founding snapshot goes to disk before anything after it: a log whose entries
        // start past its snapshot reads back empty, under a commit index raft-rs refuses.
        let founding = Persist {
            snapshot: Some(log.snapshot_ref().clone()),
            hard_state: Some(log.hard_state().clone()),
            conf_state: Some(log.conf_state().clone()),
            ..Default::default()
        };
        let mut core = GroupCore::with_log(me, config, group, log, now, seed);
        core.outputs.push_back(Output::Persist(founding));
        // A single voter wins its own election at once.
        let _ = core.raw.campaign();
        core.reseed_election();
        core.drain(now);
        core
    }

    /// A core rebuilt from what the node persisted: `log` (empty for a node that never joined
    /// a group: it waits to be added by the leader) and the `group` it belongs to (0 if none
    /// yet: it adopts the group of the first leader that reaches it).
    pub fn restore(
        me: Identity,
        config: GroupConfig,
        group: u64,
        log: Log,
        now: Instant,
        seed: u64,
    ) -> Self {
        let mut core = GroupCore::with_log(me, config, group, log, now, seed);
        core.drain(now);
        core
    }

    fn with_log(
        me: Identity,
        config: GroupConfig,
        group: u64,
        log: Log,
        now: Instant,
        seed: u64,
    ) -> Self {
        let snapshot = log.snapshot_ref().clone();
        let applied = snapshot.get_metadata().index;
        let state = decode_state(&snapshot).unwrap_or_default();
        let raft_config = raft::Config {
            id: me.replica.0,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            // raft-rs draws its election timeout from a thread-local generator; the core
            // replaces every draw with its own seeded one (see `reseed_election`).
            min_election_tick: config.election_ticks,
            max_election_tick: config.election_ticks * 2,
            applied,
            max_size_per_msg: config.max_append_bytes,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let raw = RawNode::new(&raft_config, log, &discard())
            .expect("a configuration built from GroupConfig is valid");
        let mut rng = StdRng::seed_from_u64(seed);
        let boot = rng.random();
        let mut heard = BTreeMap::new();
        for r in state.liveness.keys() {
            heard.insert(*r, now);
        }
        let mut core = GroupCore {
            me,
            config,
            group,
            raw,
            state,
            rng,
            boot,
            next_tick: now + config.tick,
            outputs: VecDeque::new(),
            next_proposal: 1,
            pending: BTreeMap::new(),
            heard,
            peers: BTreeMap::new(),
            mine: Mine::default(),
            duties: HashMap::new(),
            leader: (0, 0),
            disagrees: None,
            stats: GroupStats::default(),
            snapshot_due: false,
            since_snapshot: 0,
            capturing: None,
            removed: BTreeSet::new(),
        };
        core.reseed_election();
        core
    }

    // ---- getters ----

    /// This node's member id.
    pub fn replica(&self) -> ReplicaId {
        self.me.replica
    }

    /// The group's id (0 while this node has not joined one).
    pub fn group(&self) -> u64 {
        self.group
    }

    /// The cluster state as this node applied it.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<ReplicaId> {
        let id = self.raw.raft.leader_id;
        (id != raft::INVALID_ID).then_some(ReplicaId(id))
    }

    /// Whether this node leads.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The highest index known committed.
    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// The highest index applied.
    pub fn applied_index(&self) -> u64 {
        self.raw.raft.raft_log.applied
    }

    /// The configuration: voters and learners.
    pub fn conf_state(&self) -> &ConfState {
        self.raw.store().conf_state()
    }

    /// The log as persisted (for the shell's first write and for tests).
    pub fn log(&self) -> &Log {
        self.raw.store()
    }

    /// Each member's replicated index, as the leader tracks it (empty on followers).
    pub fn progress(&self) -> BTreeMap<ReplicaId, u64> {
        if !self.is_leader() {
            return BTreeMap::new();
        }
        self.raw
            .raft
            .prs()
            .iter()
            .map(|(id, p)| (ReplicaId(*id), p.matched))
            .collect()
    }

    /// The epoch this process registered in, while it is in force.
    pub fn epoch(&self) -> Option<u64> {
        self.mine
            .epoch
            .filter(|e| self.state.in_force(self.me.replica, *e))
    }

    /// This node's entitlement at `now`, if it has one.
    pub fn entitlement(&self, now: Instant) -> Option<Entitlement> {
        let epoch = self.mine.epoch?;
        let until = self.mine.until?;
        (until > now && self.state.in_force(self.me.replica, epoch))
            .then_some(Entitlement { epoch, until })
    }

    /// Set when this node's settings disagree with the cluster's.
    pub fn disagreement(&self) -> Option<&Disagreement> {
        self.disagrees.as_ref()
    }

    /// Whether this node left: it asked to leave and its epoch ended.
    pub fn has_left(&self) -> bool {
        self.mine.leaving && self.mine.epoch.is_none()
    }

    /// Counters.
    pub fn stats(&self) -> GroupStats {
        self.stats
    }

    /// Counts a message the shell refused before it reached the core: its bytes did not
    /// decode, or the node its connection authenticated is no member.
    pub fn count_refused(&mut self, messages: usize) {
        self.stats.refused += messages as u64;
    }

    // ---- inputs ----

    /// Steps a raft message that came from `from` (the sender its connection authenticated),
    /// for `group`.
    ///
    /// # Errors
    /// [`Refused`]: the message was not stepped and nothing changed (it is counted).
    pub fn handle_message(
        &mut self,
        now: Instant,
        group: u64,
        from: ReplicaId,
        msg: Message,
    ) -> Result<(), Refused> {
        let checked = self.check(group, from, &msg);
        if let Err(e) = checked {
            self.stats.refused += 1;
            return Err(e);
        }
        if self.group == 0 {
            self.group = group;
        }
        let _ = self.raw.step(msg);
        self.reseed_election();
        self.after_input(now);
        Ok(())
    }

    /// Advances time: raft ticks, proposal timeouts, this node's heartbeat, the leader's duties.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut ticks = 0;
        while self.next_tick <= now {
            self.raw.tick();
            self.reseed_election();
            self.next_tick += self.config.tick;
            ticks += 1;
            // A long pause is not a reason to replay every tick it missed.
            if ticks > self.config.election_ticks * 2 {
                self.next_tick = now + self.config.tick;
            }
        }
        self.expire_proposals(now);
        self.own_duties(now);
        if self.is_leader() {
            self.leader_duties(now);
        }
        self.after_input(now);
    }

    /// Gossip's view of the members, by replica id. A member of the configuration that the
    /// view does not list is unreachable from the moment it went missing.
    ///
    /// A node restarted at the same address under a new replica id (its store was unreadable)
    /// replaces its old identity in gossip's view: the old replica vanishes from the view
    /// without ever being listed down, and would stay a voter that never answers.
    pub fn set_peers(
        &mut self,
        now: Instant,
        peers: impl IntoIterator<Item = (ReplicaId, PeerState)>,
    ) {
        let conf = self.conf_state();
        let mut seen: BTreeMap<ReplicaId, PeerState> = conf
            .voters
            .iter()
            .chain(&conf.learners)
            .map(|r| (ReplicaId(*r), PeerState::Unreachable))
            .filter(|(r, _)| *r != self.me.replica)
            .collect();
        seen.extend(peers);
        let mut next = BTreeMap::new();
        for (replica, state) in seen {
            let since = match self.peers.get(&replica) {
                Some((old, since)) if *old == state => *since,
                _ => now,
            };
            next.insert(replica, (state, since));
        }
        self.peers = next;
    }

    /// Proposes `command`. The answer comes as an [`Output::Applied`] carrying the returned
    /// handle, or an [`Output::Failed`].
    pub fn propose(&mut self, now: Instant, command: Command) -> ProposalId {
        let id = self.propose_quiet(now, command);
        self.after_input(now);
        id
    }

    /// Proposes `commands` together, in as few entries as their size allows (each applies as
    /// if proposed alone, with its own outcome); returns their handles in order. A group
    /// applies a bounded number of entries a second, however few commands each carries.
    pub fn propose_many(&mut self, now: Instant, mut commands: Vec<Command>) -> Vec<ProposalId> {
        let mut ids = Vec::with_capacity(commands.len());
        while !commands.is_empty() {
            let rest = commands.split_off(commands.len().min(BATCH_MAX));
            ids.extend(self.propose_entry(now, commands));
            commands = rest;
        }
        self.after_input(now);
        ids
    }

    /// One entry for `commands` (a [`Command::Batch`] when more than one), tagged with the
    /// first of their consecutive handles; halved until each entry holds at most
    /// [`BATCH_BYTES`] or a single command. Encoded once when it fits, as it mostly does.
    fn propose_entry(&mut self, now: Instant, commands: Vec<Command>) -> Vec<ProposalId> {
        let (data, commands) = if commands.len() == 1 {
            (encode_command(&commands[0]), commands)
        } else {
            let batch = Command::Batch(commands);
            let data = encode_command(&batch);
            let Command::Batch(mut commands) = batch else {
                unreachable!("built above")
            };
            if data.len() > BATCH_BYTES {
                let second = commands.split_off(commands.len() / 2);
                let mut ids = self.propose_entry(now, commands);
                ids.extend(self.propose_entry(now, second));
                return ids;
            }
            (data, commands)
        };
        let first = self.next_proposal;
        self.next_proposal += commands.len() as u64;
        let proposed = self.raw.propose(self.tag(first), data).is_ok();
        let ids: Vec<ProposalId> = (first..self.next_proposal).collect();
        for (id, command) in ids.iter().zip(commands) {
            if proposed {
                self.pending.insert(*id, (now, command));
            } else {
                self.stats.failed_proposals += 1;
                self.outputs.push_back(Output::Failed {
                    proposal: *id,
                    command,
                });
            }
        }
        ids
    }

    /// Starts a graceful leave: this node's slots move away with their tables, then its epoch
    /// retires. Leadership moves to another voter first.
    pub fn leave(&mut self, now: Instant) {
        self.mine.leaving = true;
        self.mine.next = Some(now);
        self.own_duties(now);
        self.after_input(now);
    }

    // ---- outputs ----

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call [`GroupCore::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_tick)
    }

    // ---- internals ----

    fn check(&self, group: u64, from: ReplicaId, msg: &Message) -> Result<(), Refused> {
        if self.group != 0 && group != self.group {
            return Err(Refused::OtherGroup {
                ours: self.group,
                theirs: group,
            });
        }
        if msg.from != from.0 || msg.to != self.me.replica.0 {
            return Err(Refused::Misaddressed {
                from,
                claimed: ReplicaId(msg.from),
                me: self.me.replica,
                to: ReplicaId(msg.to),
            });
        }
        if self.removed.contains(&from.0) {
            return Err(Refused::Removed(from));
        }
        let conf = self.conf_state();
        let known = conf.voters.contains(&from.0)
            || conf.learners.contains(&from.0)
            || conf.voters_outgoing.contains(&from.0)
            || conf.learners_next.contains(&from.0);
        // A sender this node's configuration does not list may be a member added after the
        // last change it applied (it lags, or never joined): only that member's leadership
        // brings it up to date, so a leader's messages are stepped. A campaign or an answer
        // from it is refused: this node never asked it anything.
        let leads = matches!(
            msg.get_msg_type(),
            MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot
        );
        if !known && !leads && self.raw.store().is_initialized() {
            return Err(Refused::Stranger(from));
        }
        check_shape(msg, self.raw.raft.raft_log.last_index())
    }

    fn tag(&self, id: ProposalId) -> Vec<u8> {
        let mut tag = Vec::with_capacity(24);
        tag.extend_from_slice(&self.me.replica.0.to_be_bytes());
        tag.extend_from_slice(&self.boot.to_be_bytes());
        tag.extend_from_slice(&id.to_be_bytes());
        tag
    }

    /// The handle of this run's proposal that `context` tags, if it is one.
    fn mine(&self, context: &[u8]) -> Option<ProposalId> {
        let word = |i: usize| {
            context
                .get(i * 8..i * 8 + 8)
                .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
        };
        (word(0)? == self.me.replica.0 && word(1)? == self.boot)
            .then(|| word(2))
            .flatten()
    }

    fn after_input(&mut self, now: Instant) {
        self.drain(now);
    }

    /// Replaces raft-rs's thread-local draw of the election timeout by a draw from the core's
    /// seeded generator, so that a seed replays a run. raft-rs draws only when it resets the
    /// election clock to zero; the core redraws whenever it finds the clock at zero after a
    /// call into raft-rs (also after a leader's heartbeat, which is as good a time to draw).
    fn reseed_election(&mut self) {
        if self.raw.raft.election_elapsed == 0 {
            let base = self.config.election_ticks;
            let t = self.rng.random_range(base..2 * base);
            self.raw.raft.set_randomized_election_timeout(t);
        }
    }

    fn expire_proposals(&mut self, now: Instant) {
        let timeout = self.config.proposal_timeout;
        let expired: Vec<ProposalId> = self
            .pending
            .iter()
            .filter(|(_, (sent, _))| now.saturating_duration_since(*sent) >= timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((_, command)) = self.pending.remove(&id) {
                self.stats.failed_proposals += 1;
                self.outputs.push_back(Output::Failed {
                    proposal: id,
                    command,
                });
            }
        }
        // A liveness proposal older than the liveness period can entitle nothing any more.
        let liveness = self.config.liveness;
        self.mine
            .sent
            .retain(|_, sent| now.saturating_duration_since(*sent) < liveness);
        self.duties
            .retain(|_, sent| now.saturating_duration_since(*sent) < timeout);
    }

    /// Handles every `Ready` raft-rs has, in the order it requires.
    fn drain(&mut self, now: Instant) {
        while self.raw.has_ready() {
            let mut rd = self.raw.ready();
            if let Some(ss) = rd.ss() {
                let leader = (self.raw.raft.term, ss.leader_id);
                if leader != self.leader {
                    self.leader = leader;
                    self.stats.leader_changes += 1;
                    if ss.leader_id == self.me.replica.0 {
                        // Commits stalled during the election, so every member's last heartbeat
                        // looks old: count each as heard now. This only delays revocations
                        // (still safe) and keeps slots off this node alone after a slow
                        // election.
                        for h in self.heard.values_mut() {
                            *h = (*h).max(now);
                        }
                    }
                    self.outputs.push_back(Output::Leader {
                        term: leader.0,
                        leader: (ss.leader_id != raft::INVALID_ID)
                            .then_some(ReplicaId(ss.leader_id)),
                    });
                }
            }
            let mut sent = rd.take_messages();
            let snapshots: Vec<u64> = sent
                .iter()
                .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
                .map(|m| m.to)
                .collect();
            self.outputs.extend(sent.drain(..).map(Output::Send));
            let mut persist = Persist::default();
            if !rd.snapshot().is_empty() {
                let snapshot = rd.snapshot().clone();
                self.stats.installed += 1;
                self.install(&snapshot, now);
                persist.snapshot = Some(snapshot);
            }
            let committed = rd.take_committed_entries();
            self.apply_entries(committed, now, &mut persist);
            persist.entries = rd.take_entries();
            persist.hard_state = rd.hs().cloned();
            self.write(persist);
            for m in rd.take_persisted_messages() {
                self.outputs.push_back(Output::Send(m));
            }
            let mut light = self.raw.advance(rd);
            let mut persist = Persist::default();
            if let Some(commit) = light.commit_index() {
                let mut hs = self.raw.store().hard_state().clone();
                hs.commit = commit;
                persist.hard_state = Some(hs);
            }
            for m in light.take_messages() {
                self.outputs.push_back(Output::Send(m));
            }
            self.apply_entries(light.take_committed_entries(), now, &mut persist);
            self.write(persist);
            self.raw.advance_apply();
            // A snapshot is one message that may be lost like any other: raft-rs waits for its
            // status before it replicates to that member again. Reported as sent, the member
            // is probed, and a lost snapshot is sent again when the probe finds the gap.
            for to in snapshots {
                self.raw.report_snapshot(to, raft::SnapshotStatus::Finish);
            }
            self.compact();
        }
    }

    /// Applies a change to the in-memory log and queues it for the disk.
    fn write(&mut self, persist: Persist) {
        if persist.is_empty() {
            return;
        }
        self.raw.mut_store().apply(&persist);
        self.outputs.push_back(Output::Persist(persist));
    }

    fn install(&mut self, snapshot: &Snapshot, now: Instant) {
        match decode_state(snapshot) {
            Some(state) => {
                self.state = state;
                self.since_snapshot = 0;
                // Heartbeats applied before the snapshot are known only as "some time before now".
                self.heard = self.state.liveness.keys().map(|r| (*r, now)).collect();
            }
            None => tracing::error!("a snapshot that was checked on receipt did not decode"),
        }
        self.adopt_own_registration(now);
    }

    /// Takes up this process's own epoch when its registration reached it without the entry
    /// that carried its proposal (in a snapshot, say): the registration names this process's
    /// incarnation, so it cannot be an earlier run's (whose grants this process never knew).
    fn adopt_own_registration(&mut self, now: Instant) {
        if self.mine.epoch.is_some() || self.mine.leaving || self.me.info.incarnation == 0 {
            return;
        }
        let me = self.me.replica;
        // The epoch's own record of who registered it: a refused registration of this process
        // (an earlier run's epoch still in force) leaves the earlier run's epoch unadopted.
        match self.state.liveness.get(&me) {
            Some(l) if l.incarnation == self.me.info.incarnation && l.phase == Phase::Live => {
                self.mine.epoch = Some(l.epoch);
                // Entitled from the first heartbeat of this process that commits.
                self.mine.next = Some(now);
            }
            _ => {}
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>, now: Instant, persist: &mut Persist) {
        for entry in entries {
            self.since_snapshot += entry.data.len() as u64;
            match entry.get_entry_type() {
                EntryType::EntryNormal => self.apply_normal(&entry, now),
                EntryType::EntryConfChange => {
                    // Colony proposes only the second form; a first-form change is converted.
                    if let Ok(cc) = ConfChange::parse_from_bytes(&entry.data) {
                        let mut single = raft::eraftpb::ConfChangeSingle::default();
                        single.set_change_type(cc.get_change_type());
                        single.node_id = cc.node_id;
                        let mut v2 = ConfChangeV2::default();
                        v2.set_changes(vec![single].into());
                        self.apply_conf(&v2, persist);
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    if let Ok(cc) = ConfChangeV2::parse_from_bytes(&entry.data) {
                        self.apply_conf(&cc, persist);
                    }
                }
            }
        }
    }

    fn apply_conf(&mut self, cc: &ConfChangeV2, persist: &mut Persist) {
        match self.raw.apply_conf_change(cc) {
            Ok(cs) => {
                let members: Vec<u64> = cs.voters.iter().chain(&cs.learners).copied().collect();
                // A member removed while it was away (past the voter grace period) and added
                // again with its old id is heard again.
                self.removed.retain(|r| !members.contains(r));
                for change in cc.get_changes() {
                    if change.get_change_type() == ConfChangeType::RemoveNode
                        && !members.contains(&change.node_id)
                    {
                        if self.removed.len() >= REMOVED_KEPT {
                            self.removed.pop_first();
                        }
                        self.removed.insert(change.node_id);
                    }
                }
                let gone: Vec<ReplicaId> = self
                    .state
                    .liveness
                    .keys()
                    .filter(|r| !members.contains(&r.0))
                    .copied()
                    .collect();
                for r in gone {
                    self.state.forget(r);
                }
                persist.conf_state = Some(cs);
                self.snapshot_due = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "a committed configuration change did not apply")
            }
        }
    }

    fn apply_normal(&mut self, entry: &Entry, now: Instant) {
        // The leader's empty entry at the start of its term.
        if entry.data.is_empty() {
            return;
        }
        let Some(command) = decode_command(&entry.data) else {
            tracing::error!(index = entry.index, "a committed entry does not decode");
            return;
        };
        let first = self.mine(&entry.context);
        let commands = match command {
            Command::Batch(commands) => commands,
            single => vec![single],
        };
        for (position, command) in commands.into_iter().enumerate() {
            let outcome = self.state.apply(&command);
            let proposal = first.map(|id| id + position as u64);
            if let Some(id) = proposal {
                self.pending.remove(&id);
            }
            self.note_liveness(&command, &outcome, proposal, now);
            self.outputs.push_back(Output::Applied(Applied {
                index: entry.index,
                position: position as u32,
                command,
                outcome,
                proposal,
            }));
        }
    }

    /// Keeps `heard` and this node's own entitlement up to date with an applied command.
    fn note_liveness(
        &mut self,
        command: &Command,
        outcome: &Outcome,
        proposal: Option<ProposalId>,
        now: Instant,
    ) {
        match (command, outcome) {
            (Command::Register { replica, .. }, Outcome::Registered { .. })
            | (Command::Heartbeat { replica, .. }, Outcome::Alive { .. }) => {
                self.heard.insert(*replica, now);
            }
            _ => {}
        }
        let me = self.me.replica;
        let sent = proposal.and_then(|id| self.mine.sent.remove(&id));
        match (command, outcome) {
            (Command::Register { replica, .. }, Outcome::Registered { epoch })
                if *replica == me && proposal.is_some() =>
            {
                self.mine.epoch = Some(*epoch);
                self.mine.until = sent.map(|s| s + self.config.liveness);
                self.mine.next = Some(now);
            }
            (Command::Heartbeat { replica, epoch }, Outcome::Alive { .. })
                if *replica == me && Some(*epoch) == self.mine.epoch =>
            {
                if let Some(s) = sent {
                    let until = s + self.config.liveness;
                    self.mine.until = Some(self.mine.until.map_or(until, |u| u.max(until)));
                }
            }
            (_, Outcome::Refused(Refusal::StillLive)) if proposal.is_some() => {
                // An earlier run's epoch is still in force: ask again once it is revoked.
                self.mine.next = Some(now + self.config.beat_every());
            }
            _ => {}
        }
        if let Some(epoch) = self.mine.epoch
            && !self.state.in_force(me, epoch)
        {
            self.mine.epoch = None;
            self.mine.until = None;
        }
        if matches!(command, Command::Register { replica, .. } if *replica == me) {
            self.adopt_own_registration(now);
        }
    }

    /// Asks for a snapshot of the state once enough entries were applied, or the
    /// configuration changed (and none is being made).
    ///
    /// Enough is `compact_every` entries carrying at least as many bytes as the last snapshot:
    /// a snapshot encodes and writes the whole state, so with a large state (ten thousand jobs
    /// and their histories, say) snapshots every `compact_every` entries would cost more than
    /// the entries themselves. So the log kept stays about as large as the state, and the work
    /// of snapshots about as large as the work of the log.
    fn compact(&mut self) {
        let applied = self.raw.raft.raft_log.applied;
        let snapshot = self.raw.store().snapshot_ref();
        let last = snapshot.get_metadata().index;
        let enough = applied >= last + self.config.compact_every
            && self.since_snapshot >= snapshot.data.len() as u64;
        let due = self.snapshot_due || enough;
        if !due || applied <= last || self.capturing.is_some() {
            return;
        }
        let Ok(term) = raft::Storage::term(self.raw.store(), applied) else {
            return;
        };
        self.snapshot_due = false;
        self.since_snapshot = 0;
        self.capturing = Some(applied);
        self.outputs.push_back(Output::Capture(Capture {
            index: applied,
            term,
            conf_state: self.conf_state().clone(),
            state: self.state.clone(),
        }));
    }

    /// Takes back the snapshot of the capture handed out: the log is compacted up to it and
    /// it goes to disk (an [`Output::Persist`]). Dropped if it is not of that capture or a
    /// newer snapshot came from the leader meanwhile. The log keeps its configuration, which
    /// may have changed since the capture: applying the change asked for a fresh snapshot
    /// already (a member added since cannot install this one), made once this one is back.
    pub fn captured(&mut self, snapshot: Snapshot) {
        let index = snapshot.get_metadata().index;
        if self.capturing != Some(index) {
            return;
        }
        self.capturing = None;
        let store = self.raw.store();
        if index > store.snapshot_ref().get_metadata().index {
            let conf_state = Some(store.conf_state().clone());
            self.stats.snapshots += 1;
            self.write(Persist {
                snapshot: Some(snapshot),
                conf_state,
                ..Default::default()
            });
        }
        // What was applied meanwhile may call for the next one already.
        self.compact();
    }

    /// The capture handed out will not come back (writing it failed): the next is asked for
    /// after as many entries again.
    pub fn capture_lost(&mut self) {
        self.capturing = None;
    }

    /// Proposes a command this core decided on itself (its liveness, the leader's duties),
    /// once per proposal timeout.
    pub(super) fn propose_once(&mut self, now: Instant, command: Command) -> Option<ProposalId> {
        if self.duties.contains_key(&command) {
            return None;
        }
        self.duties.insert(command.clone(), now);
        let id = self.propose_quiet(now, command);
        Some(id)
    }

    /// Proposes without draining (callers drain once at the end of their input). A proposal
    /// raft-rs drops at once (no leader known) fails at once.
    pub(super) fn propose_quiet(&mut self, now: Instant, command: Command) -> ProposalId {
        self.propose_entry(now, vec![command])[0]
    }

    /// Proposes a configuration change.
    pub(super) fn propose_conf(&mut self, cc: ConfChangeV2) {
        let id = self.next_proposal;
        self.next_proposal += 1;
        if self.raw.propose_conf_change(self.tag(id), cc).is_err() {
            self.stats.failed_proposals += 1;
        }
    }
}

/// Refuses messages no correct peer sends, before raft-rs sees them (some would panic it).
fn check_shape(msg: &Message, last_index: u64) -> Result<(), Refused> {
    use MessageType::*;
    match msg.get_msg_type() {
        MsgHup | MsgBeat | MsgUnreachable | MsgSnapStatus | MsgCheckQuorum => {
            return Err(Refused::Malformed("a local message type"));
        }
        // raft-rs sends every message with its term but the proposals and read requests it
        // forwards, and steps a message of term 0 as a local one, past its stale-term check.
        MsgPropose | MsgReadIndex => {}
        _ if msg.term == 0 => return Err(Refused::Malformed("a message without a term")),
        MsgHeartbeat if msg.commit > last_index => {
            return Err(Refused::Malformed("a commit index past this node's log"));
        }
        MsgSnapshot if decode_state(msg.get_snapshot()).is_none() => {
            return Err(Refused::Malformed("a snapshot that does not decode"));
        }
        _ => {}
    }
    // Appended entries follow the one they are appended after; a proposal's have no index yet.
    if msg.get_msg_type() == MsgAppend {
        for (expected, e) in (msg.index + 1..).zip(msg.get_entries()) {
            if e.index != expected || e.term > msg.term {
                return Err(Refused::Malformed("entries that do not follow each other"));
            }
        }
    }
    Ok(())
}

/// Encodes a command for the log.
pub fn encode_command(command: &Command) -> Vec<u8> {
    crate::wire::encode_payload(command).expect("commands always encode")
}

/// Decodes a command from the log.
pub fn decode_command(bytes: &[u8]) -> Option<Command> {
    crate::wire::decode_payload(bytes).ok()
}

fn encode_state(state: &ClusterState) -> Vec<u8> {
    crate::wire::encode_payload(state).expect("the cluster state always encodes")
}

/// The cluster state a snapshot carries; `None` for an empty or undecodable one.
fn decode_state(snapshot: &Snapshot) -> Option<ClusterState> {
    if snapshot.get_metadata().index == 0 {
        return None;
    }
    crate::wire::decode_payload(&snapshot.data).ok()
}

/// Encodes a raft message for the wire.
pub fn encode_message(msg: &Message) -> Vec<u8> {
    msg.write_to_bytes().expect("raft messages always encode")
}

/// Decodes a raft message from the wire.
///
/// # Errors
/// The protobuf decoder's complaint; never panics.
pub fn decode_message(bytes: &[u8]) -> Result<Message, protobuf::ProtobufError> {
    Message::parse_from_bytes(bytes)
}
