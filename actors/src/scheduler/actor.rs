//! The scheduler service's driver: this node's [`SchedulerCore`] in the runtime's actor shell,
//! fed the group's status ([`crate::wiring::feed_group`]), carrying out what the core says:
//! proposals, run starts and aborts.
//!
//! Each run goes on a task of its own, on a bounded pool per node (a permit of the pool and one
//! of its job's share, so one job cannot take the whole pool): a panic is a failure. A cluster
//! run is raced against its node's entitlement: at its end the run is dropped, whether or not
//! the driver has woken; the core then tells it it lost its fire (`Abort`) and never reports it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_runtime::Node;
use colony_runtime::clock::WallClock;
use colony_runtime::consensus::jobs::{JobCommand, JobOutcome as Applied, RunEnd, RunOutcome};
use colony_runtime::consensus::{Command, Entitlement, GroupStatus, Outcome, ProposeError};
use colony_runtime::shell::{AbortOnDrop, Caster, Driven, Shell};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::AbortHandle;

use super::config::{JobConfig, decode_config};
use super::core::{CoreConfig, Ended, Output, Run, SchedulerCore};
use super::details::{self, JobDetails, JobRun};
use super::error::SchedulerError;
use super::runner::{ErasedRunner, JobOutcome, JobRequest};
use super::schedule::from_ms;
use super::settings::SchedulerSettings;

/// How long one proposal may take.
const PROPOSE_WITHIN: Duration = Duration::from_secs(2);

/// A caller's answer.
pub(crate) type Reply = oneshot::Sender<Result<(), SchedulerError>>;

/// The driver's inputs.
pub(crate) enum SchedInput {
    /// The group's status changed.
    Group(Arc<GroupStatus>),
    /// This node runs jobs of `key` with `runner`.
    Register { key: String, runner: ErasedRunner },
    /// This node stops running jobs of `key`.
    Unregister(String),
    /// Create or replace a job; the answer once the group applied it (at once for a local job).
    Schedule {
        id: String,
        config: JobConfig,
        reply: Reply,
    },
    /// Remove a job, local or cluster-wide.
    Unschedule { id: String, reply: Reply },
    /// A proposal came back.
    Proposed(Command, Result<Outcome, ProposeError>),
    /// A run ended (not reported when it was dropped).
    Finished { run: Run, ended: Ended },
}

/// A run on this node: what it runs, and how to drop it.
struct Running {
    run: Run,
    abort: AbortHandle,
}

pub(crate) struct SchedDriver {
    node: Node,
    /// The node's wall clock (offset in tests with a skewed node).
    clock: WallClock,
    pub shell: Option<Caster<SchedInput>>,
    settings: SchedulerSettings,
    core: SchedulerCore,
    status: Arc<GroupStatus>,
    /// The entitlement in force, for runs to race against.
    entitlement: watch::Sender<Option<Entitlement>>,
    runners: BTreeMap<String, ErasedRunner>,
    pool: Arc<Semaphore>,
    /// Each job's share of the pool, while it has runs here.
    shares: HashMap<String, Arc<Semaphore>>,
    /// How many shares the last look kept.
    shares_kept: usize,
    /// Runs by (local, token).
    running: HashMap<(bool, u64), Running>,
    /// Callers awaiting a schedule or unschedule of a job, in order.
    callers: HashMap<String, VecDeque<Reply>>,
    local_history: BTreeMap<String, VecDeque<JobRun>>,
    quarantined: BTreeMap<String, String>,
    /// Runs that ended on this node, by outcome.
    ended: BTreeMap<&'static str, u64>,
    /// Runs started on this node.
    started: u64,
}

/// The scheduler service's shell.
pub(crate) type SchedHandle = Shell<SchedDriver>;

impl SchedDriver {
    pub(crate) fn new(node: Node, settings: SchedulerSettings) -> Self {
        let status = node.group().status();
        let config = CoreConfig {
            history: settings.history,
            ..CoreConfig::default()
        };
        let clock = node.wall_clock();
        SchedDriver {
            core: SchedulerCore::new(status.replica, config, Instant::now(), clock.now_millis()),
            status,
            node,
            clock,
            shell: None,
            entitlement: watch::Sender::new(None),
            runners: BTreeMap::new(),
            pool: Arc::new(Semaphore::new(settings.pool)),
            shares: HashMap::new(),
            shares_kept: 0,
            running: HashMap::new(),
            callers: HashMap::new(),
            local_history: BTreeMap::new(),
            quarantined: BTreeMap::new(),
            ended: BTreeMap::new(),
            started: 0,
            settings,
        }
    }

    /// A local job's details.
    pub(crate) fn local_details(&self, id: &str) -> Option<JobDetails> {
        let job = self.core.locals().get(id)?;
        Some(self.local_of(id, job))
    }

    fn local_of(&self, id: &str, job: &super::local::LocalJob) -> JobDetails {
        let running = job.running.and_then(|t| {
            self.running
                .get(&(true, t))
                .map(|r| (r.run.due, r.run.token))
        });
        details::local_job(id, job, running, self.node.name())
    }

    /// Every local job's details.
    pub(crate) fn local_all(&self) -> Vec<JobDetails> {
        self.core
            .locals()
            .iter()
            .map(|(id, job)| self.local_of(id, job))
            .collect()
    }

    /// A local job's history.
    pub(crate) fn local_runs(&self, id: &str) -> Option<Vec<JobRun>> {
        self.core.locals().get(id)?;
        Some(
            self.local_history
                .get(id)
                .map(|h| h.iter().cloned().collect())
                .unwrap_or_default(),
        )
    }

    /// This node's figures for `/metrics`.
    pub(crate) fn metrics(&self) {
        use metrics::{counter, gauge};
        let jobs = &self.status.state.jobs.jobs;
        gauge!("colony_scheduler_jobs").set(jobs.len() as f64);
        gauge!("colony_scheduler_local_jobs").set(self.local_history.len() as f64);
        gauge!("colony_scheduler_runs_in_progress").set(self.running.len() as f64);
        gauge!("colony_scheduler_quarantined_jobs").set(self.quarantined.len() as f64);
        counter!("colony_scheduler_runs_started_total").absolute(self.started);
        for (outcome, n) in &self.ended {
            counter!("colony_scheduler_runs_ended_total", "outcome" => *outcome).absolute(*n);
        }
    }

    /// The `GET /jobs` report: every cluster job with its history, this node's local jobs,
    /// this node's runner keys and runs.
    pub(crate) fn report(&self) -> serde_json::Value {
        let state = &self.status.state;
        let cluster: Vec<serde_json::Value> = state
            .jobs
            .jobs
            .iter()
            .map(|(id, job)| {
                let d = details::cluster_job(state, id, job);
                let history: Vec<JobRun> = job
                    .history
                    .iter()
                    .map(|r| details::job_run(&state.members, r))
                    .collect();
                details::job_json(&d, &history)
            })
            .collect();
        let local: Vec<serde_json::Value> = self
            .local_all()
            .iter()
            .map(|d| details::job_json(d, &self.local_runs(&d.id).unwrap_or_default()))
            .collect();
        let runners: Vec<serde_json::Value> = state
            .jobs
            .runners
            .iter()
            .map(|(replica, (epoch, keys))| {
                serde_json::json!({
                    "node": state.members.get(replica).map(|m| m.name.clone()),
                    "epoch": epoch.to_string(),
                    "keys": keys,
                })
            })
            .collect();
        serde_json::json!({
            "jobs": cluster,
            "local_jobs": local,
            "runners": runners,
            "runner_keys_here": self.runners.keys().collect::<Vec<_>>(),
            "runs_here": self.running.len(),
            "pool": self.settings.pool,
            "quarantined": self.quarantined,
        })
    }

    fn spawn_propose(&self, command: Command, caller: Option<Reply>) {
        let (node, shell) = (self.node.clone(), self.shell.clone());
        tokio::spawn(async move {
            let outcome = node.group().propose(command.clone(), PROPOSE_WITHIN).await;
            if let Some(reply) = caller {
                let _ = reply.send(answer(&command, &outcome));
            }
            if let Some(shell) = shell {
                let _ = shell.cast(SchedInput::Proposed(command, outcome));
            }
        });
    }

    /// Starts `run` on its own task, on the pool.
    fn start(&mut self, run: Run) {
        let config = decode_config(&run.config);
        let runner = config
            .as_ref()
            .ok()
            .and_then(|c| self.runners.get(&c.runner).cloned());
        let share = self
            .shares
            .entry(run.job.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.per_job)))
            .clone();
        let pool = self.pool.clone();
        let shell = self.shell.clone();
        // A cluster run lasts while the entitlement it started in does.
        let epoch = self.status.epoch;
        let entitlement = (!run.local).then(|| self.entitlement.subscribe());
        let reported = run.clone();
        let (job, due, token, attempt) = (run.job.clone(), run.due, run.token, run.attempt);
        let clock = self.clock;
        let work = async move {
            let _share = share.acquire_owned().await.ok()?;
            let _permit = pool.acquire_owned().await.ok()?;
            let started = clock.now_millis();
            let clock = Instant::now();
            let outcome = match (config, runner) {
                (Err(why), _) => JobOutcome::failed(format!("the job does not decode: {why}")),
                (Ok(c), None) => JobOutcome::aborted(format!(
                    "no runner `{}` is registered on this node any more",
                    c.runner
                )),
                (Ok(config), Some(runner)) => {
                    let request = JobRequest {
                        job_id: job.clone(),
                        config,
                        scheduled: from_ms(due),
                        started: from_ms(started),
                        token,
                        attempt,
                    };
                    let inner = tokio::spawn(runner(request));
                    let _guard = AbortOnDrop(inner.abort_handle());
                    match inner.await {
                        Ok(outcome) => outcome,
                        Err(e) if e.is_panic() => {
                            tracing::warn!(%job, token, "a job runner panicked: counted as a failure");
                            JobOutcome::failed("the runner panicked")
                        }
                        Err(_) => return None,
                    }
                }
            };
            Some(Ended {
                outcome: outcome.outcome,
                message: outcome.message,
                started,
                millis: clock.elapsed().as_millis() as u64,
            })
        };
        let task = tokio::spawn(async move {
            let ended = match entitlement {
                None => work.await,
                Some(watch) => tokio::select! {
                    ended = work => ended,
                    () = entitlement_ends(watch, epoch) => None,
                },
            };
            if let (Some(ended), Some(shell)) = (ended, shell) {
                let _ = shell.cast(SchedInput::Finished { run, ended });
            }
        });
        self.running.insert(
            (reported.local, reported.token),
            Running {
                run: reported,
                abort: task.abort_handle(),
            },
        );
    }

    fn carry_out(&mut self, output: Output) {
        match output {
            Output::Propose(command) => {
                let caller = match &command {
                    Command::Jobs(
                        JobCommand::Schedule { job, .. } | JobCommand::Unschedule { job },
                    ) => {
                        let waiting = self.callers.get_mut(job);
                        let caller = waiting.and_then(VecDeque::pop_front);
                        if self.callers.get(job).is_some_and(VecDeque::is_empty) {
                            self.callers.remove(job);
                        }
                        caller
                    }
                    _ => None,
                };
                self.spawn_propose(command, caller);
            }
            Output::Start(run) => {
                self.started += 1;
                self.start(run)
            }
            Output::Abort { job, token } => {
                if let Some(r) = self.running.remove(&(false, token)) {
                    tracing::info!(%job, token, "a run lost its fire: dropped");
                    r.abort.abort();
                }
            }
            Output::Quarantined { job, reason } => {
                tracing::error!(%job, %reason, "a stored job does not decode: quarantined, never fired");
                self.quarantined.insert(job, reason);
            }
        }
    }

    fn schedule(&mut self, at: Instant, id: String, config: &JobConfig, reply: Reply) {
        if config.run_mode == super::RunMode::Locally && !self.core.has_runner(&config.runner) {
            let key = config.runner.clone();
            let _ = reply.send(Err(SchedulerError::UnknownRunner { key }));
            return;
        }
        match self.core.schedule(at, self.clock.now_millis(), &id, config) {
            Err(e) => {
                let _ = reply.send(Err(match e {
                    super::core::ScheduleJobError::NoSchedule => SchedulerError::NoSchedule(id),
                    super::core::ScheduleJobError::Schedule(e) => SchedulerError::Schedule(e),
                }));
            }
            Ok(()) if config.run_mode == super::RunMode::Locally => {
                self.local_history.entry(id).or_default();
                let _ = reply.send(Ok(()));
            }
            Ok(()) => self.callers.entry(id).or_default().push_back(reply),
        }
    }

    fn finished(&mut self, at: Instant, run: &Run, ended: Ended) {
        self.running.remove(&(run.local, run.token));
        let outcome = match ended.outcome {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::Aborted => "aborted",
            RunOutcome::Lost => "lost",
        };
        *self.ended.entry(outcome).or_default() += 1;
        if run.local
            && let Some(history) = self.local_history.get_mut(&run.job)
        {
            let record = JobRun {
                scheduled: from_ms(run.due),
                token: run.token,
                attempt: run.attempt,
                node: Some(self.node.name().to_owned()),
                result: RunEnd::Ran(ended.outcome),
                message: ended.message.clone(),
                started: Some(from_ms(ended.started)),
                duration: Duration::from_millis(ended.millis),
            };
            details::keep(history, record, self.settings.history);
        }
        if ended.outcome == RunOutcome::Failed {
            tracing::warn!(job = %run.job, token = run.token, message = %ended.message, "a job run failed");
        }
        self.core
            .run_finished(at, self.clock.now_millis(), run, ended);
    }
}

/// What a caller of schedule or unschedule hears of its proposal.
fn answer(
    command: &Command,
    outcome: &Result<Outcome, ProposeError>,
) -> Result<(), SchedulerError> {
    match outcome {
        Ok(Outcome::Job(Applied::Refused(
            colony_runtime::consensus::jobs::JobRefusal::NoSuchJob,
        ))) => match command {
            Command::Jobs(JobCommand::Unschedule { job } | JobCommand::Schedule { job, .. }) => {
                Err(SchedulerError::NoSuchJob(job.clone()))
            }
            _ => Err(SchedulerError::Unconfirmed),
        },
        Ok(Outcome::Job(Applied::Refused(r))) => Err(SchedulerError::Refused(*r)),
        Ok(_) => Ok(()),
        Err(_) => Err(SchedulerError::Unconfirmed),
    }
}

/// Resolves when the entitlement of `epoch` ends (or is already gone).
async fn entitlement_ends(mut watch: watch::Receiver<Option<Entitlement>>, epoch: Option<u64>) {
    loop {
        let until = match *watch.borrow_and_update() {
            Some(e) if Some(e.epoch) == epoch => e.until,
            _ => return,
        };
        tokio::select! {
            () = tokio::time::sleep_until(until.into()) => return,
            changed = watch.changed() => if changed.is_err() { return },
        }
    }
}

impl Driven for SchedDriver {
    type Input = SchedInput;

    fn input(&mut self, at: Instant, input: SchedInput) {
        match input {
            SchedInput::Group(status) => {
                let entitlement = status.entitlement.filter(|e| Some(e.epoch) == status.epoch);
                self.entitlement.send_replace(entitlement);
                self.core.set_group(
                    at,
                    self.clock.now_millis(),
                    status.state.clone(),
                    status.epoch,
                    status.entitlement,
                );
                self.quarantined
                    .retain(|job, _| status.state.jobs.jobs.contains_key(job));
                self.status = status;
            }
            SchedInput::Register { key, runner } => {
                self.runners.insert(key.clone(), runner);
                self.core.register(&key);
            }
            SchedInput::Unregister(key) => {
                self.runners.remove(&key);
                self.core.unregister(&key);
            }
            SchedInput::Schedule { id, config, reply } => self.schedule(at, id, &config, reply),
            SchedInput::Unschedule { id, reply } => {
                let local = self.core.locals().contains_key(&id);
                self.core.unschedule(&id);
                if local {
                    self.local_history.remove(&id);
                    let _ = reply.send(Ok(()));
                } else {
                    self.callers.entry(id).or_default().push_back(reply);
                }
            }
            SchedInput::Proposed(command, outcome) => {
                if outcome.is_err() {
                    self.core.proposal_failed(&command);
                }
            }
            SchedInput::Finished { run, ended } => self.finished(at, &run, ended),
        }
    }

    fn view(&mut self, _: Instant, _: &Arc<colony_runtime::membership::View>) {}

    fn timeout(&mut self, at: Instant) {
        self.core.handle_timeout(at, self.clock.now_millis());
    }

    fn flush(&mut self, _: Instant) {
        while let Some(output) = self.core.poll_output() {
            self.carry_out(output);
        }
        // A job's share goes once no run of it holds or awaits it: looked for once the shares
        // doubled since the last look (a look at every flush cost a pass over thousands).
        if self.shares.len() >= 2 * self.shares_kept.max(64) {
            self.shares.retain(|_, s| Arc::strong_count(s) > 1);
            self.shares_kept = self.shares.len();
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }
}
