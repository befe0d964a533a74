//! Membership: who is in the cluster, who is up, and who just failed.
//!
//! [`MembershipCore`] runs SWIM (the foca crate) with Colony's member states, authenticated
//! packets and a test-only fault filter, and does no IO. `driver` is its shell: a task that
//! owns the UDP socket and the timers and publishes [`MemberEvent`]s and a [`View`].

pub mod core;
pub(crate) mod driver;
mod event;
mod identity;
mod incarnation;
mod packet;

pub use self::core::{MembershipCore, Output};
pub use event::{Member, MemberEvent, MemberState};
pub use identity::{NodeId, NodeIdentity};
pub use incarnation::next_incarnation;
pub use packet::{GossipKey, Kind as PacketKind, PacketError};

/// Counters of what reached and left the gossip port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MembershipStats {
    /// Datagrams received.
    pub packets_in: u64,
    /// Datagrams sent.
    pub packets_out: u64,
    /// Datagrams that were not Colony packets at all.
    pub malformed: u64,
    /// Datagrams whose tag did not match (another cookie, or tampering).
    pub bad_tag: u64,
    /// Authenticated datagrams that SWIM could not use.
    pub swim_errors: u64,
    /// Refusals received from peers (our cookie is wrong).
    pub refusals_received: u64,
    /// Datagrams dropped by the fault filter.
    pub dropped_by_fault: u64,
}

/// A snapshot of the member table, as published by the driver.
#[derive(Debug, Clone)]
pub struct View {
    /// The local node first, then the others.
    pub members: Vec<Member>,
    /// Ids of the nodes that are up.
    pub up: Vec<NodeId>,
    /// Counters.
    pub stats: MembershipStats,
}

impl View {
    /// The local node.
    pub fn local(&self) -> &Member {
        &self.members[0]
    }
}
