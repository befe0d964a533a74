//! Exact-output tests of `MembershipCore`: a core in a named state, one input, and the literal
//! list of outputs it asks for.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{addr, ident};
use crate::config::MembershipTimings;
use crate::membership::{
    GossipKey, Member, MemberEvent, MemberState, MembershipCore, NodeIdentity, Output, PacketError,
    PacketKind,
};

const REFUSAL: &[u8] = b"CO\x01\x03";

fn key() -> GossipKey {
    GossipKey::from_cookie("exact")
}

fn core(n: u8) -> MembershipCore {
    MembershipCore::new(ident(n), MembershipTimings::default(), 3, key(), n.into())
}

fn drain(core: &mut MembershipCore) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

fn events(outputs: &[Output]) -> Vec<MemberEvent> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn sends(outputs: &[Output]) -> Vec<(SocketAddr, PacketKind)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send { to, packet } => Some((*to, key().open(packet).expect("sealed").0)),
            _ => None,
        })
        .collect()
}

/// Hands every datagram `from` queued to `to`; says whether there were any.
fn carry(from: &mut MembershipCore, to: &mut MembershipCore, now: Instant) -> bool {
    let mut moved = false;
    for out in drain(from) {
        if let Output::Send { packet, .. } = out {
            to.handle_packet(now, from.local().addr, &packet);
            moved = true;
        }
    }
    moved
}

/// Carries datagrams between `a` and `b` until both are quiet.
fn pump(a: &mut MembershipCore, b: &mut MembershipCore, now: Instant) {
    while carry(a, b, now) | carry(b, a, now) {}
}

/// Nodes 1 and 2, joined and quiet: each lists the other up.
fn pair(now: Instant) -> (MembershipCore, MembershipCore) {
    let (mut a, mut b) = (core(1), core(2));
    a.join(now, &[]);
    b.join(now, &[addr(1)]);
    pump(&mut a, &mut b, now);
    assert_eq!((a.up_count(), b.up_count()), (2, 2));
    (a, b)
}

/// Nodes 1, 2 and 3, joined and quiet: each lists the others up.
fn trio(now: Instant) -> [MembershipCore; 3] {
    let mut cores = [core(1), core(2), core(3)];
    cores[0].join(now, &[]);
    cores[1].join(now, &[addr(1)]);
    cores[2].join(now, &[addr(1)]);
    route(&mut cores, now);
    let mut t = now;
    while cores.iter().any(|c| c.up_count() < 3) {
        assert!(t < now + Duration::from_secs(30), "the trio never met");
        t += Duration::from_millis(100);
        for c in &mut cores {
            c.handle_timeout(t);
        }
        route(&mut cores, t);
    }
    cores
}

/// Delivers every queued datagram to the core it is addressed to, until all are quiet.
fn route(cores: &mut [MembershipCore], now: Instant) {
    loop {
        let mut moved = false;
        for i in 0..cores.len() {
            let from = cores[i].local().addr;
            for out in drain(&mut cores[i]) {
                if let Output::Send { to, packet } = out
                    && let Some(j) = cores.iter().position(|c| c.local().addr == to)
                {
                    cores[j].handle_packet(now, from, &packet);
                    moved = true;
                }
            }
        }
        if !moved {
            return;
        }
    }
}

fn leave_packet(who: &NodeIdentity) -> Vec<u8> {
    key().seal(
        PacketKind::Leave,
        &crate::wire::encode_payload(who).expect("encodes"),
    )
}

// The cores only compare instants, so any origin will do.
fn t0() -> Instant {
    Instant::now()
}

#[test]
fn joining_without_seeds_is_a_cluster_of_one_that_says_nothing() {
    let now = t0();
    let mut a = core(1);
    a.join(now, &[]);
    assert_eq!(drain(&mut a), vec![]);
    assert_eq!(a.local().state, MemberState::Up);
    assert_eq!(a.up_ids(), vec![ident(1).id]);
    assert_eq!(a.poll_timeout(), Some(now + Duration::from_secs(1)));
}

#[test]
fn joining_announces_once_to_each_seed_but_itself() {
    let mut a = core(1);
    a.join(t0(), &[addr(1), addr(2), addr(3)]);
    let out = drain(&mut a);
    assert_eq!(
        sends(&out),
        vec![(addr(2), PacketKind::Gossip), (addr(3), PacketKind::Gossip)]
    );
    assert_eq!(out.len(), 2);
    assert_eq!(a.local().state, MemberState::Joining);
    assert_eq!(a.up_count(), 0);
}

#[test]
fn junk_is_counted_every_time_and_reported_once_a_second_per_sender() {
    let now = t0();
    let mut a = core(1);
    let from = addr(9);
    let rejected = Output::Rejected {
        from,
        error: PacketError::Malformed,
    };
    a.handle_packet(now, from, b"hello");
    assert_eq!(drain(&mut a), vec![rejected.clone()]);
    a.handle_packet(now + Duration::from_millis(500), from, b"hello");
    assert_eq!(drain(&mut a), vec![]);
    a.handle_packet(now + Duration::from_secs(1), from, b"");
    assert_eq!(drain(&mut a), vec![rejected]);
    assert_eq!(a.stats().malformed, 3);
    assert_eq!(a.stats().packets_in, 3);
    assert_eq!(a.members().len(), 1);
}

#[test]
fn a_packet_with_another_cookie_is_rejected_and_answered_with_a_refusal() {
    let mut a = core(1);
    let from = addr(9);
    let forged = GossipKey::from_cookie("other").seal(PacketKind::Gossip, b"swim");
    a.handle_packet(t0(), from, &forged);
    assert_eq!(
        drain(&mut a),
        vec![
            Output::Rejected {
                from,
                error: PacketError::BadTag
            },
            Output::Send {
                to: from,
                packet: REFUSAL.to_vec()
            },
        ]
    );
    assert_eq!((a.stats().bad_tag, a.stats().packets_out), (1, 1));
}

#[test]
fn a_refusal_tells_the_shell_that_our_cookie_is_wrong() {
    let mut a = core(1);
    a.handle_packet(t0(), addr(2), REFUSAL);
    assert_eq!(drain(&mut a), vec![Output::RefusedBy(addr(2))]);
    assert_eq!(a.stats().refusals_received, 1);
}

#[test]
fn a_blocked_sender_is_dropped_and_counted() {
    let mut a = core(1);
    a.set_blocked(HashSet::from([addr(2)]));
    a.handle_packet(t0(), addr(2), b"anything");
    assert_eq!(drain(&mut a), vec![]);
    assert_eq!(a.stats().dropped_by_fault, 1);
    assert_eq!(a.stats().malformed, 0);
}

#[test]
fn a_leave_from_a_known_member_gives_node_left_once() {
    let now = t0();
    let (_a, mut b) = pair(now);
    b.handle_packet(now, addr(1), &leave_packet(&ident(1)));
    let left = Member::from_identity(&ident(1), MemberState::Left);
    assert_eq!(
        drain(&mut b),
        vec![Output::Event(MemberEvent::NodeLeft(left))]
    );
    b.handle_packet(now, addr(1), &leave_packet(&ident(1)));
    assert_eq!(drain(&mut b), vec![]);
    assert_eq!(b.up_count(), 1);
}

#[test]
fn a_leave_about_an_unknown_node_changes_nothing() {
    let now = t0();
    let (_a, mut b) = pair(now);
    b.handle_packet(now, addr(3), &leave_packet(&ident(3)));
    assert_eq!(drain(&mut b), vec![]);
    assert_eq!(b.members().len(), 2);
}

#[test]
fn leaving_tells_every_up_member_directly_then_gossips() {
    let now = t0();
    let (mut a, _b) = pair(now);
    a.leave(now);
    let out = drain(&mut a);
    assert_eq!(
        sends(&out),
        vec![(addr(2), PacketKind::Leave), (addr(2), PacketKind::Gossip)]
    );
    assert_eq!(a.local().state, MemberState::Left);
}

/// Found by the simulator: when foca's goodbye gossip overtakes the Leave packet (or the Leave
/// packet is lost), the peer must still report a leave, not a failure.
#[test]
fn goodbye_gossip_alone_gives_node_left_and_no_node_down() {
    let now = t0();
    let (mut a, mut b) = pair(now);
    a.leave(now);
    for out in drain(&mut a) {
        if let Output::Send { packet, .. } = out
            && key().open(&packet).map(|(k, _)| k) == Ok(PacketKind::Gossip)
        {
            b.handle_packet(now, addr(1), &packet);
        }
    }
    let left = Member::from_identity(&ident(1), MemberState::Left);
    assert_eq!(events(&drain(&mut b)), vec![MemberEvent::NodeLeft(left)]);
    assert_eq!(b.up_count(), 1);
}

/// Found by the simulator: the leaver's goodbye to one member is lost. Whoever heard it
/// first-hand passes it on, once; second-hand news is not passed on again.
#[test]
fn a_goodbye_heard_first_hand_is_passed_on_once() {
    let now = t0();
    let [mut a, mut b, mut c] = trio(now);
    a.leave(now);
    for out in drain(&mut a) {
        if let Output::Send { to, packet } = out
            && to == addr(2)
            && key().open(&packet).map(|(k, _)| k) == Ok(PacketKind::Leave)
        {
            b.handle_packet(now, addr(1), &packet);
        }
    }
    let left = Member::from_identity(&ident(1), MemberState::Left);
    let relayed = drain(&mut b);
    assert_eq!(events(&relayed), vec![MemberEvent::NodeLeft(left.clone())]);
    assert_eq!(sends(&relayed), vec![(addr(3), PacketKind::Leave)]);
    for out in relayed {
        if let Output::Send { packet, .. } = out {
            c.handle_packet(now, addr(2), &packet);
        }
    }
    let heard = drain(&mut c);
    assert_eq!(events(&heard), vec![MemberEvent::NodeLeft(left)]);
    assert_eq!(sends(&heard), vec![]);
}

/// The seed may list a joining node before the node hears back: leaving tells the seed too.
#[test]
fn leaving_while_still_joining_tells_the_seeds() {
    let now = t0();
    let mut b = core(2);
    b.join(now, &[addr(1)]);
    drain(&mut b);
    b.leave(now);
    assert_eq!(sends(&drain(&mut b)), vec![(addr(1), PacketKind::Leave)]);
}
