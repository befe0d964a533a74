//! Write stamps: a per-node clock that only moves forward.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use colony_runtime::NodeId;

use super::msg::Stamp;

/// The stamp of values loaded locally: older than any write, so every write replaces them.
pub const LOADED: Stamp = Stamp {
    micros: 0,
    node: [0; 16],
};

/// Hands out this node's stamps: wall-clock microseconds, increasing even if the clock steps
/// back, so that one node's writes are ordered as it made them.
#[derive(Debug)]
pub struct Stamper {
    node: [u8; 16],
    last: AtomicU64,
}

impl Stamper {
    /// A stamper for `node`.
    pub fn new(node: NodeId) -> Self {
        Stamper {
            node: *node.as_bytes(),
            last: AtomicU64::new(0),
        }
    }

    /// The next stamp.
    pub fn stamp(&self) -> Stamp {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let micros = self
            .last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last + 1))
            })
            .map_or(now, |last| now.max(last + 1));
        Stamp {
            micros,
            node: self.node,
        }
    }
}

/// A stamp of a fixed test node at `micros`.
#[cfg(test)]
pub(crate) fn at(micros: u64) -> Stamp {
    Stamp {
        micros,
        node: [1; 16],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_only_grow_and_loaded_values_lose_to_any_write() {
        let s = Stamper::new(NodeId::from_u128(1));
        let a = s.stamp();
        let b = s.stamp();
        assert!(b > a);
        assert!(LOADED < a);
    }
}
