//! Cluster locks: named locks and entity locks with fencing tokens, leases, lost-lock signals
//! and quorum.
//!
//! A name's state lives on its owner node, chosen by rendezvous hashing over the up members.
//! Grants are leases that the holder's node renews; a guard is told it lost its lock before the
//! lease ends. See `docs/locks.md` for the guarantees and how to use fencing tokens.
//!
//! # Layout
//! - [`core`]: the owner's lock table (sans-IO); [`holdings`]: the holder's renewals (sans-IO).
//! - [`tokens`], [`views`]: fencing tokens, and the view history behind the takeover delay.
//! - `actor`, `gateway`: the shell and the `locks` service.
//! - [`Locks`], [`ClusterLock`], [`LockGuard`], [`EntityLock`]: the API.

mod actor;
pub mod core;
mod entity;
mod error;
mod gateway;
mod guard;
pub mod holdings;
mod lock;
pub mod msg;
pub mod name;
mod service;
pub mod tokens;
pub mod views;

pub use actor::LockStats;
pub use entity::{EntityLock, EntityLockError};
pub use error::{LockError, NameError, UnlockError};
pub use guard::LockGuard;
pub use lock::ClusterLock;
pub use service::{LockSettings, Locks, LocksExt, install};

#[cfg(test)]
mod core_tests;
