//! The bucketed executor (being built; see `docs/executor.md`): tasks grouped by bucket, the
//! tasks of one bucket processed by one worker at a time anywhere in the cluster, in order and in
//! batches, with retries, dead letters and concurrency limits.
//!
//! The queues live in the cluster state ([`colony_runtime::consensus::exec`]). What exists here
//! so far are the two sans-IO cores a node runs:
//! - [`ExecutorCore`]: which bucket batches this node starts, with which fencing token, and how
//!   each ends (a `Done` proposal, a retry after backoff, the dead-letter handler).
//! - [`SubmitPipeline`]: callers' tasks become `Submit` proposals, one in flight per executor.
//!
//! # Layout
//! - `config`: [`ExecutorSettings`], [`Concurrency`], [`Backoff`].
//! - `core`: [`ExecutorCore`] and its [`Output`].
//! - `submit`: [`SubmitPipeline`] and its [`SubmitOutput`].

mod config;
mod core;
mod submit;

pub use config::{Backoff, Concurrency, ExecutorSettings};
pub use core::{CoreConfig, ExecutorCore, Now, Output, bucket_slot};
pub use submit::{CallId, SubmitAnswer, SubmitOutput, SubmitPipeline};
