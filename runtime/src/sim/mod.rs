//! A seeded, deterministic simulator for the membership core (feature `sim`).
//!
//! A [`World`] runs N [`MembershipCore`](crate::membership::MembershipCore)s in one thread with a
//! simulated clock and network: no sockets, no tokio, no real time. Each run has one seed; the
//! same seed gives the same run, and a world prints its seed if a test panics while it is alive.
//! The world records a [`History`] that the [`check`]ers judge, one promise per checker.
//!
//! It is not a model of any particular network: datagrams travel with a small delay and jitter
//! unless a fault says otherwise, and processes never run slow except when [paused](World::pause).
//!
//! # Layout
//! - [`world`]: the [`World`], its clock and scenario steps (`kill`, `restart`, `pause`, `leave`,
//!   `run_for`, `run_until`).
//! - [`clock`]: per-node clocks with skew and drift ([`SkewedClock`]), for cores of other
//!   crates simulated over their own worlds (the cache coherence core's, for one).
//! - [`net`]: links with cuts, loss and delay ([`Net`]).
//! - [`script`]: scenarios as a list of [`Op`]s.
//! - [`group`]: consensus cores with a pluggable service on top (the lock cores' world).
//! - [`env`](mod@env): the seed to replay and the soak factor, from the environment.
//! - [`history`]: what happened ([`History`]), and the processes it implies ([`Life`]).
//! - [`check`]: pure checkers over a history, one file per promise.
//!
//! # Examples
//! ```
//! use std::time::Duration;
//! use colony_runtime::config::MembershipTimings;
//! use colony_runtime::sim::{World, check};
//!
//! let mut world = World::start(7, 3);
//! world.run_until(World::converged, Duration::from_secs(5)).expect("converges");
//! world.kill(2);
//! let bound = MembershipTimings::default().detection_bound(5);
//! world.run_for(bound);
//! let broken = check::down_within_bound::check(world.history(), bound);
//! assert!(broken.is_empty(), "seed {}: {}", world.seed(), check::report(&broken));
//! ```

pub mod check;
pub mod clock;
pub mod env;
pub mod group;
pub mod history;
pub mod net;
pub mod script;
pub mod world;

pub use clock::SkewedClock;

/// A cluster state with members `1..=nodes` registered, each in epoch 1 (incarnation 1): the
/// starting point of the state-level tests of every primitive.
///
/// # Examples
/// ```
/// let s = colony_runtime::sim::registered(3);
/// assert_eq!(s.members.len(), 3);
/// ```
pub fn registered(nodes: u64) -> crate::consensus::ClusterState {
    use crate::consensus::{ClusterState, Command, MemberInfo, ReplicaId};
    let mut s = ClusterState::new();
    for r in 1..=nodes {
        let _ = s.apply(&Command::Register {
            replica: ReplicaId(r),
            info: MemberInfo {
                name: format!("n{r}"),
                addr: "127.0.0.1:1".parse().expect("an address"),
                incarnation: 1,
            },
        });
    }
    s
}
pub use history::{End, Entry, Happening, History, Life, Span};
pub use net::{Link, Net, NetChange};
pub use script::Op;
pub use world::{Status, Timeout, World, WorldConfig, WorldStats, node_addr};

#[cfg(test)]
pub(crate) mod tests;
