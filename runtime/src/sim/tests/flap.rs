//! Short outages: a suspicion refuted in time costs nothing, and nodes that all renew at once
//! still find each other.

use std::time::Duration;

use proptest::prelude::*;

use super::{assert_clean, bound, cases, converged, settle_after_heal, verdict_window};
use crate::membership::MemberEvent;
use crate::sim::{World, check};

proptest! {
    #![proptest_config(cases(12))]

    /// Regression (found by the simulator): foca sent `TurnUndead` to a suspect that had refuted
    /// the suspicion, forcing a renewal and `NodeRejoined` everywhere after every short blip.
    #[test]
    fn a_partition_shorter_than_a_probe_cycle_forces_no_renewal(
        seed in any::<u64>(),
        n in 3usize..=7,
        cut in 1usize..=3,
        blip_ms in 100u64..500,
    ) {
        let mut world = converged(seed, n);
        let order: Vec<usize> = (0..n).collect();
        let (left, right) = order.split_at(cut.min(n - 1));
        world.partition(&[left, right]);
        world.run_for(Duration::from_millis(blip_ms));
        world.heal();
        world.run_for(bound(n) * 2);
        assert_clean(&world, check::renewal_needs_down::check(world.history()));
        let h = world.history();
        assert_clean(&world, check::one_view_after_heal::check(h, settle_after_heal()));
        prop_assert!(world.converged());
    }

    /// Regression (found by the simulator): a renewed node gossiped its new identity only to the
    /// identities it knew; peers that had renewed at the same moment dropped it, and the node
    /// stayed silent and disconnected (its table still showing everyone up) until the others
    /// declared it down again, long after the network was healthy.
    #[test]
    fn a_node_cut_off_for_about_a_second_comes_back_without_false_downs(
        seed in any::<u64>(),
        n in 3usize..=7,
        victim in any::<prop::sample::Index>(),
        apart_ms in 900u64..1600,
    ) {
        let mut world = converged(seed, n);
        world.isolate(victim.index(n));
        world.run_for(Duration::from_millis(apart_ms));
        world.heal();
        world.run_for(bound(n) * 3);
        let h = world.history();
        assert_clean(&world, check::no_false_down::check(h, verdict_window()));
        assert_clean(&world, check::renewal_needs_down::check(h));
        assert_clean(&world, check::one_view_after_heal::check(h, settle_after_heal()));
    }

    /// Every node declares every other down, then all renew at once when the network heals.
    #[test]
    fn nodes_that_all_renew_at_once_find_each_other(
        seed in any::<u64>(),
        n in 3usize..=5,
        apart_ms in 4000u64..7000,
    ) {
        let mut world = converged(seed, n);
        let singletons: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
        let groups: Vec<&[usize]> = singletons.iter().map(Vec::as_slice).collect();
        world.partition(&groups);
        world.run_for(Duration::from_millis(apart_ms));
        world.heal();
        if let Err(e) = world.run_until(World::converged, bound(n)) {
            panic!("{e}\n{}", world.describe());
        }
        let downs_after_heal = world.history().events().filter(|(at, _, e)| {
            *at > world.history().last_heal().unwrap_or_default()
                && matches!(e, MemberEvent::NodeDown(_))
        }).count();
        prop_assert_eq!(downs_after_heal, 0);
    }
}
