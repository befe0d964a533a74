//! Who a node is on the wire.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A node's id: a UUID drawn when its process starts, stable until it exits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(uuid::Uuid);

impl NodeId {
    /// A fresh random id.
    pub fn random() -> Self {
        NodeId(uuid::Uuid::new_v4())
    }

    /// An id from a number; for tests and examples.
    pub const fn from_u128(n: u128) -> Self {
        NodeId(uuid::Uuid::from_u128(n))
    }

    /// The id's 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Parses the hyphenated form printed by [`Display`](std::fmt::Display).
    pub fn parse(text: &str) -> Option<Self> {
        uuid::Uuid::parse_str(text).ok().map(NodeId)
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The first group is enough to tell nodes apart in logs.
        let s = self.0.to_string();
        write!(f, "NodeId({})", &s[..8])
    }
}

/// The identity gossiped by SWIM: id, name, address and incarnation.
///
/// The incarnation only grows: across restarts it is at least the previous run's plus one
/// (persisted in the local home), and a node declared down renews itself with `+1`. So when two
/// identities claim one address, the newer one always wins and a restarted node never fights its
/// own ghost.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// The process's id.
    pub id: NodeId,
    /// The operator's name for the node.
    pub name: String,
    /// Where the node listens (TCP and UDP).
    pub addr: SocketAddr,
    /// Grows on every restart and every renewal.
    pub incarnation: u64,
    /// Its member id in the consensus group: stable across restarts while its consensus store
    /// is kept (0: none).
    pub replica: u64,
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeIdentity {
            incarnation: self.incarnation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.incarnation, self.id) > (adversary.incarnation, adversary.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn ident(incarnation: u64) -> NodeIdentity {
        NodeIdentity {
            id: NodeId::from_u128(1),
            name: "a".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            incarnation,
            replica: 0,
        }
    }

    #[test]
    fn a_renewed_identity_wins_over_the_old_one() {
        let old = ident(10);
        let new = old.renew().unwrap();
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }

    #[test]
    fn a_restarted_process_with_a_higher_incarnation_wins() {
        let old = ident(10);
        let restarted = NodeIdentity {
            id: NodeId::from_u128(0),
            incarnation: 11,
            ..old.clone()
        };
        assert!(restarted.win_addr_conflict(&old));
    }
}
