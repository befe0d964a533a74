//! Simulated scenarios and exact-output tests of the membership core.
//!
//! Property tests draw a world seed and a cluster size; a failing case prints both (proptest
//! prints the input, and the world prints its seed and every member list as it unwinds).

use std::net::SocketAddr;
use std::time::Duration;

use proptest::test_runner::Config;

use crate::config::MembershipTimings;
use crate::sim::check::{Violation, report};
use crate::sim::{World, node_addr};

mod converge;
mod cookie;
mod core_outputs;
mod faults;
mod flap;
mod junk;
mod kill;
mod leave;
mod partition;
mod pause;
mod restart;

/// The identity of node `n` at its world address, incarnation 1.
pub(crate) fn ident(n: u8) -> crate::membership::NodeIdentity {
    crate::membership::NodeIdentity {
        id: crate::NodeId::from_u128(n.into()),
        name: format!("n{n}"),
        addr: addr(n),
        incarnation: 1,
        replica: 0,
    }
}

/// The address the world gives node `n - 1` (`n` counts from 1, like [`ident`]).
pub(crate) fn addr(n: u8) -> SocketAddr {
    node_addr(usize::from(n) - 1)
}

/// The promised detection bound of the default timings for a cluster of `n` nodes (see
/// `MembershipTimings::detection_bound`).
pub(crate) fn bound(n: usize) -> Duration {
    MembershipTimings::default().detection_bound(n)
}

/// How long after a fault a down verdict may still be rooted in it, for `no_false_down`.
///
/// A suspicion formed just before a heal becomes a verdict one suspicion timeout later through
/// foca's timer; if the suspecting node renewed its identity meanwhile (foca then drops its
/// timers), the core settles it on its once-a-second announce tick, after `suspect_to_down` plus
/// two probe periods. One more period lets the verdict spread.
pub(crate) fn verdict_window() -> Duration {
    let t = MembershipTimings::default();
    t.suspect_to_down + t.probe_period * 3 + Duration::from_secs(1)
}

/// How long after a heal every node may take to list the same up set: a late verdict (see
/// [`verdict_window`]), then one announce period for the renewed node to be heard.
pub(crate) fn settle_after_heal() -> Duration {
    verdict_window() + Duration::from_secs(1)
}

/// A world of `n` nodes that has converged.
pub(crate) fn converged(seed: u64, n: usize) -> World {
    let mut world = World::start(seed, n);
    if let Err(e) = world.run_until(World::converged, bound(n)) {
        panic!("{n} nodes did not converge: {e}\n{}", world.describe());
    }
    world
}

/// Fails with every violation, the seed and the member lists.
#[track_caller]
pub(crate) fn assert_clean(world: &World, violations: Vec<Violation>) {
    assert!(
        violations.is_empty(),
        "seed {}:\n{}\n{}",
        world.seed(),
        report(&violations),
        world.describe()
    );
}

/// Property-test settings: `cases` cases (or `PROPTEST_CASES` for a soak run), no regression
/// files (the printed seed is the regression).
pub(crate) fn cases(cases: u32) -> Config {
    let soak = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok());
    Config {
        cases: soak.unwrap_or(cases),
        failure_persistence: None,
        ..Config::default()
    }
}
