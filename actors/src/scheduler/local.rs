//! Local jobs ([`RunMode::Locally`](super::RunMode::Locally)): a schedule that lives only on
//! this node and fires on its wall clock, with no consensus (as in the seeds). The misfire and
//! overlap policies apply as for a once-per-cluster job.

use super::config::{JobConfig, Overlap};
use super::misfire;
use super::schedule::Schedule;

/// One local job.
#[derive(Debug, Clone)]
pub(super) struct LocalJob {
    pub config: JobConfig,
    pub bytes: Vec<u8>,
    pub schedule: Schedule,
    pub next_due: Option<u64>,
    /// The local token of the run in progress.
    pub running: Option<u64>,
}

/// What a local job does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Start a run for this due time.
    Fire(u64),
    /// Nothing due (or a run is in progress and the due time waits for it).
    Wait,
}

impl LocalJob {
    /// Moves the job on to wall time `wall`: passes what the policies pass, and says whether a
    /// due time fires now.
    pub fn step(&mut self, wall: u64, grace: u64) -> Step {
        let Some(due) = self.next_due.filter(|d| *d <= wall) else {
            return Step::Wait;
        };
        if self.running.is_some() && self.config.overlap == Overlap::Skip {
            // On-time due times pass; late ones wait for the run to end.
            while let Some(d) = self.next_due.filter(|d| *d <= wall && wall - d <= grace) {
                self.next_due = self.schedule.next_after_ms(d);
            }
            return Step::Wait;
        }
        let plan = misfire::plan(&self.schedule, self.config.misfire, due, wall, grace);
        self.next_due = plan.fire.get(1).copied().or(plan.next_due);
        match plan.fire.first() {
            Some(first) => Step::Fire(*first),
            None => Step::Wait,
        }
    }
}
