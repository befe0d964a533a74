//! Exact-change tests of [`Ownership`] over states built by applying commands.

use std::time::{Duration, Instant};

use super::*;
use crate::consensus::{ClusterState, Command, MemberInfo, Outcome};

const D: Domain = Domain::Locks;

fn state(nodes: u64) -> ClusterState {
    let mut s = ClusterState::new();
    for r in 1..=nodes {
        let _ = s.apply(&Command::Register {
            replica: ReplicaId(r),
            info: MemberInfo {
                name: format!("n{r}"),
                addr: "127.0.0.1:1".parse().unwrap(),
                incarnation: 1,
            },
        });
    }
    s
}

fn assign(s: &mut ClusterState, slot: u16, to: u64) -> Outcome {
    let generation = s.slot(D, slot).unwrap().generation;
    s.apply(&Command::Assign {
        domain: D,
        slot,
        generation,
        to: ReplicaId(to),
    })
}

fn entitled(now: Instant) -> Option<Entitlement> {
    Some(Entitlement {
        epoch: 1,
        until: now + Duration::from_secs(1),
    })
}

#[test]
fn a_slot_given_from_nobody_is_served_fresh_with_tokens_from_its_block() {
    let mut s = state(1);
    let mut o = Ownership::new(ReplicaId(1), D);
    assign(&mut s, 3, 1);
    assert_eq!(o.update(&s, Some(1)), vec![Change::ServeFresh { slot: 3 }]);
    let now = Instant::now();
    let first = o.issue(3, now, entitled(now)).unwrap();
    assert_eq!(first, s.slot(D, 3).unwrap().block.0);
    assert_eq!(o.issue(3, now, entitled(now)), Some(first + 1));
    // Not this node's slot, or no entitlement: no token.
    assert_eq!(o.issue(4, now, entitled(now)), None);
    assert_eq!(
        o.issue(3, now + Duration::from_secs(2), entitled(now)),
        None
    );
    assert_eq!(o.update(&s, Some(1)), vec![]);
}

#[test]
fn a_planned_move_hands_the_table_over_and_the_new_owner_waits_for_it() {
    let mut s = state(2);
    let (mut a, mut b) = (
        Ownership::new(ReplicaId(1), D),
        Ownership::new(ReplicaId(2), D),
    );
    assign(&mut s, 0, 1);
    let _ = a.update(&s, Some(1));
    assign(&mut s, 0, 2);
    let generation = s.slot(D, 0).unwrap().generation;
    assert_eq!(
        a.update(&s, Some(1)),
        vec![Change::HandOver {
            slot: 0,
            to: ReplicaId(2),
            generation
        }]
    );
    assert_eq!(b.update(&s, Some(1)), vec![]);
    let now = Instant::now();
    assert!(!b.may_serve(0, now, entitled(now)));
    assert!(!a.may_serve(0, now, entitled(now)));
    // A hand-over for another generation is not the one awaited.
    assert_eq!(b.received(&s, 0, generation + 1), None);
    let accept = b.received(&s, 0, generation).unwrap();
    assert!(b.may_serve(0, now, entitled(now)));
    let _ = s.apply(&accept);
    assert_eq!(a.update(&s, Some(1)), vec![Change::Handed { slot: 0 }]);
    assert_eq!(b.update(&s, Some(1)), vec![]);
}

#[test]
fn the_new_owner_serves_fresh_once_the_old_owners_epoch_ends() {
    let mut s = state(2);
    let mut b = Ownership::new(ReplicaId(2), D);
    assign(&mut s, 0, 1);
    assign(&mut s, 0, 2);
    assert_eq!(b.update(&s, Some(1)), vec![]);
    let _ = s.apply(&Command::Revoke {
        replica: ReplicaId(1),
        epoch: 1,
        seq: 0,
    });
    assert_eq!(b.update(&s, Some(1)), vec![Change::ServeFresh { slot: 0 }]);
}

#[test]
fn an_ended_epoch_drops_every_slot() {
    let mut s = state(1);
    let mut a = Ownership::new(ReplicaId(1), D);
    assign(&mut s, 0, 1);
    assign(&mut s, 1, 1);
    let _ = a.update(&s, Some(1));
    let _ = s.apply(&Command::Revoke {
        replica: ReplicaId(1),
        epoch: 1,
        seq: 0,
    });
    assert_eq!(
        a.update(&s, Some(1)),
        vec![Change::Drop { slot: 0 }, Change::Drop { slot: 1 }]
    );
    assert_eq!(a.serving().count(), 0);
}

#[test]
fn a_slot_given_back_before_its_hand_over_finished_resumes_with_its_table() {
    let mut s = state(3);
    let mut a = Ownership::new(ReplicaId(1), D);
    assign(&mut s, 0, 1);
    let _ = a.update(&s, Some(1));
    assign(&mut s, 0, 2);
    let _ = a.update(&s, Some(1));
    let _ = s.apply(&Command::Revoke {
        replica: ReplicaId(2),
        epoch: 1,
        seq: 0,
    });
    assign(&mut s, 0, 1);
    assert_eq!(a.update(&s, Some(1)), vec![Change::Resume { slot: 0 }]);
}

#[test]
fn a_block_three_quarters_used_asks_for_another_once() {
    let mut s = state(1);
    let mut a = Ownership::new(ReplicaId(1), D);
    assign(&mut s, 0, 1);
    let _ = a.update(&s, Some(1));
    let now = Instant::now();
    for _ in 0..(TOKEN_BLOCK * 3 / 4) {
        a.issue(0, now, entitled(now)).unwrap();
    }
    let asked = a.extensions();
    assert_eq!(asked.len(), 1);
    assert!(a.extensions().is_empty());
    let before = a.issue(0, now, entitled(now)).unwrap();
    let _ = s.apply(&asked[0]);
    let _ = a.update(&s, Some(1));
    let after = a.issue(0, now, entitled(now)).unwrap();
    assert!(after > before);
    assert_eq!(after, s.slot(D, 0).unwrap().block.0);
}

#[test]
fn a_lease_never_outlives_the_entitlement() {
    let now = Instant::now();
    let e = Entitlement {
        epoch: 1,
        until: now + Duration::from_millis(300),
    };
    assert_eq!(
        Ownership::lease(now, e, Duration::from_secs(1)),
        Duration::from_millis(300)
    );
    assert_eq!(
        Ownership::lease(now, e, Duration::from_millis(100)),
        Duration::from_millis(100)
    );
}

#[test]
fn a_slot_given_back_after_another_node_served_it_waits_for_that_nodes_table() {
    // Found by the simulator: node 1 handed slot 0 to node 2, which served it; the slot came
    // back to node 1 before node 1 had applied node 2's acceptance.
    let mut s = state(2);
    let mut a = Ownership::new(ReplicaId(1), D);
    assign(&mut s, 0, 1);
    let _ = a.update(&s, Some(1));
    assign(&mut s, 0, 2);
    let _ = a.update(&s, Some(1));
    let generation = s.slot(D, 0).unwrap().generation;
    let _ = s.apply(&Command::Accept {
        domain: D,
        slot: 0,
        generation,
    });
    assign(&mut s, 0, 1);
    assert_eq!(a.update(&s, Some(1)), vec![]);
    assert!(matches!(a.view(0), SlotView::Awaiting { .. }));
}
