//! Quorum on one side only: during a partition, at most one side believes it has a quorum.
//!
//! A node believes it has a quorum when
//! `quorum::has_quorum(up_count, config::majority(cluster_size))` holds for the up count of its
//! latest view. The sides are the groups of nodes that can still reach each other, rebuilt from
//! every network change in the history (partitions, cuts, isolations and fault filters alike;
//! loss and delay do not split anything). From `settle` after a change that leaves more than one
//! side until the next change, a running node on a side smaller than a majority must not believe
//! it has a quorum, and no two sides may hold believers at the same moment. (Right after a split,
//! nodes have not yet noticed the other side; `settle` should cover detection.) A node is judged
//! only once it has run unpaused for `settle`: a process resuming from a pause still holds the
//! view it had before, which is why the primitives pair quorum with leases.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use super::Violation;
use crate::config::majority;
use crate::quorum::has_quorum;
use crate::sim::history::{Happening, History, Life};
use crate::sim::net::NetChange;

/// Finds every moment two sides of a partition believed they had a quorum, or a minority did.
pub fn check(history: &History, cluster_size: usize, settle: Duration) -> Vec<Violation> {
    let quorum = majority(cluster_size);
    let lives = history.lives();
    let nodes: BTreeSet<SocketAddr> = lives.iter().map(|l| l.node).collect();
    let mut cut: BTreeSet<(SocketAddr, SocketAddr)> = BTreeSet::new();
    let mut sides = vec![nodes.iter().copied().collect::<Vec<_>>()];
    let mut window_from = Duration::ZERO;
    let mut up: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    let mut opened = false;
    let mut out = Vec::new();
    for e in history.entries() {
        let split = sides.len() > 1;
        if split && !opened && e.at >= window_from {
            judge(&mut out, &lives, &sides, &up, quorum, settle, window_from);
            opened = true;
        }
        match &e.what {
            Happening::View { node, members } => {
                up.insert(*node, members.iter().filter(|m| m.state.is_up()).count());
                if split && e.at >= window_from {
                    judge(&mut out, &lives, &sides, &up, quorum, settle, e.at);
                }
            }
            Happening::Net { change, .. } => {
                apply(&mut cut, &nodes, change);
                sides = components(&nodes, &cut);
                window_from = e.at + settle;
                opened = false;
            }
            _ => {}
        }
    }
    if sides.len() > 1 && !opened && window_from <= history.end() {
        judge(&mut out, &lives, &sides, &up, quorum, settle, window_from);
    }
    out
}

/// Adds the pairs a change cuts (unordered), or clears them all on a heal.
fn apply(
    cut: &mut BTreeSet<(SocketAddr, SocketAddr)>,
    nodes: &BTreeSet<SocketAddr>,
    change: &NetChange,
) {
    let mut add = |a: SocketAddr, b: SocketAddr| {
        if a != b {
            cut.insert((a.min(b), a.max(b)));
        }
    };
    match change {
        NetChange::Cut(a, b) => add(*a, *b),
        NetChange::Isolated(a) => nodes.iter().for_each(|b| add(*a, *b)),
        NetChange::Blocked(a, peers) => peers.iter().for_each(|b| add(*a, *b)),
        NetChange::Partitioned(groups) => {
            let group_of = |x: &SocketAddr| groups.iter().position(|g| g.contains(x));
            for a in nodes {
                for b in nodes {
                    if group_of(a).is_none() || group_of(a) != group_of(b) {
                        add(*a, *b);
                    }
                }
            }
        }
        NetChange::Healed => cut.clear(),
        NetChange::Lossy(..) | NetChange::Delayed(..) => {}
    }
}

/// The groups of nodes that can reach each other, directly or through others.
fn components(
    nodes: &BTreeSet<SocketAddr>,
    cut: &BTreeSet<(SocketAddr, SocketAddr)>,
) -> Vec<Vec<SocketAddr>> {
    let mut sides: Vec<Vec<SocketAddr>> = Vec::new();
    let mut seen: BTreeSet<SocketAddr> = BTreeSet::new();
    for &start in nodes {
        if !seen.insert(start) {
            continue;
        }
        let mut side = vec![start];
        let mut k = 0;
        while k < side.len() {
            let a = side[k];
            for &b in nodes {
                if !seen.contains(&b) && !cut.contains(&(a.min(b), a.max(b))) {
                    seen.insert(b);
                    side.push(b);
                }
            }
            k += 1;
        }
        sides.push(side);
    }
    sides
}

fn judge(
    out: &mut Vec<Violation>,
    lives: &[Life],
    sides: &[Vec<SocketAddr>],
    up: &BTreeMap<SocketAddr, usize>,
    quorum: usize,
    settle: Duration,
    at: Duration,
) {
    let settled = |node: &SocketAddr| {
        lives
            .iter()
            .any(|l| l.node == *node && l.ran_throughout(at.saturating_sub(settle), at))
    };
    let believers: Vec<(usize, SocketAddr)> = up
        .iter()
        .filter(|(node, count)| has_quorum(**count, quorum) && settled(node))
        .filter_map(|(node, _)| {
            sides
                .iter()
                .position(|s| s.contains(node))
                .map(|s| (s, *node))
        })
        .collect();
    for &(s, node) in &believers {
        if sides[s].len() < quorum {
            out.push(Violation {
                promise: "quorum_on_one_side_only",
                at,
                node: Some(node),
                detail: format!(
                    "believes it has a quorum of {quorum} on a side of {}",
                    sides[s].len()
                ),
            });
        }
    }
    let mut holding: Vec<usize> = believers.iter().map(|(s, _)| *s).collect();
    holding.sort();
    holding.dedup();
    if holding.len() > 1 {
        out.push(Violation {
            promise: "quorum_on_one_side_only",
            at,
            node: None,
            detail: format!("sides {holding:?} all believe they have a quorum"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{Member, MemberState};
    use crate::sim::History;
    use crate::sim::tests::addr;

    use crate::sim::tests::ident;

    /// A view at node `n` listing nodes `1..=up` as up and the rest of five as down.
    fn view(n: u8, up: u8) -> Happening {
        let members = (1..=5)
            .map(|k| {
                let state = if k <= up {
                    MemberState::Up
                } else {
                    MemberState::Down
                };
                Member::from_identity(&ident(k), state)
            })
            .collect();
        Happening::View {
            node: addr(n),
            members,
        }
    }

    fn five_split_two_three() -> History {
        let mut h = History::new();
        for n in 1..=5 {
            let started = Happening::Started {
                node: addr(n),
                identity: ident(n),
                cookie: "c".into(),
            };
            h.push(Duration::ZERO, started);
        }
        for n in 1..=5 {
            h.push(Duration::ZERO, view(n, 5));
        }
        // Through fault filters: 1 and 2 block 3, 4 and 5.
        for n in 1..=2 {
            let peers = vec![addr(3), addr(4), addr(5)];
            let change = NetChange::Blocked(addr(n), peers);
            h.push(
                S,
                Happening::Net {
                    change,
                    healthy: false,
                },
            );
        }
        h
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_minority_that_still_counts_everyone_after_settling_is_caught() {
        let mut h = five_split_two_three();
        h.push(3 * S, view(3, 3));
        h.extend_to(10 * S);
        let v = check(&h, 5, 4 * S);
        // Nodes 1 and 2 still list all five up when the window opens at 5 s.
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v.iter().all(|v| v.at == 5 * S));
    }

    #[test]
    fn a_minority_that_sees_the_split_passes() {
        let mut h = five_split_two_three();
        h.push(3 * S, view(1, 2));
        h.push(3 * S, view(2, 2));
        h.extend_to(10 * S);
        assert_eq!(check(&h, 5, 4 * S), vec![]);
    }
}
