//! A typed cache handle.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Instant;

use colony_runtime::events::Subscription;
use colony_runtime::wire;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::CacheError;
use super::loader::Loader;
use super::loads::Loads;
use super::msg::{Op, Stamp};
use super::registry::Shared;
use super::settings::{CacheSettings, Mode};
use super::stamp::LOADED;
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
    pub async fn get(&self, key: &K) -> Result<Option<V>, CacheError> {
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
    /// [`CacheError::Load`] when the supplier fails.
    pub async fn get_with<F, Fut, E>(&self, key: &K, supplier: F) -> Result<V, CacheError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: std::fmt::Display,
    {
        if let Some(v) = self.hit(key) {
            return Ok(v);
        }
        self.load(key, |_| async move {
            supplier().await.map_err(|e| e.to_string())
        })
        .await
    }

    fn hit(&self, key: &K) -> Option<V> {
        let found = self.inner.store.get(key);
        match found {
            Some(_) => self.inner.store.counters.hit(),
            None => self.inner.store.counters.miss(),
        }
        found
    }

    async fn load<F, Fut>(&self, key: &K, load: F) -> Result<V, CacheError>
    where
        F: FnOnce(K) -> Fut,
        Fut: Future<Output = Result<V, String>>,
    {
        let inner = &self.inner;
        inner
            .loads
            .run(key, |inflight| async move {
                // Until every peer knows this node, their changes may skip it (see `peers`). Asked
                // before loading: a peer that learns of this node during the load may already
                // have sent a change it missed. A local cache has no peers to wait for.
                let cacheable = !inner.settings.is_replicated() || inner.shared.ready();
                let started = Instant::now();
                let loaded = load(key.clone()).await;
                let micros = started.elapsed().as_micros() as u64;
                inner.store.counters.loaded(loaded.is_ok(), micros);
                let value = loaded.map_err(|reason| CacheError::Load {
                    name: inner.name.clone(),
                    reason,
                })?;
                // A change that arrived meanwhile may be newer than what was loaded.
                if cacheable && !inflight.is_stale() {
                    inner.store.put(key.clone(), value.clone(), LOADED);
                }
                Ok(value)
            })
            .await
    }

    /// Stores `value` under `key` on this node and sends the change to the others.
    ///
    /// # Errors
    /// [`CacheError::Serialize`] or [`CacheError::TooLarge`] for a replicated cache; nothing
    /// changed then.
    pub async fn put(&self, key: K, value: V) -> Result<(), CacheError> {
        let stamp = self.inner.shared.stamper.stamp();
        let op = self.op_for_put(&key, &value, stamp)?;
        self.inner.loads.changed(&key);
        self.inner.store.put(key, value, stamp);
        self.replicate(op).await;
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
    /// [`CacheError::Serialize`] for a key that cannot be encoded.
    pub async fn remove(&self, key: &K) -> Result<(), CacheError> {
        let stamp = self.inner.shared.stamper.stamp();
        let op = match self.inner.settings.mode {
            Mode::Local => None,
            _ => Some(Op::Invalidate {
                key: self.encode("key", key)?,
                stamp,
            }),
        };
        self.inner.loads.changed(key);
        self.inner.store.remove(key, stamp);
        self.replicate(op).await;
        Ok(())
    }

    /// Removes every key here and on every other node.
    pub async fn remove_all(&self) {
        let stamp = self.inner.shared.stamper.stamp();
        self.inner.loads.changed_all();
        self.inner.store.clear(stamp);
        let op = self
            .inner
            .settings
            .is_replicated()
            .then_some(Op::Clear { stamp });
        self.replicate(op).await;
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

    fn op_for_put(&self, key: &K, value: &V, stamp: Stamp) -> Result<Option<Op>, CacheError> {
        let mode = self.inner.settings.mode;
        if mode == Mode::Local {
            return Ok(None);
        }
        let key = self.encode("key", key)?;
        // Encoded in invalidation mode too: a value that could not cross the wire must fail
        // here, on every node, and not later on another one.
        let value = self.encode("value", value)?;
        let op = if mode == Mode::Copy {
            Op::Put { key, value, stamp }
        } else {
            Op::Invalidate { key, stamp }
        };
        let size = match &op {
            Op::Put { key, value, .. } => key.len() + value.len(),
            Op::Invalidate { key, .. } => key.len(),
            Op::Clear { .. } => 0,
        } + self.inner.name.len();
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
        Ok(Some(op))
    }

    async fn replicate(&self, op: Option<Op>) {
        let Some(op) = op else {
            return;
        };
        let replicator = &self.inner.shared.replicator;
        if self.inner.settings.synchronous {
            let ops = vec![(self.inner.name.clone(), op)];
            let unacked = replicator
                .send_sync(ops, self.inner.settings.replication_timeout)
                .await;
            self.inner
                .store
                .counters
                .unacknowledged
                .fetch_add(unacked, std::sync::atomic::Ordering::Relaxed);
        } else {
            replicator.send_async(&self.inner.name, op);
        }
    }
}
