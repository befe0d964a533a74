//! A restarted node (same address, new id, higher incarnation) rejoins, and the others emit
//! `NodeRejoined` naming its old id.

use std::time::Duration;

use proptest::prelude::*;

use super::{assert_clean, bound, cases, converged};
use crate::sim::{World, check};

proptest! {
    #![proptest_config(cases(12))]

    #[test]
    fn a_restarted_node_rejoins_and_the_others_see_it_rejoined(
        seed in any::<u64>(),
        n in 3usize..=7,
        victim in any::<prop::sample::Index>(),
        down_ms in 0u64..6000,
    ) {
        let mut world = converged(seed, n);
        let victim = victim.index(n);
        let old = world.id(victim);
        let old_incarnation = world.core(victim).local().incarnation;
        world.kill(victim);
        world.run_for(Duration::from_millis(down_ms));
        world.restart(victim);
        let new = world.id(victim);
        prop_assert_ne!(old, new);
        prop_assert!(world.core(victim).local().incarnation > old_incarnation);
        if let Err(e) = world.run_until(World::converged, bound(n)) {
            panic!("{e}\n{}", world.describe());
        }
        world.run_for(bound(n));
        assert_clean(&world, check::restart_rejoins::check(world.history(), bound(n)));
        assert_clean(&world, check::no_false_down::check(world.history(), bound(n)));
        assert_clean(&world, check::one_view_after_heal::check(world.history(), bound(n)));
        // No node lists the old id as up any more.
        for i in world.live() {
            prop_assert!(!world.core(i).up_ids().contains(&old));
        }
        prop_assert_eq!(world.history().rejoins(new, old).count(), n - 1);
        // The restarted node itself never renews: nobody declared its new id down.
        let renewed = world.history().renewals().any(|(_, _, identity)| identity.id == new);
        prop_assert!(!renewed);
    }
}

proptest! {
    #![proptest_config(cases(12))]

    /// Regression (found by the simulator): a node that left and restarted before everyone's
    /// foca had seen it leave stayed listed as left on those nodes.
    #[test]
    fn a_node_that_leaves_and_comes_back_is_listed_up_again(
        seed in any::<u64>(),
        n in 3usize..=7,
        victim in any::<prop::sample::Index>(),
        away_ms in prop_oneof![Just(0u64), 0u64..3000],
    ) {
        let mut world = converged(seed, n);
        let victim = victim.index(n);
        let old = world.id(victim);
        world.leave(victim);
        world.run_for(Duration::from_millis(away_ms));
        world.restart(victim);
        if let Err(e) = world.run_until(World::converged, bound(n)) {
            panic!("{e}\n{}", world.describe());
        }
        world.run_for(bound(n));
        let h = world.history();
        assert_clean(&world, check::left_never_down::check(h, bound(n)));
        assert_clean(&world, check::one_view_after_heal::check(h, bound(n)));
        for i in world.live() {
            prop_assert!(!world.core(i).up_ids().contains(&old));
        }
    }
}
