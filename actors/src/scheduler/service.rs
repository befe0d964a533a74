//! The scheduler service of a node: installing it, and [`Scheduler`] (`node.scheduler()`),
//! the handle applications register runners and schedule jobs with.

use std::sync::Arc;
use std::time::SystemTime;

use colony_runtime::Node;
use colony_runtime::lifecycle::ComponentError;
use colony_runtime::shell::Shell;

use super::actor::{SchedDriver, SchedHandle, SchedInput};
use super::config::{JobConfig, encode_config};
use super::details::{self, JobDetails, JobRun};
use super::error::SchedulerError;
use super::runner::{JobRunner, erase};
use super::schedule::Schedule;
use super::settings::SchedulerSettings;

/// Longest job id and runner key, in bytes.
pub const MAX_NAME: usize = 256;
/// Largest encoded job configuration (parameters included), in bytes: it is in every node's
/// cluster state.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// What every handle of one node's scheduler shares.
struct Shared {
    service: SchedHandle,
}

/// Starts the scheduler service on `node`. Every node of a cluster runs it, whether or not the
/// application registers a runner, since any node may be given the jobs of a slot to fire;
/// `colony::node()` installs it.
///
/// # Errors
/// [`ComponentError`] when the actor cannot start.
pub async fn install(node: &Node, settings: SchedulerSettings) -> Result<(), ComponentError> {
    let service = Shell::spawn(
        SchedDriver::new(node.clone(), settings.checked()),
        node.watch_members(),
    )
    .await
    .map_err(|e| ComponentError {
        component: "scheduler".into(),
        reason: e.to_string(),
    })?;
    service.with_mut(|d| d.shell = Some(service.caster()));
    crate::wiring::feed_group(node, &service, SchedInput::Group);
    let report = service.clone();
    node.register_admin_view(
        "jobs",
        Arc::new(move |_node| {
            let report = report.clone();
            Box::pin(async move { Ok(report.with(SchedDriver::report)) })
        }),
    );
    let measured = service.clone();
    node.add_metrics_collector(Arc::new(move |_node| measured.with(SchedDriver::metrics)));
    node.set_extension(Arc::new(Shared { service }));
    Ok(())
}

/// Gives a node's scheduler: `node.scheduler()`.
pub trait SchedulerExt {
    /// The scheduler of this node.
    fn scheduler(&self) -> Scheduler;
}

impl SchedulerExt for Node {
    fn scheduler(&self) -> Scheduler {
        Scheduler {
            node: self.clone(),
            shared: self.extension::<Shared>(),
        }
    }
}

/// A node's scheduler. Cheap to clone. See `docs/scheduler.md` for what it promises.
///
/// # Examples
/// ```no_run
/// # async fn run(node: colony_runtime::Node) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::{Duration, SystemTime};
/// use colony_actors::scheduler::{JobConfig, JobOutcome, JobRequest, Schedule, SchedulerExt};
///
/// let scheduler = node.scheduler();
/// scheduler.register_job_runner("reminders", |request: JobRequest| async move {
///     println!("reminders due at {:?} (token {})", request.scheduled, request.token);
///     JobOutcome::success()
/// })?;
/// let every_5_min = Schedule::interval(Duration::from_secs(300), SystemTime::now())?;
/// scheduler
///     .schedule_job("send-reminders", JobConfig::for_runner("reminders").schedule(every_5_min))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Scheduler {
    node: Node,
    shared: Option<Arc<Shared>>,
}

fn check_name(name: &str) -> Result<(), SchedulerError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(SchedulerError::BadName);
    }
    Ok(())
}

impl Scheduler {
    fn service(&self) -> Result<&SchedHandle, SchedulerError> {
        Ok(&self
            .shared
            .as_ref()
            .ok_or(SchedulerError::NotRunning)?
            .service)
    }

    /// This node runs the jobs of runner `key` with `runner` from now on (replacing an earlier
    /// runner of that key here), and becomes a candidate for their once-per-cluster fires.
    ///
    /// # Errors
    /// [`SchedulerError::BadName`]; [`SchedulerError::NotRunning`].
    pub fn register_job_runner(
        &self,
        key: &str,
        runner: impl JobRunner,
    ) -> Result<(), SchedulerError> {
        check_name(key)?;
        self.service()?
            .send(SchedInput::Register {
                key: key.to_owned(),
                runner: erase(runner),
            })
            .map_err(|_| SchedulerError::NotRunning)
    }

    /// This node stops being a candidate for runner `key`; its jobs stay scheduled and run on
    /// the other nodes that have the runner (or are recorded as having none).
    ///
    /// # Errors
    /// [`SchedulerError::NotRunning`].
    pub fn unregister_job_runner(&self, key: &str) -> Result<(), SchedulerError> {
        self.service()?
            .send(SchedInput::Unregister(key.to_owned()))
            .map_err(|_| SchedulerError::NotRunning)
    }

    /// Creates or replaces job `job_id` (the last registration the cluster applies wins
    /// everywhere). Returns once the cluster applied it (a local job: once this node holds
    /// it). Parameters are serialized here, also on a standalone node.
    ///
    /// # Errors
    /// [`SchedulerError::Schedule`] (invalid cron, unknown zone, ...),
    /// [`SchedulerError::NoSchedule`], [`SchedulerError::Parameters`],
    /// [`SchedulerError::UnknownRunner`] (a local job whose runner is not registered here),
    /// [`SchedulerError::BadName`], [`SchedulerError::TooLarge`],
    /// [`SchedulerError::Unconfirmed`], [`SchedulerError::NotRunning`].
    pub async fn schedule_job(
        &self,
        job_id: &str,
        config: JobConfig,
    ) -> Result<(), SchedulerError> {
        check_name(job_id)?;
        check_name(&config.runner)?;
        let schedule = config
            .schedule
            .as_ref()
            .ok_or_else(|| SchedulerError::NoSchedule(job_id.to_owned()))?;
        schedule.check()?;
        if let Some(p) = &config.parameters
            && let Err(e) = serde_json::from_str::<serde_json::Value>(p)
        {
            return Err(SchedulerError::Parameters {
                job: job_id.to_owned(),
                reason: e.to_string(),
            });
        }
        let bytes = encode_config(&config).len();
        if bytes > MAX_CONFIG_BYTES {
            return Err(SchedulerError::TooLarge {
                job: job_id.to_owned(),
                bytes,
                limit: MAX_CONFIG_BYTES,
            });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.service()?
            .send(SchedInput::Schedule {
                id: job_id.to_owned(),
                config,
                reply: tx,
            })
            .map_err(|_| SchedulerError::NotRunning)?;
        rx.await.map_err(|_| SchedulerError::NotRunning)?
    }

    /// [`Self::schedule_job`] under a new unique id, which it returns.
    ///
    /// # Errors
    /// As [`Self::schedule_job`].
    pub async fn schedule_job_with_generated_id(
        &self,
        config: JobConfig,
    ) -> Result<String, SchedulerError> {
        let id = format!("job-{}", uuid::Uuid::new_v4());
        self.schedule_job(&id, config).await?;
        Ok(id)
    }

    /// Removes job `job_id` (cluster-wide, or this node's local job); a run in progress may
    /// still finish.
    ///
    /// # Errors
    /// [`SchedulerError::NoSuchJob`], [`SchedulerError::Unconfirmed`],
    /// [`SchedulerError::NotRunning`].
    pub async fn unschedule_job(&self, job_id: &str) -> Result<(), SchedulerError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.service()?
            .send(SchedInput::Unschedule {
                id: job_id.to_owned(),
                reply: tx,
            })
            .map_err(|_| SchedulerError::NotRunning)?;
        rx.await.map_err(|_| SchedulerError::NotRunning)?
    }

    /// Job `job_id` as this node knows it: its local job of that id, or the cluster's.
    pub fn job_details(&self, job_id: &str) -> Option<JobDetails> {
        if let Ok(service) = self.service()
            && let Some(local) = service.with(|d| d.local_details(job_id))
        {
            return Some(local);
        }
        let state = self.node.group().status().state.clone();
        let job = state.jobs.jobs.get(job_id)?;
        Some(details::cluster_job(&state, job_id, job))
    }

    /// The jobs of runner `key`: the cluster's, and this node's local ones.
    pub fn jobs_by_runner(&self, key: &str) -> Vec<JobDetails> {
        let state = self.node.group().status().state.clone();
        let mut jobs: Vec<JobDetails> = state
            .jobs
            .jobs
            .iter()
            .filter(|(_, j)| j.runner == key)
            .map(|(id, j)| details::cluster_job(&state, id, j))
            .collect();
        if let Ok(service) = self.service() {
            jobs.extend(
                service
                    .with(SchedDriver::local_all)
                    .into_iter()
                    .filter(|d| d.config.as_ref().is_some_and(|c| c.runner == key)),
            );
        }
        jobs
    }

    /// The next `n` due times of `schedule` after `from`.
    ///
    /// # Examples
    /// ```no_run
    /// # fn demo(node: colony_runtime::Node) {
    /// use std::time::SystemTime;
    /// use colony_actors::scheduler::{Schedule, SchedulerExt};
    /// let nightly = Schedule::cron("0 0 2 * * *", "Europe/Berlin").unwrap();
    /// let next = node.scheduler().next_run_times(&nightly, SystemTime::now(), 3);
    /// assert_eq!(next.len(), 3);
    /// # }
    /// ```
    pub fn next_run_times(
        &self,
        schedule: &Schedule,
        from: SystemTime,
        n: usize,
    ) -> Vec<SystemTime> {
        schedule.next_run_times(from, n)
    }

    /// The run history of `job_id`, oldest first (bounded by
    /// [`SchedulerSettings::history`]): the cluster's for a once-per-cluster job, this node's
    /// for a local one.
    pub fn run_history(&self, job_id: &str) -> Option<Vec<JobRun>> {
        if let Ok(service) = self.service()
            && let Some(local) = service.with(|d| d.local_runs(job_id))
        {
            return Some(local);
        }
        let state = self.node.group().status().state.clone();
        let job = state.jobs.jobs.get(job_id)?;
        Some(
            job.history
                .iter()
                .map(|r| details::job_run(&state.members, r))
                .collect(),
        )
    }
}
