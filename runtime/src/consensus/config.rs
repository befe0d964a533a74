//! Timing of the consensus group.

use std::time::Duration;

/// The default of [`GroupConfig::voter_grace`] (and of the node setting `voter_grace_ms`).
pub const DEFAULT_VOTER_GRACE: Duration = Duration::from_secs(30);

/// How the group keeps time and how large it grows. Every duration is measured on the node's
/// monotonic clock; none is compared across nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// One raft tick.
    pub tick: Duration,
    /// Ticks without a leader before a follower campaigns (randomised up to twice this).
    pub election_ticks: usize,
    /// Ticks between the leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// How long a node stays entitled after the heartbeat it sent last was committed: the lock
    /// lease. A grant never outlives its granter's entitlement.
    pub liveness: Duration,
    /// Largest rate at which two nodes' monotonic clocks may drift apart, in parts per
    /// thousand. A node's epoch is revoked only after `liveness` plus this share of it (and two
    /// ticks) has passed on the revoker's clock since the node's last heartbeat was applied.
    pub drift_permille: u32,
    /// How long a proposal of this node may go without being applied before it is reported
    /// as failed (it may still apply later; every command is safe to repeat).
    pub proposal_timeout: Duration,
    /// Most voters; the other members follow as learners.
    pub max_voters: usize,
    /// How long a voter may be unreachable (down or gone in gossip) before it is replaced.
    pub voter_grace: Duration,
    /// Applied entries between two snapshots (after which the log is compacted).
    pub compact_every: u64,
    /// Largest append message, in bytes.
    pub max_append_bytes: u64,
}

impl GroupConfig {
    /// The defaults for a lock lease of `liveness`.
    pub fn with_liveness(liveness: Duration) -> Self {
        GroupConfig {
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            liveness,
            drift_permille: 20,
            proposal_timeout: Duration::from_secs(2),
            max_voters: 5,
            voter_grace: DEFAULT_VOTER_GRACE,
            compact_every: 1024,
            max_append_bytes: 1 << 20,
        }
    }

    /// How often a node heartbeats: four times per liveness period, so that its entitlement
    /// keeps three quarters of a period ahead.
    pub fn beat_every(&self) -> Duration {
        self.liveness / 4
    }

    /// How long after a node's last applied heartbeat its epoch may be revoked: the liveness
    /// period stretched by the drift allowance, plus two ticks.
    pub fn revoke_after(&self) -> Duration {
        self.liveness + self.liveness * self.drift_permille / 1000 + self.tick * 2
    }
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig::with_liveness(Duration::from_secs(5))
    }
}
