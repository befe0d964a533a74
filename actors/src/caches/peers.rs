//! Which nodes take part in a node's caches, and whether this node may cache yet.
//!
//! Gossip does not reach every node at once: a node that just joined can read (and cache) before
//! a writer's view includes it, and the writer's invalidations would then skip it. So every node
//! greets each up peer (`hello`); a greeted peer sends its changes to the greeter from then on,
//! whether or not its own view shows it yet. Until every up peer has answered its greeting, a node
//! caches no loaded value: what it reads before then comes straight from the loader.

use std::collections::HashSet;
use std::sync::Mutex;

use colony_runtime::{Member, NodeId};

/// Greetings sent and received.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Peers that answered this node's greeting: they send it their changes.
    greeted: HashSet<NodeId>,
    /// Peers that greeted this node: it sends them its changes.
    greeters: HashSet<NodeId>,
}

impl Peers {
    /// `peer` answered this node's greeting.
    pub(crate) fn greeted(&self, peer: NodeId) {
        self.state.lock().expect("peers lock").greeted.insert(peer);
    }

    /// `peer` greeted this node.
    pub(crate) fn greeter(&self, peer: NodeId) {
        self.state.lock().expect("peers lock").greeters.insert(peer);
    }

    /// `peer` failed, left or came back as someone new: greetings with it start over.
    pub(crate) fn forget(&self, peer: NodeId) {
        let mut s = self.state.lock().expect("peers lock");
        s.greeted.remove(&peer);
        s.greeters.remove(&peer);
    }

    /// Up peers this node has not been greeted back by yet.
    pub(crate) fn to_greet(&self, me: NodeId, up: &[NodeId]) -> Vec<NodeId> {
        let s = self.state.lock().expect("peers lock");
        up.iter()
            .copied()
            .filter(|p| *p != me && !s.greeted.contains(p))
            .collect()
    }

    /// Whether every up peer answered this node's greeting, so that loaded values may be cached.
    pub(crate) fn ready(&self, me: NodeId, up: &[NodeId]) -> bool {
        self.to_greet(me, up).is_empty()
    }

    /// Where this node's changes go: every peer not known to be down or gone (a suspect may
    /// still be serving reads), and every peer that greeted this node.
    pub(crate) fn targets(&self, me: NodeId, members: &[Member]) -> Vec<NodeId> {
        let s = self.state.lock().expect("peers lock");
        let mut out: Vec<NodeId> = members
            .iter()
            .filter(|m| m.id != me)
            .filter(|m| !m.state.is_gone())
            .map(|m| m.id)
            .collect();
        // A greeter not yet in the member table at all is still a target.
        for g in &s.greeters {
            if !members.iter().any(|m| m.id == *g) {
                out.push(*g);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colony_runtime::MemberState;

    fn member(n: u128, state: MemberState) -> Member {
        Member {
            id: NodeId::from_u128(n),
            name: format!("n{n}"),
            addr: "127.0.0.1:1".parse().unwrap(),
            state,
            incarnation: 1,
            replica: 0,
        }
    }

    #[test]
    fn a_node_is_ready_once_every_up_peer_answered_and_sends_to_its_greeters() {
        let (me, a, b) = (
            NodeId::from_u128(1),
            NodeId::from_u128(2),
            NodeId::from_u128(3),
        );
        let peers = Peers::default();
        assert!(!peers.ready(me, &[me, a]));
        peers.greeted(a);
        assert!(peers.ready(me, &[me, a]));
        // b greeted us before our view has it up: it still gets our changes.
        peers.greeter(b);
        let members = [member(1, MemberState::Up), member(2, MemberState::Up)];
        assert_eq!(peers.targets(me, &members), vec![a, b]);
        let members = [
            member(1, MemberState::Up),
            member(2, MemberState::Up),
            member(3, MemberState::Down),
        ];
        assert_eq!(peers.targets(me, &members), vec![a]);
        peers.forget(a);
        assert!(!peers.ready(me, &[me, a]));
    }
}
