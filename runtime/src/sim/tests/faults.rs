//! Random fault scripts: whatever happens, no false down while the network is healthy, and one
//! view once the faults stop.

use std::time::Duration;

use proptest::prelude::*;

use super::{assert_clean, bound, cases, verdict_window};
use crate::sim::{Op, World, check};

const N: usize = 5;

fn fault() -> impl Strategy<Value = Op> {
    let node = || 0..N;
    let ms = |lo: u64, hi: u64| (lo..hi).prop_map(Duration::from_millis);
    prop_oneof![
        node().prop_map(Op::Kill),
        node().prop_map(Op::Restart),
        node().prop_map(Op::Leave),
        (node(), ms(50, 6000)).prop_map(|(i, d)| Op::Pause(i, d)),
        (node(), node()).prop_map(|(a, b)| Op::Cut(a, b)),
        node().prop_map(Op::Isolate),
        Just((0..N).collect::<Vec<usize>>())
            .prop_shuffle()
            .prop_flat_map(|order| (Just(order), 1..N))
            .prop_map(|(order, k)| Op::Partition(vec![order[..k].to_vec(), order[k..].to_vec()])),
        (node(), node(), 0.05f64..0.6).prop_map(|(a, b, p)| Op::Drop(a, b, p)),
        (node(), node(), ms(10, 400)).prop_map(|(a, b, d)| Op::Delay(a, b, d)),
        Just(Op::Heal),
    ]
}

fn script() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        (fault(), (0u64..4000).prop_map(Duration::from_millis)),
        1..6,
    )
    .prop_map(|steps| {
        let mut ops = vec![Op::RunFor(Duration::from_secs(1))];
        for (op, pause) in steps {
            ops.push(op);
            ops.push(Op::RunFor(pause));
        }
        ops.push(Op::Heal);
        ops
    })
}

proptest! {
    #![proptest_config(cases(12))]

    #[test]
    fn after_any_faults_and_a_heal_every_node_settles_on_one_view(
        seed in any::<u64>(),
        ops in script(),
    ) {
        let mut world = World::start(seed, N);
        world.play(&ops);
        let settle = bound(N) * 3;
        world.run_for(settle + bound(N));
        let h = world.history();
        assert_clean(&world, check::no_false_down::check(h, verdict_window()));
        assert_clean(&world, check::one_view_after_heal::check(h, settle));
        assert_clean(&world, check::renewal_needs_down::check(h));
        let split_settle = bound(N);
        assert_clean(&world, check::quorum_on_one_side_only::check(h, N, split_settle));
    }
}
