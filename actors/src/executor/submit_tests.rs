//! Exact-output tests of the submit pipeline (docs/executor.md, Submitting).

use std::time::{Duration, Instant};

use colony_runtime::consensus::exec::{
    ExecCommand, ExecOutcome, ExecRefusal, MAX_SUBMIT_TASKS, NewTask,
};
use colony_runtime::consensus::{Command, Outcome, ReplicaId};

use super::*;

const ME: (ReplicaId, u64) = (ReplicaId(1), 1);
const RETRY: Duration = Duration::from_millis(200);

fn task(p: &str) -> NewTask {
    NewTask::new("b", p.as_bytes().to_vec(), 0)
}

fn command(seq: u64, submitter: (ReplicaId, u64), payloads: &[&str]) -> Command {
    bounded(seq, submitter, payloads, 10)
}

fn bounded(seq: u64, submitter: (ReplicaId, u64), payloads: &[&str], bound: u64) -> Command {
    Command::Exec(ExecCommand::Submit {
        executor: "x".into(),
        submitter,
        seq,
        bound,
        tasks: payloads.iter().map(|p| task(p)).collect(),
    })
}

fn drain(p: &mut SubmitPipeline) -> Vec<SubmitOutput> {
    std::iter::from_fn(|| p.poll_output()).collect()
}

fn answer(call: CallId, answer: SubmitAnswer) -> SubmitOutput {
    SubmitOutput::Answer { call, answer }
}

fn pipeline() -> SubmitPipeline {
    let mut p = SubmitPipeline::new(RETRY);
    p.set_submitter(Some(ME));
    p
}

#[test]
fn one_submit_is_in_flight_per_executor_and_the_calls_meanwhile_go_together_in_order() {
    let t0 = Instant::now();
    let mut p = pipeline();
    p.submit("x", 1, vec![task("a")], 10);
    let first = command(1, ME, &["a"]);
    assert_eq!(drain(&mut p), [SubmitOutput::Propose(first.clone())]);
    p.submit("x", 2, vec![task("b")], 10);
    p.submit("x", 3, vec![task("c"), task("d")], 10);
    assert_eq!(drain(&mut p), []);
    p.proposed(
        t0,
        &first,
        Some(&Outcome::Exec(ExecOutcome::Accepted { first: 7, count: 1 })),
    );
    let second = command(2, ME, &["b", "c", "d"]);
    assert_eq!(
        drain(&mut p),
        [
            answer(1, SubmitAnswer::Accepted { first: 7, count: 1 }),
            SubmitOutput::Propose(second.clone()),
        ]
    );
    p.proposed(
        t0,
        &second,
        Some(&Outcome::Exec(ExecOutcome::Accepted { first: 8, count: 3 })),
    );
    assert_eq!(
        drain(&mut p),
        [
            answer(2, SubmitAnswer::Accepted { first: 8, count: 1 }),
            answer(3, SubmitAnswer::Accepted { first: 9, count: 2 }),
        ]
    );
    assert_eq!(p.busy(), 0);
}

#[test]
fn a_failed_proposal_is_proposed_again_with_the_same_seq_after_the_retry_wait() {
    let t0 = Instant::now();
    let mut p = pipeline();
    p.submit("x", 1, vec![task("a")], 10);
    let first = command(1, ME, &["a"]);
    let _ = drain(&mut p);
    p.proposed(t0, &first, None);
    assert_eq!(drain(&mut p), []);
    assert_eq!(p.poll_timeout(), Some(t0 + RETRY));
    p.handle_timeout(t0 + RETRY);
    assert_eq!(drain(&mut p), [SubmitOutput::Propose(first.clone())]);
    assert_eq!(p.poll_timeout(), None);
    // The epoch ended meanwhile: the first proposal may have applied, so the caller is told so.
    p.proposed(
        t0 + RETRY,
        &first,
        Some(&Outcome::Exec(ExecOutcome::Refused(
            ExecRefusal::EpochEnded,
        ))),
    );
    assert_eq!(drain(&mut p), [answer(1, SubmitAnswer::Unknown)]);
}

#[test]
fn busy_is_answered_to_every_call_of_the_submit_and_calls_past_the_bound_wait_for_nothing() {
    let t0 = Instant::now();
    let mut p = pipeline();
    p.submit("x", 1, vec![task("a")], 2);
    let first = bounded(1, ME, &["a"], 2);
    let _ = drain(&mut p);
    p.submit("x", 2, vec![task("b"), task("c")], 2);
    // Two wait; one more would hold more than the bound here.
    p.submit("x", 3, vec![task("d")], 2);
    assert_eq!(drain(&mut p), [answer(3, SubmitAnswer::Busy { queued: 2 })]);
    p.proposed(
        t0,
        &first,
        Some(&Outcome::Exec(ExecOutcome::Busy { queued: 2 })),
    );
    assert_eq!(
        drain(&mut p),
        [
            answer(1, SubmitAnswer::Busy { queued: 2 }),
            SubmitOutput::Propose(bounded(2, ME, &["b", "c"], 2)),
        ]
    );
}

#[test]
fn calls_wait_for_an_epoch_and_a_new_epoch_numbers_from_one() {
    let t0 = Instant::now();
    let mut p = SubmitPipeline::new(RETRY);
    p.submit("x", 1, vec![task("a")], 10);
    assert_eq!(drain(&mut p), []);
    p.set_submitter(Some(ME));
    let first = command(1, ME, &["a"]);
    assert_eq!(drain(&mut p), [SubmitOutput::Propose(first.clone())]);
    p.proposed(
        t0,
        &first,
        Some(&Outcome::Exec(ExecOutcome::Accepted { first: 1, count: 1 })),
    );
    let _ = drain(&mut p);
    let next = (ReplicaId(1), 2);
    p.set_submitter(Some(next));
    p.submit("x", 2, vec![task("b")], 10);
    let second = command(1, next, &["b"]);
    assert_eq!(drain(&mut p), [SubmitOutput::Propose(second.clone())]);
    let accepted = Outcome::Exec(ExecOutcome::Accepted { first: 2, count: 1 });
    p.proposed(t0, &second, Some(&accepted));
    let _ = drain(&mut p);
    // The same epoch lost and given back goes on counting: the state refuses a seq it passed.
    p.set_submitter(None);
    p.set_submitter(Some(next));
    p.submit("x", 3, vec![task("c")], 10);
    assert_eq!(
        drain(&mut p),
        [SubmitOutput::Propose(command(2, next, &["c"]))]
    );
}

#[test]
fn a_call_outside_the_submit_limits_is_refused_at_once() {
    let mut p = pipeline();
    p.submit("x", 1, vec![], 10);
    p.submit("x", 2, vec![task(""); MAX_SUBMIT_TASKS + 1], u64::MAX);
    assert_eq!(
        drain(&mut p),
        [
            answer(
                1,
                SubmitAnswer::Refused(ExecRefusal::BatchSize { tasks: 0, bytes: 0 })
            ),
            answer(
                2,
                SubmitAnswer::Refused(ExecRefusal::BatchSize {
                    tasks: MAX_SUBMIT_TASKS + 1,
                    bytes: 0
                })
            ),
        ]
    );
    assert_eq!(p.busy(), 0);
}

#[test]
fn a_submit_refused_on_its_only_proposal_for_an_ended_epoch_goes_again_under_the_next() {
    let t0 = Instant::now();
    let mut p = pipeline();
    p.submit("x", 1, vec![task("a")], 10);
    let first = command(1, ME, &["a"]);
    let _ = drain(&mut p);
    p.submit("x", 2, vec![task("b"), task("c")], 10);
    let ended = Outcome::Exec(ExecOutcome::Refused(ExecRefusal::EpochEnded));
    p.proposed(t0, &first, Some(&ended));
    // Never applied, and no epoch to propose under yet: nobody is answered. The ended epoch,
    // given again by a shell that has not heard yet, is not proposed under.
    assert_eq!(drain(&mut p), []);
    p.set_submitter(Some(ME));
    assert_eq!(drain(&mut p), []);
    let next = (ReplicaId(1), 2);
    p.set_submitter(Some(next));
    let again = command(1, next, &["a", "b", "c"]);
    assert_eq!(drain(&mut p), [SubmitOutput::Propose(again.clone())]);
    let accepted = Outcome::Exec(ExecOutcome::Accepted { first: 4, count: 3 });
    p.proposed(t0, &again, Some(&accepted));
    assert_eq!(
        drain(&mut p),
        [
            answer(1, SubmitAnswer::Accepted { first: 4, count: 1 }),
            answer(2, SubmitAnswer::Accepted { first: 5, count: 2 }),
        ]
    );
}
