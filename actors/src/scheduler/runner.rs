//! What an application hands the scheduler: a [`JobRunner`], and what a run receives
//! ([`JobRequest`]) and returns ([`JobOutcome`]); and the type-erased form the driver runs.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use colony_runtime::consensus::jobs::RunOutcome;
use serde::de::DeserializeOwned;

use super::config::JobConfig;

/// One run of a job, as its runner receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    /// The job id.
    pub job_id: String,
    /// The job's configuration as scheduled.
    pub config: JobConfig,
    /// The due time this run is for.
    pub scheduled: SystemTime,
    /// When the run started on this node.
    pub started: SystemTime,
    /// The fencing token: strictly increasing per job across the cluster (a local job's count
    /// on this node). Pass it to the stores the run writes, so a late write of a run that lost
    /// its fire is refused.
    pub token: u64,
    /// 1, or more for a fire run again after its first runner's node died.
    pub attempt: u32,
}

/// Why a job's parameters could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the job's parameters do not decode as the type asked for: {0}")]
pub struct ParametersDecodeError(#[from] serde_json::Error);

impl JobRequest {
    /// The job's parameters as `P`, or `None` when the job has none.
    ///
    /// # Errors
    /// [`ParametersDecodeError`] if they do not decode as `P`.
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use colony_actors::scheduler::{JobConfig, JobRequest, Schedule};
    ///
    /// let config = JobConfig::for_runner("r")
    ///     .schedule(Schedule::once(SystemTime::now()).unwrap())
    ///     .parameters(&vec![1, 2])
    ///     .unwrap();
    /// let request = JobRequest {
    ///     job_id: "j".into(),
    ///     config,
    ///     scheduled: SystemTime::now(),
    ///     started: SystemTime::now(),
    ///     token: 1,
    ///     attempt: 1,
    /// };
    /// assert_eq!(request.parameters::<Vec<u32>>().unwrap(), Some(vec![1, 2]));
    /// ```
    pub fn parameters<P: DeserializeOwned>(&self) -> Result<Option<P>, ParametersDecodeError> {
        self.config
            .parameters
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(ParametersDecodeError)
    }
}

/// How a run ended, as its runner says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    pub(crate) outcome: RunOutcome,
    pub(crate) message: String,
}

impl JobOutcome {
    /// The run succeeded.
    pub fn success() -> Self {
        JobOutcome {
            outcome: RunOutcome::Succeeded,
            message: String::new(),
        }
    }

    /// The run failed, for the reason given (recorded, cut to 512 bytes). The schedule goes on.
    pub fn failed(message: impl Into<String>) -> Self {
        JobOutcome {
            outcome: RunOutcome::Failed,
            message: message.into(),
        }
    }

    /// The run gave up on purpose, for the reason given.
    pub fn aborted(message: impl Into<String>) -> Self {
        JobOutcome {
            outcome: RunOutcome::Aborted,
            message: message.into(),
        }
    }

    /// How it ended.
    pub fn outcome(&self) -> RunOutcome {
        self.outcome
    }

    /// What the runner said.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// What a runner closure may return: a [`JobOutcome`], or a `Result` whose error counts as a
/// failure (its text is the message).
pub trait IntoJobOutcome {
    /// The outcome.
    fn into_outcome(self) -> JobOutcome;
}

impl IntoJobOutcome for JobOutcome {
    fn into_outcome(self) -> JobOutcome {
        self
    }
}

impl<E: Display> IntoJobOutcome for Result<(), E> {
    fn into_outcome(self) -> JobOutcome {
        match self {
            Ok(()) => JobOutcome::success(),
            Err(e) => JobOutcome::failed(e.to_string()),
        }
    }
}

impl<E: Display> IntoJobOutcome for Result<JobOutcome, E> {
    fn into_outcome(self) -> JobOutcome {
        self.unwrap_or_else(|e| JobOutcome::failed(e.to_string()))
    }
}

/// Runs the jobs of one runner key. A panic counts as a failed run. A run is dropped (its
/// future is not polled again) when it loses its fire: its node's entitlement ended or the
/// fire was given to another node; await IO rather than block a thread for long.
///
/// Any `Fn(JobRequest) -> impl Future<Output = O>` is a runner, where `O` is a
/// [`JobOutcome`] or a `Result` ([`IntoJobOutcome`]).
///
/// # Examples
/// ```
/// use colony_actors::scheduler::{JobOutcome, JobRequest, JobRunner};
/// struct Reminders;
/// impl JobRunner for Reminders {
///     async fn run(&self, request: JobRequest) -> JobOutcome {
///         println!("reminders due at {:?}, token {}", request.scheduled, request.token);
///         JobOutcome::success()
///     }
/// }
/// ```
pub trait JobRunner: Send + Sync + 'static {
    /// Runs one due time of a job.
    fn run(&self, request: JobRequest) -> impl Future<Output = JobOutcome> + Send;
}

impl<F, Fut> JobRunner for F
where
    F: Fn(JobRequest) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoJobOutcome,
{
    fn run(&self, request: JobRequest) -> impl Future<Output = JobOutcome> + Send {
        let call = self(request);
        async move { call.await.into_outcome() }
    }
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A runner with its type erased.
pub(crate) type ErasedRunner = Arc<dyn Fn(JobRequest) -> BoxFuture<JobOutcome> + Send + Sync>;

/// Erases `runner`'s type.
pub(crate) fn erase(runner: impl JobRunner) -> ErasedRunner {
    let runner = Arc::new(runner);
    Arc::new(move |request| {
        let runner = runner.clone();
        Box::pin(async move { runner.run(request).await })
    })
}
