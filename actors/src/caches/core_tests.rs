//! Exact-output tests of the coherence core. Each names the DESIGN promise it serves
//! ("after a synchronous put or remove returns, no up node serves the old value", "asynchronous
//! replication keeps the order of one origin", "a node rejoining drops what may be stale").

use std::time::{Duration, Instant};

use colony_runtime::NodeId;
use proptest::prelude::*;

use super::core::{Change, ClearReason, CoherenceCore, CoreConfig, Lease, Output};
use super::msg::{Batch, Op, Stamp, SyncRequest};
use super::stamp::LOADED;

const A: NodeId = NodeId::from_u128(1);
const B: NodeId = NodeId::from_u128(2);
const C: NodeId = NodeId::from_u128(3);
const WALL: u64 = 1_700_000_000_000_000;
const LEASE: Duration = Duration::from_millis(400);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn drain(core: &mut CoherenceCore) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

fn core(me: NodeId, t0: Instant) -> CoherenceCore {
    let mut c = CoherenceCore::new(me, CoreConfig::default());
    c.handle_view(t0, [(A, false), (B, false)]);
    c
}

/// `reader` holds a lease from `writer` granted at `at`; both outputs drained.
fn leased(writer: &mut CoherenceCore, reader: &mut CoherenceCore, at: Instant) {
    let asks = drain(reader);
    let id = asks
        .iter()
        .find_map(|o| match o {
            Output::SendSync { id, .. } => Some(*id),
            _ => None,
        })
        .expect("a question");
    let answer = writer.handle_sync_request(at, B, SyncRequest {});
    reader.handle_sync_reply(at, WALL, A, id, answer);
    drain(reader);
    drain(writer);
}

/// A writer `A` and a reader `B` that holds a lease from it granted at the returned instant.
fn leased_pair() -> (Instant, CoherenceCore, CoherenceCore) {
    let t0 = Instant::now();
    let (mut writer, mut reader) = (core(A, t0), core(B, t0));
    leased(&mut writer, &mut reader, t0);
    (t0, writer, reader)
}

fn invalidate(seq: Option<u64>, stamp: Stamp) -> Batch {
    Batch {
        seq,
        dropped: 0,
        ops: vec![(
            "c".into(),
            Op::Invalidate {
                key: b"k".to_vec(),
                stamp,
            },
        )],
    }
}

#[test]
fn a_reader_serves_nothing_cached_before_its_first_lease_and_clears_when_it_gets_it() {
    let t0 = Instant::now();
    let mut writer = core(A, t0);
    let mut reader = core(B, t0);
    assert_eq!(drain(&mut reader), vec![Output::SendSync { to: A, id: 1 }]);
    assert_eq!(reader.lease(), Lease::Expired);
    let answer = writer.handle_sync_request(t0 + ms(1), B, SyncRequest {});
    reader.handle_sync_reply(t0 + ms(2), WALL, A, 1, answer);
    assert_eq!(
        drain(&mut reader),
        vec![Output::Clear(ClearReason::Joined(A))]
    );
    // The lease runs from when the question left.
    assert_eq!(reader.lease(), Lease::Until(t0 + LEASE));
}

#[test]
fn a_lease_runs_from_the_question_so_a_late_answer_grants_nothing() {
    let t0 = Instant::now();
    let mut writer = core(A, t0);
    let mut reader = core(B, t0);
    drain(&mut reader);
    let answer = writer.handle_sync_request(t0, B, SyncRequest {});
    // Held past the lease (a paused reader, a slow link): no lease from it.
    reader.handle_sync_reply(t0 + LEASE, WALL, A, 1, answer);
    drain(&mut reader);
    assert_eq!(reader.lease(), Lease::Expired);
}

#[test]
fn a_gap_in_the_writers_sequence_stops_renewals_and_the_lease_running_out_clears() {
    let (t0, mut writer, mut reader) = leased_pair();
    // Change 1 never reaches the reader (lost with a closed link).
    let lost = writer.stamp_sync(t0 + ms(10), WALL);
    assert_eq!(lost.seq, 1);
    reader.handle_timeout(t0 + ms(100));
    let asks = drain(&mut reader);
    assert_eq!(asks, vec![Output::SendSync { to: A, id: 2 }]);
    let answer = writer.handle_sync_request(t0 + ms(100), B, SyncRequest {});
    reader.handle_sync_reply(t0 + ms(101), WALL, A, 2, answer);
    assert_eq!(drain(&mut reader), vec![]);
    assert_eq!(reader.lease(), Lease::Until(t0 + LEASE), "not renewed");
    assert_eq!(reader.stats().gaps, 1);
    reader.handle_timeout(t0 + LEASE);
    assert_eq!(
        drain(&mut reader),
        vec![
            Output::Clear(ClearReason::LeaseExpired(A)),
            Output::SendSync { to: A, id: 3 }
        ]
    );
    assert_eq!(reader.lease(), Lease::Expired);
    // Another change lost while no lease is held: the next answer clears and renews.
    let _ = writer.stamp_sync(t0 + LEASE, WALL);
    // After the clear the sequence restarts past the mark: the next answer renews.
    let answer = writer.handle_sync_request(t0 + LEASE, B, SyncRequest {});
    reader.handle_sync_reply(t0 + LEASE, WALL, A, 3, answer);
    assert_eq!(drain(&mut reader), vec![Output::Clear(ClearReason::Gap(A))]);
    assert_eq!(reader.lease(), Lease::Until(t0 + LEASE + LEASE));
    // The lost change turning up now only drops its key: a clear covered it.
    let late = Batch {
        seq: Some(1),
        dropped: 0,
        ops: vec![(
            "c".into(),
            Op::Put {
                key: b"k".to_vec(),
                value: b"old".to_vec(),
                stamp: lost.stamp,
            },
        )],
    };
    reader.handle_batch(t0 + LEASE + ms(1), WALL, A, late);
    assert_eq!(
        drain(&mut reader),
        vec![Output::Apply {
            cache: "c".into(),
            change: Change::Remove {
                key: b"k".to_vec(),
                stamp: None
            }
        }]
    );
}

#[test]
fn changes_that_arrive_out_of_order_fill_the_gap_and_renewals_resume() {
    let (t0, mut writer, mut reader) = leased_pair();
    let one = writer.stamp_sync(t0, WALL);
    let two = writer.stamp_sync(t0, WALL);
    reader.handle_batch(t0, WALL, A, invalidate(Some(two.seq), two.stamp));
    reader.handle_batch(t0, WALL, A, invalidate(Some(one.seq), one.stamp));
    drain(&mut reader);
    reader.handle_timeout(t0 + ms(100));
    drain(&mut reader);
    let answer = writer.handle_sync_request(t0 + ms(100), B, SyncRequest {});
    assert_eq!(answer.mark, 2);
    reader.handle_sync_reply(t0 + ms(100), WALL, A, 2, answer);
    assert_eq!(reader.lease(), Lease::Until(t0 + ms(100) + LEASE));
    assert_eq!(reader.stats().gaps, 0);
}

#[test]
fn a_writer_waits_for_a_silent_peer_exactly_as_long_as_its_last_lease_can_last() {
    let t0 = Instant::now();
    let mut writer = core(A, t0);
    let mut reader = core(B, t0);
    // C is a member that never asked for a lease: no wait for it.
    writer.handle_view(t0, [(A, false), (B, false), (C, false)]);
    leased(&mut writer, &mut reader, t0 + ms(50));
    let write = writer.stamp_sync(t0 + ms(60), WALL);
    let hold = CoreConfig::default().hold();
    assert_eq!(write.holds, vec![(B, t0 + ms(50) + hold)]);
    assert_eq!(writer.targets(t0 + ms(60)), vec![B, C]);
    // Long after the last answer, nobody holds a lease: nothing to wait for.
    let later = writer.stamp_sync(t0 + ms(50) + hold, WALL);
    assert_eq!(later.holds, vec![]);
}

#[test]
fn a_stamp_too_far_ahead_is_refused_and_counted_but_still_drops_its_key() {
    let t0 = Instant::now();
    let mut reader = core(B, t0);
    drain(&mut reader);
    let future = Stamp {
        micros: u64::MAX,
        logical: 0,
        node: [1; 16],
    };
    let batch = Batch {
        seq: None,
        dropped: 0,
        ops: vec![
            (
                "c".into(),
                Op::Invalidate {
                    key: b"k".to_vec(),
                    stamp: future,
                },
            ),
            (
                "c".into(),
                Op::Put {
                    key: b"j".to_vec(),
                    value: b"v".to_vec(),
                    stamp: future,
                },
            ),
            ("c".into(), Op::Clear { stamp: future }),
        ],
    };
    reader.handle_batch(t0, WALL, A, batch);
    let apply = |change| Output::Apply {
        cache: "c".into(),
        change,
    };
    assert_eq!(
        drain(&mut reader),
        vec![
            apply(Change::Remove {
                key: b"k".to_vec(),
                stamp: None
            }),
            apply(Change::Remove {
                key: b"j".to_vec(),
                stamp: None
            }),
            apply(Change::Clear { stamp: None }),
        ]
    );
    assert_eq!(reader.stats().refused_ahead, 3);
    // The clock was not dragged along.
    assert!(reader.stamp(WALL).micros == WALL);
}

#[test]
fn a_peer_back_from_a_false_down_verdict_is_told_to_clear_by_its_next_batch_or_answer() {
    let (t0, mut writer, mut reader) = leased_pair();
    let async_batch = |dropped| Batch {
        seq: None,
        dropped,
        ops: vec![],
    };
    reader.handle_batch(t0, WALL, A, async_batch(writer.dropped_for(B)));
    assert_eq!(drain(&mut reader), vec![]);
    // The writer declares the reader down (falsely) and stops sending to it.
    writer.handle_view(t0 + ms(10), [(A, false), (B, true)]);
    assert_eq!(writer.dropped_for(B), 1);
    writer.handle_view(t0 + ms(20), [(A, false), (B, false)]);
    reader.handle_batch(t0 + ms(30), WALL, A, async_batch(writer.dropped_for(B)));
    assert_eq!(
        drain(&mut reader),
        vec![Output::Clear(ClearReason::AsyncLost(A))]
    );
    // A queue given up says the same through the lease answer.
    writer.gave_up_async(B);
    reader.handle_timeout(t0 + ms(100));
    let id = match drain(&mut reader)[..] {
        [Output::SendSync { id, .. }] => id,
        ref other => panic!("{other:?}"),
    };
    let answer = writer.handle_sync_request(t0 + ms(100), B, SyncRequest {});
    reader.handle_sync_reply(t0 + ms(100), WALL, A, id, answer);
    assert_eq!(
        drain(&mut reader),
        vec![Output::Clear(ClearReason::AsyncLost(A))]
    );
    assert_eq!(reader.stats().async_lost, 2);
}

#[test]
fn an_asker_outside_the_view_is_a_target_only_while_its_lease_can_last() {
    let t0 = Instant::now();
    let after = t0 + CoreConfig::default().hold();
    let mut writer = core(A, t0);
    let _ = writer.handle_sync_request(t0, C, SyncRequest {});
    assert_eq!(writer.targets(t0), vec![B, C]);
    // No view change needed for it to stop (issue 9, finding 5: no permanent target).
    assert_eq!(writer.targets(after), vec![B]);
    writer.handle_view(t0 + ms(1), [(A, false), (B, false)]);
    assert_eq!(writer.targets(t0 + ms(1)), vec![B, C]);
    writer.handle_view(after, [(A, false), (B, false)]);
    assert_eq!(writer.stamp_sync(after, WALL).holds, vec![]);
}

#[test]
fn numbers_far_ahead_of_a_gap_restart_the_stream_with_a_clear_and_memory_stays_bounded() {
    let (t0, _writer, mut reader) = leased_pair();
    for seq in 2..=4098 {
        reader.handle_batch(t0, WALL, A, invalidate(Some(seq), LOADED));
    }
    let clears: Vec<Output> = drain(&mut reader)
        .into_iter()
        .filter(|o| matches!(o, Output::Clear(_)))
        .collect();
    assert_eq!(clears, vec![Output::Clear(ClearReason::TooFarAhead(A))]);
    assert_eq!(reader.lease(), Lease::Expired);
}

#[test]
fn a_peer_that_goes_gone_while_its_lease_runs_clears_and_is_needed_no_more() {
    let (t0, _writer, mut reader) = leased_pair();
    // The writer's change may be lost and its writer may return once this lease is over: the
    // reader must not keep serving past it on the strength of the other peers' leases.
    reader.handle_view(t0 + ms(10), [(A, true), (B, false)]);
    assert_eq!(
        drain(&mut reader),
        vec![Output::Clear(ClearReason::Gone(A))]
    );
    assert_eq!(reader.lease(), Lease::Unbounded);
}

#[test]
fn numbers_and_marks_at_the_end_of_the_range_do_not_panic_the_reader() {
    let (t0, mut writer, mut reader) = leased_pair();
    for seq in [u64::MAX, u64::MAX - 1, 0] {
        reader.handle_batch(t0, WALL, A, invalidate(Some(seq), LOADED));
    }
    reader.handle_timeout(t0 + ms(100));
    let id = drain(&mut reader)
        .into_iter()
        .find_map(|o| match o {
            Output::SendSync { id, .. } => Some(id),
            _ => None,
        })
        .expect("a question");
    let mut answer = writer.handle_sync_request(t0 + ms(100), B, SyncRequest {});
    answer.mark = u64::MAX;
    reader.handle_sync_reply(t0 + ms(100), WALL, A, id, answer);
    reader.handle_timeout(t0 + LEASE + LEASE);
    drain(&mut reader);
}

#[test]
fn a_rejoin_clears() {
    let t0 = Instant::now();
    let mut reader = core(B, t0);
    drain(&mut reader);
    reader.handle_rejoined(t0);
    assert_eq!(
        drain(&mut reader),
        vec![Output::Clear(ClearReason::Rejoined)]
    );
}

proptest! {
    /// Whatever order and duplication changes arrive in, and whatever is lost, a reader's lease
    /// is renewed by an answer only if it received every change numbered up to the answer's
    /// mark (or cleared since): the rule behind "no stale value after a synchronous write".
    #[test]
    fn a_lease_is_only_renewed_over_a_complete_sequence(
        events in proptest::collection::vec((0u8..4, 0u64..12), 1..120),
    ) {
        let t0 = Instant::now();
        let mut writer = core(A, t0);
        let mut reader = core(B, t0);
        leased(&mut writer, &mut reader, t0);
        let mut received = std::collections::BTreeSet::new();
        let mut covered_below = 1;
        let mut mark_seen = 0;
        let mut stamps = Vec::new();
        let mut now = t0;
        for (kind, n) in events {
            now += ms(7);
            match kind {
                0 => stamps.push(writer.stamp_sync(now, WALL)),
                1 | 2 if !stamps.is_empty() => {
                    let w = &stamps[n as usize % stamps.len()];
                    received.insert(w.seq);
                    reader.handle_batch(now, WALL, A, invalidate(Some(w.seq), w.stamp));
                }
                _ => {
                    reader.handle_timeout(now);
                    let before = reader.lease();
                    for o in drain(&mut reader) {
                        match o {
                            Output::SendSync { id, .. } => {
                                let answer = writer.handle_sync_request(now, B, SyncRequest {});
                                mark_seen = mark_seen.max(answer.mark);
                                let complete = (covered_below..=answer.mark)
                                    .all(|s| received.contains(&s));
                                reader.handle_sync_reply(now, WALL, A, id, answer);
                                let cleared = drain(&mut reader)
                                    .iter()
                                    .any(|o| matches!(o, Output::Clear(_)));
                                if cleared {
                                    // Restarted past the mark: everything up to it is covered.
                                    let past = received.last().copied().unwrap_or(0).max(mark_seen);
                                    covered_below = covered_below.max(past + 1);
                                } else if !complete {
                                    prop_assert!(
                                        reader.lease() == before || reader.lease() == Lease::Expired,
                                        "renewed over a gap"
                                    );
                                }
                            }
                            Output::Clear(_) => {
                                let past = received.last().copied().unwrap_or(0).max(mark_seen);
                                covered_below = covered_below.max(past + 1);
                            }
                            Output::Apply { .. } => {}
                        }
                    }
                }
            }
        }
    }
}
