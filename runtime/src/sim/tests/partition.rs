//! A 2|3 partition leaves a quorum on the 3 side only, and after the heal every node sees all 5
//! up.

use proptest::prelude::*;

use super::{assert_clean, bound, cases, converged};
use crate::config::majority;
use crate::quorum::has_quorum;
use crate::sim::{World, check};

fn split(world: &mut World, order: &[usize], filter: bool) {
    let (minority, majority_side) = order.split_at(2);
    if filter {
        // The same cut through each node's own fault filter, as the multi-process testkit does.
        for &i in minority {
            world.block(i, majority_side);
        }
        for &i in majority_side {
            world.block(i, minority);
        }
    } else {
        world.partition(&[minority, majority_side]);
    }
}

proptest! {
    #![proptest_config(cases(12))]

    #[test]
    fn a_two_three_partition_has_a_quorum_on_the_three_side_only_and_heals(
        seed in any::<u64>(),
        order in Just((0..5).collect::<Vec<usize>>()).prop_shuffle(),
        filter in any::<bool>(),
    ) {
        let mut world = converged(seed, 5);
        split(&mut world, &order, filter);
        let settle = bound(5);
        world.run_for(settle);
        let quorum = majority(5);
        for (k, &i) in order.iter().enumerate() {
            let has = has_quorum(world.core(i).up_count(), quorum);
            prop_assert_eq!(has, k >= 2, "node {} sees {} up", i, world.core(i).up_count());
        }
        let broken = check::quorum_on_one_side_only::check(world.history(), 5, settle);
        assert_clean(&world, broken);
        world.heal();
        if let Err(e) = world.run_until(World::converged, bound(5)) {
            panic!("{e}\n{}", world.describe());
        }
        for i in 0..5 {
            prop_assert_eq!(world.core(i).up_count(), 5);
        }
        world.run_for(bound(5));
        assert_clean(&world, check::one_view_after_heal::check(world.history(), bound(5)));
    }
}
