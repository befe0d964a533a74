//! The executors' state machine, command by command (docs/executor.md, Promises).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::*;
use crate::consensus::{ClusterState, Command, MemberInfo, Outcome};

const R1: ReplicaId = ReplicaId(1);
const R2: ReplicaId = ReplicaId(2);

/// A table and the epochs in force around it.
struct World {
    table: ExecTable,
    live: BTreeSet<(ReplicaId, u64)>,
}

impl World {
    fn new() -> Self {
        World {
            table: ExecTable::default(),
            live: [(R1, 1), (R2, 1)].into(),
        }
    }

    fn apply(&mut self, c: &ExecCommand) -> ExecOutcome {
        let live = &self.live;
        self.table.apply(c, |r, e| live.contains(&(r, e)))
    }

    /// The ids queued in `bucket` of executor "x".
    fn queue(&self, bucket: &str) -> Vec<u64> {
        self.table
            .bucket("x", bucket)
            .map(|b| b.tasks.iter().map(|t| t.id).collect())
            .unwrap_or_default()
    }
}

fn task(bucket: &str, payload: &str) -> NewTask {
    NewTask::new(bucket, payload.as_bytes().to_vec(), 0)
}

fn submit(from: ReplicaId, seq: u64, bound: u64, tasks: Vec<NewTask>) -> ExecCommand {
    ExecCommand::Submit {
        executor: "x".into(),
        submitter: (from, 1),
        seq,
        bound,
        tasks,
    }
}

fn done(bucket: &str, first: u64, through: u64, token: u64, outcome: BatchOutcome) -> ExecCommand {
    ExecCommand::Done {
        executor: "x".into(),
        bucket: bucket.into(),
        first,
        through,
        token,
        outcome,
    }
}

#[test]
fn a_submit_proposed_again_applies_once_and_gives_the_same_outcome() {
    let mut w = World::new();
    let s = submit(R1, 1, 10, vec![task("a", "1"), task("b", "2")]);
    let accepted = ExecOutcome::Accepted { first: 1, count: 2 };
    assert_eq!(w.apply(&s), accepted);
    assert_eq!(w.apply(&s), accepted);
    assert_eq!((w.queue("a"), w.queue("b")), (vec![1], vec![2]));
    assert_eq!(w.table.depth("x"), 2);
    // The next submit moves on; an old copy of the first one then changes nothing.
    assert_eq!(
        w.apply(&submit(R1, 2, 10, vec![task("a", "3")])),
        ExecOutcome::Accepted { first: 3, count: 1 }
    );
    assert_eq!(w.apply(&s), ExecOutcome::Refused(ExecRefusal::Outdated));
    assert_eq!(w.queue("a"), [1, 3]);
}

#[test]
fn a_submit_past_the_bound_is_refused_whole_and_nothing_queued_is_dropped() {
    let mut w = World::new();
    assert_eq!(
        w.apply(&submit(R1, 1, 3, vec![task("a", "1"), task("a", "2")])),
        ExecOutcome::Accepted { first: 1, count: 2 }
    );
    let busy = submit(R2, 1, 3, vec![task("a", "3"), task("b", "4")]);
    assert_eq!(w.apply(&busy), ExecOutcome::Busy { queued: 2 });
    assert_eq!((w.queue("a"), w.queue("b")), (vec![1, 2], vec![]));
    // Proposed again after room was made, the same seq still answers what it was given.
    w.apply(&done("a", 1, 2, 7, BatchOutcome::Succeeded));
    assert_eq!(w.apply(&busy), ExecOutcome::Busy { queued: 2 });
    assert_eq!(
        w.apply(&submit(R2, 2, 3, vec![task("a", "3"), task("b", "4")])),
        ExecOutcome::Accepted { first: 3, count: 2 }
    );
}

#[test]
fn tasks_queue_per_bucket_in_log_order_across_submitters() {
    let mut w = World::new();
    w.apply(&submit(
        R1,
        1,
        100,
        vec![task("a", "r1-1"), task("b", "r1-2")],
    ));
    w.apply(&submit(R2, 1, 100, vec![task("a", "r2-1")]));
    w.apply(&submit(R1, 2, 100, vec![task("a", "r1-3")]));
    let payloads: Vec<&[u8]> = w
        .table
        .head("x", "a", 10, 0)
        .map(|t| t.bytes.as_slice())
        .collect();
    assert_eq!(payloads, [&b"r1-1"[..], b"r2-1", b"r1-3"]);
    assert_eq!(w.queue("a"), [1, 3, 4]);
    let buckets: Vec<&str> = w.table.buckets("x").map(|(b, _)| b).collect();
    assert_eq!(buckets, ["a", "b"]);
}

#[test]
fn the_head_batch_is_cut_at_its_size_and_at_the_first_task_not_yet_due() {
    let mut w = World::new();
    let later = NewTask::new("a", b"later".to_vec(), 5_000);
    w.apply(&submit(
        R1,
        1,
        100,
        vec![task("a", "1"), task("a", "2"), later, task("a", "4")],
    ));
    let ids = |n, wall| -> Vec<u64> { w.table.head("x", "a", n, wall).map(|t| t.id).collect() };
    assert_eq!(ids(1, 0), [1]);
    assert_eq!(ids(10, 4_999), [1, 2]);
    assert_eq!(ids(10, 5_000), [1, 2, 3, 4]);
}

#[test]
fn a_report_about_a_batch_no_longer_at_the_head_changes_nothing() {
    let mut w = World::new();
    w.apply(&submit(R1, 1, 100, vec![task("a", "1"), task("a", "2")]));
    assert_eq!(
        w.apply(&done("a", 1, 1, 10, BatchOutcome::Succeeded)),
        ExecOutcome::Removed { count: 1 }
    );
    // The same report again, a late one of an older worker, and one for another bucket.
    let stale = ExecOutcome::Refused(ExecRefusal::Stale);
    assert_eq!(
        w.apply(&done("a", 1, 1, 10, BatchOutcome::Succeeded)),
        stale
    );
    assert_eq!(w.apply(&done("a", 1, 2, 4, BatchOutcome::Failed)), stale);
    assert_eq!(
        w.apply(&done("z", 1, 1, 11, BatchOutcome::Succeeded)),
        stale
    );
    assert_eq!(w.queue("a"), [2]);
    assert_eq!(w.table.attempts("x", "a"), 0);
}

#[test]
fn failures_count_once_per_token_then_a_dead_letter_removes_and_counts_the_batch() {
    let mut w = World::new();
    w.apply(&submit(
        R1,
        1,
        100,
        vec![task("a", "1"), task("a", "2"), task("a", "3")],
    ));
    assert_eq!(
        w.apply(&done("a", 1, 2, 10, BatchOutcome::Failed)),
        ExecOutcome::Failed { attempts: 1 }
    );
    let fenced = ExecOutcome::Refused(ExecRefusal::Fenced);
    // The same report applied twice, and a report of an older batch, count nothing.
    assert_eq!(w.apply(&done("a", 1, 2, 10, BatchOutcome::Failed)), fenced);
    assert_eq!(w.apply(&done("a", 1, 2, 9, BatchOutcome::Failed)), fenced);
    assert_eq!(
        w.apply(&done("a", 1, 2, 11, BatchOutcome::Failed)),
        ExecOutcome::Failed { attempts: 2 }
    );
    assert_eq!(w.table.attempts("x", "a"), 2);
    assert_eq!(
        w.apply(&done("a", 1, 2, 12, BatchOutcome::DeadLettered)),
        ExecOutcome::Removed { count: 2 }
    );
    assert_eq!(w.table.dead_letters("x"), 2);
    // The next head starts with no attempts.
    assert_eq!(w.table.attempts("x", "a"), 0);
    assert_eq!(w.queue("a"), [3]);
    assert_eq!(w.table.depth("x"), 1);
}

#[test]
fn drained_buckets_leave_nothing_behind_and_numbers_never_repeat() {
    let mut w = World::new();
    w.apply(&submit(R1, 1, 100, vec![task("a", "1"), task("b", "2")]));
    w.apply(&done("a", 1, 1, 5, BatchOutcome::Succeeded));
    w.apply(&done("b", 2, 2, 6, BatchOutcome::Succeeded));
    assert!(w.table.executors["x"].buckets.is_empty());
    assert_eq!(w.table.depth("x"), 0);
    // A report of the drained task cannot match the next task of the bucket.
    assert_eq!(
        w.apply(&submit(R1, 2, 100, vec![task("a", "3")])),
        ExecOutcome::Accepted { first: 3, count: 1 }
    );
    assert_eq!(
        w.apply(&done("a", 1, 3, 5, BatchOutcome::Succeeded)),
        ExecOutcome::Refused(ExecRefusal::Stale)
    );
}

#[test]
fn a_submit_from_an_ended_epoch_is_refused_and_its_record_goes() {
    let mut w = World::new();
    w.apply(&submit(R1, 1, 100, vec![task("a", "1")]));
    assert!(w.table.submitters.contains_key(&R1));
    w.live.remove(&(R1, 1));
    assert_eq!(
        w.apply(&submit(R1, 2, 100, vec![task("a", "2")])),
        ExecOutcome::Refused(ExecRefusal::EpochEnded)
    );
    // Another node's submit drops the ended epoch's record: the table stays bounded.
    w.apply(&submit(R2, 1, 100, vec![task("a", "3")]));
    assert_eq!(w.table.submitters.keys().collect::<Vec<_>>(), [&R2]);
    assert_eq!(w.queue("a"), [1, 2]);
}

#[test]
fn oversized_tasks_batches_and_names_are_refused_with_what_was_wrong() {
    let mut w = World::new();
    let big = NewTask::new("a", vec![0; MAX_TASK_BYTES + 1], 0);
    assert_eq!(
        w.apply(&submit(R1, 1, 100, vec![task("a", "1"), big])),
        ExecOutcome::Refused(ExecRefusal::TaskTooLarge {
            index: 1,
            bytes: MAX_TASK_BYTES + 1
        })
    );
    let many = vec![task("a", ""); MAX_SUBMIT_TASKS + 1];
    assert_eq!(
        w.apply(&submit(R1, 2, u64::MAX, many)),
        ExecOutcome::Refused(ExecRefusal::BatchSize {
            tasks: MAX_SUBMIT_TASKS + 1,
            bytes: 0
        })
    );
    let heavy = vec![NewTask::new("a", vec![0; MAX_TASK_BYTES], 0); 5];
    assert_eq!(
        w.apply(&submit(R1, 3, 100, heavy)),
        ExecOutcome::Refused(ExecRefusal::BatchSize {
            tasks: 5,
            bytes: 5 * MAX_TASK_BYTES
        })
    );
    assert_eq!(
        w.apply(&submit(R1, 4, 100, vec![])),
        ExecOutcome::Refused(ExecRefusal::BatchSize { tasks: 0, bytes: 0 })
    );
    let long = "b".repeat(MAX_NAME + 1);
    assert_eq!(
        w.apply(&submit(R1, 5, 100, vec![task(&long, "1")])),
        ExecOutcome::Refused(ExecRefusal::BadName)
    );
    assert!(w.table.executors.is_empty());
}

#[test]
fn executors_past_the_limit_are_refused() {
    let mut w = World::new();
    for i in 0..MAX_EXECUTORS {
        let c = ExecCommand::Submit {
            executor: format!("e{i}"),
            submitter: (R1, 1),
            seq: 1,
            bound: 10,
            tasks: vec![task("a", "1")],
        };
        assert!(matches!(w.apply(&c), ExecOutcome::Accepted { .. }));
    }
    let c = ExecCommand::Submit {
        executor: "one-more".into(),
        submitter: (R1, 1),
        seq: 1,
        bound: 10,
        tasks: vec![task("a", "1")],
    };
    assert_eq!(
        w.apply(&c),
        ExecOutcome::Refused(ExecRefusal::TooManyExecutors)
    );
}

fn state_with_queues() -> ClusterState {
    let mut s = ClusterState::new();
    let info = MemberInfo {
        name: "n".into(),
        addr: "127.0.0.1:1".parse().unwrap(),
        incarnation: 1,
    };
    s.apply(&Command::Register { replica: R1, info });
    let outcome = s.apply(&Command::Exec(submit(
        R1,
        1,
        100,
        vec![task("a", "1"), task("b", "2"), task("a", "3")],
    )));
    assert_eq!(
        outcome,
        Outcome::Exec(ExecOutcome::Accepted { first: 1, count: 3 })
    );
    s
}

#[test]
fn a_state_with_queues_survives_a_snapshot_round_trip() {
    let s = state_with_queues();
    let bytes = crate::wire::encode_payload(&s).unwrap();
    let back: ClusterState = crate::wire::decode_payload(&bytes).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.exec.depth("x"), 3);
}

#[test]
fn a_state_stored_before_executors_existed_loads_with_none() {
    /// The state as nodes stored it before it had `exec`.
    #[derive(serde::Serialize)]
    struct Before<'a> {
        settings: &'a Option<crate::consensus::ClusterSettings>,
        members: &'a BTreeMap<ReplicaId, MemberInfo>,
        liveness: &'a BTreeMap<ReplicaId, crate::consensus::Liveness>,
        slots: &'a BTreeMap<crate::consensus::Domain, Vec<crate::consensus::Slot>>,
        next_token: u64,
        jobs: &'a crate::consensus::jobs::JobTable,
    }
    let s = state_with_queues();
    let old = Before {
        settings: &s.settings,
        members: &s.members,
        liveness: &s.liveness,
        slots: &s.slots,
        next_token: s.next_token,
        jobs: &s.jobs,
    };
    let back: ClusterState =
        crate::wire::decode_payload(&crate::wire::encode_payload(&old).unwrap()).unwrap();
    assert_eq!(back.exec, ExecTable::default());
    assert_eq!(back.members, s.members);
}

/// One step of a random history.
#[derive(Debug, Clone)]
enum Step {
    Submit {
        from: u64,
        seq: u64,
        buckets: Vec<u8>,
        bound: u64,
    },
    /// A report about the head of a bucket (or, with `skew`, a task near it).
    Done {
        bucket: u8,
        skew: u64,
        len: u64,
        token: u64,
        outcome: u8,
    },
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        (
            1..3u64,
            1..6u64,
            proptest::collection::vec(0..3u8, 0..4),
            0..12u64
        )
            .prop_map(|(from, seq, buckets, bound)| Step::Submit {
                from,
                seq,
                buckets,
                bound
            }),
        (0..3u8, 0..2u64, 0..3u64, 0..20u64, 0..3u8).prop_map(
            |(bucket, skew, len, token, outcome)| Step::Done {
                bucket,
                skew,
                len,
                token,
                outcome
            }
        ),
    ]
}

proptest::proptest! {
    /// Whatever is proposed, in whatever order and however often: each bucket's queue is the
    /// accepted tasks in log order minus a prefix taken by applied reports, the outcomes say
    /// exactly what changed, depth and dead letters add up, and drained buckets are gone.
    #[test]
    fn queues_change_only_as_the_outcomes_say(steps in proptest::collection::vec(step(), 1..60)) {
        let mut w = World::new();
        let mut model: BTreeMap<String, VecDeque<u64>> = BTreeMap::new();
        let mut dead = 0;
        let mut last_seq: BTreeMap<u64, (u64, ExecOutcome)> = BTreeMap::new();
        for s in steps {
            match s {
                Step::Submit { from, seq, buckets, bound } => {
                    let tasks: Vec<NewTask> =
                        buckets.iter().map(|b| task(&format!("b{b}"), "t")).collect();
                    let outcome = w.apply(&submit(ReplicaId(from), seq, bound, tasks.clone()));
                    match last_seq.get(&from) {
                        Some((l, o)) if *l == seq => proptest::prop_assert_eq!(outcome, *o),
                        Some((l, _)) if *l > seq => proptest::prop_assert_eq!(
                            outcome,
                            ExecOutcome::Refused(ExecRefusal::Outdated)
                        ),
                        _ => {
                            if let ExecOutcome::Accepted { first, count } = outcome {
                                proptest::prop_assert_eq!(count, tasks.len() as u64);
                                for (id, t) in (first..).zip(&tasks) {
                                    model.entry(t.bucket.clone()).or_default().push_back(id);
                                }
                            }
                            if !matches!(outcome, ExecOutcome::Refused(_)) {
                                last_seq.insert(from, (seq, outcome));
                            }
                        }
                    }
                }
                Step::Done { bucket, skew, len, token, outcome } => {
                    let name = format!("b{bucket}");
                    let head = model.get(&name).and_then(|q| q.front().copied()).unwrap_or(1);
                    let first = head + skew;
                    let outcome = [
                        BatchOutcome::Succeeded,
                        BatchOutcome::Failed,
                        BatchOutcome::DeadLettered,
                    ][usize::from(outcome)];
                    let got = w.apply(&done(&name, first, first + len, token, outcome));
                    if let ExecOutcome::Removed { count } = got {
                        let q = model.get_mut(&name).expect("removed from a queue");
                        proptest::prop_assert_eq!(q.front().copied(), Some(first));
                        let mut removed = 0;
                        while q.front().is_some_and(|id| *id <= first + len) {
                            q.pop_front();
                            removed += 1;
                        }
                        proptest::prop_assert_eq!(count, removed);
                        if outcome == BatchOutcome::DeadLettered {
                            dead += count;
                        }
                    }
                }
            }
            model.retain(|_, q| !q.is_empty());
            let queues: BTreeMap<String, VecDeque<u64>> = w
                .table
                .buckets("x")
                .map(|(b, q)| (b.to_owned(), q.tasks.iter().map(|t| t.id).collect()))
                .collect();
            proptest::prop_assert_eq!(&queues, &model);
            let total: usize = model.values().map(VecDeque::len).sum();
            proptest::prop_assert_eq!(w.table.depth("x"), total as u64);
            proptest::prop_assert_eq!(w.table.dead_letters("x"), dead);
        }
    }
}

#[test]
fn a_copy_of_the_state_shares_its_queues_and_a_change_copies_only_what_it_touches() {
    let mut w = World::new();
    w.apply(&submit(R1, 1, 100, vec![task("a", "1"), task("b", "2")]));
    let copy = w.table.clone();
    let shared = |t: &ExecTable, b: &str| t.executors["x"].buckets[b].clone();
    assert!(Shared::ptr_eq(&shared(&copy, "a"), &shared(&w.table, "a")));
    w.apply(&submit(R1, 2, 100, vec![task("a", "3")]));
    // The touched bucket was copied, the other is still shared, and the copy kept its view.
    assert!(!Shared::ptr_eq(&shared(&copy, "a"), &shared(&w.table, "a")));
    assert!(Shared::ptr_eq(&shared(&copy, "b"), &shared(&w.table, "b")));
    assert_eq!(copy.depth("x"), 2);
    assert_eq!(w.queue("a"), [1, 3]);
    // Task payloads are never copied.
    let task_of = |t: &ExecTable| t.executors["x"].buckets["a"].tasks[0].clone();
    assert!(Shared::ptr_eq(&task_of(&copy), &task_of(&w.table)));
    // A refused report copies nothing.
    let before = w.table.executors["x"].clone();
    w.apply(&done("a", 3, 3, 1, BatchOutcome::Succeeded));
    assert!(Shared::ptr_eq(&before, &w.table.executors["x"]));
}
