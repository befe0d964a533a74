//! The body of the admin endpoint's `GET /caches`: every cache on this node with its mode,
//! size and counters.

use serde::{Deserialize, Serialize};

use super::settings::{CacheSettings, Mode};
use super::store::CacheStats;

/// `GET /caches`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachesReport {
    /// The caches created on this node, by name.
    pub caches: Vec<CacheReport>,
}

/// One cache on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheReport {
    /// The cache's name.
    pub name: String,
    /// `local`, `invalidation` or `copy`.
    pub mode: String,
    /// Whether replicated writes wait for every up node.
    pub synchronous: bool,
    /// Entries on this node.
    pub size: u64,
    /// The size bound, if any.
    pub max_entries: Option<u64>,
    /// Whether `POST /caches/{name}/flush` empties it.
    pub flushable: bool,
    /// Whether the counters below are kept (all zero otherwise).
    pub statistics: bool,
    /// This node's counters: hits, misses, loads, load failures and time, evictions,
    /// unacknowledged replicated changes.
    pub stats: CacheStats,
}

impl CacheReport {
    pub(crate) fn of(name: &str, settings: &CacheSettings, size: u64, stats: CacheStats) -> Self {
        CacheReport {
            name: name.to_owned(),
            mode: match settings.mode {
                Mode::Local => "local",
                Mode::Invalidation => "invalidation",
                Mode::Copy => "copy",
            }
            .to_owned(),
            synchronous: settings.synchronous,
            size,
            max_entries: settings.max_entries,
            flushable: settings.flushable,
            statistics: settings.statistics,
            stats,
        }
    }
}
