//! Where one cache's entries live on a node: moka when the cache has a size bound or expiry,
//! else a plain concurrent map, whose reads cost a fraction of moka's (no access log, no clock).

use std::hash::Hash;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use moka::ops::compute::Op as Compute;

use super::msg::Stamp;
use super::store::EntryEventKind;

/// A value and the stamp of the write that stored it.
#[derive(Debug, Clone)]
pub(crate) struct Slot<V> {
    pub value: V,
    pub stamp: Stamp,
}

pub(crate) enum Entries<K, V> {
    /// Bounded or expiring: moka enforces the bound and the expiry.
    Bounded(moka::sync::Cache<K, Slot<V>>),
    /// Neither: nothing ever leaves but by a write.
    Unbounded(DashMap<K, Slot<V>>),
}

impl<K, V> Entries<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        match self {
            Entries::Bounded(c) => c.get(key).map(|s| s.value),
            Entries::Unbounded(m) => m.get(key).map(|s| s.value.clone()),
        }
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        match self {
            Entries::Bounded(c) => c.contains_key(key),
            Entries::Unbounded(m) => m.contains_key(key),
        }
    }

    pub(crate) fn keys(&self) -> Vec<K> {
        match self {
            Entries::Bounded(c) => c.iter().map(|(k, _)| (*k).clone()).collect(),
            Entries::Unbounded(m) => m.iter().map(|e| e.key().clone()).collect(),
        }
    }

    pub(crate) fn len(&self) -> u64 {
        match self {
            Entries::Bounded(c) => {
                c.run_pending_tasks();
                c.entry_count()
            }
            Entries::Unbounded(m) => m.len() as u64,
        }
    }

    /// Stores `slot` unless a newer write is there or `refused` says no; says whether it added
    /// or updated. `refused` runs under the entry's lock, so a removal that lands between the
    /// caller's checks and the store cannot be overtaken by the write it should refuse.
    pub(crate) fn put_if_newer(
        &self,
        key: K,
        slot: Slot<V>,
        refused: impl FnOnce() -> bool,
    ) -> Option<EntryEventKind> {
        match self {
            Entries::Bounded(c) => {
                let mut kind = None;
                c.entry(key).and_compute_with(|existing| match existing {
                    Some(e) if e.value().stamp > slot.stamp => Compute::Nop,
                    _ if refused() => Compute::Nop,
                    existing => {
                        kind = Some(if existing.is_some() {
                            EntryEventKind::Updated
                        } else {
                            EntryEventKind::Added
                        });
                        Compute::Put(slot)
                    }
                });
                kind
            }
            Entries::Unbounded(m) => match m.entry(key) {
                Entry::Occupied(mut e) => (e.get().stamp <= slot.stamp && !refused()).then(|| {
                    e.insert(slot);
                    EntryEventKind::Updated
                }),
                Entry::Vacant(e) => (!refused()).then(|| {
                    e.insert(slot);
                    EntryEventKind::Added
                }),
            },
        }
    }

    /// Stores `value` as loaded (`LOADED`) if `key` has no value and `refused` says no
    /// otherwise; `refused` runs under the entry's lock.
    pub(crate) fn insert_if_vacant(
        &self,
        key: K,
        value: V,
        refused: impl FnOnce() -> bool,
    ) -> Option<EntryEventKind> {
        let slot = Slot {
            value,
            stamp: super::stamp::LOADED,
        };
        let mut added = None;
        match self {
            Entries::Bounded(c) => {
                c.entry(key).and_compute_with(|existing| match existing {
                    None if !refused() => {
                        added = Some(EntryEventKind::Added);
                        Compute::Put(slot)
                    }
                    _ => Compute::Nop,
                });
            }
            Entries::Unbounded(m) => {
                if let Entry::Vacant(e) = m.entry(key)
                    && !refused()
                {
                    e.insert(slot);
                    added = Some(EntryEventKind::Added);
                }
            }
        }
        added
    }

    /// Removes `key` unless it holds a write newer than `stamp`; returns the removed value.
    pub(crate) fn remove_if_not_newer(&self, key: &K, stamp: Stamp) -> Option<V> {
        match self {
            Entries::Bounded(c) => {
                let mut removed = None;
                c.entry_by_ref(key)
                    .and_compute_with(|existing| match existing {
                        Some(e) if e.value().stamp <= stamp => {
                            removed = Some(e.into_value().value);
                            Compute::Remove
                        }
                        _ => Compute::Nop,
                    });
                removed
            }
            Entries::Unbounded(m) => m
                .remove_if(key, |_, s| s.stamp <= stamp)
                .map(|(_, s)| s.value),
        }
    }

    /// Removes `key` whatever it holds; returns the removed value.
    pub(crate) fn remove(&self, key: &K) -> Option<V> {
        match self {
            Entries::Bounded(c) => c.remove(key).map(|s| s.value),
            Entries::Unbounded(m) => m.remove(key).map(|(_, s)| s.value),
        }
    }

    pub(crate) fn clear(&self) {
        match self {
            Entries::Bounded(c) => c.invalidate_all(),
            Entries::Unbounded(m) => m.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caches::stamp::at as stamp;

    fn both() -> [Entries<u32, u32>; 2] {
        [
            Entries::Bounded(moka::sync::Cache::new(100)),
            Entries::Unbounded(DashMap::new()),
        ]
    }

    #[test]
    fn a_refused_write_is_not_stored_whether_the_key_is_new_or_held() {
        for entries in both() {
            let slot = |value, at| Slot {
                value,
                stamp: stamp(at),
            };
            assert_eq!(entries.put_if_newer(1, slot(1, 10), || true), None);
            assert_eq!(entries.get(&1), None);
            assert_eq!(
                entries.put_if_newer(1, slot(2, 20), || false),
                Some(EntryEventKind::Added)
            );
            assert_eq!(entries.put_if_newer(1, slot(3, 30), || true), None);
            assert_eq!(entries.get(&1), Some(2));
            // An older write is refused by the stamp alone.
            assert_eq!(entries.put_if_newer(1, slot(4, 15), || false), None);
            assert_eq!(entries.get(&1), Some(2));
        }
    }
}
