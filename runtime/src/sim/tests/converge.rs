//! Nodes converge from one seed, and a seed replays a run exactly.

use std::time::Duration;

use proptest::prelude::*;

use super::{assert_clean, bound, cases, converged};
use crate::sim::{Op, World, check};

proptest! {
    #![proptest_config(cases(12))]

    /// Every node lists every other node up, within the detection bound of starting together.
    #[test]
    fn nodes_started_together_converge(seed in any::<u64>(), n in 3usize..=7) {
        let mut world = converged(seed, n);
        world.run_for(bound(n));
        assert_clean(&world, check::no_false_down::check(world.history(), bound(n)));
        assert_clean(&world, check::one_view_after_heal::check(world.history(), bound(n)));
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let run = |seed| {
        let mut world = World::start(seed, 5);
        world.play(&[
            Op::RunFor(Duration::from_secs(1)),
            Op::Partition(vec![vec![0, 1], vec![2, 3, 4]]),
            Op::RunFor(Duration::from_secs(3)),
            Op::Heal,
            Op::Pause(3, Duration::from_secs(3)),
            Op::Drop(0, 2, 0.3),
            Op::RunFor(Duration::from_secs(2)),
            Op::Leave(1),
            Op::Kill(2),
            Op::RunFor(Duration::from_millis(300)),
            Op::Restart(1),
            Op::RunFor(Duration::from_secs(2)),
        ]);
        world.history().clone()
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}
