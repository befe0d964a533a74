//! The cluster scheduler (being built; see `docs/scheduler.md`): jobs due on an interval, by
//! cron in a time zone, or once; once per cluster or on one node.
//!
//! What exists so far has no IO: [`Schedule`] (due times, with croner's daylight-saving
//! contract), [`JobConfig`] and its policies, the misfire planner ([`misfire::plan`]) that
//! decides which due times fire after downtime, what a job's owner proposes next
//! ([`plan::next_command`]), and the scheduler core of a node ([`core::SchedulerCore`]): the
//! owner's fires, the runner's starts and aborts, runner keys and local jobs.

pub mod check;
mod config;
pub mod core;
mod local;
pub mod misfire;
pub mod plan;
mod schedule;
#[cfg(test)]
mod sim;

pub use config::{
    JobConfig, MisfirePolicy, Overlap, ParametersError, RunMode, decode_config, encode_config,
};
pub use schedule::{Schedule, ScheduleError, from_ms, to_ms};

#[cfg(test)]
mod core_tests;
