//! Admission of connections that have not authenticated yet.
//!
//! Anyone who can reach the node's port can open a connection, and until it authenticates it
//! costs the node a task, a socket and a buffer. So the listener holds a [`Permit`] for each such
//! connection from the moment it is accepted until it authenticates or closes, and admits no
//! more than [`MAX_UNAUTHENTICATED`] at once, [`MAX_UNAUTHENTICATED_PER_IP`] of them from any one
//! source address. A connection over either cap is closed as soon as it is accepted and counted
//! (`refused_connections`); one that does not authenticate within [`ACCEPT_DEADLINE`] is closed
//! and counted (`handshake_failures`). Authenticated links hold no permit: junk
//! cannot close them, it can only make new connections wait for a free slot.
//!
//! An address that hosts a member of the cluster is held to its own per-address cap but not to
//! the overall one, so strangers spread over many addresses cannot keep members from redialling.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::TransportStats;

/// Connections accepted but not yet authenticated, from every address together.
pub(crate) const MAX_UNAUTHENTICATED: usize = 256;
/// Connections accepted but not yet authenticated, from one source address.
pub(crate) const MAX_UNAUTHENTICATED_PER_IP: usize = 32;
/// How long an accepted connection has to authenticate, from accept to the end of its
/// handshake. Members do it in a few round trips; a slow drip of bytes does not.
pub(crate) const ACCEPT_DEADLINE: Duration = Duration::from_secs(2);

/// The unauthenticated connections of one node.
pub(crate) struct Admission {
    counts: Mutex<Counts>,
    stats: Arc<TransportStats>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection's slot, given back when dropped.
pub(crate) struct Permit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    pub(crate) fn new(stats: Arc<TransportStats>) -> Arc<Admission> {
        Arc::new(Admission {
            counts: Mutex::default(),
            stats,
        })
    }

    /// A slot for a connection from `ip`, or `None` (counted) when a cap is reached. `member`
    /// says whether a member of the cluster lives at `ip`: then only the per-address cap holds.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, member: bool) -> Option<Permit> {
        let mut counts = self.counts.lock().expect("admission lock");
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= MAX_UNAUTHENTICATED_PER_IP || (!member && counts.total >= MAX_UNAUTHENTICATED)
        {
            drop(counts);
            self.stats
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        counts.total += 1;
        *counts.per_ip.entry(ip).or_default() += 1;
        Some(Permit {
            admission: self.clone(),
            ip,
        })
    }

    /// Connections admitted and not yet authenticated or closed.
    pub(crate) fn unauthenticated(&self) -> usize {
        self.counts.lock().expect("admission lock").total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.admission.counts.lock().expect("admission lock");
        counts.total -= 1;
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn admission() -> Arc<Admission> {
        Admission::new(Arc::default())
    }

    fn refused(a: &Admission) -> u64 {
        a.stats.refused_connections.load(Ordering::Relaxed)
    }

    #[test]
    fn one_address_gets_its_cap_and_no_more_and_a_closed_connection_gives_its_slot_back() {
        let a = admission();
        let mut held: Vec<Permit> = (0..MAX_UNAUTHENTICATED_PER_IP)
            .map(|_| a.admit(ip(1), false).expect("under the cap"))
            .collect();
        assert!(a.admit(ip(1), false).is_none());
        assert!(
            a.admit(ip(1), true).is_none(),
            "members too keep to the cap"
        );
        assert_eq!(refused(&a), 2);
        // Another address is not held up by the first.
        let other = a.admit(ip(2), false).expect("another address");
        assert_eq!(a.unauthenticated(), MAX_UNAUTHENTICATED_PER_IP + 1);
        held.pop();
        assert!(a.admit(ip(1), false).is_some());
        drop((held, other));
        assert_eq!(a.unauthenticated(), 0);
        assert!(a.counts.lock().unwrap().per_ip.is_empty());
    }

    #[test]
    fn the_overall_cap_refuses_strangers_but_not_members() {
        let a = admission();
        let held: Vec<Permit> = (0..MAX_UNAUTHENTICATED)
            .map(|n| {
                let addr = IpAddr::from([10, 0, (n / 8) as u8, (n % 8) as u8]);
                a.admit(addr, false).expect("under the cap")
            })
            .collect();
        assert!(a.admit(ip(200), false).is_none());
        assert!(a.admit(ip(201), true).is_some());
        assert_eq!(refused(&a), 1);
        drop(held);
    }
}
