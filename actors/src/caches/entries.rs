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

/// What [`Entries::put_or_drop`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stored<V> {
    /// The key had no value and now has this one.
    Added,
    /// The key's older value was replaced.
    Updated,
    /// The write could not be stored and this value, which the key held, was dropped.
    Dropped(V),
    /// The write could not be stored and the key held nothing.
    Refused,
}

/// Whether a write stamped `stamp` may replace what the key holds (stamped `held`); calls
/// `remember` with a newer held stamp that the write will drop.
fn may_store(
    held: Option<Stamp>,
    stamp: Stamp,
    refused: impl FnOnce() -> bool,
    remember: impl FnOnce(Stamp),
) -> bool {
    match held {
        Some(held) if held > stamp => {
            remember(held);
            false
        }
        _ => !refused(),
    }
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

    /// Stores `slot` unless a newer write is held or `refused` says no. A write that cannot be
    /// stored drops what the key holds instead: it arrived out of order, so the held value may
    /// be older in real time than this write (stamps follow real time only while clocks agree
    /// within the bound; see `stamp.rs`), and a node that holds nothing serves nothing stale.
    /// `remember` gets the stamp of a newer value dropped this way, under the entry's lock,
    /// so that no write older than it is stored after it. `refused` runs under that lock too,
    /// so a removal that lands between the caller's checks and the store cannot be overtaken
    /// by the write it should refuse.
    pub(crate) fn put_or_drop(
        &self,
        key: K,
        slot: Slot<V>,
        refused: impl FnOnce() -> bool,
        remember: impl FnOnce(Stamp),
    ) -> Stored<V> {
        match self {
            Entries::Bounded(c) => {
                let mut outcome = Stored::Refused;
                c.entry(key).and_compute_with(|existing| {
                    let held = existing.map(|e| e.into_value());
                    if may_store(
                        held.as_ref().map(|h| h.stamp),
                        slot.stamp,
                        refused,
                        remember,
                    ) {
                        outcome = match held {
                            Some(_) => Stored::Updated,
                            None => Stored::Added,
                        };
                        Compute::Put(slot)
                    } else if let Some(held) = held {
                        outcome = Stored::Dropped(held.value);
                        Compute::Remove
                    } else {
                        Compute::Nop
                    }
                });
                outcome
            }
            Entries::Unbounded(m) => match m.entry(key) {
                Entry::Occupied(mut e) => {
                    if may_store(Some(e.get().stamp), slot.stamp, refused, remember) {
                        e.insert(slot);
                        Stored::Updated
                    } else {
                        Stored::Dropped(e.remove().value)
                    }
                }
                Entry::Vacant(e) => {
                    if may_store(None, slot.stamp, refused, remember) {
                        e.insert(slot);
                        Stored::Added
                    } else {
                        Stored::Refused
                    }
                }
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

    /// Removes `key` whatever it holds, and calls `remember` with the stamp of what it held
    /// (`None`: nothing) under the entry's lock; returns the removed value.
    pub(crate) fn remove_then(&self, key: &K, remember: impl FnOnce(Option<Stamp>)) -> Option<V> {
        match self {
            Entries::Bounded(c) => {
                let mut removed = None;
                c.entry_by_ref(key).and_compute_with(|existing| {
                    let slot = existing.map(|e| e.into_value());
                    remember(slot.as_ref().map(|s| s.stamp));
                    removed = slot.map(|s| s.value);
                    if removed.is_some() {
                        Compute::Remove
                    } else {
                        Compute::Nop
                    }
                });
                removed
            }
            Entries::Unbounded(m) => match m.entry(key.clone()) {
                Entry::Occupied(e) => {
                    remember(Some(e.get().stamp));
                    Some(e.remove().value)
                }
                Entry::Vacant(_) => {
                    remember(None);
                    None
                }
            },
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
    fn a_write_that_cannot_be_stored_drops_what_the_key_holds() {
        for entries in both() {
            let slot = |value, at| Slot {
                value,
                stamp: stamp(at),
            };
            let never = |_| panic!("nothing newer was dropped");
            assert_eq!(
                entries.put_or_drop(1, slot(1, 10), || true, never),
                Stored::Refused
            );
            assert_eq!(entries.get(&1), None);
            assert_eq!(
                entries.put_or_drop(1, slot(2, 20), || false, never),
                Stored::Added
            );
            assert_eq!(
                entries.put_or_drop(1, slot(3, 30), || true, never),
                Stored::Dropped(2)
            );
            assert_eq!(entries.get(&1), None);
            assert_eq!(
                entries.put_or_drop(1, slot(4, 40), || false, never),
                Stored::Added
            );
            assert_eq!(
                entries.put_or_drop(1, slot(5, 50), || false, never),
                Stored::Updated
            );
            // An older write is not stored, and the newer value goes: the two arrived out of
            // order, and which one is newer in real time the stamps may not know.
            let mut remembered = None;
            assert_eq!(
                entries.put_or_drop(1, slot(6, 15), || false, |s| remembered = Some(s)),
                Stored::Dropped(5)
            );
            assert_eq!(remembered, Some(stamp(50)));
            assert_eq!(entries.get(&1), None);
            // A removal takes what the key holds, whatever its stamp, and says what that was.
            entries.put_or_drop(2, slot(7, 70), || false, never);
            let mut held = Some(stamp(0));
            assert_eq!(entries.remove_then(&2, |s| held = s), Some(7));
            assert_eq!(held, Some(stamp(70)));
            assert_eq!(entries.remove_then(&2, |s| held = s), None);
            assert_eq!(held, None);
        }
    }
}
