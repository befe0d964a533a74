//! # colony-actors
//!
//! Colony's cluster primitives, each a sans-IO core inside an actor shell, built on
//! `colony-runtime`'s membership, placement, quorum and transport.
//!
//! - [`locks`]: named and entity locks with fencing tokens, leases, lost-lock signals and quorum.
//! - [`caches`]: local, invalidation and copy caches with loaders, expiry and statistics.
//! - [`executor`]: bucketed executors: per-bucket FIFO queues in the consensus group, one worker
//!   per bucket cluster-wide, batches, retries, dead letters and concurrency limits.
//! - [`scheduler`]: the cluster scheduler: interval, cron and one-shot jobs, once per cluster
//!   (fenced fires from the consensus log) or local, with misfire and overlap policies and run
//!   history.
//!
//! Every node of a cluster must run the same primitives, since any node may own a lock name:
//! build nodes with [`with_primitives`] (the `colony` crate's `colony::node()` does).
#![warn(missing_docs)]

pub mod caches;
pub mod executor;
pub mod locks;
pub mod scheduler;
mod wiring;

pub use colony_runtime::{Node, NodeBuilder, NodeId};

/// Settings of every primitive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Primitives {
    /// The lock service.
    pub locks: locks::LockSettings,
    /// The scheduler.
    pub scheduler: scheduler::SchedulerSettings,
}

/// Installs the primitives on every node `builder` starts, before the node joins.
///
/// # Examples
/// ```no_run
/// # async fn run() -> Result<(), colony_runtime::StartError> {
/// use colony_actors::locks::LocksExt;
/// let node = colony_actors::with_primitives(colony_runtime::Node::builder(), Default::default())
///     .home("/tmp/colony-doc")
///     .cookie("change-me")
///     .start()
///     .await?;
/// let _lock = node.locks().lock_for_name("example").unwrap();
/// # Ok(()) }
/// ```
pub fn with_primitives(builder: NodeBuilder, settings: Primitives) -> NodeBuilder {
    // The lease is a cluster setting, recorded in the consensus group.
    builder
        .lock_lease(settings.locks.lease)
        .on_start(Box::new(move |node| {
            Box::pin(async move {
                locks::install(&node, settings.locks).await?;
                executor::install(&node).await?;
                scheduler::install(&node, settings.scheduler).await?;
                caches::install(&node).await
            })
        }))
}
