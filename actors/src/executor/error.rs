//! Errors of the executor API.

use colony_runtime::consensus::exec::ExecRefusal;

/// Why an executor could not be opened or a task was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutorError {
    /// An executor of that name is open on this node with another task type.
    #[error("executor `{name}` is open with task type {existing}; use another name")]
    TypeMismatch {
        /// The executor's name.
        name: String,
        /// The task type it was opened with.
        existing: String,
    },
    /// Executor names and bucket ids are 1 to 256 bytes.
    #[error("executor names and bucket ids must be 1 to 256 bytes long")]
    BadName,
    /// The task cannot be serialized (tasks go through the consensus log even on one node).
    #[error("the task cannot be serialized: {reason}")]
    Serialize {
        /// The serializer's error.
        reason: String,
    },
    /// The encoded task is larger than the limit.
    #[error("the task has {bytes} bytes encoded, above the limit of {limit}")]
    TooLarge {
        /// Its encoded size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The executor holds as many tasks as it may: nothing was accepted; try later.
    #[error("the executor is busy ({queued} tasks queued): try later")]
    Busy {
        /// Tasks held.
        queued: u64,
    },
    /// The group refused the submit; nothing was accepted.
    #[error("the submit was refused: {0}")]
    Refused(ExecRefusal),
    /// This node's epoch ended while its submit was retried: it may or may not be queued.
    #[error("this node left the group while submitting: the task may or may not be queued")]
    Unknown,
    /// The executor was shut down on this node.
    #[error("executor `{0}` was shut down on this node")]
    ShutDown(String),
    /// The executor service is not installed or its node is stopping.
    #[error("the executor service is not running on this node (start it with colony::node())")]
    NotRunning,
}
