//! Exact-output tests of the lock table (DESIGN: "at most one live holder per name", "fencing
//! tokens per name strictly increase", "a crashed holder's lock is free again within a bounded
//! time").

use std::time::{Duration, Instant};

use colony_runtime::NodeId;
use proptest::prelude::*;

use super::core::{Answer, Holder, LockTable, Output, TableConfig, Wait};
use super::tokens::EPOCH_SHIFT;

const LEASE: Duration = Duration::from_secs(3);
const WALL_MS: u64 = 1_000_000;

fn me() -> NodeId {
    NodeId::from_u128(1)
}

fn holder(node: u128, guard: u64) -> Holder {
    Holder {
        node: NodeId::from_u128(node),
        guard,
    }
}

/// A table that has owned everything, alone, for long enough to grant.
fn solo(t0: Instant) -> LockTable {
    let mut t = LockTable::new(
        me(),
        TableConfig {
            lease: LEASE,
            takeover_delay: Duration::ZERO,
        },
    );
    t.set_view(t0, WALL_MS, vec![me()], true);
    t
}

/// A table where holder (1, 1) holds `a` (request 1, first token) and (2, 1) waits for it
/// (request 2, a minute), outputs drained.
fn held_with_a_waiter(t0: Instant) -> LockTable {
    let mut t = solo(t0);
    t.acquire(t0, "a", holder(1, 1), 1, Wait::No);
    t.acquire(
        t0,
        "a",
        holder(2, 1),
        2,
        Wait::Until(t0 + Duration::from_secs(60)),
    );
    drain(&mut t);
    t
}

fn drain(t: &mut LockTable) -> Vec<(u64, Answer)> {
    std::iter::from_fn(|| t.poll_output())
        .map(|Output::Reply { request, answer }| (request, answer))
        .collect()
}

fn granted(token: u64) -> Answer {
    granted_after(token, Duration::ZERO)
}

fn granted_after(token: u64, waited: Duration) -> Answer {
    Answer::Granted {
        token,
        waited_us: waited.as_micros() as u64,
    }
}

fn first_token() -> u64 {
    WALL_MS << EPOCH_SHIFT
}

/// The token of the first grant made `after` the start.
fn token_at(after: Duration) -> u64 {
    (WALL_MS + after.as_millis() as u64) << EPOCH_SHIFT
}

#[test]
fn a_free_name_is_granted_and_a_second_try_is_busy() {
    let t0 = Instant::now();
    let mut t = solo(t0);
    t.acquire(t0, "a", holder(1, 1), 10, Wait::No);
    t.acquire(t0, "a", holder(2, 1), 11, Wait::No);
    assert_eq!(
        drain(&mut t),
        [(10, granted(first_token())), (11, Answer::Busy)]
    );
}

#[test]
fn waiters_are_granted_in_arrival_order_with_increasing_tokens() {
    let t0 = Instant::now();
    let mut t = solo(t0);
    let until = Wait::Until(t0 + Duration::from_secs(60));
    t.acquire(t0, "a", holder(1, 1), 1, Wait::No);
    t.acquire(t0, "a", holder(2, 1), 2, until);
    t.acquire(t0, "a", holder(3, 1), 3, until);
    t.release(t0, "a", holder(1, 1), first_token(), 4);
    t.release(t0, "a", holder(2, 1), first_token() + 1, 5);
    assert_eq!(
        drain(&mut t),
        [
            (1, granted(first_token())),
            (4, Answer::Released),
            (2, granted(first_token() + 1)),
            (5, Answer::Released),
            (3, granted(first_token() + 2)),
        ]
    );
}

#[test]
fn a_wait_that_runs_out_is_answered_timed_out() {
    let t0 = Instant::now();
    let mut t = solo(t0);
    t.acquire(t0, "a", holder(1, 1), 1, Wait::No);
    t.acquire(
        t0,
        "a",
        holder(2, 1),
        2,
        Wait::Until(t0 + Duration::from_secs(1)),
    );
    drain(&mut t);
    assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    t.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(drain(&mut t), [(2, Answer::TimedOut)]);
    assert_eq!(t.waiting("a"), 0);
}

#[test]
fn an_unrenewed_lease_ends_and_the_next_waiter_gets_the_lock() {
    let t0 = Instant::now();
    let mut t = held_with_a_waiter(t0);
    assert_eq!(t.poll_timeout(), Some(t0 + LEASE));
    t.handle_timeout(t0 + LEASE);
    assert_eq!(drain(&mut t), [(2, granted_after(token_at(LEASE), LEASE))]);
    // The crashed holder's late renewal is refused.
    t.renew(t0 + LEASE, "a", holder(1, 1), first_token(), 3);
    assert_eq!(drain(&mut t), [(3, Answer::NotHeld)]);
}

#[test]
fn renewal_extends_the_lease_and_a_wrong_token_is_refused() {
    let t0 = Instant::now();
    let mut t = solo(t0);
    t.acquire(t0, "a", holder(1, 1), 1, Wait::No);
    let half = t0 + LEASE / 2;
    t.renew(half, "a", holder(1, 1), first_token(), 2);
    t.renew(half, "a", holder(1, 1), first_token() + 99, 3);
    assert_eq!(
        drain(&mut t)[1..],
        [(2, Answer::Renewed), (3, Answer::NotHeld)]
    );
    t.handle_timeout(t0 + LEASE);
    assert_eq!(
        t.holder("a").map(|(h, _)| h),
        Some(holder(1, 1)),
        "renewed lease still runs"
    );
    t.handle_timeout(half + LEASE);
    assert_eq!(t.holder("a"), None);
}

#[test]
fn unlock_after_the_lease_ended_is_not_held() {
    let t0 = Instant::now();
    let mut t = solo(t0);
    t.acquire(t0, "a", holder(1, 1), 1, Wait::No);
    t.handle_timeout(t0 + LEASE);
    t.release(t0 + LEASE, "a", holder(1, 1), first_token(), 2);
    assert_eq!(drain(&mut t)[1..], [(2, Answer::NotHeld)]);
}

#[test]
fn a_repeated_acquire_by_the_holder_returns_the_same_token() {
    let t0 = Instant::now();
    let mut t = solo(t0);
    t.acquire(t0, "a", holder(1, 1), 1, Wait::No);
    t.acquire(t0, "a", holder(1, 1), 2, Wait::No);
    assert_eq!(
        drain(&mut t),
        [(1, granted(first_token())), (2, granted(first_token()))]
    );
}

#[test]
fn a_re_sent_wait_keeps_its_place_in_the_queue() {
    let t0 = Instant::now();
    let mut t = solo(t0);
    let until = Wait::Until(t0 + Duration::from_secs(60));
    t.acquire(t0, "a", holder(1, 1), 1, Wait::No);
    t.acquire(t0, "a", holder(2, 1), 2, until);
    t.acquire(t0, "a", holder(3, 1), 3, until);
    t.acquire(t0, "a", holder(2, 1), 4, until); // node 2's long poll comes back
    t.release(t0, "a", holder(1, 1), first_token(), 5);
    assert_eq!(
        drain(&mut t),
        [
            (1, granted(first_token())),
            (2, Answer::Cancelled),
            (5, Answer::Released),
            (4, granted(first_token() + 1)),
        ]
    );
}

#[test]
fn cancel_withdraws_a_waiter_and_releases_a_raced_grant() {
    let t0 = Instant::now();
    let mut t = solo(t0);
    let until = Wait::Until(t0 + Duration::from_secs(60));
    t.acquire(t0, "a", holder(1, 1), 1, Wait::No);
    t.acquire(t0, "a", holder(2, 1), 2, until);
    t.cancel(t0, "a", holder(2, 1), 3);
    t.cancel(t0, "a", holder(1, 1), 4);
    assert_eq!(
        drain(&mut t),
        [
            (1, granted(first_token())),
            (2, Answer::Cancelled),
            (3, Answer::Cancelled),
            (4, Answer::Cancelled),
        ]
    );
    assert!(t.is_empty());
}

/// Names this node owns in a view of nodes 1 and 2.
fn names_owned_by_me(n: usize) -> Vec<String> {
    let mut t = LockTable::new(
        me(),
        TableConfig {
            lease: LEASE,
            takeover_delay: LEASE,
        },
    );
    t.set_view(
        Instant::now(),
        WALL_MS,
        vec![me(), NodeId::from_u128(2)],
        true,
    );
    (0..)
        .map(|i| format!("name-{i}"))
        .filter(|name| t.owner(name) == Some(me()))
        .take(n)
        .collect()
}

/// A table of a node that has just seen node 2 join: it owns some names, with quorum, since `t0`.
fn just_took_over(t0: Instant, delay: Duration) -> LockTable {
    let mut t = LockTable::new(
        me(),
        TableConfig {
            lease: LEASE,
            takeover_delay: delay,
        },
    );
    t.set_view(t0, WALL_MS, vec![me(), NodeId::from_u128(2)], true);
    t
}

#[test]
fn a_new_owner_grants_nothing_until_the_takeover_delay_has_passed() {
    let t0 = Instant::now();
    let delay = Duration::from_secs(5);
    let name = &names_owned_by_me(1)[0];
    let mut t = just_took_over(t0, delay);
    t.acquire(t0, name, holder(2, 1), 1, Wait::No);
    t.acquire(
        t0,
        name,
        holder(2, 2),
        2,
        Wait::Until(t0 + Duration::from_secs(60)),
    );
    assert_eq!(drain(&mut t), [(1, Answer::Busy)]);
    assert_eq!(t.poll_timeout(), Some(t0 + delay));
    t.handle_timeout(t0 + delay);
    assert_eq!(drain(&mut t), [(2, granted_after(token_at(delay), delay))]);
}

#[test]
fn a_holder_re_asserting_during_the_takeover_delay_keeps_its_lock_and_raises_the_tokens() {
    let t0 = Instant::now();
    let delay = Duration::from_secs(5);
    let name = &names_owned_by_me(1)[0];
    let mut t = just_took_over(t0, delay);
    let old_token = (WALL_MS + 10_000) << EPOCH_SHIFT; // from an owner whose clock ran ahead
    t.renew(t0, name, holder(2, 9), old_token, 1);
    t.acquire(
        t0,
        name,
        holder(2, 1),
        2,
        Wait::Until(t0 + Duration::from_secs(60)),
    );
    assert_eq!(drain(&mut t), [(1, Answer::Renewed)]);
    t.release(
        t0 + Duration::from_secs(6),
        name,
        holder(2, 9),
        old_token,
        3,
    );
    assert_eq!(
        drain(&mut t),
        [
            (3, Answer::Released),
            (2, granted_after(old_token + 1, Duration::from_secs(6)))
        ]
    );
}

#[test]
fn an_owner_that_was_paused_grants_nothing_until_a_takeover_delay_after_it_woke() {
    let t0 = Instant::now();
    let delay = Duration::from_secs(5);
    let mut t = LockTable::new(
        me(),
        TableConfig {
            lease: LEASE,
            takeover_delay: delay,
        },
    );
    t.set_view(t0, WALL_MS, vec![me()], true);
    let awake = t0 + delay;
    t.acquire(awake, "a", holder(1, 1), 1, Wait::No);
    t.acquire(
        awake,
        "a",
        holder(2, 1),
        2,
        Wait::Until(awake + Duration::from_secs(60)),
    );
    assert_eq!(drain(&mut t), [(1, granted(token_at(delay)))]);
    // Paused for ten seconds while holding: the lease ran out meanwhile, but others may have
    // taken the name over, so the waiter must not get it from this stale owner yet.
    let woke = awake + Duration::from_secs(10);
    t.went_dark(awake, woke, WALL_MS + 10_000);
    t.handle_timeout(woke);
    assert_eq!(drain(&mut t), []);
    assert_eq!(t.poll_timeout(), Some(woke + delay));
    t.handle_timeout(woke + delay);
    let token = (WALL_MS + 10_000 + 5_000) << EPOCH_SHIFT;
    assert_eq!(
        drain(&mut t),
        [(2, granted_after(token, woke + delay - awake))]
    );
}

#[test]
fn losing_quorum_refuses_everything_and_drops_the_table() {
    let t0 = Instant::now();
    let mut t = held_with_a_waiter(t0);
    t.set_view(t0, WALL_MS, vec![me()], false);
    t.renew(t0, "a", holder(1, 1), first_token(), 3);
    t.acquire(t0, "b", holder(1, 2), 4, Wait::No);
    assert_eq!(
        drain(&mut t),
        [
            (2, Answer::NoQuorum),
            (3, Answer::NoQuorum),
            (4, Answer::NoQuorum)
        ]
    );
    assert!(t.is_empty());
}

#[test]
fn names_another_node_owns_are_redirected_and_moved_waiters_told() {
    let t0 = Instant::now();
    let name = "moves";
    let mut t = solo(t0);
    t.acquire(t0, name, holder(1, 1), 1, Wait::No);
    t.acquire(
        t0,
        name,
        holder(2, 1),
        2,
        Wait::Until(t0 + Duration::from_secs(60)),
    );
    drain(&mut t);
    // Find a second node that takes this name over.
    let other = (2..1000)
        .map(NodeId::from_u128)
        .find(|n| colony_runtime::placement::owner_of(b"lock/moves", [me(), *n]) == Some(*n))
        .unwrap();
    t.set_view(t0, WALL_MS, vec![me(), other], true);
    t.acquire(t0, name, holder(3, 1), 3, Wait::No);
    let moved = Answer::NotOwner { owner: Some(other) };
    assert_eq!(drain(&mut t), [(2, moved.clone()), (3, moved)]);
    assert!(t.is_empty());
}

#[test]
fn ten_thousand_distinct_names_leave_no_residue() {
    let t0 = Instant::now();
    let mut t = solo(t0);
    for i in 0..10_000u64 {
        let name = format!("entity-{i}");
        t.acquire(t0, &name, holder(1, i), i, Wait::No);
        let Some(Output::Reply {
            answer: Answer::Granted { token, .. },
            ..
        }) = t.poll_output()
        else {
            panic!("not granted");
        };
        t.release(t0, &name, holder(1, i), token, i);
        drain(&mut t);
    }
    assert!(t.is_empty());
    assert_eq!(t.poll_timeout(), None, "no timer left behind");
}

#[derive(Debug, Clone)]
enum Op {
    Try(u8, u8),
    Wait(u8, u8, u8),
    Release(u8, u8),
    Renew(u8, u8),
    Cancel(u8, u8),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3u8, 0..4u8).prop_map(|(n, h)| Op::Try(n, h)),
        (0..3u8, 0..4u8, 1..10u8).prop_map(|(n, h, s)| Op::Wait(n, h, s)),
        (0..3u8, 0..4u8).prop_map(|(n, h)| Op::Release(n, h)),
        (0..3u8, 0..4u8).prop_map(|(n, h)| Op::Renew(n, h)),
        (0..3u8, 0..4u8).prop_map(|(n, h)| Op::Cancel(n, h)),
        (1..4000u16).prop_map(Op::Advance),
    ]
}

proptest! {
    /// Whatever the calls and the passing of time: at most one holder per name, each grant's
    /// token above every earlier one, and a holder is only replaced once its lease ended or it
    /// released.
    #[test]
    fn one_holder_at_a_time_and_tokens_only_grow(ops in proptest::collection::vec(op(), 1..200)) {
        let t0 = Instant::now();
        let mut t = solo(t0);
        let mut now = t0;
        let mut last_token = 0u64;
        let mut request = 0u64;
        // name -> (holder, token, lease end as the holder may assume it)
        let mut holds: std::collections::HashMap<String, (Holder, u64, Instant)> = Default::default();
        let mut pending: std::collections::HashMap<u64, (String, Holder, Instant)> = Default::default();
        for op in ops {
            request += 1;
            match op {
                Op::Try(n, h) => {
                    pending.insert(request, (format!("n{n}"), holder(2, h.into()), now));
                    t.acquire(now, &format!("n{n}"), holder(2, h.into()), request, Wait::No);
                }
                Op::Wait(n, h, s) => {
                    pending.insert(request, (format!("n{n}"), holder(2, h.into()), now));
                    let until = Wait::Until(now + Duration::from_secs(s.into()));
                    t.acquire(now, &format!("n{n}"), holder(2, h.into()), request, until);
                }
                Op::Release(n, h) => {
                    let name = format!("n{n}");
                    if let Some((hh, token, _)) = holds.get(&name).cloned()
                        && hh == holder(2, h.into())
                    {
                        holds.remove(&name);
                        t.release(now, &name, hh, token, request);
                    }
                }
                Op::Renew(n, h) => {
                    let name = format!("n{n}");
                    if let Some((hh, token, _)) = holds.get(&name).cloned()
                        && hh == holder(2, h.into())
                    {
                        pending.insert(request, (name.clone(), hh, now));
                        t.renew(now, &name, hh, token, request);
                    }
                }
                Op::Cancel(n, h) => {
                    let name = format!("n{n}");
                    if holds.get(&name).is_some_and(|(hh, ..)| *hh == holder(2, h.into())) {
                        holds.remove(&name);
                    }
                    t.cancel(now, &name, holder(2, h.into()), request);
                }
                Op::Advance(ms) => {
                    now += Duration::from_millis(ms.into());
                    t.handle_timeout(now);
                }
            }
            while let Some(Output::Reply { request, answer }) = t.poll_output() {
                let Some((name, h, sent)) = pending.remove(&request) else { continue };
                match answer {
                    Answer::Granted { token, waited_us } => {
                        let sent = sent + Duration::from_micros(waited_us);
                        if let Some((other, other_token, end)) = holds.get(&name)
                            && *other != h
                        {
                            prop_assert!(*end <= now, "{name} granted to {h:?} while {other:?} holds it until later");
                            prop_assert!(token > *other_token);
                        }
                        if holds.get(&name).is_none_or(|(o, ..)| *o != h) {
                            prop_assert!(token > last_token, "token {token} not above {last_token}");
                            last_token = token;
                        }
                        holds.insert(name, (h, token, sent + LEASE));
                    }
                    Answer::Renewed => {
                        if let Some(entry) = holds.get_mut(&name) {
                            entry.2 = sent + LEASE;
                        }
                    }
                    Answer::NotHeld => { holds.remove(&name); }
                    _ => {}
                }
            }
        }
    }
}
