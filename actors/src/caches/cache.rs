//! A typed cache handle.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Instant;

use colony_runtime::events::Subscription;
use colony_runtime::{NodeId, wire};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::core::SyncWrite;
use super::error::CacheError;
use super::loader::Loader;
use super::loads::Loads;
use super::msg::{Op, Stamp};
use super::registry::Shared;
use super::settings::{CacheSettings, Mode};
use super::store::{CacheStats, EntryEvent, Store};

/// What every key and value type of a cache must be: hashable keys, cloneable values, and both
/// serializable, so that a cache behaves the same on one node as on many.
pub trait CacheKey:
    Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
}
impl<T: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static> CacheKey for T {}

/// See [`CacheKey`].
pub trait CacheValue: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static> CacheValue for T {}

/// Bytes of room an operation leaves for its batch and envelope under the message limit.
const FRAMING: usize = 1024;

pub(crate) struct Inner<K, V> {
    pub name: String,
    pub settings: CacheSettings,
    pub store: Store<K, V>,
    pub loads: Loads<K, V>,
    pub loader: Option<Loader<K, V>>,
    pub shared: Arc<Shared>,
}

/// A cache. Cheap to clone; every clone on a node is the same cache. Get it once with
/// [`super::Caches::get_cache`] and keep it.
pub struct Cache<K, V> {
    pub(crate) inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for Cache<K, V> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
        }
    }
}

impl<K: CacheKey, V: CacheValue> Cache<K, V> {
    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The cache's settings.
    pub fn settings(&self) -> &CacheSettings {
        &self.inner.settings
    }

    /// The value of `key`: from this node's entries, or else from the loader (one load per key
    /// at a time on this node; concurrent callers share it). `None` when absent and the cache
    /// has no loader.
    ///
    /// # Errors
    /// [`CacheError::Load`] when the loader fails; nothing is cached then.
    /// [`CacheError::Maintenance`] while the node is locked for maintenance.
    pub async fn get(&self, key: &K) -> Result<Option<V>, CacheError> {
        self.usable()?;
        if let Some(v) = self.hit(key) {
            return Ok(Some(v));
        }
        match &self.inner.loader {
            Some(loader) => {
                let loader = loader.clone();
                self.load(key, move |k| async move { loader.load(k).await })
                    .await
                    .map(Some)
            }
            None => Ok(None),
        }
    }

    /// The value of `key`, loading it with `supplier` when absent.
    ///
    /// # Errors
    /// [`CacheError::Load`] when the supplier fails; [`CacheError::Maintenance`] as for
    /// [`Self::get`].
    pub async fn get_with<F, Fut, E>(&self, key: &K, supplier: F) -> Result<V, CacheError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: std::fmt::Display,
    {
        self.usable()?;
        if let Some(v) = self.hit(key) {
            return Ok(v);
        }
        self.load(key, |_| async move {
            supplier().await.map_err(|e| e.to_string())
        })
        .await
    }

    fn hit(&self, key: &K) -> Option<V> {
        let inner = &self.inner;
        // A replicated cache serves what it holds only under its leases: without them it may
        // have missed a change (see `core`).
        let found = if inner.settings.is_replicated() && !inner.shared.leased() {
            None
        } else {
            inner.store.get(key)
        };
        match found {
            Some(_) => inner.store.counters.hit(),
            None => inner.store.counters.miss(),
        }
        found
    }

    async fn load<F, Fut>(&self, key: &K, load: F) -> Result<V, CacheError>
    where
        F: FnOnce(K) -> Fut,
        Fut: Future<Output = Result<V, String>>,
    {
        let inner = &self.inner;
        let timed = |key: K| async move {
            let started = Instant::now();
            let loaded = load(key).await;
            let micros = started.elapsed().as_micros() as u64;
            inner.store.counters.loaded(loaded.is_ok(), micros);
            loaded.map_err(|reason| CacheError::Load {
                name: inner.name.clone(),
                reason,
            })
        };
        // Without its leases this node may have missed a change, and a load in progress may
        // predate it: this caller loads on its own and caches nothing. A lease lost during a
        // shared load is followed by a clear, which marks that load stale.
        if inner.settings.is_replicated() && !inner.shared.leased() {
            let value = timed(key.clone()).await;
            // What it read may be newer than what this node holds or what a shared load in
            // progress read: neither may be served after it, or a later read here would go back.
            inner.loads.changed(key);
            inner.store.drop_key(key);
            return value;
        }
        inner
            .loads
            .run(key, |inflight| async move {
                let value = timed(key.clone()).await?;
                // A change that arrived meanwhile may be newer than what was loaded: decided
                // under the entry's lock, against the flag every change sets first.
                let stored = inner
                    .store
                    .put_loaded(key.clone(), value.clone(), || inflight.is_stale());
                if !stored && inflight.is_stale() {
                    // And what was loaded may be newer than what the change left here: its
                    // callers see it now, so a later read here must not see less.
                    inner.store.drop_key(key);
                }
                Ok(value)
            })
            .await
    }

    /// Stores `value` under `key` on this node and sends the change to the others.
    ///
    /// # Errors
    /// [`CacheError::Serialize`] or [`CacheError::TooLarge`] for a replicated cache;
    /// [`CacheError::Maintenance`] while the node is locked for maintenance. Nothing changed
    /// then.
    pub async fn put(&self, key: K, value: V) -> Result<(), CacheError> {
        self.usable()?;
        let encoded = self.encode_put(&key, &value)?;
        let change = self.begin().await;
        self.inner.loads.changed(&key);
        self.inner.store.put(key, value, change.stamp());
        let op = encoded.map(|(key, value)| match value {
            Some(value) => Op::Put {
                key,
                value,
                stamp: change.stamp(),
            },
            None => Op::Invalidate {
                key,
                stamp: change.stamp(),
            },
        });
        self.replicate(change, op).await;
        Ok(())
    }

    /// Stores `value` unless `key` has a value on this node; returns the value already there.
    ///
    /// # Errors
    /// As [`Self::put`].
    pub async fn put_if_absent(&self, key: K, value: V) -> Result<Option<V>, CacheError> {
        if let Some(existing) = self.inner.store.get(&key) {
            return Ok(Some(existing));
        }
        self.put(key, value).await?;
        Ok(None)
    }

    /// Replaces `key`'s value with `new` if it is `old` on this node; says whether it did.
    ///
    /// # Errors
    /// As [`Self::put`].
    pub async fn replace(&self, key: K, old: &V, new: V) -> Result<bool, CacheError>
    where
        V: PartialEq,
    {
        if self.inner.store.get(&key).as_ref() != Some(old) {
            return Ok(false);
        }
        self.put(key, new).await?;
        Ok(true)
    }

    /// Removes `key` here and on every other node.
    ///
    /// # Errors
    /// [`CacheError::Serialize`] for a key that cannot be encoded; [`CacheError::Maintenance`]
    /// while the node is locked for maintenance.
    pub async fn remove(&self, key: &K) -> Result<(), CacheError> {
        self.usable()?;
        let encoded = match self.inner.settings.mode {
            Mode::Local => None,
            _ => Some(self.encode("key", key)?),
        };
        let change = self.begin().await;
        self.inner.loads.changed(key);
        match self.inner.settings.mode {
            // Copy mode keeps the last write by stamp and remembers the removal.
            Mode::Copy => self.inner.store.remove(key, change.stamp()),
            Mode::Local | Mode::Invalidation => self.inner.store.drop_key(key),
        }
        let op = encoded.map(|key| Op::Invalidate {
            key,
            stamp: change.stamp(),
        });
        self.replicate(change, op).await;
        Ok(())
    }

    /// Removes every key here and on every other node.
    ///
    /// # Errors
    /// [`CacheError::Maintenance`] while the node is locked for maintenance; nothing changed.
    pub async fn remove_all(&self) -> Result<(), CacheError> {
        self.usable()?;
        let change = self.begin().await;
        self.inner.loads.changed_all();
        self.inner.store.clear(change.stamp());
        let op = self.inner.settings.is_replicated().then_some(Op::Clear {
            stamp: change.stamp(),
        });
        self.replicate(change, op).await;
        Ok(())
    }

    /// Refuses work while the node is locked for maintenance.
    fn usable(&self) -> Result<(), CacheError> {
        match self.inner.shared.node.maintenance() {
            Some(message) => Err(CacheError::Maintenance {
                message: message.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// The keys with a value on this node.
    pub fn keys(&self) -> Vec<K> {
        self.inner.store.keys()
    }

    /// Whether `key` has a value on this node (without loading it).
    pub fn contains_key(&self, key: &K) -> bool {
        self.inner.store.contains(key)
    }

    /// The number of entries on this node.
    pub fn len(&self) -> u64 {
        self.inner.store.len()
    }

    /// Whether this node holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This node's counters for the cache (zero when statistics are off).
    pub fn stats(&self) -> CacheStats {
        self.inner.store.stats()
    }

    /// Listens to this node's entry events (added, updated, removed, evicted) with a queue of
    /// `capacity`; a full queue drops events and counts them (see [`Subscription::dropped`]).
    pub fn subscribe(&self, capacity: usize) -> Subscription<EntryEvent<K, V>> {
        self.inner.store.subscribe(capacity)
    }

    fn encode<T: Serialize>(&self, what: &'static str, value: &T) -> Result<Vec<u8>, CacheError> {
        wire::encode_payload(value).map_err(|e| CacheError::Serialize {
            name: self.inner.name.clone(),
            what,
            reason: e.to_string(),
        })
    }

    /// The encoded key and (copy mode) value of a put, `None` for a local cache. Encoded in
    /// invalidation mode too: a value that could not cross the wire must fail here, on every
    /// node, and not later on another one.
    #[allow(clippy::type_complexity)]
    fn encode_put(
        &self,
        key: &K,
        value: &V,
    ) -> Result<Option<(Vec<u8>, Option<Vec<u8>>)>, CacheError> {
        let mode = self.inner.settings.mode;
        if mode == Mode::Local {
            return Ok(None);
        }
        let key = self.encode("key", key)?;
        let value = self.encode("value", value)?;
        let size =
            key.len() + if mode == Mode::Copy { value.len() } else { 0 } + self.inner.name.len();
        let limit = self
            .inner
            .shared
            .node
            .config()
            .max_message_bytes
            .saturating_sub(FRAMING);
        if size > limit {
            return Err(CacheError::TooLarge {
                name: self.inner.name.clone(),
                size,
                limit,
            });
        }
        Ok(Some((key, (mode == Mode::Copy).then_some(value))))
    }

    /// Stamps a change made now (numbered, for a synchronous replicated cache) and says where
    /// it goes. A synchronous copy-mode write first waits, within the replication timeout, for
    /// this node's leases: with them its clock has seen every write that returned before, so
    /// its stamp is later than theirs on every node.
    async fn begin(&self) -> Begun {
        let inner = &self.inner;
        let shared = &inner.shared;
        if !inner.settings.is_replicated() {
            return Begun::Local(shared.with_core(|core, _, wall| core.stamp(wall)));
        }
        if !inner.settings.synchronous {
            return shared.with_core(|core, now, wall| Begun::Async {
                stamp: core.stamp(wall),
                targets: core.targets(now),
            });
        }
        // One replication timeout covers the wait for leases and the fan-out together.
        let deadline = tokio::time::Instant::now() + inner.settings.replication_timeout;
        if inner.settings.mode == Mode::Copy {
            shared.await_lease(deadline).await;
        }
        shared.with_core(|core, now, wall| Begun::Sync {
            write: core.stamp_sync(now, wall),
            targets: core.targets(now),
            deadline,
        })
    }

    async fn replicate(&self, change: Begun, op: Option<Op>) {
        let Some(op) = op else {
            return;
        };
        let inner = &self.inner;
        match change {
            Begun::Local(_) => {}
            Begun::Sync {
                write,
                targets,
                deadline,
            } => {
                let ops = vec![(inner.name.clone(), op)];
                let unacked = inner
                    .shared
                    .replicator
                    .send_sync(&targets, &write, ops, deadline)
                    .await;
                if unacked > 0 {
                    inner
                        .store
                        .counters
                        .unacknowledged
                        .fetch_add(unacked, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Begun::Async { targets, .. } => {
                inner
                    .shared
                    .replicator
                    .send_async(&inner.shared, &targets, &inner.name, op);
            }
        }
    }
}

/// A change stamped by [`Cache::begin`].
enum Begun {
    Local(Stamp),
    Sync {
        write: SyncWrite,
        targets: Vec<NodeId>,
        /// When the replication timeout of this write ends.
        deadline: tokio::time::Instant,
    },
    Async {
        stamp: Stamp,
        targets: Vec<NodeId>,
    },
}

impl Begun {
    fn stamp(&self) -> Stamp {
        match self {
            Begun::Local(stamp) | Begun::Async { stamp, .. } => *stamp,
            Begun::Sync { write, .. } => write.stamp,
        }
    }
}
