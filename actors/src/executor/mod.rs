//! The bucketed executor: tasks grouped by bucket, the tasks of one bucket processed by one
//! worker at a time anywhere in the cluster, in order and in batches, with retries, dead
//! letters and concurrency limits. See `docs/executor.md`.
//!
//! The queues live in the cluster state ([`colony_runtime::consensus::exec`]). A node runs two
//! sans-IO cores in one actor shell:
//! - [`ExecutorCore`]: which bucket batches this node starts, with which fencing token, and how
//!   each ends (a `Done` proposal, a retry after backoff, the dead-letter handler).
//! - [`SubmitPipeline`]: callers' tasks become `Submit` proposals, one in flight per executor.
//!
//! # Layout
//! - `config`: [`ExecutorSettings`], [`Concurrency`], [`Backoff`] (the core's settings).
//! - `core`: [`ExecutorCore`] and its [`Output`]; `submit`: [`SubmitPipeline`].
//! - `processor`: [`BucketProcessor`], [`BucketedExecutorSettings`], [`DeadLetter`].
//! - [`msg`]: the typed protocol of the `executor` service (hand-overs).
//! - `actor`, `gateway`: the driver in the runtime's shell, and the `executor` service.
//! - `service`: [`install`], [`Executors`] (`node.concurrency()`), [`BucketedExecutor`].
//! - `sim` (tests): the real cores of 3 to 5 nodes with executors open, in the seeded group
//!   world under faults, judged by the checkers of `testkit::check`.

mod actor;
mod config;
mod core;
mod error;
mod gateway;
pub mod msg;
mod processor;
mod service;
#[cfg(test)]
mod sim;
mod submit;

pub use actor::ExecutorStats;
pub use config::{Backoff, Concurrency, ExecutorSettings};
pub use core::{CoreConfig, ExecutorCore, Now, Output, bucket_slot};
pub use error::ExecutorError;
pub use processor::{
    BucketProcessor, BucketedExecutorSettings, ConcurrencyPolicy, DeadLetter, ExecutorTask,
};
pub use service::{BucketedExecutor, ConcurrencyExt, Executors, TaskId, install};
pub use submit::{CallId, SubmitAnswer, SubmitOutput, SubmitPipeline};
