//! Member states, member views and membership events.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::NodeIdentity;
use crate::NodeId;

/// Where a member stands, as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Started, not yet known to the cluster (only ever the local node).
    Joining,
    /// Answering probes.
    Up,
    /// Missed probes; declared down unless it refutes in time.
    Suspect,
    /// Declared failed.
    Down,
    /// Leaving on purpose (only ever the local node, during shutdown).
    Leaving,
    /// Left on purpose.
    Left,
}

impl MemberState {
    /// Counts toward quorum and placement.
    pub fn is_up(self) -> bool {
        self == MemberState::Up
    }

    /// Counted out of the cluster: declared down, or left.
    pub fn is_gone(self) -> bool {
        matches!(self, MemberState::Down | MemberState::Left)
    }
}

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self).map_err(|_| std::fmt::Error)?;
        f.write_str(s.as_str().unwrap_or("?"))
    }
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's process id.
    pub id: NodeId,
    /// The member's name.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub state: MemberState,
    /// Its identity's incarnation (grows on restart and renewal).
    pub incarnation: u64,
    /// Its member id in the consensus group (0: none). In JSON a hexadecimal string, as the
    /// consensus report names members: the random 64-bit ids exceed what JavaScript holds.
    #[serde(with = "hex_u64")]
    pub replica: u64,
}

/// A `u64` as a hexadecimal string (`"0"` for zero).
mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{value:x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        u64::from_str_radix(&text, 16).map_err(D::Error::custom)
    }
}

impl Member {
    pub(crate) fn from_identity(id: &NodeIdentity, state: MemberState) -> Self {
        Member {
            id: id.id,
            name: id.name.clone(),
            addr: id.addr,
            state,
            incarnation: id.incarnation,
            replica: id.replica,
        }
    }
}

/// A change in membership, delivered to local subscribers ([`crate::Node::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEvent {
    /// A member answers probes: first seen, or back from suspicion.
    NodeUp(Member),
    /// A member missed probes.
    NodeSuspect(Member),
    /// A member was declared failed.
    NodeDown(Member),
    /// A member left on purpose.
    NodeLeft(Member),
    /// A member that had failed, left or restarted at the same address is back, with a higher
    /// incarnation; `previous` is the identity it replaced. Also published for the local node
    /// when the cluster had declared it down and it rejoined.
    NodeRejoined {
        /// The member now.
        member: Member,
        /// The id it had before (differs after a process restart).
        previous: NodeId,
        /// How long this node had counted it out (suspected, down or left) before seeing it
        /// back now: it was lost `lost_for` before this event. Zero if it never did (a restart
        /// noticed only by its new incarnation), and for this node itself.
        lost_for: std::time::Duration,
    },
}

impl MemberEvent {
    /// The member the event is about.
    pub fn member(&self) -> &Member {
        match self {
            MemberEvent::NodeUp(m)
            | MemberEvent::NodeSuspect(m)
            | MemberEvent::NodeDown(m)
            | MemberEvent::NodeLeft(m) => m,
            MemberEvent::NodeRejoined { member, .. } => member,
        }
    }
}
