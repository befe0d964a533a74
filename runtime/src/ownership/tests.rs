//! Exact-change tests of [`Ownership`] over states built by applying commands.

use std::time::{Duration, Instant};

use super::*;
use crate::consensus::{ClusterState, Command, MemberInfo, Outcome};

const D: Domain = Domain::Locks;

fn state(nodes: u64) -> ClusterState {
    crate::sim::registered(nodes)
}

fn register(s: &mut ClusterState, r: u64, incarnation: u64) {
    let _ = s.apply(&Command::Register {
        replica: ReplicaId(r),
        info: MemberInfo {
            name: format!("n{r}"),
            addr: "127.0.0.1:1".parse().unwrap(),
            incarnation,
        },
    });
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

/// Ends member `r`'s first epoch.
fn revoke(s: &mut ClusterState, r: u64) {
    let _ = s.apply(&Command::Revoke {
        replica: ReplicaId(r),
        epoch: 1,
        seq: 0,
    });
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
    assert!(!b.received(&s, 0, generation + 1, now));
    assert!(b.received(&s, 0, generation, now));
    assert!(b.may_serve(0, now, entitled(now)));
    let accept = b.proposals(entitled(now));
    assert_eq!(
        accept,
        vec![Command::Accept {
            domain: D,
            slot: 0,
            generation
        }]
    );
    assert!(b.proposals(entitled(now)).is_empty(), "asked once");
    let _ = s.apply(&accept[0]);
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
    revoke(&mut s, 1);
    assert_eq!(b.update(&s, Some(1)), vec![Change::ServeFresh { slot: 0 }]);
}

#[test]
fn an_ended_epoch_drops_every_slot() {
    let mut s = state(1);
    let mut a = Ownership::new(ReplicaId(1), D);
    assign(&mut s, 0, 1);
    assign(&mut s, 1, 1);
    let _ = a.update(&s, Some(1));
    revoke(&mut s, 1);
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
    revoke(&mut s, 2);
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
    let asked = a.proposals(entitled(now));
    assert_eq!(asked.len(), 1);
    assert!(a.proposals(entitled(now)).is_empty());
    a.proposal_failed(&asked[0]);
    assert_eq!(
        a.proposals(entitled(now)),
        asked,
        "asked again after it failed"
    );
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

#[test]
fn a_hand_over_is_recorded_only_once_the_entitlement_outlasts_the_leases_it_carried() {
    // Found by the simulator: node 2 recorded a table carrying node 1's 800 ms lease, its own
    // entitlement ended 200 ms later, and the slot went back to node 1 fresh while the lease
    // still ran. Recorded only once node 2's entitlement outlasts it, the revocation comes
    // after the lease's end.
    let mut s = state(2);
    let mut b = Ownership::new(ReplicaId(2), D);
    assign(&mut s, 0, 1);
    assign(&mut s, 0, 2);
    let _ = b.update(&s, Some(1));
    let generation = s.slot(D, 0).unwrap().generation;
    let now = Instant::now();
    let lease_end = now + Duration::from_millis(1500);
    assert!(b.received(&s, 0, generation, lease_end));
    assert!(b.may_serve(0, now, entitled(now)), "it serves at once");
    assert!(b.proposals(entitled(now)).is_empty());
    assert!(b.proposals(None).is_empty());
    let later = now + Duration::from_millis(600);
    let accept = b.proposals(entitled(later));
    assert_eq!(accept.len(), 1);
    // A failed record is asked again; a recorded one is forgotten.
    b.proposal_failed(&accept[0]);
    assert_eq!(b.proposals(entitled(later)), accept);
    let _ = s.apply(&accept[0]);
    let _ = b.update(&s, Some(1));
    b.proposal_failed(&accept[0]);
    assert!(b.proposals(entitled(later)).is_empty());
}

#[test]
fn a_slot_moved_and_given_back_within_one_update_keeps_its_table() {
    // Found by the simulator: node 1 applied the move to node 2, node 2's revocation and the
    // move back in one batch; serving fresh dropped node 1's holds, which still ran.
    let mut s = state(2);
    let mut a = Ownership::new(ReplicaId(1), D);
    assign(&mut s, 0, 1);
    let _ = a.update(&s, Some(1));
    assign(&mut s, 0, 2);
    revoke(&mut s, 2);
    assign(&mut s, 0, 1);
    assert_eq!(a.update(&s, Some(1)), vec![Change::Resume { slot: 0 }]);
    // In a later epoch of this node, nothing of the old table is valid.
    let mut b = Ownership::new(ReplicaId(2), D);
    let mut s = state(2);
    assign(&mut s, 0, 2);
    let _ = b.update(&s, Some(1));
    revoke(&mut s, 2);
    register(&mut s, 2, 2);
    assign(&mut s, 0, 2);
    assert_eq!(b.update(&s, Some(2)), vec![Change::ServeFresh { slot: 0 }]);
}
