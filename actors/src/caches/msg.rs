//! Wire payloads of the `caches` service. Named fields: a newer node may add some.
//!
//! No payload names its sender: the serving side takes the sender from the link that
//! authenticated it (`Request::from`).

use serde::{Deserialize, Serialize};

/// The service name every node registers.
pub const SERVICE: &str = "caches";

/// When and where a change was made, from the writer's hybrid logical clock: later stamps win,
/// and a change made after another was seen has a later stamp, whatever the clocks say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Physical part: wall-clock microseconds since the Unix epoch, as far as the writer's
    /// clock knew, never behind a stamp it had seen.
    pub micros: u64,
    /// Logical part: orders stamps with the same physical part.
    #[serde(default)]
    pub logical: u32,
    /// The writer's node id bytes, to break ties. Sent as one byte string, not sixteen numbers.
    #[serde(with = "serde_bytes")]
    pub node: [u8; 16],
}

/// One change to one cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Drop this key (invalidation mode, and removals in every mode).
    Invalidate {
        /// The encoded key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// When.
        stamp: Stamp,
    },
    /// Store this value (copy mode).
    Put {
        /// The encoded key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The encoded value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// When.
        stamp: Stamp,
    },
    /// Drop every key.
    Clear {
        /// When.
        stamp: Stamp,
    },
}

/// `apply`: changes from one origin, in the order it made them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// A synchronous change's number in its origin's sequence (one sequence per process
    /// start, shared by every peer, so a receiver sees what it missed); `None` for
    /// asynchronous changes.
    #[serde(default)]
    pub seq: Option<u64>,
    /// For asynchronous changes: how many times the origin gave up a queue to this receiver.
    /// A receiver that sees it change clears its replicated caches: it lost changes.
    #[serde(default)]
    pub dropped: u64,
    /// `(cache name, change)` pairs. Decoded without trusting the length prefix for capacity.
    #[serde(deserialize_with = "colony_runtime::wire::codec::seq_as_read")]
    pub ops: Vec<(String, Op)>,
}

/// `sync`: the receiver's lease request. The sender wants every change from now on and asks
/// how far the receiver's sequence has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncRequest {}

/// The answer to [`SyncRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReply {
    /// The last synchronous sequence number the answering node handed out.
    pub mark: u64,
    /// The answering node's clock: the asker's next stamps are later than it.
    pub clock: Stamp,
    /// How many asynchronous queues to the asker the answering node gave up (see
    /// [`Batch::dropped`]).
    pub dropped: u64,
}

/// `flush`: empty every flushable cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flush {}

/// `flush_cache`: empty one cache, if it exists here and is flushable; answered with how many
/// caches were emptied (0 or 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushCache {
    /// The cache's name.
    pub name: String,
}
