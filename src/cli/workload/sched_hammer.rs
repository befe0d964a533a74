//! The cluster scheduler under test: one node schedules once-per-cluster interval jobs, the
//! nodes named register their runner, each run is recorded (start with token, attempt, member
//! id and epoch; end), and every node records the jobs' run history from its cluster state
//! every `poll_ms` (the history is bounded; polls overlap, so together they hold all of it).
//! The checkers of `colony_actors::scheduler::check` judge the merged records. The jobs are
//! scheduled once: a restarted node finds them in the cluster state. Jobs named in `corrupt`
//! are stored with a configuration that does not decode.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use colony::runtime::consensus::jobs::JobCommand;
use colony::runtime::consensus::{Command, Domain};
use colony::runtime::ownership::slot_of;
use colony::{JobConfig, JobOutcome, JobRequest, Node, Schedule, SchedulerExt};
use serde::Deserialize;
use serde_json::json;

use super::history::{History, wall_us};

#[derive(Debug, Clone, Deserialize)]
pub struct SchedHammer {
    /// The jobs.
    jobs: Vec<JobSpec>,
    /// The node that schedules them.
    scheduler: String,
    /// The nodes that register the runner (every node when absent).
    runners_on: Option<Vec<String>>,
    /// Unregister the runner this long after registering it (never when absent).
    unregister_after_ms: Option<u64>,
    /// Register the runner this long after the node started, as an application that sets
    /// itself up first would.
    #[serde(default)]
    register_after_ms: u64,
    /// How often each node records the jobs' history.
    poll_ms: u64,
    /// JSON-lines history file, relative to the local home.
    history: PathBuf,
    /// Jobs the scheduling node stores with a configuration that does not decode, as a record
    /// written by an older runner's encoding, or damaged, would be.
    #[serde(default)]
    corrupt: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct JobSpec {
    id: String,
    every_ms: u64,
    /// How long a run takes.
    work_ms: u64,
}

impl SchedHammer {
    pub async fn run(self, node: Node) -> anyhow::Result<()> {
        let history = History::open(&node.local_home().root().join(&self.history))?;
        let me = node.name().to_owned();
        let scheduler = node.scheduler();
        if self.runners_on.as_ref().is_none_or(|on| on.contains(&me)) {
            tokio::time::sleep(Duration::from_millis(self.register_after_ms)).await;
            let (n, h, jobs) = (node.clone(), history.clone(), self.jobs.clone());
            scheduler.register_job_runner("hammer", move |r: JobRequest| {
                let (node, history) = (n.clone(), h.clone());
                let work = jobs
                    .iter()
                    .find(|j| j.id == r.job_id)
                    .map_or(0, |j| j.work_ms);
                async move {
                    let status = node.group().status();
                    let due = colony::actors::scheduler::to_ms(r.scheduled).unwrap_or(0);
                    let at = json!({
                        "job": r.job_id, "due": due, "token": r.token, "attempt": r.attempt,
                        "node": node.name(), "replica": status.replica.0,
                        "epoch": status.epoch, "at_us": wall_us(),
                    });
                    history.record(&json!({ "event": "start", "run": at }));
                    tokio::time::sleep(Duration::from_millis(work)).await;
                    history.record(&json!({
                        "event": "end", "job": r.job_id, "token": r.token, "end_us": wall_us(),
                    }));
                    JobOutcome::success()
                }
            })?;
        }
        if let Some(ms) = self.unregister_after_ms
            && self.runners_on.as_ref().is_none_or(|on| on.contains(&me))
        {
            let (scheduler, history) = (scheduler.clone(), history.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                history.record(&json!({ "event": "unregistering", "at_us": wall_us() }));
                if let Err(e) = scheduler.unregister_job_runner("hammer") {
                    tracing::error!(error = %e, "unregister failed");
                }
            });
        }
        // Scheduled once: a restarted scheduling node finds its jobs in the cluster state.
        let marker = node.local_home().root().join("sched_hammer.scheduled");
        if me == self.scheduler && !marker.exists() {
            let first = SystemTime::now();
            for job in &self.jobs {
                let every = Duration::from_millis(job.every_ms);
                let config =
                    JobConfig::for_runner("hammer").schedule(Schedule::interval(every, first)?);
                // Until the group holds it. Not again once it does: scheduling replaces the job
                // and starts it afresh from the next due time, so an unconfirmed schedule that
                // applied and fired would lose the due times before the retry.
                while let Err(e) = scheduler.schedule_job(&job.id, config.clone()).await {
                    tracing::warn!(error = %e, job = %job.id, "scheduling: not confirmed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let held = scheduler.job_details(&job.id).and_then(|d| d.config);
                    if held.as_ref() == Some(&config) {
                        break;
                    }
                }
                history.record(&json!({
                    "event": "scheduled", "job": job.id, "every_ms": job.every_ms,
                    "first_ms": colony::actors::scheduler::to_ms(first)?,
                }));
            }
            for id in &self.corrupt {
                let first_due = colony::actors::scheduler::to_ms(first)?;
                let command = Command::Jobs(JobCommand::Schedule {
                    job: id.clone(),
                    runner: "hammer".into(),
                    overlap: false,
                    first_due: Some(first_due),
                    history: 20,
                    config: b"\xc1 not a job configuration".to_vec().into(),
                });
                while let Err(e) = node
                    .group()
                    .propose(command.clone(), Duration::from_secs(2))
                    .await
                {
                    tracing::warn!(error = %e, job = %id, "storing a corrupt job: not confirmed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                history.record(&json!({ "event": "corrupted", "job": id }));
            }
            std::fs::write(&marker, b"")?;
        }
        let mut poll = tokio::time::interval(Duration::from_millis(self.poll_ms.max(10)));
        loop {
            poll.tick().await;
            let state = node.group().status().state.clone();
            for job in &self.jobs {
                if let Some(j) = state.jobs.jobs.get(&job.id) {
                    // The node entitled to fire the job: its jobs slot's owner.
                    let slot = usize::from(slot_of(job.id.as_bytes()));
                    let owner = state
                        .slots
                        .get(&Domain::Jobs)
                        .and_then(|slots| slots.get(slot))
                        .and_then(|s| s.owner)
                        .and_then(|(replica, _)| state.members.get(&replica))
                        .map(|m| m.name.clone());
                    history.record(&json!({
                        "event": "history", "job": job.id, "records": j.history,
                        "open": j.open.values().map(|f| f.due).collect::<Vec<_>>(),
                        "next_due": j.next_due, "node": me, "owner": owner,
                    }));
                }
            }
        }
    }
}
