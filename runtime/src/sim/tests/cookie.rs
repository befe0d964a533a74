//! A node with another cookie never appears in any member list, and the others are unaffected.

use proptest::prelude::*;

use super::{assert_clean, bound, cases};
use crate::sim::{Happening, World, check};

proptest! {
    #![proptest_config(cases(10))]

    #[test]
    fn a_node_with_another_cookie_is_never_listed_and_changes_nothing(
        seed in any::<u64>(),
        n in 3usize..=6,
    ) {
        let mut world = World::start(seed, n);
        let stranger = world.add_node("another cookie");
        if let Err(e) = world.run_until(World::converged, bound(n)) {
            panic!("{e}\n{}", world.describe());
        }
        world.run_for(bound(n) * 2);
        assert_clean(&world, check::strangers_never_listed::check(world.history()));
        assert_clean(&world, check::no_false_down::check(world.history(), bound(n)));
        assert_clean(&world, check::one_view_after_heal::check(world.history(), bound(n)));
        prop_assert_eq!(world.core(stranger).members().len(), 1);
        let stranger_addr = world.addr(stranger);
        let refused = world.history().entries().iter().any(|e| matches!(
            e.what, Happening::RefusedBy { node, .. } if node == stranger_addr
        ));
        prop_assert!(refused, "the stranger was never told its cookie is wrong");
        for i in world.live() {
            prop_assert_eq!(world.core(i).members().len(), n);
        }
        // The stranger knocks on the seed nodes, which count and refuse every packet.
        for seed_node in 0..2 {
            prop_assert!(world.core(seed_node).stats().bad_tag > 0);
        }
    }
}
