//! The group on a running node: the [`GroupCore`] in its actor shell, with its store on disk,
//! its messages on the transport, and what it knows published for the node's primitives.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use super::command::{Command, Outcome, ReplicaId};
use raft::eraftpb::Snapshot;

use super::core::{Capture, Entitlement, GroupCore, GroupStats, Output, PeerState, ProposalId};
use super::disk::Disk;
use super::settings::Disagreement;
use super::state::ClusterState;
use super::transfer::{Assembly, Packed, Piece};
use crate::NodeId;
use crate::membership::{MemberState, View};
use crate::shell::{Caster, Driven, Shell};
use crate::transport::{Request, RequestError, Service, ServiceError, ServiceFuture, Transport};
use crate::wire;

/// The service name of the group's messages.
pub const SERVICE: &str = "consensus";

/// How long a batch of raft messages, or one piece of a large one, may take to reach a peer;
/// raft retries on its own.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// Room in a request for what surrounds the raft messages (the envelope, the batch's fields).
const ENVELOPE_ROOM: usize = 4096;

/// Raft messages from one member to another, as the `consensus` service carries them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaftBatch {
    /// The group they belong to.
    pub group: u64,
    /// The sending member.
    pub from: u64,
    /// Each message, protobuf-encoded.
    #[serde(deserialize_with = "crate::wire::codec::seq_as_read")]
    pub messages: Vec<serde_bytes::ByteBuf>,
}

/// What the group knows, as published after every change.
#[derive(Debug, Clone)]
pub struct GroupStatus {
    /// This node's member id.
    pub replica: ReplicaId,
    /// The group's id (0: not in one yet).
    pub group: u64,
    /// The current term.
    pub term: u64,
    /// The leader, if known.
    pub leader: Option<ReplicaId>,
    /// Voters.
    pub voters: Vec<ReplicaId>,
    /// Learners.
    pub learners: Vec<ReplicaId>,
    /// Voters of the outgoing configuration while a joint change is under way.
    pub outgoing: Vec<ReplicaId>,
    /// Highest index known committed.
    pub commit: u64,
    /// Highest index applied here.
    pub applied: u64,
    /// Each member's replicated index (known on the leader only).
    pub progress: BTreeMap<ReplicaId, u64>,
    /// The cluster state as applied here.
    pub state: Arc<ClusterState>,
    /// This node's epoch, while in force.
    pub epoch: Option<u64>,
    /// This node's entitlement (its end moves with every heartbeat applied).
    pub entitlement: Option<Entitlement>,
    /// Set when this node's settings disagree with the cluster's.
    pub disagreement: Option<Disagreement>,
    /// This node left the group on purpose.
    pub left: bool,
    /// Counters.
    pub stats: GroupStats,
    /// The store failed: the group stopped on this node.
    pub failed: Option<String>,
}

/// Why a proposal did not give an outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// It was not applied in time: no leader, no quorum, or a slow group. It may still apply
    /// later; every command is safe to propose again.
    #[error("the consensus group did not apply the proposal in time (no leader or no quorum?)")]
    Timeout,
    /// The group has stopped on this node.
    #[error("the consensus group has stopped on this node")]
    Stopped,
}

/// Inputs of the group's driver.
pub enum GroupInput {
    /// Raft messages that came from `from` (the node its connection authenticated).
    Batch {
        /// The sending node.
        from: NodeId,
        /// The messages.
        batch: RaftBatch,
    },
    /// A piece of a raft message too large for one request, from `from`.
    Piece {
        /// The sending node.
        from: NodeId,
        /// The piece.
        piece: Piece,
    },
    /// A command to propose; the outcome goes to `reply`.
    Propose(Command, oneshot::Sender<Result<Outcome, ProposeError>>),
    /// Leave the group gracefully.
    Leave,
    /// A snapshot asked for by an [`Output::Capture`], encoded and written to its file (or why
    /// it could not be).
    Captured(Result<Snapshot, String>),
}

/// The group's driver: the core and its IO.
pub struct GroupDriver {
    core: GroupCore,
    /// The store; closed (`None`) once the group stops, so that a node started again in the
    /// same process opens it while the stopped node's handles linger.
    disk: Option<Disk>,
    transport: Transport,
    /// Members' current node ids, from the membership view.
    nodes: HashMap<ReplicaId, NodeId>,
    replicas: HashMap<NodeId, ReplicaId>,
    waiting: HashMap<ProposalId, oneshot::Sender<Result<Outcome, ProposeError>>>,
    status: watch::Sender<Arc<GroupStatus>>,
    saved_group: u64,
    failed: Option<String>,
    /// Proposals of the current burst of inputs, proposed together when it is flushed.
    proposing: Vec<(Command, oneshot::Sender<Result<Outcome, ProposeError>>)>,
    /// Messages from other members arriving in pieces.
    assembly: Assembly,
    /// Members a message in pieces is on its way to (one at a time each).
    sending_pieces: Arc<std::sync::Mutex<BTreeSet<ReplicaId>>>,
    /// The number of the next message sent in pieces.
    next_message: u64,
    /// This driver's own shell, to hand it back snapshots made on another thread (set once the
    /// shell runs; until then they are made in place).
    pub(crate) shell: Option<Caster<GroupInput>>,
}

impl GroupDriver {
    /// A driver around `core`, persisting to `disk` and sending over `transport`.
    pub(crate) fn new(
        core: GroupCore,
        disk: Disk,
        transport: Transport,
    ) -> (GroupDriver, watch::Receiver<Arc<GroupStatus>>) {
        let saved_group = core.group();
        let (status, rx) = watch::channel(Arc::new(GroupStatus::of(&core, Instant::now(), None)));
        let driver = GroupDriver {
            core,
            disk: Some(disk),
            transport,
            nodes: HashMap::new(),
            replicas: HashMap::new(),
            waiting: HashMap::new(),
            status,
            saved_group,
            failed: None,
            proposing: Vec::new(),
            assembly: Assembly::default(),
            sending_pieces: Arc::default(),
            next_message: 0,
            shell: None,
        };
        (driver, rx)
    }

    /// Sends each member its messages: whole in batches of at most a request's size, and one
    /// larger than that (a snapshot of a large state) in pieces, one piece per request.
    fn send(&mut self, batches: Batches) {
        let group = self.core.group();
        let from = self.core.replica().0;
        let limit = self.transport.max_message_bytes();
        let budget = limit.saturating_sub(ENVELOPE_ROOM).max(limit / 2);
        for (to, messages) in batches {
            let Some(node) = self.nodes.get(&to).copied() else {
                continue;
            };
            for packed in
                super::transfer::pack(group, from, &mut self.next_message, messages, budget)
            {
                match packed {
                    Packed::Batch(messages) => {
                        let batch = RaftBatch {
                            group,
                            from,
                            messages,
                        };
                        if let Ok(payload) = wire::encode_payload(&batch) {
                            self.request(node, to, "raft", payload);
                        }
                    }
                    Packed::Pieces(pieces) => self.send_pieces(node, to, pieces),
                }
            }
        }
    }

    fn request(&self, node: NodeId, to: ReplicaId, kind: &'static str, payload: Vec<u8>) {
        let transport = self.transport.clone();
        tokio::spawn(async move {
            let sent = transport
                .request(node, SERVICE, kind, payload, SEND_TIMEOUT)
                .await;
            if let Err(e) = sent
                && !matches!(e, RequestError::Timeout { .. })
            {
                tracing::trace!(%to, error = %e, "raft messages not delivered");
            }
        });
    }

    /// Sends `pieces` one after the other, each once the last was taken; a member already
    /// receiving a message in pieces does not get another (raft sends it again once it asks).
    fn send_pieces(&self, node: NodeId, to: ReplicaId, pieces: Vec<Piece>) {
        let sending = self.sending_pieces.clone();
        if !sending.lock().unwrap_or_else(|e| e.into_inner()).insert(to) {
            return;
        }
        let transport = self.transport.clone();
        tokio::spawn(async move {
            let total = pieces.first().map_or(0, |p| p.total);
            for piece in pieces {
                let sent = match wire::encode_payload(&piece) {
                    Ok(payload) => {
                        transport
                            .request(node, SERVICE, "piece", payload, SEND_TIMEOUT)
                            .await
                    }
                    Err(e) => {
                        tracing::warn!(%to, error = %e, "a piece of a raft message did not encode");
                        break;
                    }
                };
                if let Err(e) = sent {
                    tracing::debug!(%to, total, error = %e, "a raft message sent in pieces was cut short");
                    break;
                }
            }
            sending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&to);
        });
    }

    /// Encodes and writes a snapshot on a blocking thread: for a large state that takes long
    /// enough (tens to hundreds of milliseconds) to stall raft's heartbeats and elections if
    /// done on the actor.
    fn capture(&mut self, capture: Capture) {
        let Some(files) = self.disk.as_ref().map(Disk::snapshot_files) else {
            return self.core.capture_lost();
        };
        let make = move || {
            let snapshot = capture.encode();
            files
                .write(&snapshot)
                .map(|()| snapshot)
                .map_err(|e| e.to_string())
        };
        match self.shell.clone() {
            Some(shell) => {
                tokio::task::spawn_blocking(move || {
                    let _ = shell.cast(GroupInput::Captured(make()));
                });
            }
            None => self.captured(make()),
        }
    }

    fn captured(&mut self, made: Result<Snapshot, String>) {
        match made {
            Ok(snapshot) => self.core.captured(snapshot),
            Err(reason) => {
                tracing::error!(%reason, "a snapshot could not be written: the log is compacted later");
                self.core.capture_lost();
            }
        }
    }

    fn fail(&mut self, reason: String) {
        tracing::error!(%reason, "the consensus store failed: this node stops taking part in the group");
        self.failed = Some(reason);
        for (_, reply) in self.waiting.drain() {
            let _ = reply.send(Err(ProposeError::Stopped));
        }
    }
}

impl GroupDriver {
    /// Steps one encoded raft message from `replica`.
    fn step(&mut self, now: Instant, group: u64, replica: ReplicaId, bytes: &[u8]) {
        match super::core::decode_message(bytes) {
            Ok(msg) => {
                if let Err(e) = self.core.handle_message(now, group, replica, msg) {
                    tracing::debug!(%replica, error = %e, "raft message refused");
                }
            }
            Err(_) => self.core.count_refused(1),
        }
    }
}

impl Driven for GroupDriver {
    type Input = GroupInput;

    fn input(&mut self, now: Instant, input: GroupInput) {
        if self.failed.is_some() {
            if let GroupInput::Propose(_, reply) = input {
                let _ = reply.send(Err(ProposeError::Stopped));
            }
            return;
        }
        match input {
            GroupInput::Batch { from, batch } => {
                // The member the connection authenticated, not the one the batch names.
                let Some(replica) = self.replicas.get(&from).copied() else {
                    self.core.count_refused(batch.messages.len().max(1));
                    return;
                };
                for bytes in batch.messages {
                    self.step(now, batch.group, replica, &bytes);
                }
            }
            GroupInput::Piece { from, piece } => {
                let Some(replica) = self.replicas.get(&from).copied() else {
                    self.core.count_refused(1);
                    return;
                };
                let group = piece.group;
                match self.assembly.accept(replica, piece) {
                    Ok(Some(bytes)) => self.step(now, group, replica, &bytes),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(%replica, error = %e, "a piece of a raft message refused");
                        self.core.count_refused(1);
                    }
                }
            }
            // Proposed at the flush, together with the rest of the burst.
            GroupInput::Propose(command, reply) => self.proposing.push((command, reply)),
            GroupInput::Leave => self.core.leave(now),
            GroupInput::Captured(made) => self.captured(made),
        }
    }

    fn view(&mut self, now: Instant, view: &Arc<View>) {
        self.nodes.clear();
        self.replicas.clear();
        let mut peers = Vec::new();
        for m in view.members.iter().filter(|m| m.replica != 0) {
            let replica = ReplicaId(m.replica);
            if replica == self.core.replica() {
                continue;
            }
            let seen = match m.state {
                MemberState::Left => PeerState::Left,
                MemberState::Down => PeerState::Unreachable,
                _ => PeerState::Up,
            };
            peers.push((replica, seen));
            if !m.state.is_gone() {
                self.nodes.insert(replica, m.id);
                self.replicas.insert(m.id, replica);
            }
        }
        self.core.set_peers(now, peers);
        // What a member gone from the view was sending in pieces goes with it.
        let nodes = &self.nodes;
        self.assembly.retain(|r| nodes.contains_key(&r));
    }

    fn timeout(&mut self, now: Instant) {
        if self.failed.is_none() {
            self.core.handle_timeout(now);
        }
    }

    fn flush(&mut self, now: Instant) {
        if !self.proposing.is_empty() {
            let (commands, replies): (Vec<Command>, Vec<_>) = self.proposing.drain(..).unzip();
            let ids = self.core.propose_many(now, commands);
            self.waiting.extend(ids.into_iter().zip(replies));
        }
        // Messages queued before the first change to persist go at once; later ones only once
        // every change of this flush is on disk, written in one transaction (one fsync for a
        // burst of raft messages).
        let mut now_batches = Batches::new();
        let mut held = Batches::new();
        let mut changes = Vec::new();
        while let Some(output) = self.core.poll_output() {
            if self.failed.is_some() {
                continue;
            }
            match output {
                Output::Send(msg) => {
                    let batches = if changes.is_empty() {
                        &mut now_batches
                    } else {
                        &mut held
                    };
                    batches
                        .entry(ReplicaId(msg.to))
                        .or_default()
                        .push(super::core::encode_message(&msg));
                }
                Output::Persist(change) => changes.push(change),
                Output::Applied(applied) => {
                    if let Some(reply) = applied.proposal.and_then(|id| self.waiting.remove(&id)) {
                        let _ = reply.send(Ok(applied.outcome));
                    }
                }
                Output::Failed { proposal, .. } => {
                    if let Some(reply) = self.waiting.remove(&proposal) {
                        let _ = reply.send(Err(ProposeError::Timeout));
                    }
                }
                Output::Leader { term, leader } => {
                    tracing::info!(term, leader = ?leader, "consensus leader");
                }
                Output::Disagrees(d) => {
                    tracing::error!(error = %d, "this node's settings disagree with the cluster's");
                }
                Output::Capture(capture) => self.capture(capture),
            }
        }
        self.send(now_batches);
        if !changes.is_empty() && self.failed.is_none() {
            let written = self.disk.as_ref().map(|d| d.write(&changes));
            match written {
                Some(Ok(())) => self.send(held),
                Some(Err(e)) => self.fail(e.to_string()),
                None => {}
            }
        }
        if self.core.group() != self.saved_group && self.failed.is_none() {
            self.saved_group = self.core.group();
            if let Some(Err(e)) = self.disk.as_ref().map(|d| d.set_group(self.saved_group)) {
                self.fail(e.to_string());
            }
        }
        // Flush runs after every raft message: build (and clone the state into) a new status
        // only when something it reports moved. A configuration change is an applied entry.
        let next = GroupStatus::after(Some(&**self.status.borrow()), &self.core, now, &self.failed);
        if let Some(status) = next {
            self.status.send_replace(Arc::new(status));
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Closes the store: the group takes no further part.
    fn stop(&mut self) {
        self.failed.get_or_insert_with(|| "the node stopped".into());
        self.disk = None;
        for (_, reply) in self.waiting.drain() {
            let _ = reply.send(Err(ProposeError::Stopped));
        }
    }
}

impl GroupStatus {
    /// What `core` knows at `now`, as published to the node's primitives (the seeded
    /// simulator feeds its services the same).
    pub fn of(core: &GroupCore, now: Instant, failed: Option<String>) -> Self {
        Self::with_state(core, now, failed, Arc::new(core.state().clone()))
    }

    /// What to publish after `previous`, or `None` while it still reports what `core` knows
    /// at `now`. A new status shares `previous`'s copy of the state when no entry was applied
    /// since: the entitlement and counters move on their own, and copying the whole state
    /// for them would cost time in proportion to the state on every change.
    pub fn after(
        previous: Option<&GroupStatus>,
        core: &GroupCore,
        now: Instant,
        failed: &Option<String>,
    ) -> Option<Self> {
        let state = match previous {
            Some(p) if p.is_current(core, now, failed) => return None,
            Some(p) if p.applied == core.applied_index() => p.state.clone(),
            _ => Arc::new(core.state().clone()),
        };
        Some(Self::with_state(core, now, failed.clone(), state))
    }

    fn with_state(
        core: &GroupCore,
        now: Instant,
        failed: Option<String>,
        state: Arc<ClusterState>,
    ) -> Self {
        let conf = core.conf_state();
        GroupStatus {
            replica: core.replica(),
            group: core.group(),
            term: core.term(),
            leader: core.leader(),
            voters: conf.voters.iter().map(|r| ReplicaId(*r)).collect(),
            learners: conf.learners.iter().map(|r| ReplicaId(*r)).collect(),
            outgoing: conf.voters_outgoing.iter().map(|r| ReplicaId(*r)).collect(),
            commit: core.commit_index(),
            applied: core.applied_index(),
            progress: core.progress(),
            state,
            epoch: core.epoch(),
            entitlement: core.entitlement(now),
            disagreement: core.disagreement().cloned(),
            left: core.has_left(),
            stats: core.stats(),
            failed,
        }
    }

    /// Whether this status still reports what `core` knows at `now`: nothing it shows has
    /// moved (a configuration change is an applied entry).
    pub fn is_current(&self, core: &GroupCore, now: Instant, failed: &Option<String>) -> bool {
        self.applied == core.applied_index()
            && self.term == core.term()
            && self.leader == core.leader()
            && self.entitlement == core.entitlement(now)
            && self.failed == *failed
            && self.stats == core.stats()
    }
}

/// The consensus group on this node. Cheap to clone.
#[derive(Clone)]
pub struct Group {
    shell: Shell<GroupDriver>,
    status: watch::Receiver<Arc<GroupStatus>>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("replica", &self.status.borrow().replica)
            .finish()
    }
}

impl Group {
    pub(crate) fn new(
        shell: Shell<GroupDriver>,
        status: watch::Receiver<Arc<GroupStatus>>,
    ) -> Self {
        Group { shell, status }
    }

    /// What the group knows now.
    pub fn status(&self) -> Arc<GroupStatus> {
        self.status.borrow().clone()
    }

    /// Wakes on every change of [`Group::status`].
    pub fn watch(&self) -> watch::Receiver<Arc<GroupStatus>> {
        self.status.clone()
    }

    /// Proposes `command` and waits for its outcome, at most `timeout`.
    ///
    /// # Errors
    /// [`ProposeError`]; on a timeout the command may still apply later.
    pub async fn propose(
        &self,
        command: Command,
        timeout: Duration,
    ) -> Result<Outcome, ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.shell
            .cast(GroupInput::Propose(command, tx))
            .map_err(|_| ProposeError::Stopped)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(ProposeError::Stopped),
            Err(_) => Err(ProposeError::Timeout),
        }
    }

    /// Leaves gracefully: this node's slots move away with their tables and its epoch retires.
    /// Waits until it has, at most `timeout`; returns whether it did.
    pub async fn leave(&self, timeout: Duration) -> bool {
        if self.shell.cast(GroupInput::Leave).is_err() {
            return false;
        }
        let mut status = self.status.clone();
        let done = async {
            loop {
                let s = status.borrow_and_update().clone();
                // Done once the epoch ended and leadership moved on (stopping as leader stalls
                // commits, and so every node's entitlement, for an election).
                if (s.left || s.epoch.is_none()) && s.leader != Some(s.replica) {
                    return true;
                }
                // With nobody to take them, this node's slots move once its epoch is revoked.
                if s.state.placement_targets().all(|r| r == s.replica) {
                    return false;
                }
                if status.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(timeout, done).await.unwrap_or(false)
    }

    /// Stops the group on this node, and closes its store.
    pub fn stop(&self) {
        self.shell.stop();
    }
}

/// Encoded raft messages by recipient.
type Batches = BTreeMap<ReplicaId, Vec<Vec<u8>>>;

/// The `consensus` service: raft messages from other members, handed to the group's actor.
pub(crate) struct GroupService(pub Shell<GroupDriver>);

impl GroupService {
    /// Decodes `request`'s payload as a `T` and hands the group's actor what `input` makes of it.
    fn cast<T: serde::de::DeserializeOwned>(
        &self,
        request: &Request,
        input: impl FnOnce(NodeId, T) -> GroupInput,
    ) -> Result<Vec<u8>, ServiceError> {
        let payload =
            wire::decode_payload::<T>(&request.payload).map_err(ServiceError::BadPayload)?;
        self.0
            .cast(input(request.from, payload))
            .map(|()| Vec::new())
            .map_err(|e| ServiceError::Failed(e.to_string()))
    }
}

impl Service for GroupService {
    fn call(&self, request: Request) -> ServiceFuture {
        let result = match request.kind.as_str() {
            "raft" => self.cast(&request, |from, batch| GroupInput::Batch { from, batch }),
            "piece" => self.cast(&request, |from, piece| GroupInput::Piece { from, piece }),
            other => Err(ServiceError::UnknownKind(other.to_owned())),
        };
        Box::pin(std::future::ready(result))
    }
}
