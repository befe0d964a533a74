//! Cluster locks: named locks and entity locks with fencing tokens, leases and lost-lock
//! signals, on the consensus group's entitlements.
//!
//! A name belongs to a slot; the consensus group gives each slot to one node under an epoch,
//! with a block of fencing tokens above every earlier one. That node serves the name from its
//! memory while its entitlement lasts. Grants are leases that the holder's node renews; a guard
//! is told it lost its lock before the lease ends. See `docs/locks.md` for the guarantees and
//! how to use fencing tokens.
//!
//! # Layout
//! - [`core`]: the owner's lock table (sans-IO); [`holdings`]: the holder's renewals (sans-IO);
//!   [`serve`]: one request handed to the table; [`attempt`]: one acquire as its caller
//!   drives it (sans-IO).
//! - [`msg`]: the typed protocol of the `locks` service; [`report`]: the admin `/locks` body.
//! - `actor`, `gateway`: the driver in the runtime's shell, and the `locks` service.
//! - [`Locks`], [`ClusterLock`], [`LockGuard`], [`EntityLock`]: the API.
//! - `sim` (tests): the real lock and consensus cores of 3 to 7 nodes in the seeded group
//!   world, under faults.

mod actor;
pub mod attempt;
pub mod core;
mod entity;
mod error;
mod gateway;
mod guard;
pub mod holdings;
mod lock;
pub mod msg;
pub mod name;
pub mod report;
pub mod serve;
mod service;
#[cfg(test)]
mod sim;

pub use actor::LockStats;
pub use entity::{EntityLock, EntityLockError};
pub use error::{LockError, NameError, UnlockError};
pub use guard::LockGuard;
pub use lock::ClusterLock;
pub use service::{LockSettings, Locks, LocksExt, install};

#[cfg(test)]
mod core_tests;
