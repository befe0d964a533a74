//! # colony-actors
//!
//! The home of Colony's cluster primitives (cluster locks, cluster caches, the job scheduler
//! and the bucketed executor), each a sans-IO core inside an actor shell, built on
//! `colony-runtime`'s membership, placement, quorum and transport.
//!
//! The primitives arrive one by one; until then this crate only re-exports the runtime types
//! they are built on, so that applications can depend on it already.
#![warn(missing_docs)]

pub mod locks;

pub use colony_runtime::{Node, NodeId};
