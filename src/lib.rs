//! # Colony
//!
//! Cluster primitives for Rust applications that run on one node or on many: membership with
//! failure detection, placement, quorum, and (in [`actors`]) the primitives built on them.
//!
//! This crate re-exports [`colony_runtime`] (as [`runtime`], with its most used items at the
//! top level) and [`colony_actors`] (as [`actors`]), and ships the `colony` command.
//!
//! ```no_run
//! # async fn run() -> Result<(), colony::StartError> {
//! let node = colony::Node::builder()
//!     .name("alpha")
//!     .home("/tmp/colony-alpha")
//!     .bind("127.0.0.1:7400")
//!     .cookie("change-me")
//!     .start()
//!     .await?;
//! assert!(node.has_quorum()); // a node without seeds is a one-node cluster
//! node.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub use colony_actors as actors;
pub use colony_runtime as runtime;
pub use colony_runtime::{
    ClusterStatus, Member, MemberEvent, MemberState, Node, NodeBuilder, NodeId, StartError,
};
