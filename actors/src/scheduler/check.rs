//! The scheduler's promises as checks over what happened, for the simulator and the process
//! tests alike: each returns what broke a promise (empty when none did).
//!
//! - [`runs`]: at most one run per (job, due time) at a time: a second start of a due time is
//!   a re-run with a higher token and attempt, and starts only after the previous run's
//!   effective end (the run's end, or its node's entitlement end if sooner); under
//!   `Overlap::Skip` no two runs of a job overlap at all; no run on a node without the runner.
//! - [`log`]: over the applied job commands, fencing tokens strictly increase per job, and every
//!   due time of a job's schedule is accounted for exactly once, fired or passed with a reason.
//! - [`starts_match_fires`]: each run started for a fire the log applied, as that fire said.
//! - [`policies`]: every fire and pass proposed applied the job's misfire policy at its
//!   proposer's wall clock.
//! - [`history`]: over a job's run history as nodes saw it (duplicates allowed), every due time
//!   in a window is accounted for exactly once: run (attempts 1, 2, ... with rising tokens, all
//!   but the last lost with their node) or passed with a reason. Process tests, which do not
//!   see the log, judge by it.

use std::collections::BTreeMap;

use colony_runtime::consensus::jobs::{
    JobCommand, JobOutcome, PassReason, RunEnd, RunOutcome, RunRecord,
};
use colony_runtime::consensus::{Command, Outcome, ReplicaId};

use super::config::{JobConfig, MisfirePolicy, Overlap, decode_config};
use super::schedule::Schedule;

/// One run's start, as the node that ran it saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    /// The job.
    pub job: String,
    /// The due time.
    pub due: u64,
    /// The fire's token.
    pub token: u64,
    /// The attempt.
    pub attempt: u32,
    /// The node's name.
    pub node: String,
    /// The node's member id and epoch.
    pub runner: (ReplicaId, u64),
    /// When it started (a common timeline, microseconds).
    pub at_us: u64,
    /// When it ended or its node's entitlement did, whichever was first (the latest it could
    /// act unfenced).
    pub until_us: u64,
    /// The node had the job's runner registered.
    pub had_runner: bool,
}

/// A fire or pass a job's owner proposed, with what it knew.
#[derive(Debug, Clone)]
pub struct Proposed {
    /// The command.
    pub command: JobCommand,
    /// The job's configuration.
    pub config: JobConfig,
    /// The proposer's wall clock (UTC milliseconds).
    pub wall: u64,
    /// The grace it allowed.
    pub grace: u64,
}

/// Due times counted one by one at most in a check.
const COUNT_AT_MOST: u64 = 10_000;

/// Runs: see the module doc.
pub fn runs(starts: &[RunStart], overlap: impl Fn(&str) -> Overlap) -> Vec<String> {
    let mut broken = Vec::new();
    for s in starts.iter().filter(|s| !s.had_runner) {
        broken.push(format!("{s:?} ran on a node without the runner"));
    }
    let mut by_job: BTreeMap<&str, Vec<&RunStart>> = BTreeMap::new();
    for s in starts {
        by_job.entry(&s.job).or_default().push(s);
    }
    for (job, mut runs) in by_job {
        runs.sort_by_key(|s| (s.at_us, s.token));
        let skip = overlap(job) == Overlap::Skip;
        for (i, a) in runs.iter().enumerate() {
            for b in &runs[i + 1..] {
                let same_due = a.due == b.due;
                if same_due && (b.token <= a.token || b.attempt <= a.attempt) {
                    broken.push(format!("{b:?} ran {a:?}'s due time again as no re-run"));
                }
                if (same_due || skip) && b.at_us < a.until_us {
                    broken.push(format!("{b:?} started while {a:?} could still act"));
                }
            }
        }
    }
    broken
}

/// The applied job commands with their outcomes, in log order, from a history of commands.
pub fn applied_jobs<'a>(
    history: impl IntoIterator<Item = &'a (Command, Outcome)>,
) -> Vec<(JobCommand, JobOutcome)> {
    history
        .into_iter()
        .filter_map(|(c, o)| match (c, o) {
            (Command::Jobs(c), Outcome::Job(o)) => Some((c.clone(), *o)),
            _ => None,
        })
        .collect()
}

/// Grid times of `schedule` in `[from, to)`, counted up to [`COUNT_AT_MOST`].
fn grid_between(schedule: &Schedule, from: u64, to: u64) -> u64 {
    let mut count = 0;
    let mut at = schedule.latest_at_or_before_ms(from).filter(|l| *l == from);
    if at.is_none() {
        at = schedule.next_after_ms(from);
    }
    while let Some(t) = at.filter(|t| *t < to) {
        count += 1;
        if count >= COUNT_AT_MOST {
            break;
        }
        at = schedule.next_after_ms(t);
    }
    count
}

/// The log: see the module doc.
pub fn log(applied: &[(JobCommand, JobOutcome)]) -> Vec<String> {
    let mut broken = Vec::new();
    // Per job: its schedule and next due time as the checker follows them, and the last token.
    let mut jobs: BTreeMap<&str, (Option<Schedule>, Option<u64>)> = BTreeMap::new();
    let mut last_token: BTreeMap<&str, u64> = BTreeMap::new();
    for (command, outcome) in applied {
        let refused = matches!(outcome, JobOutcome::Refused(_));
        match (command, outcome) {
            (
                JobCommand::Schedule {
                    job,
                    config,
                    first_due,
                    ..
                },
                JobOutcome::Scheduled { .. },
            ) => {
                let schedule = decode_config(config).ok().and_then(|c| c.schedule);
                jobs.insert(job, (schedule, *first_due));
            }
            (JobCommand::Unschedule { job }, _) if !refused => {
                jobs.remove(job.as_str());
            }
            (
                JobCommand::Fire {
                    job,
                    from,
                    due,
                    attempt,
                    next_due,
                    passed,
                    ..
                },
                JobOutcome::Fired { token },
            ) => {
                let last = last_token.insert(job, *token).unwrap_or(0);
                if *token <= last {
                    broken.push(format!("{job}: token {token} after {last}"));
                }
                if *attempt <= 1 {
                    let covers = (*from, Some(*due), *passed + 1, *next_due);
                    account(&mut broken, &mut jobs, job, covers);
                }
            }
            (
                JobCommand::Pass {
                    job,
                    due,
                    count,
                    next_due,
                    why,
                    ..
                },
                JobOutcome::Done,
            ) => {
                if *why == PassReason::Overlap && *count != 1 {
                    broken.push(format!("{job}: {count} due times passed for one overlap"));
                }
                account(&mut broken, &mut jobs, job, (*due, None, *count, *next_due));
            }
            _ => {}
        }
    }
    broken
}

/// A fire (of `fired`) or pass planned from `start` that covers `count` due times and moves
/// the job to `next_due`: exactly the grid times from the job's next due time on record (which
/// must be `start`) up to `next_due`, the due time after the one fired (or one on the grid).
fn account(
    broken: &mut Vec<String>,
    jobs: &mut BTreeMap<&str, (Option<Schedule>, Option<u64>)>,
    job: &str,
    (start, fired, count, next_due): (u64, Option<u64>, u64, Option<u64>),
) {
    let due = fired.unwrap_or(start);
    let Some((Some(schedule), recorded)) = jobs.get_mut(job) else {
        return;
    };
    let Some(from) = *recorded else {
        broken.push(format!("{job}: {due} applied after the schedule ended"));
        return;
    };
    if start != from || due < from {
        broken.push(format!(
            "{job}: {due} planned from {start} applied at next due time {from}"
        ));
    }
    let next_fine = match fired {
        Some(due) => next_due == schedule.next_after_ms(due),
        None => next_due.is_none_or(|n| n > due && schedule.latest_at_or_before_ms(n) == Some(n)),
    };
    if !next_fine {
        broken.push(format!(
            "{job}: {due} moved the job to {next_due:?}, off the schedule"
        ));
    }
    let to = next_due.unwrap_or(due + 1);
    let grid = grid_between(schedule, from, to).max(1);
    if grid != count && count < COUNT_AT_MOST - 1 {
        broken.push(format!(
            "{job}: [{from}, {to}) holds {grid} due times, {count} accounted for"
        ));
    }
    *recorded = next_due;
}

/// Starts and fires: see the module doc.
pub fn starts_match_fires(
    starts: &[RunStart],
    applied: &[(JobCommand, JobOutcome)],
) -> Vec<String> {
    // By token: the job, due time, attempt and runner the log fired.
    type Said<'a> = (&'a str, u64, u32, (ReplicaId, u64));
    let fires: BTreeMap<u64, Said<'_>> = applied
        .iter()
        .filter_map(|(c, o)| match (c, o) {
            (
                JobCommand::Fire {
                    job,
                    due,
                    attempt,
                    runner,
                    ..
                },
                JobOutcome::Fired { token },
            ) => Some((*token, (job.as_str(), *due, (*attempt).max(1), *runner))),
            _ => None,
        })
        .collect();
    let mut broken = Vec::new();
    for s in starts {
        let said = (s.job.as_str(), s.due, s.attempt, s.runner);
        if fires.get(&s.token) != Some(&said) {
            broken.push(format!(
                "{s:?} started, but the log fired {:?}",
                fires.get(&s.token)
            ));
        }
    }
    broken
}

/// Policies: see the module doc.
pub fn policies(proposed: &[Proposed]) -> Vec<String> {
    let mut broken = Vec::new();
    for p in proposed {
        let Some(schedule) = &p.config.schedule else {
            continue;
        };
        let policy = p.config.misfire;
        match &p.command {
            JobCommand::Fire {
                job,
                due,
                attempt: 0 | 1,
                ..
            } => {
                let on_time = p.wall.saturating_sub(*due) <= p.grace;
                let later = grid_between(schedule, due + 1, p.wall + 1);
                let fine = match policy {
                    MisfirePolicy::Skip => on_time,
                    MisfirePolicy::FireOnce => later == 0,
                    MisfirePolicy::CatchUp { max } => later < u64::from(max.max(1)),
                };
                if !fine {
                    broken.push(format!(
                        "{job}: fired {due} at {} under {policy:?} ({later} later due)",
                        p.wall
                    ));
                }
            }
            JobCommand::Pass {
                job,
                due,
                why: PassReason::Missed,
                ..
            } if policy != MisfirePolicy::Skip => {
                broken.push(format!("{job}: {due} passed as missed under {policy:?}"));
            }
            _ => {}
        }
    }
    broken
}

/// History: see the module doc. `records` are one job's, with `schedule`; the window is
/// `[from, to]` (due times, UTC milliseconds).
pub fn history(schedule: &Schedule, records: &[RunRecord], from: u64, to: u64) -> Vec<String> {
    let mut broken = Vec::new();
    // Distinct records: by due time, (attempt, token, outcome) for runs; passes with their count.
    let mut ran: BTreeMap<u64, BTreeMap<(u32, u64), RunOutcome>> = BTreeMap::new();
    let mut covered: BTreeMap<u64, u32> = BTreeMap::new();
    let mut passes = std::collections::BTreeSet::new();
    for r in records {
        match r.what {
            RunEnd::Ran(outcome) => {
                let seen = ran.entry(r.due).or_default();
                if let Some(o) = seen.insert((r.attempt, r.token), outcome)
                    && o != outcome
                {
                    broken.push(format!(
                        "token {} of {} recorded {o:?} and {outcome:?}",
                        r.token, r.due
                    ));
                }
            }
            RunEnd::Passed { why, count } => {
                if passes.insert((r.due, count, format!("{why:?}"))) {
                    let mut at = Some(r.due);
                    for _ in 0..count.min(COUNT_AT_MOST) {
                        let Some(t) = at else { break };
                        *covered.entry(t).or_default() += 1;
                        at = schedule.next_after_ms(t);
                    }
                }
            }
        }
    }
    for (due, attempts) in &ran {
        *covered.entry(*due).or_default() += 1;
        let mut last_token = 0;
        for (i, ((attempt, token), outcome)) in attempts.iter().enumerate() {
            if *attempt as usize != i + 1 || *token <= last_token {
                broken.push(format!(
                    "{due}: attempts {attempts:?} are not 1, 2, ... with rising tokens"
                ));
                break;
            }
            if i + 1 < attempts.len() && *outcome != RunOutcome::Lost {
                broken.push(format!(
                    "{due}: attempt {attempt} ended {outcome:?} and ran again"
                ));
            }
            last_token = *token;
        }
    }
    let mut at = schedule
        .latest_at_or_before_ms(from)
        .filter(|l| *l == from)
        .or_else(|| schedule.next_after_ms(from));
    let mut counted = 0;
    while let Some(t) = at.filter(|t| *t <= to && counted < COUNT_AT_MOST) {
        match covered.get(&t).copied().unwrap_or(0) {
            1 => {}
            n => broken.push(format!("due time {t} accounted for {n} times")),
        }
        counted += 1;
        at = schedule.next_after_ms(t);
    }
    broken
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::scheduler::from_ms;

    const T0: u64 = 1_800_000_000_000;

    fn start(due: u64, token: u64, attempt: u32, at_us: u64, until_us: u64) -> RunStart {
        RunStart {
            job: "j".into(),
            due,
            token,
            attempt,
            node: "n1".into(),
            runner: (ReplicaId(1), 1),
            at_us,
            until_us,
            had_runner: true,
        }
    }

    #[test]
    fn a_second_run_of_a_due_time_is_caught_unless_it_is_a_later_re_run() {
        let first = start(T0, 5, 1, 0, 100);
        let rerun = start(T0, 9, 2, 150, 300);
        assert!(runs(&[first.clone(), rerun.clone()], |_| Overlap::Allow).is_empty());
        let early = start(T0, 9, 2, 50, 300);
        assert_eq!(runs(&[first.clone(), early], |_| Overlap::Allow).len(), 1);
        let again = start(T0, 5, 1, 150, 300);
        assert_eq!(runs(&[first.clone(), again], |_| Overlap::Allow).len(), 1);
        // Under Overlap::Skip, runs of different due times may not overlap either.
        let next = start(T0 + 1, 6, 1, 50, 300);
        assert!(runs(&[first.clone(), next.clone()], |_| Overlap::Allow).is_empty());
        assert_eq!(runs(&[first, next], |_| Overlap::Skip).len(), 1);
    }

    #[test]
    fn every_due_time_is_accounted_for_once() {
        let config = JobConfig::for_runner("k")
            .schedule(Schedule::interval(Duration::from_millis(100), from_ms(T0)).unwrap());
        let schedule = JobCommand::Schedule {
            job: "j".into(),
            runner: "k".into(),
            overlap: false,
            first_due: Some(T0),
            history: 1,
            config: crate::scheduler::encode_config(&config).into(),
        };
        let fire = |from, due, passed, token| {
            (
                JobCommand::Fire {
                    job: "j".into(),
                    generation: 1,
                    from,
                    due,
                    attempt: 1,
                    runner: (ReplicaId(1), 1),
                    next_due: Some(due + 100),
                    passed,
                },
                JobOutcome::Fired { token },
            )
        };
        let scheduled = (schedule, JobOutcome::Scheduled { generation: 1 });
        let good = [
            scheduled.clone(),
            fire(T0, T0, 0, 1),
            fire(T0 + 100, T0 + 400, 3, 2),
        ];
        assert_eq!(log(&good), Vec::<String>::new());
        let miscounted = [
            scheduled.clone(),
            fire(T0, T0, 0, 1),
            fire(T0 + 100, T0 + 400, 2, 2),
        ];
        assert_eq!(log(&miscounted).len(), 1);
        let token_back = [
            scheduled,
            fire(T0, T0, 0, 3),
            fire(T0 + 100, T0 + 100, 0, 2),
        ];
        assert_eq!(log(&token_back).len(), 1);
    }

    #[test]
    fn a_history_accounts_for_every_due_time_once() {
        let schedule = Schedule::interval(Duration::from_millis(100), from_ms(T0)).unwrap();
        let rec = |due, token, attempt, what| RunRecord {
            due,
            token,
            runner: Some(ReplicaId(1)),
            attempt,
            what,
            message: String::new(),
            started: 0,
            millis: 0,
        };
        let ok = RunEnd::Ran(RunOutcome::Succeeded);
        let lost = RunEnd::Ran(RunOutcome::Lost);
        let passed = |count| RunEnd::Passed {
            why: PassReason::Missed,
            count,
        };
        let good = [
            rec(T0, 1, 1, ok),
            rec(T0 + 100, 2, 1, lost),
            rec(T0 + 100, 3, 2, ok),
            rec(T0 + 200, 0, 0, passed(2)),
            rec(T0 + 400, 4, 1, ok),
            // Seen by another node too.
            rec(T0 + 400, 4, 1, ok),
        ];
        assert_eq!(
            history(&schedule, &good, T0, T0 + 400),
            Vec::<String>::new()
        );
        // A gap, a due time run twice, a re-run after a run that was not lost.
        let gap = [rec(T0, 1, 1, ok), rec(T0 + 200, 2, 1, ok)];
        assert_eq!(history(&schedule, &gap, T0, T0 + 200).len(), 1);
        let twice = [rec(T0, 1, 1, ok), rec(T0, 2, 1, ok)];
        assert!(!history(&schedule, &twice, T0, T0).is_empty());
        let rerun = [rec(T0, 1, 1, ok), rec(T0, 2, 2, ok)];
        assert_eq!(history(&schedule, &rerun, T0, T0).len(), 1);
        let both = [rec(T0, 1, 1, ok), rec(T0, 0, 0, passed(1))];
        assert_eq!(history(&schedule, &both, T0, T0).len(), 1);
    }
}
