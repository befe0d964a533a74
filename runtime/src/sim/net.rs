//! The simulated network: per-link cuts, loss and delay between node addresses.
//!
//! A [`Net`] is pure data plus one decision, [`Net::route`]: given a sender, a receiver and the
//! world's generator, drop the datagram or say how long it travels. Links start healthy (a base
//! delay plus a random jitter, so datagrams can overtake each other as UDP allows) and every fault
//! is an override on a directed link; [`Net::heal`] removes them all.
//!
//! The net decides at send time: a datagram already in flight when a link is cut still arrives.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rand::RngExt;
use rand::rngs::StdRng;

/// The state of one directed link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Every datagram is lost.
    pub cut: bool,
    /// The chance, from 0.0 to 1.0, that a datagram is lost.
    pub loss: f64,
    /// How long a datagram travels, before jitter.
    pub delay: Duration,
}

/// A change to the network, as recorded in the [`History`](super::History).
#[derive(Debug, Clone, PartialEq)]
pub enum NetChange {
    /// Both directions between two nodes were cut.
    Cut(SocketAddr, SocketAddr),
    /// A node was cut from every other node.
    Isolated(SocketAddr),
    /// Only nodes in the same group can talk.
    Partitioned(Vec<Vec<SocketAddr>>),
    /// Datagrams between two nodes are lost with this chance.
    Lossy(SocketAddr, SocketAddr, f64),
    /// Datagrams between two nodes take this long.
    Delayed(SocketAddr, SocketAddr, Duration),
    /// A node's own fault filter (`MembershipCore::set_blocked`) now drops these peers.
    Blocked(SocketAddr, Vec<SocketAddr>),
    /// Every fault was removed.
    Healed,
}

/// Links between a fixed set of addresses, with faults as overrides.
#[derive(Debug, Clone)]
pub struct Net {
    nodes: Vec<SocketAddr>,
    base: Link,
    jitter: Duration,
    overrides: BTreeMap<(SocketAddr, SocketAddr), Link>,
}

impl Net {
    /// A healthy network where datagrams take `delay` plus up to `jitter`.
    pub fn new(delay: Duration, jitter: Duration) -> Self {
        Net {
            nodes: Vec::new(),
            base: Link {
                cut: false,
                loss: 0.0,
                delay,
            },
            jitter,
            overrides: BTreeMap::new(),
        }
    }

    /// Adds an address to the set that [`Self::isolate`] cuts from.
    pub fn add_node(&mut self, addr: SocketAddr) {
        if !self.nodes.contains(&addr) {
            self.nodes.push(addr);
        }
    }

    /// The link from `from` to `to`.
    pub fn link(&self, from: SocketAddr, to: SocketAddr) -> Link {
        self.overrides
            .get(&(from, to))
            .copied()
            .unwrap_or(self.base)
    }

    /// Whether no fault is in place.
    pub fn is_healthy(&self) -> bool {
        self.overrides.is_empty()
    }

    /// Decides the fate of one datagram: `None` if it is lost, else its travel time.
    pub fn route(&self, from: SocketAddr, to: SocketAddr, rng: &mut StdRng) -> Option<Duration> {
        let link = self.link(from, to);
        if link.cut || (link.loss > 0.0 && rng.random_bool(link.loss.min(1.0))) {
            return None;
        }
        let jitter = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(rng.random_range(0..=self.jitter.as_nanos() as u64))
        };
        Some(link.delay + jitter)
    }

    fn edit(&mut self, from: SocketAddr, to: SocketAddr, change: impl Fn(&mut Link)) {
        let link = self.overrides.entry((from, to)).or_insert(self.base);
        change(link);
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&mut self, a: SocketAddr, b: SocketAddr) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Cuts the direction from `from` to `to` only.
    pub fn cut_one_way(&mut self, from: SocketAddr, to: SocketAddr) {
        self.edit(from, to, |l| l.cut = true);
    }

    /// Cuts `a` from every other known node.
    pub fn isolate(&mut self, a: SocketAddr) {
        for b in self.nodes.clone() {
            if b != a {
                self.cut(a, b);
            }
        }
    }

    /// Cuts every link between nodes of different groups; a node in no group is isolated.
    pub fn partition(&mut self, groups: &[Vec<SocketAddr>]) {
        let group_of = |x: SocketAddr| groups.iter().position(|g| g.contains(&x));
        for a in self.nodes.clone() {
            for b in self.nodes.clone() {
                let apart = match (group_of(a), group_of(b)) {
                    (Some(x), Some(y)) => x != y,
                    _ => true,
                };
                if a != b && apart {
                    self.cut_one_way(a, b);
                }
            }
        }
    }

    /// Loses datagrams between `a` and `b` (both ways) with chance `loss`.
    pub fn drop(&mut self, a: SocketAddr, b: SocketAddr, loss: f64) {
        self.edit(a, b, |l| l.loss = loss);
        self.edit(b, a, |l| l.loss = loss);
    }

    /// Makes datagrams between `a` and `b` (both ways) take `delay` plus jitter.
    pub fn delay(&mut self, a: SocketAddr, b: SocketAddr, delay: Duration) {
        self.edit(a, b, |l| l.delay = delay);
        self.edit(b, a, |l| l.delay = delay);
    }

    /// Removes every fault.
    pub fn heal(&mut self) {
        self.overrides.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::tests::addr;
    use rand::SeedableRng;

    fn net() -> Net {
        let mut net = Net::new(Duration::from_millis(1), Duration::ZERO);
        for i in 1..=5 {
            net.add_node(addr(i));
        }
        net
    }

    #[test]
    fn a_partition_cuts_across_groups_and_keeps_links_inside_them() {
        let mut net = net();
        let mut rng = StdRng::seed_from_u64(1);
        net.partition(&[vec![addr(1), addr(2)], vec![addr(3), addr(4), addr(5)]]);
        assert_eq!(
            net.route(addr(1), addr(2), &mut rng),
            Some(Duration::from_millis(1))
        );
        assert_eq!(net.route(addr(2), addr(3), &mut rng), None);
        assert_eq!(net.route(addr(5), addr(1), &mut rng), None);
        assert!(net.route(addr(4), addr(5), &mut rng).is_some());
        net.heal();
        assert!(net.is_healthy());
        assert!(net.route(addr(2), addr(3), &mut rng).is_some());
    }

    #[test]
    fn isolate_cuts_both_directions_to_everyone() {
        let mut net = net();
        let mut rng = StdRng::seed_from_u64(1);
        net.isolate(addr(3));
        for i in [1, 2, 4, 5] {
            assert_eq!(net.route(addr(3), addr(i), &mut rng), None);
            assert_eq!(net.route(addr(i), addr(3), &mut rng), None);
        }
        assert!(net.route(addr(1), addr(2), &mut rng).is_some());
    }

    #[test]
    fn a_one_way_cut_leaves_the_other_direction() {
        let mut net = net();
        let mut rng = StdRng::seed_from_u64(1);
        net.cut_one_way(addr(1), addr(2));
        assert_eq!(net.route(addr(1), addr(2), &mut rng), None);
        assert!(net.route(addr(2), addr(1), &mut rng).is_some());
        assert!(!net.is_healthy());
    }

    #[test]
    fn delay_and_total_loss_apply_per_link() {
        let mut net = net();
        let mut rng = StdRng::seed_from_u64(1);
        net.delay(addr(1), addr(2), Duration::from_millis(300));
        net.drop(addr(1), addr(3), 1.0);
        assert_eq!(
            net.route(addr(2), addr(1), &mut rng),
            Some(Duration::from_millis(300))
        );
        assert_eq!(net.route(addr(3), addr(1), &mut rng), None);
        assert_eq!(
            net.route(addr(4), addr(1), &mut rng),
            Some(Duration::from_millis(1))
        );
    }
}
