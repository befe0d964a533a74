//! Exact-output tests of the executor core over group states built by applying commands
//! (docs/executor.md, Promises), on the `Executor` slot domain.

use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_runtime::consensus::exec::{BatchOutcome, ExecCommand, NewTask};
use colony_runtime::consensus::{
    ClusterState, Command, Domain, Entitlement, Outcome, ReplicaId, SLOTS,
};
use serde_bytes::ByteBuf;

use super::*;
use crate::executor::config::{Backoff, Concurrency, ExecutorSettings};

const ME: ReplicaId = ReplicaId(1);
const D: Domain = Domain::Executor;
const WALL: u64 = 1_800_000_000_000;
const BACKOFF: Duration = Duration::from_millis(100);
const RETRY: Duration = Duration::from_millis(200);
const SUCCEEDED: BatchOutcome = BatchOutcome::Succeeded;

fn settings(batch_size: usize, max_attempts: u32, concurrency: Concurrency) -> ExecutorSettings {
    ExecutorSettings {
        batch_size,
        max_attempts,
        backoff: Backoff {
            first: BACKOFF,
            max: Duration::from_secs(1),
        },
        concurrency,
    }
}

/// Three members in epoch 1; every slot given to `owner`.
fn state(owner: u64) -> ClusterState {
    let mut s = colony_runtime::sim::registered(3);
    for slot in 0..SLOTS {
        assign(&mut s, slot, owner);
    }
    s
}

fn assign(s: &mut ClusterState, slot: u16, to: u64) {
    let generation = s.slot(D, slot).unwrap().generation;
    let outcome = s.apply(&Command::Assign {
        domain: D,
        slot,
        generation,
        to: ReplicaId(to),
    });
    assert!(matches!(outcome, Outcome::Block { .. }), "{outcome:?}");
}

/// Submits `payloads` to bucket `bucket` of executor "x" from node 3.
fn submit(s: &mut ClusterState, seq: u64, bucket: &str, payloads: &[&str], not_before_ms: u64) {
    let tasks = payloads
        .iter()
        .map(|p| NewTask::new(bucket, p.as_bytes().to_vec(), not_before_ms))
        .collect();
    let outcome = s.apply(&Command::Exec(ExecCommand::Submit {
        executor: "x".into(),
        submitter: (ReplicaId(3), 1),
        seq,
        bound: 1000,
        tasks,
    }));
    assert!(matches!(outcome, Outcome::Exec(_)), "{outcome:?}");
}

fn first_token(s: &ClusterState, bucket: &str) -> u64 {
    s.slot(D, bucket_slot("x", bucket)).unwrap().block.0
}

fn bytes(payloads: &[&str]) -> Vec<ByteBuf> {
    payloads
        .iter()
        .map(|p| ByteBuf::from(p.as_bytes().to_vec()))
        .collect()
}

fn now(at: Instant) -> Now {
    Now { at, wall_ms: WALL }
}

fn entitled(until: Instant) -> Option<Entitlement> {
    Some(Entitlement { epoch: 1, until })
}

/// A core for `me` that runs "x" with `settings` over `s`, entitled for ten seconds.
fn core_with(
    me: ReplicaId,
    s: &ClusterState,
    t0: Instant,
    settings: ExecutorSettings,
) -> ExecutorCore {
    let mut c = ExecutorCore::new(
        me,
        D,
        CoreConfig {
            resend: Duration::from_millis(300),
            retry: RETRY,
        },
    );
    c.configure(now(t0), "x", settings);
    c.set_group(
        now(t0),
        Arc::new(s.clone()),
        Some(1),
        entitled(t0 + Duration::from_secs(10)),
    );
    c
}

fn drain(c: &mut ExecutorCore) -> Vec<Output> {
    std::iter::from_fn(|| c.poll_output()).collect()
}

fn start(
    bucket: &str,
    token: u64,
    first: u64,
    attempt: u32,
    payloads: &[&str],
    deadline: Instant,
) -> Output {
    Output::Start {
        executor: "x".into(),
        bucket: bucket.into(),
        token,
        first,
        through: first + payloads.len() as u64 - 1,
        attempt,
        tasks: bytes(payloads),
        deadline,
    }
}

fn cancel(token: u64) -> Output {
    Output::Cancel {
        executor: "x".into(),
        bucket: "a".into(),
        token,
    }
}

fn done(bucket: &str, first: u64, through: u64, token: u64, outcome: BatchOutcome) -> Command {
    Command::Exec(ExecCommand::Done {
        executor: "x".into(),
        bucket: bucket.into(),
        first,
        through,
        token,
        outcome,
    })
}

/// Applies `command` to `s` and tells the core, as the shell does: the outcome, then the state.
fn commit(c: &mut ExecutorCore, s: &mut ClusterState, at: Now, command: &Command) -> Outcome {
    let outcome = s.apply(command);
    c.proposed(at, command, Some(&outcome));
    c.set_group(
        at,
        Arc::new(s.clone()),
        Some(1),
        entitled(at.at + Duration::from_secs(10)),
    );
    outcome
}

/// The first batch (`token`, tasks 1 to `through`) of bucket "a" of a core from [`running`]
/// at `t0` succeeds: the core proposes its `Done` and starts the next batch, of `next`, at
/// once. Returns the `Done`.
fn first_succeeds(
    c: &mut ExecutorCore,
    t0: Instant,
    token: u64,
    through: u64,
    next: &[&str],
) -> Command {
    c.finished(now(t0), "x", "a", token, true);
    let first = done("a", 1, through, token, SUCCEEDED);
    let end = t0 + Duration::from_secs(10);
    let start = start("a", token + 1, through + 1, 1, next, end);
    assert_eq!(drain(c), [Output::Propose(first.clone()), start]);
    first
}

/// The core's only output is proposing `command`; it is applied as [`commit`] does, after
/// which the core does nothing.
fn proposed_then_applied(
    c: &mut ExecutorCore,
    s: &mut ClusterState,
    at: Now,
    command: &Command,
) -> Outcome {
    assert_eq!(drain(c), [Output::Propose(command.clone())]);
    let outcome = commit(c, s, at, command);
    assert_eq!(drain(c), []);
    outcome
}

/// Tells the core the answer to a command (it must do nothing yet: its state does not show
/// the command), then the state `s`, after which it must do `then`.
fn answer_then_state(
    c: &mut ExecutorCore,
    s: &ClusterState,
    at: Now,
    (command, outcome): (&Command, &Outcome),
    then: &[Output],
) {
    c.proposed(at, command, Some(outcome));
    assert_eq!(drain(c), []);
    c.set_group(
        at,
        Arc::new(s.clone()),
        Some(1),
        entitled(at.at + Duration::from_secs(10)),
    );
    assert_eq!(drain(c), then);
}

/// A core for [`ME`] running "x" with bucket "a" holding `payloads`, at `t0`, over state `s`,
/// its first batch (with `token`) started and drained: `(t0, s, core, token)`.
fn running(
    payloads: &[&str],
    batch_size: usize,
    max_attempts: u32,
) -> (Instant, ClusterState, ExecutorCore, u64) {
    let t0 = Instant::now();
    let mut s = state(1);
    submit(&mut s, 1, "a", payloads, 0);
    let mut c = core_with(
        ME,
        &s,
        t0,
        settings(batch_size, max_attempts, Concurrency::PerNode(4)),
    );
    let token = first_token(&s, "a");
    assert!(matches!(&drain(&mut c)[..], [Output::Start { .. }]));
    (t0, s, c, token)
}

#[test]
fn a_served_bucket_starts_one_batch_from_its_head_with_a_token_from_the_slots_block() {
    let t0 = Instant::now();
    let mut s = state(1);
    submit(&mut s, 1, "a", &["1", "2", "3"], 0);
    let mut c = core_with(ME, &s, t0, settings(2, 3, Concurrency::PerNode(4)));
    let token = first_token(&s, "a");
    let end = t0 + Duration::from_secs(10);
    assert_eq!(drain(&mut c), [start("a", token, 1, 1, &["1", "2"], end)]);
    // More state changes start nothing more: one batch per bucket.
    c.handle_timeout(now(t0));
    c.set_group(now(t0), Arc::new(s.clone()), Some(1), entitled(end));
    assert_eq!(drain(&mut c), []);
    assert_eq!(c.in_process("x"), 1);
}

#[test]
fn a_success_starts_the_next_batch_at_once_and_one_done_at_a_time_reports_the_successes() {
    let (t0, mut s, mut c, token) = running(&["1", "2", "3", "4", "5"], 2, 3);
    let end = t0 + Duration::from_secs(10);
    let first = first_succeeds(&mut c, t0, token, 2, &["3", "4"]);
    // A second report of the same batch (the shell's duplicate) is ignored.
    c.finished(now(t0), "x", "a", token, true);
    assert_eq!(drain(&mut c), []);
    // The next success waits for the `Done` in flight; the batch after it starts.
    c.finished(now(t0), "x", "a", token + 1, true);
    assert_eq!(drain(&mut c), [start("a", token + 2, 5, 1, &["5"], end)]);
    c.finished(now(t0), "x", "a", token + 2, true);
    assert_eq!(drain(&mut c), []);
    // Once the state shows the first, one `Done` covers both successes since.
    let t1 = t0 + Duration::from_millis(5);
    commit(&mut c, &mut s, now(t1), &first);
    let rest = done("a", 3, 5, token + 2, BatchOutcome::Succeeded);
    let removed = colony_runtime::consensus::exec::ExecOutcome::Removed { count: 3 };
    let outcome = proposed_then_applied(&mut c, &mut s, now(t1), &rest);
    assert_eq!(outcome, Outcome::Exec(removed));
    assert_eq!(s.exec.depth("x"), 0);
}

#[test]
fn a_done_answered_before_the_state_that_holds_it_is_followed_once_the_state_shows_it() {
    let (t0, mut s, mut c, token) = running(&["1", "2", "3"], 1, 3);
    let end = t0 + Duration::from_secs(10);
    let first = first_succeeds(&mut c, t0, token, 1, &["2"]);
    c.finished(now(t0), "x", "a", token + 1, true);
    assert_eq!(drain(&mut c), [start("a", token + 2, 3, 1, &["3"], end)]);
    let outcome = s.apply(&first);
    // The answer first: the core's state still has task 1 at the head, so a `Done` made now
    // would name it and be refused; nothing is proposed.
    let next = Output::Propose(done("a", 2, 2, token + 1, SUCCEEDED));
    answer_then_state(&mut c, &s, now(t0), (&first, &outcome), &[next]);
}

#[test]
fn a_done_refused_because_another_report_moved_the_head_is_made_again_from_the_new_head() {
    let (t0, mut s, mut c, token) = running(&["1", "2", "3"], 1, 3);
    let ours = first_succeeds(&mut c, t0, token, 1, &["2"]);
    c.finished(now(t0), "x", "a", token + 1, true);
    let _ = drain(&mut c);
    // A previous owner's late report of task 1 applies first: ours names a head that moved.
    s.apply(&done("a", 1, 1, token - 1, BatchOutcome::Succeeded));
    let refused = s.apply(&ours);
    assert!(matches!(
        refused,
        Outcome::Exec(colony_runtime::consensus::exec::ExecOutcome::Refused(_))
    ));
    let next = Output::Propose(done("a", 2, 2, token + 1, SUCCEEDED));
    answer_then_state(&mut c, &s, now(t0), (&ours, &refused), &[next]);
}

#[test]
fn a_failure_after_successes_the_state_does_not_show_waits_for_them_then_counts() {
    let (t0, mut s, mut c, token) = running(&["1", "2"], 1, 3);
    let end = t0 + Duration::from_secs(10);
    let first = first_succeeds(&mut c, t0, token, 1, &["2"]);
    c.finished(now(t0), "x", "a", token + 1, false);
    // Its `Done` would name task 2 while task 1 is the head: it waits.
    assert_eq!(drain(&mut c), []);
    assert_eq!(c.in_process("x"), 0);
    commit(&mut c, &mut s, now(t0), &first);
    let failed = done("a", 2, 2, token + 1, BatchOutcome::Failed);
    let counted = colony_runtime::consensus::exec::ExecOutcome::Failed { attempts: 1 };
    let outcome = proposed_then_applied(&mut c, &mut s, now(t0), &failed);
    assert_eq!(outcome, Outcome::Exec(counted));
    let t1 = t0 + BACKOFF;
    c.handle_timeout(now(t1));
    assert_eq!(drain(&mut c), [start("a", token + 2, 2, 2, &["2"], end)]);
}

#[test]
fn a_last_attempt_after_unreported_successes_is_dead_lettered_then_reported_at_the_head() {
    let (t0, mut s, mut c, token) = running(&["1", "2"], 1, 1);
    let end = t0 + Duration::from_secs(10);
    let first = first_succeeds(&mut c, t0, token, 1, &["2"]);
    // One attempt allowed: the failure goes to the dead-letter handler at once.
    c.finished(now(t0), "x", "a", token + 1, false);
    assert_eq!(
        drain(&mut c),
        [Output::DeadLetter {
            executor: "x".into(),
            bucket: "a".into(),
            token: token + 1,
            tasks: bytes(&["2"]),
            deadline: end,
        }]
    );
    c.dead_lettered(now(t0), "x", "a", token + 1);
    assert_eq!(drain(&mut c), []);
    commit(&mut c, &mut s, now(t0), &first);
    let dead = done("a", 2, 2, token + 1, BatchOutcome::DeadLettered);
    assert_eq!(drain(&mut c), [Output::Propose(dead.clone())]);
    commit(&mut c, &mut s, now(t0), &dead);
    assert_eq!(s.exec.dead_letters("x"), 1);
    assert_eq!(s.exec.depth("x"), 0);
}

#[test]
fn a_failed_batch_is_retried_after_its_backoff_and_its_last_attempt_goes_to_the_dead_letter_handler()
 {
    let (t0, mut s, mut c, token) = running(&["1", "2"], 5, 2);
    c.finished(now(t0), "x", "a", token, false);
    let failed = done("a", 1, 2, token, BatchOutcome::Failed);
    assert_eq!(drain(&mut c), [Output::Propose(failed.clone())]);
    let outcome = commit(&mut c, &mut s, now(t0), &failed);
    assert_eq!(
        outcome,
        Outcome::Exec(colony_runtime::consensus::exec::ExecOutcome::Failed { attempts: 1 })
    );
    // Waiting out the backoff: nothing starts before it.
    assert_eq!(drain(&mut c), []);
    assert_eq!(c.poll_timeout(), Some(t0 + BACKOFF));
    let t1 = t0 + BACKOFF;
    c.handle_timeout(now(t1));
    assert_eq!(
        drain(&mut c),
        [start(
            "a",
            token + 1,
            1,
            2,
            &["1", "2"],
            t0 + Duration::from_secs(10)
        )]
    );
    // The second failure is the last attempt: the tasks go to the dead-letter handler first.
    c.finished(now(t1), "x", "a", token + 1, false);
    assert_eq!(
        drain(&mut c),
        [Output::DeadLetter {
            executor: "x".into(),
            bucket: "a".into(),
            token: token + 1,
            tasks: bytes(&["1", "2"]),
            deadline: t0 + Duration::from_secs(10),
        }]
    );
    c.dead_lettered(now(t1), "x", "a", token + 1);
    let dead = done("a", 1, 2, token + 1, BatchOutcome::DeadLettered);
    assert_eq!(drain(&mut c), [Output::Propose(dead.clone())]);
    commit(&mut c, &mut s, now(t1), &dead);
    assert_eq!(drain(&mut c), []);
    assert_eq!(s.exec.dead_letters("x"), 2);
    assert_eq!(c.in_process("x"), 0);
}

#[test]
fn a_head_at_its_last_attempt_goes_to_the_dead_letter_handler_without_running_again() {
    // The previous owner's last attempt failed and it died before the dead letter was recorded.
    // A task submitted since never ran: it is not dead-lettered with the head.
    let t0 = Instant::now();
    let mut s = state(1);
    submit(&mut s, 1, "a", &["1"], 0);
    let _ = s.apply(&done("a", 1, 1, 7, BatchOutcome::Failed));
    submit(&mut s, 2, "a", &["2"], 0);
    let mut c = core_with(ME, &s, t0, settings(5, 1, Concurrency::PerNode(4)));
    let token = first_token(&s, "a");
    assert_eq!(
        drain(&mut c),
        [Output::DeadLetter {
            executor: "x".into(),
            bucket: "a".into(),
            token,
            tasks: bytes(&["1"]),
            deadline: t0 + Duration::from_secs(10),
        }]
    );
}

#[test]
fn batches_follow_the_entitlement_extended_as_it_grows_and_cancelled_when_it_ends() {
    let (t0, s, mut c, token) = running(&["1"], 5, 3);
    let later = t0 + Duration::from_secs(12);
    c.set_group(now(t0), Arc::new(s.clone()), Some(1), entitled(later));
    assert_eq!(
        drain(&mut c),
        [Output::Extend {
            executor: "x".into(),
            bucket: "a".into(),
            token,
            deadline: later,
        }]
    );
    assert_eq!(c.poll_timeout(), Some(later));
    c.handle_timeout(now(later));
    assert_eq!(drain(&mut c), [cancel(token)]);
    // The cancelled batch's late result is ignored, and nothing starts while not entitled.
    c.finished(now(later), "x", "a", token, true);
    assert_eq!(drain(&mut c), []);
    assert_eq!(c.in_process("x"), 0);
    // A heartbeat renews the entitlement: the bucket runs again, with a higher token.
    let renewed = later + Duration::from_secs(10);
    c.set_group(now(later), Arc::new(s.clone()), Some(1), entitled(renewed));
    assert_eq!(
        drain(&mut c),
        [start("a", token + 1, 1, 1, &["1"], renewed)]
    );
}

#[test]
fn a_batch_that_returns_past_its_entitlement_is_cancelled_not_reported() {
    // A process paused past its entitlement wakes with its processor done, before the shell
    // dropped the call: the result is not reported, since the bucket may be another's now.
    let (t0, _, mut c, token) = running(&["1"], 5, 3);
    let late = t0 + Duration::from_secs(11);
    c.finished(now(late), "x", "a", token, true);
    assert_eq!(drain(&mut c), [cancel(token)]);
    assert_eq!(c.in_process("x"), 0);
}

#[test]
fn a_planned_hand_over_waits_for_the_slots_batch_to_end_and_report() {
    let (t0, mut s, mut c, token) = running(&["1"], 5, 3);
    let slot = bucket_slot("x", "a");
    assign(&mut s, slot, 2);
    let generation = s.slot(D, slot).unwrap().generation;
    let end = t0 + Duration::from_secs(10);
    c.set_group(now(t0), Arc::new(s.clone()), Some(1), entitled(end));
    // The batch goes on; nothing is handed over while it runs or while its Done is unapplied,
    // and no timer asks for it meanwhile (a past send time woke the shell in a loop).
    assert_eq!(drain(&mut c), []);
    assert_eq!(c.poll_timeout(), Some(end));
    c.finished(now(t0), "x", "a", token, true);
    let report = done("a", 1, 1, token, BatchOutcome::Succeeded);
    assert_eq!(drain(&mut c), [Output::Propose(report.clone())]);
    assert_eq!(c.poll_timeout(), None);
    commit(&mut c, &mut s, now(t0), &report);
    let hand_over = Output::HandOver {
        to: ReplicaId(2),
        slot,
        generation,
    };
    assert_eq!(drain(&mut c), std::slice::from_ref(&hand_over));
    // Sent again until the group records it, then no more.
    let t1 = t0 + Duration::from_millis(300);
    assert_eq!(c.poll_timeout(), Some(t1));
    c.handle_timeout(now(t1));
    assert_eq!(drain(&mut c), [hand_over]);
    let _ = s.apply(&Command::Accept {
        domain: D,
        slot,
        generation,
    });
    c.set_group(now(t1), Arc::new(s.clone()), Some(1), entitled(end));
    assert_eq!(drain(&mut c), []);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn a_new_owner_starts_a_handed_over_bucket_once_the_hand_over_arrives() {
    let t0 = Instant::now();
    let mut s = state(1);
    submit(&mut s, 1, "a", &["1"], 0);
    let slot = bucket_slot("x", "a");
    assign(&mut s, slot, 2);
    let generation = s.slot(D, slot).unwrap().generation;
    let mut c = core_with(
        ReplicaId(2),
        &s,
        t0,
        settings(5, 3, Concurrency::PerNode(4)),
    );
    assert_eq!(drain(&mut c), []);
    // An early or wrong hand-over is not taken.
    assert!(!c.received(now(t0), slot, generation + 1));
    assert!(c.received(now(t0), slot, generation));
    assert_eq!(
        drain(&mut c),
        [
            Output::Propose(Command::Accept {
                domain: D,
                slot,
                generation,
            }),
            start(
                "a",
                s.slot(D, slot).unwrap().block.0,
                1,
                1,
                &["1"],
                t0 + Duration::from_secs(10)
            ),
        ]
    );
}

#[test]
fn per_node_and_per_cluster_limits_cap_the_buckets_in_process() {
    let t0 = Instant::now();
    let mut s = state(1);
    for (seq, b) in (1..).zip(["a", "b", "c", "d"]) {
        submit(&mut s, seq, b, &[b], 0);
    }
    let end = t0 + Duration::from_secs(10);
    let (ta, tb) = (first_token(&s, "a"), first_token(&s, "b"));
    let mut c = core_with(ME, &s, t0, settings(5, 3, Concurrency::PerNode(1)));
    assert_eq!(drain(&mut c), [start("a", ta, 1, 1, &["a"], end)]);
    // Once its processor returns, a bucket is no longer in process: the next one starts, after
    // the last started rather than from the first again.
    c.finished(now(t0), "x", "a", ta, true);
    assert_eq!(
        drain(&mut c),
        [
            Output::Propose(done("a", 1, 1, ta, BatchOutcome::Succeeded)),
            start("b", tb, 2, 1, &["b"], end)
        ]
    );
    // PerCluster(4) over 3 live members: ceil(4 / 3) = 2 here.
    let mut c = core_with(ME, &s, t0, settings(5, 3, Concurrency::PerCluster(4)));
    let started = drain(&mut c)
        .into_iter()
        .filter(|o| matches!(o, Output::Start { .. }))
        .count();
    assert_eq!(started, 2);
    assert_eq!(c.in_process("x"), 2);
}

#[test]
fn a_task_not_yet_due_holds_its_bucket_until_its_time() {
    let t0 = Instant::now();
    let mut s = state(1);
    submit(&mut s, 1, "a", &["1"], WALL + 500);
    let mut c = core_with(ME, &s, t0, settings(5, 3, Concurrency::PerNode(4)));
    assert_eq!(drain(&mut c), []);
    let t1 = t0 + Duration::from_millis(500);
    assert_eq!(c.poll_timeout(), Some(t1));
    c.handle_timeout(Now {
        at: t1,
        wall_ms: WALL + 500,
    });
    assert_eq!(
        drain(&mut c),
        [start(
            "a",
            first_token(&s, "a"),
            1,
            1,
            &["1"],
            t0 + Duration::from_secs(10)
        )]
    );
}

#[test]
fn a_done_whose_proposal_failed_is_proposed_again_after_the_retry_wait() {
    let (t0, _, mut c, token) = running(&["1"], 5, 3);
    c.finished(now(t0), "x", "a", token, true);
    let report = done("a", 1, 1, token, BatchOutcome::Succeeded);
    assert_eq!(drain(&mut c), [Output::Propose(report.clone())]);
    c.proposed(now(t0), &report, None);
    // Not at once (a group with no leader fails every proposal at once), and the bucket stays
    // busy meanwhile: no second batch of it.
    assert_eq!(drain(&mut c), []);
    assert_eq!(c.poll_timeout(), Some(t0 + RETRY));
    c.handle_timeout(now(t0 + RETRY / 2));
    assert_eq!(drain(&mut c), []);
    c.handle_timeout(now(t0 + RETRY));
    assert_eq!(drain(&mut c), [Output::Propose(report)]);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn removing_an_executor_cancels_its_batches() {
    let (t0, s, mut c, token) = running(&["1"], 5, 3);
    c.remove(now(t0), "x");
    assert_eq!(drain(&mut c), [cancel(token)]);
    c.set_group(
        now(t0),
        Arc::new(s),
        Some(1),
        entitled(t0 + Duration::from_secs(10)),
    );
    assert_eq!(drain(&mut c), []);
}

/// Two nodes over one group state: what each started, in order, and the shell's duties
/// (proposals applied in order, then every node told; hand-overs delivered).
struct Pair {
    s: ClusterState,
    nodes: Vec<ExecutorCore>,
    /// Batches in process per node: (token, first, through).
    running: Vec<Vec<(u64, u64, u64)>>,
    /// Every task number started, in order, the node that started it, and the batches' tokens.
    started: Vec<u64>,
    by: Vec<usize>,
    tokens: Vec<u64>,
    proposals: Vec<(usize, Command)>,
    hand_overs: Vec<(ReplicaId, u16, u64)>,
}

impl Pair {
    /// Drains every node, checking that no two nodes ever have the bucket in process.
    fn drain(&mut self) {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            for o in drain(node) {
                match o {
                    Output::Start {
                        token,
                        first,
                        through,
                        ..
                    } => {
                        let elsewhere =
                            (0..self.running.len()).any(|j| j != i && !self.running[j].is_empty());
                        assert!(!elsewhere, "a bucket in process on two nodes");
                        self.running[i].push((token, first, through));
                        self.started.extend(first..=through);
                        self.by.push(i);
                        self.tokens.push(token);
                    }
                    Output::Propose(c) => self.proposals.push((i, c)),
                    Output::HandOver {
                        to,
                        slot,
                        generation,
                    } => self.hand_overs.push((to, slot, generation)),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }

    /// Applies the proposals in order and tells every node.
    fn commit(&mut self, at: Now) {
        for (i, c) in std::mem::take(&mut self.proposals) {
            let outcome = self.s.apply(&c);
            self.nodes[i].proposed(at, &c, Some(&outcome));
        }
        for node in &mut self.nodes {
            node.set_group(
                at,
                Arc::new(self.s.clone()),
                Some(1),
                entitled(at.at + Duration::from_secs(10)),
            );
        }
    }
}

#[test]
fn a_bucket_moving_mid_queue_runs_on_one_node_at_a_time_in_order_with_rising_tokens() {
    let t0 = Instant::now();
    let mut s = state(1);
    submit(&mut s, 1, "a", &["1", "2", "3", "4"], 0);
    let nodes = [ReplicaId(1), ReplicaId(2)]
        .map(|r| core_with(r, &s, t0, settings(1, 3, Concurrency::PerNode(4))))
        .into();
    let mut p = Pair {
        s,
        nodes,
        running: vec![Vec::new(), Vec::new()],
        started: Vec::new(),
        by: Vec::new(),
        tokens: Vec::new(),
        proposals: Vec::new(),
        hand_overs: Vec::new(),
    };
    let at = now(t0);
    p.drain();
    // The slot moves to node 2 while node 1 runs task 1.
    assign(&mut p.s, bucket_slot("x", "a"), 2);
    p.commit(at);
    for _ in 0..20 {
        p.drain();
        if !p.proposals.is_empty() {
            p.commit(at);
        } else if let Some((to, slot, generation)) = p.hand_overs.pop() {
            let i = if to == ReplicaId(1) { 0 } else { 1 };
            assert!(p.nodes[i].received(at, slot, generation));
        } else if let Some(i) = (0..2).find(|i| !p.running[*i].is_empty()) {
            let (token, ..) = p.running[i].remove(0);
            p.nodes[i].finished(at, "x", "a", token, true);
        } else {
            break;
        }
    }
    assert_eq!(p.started, [1, 2, 3, 4]);
    assert!(p.tokens.windows(2).all(|w| w[0] < w[1]), "{:?}", p.tokens);
    assert_eq!(p.s.exec.depth("x"), 0);
    // Node 1 ran task 1 only; node 2 took over after the hand-over the group recorded.
    assert_eq!(p.by, [0, 1, 1, 1]);
    let slot = p.s.slot(D, bucket_slot("x", "a")).unwrap();
    assert_eq!((slot.owner, slot.from), (Some((ReplicaId(2), 1)), None));
}

#[test]
fn an_owner_cut_off_mid_batch_stops_at_its_entitlement_end_and_the_next_owner_runs_the_head_again()
{
    let (t0, mut s, mut c1, t1) = running(&["1", "2"], 1, 3);
    let mut c2 = core_with(
        ReplicaId(2),
        &s,
        t0,
        settings(1, 3, Concurrency::PerNode(4)),
    );
    assert_eq!(drain(&mut c2), []);
    // Node 1 hears nothing more from the group: its batch is dropped when its entitlement ends.
    let end = t0 + Duration::from_secs(10);
    c1.handle_timeout(now(end));
    assert_eq!(drain(&mut c1), [cancel(t1)]);
    // Its epoch is revoked and the slot given to node 2, which serves it fresh.
    let _ = s.apply(&Command::Revoke {
        replica: ME,
        epoch: 1,
        seq: 0,
    });
    let slot = bucket_slot("x", "a");
    assign(&mut s, slot, 2);
    let t2 = s.slot(D, slot).unwrap().block.0;
    let later = end + Duration::from_secs(10);
    c2.set_group(now(end), Arc::new(s.clone()), Some(1), entitled(later));
    assert_eq!(drain(&mut c2), [start("a", t2, 1, 1, &["1"], later)]);
    assert!(t2 > t1);
    // Node 1 learns of it late: nothing runs there, and its processor's late result is ignored.
    c1.set_group(now(end), Arc::new(s.clone()), Some(1), None);
    c1.finished(now(end), "x", "a", t1, true);
    assert_eq!(drain(&mut c1), []);
}

#[test]
fn a_success_the_state_already_passed_is_not_reported_backwards() {
    // A previous owner's late report of tasks 1 to 3 applies while this node runs 1 and 2: its
    // success must not become a `Done` from task 4 back to task 2, which would apply to the
    // head, remove nothing and wipe the head's failure count.
    let (t0, mut s, mut c, token) = running(&["1", "2", "3", "4", "5"], 2, 3);
    let end = t0 + Duration::from_secs(10);
    s.apply(&done("a", 1, 3, token - 1, SUCCEEDED));
    c.set_group(now(t0), Arc::new(s.clone()), Some(1), entitled(end));
    assert_eq!(drain(&mut c), []);
    c.finished(now(t0), "x", "a", token, true);
    assert_eq!(
        drain(&mut c),
        [start("a", token + 1, 4, 1, &["4", "5"], end)]
    );
    // And the state refuses such a `Done` whoever proposes it.
    let backwards = s.apply(&done("a", 4, 2, token, SUCCEEDED));
    assert!(
        matches!(
            backwards,
            Outcome::Exec(colony_runtime::consensus::exec::ExecOutcome::Refused(_))
        ),
        "{backwards:?}"
    );
}

#[test]
fn a_done_whose_head_moved_in_the_state_before_its_answer_is_made_again_at_once() {
    let (t0, mut s, mut c, token) = running(&["1", "2", "3", "4", "5"], 2, 3);
    let end = t0 + Duration::from_secs(10);
    let ours = first_succeeds(&mut c, t0, token, 2, &["3", "4"]);
    // Another node's late report of task 1 applies first, and the state comes before the
    // answer: ours can never apply, so the successes are reported again from the new head.
    s.apply(&done("a", 1, 1, token - 1, SUCCEEDED));
    let refused = s.apply(&ours);
    c.set_group(now(t0), Arc::new(s.clone()), Some(1), entitled(end));
    assert_eq!(
        drain(&mut c),
        [Output::Propose(done("a", 2, 2, token, SUCCEEDED))]
    );
    c.proposed(now(t0), &ours, Some(&refused));
    assert_eq!(drain(&mut c), []);
}
