//! # Colony
//!
//! Cluster primitives for Rust applications that run on one node or on many: membership with
//! failure detection, placement and quorum, and on them cluster locks with fencing tokens and
//! cluster-coherent caches.
//!
//! This crate re-exports [`colony_runtime`] (as [`runtime`], with its most used items at the
//! top level) and [`colony_actors`] (as [`actors`]), and ships the `colony` command.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use colony::LocksExt;
//! let node = colony::node()
//!     .name("alpha")
//!     .home("/tmp/colony-alpha")
//!     .bind("127.0.0.1:7400")
//!     .cookie("change-me")
//!     .start()
//!     .await?;
//! assert!(node.has_quorum()); // a node without seeds is a one-node cluster
//! let guard = node.locks().lock_for_name("nightly-report")?.lock().await?;
//! println!("fencing token {}", guard.token());
//! guard.unlock().await?;
//! node.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub use colony_actors as actors;
pub use colony_actors::Primitives;
pub use colony_actors::caches::{Cache, CacheSettings, CachedReference, CachesExt, Loader};
pub use colony_actors::executor::{
    BucketProcessor, BucketedExecutor, BucketedExecutorSettings, ConcurrencyExt, ConcurrencyPolicy,
    DeadLetter, ExecutorError,
};
pub use colony_actors::locks::{ClusterLock, EntityLock, LockGuard, LocksExt};
pub use colony_actors::scheduler::{
    JobConfig, JobDetails, JobOutcome, JobRequest, JobRun, JobRunner, MisfirePolicy, Overlap,
    RunMode, Schedule, Scheduler, SchedulerError, SchedulerExt, SchedulerSettings,
};
pub use colony_runtime as runtime;
pub use colony_runtime::{
    ClusterStatus, Member, MemberEvent, MemberState, Node, NodeBuilder, NodeId, StartError,
};

/// A node builder with every primitive installed with default settings.
pub fn node() -> NodeBuilder {
    colony_actors::with_primitives(Node::builder(), Primitives::default())
}

/// A node builder with every primitive installed with `settings`.
pub fn node_with(settings: Primitives) -> NodeBuilder {
    colony_actors::with_primitives(Node::builder(), settings)
}
