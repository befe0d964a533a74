//! What the API and `GET /jobs` say about a job: its configuration, next run, runs in
//! progress and run history, read from the cluster state (once-per-cluster jobs) or this node's
//! scheduler (local jobs).
//!
//! In `GET /jobs`, fencing tokens and times (UTC milliseconds) are decimal strings: JavaScript
//! numbers hold integers exactly only up to 2^53.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use colony_runtime::consensus::jobs::{Job, RunEnd, RunRecord};
use colony_runtime::consensus::{ClusterState, MemberInfo, ReplicaId};
use serde_json::{Value, json};

use super::config::{JobConfig, RunMode, decode_config};
use super::local::LocalJob;
use super::schedule::from_ms;

/// A job as the scheduler holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDetails {
    /// The job id.
    pub id: String,
    /// Its configuration; `None` when the stored record does not decode (see `quarantined`).
    pub config: Option<JobConfig>,
    /// Why the stored record is quarantined (never fired), if it is.
    pub quarantined: Option<String>,
    /// Where it runs.
    pub run_mode: RunMode,
    /// Its next due time not yet fired or passed.
    pub next_run: Option<SystemTime>,
    /// Runs in progress.
    pub running: Vec<RunningFire>,
}

/// A run in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningFire {
    /// The due time it runs for.
    pub scheduled: SystemTime,
    /// Its fencing token.
    pub token: u64,
    /// Its attempt.
    pub attempt: u32,
    /// The node running it (its name; this node's for a local job).
    pub node: Option<String>,
}

/// A run, or due times that passed without one, as the history keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    /// The due time.
    pub scheduled: SystemTime,
    /// The run's fencing token (0 for passed due times).
    pub token: u64,
    /// The attempt.
    pub attempt: u32,
    /// The node that ran it (its name).
    pub node: Option<String>,
    /// What happened.
    pub result: RunEnd,
    /// What the runner said (at most 512 bytes).
    pub message: String,
    /// When the run started (on its node's clock); `None` for passed due times.
    pub started: Option<SystemTime>,
    /// How long it ran.
    pub duration: Duration,
}

fn name(members: &BTreeMap<ReplicaId, MemberInfo>, replica: ReplicaId) -> Option<String> {
    members.get(&replica).map(|m| m.name.clone())
}

/// A history record as the API gives it.
pub(super) fn job_run(members: &BTreeMap<ReplicaId, MemberInfo>, r: &RunRecord) -> JobRun {
    JobRun {
        scheduled: from_ms(r.due),
        token: r.token,
        attempt: r.attempt,
        node: r.runner.and_then(|n| name(members, n)),
        result: r.what,
        message: r.message.clone(),
        started: matches!(r.what, RunEnd::Ran(_)).then(|| from_ms(r.started)),
        duration: Duration::from_millis(r.millis),
    }
}

/// A once-per-cluster job's details.
pub(super) fn cluster_job(state: &ClusterState, id: &str, job: &Job) -> JobDetails {
    let (config, quarantined) = match decode_config(&job.config) {
        Ok(c) => (Some(c), None),
        Err(why) => (None, Some(why)),
    };
    JobDetails {
        id: id.to_owned(),
        config,
        quarantined,
        run_mode: RunMode::OncePerCluster,
        next_run: job.next_due.map(from_ms),
        running: job
            .open
            .iter()
            .map(|(token, f)| RunningFire {
                scheduled: from_ms(f.due),
                token: *token,
                attempt: f.attempt,
                node: name(&state.members, f.runner.0),
            })
            .collect(),
    }
}

/// A local job's details; `running` is the due time and token of its run in progress.
pub(super) fn local_job(
    id: &str,
    job: &LocalJob,
    running: Option<(u64, u64)>,
    me: &str,
) -> JobDetails {
    JobDetails {
        id: id.to_owned(),
        config: Some(job.config.clone()),
        quarantined: None,
        run_mode: RunMode::Locally,
        next_run: job.next_due.map(from_ms),
        running: running
            .map(|(due, token)| RunningFire {
                scheduled: from_ms(due),
                token,
                attempt: 1,
                node: Some(me.to_owned()),
            })
            .into_iter()
            .collect(),
    }
}

fn ms(t: SystemTime) -> String {
    super::schedule::to_ms(t).unwrap_or(0).to_string()
}

fn run_json(r: &JobRun) -> Value {
    let (result, why, count) = match r.result {
        RunEnd::Ran(o) => (format!("{o:?}"), None, None),
        RunEnd::Passed { why, count } => {
            ("Passed".to_owned(), Some(format!("{why:?}")), Some(count))
        }
    };
    json!({
        "scheduled_ms": ms(r.scheduled),
        "token": r.token.to_string(),
        "attempt": r.attempt,
        "node": r.node,
        "result": result,
        "passed_because": why,
        "passed_count": count.map(|c| c.to_string()),
        "message": r.message,
        "started_ms": r.started.map(ms),
        "duration_ms": r.duration.as_millis().to_string(),
    })
}

/// One job in `GET /jobs`.
pub(super) fn job_json(d: &JobDetails, history: &[JobRun]) -> Value {
    json!({
        "id": d.id,
        "run_mode": format!("{:?}", d.run_mode),
        "runner": d.config.as_ref().map(|c| c.runner.clone()),
        "schedule": d.config.as_ref().and_then(|c| c.schedule.as_ref()).map(|s| s.to_string()),
        "misfire": d.config.as_ref().map(|c| format!("{:?}", c.misfire)),
        "overlap": d.config.as_ref().map(|c| format!("{:?}", c.overlap)),
        "quarantined": d.quarantined,
        "next_run_ms": d.next_run.map(ms),
        "running": d.running.iter().map(|f| json!({
            "scheduled_ms": ms(f.scheduled),
            "token": f.token.to_string(),
            "attempt": f.attempt,
            "node": f.node,
        })).collect::<Vec<_>>(),
        "history": history.iter().map(run_json).collect::<Vec<_>>(),
    })
}

/// Keeps `run` in a local job's bounded history.
pub(super) fn keep(history: &mut VecDeque<JobRun>, run: JobRun, bound: u16) {
    history.push_back(run);
    while history.len() > usize::from(bound) {
        history.pop_front();
    }
}
