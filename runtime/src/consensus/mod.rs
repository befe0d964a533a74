//! The consensus group: the cluster state that decides exclusivity, replicated by raft-rs.
//!
//! Up to five members vote (the rest follow as learners); every member applies the same log,
//! so every node knows the cluster's settings, who is live in which epoch, and which node owns
//! each slot of each domain under which epoch, with which block of fencing tokens. Gossip says
//! who is up and finds new members; it never entitles a node to anything by itself. A node may
//! act on a slot only while the group says the slot is its own and its own epoch is in force,
//! and its entitlement ends on its own clock one liveness period after the heartbeat it sent
//! last was committed. A silent node's epoch is revoked only after that period (stretched by a
//! drift allowance) has passed on the revoker's clock, so no wall clock and no clock offset
//! decides who may act.
//!
//! # Layout
//! - [`command`]: the typed protocol of the cluster state ([`Command`], [`Outcome`]).
//! - [`state`]: the state machine ([`ClusterState`]): liveness epochs, slots, token blocks.
//! - [`exec`]: the bucketed executors' part ([`exec::ExecTable`]): queues, attempts, dead letters.
//! - [`jobs`]: the scheduler's part of it ([`jobs::JobTable`]): jobs, fires, run history.
//! - [`settings`]: the settings every node must share.
//! - [`log`]: raft-rs's storage, and the changes the shell must persist ([`Persist`]).
//! - [`core`]: the sans-IO core ([`GroupCore`]) around raft-rs's `RawNode`.
//! - `duties`: what the core does as time passes (liveness, revocation, placement, voters).
//! - [`config`]: timings ([`GroupConfig`]).
//! - [`disk`]: the store in the local home (redb).
//! - [`transfer`]: raft messages larger than one request (a large snapshot), in pieces.
//! - [`group`]: the group on a running node: its shell, transport service and [`Group`] handle.

pub mod command;
pub mod config;
pub mod core;
#[cfg(test)]
mod core_tests;
pub mod disk;
mod duties;
pub mod exec;
pub mod group;
pub mod jobs;
pub mod log;
pub mod settings;
mod shared;
pub mod state;
pub mod transfer;

pub use self::core::{
    Applied, Capture, Entitlement, GroupCore, GroupStats, Identity, Output, PeerState, ProposalId,
    Refused,
};
pub use command::{
    Command, Domain, MAX_TOKEN, MemberInfo, Outcome, Refusal, ReplicaId, SLOTS, TOKEN_BLOCK,
};
pub use config::GroupConfig;
pub use duties::slot_key;
pub use group::{Group, GroupStatus, ProposeError};
pub use log::{Log, Persist};
pub use settings::{ClusterSettings, Disagreement};
pub use shared::Shared;
pub use state::{ClusterState, Liveness, Phase, Slot};
