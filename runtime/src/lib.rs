//! # colony-runtime
//!
//! The node runtime under Colony's cluster primitives: settings, home directories, the wire
//! envelope, authenticated links between processes, gossip membership with failure detection,
//! placement, quorum, a local event bus and component lifecycle.
//!
//! One node is one OS process. A process started without seeds is a one-node cluster and runs
//! the same code paths, serialization included.
//!
//! ## Not here
//! The primitives themselves (locks, caches, scheduler, buckets) live in `colony-actors`. This
//! crate gives them the consensus group that decides exclusivity and the entitlement machinery
//! they share; what is exclusive and how it is served is theirs.
//!
//! ## Layout
//! - [`clock`]: the node's wall clock (with a test-only offset).
//! - [`config`]: settings and their layering (file < environment < flags).
//! - [`homes`]: the local and shared home directories.
//! - [`wire`]: the versioned envelope and its size-checked codec.
//! - [`membership`]: SWIM gossip (foca) with authentication; sans-IO core plus a UDP shell.
//! - [`transport`]: authenticated links that follow membership, services, requests.
//! - [`placement`], [`quorum`]: rendezvous hashing, and quorum arithmetic for the membership view.
//! - [`consensus`]: the raft-rs group (sans-IO core, redb store, shell) holding settings,
//!   liveness epochs and slot ownership; [`ownership`]: which slots a node may serve now.
//! - [`shell`]: the actor shell every sans-IO core runs in.
//! - [`events`]: the bounded local event bus; [`messaging`]: named channels between nodes.
//! - [`lifecycle`]: components started after join and stopped before leave.
//! - [`Node`]: the handle that ties them together, and the admin endpoint.
//! - `testkit` (feature `testkit`): multi-process clusters with fault injection.
#![warn(missing_docs)]

/// Checkers of recorded histories, one per promise, shared by the simulator and the
/// multi-process tests (also reachable as `testkit::check`).
#[cfg(any(test, feature = "sim", feature = "testkit"))]
#[path = "testkit/check/mod.rs"]
pub mod check;
pub mod clock;
pub mod config;
pub mod consensus;
pub mod events;
pub mod homes;
pub mod lifecycle;
pub mod membership;
pub mod messaging;
mod node;
pub mod ownership;
pub mod placement;
pub mod quorum;
pub mod shell;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod transport;
pub mod wire;

pub use membership::{Member, MemberEvent, MemberState, NodeId};
pub use node::admin_types::{AdminStats, ClusterStatus, ConsensusReport, Faults};
pub use node::{
    AdminAction, AdminItemAction, ComponentControlError, ComponentStatus, MetricsCollector, Node,
    NodeBuilder, NodeStats, StartError, StartHook,
};
