//! Cluster locks: named locks and entity locks with fencing tokens, leases, lost-lock signals
//! and quorum.

pub mod core;
pub mod holdings;
pub mod tokens;
pub mod views;

#[cfg(test)]
mod core_tests;
