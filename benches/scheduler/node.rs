//! The `node` role: one Colony node in this process with the runner `bench` registered, driven
//! by one command per stdin line and answering each with one stdout line. The runner records
//! every run it starts (job, due time, start, attempt) and returns at once, or after `work_ms`
//! for jobs named `slow*`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::bail;
use colony::actors::scheduler::to_ms;
use colony::{JobConfig, JobOutcome, JobRequest, Node, Schedule, SchedulerExt};
use tokio::io::AsyncBufReadExt;

use crate::Options;
use crate::common::wall_us;
use crate::common::{Batch, concurrently};

/// One run as its runner saw it start.
#[derive(Debug, Clone, serde::Serialize)]
struct Start {
    job: String,
    due_ms: u64,
    start_us: u64,
    attempt: u32,
}

/// Runs the role until stdin closes.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    let (node, _home) = options.node.start_node(crate::NODES).await?;
    let starts: Arc<Mutex<Vec<Start>>> = Arc::default();
    let record = starts.clone();
    let work = Duration::from_millis(options.work_ms);
    node.scheduler()
        .register_job_runner("bench", move |r: JobRequest| {
            record.lock().unwrap().push(Start {
                due_ms: to_ms(r.scheduled).unwrap_or(0),
                start_us: wall_us(),
                attempt: r.attempt,
                job: r.job_id.clone(),
            });
            let slow = r.job_id.starts_with("slow");
            async move {
                if slow {
                    tokio::time::sleep(work).await;
                }
                JobOutcome::success()
            }
        })?;
    println!("ready");

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["schedule", prefix, n, every_ms, delay_ms, conc] => {
                let first = SystemTime::now() + Duration::from_millis(delay_ms.parse()?);
                let every = Duration::from_millis(every_ms.parse()?);
                let config =
                    JobConfig::for_runner("bench").schedule(Schedule::interval(every, first)?);
                let first_ms = to_ms(first)?;
                let batch = each(&node, prefix, n.parse()?, conc.parse()?, move |s, id| {
                    let config = config.clone();
                    async move { s.schedule_job(&id, config).await.is_ok() }
                })
                .await;
                serde_json::json!({ "batch": batch.to_json(), "first_ms": first_ms }).to_string()
            }
            ["unschedule", prefix, n, conc] => each(
                &node,
                prefix,
                n.parse()?,
                conc.parse()?,
                // Gone already (an earlier pass removed it) counts as done.
                |s, id| async move {
                    matches!(
                        s.unschedule_job(&id).await,
                        Ok(()) | Err(colony::actors::scheduler::SchedulerError::NoSuchJob(_))
                    )
                },
            )
            .await
            .to_json(),
            // Runs of jobs named `prefix*` started at or after `from_us`: their lateness (start
            // minus due time) as a batch's samples.
            ["runs", prefix, from_us] => {
                let from: u64 = from_us.parse()?;
                let starts = starts.lock().unwrap();
                let mut batch = Batch::default();
                for s in starts
                    .iter()
                    .filter(|s| s.job.starts_with(prefix) && s.start_us >= from)
                {
                    let late = s.start_us.saturating_sub(s.due_ms * 1_000);
                    batch.samples.push(Duration::from_micros(late));
                }
                batch.to_json()
            }
            // Every run of jobs named `prefix*`, as JSON.
            ["starts", prefix] => {
                let starts = starts.lock().unwrap();
                let mine: Vec<&Start> = starts
                    .iter()
                    .filter(|s| s.job.starts_with(prefix))
                    .collect();
                serde_json::to_string(&mine)?
            }
            ["rss"] => crate::common::rss()?.to_string(),
            // What the state says of job `id`, and of each node's liveness and runner keys.
            ["state", id] => {
                let status = node.group().status();
                let state = &status.state;
                serde_json::json!({
                    "job": state.jobs.jobs.get(*id).map(|j| format!("{:?} open {:?} history {:?}", j.next_due, j.open, j.history.back())),
                    "liveness": state.liveness.iter().map(|(r, l)| format!("{r}: {l:?}")).collect::<Vec<_>>(),
                    "runners": state.jobs.runners.iter().map(|(r, k)| format!("{r}: {k:?}")).collect::<Vec<_>>(),
                    "epoch": status.epoch, "entitlement": status.entitlement.is_some(),
                    "leader": status.leader.map(|l| l.to_string()),
                })
                .to_string()
            }
            // The group's counters: entries applied, proposals failed, leader changes.
            ["group"] => {
                let status = node.group().status();
                serde_json::json!({
                    "applied": status.applied,
                    "failed": status.stats.failed_proposals,
                    "leader_changes": status.stats.leader_changes,
                    "snapshots": status.stats.snapshots,
                })
                .to_string()
            }
            other => bail!("unknown command {other:?}"),
        };
        println!("{answer}");
    }
    node.shutdown().await;
    Ok(())
}

/// Calls `call` for the job ids `prefix0..prefix{n}`, `conc` at a time; see
/// [`concurrently`].
async fn each<F, Fut>(node: &Node, prefix: &str, n: usize, conc: usize, call: F) -> Batch
where
    F: Fn(colony::Scheduler, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let (scheduler, prefix) = (node.scheduler(), prefix.to_owned());
    concurrently(n, conc, move |i| {
        call(scheduler.clone(), format!("{prefix}{i}"))
    })
    .await
}
