//! The cluster scheduler (being built; see `docs/scheduler.md`): jobs due on an interval, by
//! cron in a time zone, or once; once per cluster or on one node.
//!
//! What exists so far is the part every node computes alike, with no IO: [`Schedule`] (due
//! times, with croner's daylight-saving contract), [`JobConfig`] and its policies, and the
//! misfire planner ([`misfire::plan`]) that decides which due times fire after downtime.

mod config;
pub mod misfire;
mod schedule;

pub use config::{JobConfig, MisfirePolicy, Overlap, ParametersError, RunMode};
pub use schedule::{Schedule, ScheduleError, from_ms, to_ms};
