//! The scheduler's part of the cluster state: once-per-cluster jobs, which nodes can run which
//! jobs, the fires in progress and each job's run history. Deterministic like the rest of the
//! state: every time in it is a number a proposer put in a command (UTC milliseconds for due
//! times), never a clock read here.
//!
//! A fire is decided here and nowhere else: [`JobCommand::Fire`] applies only for the job's next
//! due time (or as the re-run of a fire whose runner's epoch ended), so however many nodes
//! propose a due time, it fires once. A fire draws its fencing token from the state's token
//! counter, above every token given before.
//!
//! The job's configuration travels as opaque bytes (the scheduler's own encoding); the state
//! reads only what it decides on: the runner key and whether runs may overlap.
//!
//! Jobs are [`Shared`] in a persistent map ([`Jobs`]): the copy of the state the group publishes
//! after every applied batch shares the map's nodes and the jobs, a command copies only the path
//! to the job it changes and the job, and [`JobTable::changed_since`] finds what changed between
//! two copies by skipping what they share.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use imbl::ordmap::DiffItem;

use super::Shared;
use super::command::ReplicaId;

/// Jobs by id: a persistent ordered map, whose copies share their nodes.
pub type Jobs = imbl::OrdMap<String, Shared<Job>>;

/// Longest message kept in a run record, in bytes.
pub const MAX_MESSAGE: usize = 512;

/// A change to the scheduler's state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobCommand {
    /// Creates or replaces a job (the last one applied wins). Its fires in progress go on.
    Schedule {
        /// The job id.
        job: String,
        /// The runner key.
        runner: String,
        /// Whether a fire may start while a run is in progress.
        overlap: bool,
        /// Its first due time, if it has one.
        first_due: Option<u64>,
        /// Run records to keep.
        history: u16,
        /// The scheduler's encoding of the job.
        config: serde_bytes::ByteBuf,
    },
    /// Removes a job; a run in progress may still finish and is recorded nowhere.
    Unschedule {
        /// The job id.
        job: String,
    },
    /// The runner keys a node has registered, in its epoch.
    Runners {
        /// The node.
        replica: ReplicaId,
        /// Its epoch.
        epoch: u64,
        /// Its runner keys.
        keys: Vec<String>,
    },
    /// Fires `due` of `job` on `runner` (attempt 1), or fires it again on another runner after
    /// the previous attempt's runner's epoch ended. A first fire applies only while the job's
    /// next due time is `from` (what the proposer planned from); it fires `due`, `from` or a
    /// later one (a misfire policy firing the latest of several missed times), and `next_due`
    /// must be later still.
    Fire {
        /// The job id.
        job: String,
        /// The job's generation the proposer planned with.
        generation: u64,
        /// The job's next due time the proposer planned from (a re-run: `due`).
        from: u64,
        /// The due time fired.
        due: u64,
        /// 1 for a first fire, more for a re-run.
        attempt: u32,
        /// The node that runs it, and its epoch.
        runner: (ReplicaId, u64),
        /// The job's next due time after this fire (the proposer computed it).
        next_due: Option<u64>,
        /// Due times from `from` up to `due` folded into this fire or skipped by the misfire
        /// policy (recorded as missed, labelled with `from`).
        passed: u64,
    },
    /// A run ended.
    Finish {
        /// The job id.
        job: String,
        /// The run's token.
        token: u64,
        /// How it ended.
        outcome: RunOutcome,
        /// What the runner said (cut at [`MAX_MESSAGE`] bytes).
        message: String,
        /// When it started (UTC milliseconds, the runner's clock: a label).
        started: u64,
        /// How long it ran, in milliseconds.
        millis: u64,
    },
    /// Due times that pass without a run: skipped for overlap, missed by policy, or with no
    /// runner anywhere.
    Pass {
        /// The job id.
        job: String,
        /// The job's generation the proposer planned with.
        generation: u64,
        /// The due time that passed (the job's next due time).
        due: u64,
        /// How many due times this covers.
        count: u64,
        /// Why.
        why: PassReason,
        /// The job's next due time after these.
        next_due: Option<u64>,
    },
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunOutcome {
    /// The runner succeeded.
    Succeeded,
    /// The runner failed (an error or a panic).
    Failed,
    /// The runner gave up on purpose.
    Aborted,
    /// The runner's node died during the run: it was fired again.
    Lost,
}

/// Why due times passed without a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PassReason {
    /// The previous run was still in progress (`Overlap::Skip`).
    Overlap,
    /// Missed (the cluster could not fire in time) and not run, by the misfire policy.
    Missed,
    /// No live node has the job's runner registered.
    NoRunner,
}

/// A run or a passed due time, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The due time.
    pub due: u64,
    /// The run's token (0 for passed due times).
    pub token: u64,
    /// The node that ran it.
    pub runner: Option<ReplicaId>,
    /// The attempt.
    pub attempt: u32,
    /// What happened.
    pub what: RunEnd,
    /// What the runner said.
    pub message: String,
    /// When it started (UTC milliseconds, the runner's clock).
    pub started: u64,
    /// How long it ran, in milliseconds.
    pub millis: u64,
}

/// What a history record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunEnd {
    /// A run ended so.
    Ran(RunOutcome),
    /// `count` due times passed without a run.
    Passed {
        /// Why.
        why: PassReason,
        /// How many.
        count: u64,
    },
}

/// A fire in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFire {
    /// The due time.
    pub due: u64,
    /// The attempt.
    pub attempt: u32,
    /// The node running it, and its epoch.
    pub runner: (ReplicaId, u64),
}

/// One once-per-cluster job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Bumped by every [`JobCommand::Schedule`] of this id.
    pub generation: u64,
    /// The runner key.
    pub runner: String,
    /// Whether runs may overlap.
    pub overlap: bool,
    /// The next due time not yet fired or passed; `None` once the schedule has no more.
    pub next_due: Option<u64>,
    /// Fires in progress, by token.
    pub open: BTreeMap<u64, OpenFire>,
    /// The latest runs and passed due times, oldest first.
    pub history: VecDeque<RunRecord>,
    /// Records kept.
    pub keep: u16,
    /// The scheduler's encoding of the job.
    pub config: serde_bytes::ByteBuf,
}

/// The scheduler's state. See the module doc.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTable {
    /// Jobs by id.
    pub jobs: Jobs,
    /// Runner keys by node, with the epoch they were registered in.
    pub runners: BTreeMap<ReplicaId, (u64, Vec<String>)>,
}

/// What applying a job command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobOutcome {
    /// It took effect.
    Done,
    /// The job's generation after a schedule.
    Scheduled {
        /// The generation.
        generation: u64,
    },
    /// The fire took effect with this token.
    Fired {
        /// The token.
        token: u64,
    },
    /// It changed nothing.
    Refused(JobRefusal),
}

/// Why a job command changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum JobRefusal {
    /// No job by that id.
    #[error("no such job")]
    NoSuchJob,
    /// The job changed, or the due time was fired or passed already.
    #[error("the job moved on since the proposal was made")]
    Stale,
    /// The runner node is not live in that epoch, or has no runner for the job.
    #[error("the node cannot run the job")]
    NoRunner,
    /// A run is in progress and the job does not allow overlaps.
    #[error("a run of the job is in progress")]
    Running,
    /// No run with that token is in progress (it ended, or was fired again).
    #[error("no run with that token is in progress")]
    Fenced,
    /// Every token below 2^53 has been handed out.
    #[error("fencing tokens exhausted")]
    Exhausted,
}

impl JobTable {
    /// The ids of the jobs that differ between `old` and this table: added, removed or changed.
    /// It costs what changed, not what there is: the two maps' shared nodes are skipped, and
    /// an unchanged job is the same [`Shared`] in both.
    ///
    /// # Examples
    /// ```
    /// use colony_runtime::consensus::jobs::{JobCommand, JobTable};
    /// let schedule = |job: &str| JobCommand::Schedule {
    ///     job: job.into(),
    ///     runner: "r".into(),
    ///     overlap: false,
    ///     first_due: Some(1_000),
    ///     history: 5,
    ///     config: Default::default(),
    /// };
    /// let mut old = JobTable::default();
    /// for job in ["a", "b", "c"] {
    ///     old.apply(&schedule(job), |_, _| true, || None);
    /// }
    /// let mut new = old.clone();
    /// new.apply(&schedule("b"), |_, _| true, || None);
    /// new.apply(&JobCommand::Unschedule { job: "c".into() }, |_, _| true, || None);
    /// let changed: Vec<&String> = new.changed_since(&old).collect();
    /// assert_eq!(changed, ["b", "c"]);
    /// ```
    pub fn changed_since<'a>(&'a self, old: &'a JobTable) -> impl Iterator<Item = &'a String> {
        old.jobs.diff(&self.jobs).map(|d| match d {
            DiffItem::Add(id, _)
            | DiffItem::Remove(id, _)
            | DiffItem::Update { new: (id, _), .. } => id,
        })
    }

    /// Whether a fire is open on `replica` in `epoch`: its run may still be going.
    pub fn runs_on(&self, replica: ReplicaId, epoch: u64) -> bool {
        self.jobs
            .values()
            .any(|j| j.open.values().any(|f| f.runner == (replica, epoch)))
    }

    /// Whether `replica` in `epoch` has a runner for `key`.
    pub fn can_run(&self, replica: ReplicaId, epoch: u64, key: &str) -> bool {
        self.runners
            .get(&replica)
            .is_some_and(|(e, keys)| *e == epoch && keys.iter().any(|k| k == key))
    }

    /// Applies one command. `in_force` says whether a node's epoch is in force; `token` draws
    /// the next fencing token.
    pub fn apply(
        &mut self,
        command: &JobCommand,
        in_force: impl Fn(ReplicaId, u64) -> bool,
        token: impl FnOnce() -> Option<u64>,
    ) -> JobOutcome {
        match command {
            JobCommand::Schedule {
                job,
                runner,
                overlap,
                first_due,
                history,
                config,
            } => {
                let entry = self.jobs.entry(job.clone()).or_insert_with(|| {
                    Shared::new(Job {
                        generation: 0,
                        runner: String::new(),
                        overlap: false,
                        next_due: None,
                        open: BTreeMap::new(),
                        history: VecDeque::new(),
                        keep: 0,
                        config: Default::default(),
                    })
                });
                let entry = entry.make_mut();
                entry.generation += 1;
                entry.runner.clone_from(runner);
                entry.overlap = *overlap;
                entry.next_due = *first_due;
                entry.keep = *history;
                entry.config = config.clone();
                while entry.history.len() > usize::from(entry.keep) {
                    entry.history.pop_front();
                }
                JobOutcome::Scheduled {
                    generation: entry.generation,
                }
            }
            JobCommand::Unschedule { job } => match self.jobs.remove(job) {
                Some(_) => JobOutcome::Done,
                None => JobOutcome::Refused(JobRefusal::NoSuchJob),
            },
            JobCommand::Runners {
                replica,
                epoch,
                keys,
            } => {
                if !in_force(*replica, *epoch) {
                    return JobOutcome::Refused(JobRefusal::NoRunner);
                }
                self.runners.insert(*replica, (*epoch, keys.clone()));
                JobOutcome::Done
            }
            JobCommand::Fire {
                job,
                generation,
                from,
                due,
                attempt,
                runner,
                next_due,
                passed,
            } => {
                // Judged on the shared job: a refused fire copies nothing.
                let Some(j) = self.jobs.get(job) else {
                    return JobOutcome::Refused(JobRefusal::NoSuchJob);
                };
                if j.generation != *generation {
                    return JobOutcome::Refused(JobRefusal::Stale);
                }
                if !(in_force(runner.0, runner.1) && self.can_run(runner.0, runner.1, &j.runner)) {
                    return JobOutcome::Refused(JobRefusal::NoRunner);
                }
                let rerun = if *attempt <= 1 {
                    // Planned from the job's next due time as it is (so `passed` counts from
                    // it), firing it or a later one; the next due time after it must be later
                    // still, so no due time can fire twice.
                    let fresh = j.next_due == Some(*from)
                        && from <= due
                        && next_due.is_none_or(|n| n > *due);
                    if !fresh {
                        return JobOutcome::Refused(JobRefusal::Stale);
                    }
                    if !j.overlap && !j.open.is_empty() {
                        return JobOutcome::Refused(JobRefusal::Running);
                    }
                    None
                } else {
                    // A re-run replaces the previous attempt, once its runner's epoch ended.
                    let Some((old, fire)) = j
                        .open
                        .iter()
                        .find(|(_, f)| f.due == *due && f.attempt + 1 == *attempt)
                    else {
                        return JobOutcome::Refused(JobRefusal::Stale);
                    };
                    if in_force(fire.runner.0, fire.runner.1) {
                        return JobOutcome::Refused(JobRefusal::Running);
                    }
                    Some((*old, fire.clone()))
                };
                let Some(token) = token() else {
                    return JobOutcome::Refused(JobRefusal::Exhausted);
                };
                let Some(j) = self.job_mut(job) else {
                    return JobOutcome::Refused(JobRefusal::NoSuchJob);
                };
                if let Some((old, fire)) = rerun {
                    j.open.remove(&old);
                    record(
                        j,
                        RunRecord {
                            due: fire.due,
                            token: old,
                            runner: Some(fire.runner.0),
                            attempt: fire.attempt,
                            what: RunEnd::Ran(RunOutcome::Lost),
                            message: String::new(),
                            started: 0,
                            millis: 0,
                        },
                    );
                } else {
                    if *passed > 0 {
                        record(j, passed_record(*from, *passed, PassReason::Missed));
                    }
                    j.next_due = *next_due;
                }
                j.open.insert(
                    token,
                    OpenFire {
                        due: *due,
                        attempt: (*attempt).max(1),
                        runner: *runner,
                    },
                );
                JobOutcome::Fired { token }
            }
            JobCommand::Finish {
                job,
                token,
                outcome,
                message,
                started,
                millis,
            } => {
                let Some(j) = self.jobs.get(job) else {
                    return JobOutcome::Refused(JobRefusal::NoSuchJob);
                };
                if !j.open.contains_key(token) {
                    return JobOutcome::Refused(JobRefusal::Fenced);
                }
                let Some(j) = self.job_mut(job) else {
                    return JobOutcome::Refused(JobRefusal::NoSuchJob);
                };
                let Some(fire) = j.open.remove(token) else {
                    return JobOutcome::Refused(JobRefusal::Fenced);
                };
                record(
                    j,
                    RunRecord {
                        due: fire.due,
                        token: *token,
                        runner: Some(fire.runner.0),
                        attempt: fire.attempt,
                        what: RunEnd::Ran(*outcome),
                        message: cut(message),
                        started: *started,
                        millis: *millis,
                    },
                );
                JobOutcome::Done
            }
            JobCommand::Pass {
                job,
                generation,
                due,
                count,
                why,
                next_due,
            } => {
                let Some(j) = self.jobs.get(job) else {
                    return JobOutcome::Refused(JobRefusal::NoSuchJob);
                };
                if j.generation != *generation || j.next_due != Some(*due) {
                    return JobOutcome::Refused(JobRefusal::Stale);
                }
                let Some(j) = self.job_mut(job) else {
                    return JobOutcome::Refused(JobRefusal::NoSuchJob);
                };
                record(j, passed_record(*due, (*count).max(1), *why));
                j.next_due = *next_due;
                JobOutcome::Done
            }
        }
    }

    /// Job `id`, to change: copied first if another copy of the state shares it. Commands
    /// judge on the shared job first, so that a refused one copies nothing.
    fn job_mut(&mut self, id: &str) -> Option<&mut Job> {
        self.jobs.get_mut(id).map(Shared::make_mut)
    }

    /// Forgets the runner keys of a node whose epoch ended.
    pub fn forget_runners(&mut self, in_force: impl Fn(ReplicaId, u64) -> bool) {
        self.runners.retain(|r, (epoch, _)| in_force(*r, *epoch));
    }
}

fn passed_record(due: u64, count: u64, why: PassReason) -> RunRecord {
    RunRecord {
        due,
        token: 0,
        runner: None,
        attempt: 0,
        what: RunEnd::Passed { why, count },
        message: String::new(),
        started: 0,
        millis: 0,
    }
}

fn record(job: &mut Job, run: RunRecord) {
    if job.keep == 0 {
        return;
    }
    while job.history.len() >= usize::from(job.keep) {
        job.history.pop_front();
    }
    job.history.push_back(run);
}

/// `message` cut at [`MAX_MESSAGE`] bytes, on a character boundary.
fn cut(message: &str) -> String {
    let mut end = message.len().min(MAX_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_owned()
}

#[cfg(test)]
mod tests;
