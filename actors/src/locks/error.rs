//! Errors of the lock operations.

use std::time::Duration;

/// Why a lock name or namespace was refused. Nothing was acquired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Names must have at least one byte.
    #[error("lock names must not be empty")]
    Empty,
    /// Names are at most 255 bytes.
    #[error(
        "lock name of {len} bytes exceeds the limit of 255 bytes; use a shorter name or a hash"
    )]
    TooLong {
        /// The name's length in bytes.
        len: usize,
    },
    /// The namespace belongs to Colony itself.
    #[error(
        "namespace `{0}` is reserved for Colony (names starting with `colony.`); choose another"
    )]
    Reserved(String),
}

/// Why a lock could not be acquired. Nothing is held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// No node may grant this name now: its slot is moving, or the consensus group has no
    /// quorum to entitle an owner. Retry once the cluster is whole again.
    #[error(
        "lock `{name}` cannot be granted now: no node is entitled to it (the consensus group may lack a quorum)"
    )]
    Unavailable {
        /// The lock name.
        name: String,
    },
    /// The lock service is not running on this node: build it with `colony::node()` (or install
    /// the primitives with `colony_actors::install`).
    #[error("the lock service is not installed on this node (start it with colony::node())")]
    NotInstalled,
    /// The owner of the name could not be reached in time. Retry.
    #[error("the owner of lock `{name}` did not answer within {after:?}")]
    Unreachable {
        /// The lock name.
        name: String,
        /// How long the caller waited.
        after: Duration,
    },
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The node is locked for maintenance (its shared home moved and an update failed; see
    /// `Node::maintenance`). Nothing was acquired.
    #[error("this node is locked for maintenance: {message}")]
    Maintenance {
        /// The reason, safe to show anyone.
        message: String,
    },
}

/// Why an unlock did not release a held lock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnlockError {
    /// The lease had already been lost (see `LockGuard::lost`): someone else may hold the lock
    /// now, and whatever was done after the loss was not protected.
    #[error("the lock `{name}` was lost before unlock; work done after the loss was not protected")]
    Lost {
        /// The lock name.
        name: String,
    },
    /// The owner could not be reached; the lease will end on its own within one lease.
    #[error("the owner of lock `{name}` could not be reached; the lease ends by itself")]
    Unreachable {
        /// The lock name.
        name: String,
    },
}
