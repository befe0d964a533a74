//! The typed protocol of the `locks` service: one request enum, answered with an
//! [`Answer`](super::core::Answer), and a report of the names a node serves. Named fields: a
//! newer node may add some.

use serde::{Deserialize, Serialize};

use super::core::{Holder, SlotTable};

/// The service name every node registers.
pub const SERVICE: &str = "locks";

/// The request kind of lock operations (the payload, a [`LockRequest`], says which).
pub const KIND: &str = "lock";

/// The request kind that asks a node for the names it serves (empty payload), answered with
/// its [`ServedLock`](super::report::ServedLock)s: how `GET /locks` on one node shows the
/// cluster's.
pub const REPORT: &str = "report";

/// A request to the node that serves a lock name's slot. The same encoded request goes to this
/// node's own service when it is the owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockRequest {
    /// Ask for a name, waiting up to `wait_ms` (0: try once).
    Acquire {
        /// The lock's key.
        name: String,
        /// Who asks.
        holder: Holder,
        /// How long the owner may queue the request, in milliseconds.
        wait_ms: u64,
        /// The guard's request number, increasing (see `LockTable::acquire_attempt`); 0 from
        /// a node that numbers none.
        #[serde(default)]
        attempt: u64,
    },
    /// Renew a lease.
    Renew {
        /// The lock's key.
        name: String,
        /// The holder.
        holder: Holder,
        /// The grant's token.
        token: u64,
    },
    /// Release a lock.
    Release {
        /// The lock's key.
        name: String,
        /// The holder.
        holder: Holder,
        /// The grant's token.
        token: u64,
    },
    /// Withdraw a wait (or release a grant the caller never saw).
    Cancel {
        /// The lock's key.
        name: String,
        /// Who withdraws.
        holder: Holder,
    },
    /// A slot's holds, from its previous owner to its next one.
    HandOver {
        /// The table.
        table: SlotTable,
    },
    /// From a slot's next owner to its previous one: send the table now.
    Fetch {
        /// The slot.
        slot: u16,
        /// The next owner's generation of it.
        generation: u64,
    },
}

impl LockRequest {
    /// The node the request acts for, if it acts for a guard.
    pub fn holder(&self) -> Option<Holder> {
        match self {
            LockRequest::Acquire { holder, .. }
            | LockRequest::Renew { holder, .. }
            | LockRequest::Release { holder, .. }
            | LockRequest::Cancel { holder, .. } => Some(*holder),
            LockRequest::HandOver { .. } | LockRequest::Fetch { .. } => None,
        }
    }

    /// The lock key the request is about, if one.
    pub fn name(&self) -> Option<&str> {
        match self {
            LockRequest::Acquire { name, .. }
            | LockRequest::Renew { name, .. }
            | LockRequest::Release { name, .. }
            | LockRequest::Cancel { name, .. } => Some(name),
            LockRequest::HandOver { .. } | LockRequest::Fetch { .. } => None,
        }
    }
}
