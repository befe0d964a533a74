//! The scheduler's settings on a node.

/// How a node runs its jobs.
///
/// # Examples
/// ```
/// use colony_actors::scheduler::SchedulerSettings;
/// let settings = SchedulerSettings { pool: 32, ..Default::default() };
/// assert_eq!(settings.per_job, 4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerSettings {
    /// Runs at once on this node (the pool); further runs wait for a place.
    pub pool: usize,
    /// Runs of one job at once on this node, so one job's slow runs cannot take the pool.
    pub per_job: usize,
    /// Run records kept per job (the cluster's for once-per-cluster jobs, set by the node that
    /// schedules the job).
    pub history: u16,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            pool: 16,
            per_job: 4,
            history: 20,
        }
    }
}

impl SchedulerSettings {
    /// The settings with every bound at least 1.
    pub(crate) fn checked(self) -> Self {
        SchedulerSettings {
            pool: self.pool.max(1),
            per_job: self.per_job.clamp(1, self.pool.max(1)),
            history: self.history.max(1),
        }
    }
}
