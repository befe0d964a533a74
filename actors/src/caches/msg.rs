//! Wire payloads of the `caches` service. Named fields: a newer node may add some.

use serde::{Deserialize, Serialize};

/// The service name every node registers.
pub const SERVICE: &str = "caches";

/// When and where a change was made: later stamps win, so nodes agree on the last write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Microseconds since the Unix epoch at the writer, kept increasing per writer.
    pub micros: u64,
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
    /// `(cache name, change)` pairs.
    pub ops: Vec<(String, Op)>,
}

/// `hello`: this node takes part in the caches and wants every change from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {}

/// `flush`: empty every flushable cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flush {}
