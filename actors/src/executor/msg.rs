//! The typed protocol of the `executor` service: a slot's hand-over from its previous owner.
//! Named fields: a newer node may add some.

use serde::{Deserialize, Serialize};

/// The service name every node registers.
pub const SERVICE: &str = "executor";

/// The one request kind of the service.
pub const KIND: &str = "exec";

/// A request between the executor services of two nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecRequest {
    /// The previous owner of `slot` ended its batches there: the next owner may serve it for
    /// `generation`. Empty: the queues are in the log. Answered with whether it was awaited.
    HandOver {
        /// The slot of the `Executor` domain.
        slot: u16,
        /// The next owner's generation of the slot.
        generation: u64,
    },
}
