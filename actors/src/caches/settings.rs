//! How a cache behaves: where its values live, how changes spread, and how entries leave.

use std::time::Duration;

/// Where values live and how changes reach the other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// This node only; nothing crosses the network.
    Local,
    /// Values stay on each node; a change on one node removes the key everywhere else, and the
    /// next read there loads it again.
    Invalidation,
    /// Values are sent to every node with each change.
    Copy,
}

/// How a cache's settings are built.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use colony_actors::caches::CacheSettings;
/// let settings = CacheSettings::replicate_via_invalidation()
///     .synchronous()
///     .expire_after_write(Duration::from_secs(600))
///     .max_entries(10_000)
///     .flushable(true)
///     .statistics(true);
/// assert!(settings.is_replicated());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    pub(crate) mode: Mode,
    pub(crate) synchronous: bool,
    pub(crate) expire_after_write: Option<Duration>,
    pub(crate) expire_after_access: Option<Duration>,
    pub(crate) max_entries: Option<u64>,
    pub(crate) flushable: bool,
    pub(crate) statistics: bool,
    pub(crate) replication_timeout: Duration,
}

impl CacheSettings {
    fn with_mode(mode: Mode) -> Self {
        CacheSettings {
            mode,
            synchronous: true,
            expire_after_write: None,
            expire_after_access: None,
            max_entries: None,
            flushable: true,
            statistics: true,
            replication_timeout: Duration::from_secs(2),
        }
    }

    /// A cache on this node only.
    pub fn local() -> Self {
        Self::with_mode(Mode::Local)
    }

    /// Values stay local; changes invalidate the key on every other node.
    pub fn replicate_via_invalidation() -> Self {
        Self::with_mode(Mode::Invalidation)
    }

    /// Values are copied to every node.
    pub fn replicate_via_copy() -> Self {
        Self::with_mode(Mode::Copy)
    }

    /// Writes return once every up node acknowledged, or the replication timeout passed (the
    /// default).
    pub fn synchronous(mut self) -> Self {
        self.synchronous = true;
        self
    }

    /// Writes return at once; changes reach the other nodes in the order this node made them.
    pub fn asynchronous(mut self) -> Self {
        self.synchronous = false;
        self
    }

    /// Entries leave this long after they were written.
    pub fn expire_after_write(mut self, ttl: Duration) -> Self {
        self.expire_after_write = Some(ttl);
        self
    }

    /// Entries leave this long after they were last read or written.
    pub fn expire_after_access(mut self, tti: Duration) -> Self {
        self.expire_after_access = Some(tti);
        self
    }

    /// At most this many entries on each node; the least useful leave first.
    pub fn max_entries(mut self, n: u64) -> Self {
        self.max_entries = Some(n);
        self
    }

    /// Whether a cluster-wide flush empties this cache (default true).
    pub fn flushable(mut self, on: bool) -> Self {
        self.flushable = on;
        self
    }

    /// Whether hits, misses, loads and evictions are counted (default true).
    pub fn statistics(mut self, on: bool) -> Self {
        self.statistics = on;
        self
    }

    /// How long a synchronous write waits for the other nodes (default 2 s).
    pub fn replication_timeout(mut self, timeout: Duration) -> Self {
        self.replication_timeout = timeout;
        self
    }

    /// The replication mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether changes cross the network.
    pub fn is_replicated(&self) -> bool {
        self.mode != Mode::Local
    }
}
