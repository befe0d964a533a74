//! The cluster scheduler: jobs due on an interval, by cron in a time zone, or once; once per
//! cluster or on one node. See `docs/scheduler.md`.
//!
//! # Layout
//! - `schedule`: [`Schedule`] (due times, with croner's daylight-saving contract);
//!   `config`: [`JobConfig`] and its policies.
//! - [`misfire`]: which due times fire after downtime; [`plan`]: what a job's owner proposes
//!   next; [`core`]: the scheduler core of a node ([`core::SchedulerCore`], no IO): the
//!   owner's fires, the runner's starts and aborts, runner keys and local jobs; `timers`:
//!   the per-job due and retry times that let its tick look only at the jobs that need it.
//! - `runner`: [`JobRunner`], [`JobRequest`], [`JobOutcome`].
//! - `actor`: the driver in the runtime's shell; `service`: [`install`], [`Scheduler`]
//!   (`node.scheduler()`); `details`: [`JobDetails`], [`JobRun`] and `GET /jobs`.
//! - [`check`]: the promises as checks, for the simulator and the process tests.

mod actor;
pub mod check;
mod config;
pub mod core;
mod details;
mod error;
mod local;
pub mod misfire;
pub mod plan;
mod runner;
mod schedule;
mod service;
mod settings;
#[cfg(test)]
mod sim;
mod timers;

pub use colony_runtime::consensus::jobs::{PassReason, RunEnd, RunOutcome};
pub use config::{
    JobConfig, MisfirePolicy, Overlap, ParametersError, RunMode, decode_config, encode_config,
};
pub use details::{JobDetails, JobRun, RunningFire};
pub use error::SchedulerError;
pub use runner::{IntoJobOutcome, JobOutcome, JobRequest, JobRunner, ParametersDecodeError};
pub use schedule::{Schedule, ScheduleError, from_ms, to_ms};
pub use service::{MAX_CONFIG_BYTES, MAX_NAME, Scheduler, SchedulerExt, install};
pub use settings::SchedulerSettings;

#[cfg(test)]
mod core_tests;
