//! A graceful leave gives `NodeLeft`, never `NodeDown`, on every other node.

use proptest::prelude::*;

use super::{assert_clean, bound, cases, converged};
use crate::membership::MemberState;
use crate::sim::check;

proptest! {
    #![proptest_config(cases(12))]

    #[test]
    fn a_node_that_leaves_is_seen_left_and_never_down(
        seed in any::<u64>(),
        n in 3usize..=7,
        leaver in any::<prop::sample::Index>(),
    ) {
        let mut world = converged(seed, n);
        let leaver = leaver.index(n);
        world.leave(leaver);
        world.run_for(bound(n) * 2);
        assert_clean(&world, check::left_never_down::check(world.history(), bound(n)));
        for i in world.live() {
            prop_assert_eq!(world.state_seen(i, leaver), Some(MemberState::Left));
        }
        assert_clean(&world, check::one_view_after_heal::check(world.history(), bound(n)));
    }
}

proptest! {
    #![proptest_config(cases(12))]

    /// The leaver's goodbye to one member is lost (a full cut, say): the others pass it on.
    #[test]
    fn a_leave_lost_on_one_link_is_still_seen_as_left(
        seed in any::<u64>(),
        n in 3usize..=7,
        pick in any::<(prop::sample::Index, prop::sample::Index)>(),
    ) {
        let leaver = pick.0.index(n);
        let deaf = (leaver + 1 + pick.1.index(n - 1)) % n;
        leave_lost_on_one_link(seed, n, leaver, deaf);
    }
}

/// `leaver` leaves while every datagram from it to `deaf` is lost; everyone sees it left.
fn leave_lost_on_one_link(seed: u64, n: usize, leaver: usize, deaf: usize) {
    let mut world = converged(seed, n);
    world.drop(leaver, deaf, 1.0);
    world.leave(leaver);
    world.run_for(bound(n) * 2);
    assert_clean(
        &world,
        check::left_never_down::check(world.history(), bound(n)),
    );
    for i in world.live() {
        assert_eq!(
            world.state_seen(i, leaver),
            Some(MemberState::Left),
            "seed {seed}"
        );
    }
}

/// The deaf node got the leaver's "I am down" in foca gossip from a member that had relayed
/// the goodbye in a datagram of its own just before; the gossip overtook the relay, and the
/// deaf node saw the leaver down 0.3 ms before it saw it left.
#[test]
fn a_relayed_goodbye_overtaken_by_the_gossip_of_the_departure_is_still_a_leave() {
    leave_lost_on_one_link(2065803316761366451, 4, 3, 1);
}
