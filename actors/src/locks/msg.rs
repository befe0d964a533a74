//! Wire payloads of the `locks` service. Named fields: a newer node may add some.

use serde::{Deserialize, Serialize};

use super::core::Holder;

/// The service name every node registers.
pub const SERVICE: &str = "locks";

/// `acquire`: ask the owner for a name, waiting up to `wait_ms` (0: try once).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcquireMsg {
    /// The lock's key (kind prefix included).
    pub name: String,
    /// Who asks.
    pub holder: Holder,
    /// How long the owner may queue the request, in milliseconds.
    pub wait_ms: u64,
}

/// `renew`, `release`: a holder's operation on its lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseMsg {
    /// The lock's key.
    pub name: String,
    /// The holder.
    pub holder: Holder,
    /// The fencing token of the grant.
    pub token: u64,
}

/// `cancel`: withdraw a wait (or release a grant the caller never saw).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelMsg {
    /// The lock's key.
    pub name: String,
    /// Who withdraws.
    pub holder: Holder,
}
