//! Junk datagrams never panic a core, are counted in its stats, and change nothing.

use std::net::SocketAddr;

use proptest::prelude::*;

use super::{assert_clean, bound, cases, converged};
use crate::membership::{GossipKey, MembershipStats, PacketKind};
use crate::sim::{World, check};

#[derive(Debug, Clone)]
enum Junk {
    /// Any bytes at all.
    Raw(Vec<u8>),
    /// A Colony header with an unsigned body: a forgery or another version.
    Framed(u8, Vec<u8>),
    /// A real packet with one bit flipped.
    Flipped(Vec<u8>, usize),
}

fn junk() -> impl Strategy<Value = Junk> {
    let body = || prop::collection::vec(any::<u8>(), 0..1500);
    prop_oneof![
        body().prop_map(Junk::Raw),
        (0u8..6, body()).prop_map(|(k, b)| Junk::Framed(k, b)),
        (body(), any::<usize>()).prop_map(|(b, bit)| Junk::Flipped(b, bit)),
    ]
}

fn bytes(junk: &Junk, key: &GossipKey) -> Vec<u8> {
    match junk {
        Junk::Raw(b) => b.clone(),
        Junk::Framed(kind, b) => [b"CO\x01".as_slice(), &[*kind], b].concat(),
        Junk::Flipped(b, bit) => {
            let mut p = key.seal(PacketKind::Gossip, b);
            let bit = bit % (p.len() * 8);
            p[bit / 8] ^= 1 << (bit % 8);
            p
        }
    }
}

/// A packet kind (0 to 2) and any body, to seal with the right key.
fn sealed() -> impl Strategy<Value = (u8, Vec<u8>)> {
    (0u8..3, prop::collection::vec(any::<u8>(), 0..600))
}

fn refused(s: MembershipStats) -> u64 {
    s.malformed + s.bad_tag + s.swim_errors + s.refusals_received
}

proptest! {
    #![proptest_config(cases(10))]

    #[test]
    fn junk_never_panics_is_counted_and_changes_nothing(
        seed in any::<u64>(),
        n in 3usize..=5,
        datagrams in prop::collection::vec((any::<prop::sample::Index>(), junk()), 1..40),
    ) {
        let mut world = converged(seed, n);
        let key = GossipKey::from_cookie(&world.config().cookie);
        let from: SocketAddr = "192.0.2.1:9".parse().unwrap();
        let before: Vec<_> = (0..n)
            .map(|i| (world.core(i).stats(), world.core(i).members()))
            .collect();
        let mut sent = vec![0u64; n];
        for (target, junk) in &datagrams {
            let i = target.index(n);
            world.inject(i, from, &bytes(junk, &key));
            sent[i] += 1;
        }
        for i in 0..n {
            let (stats, members) = &before[i];
            let now = world.core(i).stats();
            prop_assert_eq!(refused(now) - refused(*stats), sent[i]);
            prop_assert_eq!(now.packets_in - stats.packets_in, sent[i]);
            prop_assert_eq!(&world.core(i).members(), members);
        }
        world.run_for(bound(n));
        prop_assert!(world.converged());
        assert_clean(&world, check::no_false_down::check(world.history(), bound(n)));
    }

    /// Even authenticated garbage (a cookie holder sending nonsense) must not panic a core.
    #[test]
    fn sealed_garbage_never_panics(
        seed in any::<u64>(),
        bodies in prop::collection::vec(sealed(), 1..20),
    ) {
        let mut world = World::start(seed, 3);
        let key = GossipKey::from_cookie(&world.config().cookie);
        let kinds = [PacketKind::Gossip, PacketKind::Leave, PacketKind::Refused];
        for (k, body) in &bodies {
            let from = world.addr(1);
            world.inject(0, from, &key.seal(kinds[usize::from(*k)], body));
        }
        world.run_for(bound(3));
    }
}
