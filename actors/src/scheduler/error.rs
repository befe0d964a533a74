//! Errors of the scheduler API.

use colony_runtime::consensus::jobs::JobRefusal;

use super::schedule::ScheduleError;

/// Why a job was not scheduled or unscheduled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    /// The schedule is refused: an invalid cron expression, an unknown time zone, a zero
    /// interval or a time out of range.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// The configuration has no schedule: set one with `JobConfig::schedule`.
    #[error("the job `{0}` has no schedule: set one with JobConfig::schedule")]
    NoSchedule(String),
    /// The parameters are not JSON text (set them with `JobConfig::parameters`, which
    /// serializes them).
    #[error("the parameters of job `{job}` are not valid JSON: {reason}")]
    Parameters {
        /// The job.
        job: String,
        /// What the parser said.
        reason: String,
    },
    /// A local job's runner key is not registered on this node.
    #[error(
        "no runner `{key}` is registered on this node: register it before scheduling a local job"
    )]
    UnknownRunner {
        /// The key.
        key: String,
    },
    /// Job ids and runner keys are 1 to 256 bytes.
    #[error("job ids and runner keys must be 1 to 256 bytes long")]
    BadName,
    /// The job's encoded configuration is larger than the limit.
    #[error("job `{job}` has {bytes} bytes encoded, above the limit of {limit}")]
    TooLarge {
        /// The job.
        job: String,
        /// Its encoded size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// No job by that id.
    #[error("no job `{0}` is scheduled")]
    NoSuchJob(String),
    /// The group refused the change.
    #[error("the cluster refused the change: {0}")]
    Refused(JobRefusal),
    /// The group did not apply the change in time (no leader or no quorum?); it may still
    /// apply later.
    #[error("the cluster did not confirm the change in time (no quorum?): it may still apply")]
    Unconfirmed,
    /// The scheduler service is not installed or its node is stopping.
    #[error("the scheduler is not running on this node (start it with colony::node())")]
    NotRunning,
}
