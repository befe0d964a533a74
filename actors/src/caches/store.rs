//! A node's storage for one cache: moka for size bounds and expiry, stamps so that the last
//! write wins on every node, counters, and entry events.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use colony_runtime::events::{Events, Subscription};
use moka::notification::RemovalCause;

use super::core::Change;
use super::entries::{Entries, Slot, Stored};
use super::msg::Stamp;
use super::removals::Removals;
use super::settings::{CacheSettings, Mode};
use super::stamp::LOADED;

/// What happened to an entry on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryEventKind {
    /// A key got a value.
    Added,
    /// A key's value changed.
    Updated,
    /// A key was removed (on this node or, replicated, on another).
    Removed,
    /// A key left because of expiry or the size bound.
    Evicted,
}

/// An entry event of one cache, delivered to [`super::Cache::subscribe`] listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryEvent<K, V> {
    /// What happened.
    pub kind: EntryEventKind,
    /// The key.
    pub key: K,
    /// The value, when there is one.
    pub value: Option<V>,
}

/// Counters of one cache on this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheStats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that found nothing.
    pub misses: u64,
    /// Loader runs that succeeded.
    pub loads: u64,
    /// Loader runs that failed.
    pub load_failures: u64,
    /// Total time spent in the loader, in microseconds.
    pub load_micros: u64,
    /// Entries that left through expiry or the size bound.
    pub evictions: u64,
    /// Replicated changes some up node did not acknowledge in time.
    pub unacknowledged: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    enabled: AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    load_failures: AtomicU64,
    load_micros: AtomicU64,
    evictions: AtomicU64,
    pub unacknowledged: AtomicU64,
}

impl Counters {
    fn add(&self, counter: &AtomicU64, n: u64) {
        if self.enabled.load(Ordering::Relaxed) {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn hit(&self) {
        self.add(&self.hits, 1);
    }

    pub(crate) fn miss(&self) {
        self.add(&self.misses, 1);
    }

    pub(crate) fn loaded(&self, ok: bool, micros: u64) {
        self.add(if ok { &self.loads } else { &self.load_failures }, 1);
        self.add(&self.load_micros, micros);
    }

    fn snapshot(&self) -> CacheStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            hits: get(&self.hits),
            misses: get(&self.misses),
            loads: get(&self.loads),
            load_failures: get(&self.load_failures),
            load_micros: get(&self.load_micros),
            evictions: get(&self.evictions),
            unacknowledged: get(&self.unacknowledged),
        }
    }
}

/// One cache's entries on this node.
pub(crate) struct Store<K, V> {
    entries: Entries<K, V>,
    /// Removals and clears: writes older than them are refused.
    removals: Removals<K>,
    pub counters: Arc<Counters>,
    events: Events,
}

impl<K, V> Store<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(settings: &CacheSettings) -> Self {
        let counters = Arc::new(Counters::default());
        counters
            .enabled
            .store(settings.statistics, Ordering::Relaxed);
        let events = Events::default();
        let bounded = settings.max_entries.is_some()
            || settings.expire_after_write.is_some()
            || settings.expire_after_access.is_some();
        let entries = if bounded {
            let mut builder = moka::sync::Cache::builder();
            if let Some(n) = settings.max_entries {
                builder = builder.max_capacity(n);
            }
            if let Some(ttl) = settings.expire_after_write {
                builder = builder.time_to_live(ttl);
            }
            if let Some(tti) = settings.expire_after_access {
                builder = builder.time_to_idle(tti);
            }
            let (c, e) = (counters.clone(), events.clone());
            Entries::Bounded(
                builder
                    .eviction_listener(move |key: Arc<K>, slot: Slot<V>, cause| {
                        if matches!(cause, RemovalCause::Expired | RemovalCause::Size) {
                            c.add(&c.evictions, 1);
                            e.publish(EntryEvent {
                                kind: EntryEventKind::Evicted,
                                key: (*key).clone(),
                                value: Some(slot.value),
                            });
                        }
                    })
                    .build(),
            )
        } else {
            Entries::Unbounded(dashmap::DashMap::new())
        };
        Store {
            entries,
            removals: Removals::new(),
            counters,
            events,
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.entries.get(key)
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        self.entries.contains(key)
    }

    pub(crate) fn keys(&self) -> Vec<K> {
        self.entries.keys()
    }

    pub(crate) fn len(&self) -> u64 {
        self.entries.len()
    }

    pub(crate) fn stats(&self) -> CacheStats {
        self.counters.snapshot()
    }

    pub(crate) fn subscribe(&self, capacity: usize) -> Subscription<EntryEvent<K, V>> {
        self.events.subscribe(capacity)
    }

    /// Stores `value` unless a newer write, removal or clear is already there; says whether it
    /// was stored. A write that is not stored drops what the key holds (see
    /// [`Entries::put_or_drop`]) and a newer value dropped so is remembered as a removal.
    /// Loaded values (`LOADED`) come from the system of record and are only refused by a stored
    /// value.
    pub(crate) fn put(&self, key: K, value: V, stamp: Stamp) -> bool {
        let slot = Slot {
            value: value.clone(),
            stamp,
        };
        let refused = || stamp != LOADED && self.removals.refuses(&key, stamp);
        let remember = |newer| self.removals.removed(key.clone(), newer);
        match self
            .entries
            .put_or_drop(key.clone(), slot, refused, remember)
        {
            Stored::Added => self.stored(EntryEventKind::Added, key, value),
            Stored::Updated => self.stored(EntryEventKind::Updated, key, value),
            Stored::Dropped(old) => {
                self.stored(EntryEventKind::Removed, key, old);
                return false;
            }
            Stored::Refused => return false,
        }
        true
    }

    /// Publishes what a change did to an entry.
    fn stored(&self, kind: EntryEventKind, key: K, value: V) {
        self.events.publish(EntryEvent {
            kind,
            key,
            value: Some(value),
        });
    }

    /// Stores a value loaded from the system of record if the key has no value and `stale`
    /// does not say that a change arrived since the load began. `stale` runs under the entry's
    /// lock, so an invalidation either lands before it (and the value is not stored) or after
    /// the store (and removes it): a load never caches over a finished change, and never
    /// replaces a value that is already there (it may be newer than what this load read).
    pub(crate) fn put_loaded(&self, key: K, value: V, stale: impl FnOnce() -> bool) -> bool {
        let kind = self
            .entries
            .insert_if_vacant(key.clone(), value.clone(), stale);
        kind.inspect(|kind| self.stored(*kind, key, value))
            .is_some()
    }

    /// Removes `key` whatever it holds (an invalidation: the system of record decides).
    pub(crate) fn drop_key(&self, key: &K) {
        if let Some(value) = self.entries.remove(key) {
            self.stored(EntryEventKind::Removed, key.clone(), value);
        }
    }

    /// Removes `key` whatever it holds, and remembers the removal at `stamp`, or at the stamp of
    /// what it held if that is newer: the two arrived out of order, and no write older than
    /// either may be stored after them.
    pub(crate) fn remove(&self, key: &K, stamp: Stamp) {
        let remember = |held: Option<Stamp>| {
            self.removals
                .removed(key.clone(), held.map_or(stamp, |h| h.max(stamp)))
        };
        if let Some(value) = self.entries.remove_then(key, remember) {
            self.stored(EntryEventKind::Removed, key.clone(), value);
        }
    }

    /// Applies a change the coherence core decided. `changed` is called first, with the key
    /// (every key: `None`), so that loads in progress go stale before the entry is touched.
    /// In copy mode a stamped removal is remembered and a put is stored by stamp; otherwise
    /// the key is dropped: an invalidation always drops.
    ///
    /// # Errors
    /// The decoder's complaint when the key or value does not decode (a peer with other types,
    /// or damaged bytes). Nothing stale stays all the same: an undecodable value drops its key,
    /// and an undecodable key empties the cache, since this node cannot tell which key it was.
    pub(crate) fn apply(
        &self,
        mode: Mode,
        change: &Change,
        decode_key: impl Fn(&[u8]) -> Result<K, String>,
        decode_value: impl Fn(&[u8]) -> Result<V, String>,
        mut changed: impl FnMut(Option<&K>),
    ) -> Result<(), String> {
        let mut key_of = |bytes: &[u8]| {
            decode_key(bytes).inspect_err(|_| {
                changed(None);
                self.clear(LOADED);
            })
        };
        match change {
            Change::Remove { key, stamp } => {
                let key = key_of(key)?;
                changed(Some(&key));
                match stamp {
                    Some(stamp) if mode == Mode::Copy => self.remove(&key, *stamp),
                    _ => self.drop_key(&key),
                }
            }
            Change::Put { key, value, stamp } => {
                let key = key_of(key)?;
                changed(Some(&key));
                if mode == Mode::Copy {
                    match decode_value(value) {
                        Ok(value) => {
                            self.put(key, value, *stamp);
                        }
                        Err(e) => {
                            self.drop_key(&key);
                            return Err(e);
                        }
                    }
                } else {
                    self.drop_key(&key);
                }
            }
            Change::Clear { stamp } => {
                changed(None);
                self.clear(stamp.unwrap_or(LOADED));
            }
        }
        Ok(())
    }

    /// Removes every entry, and refuses writes older than `stamp` from now on.
    pub(crate) fn clear(&self, stamp: Stamp) {
        self.removals.cleared(stamp);
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caches::stamp::at as stamp;

    #[test]
    fn an_older_write_arriving_after_a_newer_removal_or_clear_is_refused() {
        let store: Store<u32, u32> = Store::new(&CacheSettings::replicate_via_copy());
        store.remove(&1, stamp(20));
        assert!(
            !store.put(1, 7, stamp(10)),
            "a write older than the removal came back"
        );
        assert!(store.put(1, 8, stamp(30)));
        store.clear(stamp(40));
        assert!(!store.put(2, 9, stamp(35)));
        assert!(store.put(2, 9, stamp(45)));
        // Values loaded from the system of record are never refused by a removal.
        store.remove(&3, stamp(50));
        assert!(store.put(3, 1, LOADED));
        assert_eq!(store.get(&3), Some(1));
    }

    #[test]
    fn writes_in_stamp_order_keep_the_last_and_out_of_order_ones_drop_the_key() {
        let store: Store<u32, u32> = Store::new(&CacheSettings::replicate_via_copy());
        assert!(store.put(1, 1, stamp(10)));
        assert!(store.put(1, 2, stamp(20)));
        assert_eq!(store.get(&1), Some(2));
        // Older than what is held: maybe older in real time, maybe a later write from a node
        // whose clock is behind by more than the stamp bound. Neither value is kept.
        assert!(!store.put(1, 1, stamp(15)));
        assert_eq!(store.get(&1), None);
        // The dropped value's stamp is remembered: nothing older than it is stored from now on.
        assert!(!store.put(1, 3, stamp(18)));
        assert!(store.put(1, 4, stamp(25)));
        // A removal older than the held value drops it all the same, and is remembered at the
        // held value's stamp.
        store.remove(&1, stamp(22));
        assert_eq!(store.get(&1), None);
        assert!(!store.put(1, 5, stamp(24)));
        assert!(store.put(1, 6, stamp(26)));
    }

    #[test]
    fn a_write_refused_by_a_removal_drops_a_loaded_value() {
        // A value loaded after a clear from a fast clock: a later write from a slow clock is
        // below the floor, and must not leave the loaded (older) value in place.
        let store: Store<u32, u32> = Store::new(&CacheSettings::replicate_via_copy());
        store.clear(stamp(100));
        assert!(store.put_loaded(1, 1, || false));
        assert!(!store.put(1, 2, stamp(50)));
        assert_eq!(store.get(&1), None);
    }

    fn le_key(bytes: &[u8]) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            bytes.try_into().map_err(|_| "not 4 bytes")?,
        ))
    }

    fn le_value(bytes: &[u8]) -> Result<u32, String> {
        le_key(bytes)
    }

    #[test]
    fn a_change_that_does_not_decode_leaves_nothing_stale() {
        let store: Store<u32, u32> = Store::new(&CacheSettings::replicate_via_copy());
        let apply = |change: &Change| {
            let mut changed = Vec::new();
            let result = store.apply(Mode::Copy, change, le_key, le_value, |k| {
                changed.push(k.copied())
            });
            (result, changed)
        };
        assert!(store.put(1, 10, stamp(10)));
        assert!(store.put(2, 20, stamp(10)));
        // A value this node cannot read: the key goes rather than keep the older value.
        let put = Change::Put {
            key: 1u32.to_le_bytes().to_vec(),
            value: b"junk".repeat(3),
            stamp: stamp(20),
        };
        let (result, changed) = apply(&put);
        assert!(result.is_err());
        assert_eq!(changed, [Some(1)]);
        assert_eq!(store.get(&1), None);
        assert_eq!(store.get(&2), Some(20));
        // A key this node cannot read: it could be any key, so every key goes.
        let remove = Change::Remove {
            key: b"junk".repeat(2),
            stamp: Some(stamp(30)),
        };
        let (result, changed) = apply(&remove);
        assert!(result.is_err());
        assert_eq!(changed, [None]);
        assert_eq!(store.get(&2), None);
        // What decodes applies: a put by stamp, and loads are told first.
        let put = Change::Put {
            key: 3u32.to_le_bytes().to_vec(),
            value: 33u32.to_le_bytes().to_vec(),
            stamp: stamp(40),
        };
        assert_eq!(apply(&put), (Ok(()), vec![Some(3)]));
        assert_eq!(store.get(&3), Some(33));
    }
}
