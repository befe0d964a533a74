//! What a job is: its runner, where it runs, when, with what, and what to do about missed and
//! overlapping fires.

use serde::{Deserialize, Serialize};

use super::schedule::Schedule;

/// Where the runs of a job happen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunMode {
    /// Each due time runs once in the whole cluster, on one node that has the job's runner.
    #[default]
    OncePerCluster,
    /// Each due time runs on the node that scheduled the job, and nowhere else; the schedule
    /// lives only on that node.
    Locally,
}

/// What happens to due times that passed without a run (every node down, no runner
/// registered anywhere, the group without a quorum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MisfirePolicy {
    /// One run for all the missed times (labelled with the latest); the others are recorded
    /// as coalesced.
    #[default]
    FireOnce,
    /// A run for each of the latest `max` missed times, oldest first; older ones are recorded
    /// as skipped.
    CatchUp {
        /// At most this many runs for missed times.
        max: u32,
    },
    /// No run for missed times: they are recorded as skipped and the job waits for its next
    /// time.
    Skip,
}

/// Whether a fire may start while the job's previous run is still running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overlap {
    /// The fire is recorded as skipped while the previous run is running anywhere.
    #[default]
    Skip,
    /// Runs may overlap.
    Allow,
}

/// A job: its runner key, run mode, schedule, parameters and policies. Build one with
/// [`JobConfig::for_runner`].
///
/// # Examples
/// ```
/// use std::time::{Duration, SystemTime};
/// use colony_actors::scheduler::{JobConfig, MisfirePolicy, RunMode, Schedule};
///
/// let config = JobConfig::for_runner("reminders")
///     .schedule(Schedule::interval(Duration::from_secs(300), SystemTime::now()).unwrap())
///     .parameters(&serde_json::json!({ "batch": 100 }))
///     .unwrap()
///     .misfire(MisfirePolicy::CatchUp { max: 3 });
/// assert_eq!(config.run_mode, RunMode::OncePerCluster);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobConfig {
    /// The key of the runner that runs the job.
    pub runner: String,
    /// Where runs happen.
    pub run_mode: RunMode,
    /// When the job is due; `None` until set (a job without a schedule is refused).
    pub schedule: Option<Schedule>,
    /// The parameters, as JSON text (checked when set).
    pub parameters: Option<String>,
    /// Missed due times.
    pub misfire: MisfirePolicy,
    /// Overlapping runs.
    pub overlap: Overlap,
}

/// Why a job's parameters were refused.
#[derive(Debug, thiserror::Error)]
#[error("the job's parameters do not serialize: {0}")]
pub struct ParametersError(#[from] serde_json::Error);

impl JobConfig {
    /// A once-per-cluster job for runner `key`, with no schedule yet, no parameters, and the
    /// default policies ([`MisfirePolicy::FireOnce`], [`Overlap::Skip`]).
    pub fn for_runner(key: impl Into<String>) -> Self {
        JobConfig {
            runner: key.into(),
            run_mode: RunMode::default(),
            schedule: None,
            parameters: None,
            misfire: MisfirePolicy::default(),
            overlap: Overlap::default(),
        }
    }

    /// Sets where runs happen.
    pub fn run_mode(mut self, mode: RunMode) -> Self {
        self.run_mode = mode;
        self
    }

    /// Sets when the job is due.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = Some(schedule);
        self
    }

    /// Sets the parameters every run receives, serialized now (also on a standalone node).
    ///
    /// # Errors
    /// [`ParametersError`] if `parameters` does not serialize.
    pub fn parameters<P: Serialize + ?Sized>(
        mut self,
        parameters: &P,
    ) -> Result<Self, ParametersError> {
        self.parameters = Some(serde_json::to_string(parameters)?);
        Ok(self)
    }

    /// Sets the misfire policy.
    pub fn misfire(mut self, policy: MisfirePolicy) -> Self {
        self.misfire = policy;
        self
    }

    /// Sets the overlap policy.
    pub fn overlap(mut self, overlap: Overlap) -> Self {
        self.overlap = overlap;
        self
    }
}

/// A job's configuration as the cluster state stores it (MessagePack, named fields).
pub fn encode_config(config: &JobConfig) -> Vec<u8> {
    colony_runtime::wire::encode_payload(config).expect("a job configuration always encodes")
}

/// A stored configuration, checked as when it was scheduled.
///
/// # Errors
/// Why it does not decode or its schedule is invalid (the job is then quarantined).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use colony_actors::scheduler::{JobConfig, Schedule, decode_config, encode_config, from_ms};
///
/// let config = JobConfig::for_runner("r")
///     .schedule(Schedule::interval(Duration::from_secs(1), from_ms(0)).unwrap());
/// assert_eq!(decode_config(&encode_config(&config)).unwrap(), config);
/// assert!(decode_config(b"junk").is_err());
/// ```
pub fn decode_config(bytes: &[u8]) -> Result<JobConfig, String> {
    let config: JobConfig =
        colony_runtime::wire::decode_payload(bytes).map_err(|e| e.to_string())?;
    if let Some(schedule) = &config.schedule {
        schedule.check().map_err(|e| e.to_string())?;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn parameters_that_do_not_serialize_are_refused_when_set() {
        // JSON object keys must be strings.
        let mut bad = BTreeMap::new();
        bad.insert(vec![1u8], 2u8);
        let err = JobConfig::for_runner("r").parameters(&bad).unwrap_err();
        assert!(err.to_string().contains("do not serialize"), "{err}");
        let ok = JobConfig::for_runner("r").parameters(&[1, 2, 3]).unwrap();
        assert_eq!(ok.parameters.as_deref(), Some("[1,2,3]"));
    }
}
