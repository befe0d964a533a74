//! The commands the group commits, and what applying one gives back: the typed protocol of the
//! cluster state. Named fields throughout, so that a newer node can add some.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::exec::{ExecCommand, ExecOutcome};
use super::jobs::{JobCommand, JobOutcome};
use super::settings::ClusterSettings;

/// A member of the consensus group, stable across restarts of its process: drawn when the node
/// first creates its consensus store, and kept with it. A node whose store is lost comes back
/// with a new one, as a new member.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct ReplicaId(pub u64);

impl std::fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "r{:x}", self.0)
    }
}

/// What kind of key a slot partitions. Each domain has [`SLOTS`] slots, each owned by one node
/// at a time under an epoch the group committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Domain {
    /// Cluster lock names.
    Locks,
    /// Scheduler job ids: a slot's owner proposes its jobs' fires.
    Jobs,
    /// Bucketed executors' buckets: a slot's owner runs their batches. Its queues are in the
    /// log; a hand-over only says the old owner's batches ended.
    Executor,
}

impl Domain {
    /// Every domain, in a fixed order.
    pub const ALL: [Domain; 3] = [Domain::Locks, Domain::Jobs, Domain::Executor];

    /// The domain's name in keys and reports.
    pub fn name(self) -> &'static str {
        match self {
            Domain::Locks => "locks",
            Domain::Jobs => "jobs",
            Domain::Executor => "executor",
        }
    }

    /// Whether a slot's owner keeps a table outside the log that must reach the next owner
    /// before it serves (lock holds do; an executor slot's hand-over, empty, says the old
    /// owner's batches ended). A jobs slot's owner keeps none: every job, fire and
    /// run is in the cluster state, and every job command is checked against it when applied,
    /// so a new owner serves at once and an old one still proposing changes nothing twice.
    ///
    /// # Examples
    /// ```
    /// use colony_runtime::consensus::Domain;
    /// assert!(Domain::Locks.hands_over());
    /// assert!(!Domain::Jobs.hands_over());
    /// assert!(Domain::Executor.hands_over());
    /// ```
    pub fn hands_over(self) -> bool {
        match self {
            Domain::Locks | Domain::Executor => true,
            Domain::Jobs => false,
        }
    }
}

/// Slots per domain. A key's slot is a hash of the key; placement moves slots, not keys.
pub const SLOTS: u16 = 64;

/// Fencing tokens a slot draws per block: a new owner draws a block above every block drawn
/// before, so tokens never go back. 2^20 per block leaves 2^33 blocks below 2^53, the largest
/// integer JSON readers hold exactly.
pub const TOKEN_BLOCK: u64 = 1 << 20;

/// The highest token ever handed out (2^53 − 1): JSON and JavaScript readers hold it exactly.
pub const MAX_TOKEN: u64 = (1 << 53) - 1;

/// Who a member is, for operators and for finding it: its name and address as last registered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The node's configured name.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The registering process's start (its membership incarnation): a process that finds its
    /// own registration only in a snapshot knows the epoch is its own, not an earlier run's.
    #[serde(default)]
    pub incarnation: u64,
}

/// A change to the cluster state. Every node applies the same commands in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Command {
    /// Records the cluster's settings; the first command of a new group. Ignored afterwards.
    Found {
        /// The settings every node must agree with.
        settings: ClusterSettings,
    },
    /// A node (re)enters the cluster: starts a new liveness epoch, unless its last one may still
    /// be in force (then it must wait for that one to be revoked).
    Register {
        /// The node.
        replica: ReplicaId,
        /// Its name and address.
        info: MemberInfo,
    },
    /// A node says it is alive in `epoch`; each heartbeat applied extends its entitlement.
    Heartbeat {
        /// The node.
        replica: ReplicaId,
        /// The epoch it believes it is in.
        epoch: u64,
    },
    /// Ends a node's epoch that has not been renewed for longer than the liveness period: its
    /// slots may then be served elsewhere. `seq` is the heartbeat count the proposer judged
    /// expired; a heartbeat applied since then voids the revocation.
    Revoke {
        /// The node.
        replica: ReplicaId,
        /// The epoch to end.
        epoch: u64,
        /// Its heartbeat count when judged expired.
        seq: u64,
    },
    /// A node is leaving: it stays entitled while its slots move away, and gets no new ones.
    Leave {
        /// The node.
        replica: ReplicaId,
        /// Its epoch.
        epoch: u64,
    },
    /// A node that owns nothing ends its own epoch (the last step of a graceful leave).
    Retire {
        /// The node.
        replica: ReplicaId,
        /// Its epoch.
        epoch: u64,
    },
    /// Gives a slot to a node, with a fresh block of tokens. Applies only at the slot's current
    /// `generation`, so a repeated or outdated proposal changes nothing.
    Assign {
        /// The domain.
        domain: Domain,
        /// The slot.
        slot: u16,
        /// The generation the proposer saw.
        generation: u64,
        /// The new owner.
        to: ReplicaId,
    },
    /// The new owner of a slot received the previous owner's table: the hand-over is complete.
    Accept {
        /// The domain.
        domain: Domain,
        /// The slot.
        slot: u16,
        /// The generation handed over.
        generation: u64,
    },
    /// The owner of a slot draws another block of tokens.
    Extend {
        /// The domain.
        domain: Domain,
        /// The slot.
        slot: u16,
        /// The owner's generation.
        generation: u64,
    },
    /// A change to the scheduler's jobs.
    Jobs(JobCommand),
    /// A change to the bucketed executors' queues.
    Exec(ExecCommand),
    /// Enables or disables a component on every node, by name.
    Component {
        /// The component's name (1 to 255 bytes).
        name: String,
        /// Whether it runs.
        enabled: bool,
    },
    /// Commands one node proposed together, applied one after the other as if each had its own
    /// entry (one raft entry carries them: the group applies entries, not commands, per step).
    /// A batch inside a batch is refused.
    Batch(Vec<Command>),
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The command took effect.
    Done,
    /// The node is registered in this epoch.
    Registered {
        /// The new epoch.
        epoch: u64,
    },
    /// The heartbeat was counted.
    Alive {
        /// The heartbeat count in the epoch.
        seq: u64,
    },
    /// A slot was given, or extended, with this block of tokens `[start, end)`.
    Block {
        /// The slot's generation.
        generation: u64,
        /// The first token of the block.
        start: u64,
        /// One past the last token.
        end: u64,
    },
    /// What a job command did.
    Job(JobOutcome),
    /// What an executor command did.
    Exec(ExecOutcome),
    /// The command changed nothing.
    Refused(Refusal),
}

/// Why a command changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The node's epoch is not the one named (it ended, or a newer one began).
    #[error("the node's liveness epoch has ended")]
    EpochEnded,
    /// The node's previous epoch may still be in force; register again once it is revoked.
    #[error("the node's previous liveness epoch is still in force")]
    StillLive,
    /// The slot moved on since the proposer looked.
    #[error("the slot changed since the proposal was made")]
    Stale,
    /// The node still owns or hands over slots.
    #[error("the node still owns slots")]
    Busy,
    /// The named node is not registered, or not eligible.
    #[error("the node is not a live member")]
    NotLive,
    /// A slot or domain that does not exist.
    #[error("no such slot")]
    NoSuchSlot,
    /// Every token below 2^53 has been handed out.
    #[error("fencing tokens exhausted")]
    Exhausted,
    /// A name that is empty or longer than 255 bytes.
    #[error("the name is empty or longer than 255 bytes")]
    BadName,
    /// The state already holds as many entries of that kind as it may.
    #[error("too many entries of this kind in the cluster state")]
    TooMany,
    /// A batch inside a batch: no node proposes one.
    #[error("a batch of commands inside another")]
    Nested,
}
