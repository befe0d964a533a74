//! A node paused beyond the bound is declared down, and after resuming renews its identity and
//! rejoins.

use std::time::Duration;

use proptest::prelude::*;

use super::{assert_clean, bound, cases, converged};
use crate::NodeId;
use crate::membership::MemberState;
use crate::sim::{World, check};

/// Whether node `observer` emitted `NodeRejoined` for `id` renewing itself.
fn saw_rejoin(world: &World, observer: usize, id: NodeId) -> bool {
    let observer = world.addr(observer);
    world
        .history()
        .rejoins(id, id)
        .any(|(_, node)| node == observer)
}

proptest! {
    #![proptest_config(cases(12))]

    #[test]
    fn a_node_paused_beyond_the_bound_is_declared_down_then_renews_and_rejoins(
        seed in any::<u64>(),
        n in 3usize..=7,
        victim in any::<prop::sample::Index>(),
        extra_ms in 0u64..2000,
    ) {
        let mut world = converged(seed, n);
        let victim = victim.index(n);
        let id = world.id(victim);
        let incarnation = world.core(victim).local().incarnation;
        let paused_for = bound(n) + Duration::from_millis(200 + extra_ms);
        world.pause(victim, paused_for);
        world.run_for(paused_for - Duration::from_millis(100));
        for i in world.live().into_iter().filter(|&i| i != victim) {
            prop_assert_eq!(world.state_seen(i, victim), Some(MemberState::Down));
        }
        if let Err(e) = world.run_until(World::converged, bound(n)) {
            panic!("{e}\n{}", world.describe());
        }
        let renewed: Vec<u64> = world.history().renewals()
            .filter(|(_, _, identity)| identity.id == id)
            .map(|(_, _, identity)| identity.incarnation)
            .collect();
        prop_assert!(!renewed.is_empty(), "the paused node never renewed");
        prop_assert!(world.core(victim).local().incarnation > incarnation);
        for i in world.live().into_iter().filter(|&i| i != victim) {
            prop_assert!(saw_rejoin(&world, i, id), "node {} did not see the pauser rejoin", i);
        }
        world.run_for(bound(n));
        assert_clean(&world, check::one_view_after_heal::check(world.history(), bound(n)));
    }
}
