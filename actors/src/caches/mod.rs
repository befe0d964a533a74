//! Cluster caches: local, replicated by invalidation, or replicated by copy; with loaders,
//! expiry, size bounds, statistics and entry events. See `docs/caches.md`.
//!
//! # Layout
//! - [`core`]: the sans-IO coherence core: hybrid logical stamps, leases from every peer with
//!   per-origin sequence numbers, what to keep, refuse and clear. Everything below is its shell.
//! - `sim` (tests only): the core of 3 to 5 nodes under a seeded world with faults.
//! - [`CacheSettings`]: mode, synchrony, expiry, bounds.
//! - `store`, `entries`: one cache's entries on a node (moka when bounded or expiring, a
//!   concurrent map otherwise), stamps so the last write wins, counters.
//! - `loads`: one load per key at a time, and no stale load cached over a newer change.
//! - `replicator`: synchronous fan-out with acknowledgements (and the wait for an
//!   unacknowledging peer's lease), ordered asynchronous queues.
//! - `registry`, `gateway`: the service, the core's driver and timer, the `caches` wire
//!   service (`apply`, `sync`, `flush`, `flush_cache`), flush; [`report`]: the admin
//!   `/caches` body.
//! - [`Cache`], [`CachedReference`], [`Caches`]: the API.

mod cache;
pub mod core;
#[cfg(test)]
mod core_tests;
mod entries;
mod error;
mod gateway;
mod loader;
mod loads;
pub mod msg;
mod reference;
mod registry;
mod removals;
mod replicator;
pub mod report;
mod settings;
#[cfg(test)]
mod sim;
mod stamp;
mod store;

pub use cache::{Cache, CacheKey, CacheValue};
pub use error::CacheError;
pub use loader::Loader;
pub use reference::CachedReference;
pub use registry::{Caches, CachesExt, install};
pub use settings::{CacheSettings, Mode};
pub use store::{CacheStats, EntryEvent, EntryEventKind};
