//! Remembered removals: a write older than a removal of its key, or than the floor, is refused.
//!
//! Changes from different nodes are not ordered, so a write made before a removal can arrive
//! after it; the removal's stamp is kept to refuse it. The memory is bounded: past the capacity
//! the older half of the removals is forgotten and the newest stamp among them becomes a floor
//! below which every write is refused. Refusing a write costs a later load at most, while
//! forgetting a removal outright could let a stale value back in.

use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use super::msg::Stamp;
use super::stamp::LOADED;

/// Removals remembered at most before the older half is folded into the floor.
const CAPACITY: usize = 100_000;

pub(crate) struct Removals<K> {
    by_key: DashMap<K, Stamp>,
    /// Keys in `by_key`, kept apart because counting a `DashMap` locks every shard.
    len: AtomicUsize,
    /// Writes at or below this stamp are refused: the latest clear, or the newest forgotten
    /// removal.
    floor: Mutex<Stamp>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone> Removals<K> {
    pub(crate) fn new() -> Self {
        Self::with_capacity(CAPACITY)
    }

    fn with_capacity(capacity: usize) -> Self {
        Removals {
            by_key: DashMap::new(),
            len: AtomicUsize::new(0),
            floor: Mutex::new(LOADED),
            capacity,
        }
    }

    /// Whether a write of `key` stamped `stamp` is older than what is known to be removed.
    pub(crate) fn refuses(&self, key: &K, stamp: Stamp) -> bool {
        stamp <= *self.floor.lock().expect("floor lock")
            || self.by_key.get(key).is_some_and(|t| *t > stamp)
    }

    /// `key` was removed at `stamp`.
    pub(crate) fn removed(&self, key: K, stamp: Stamp) {
        match self.by_key.entry(key) {
            Entry::Occupied(mut e) => {
                if *e.get() < stamp {
                    e.insert(stamp);
                }
            }
            Entry::Vacant(e) => {
                e.insert(stamp);
                if self.len.fetch_add(1, Ordering::Relaxed) + 1 > self.capacity {
                    self.forget_older_half();
                }
            }
        }
    }

    /// Everything was removed at `stamp`.
    pub(crate) fn cleared(&self, stamp: Stamp) {
        self.raise_floor(stamp);
    }

    fn raise_floor(&self, stamp: Stamp) {
        let mut floor = self.floor.lock().expect("floor lock");
        *floor = (*floor).max(stamp);
    }

    fn forget_older_half(&self) {
        let mut stamps: Vec<Stamp> = self.by_key.iter().map(|e| *e.value()).collect();
        if stamps.len() <= self.capacity {
            return; // another caller got here first
        }
        let middle = stamps.len() / 2;
        let (_, &mut cutoff, _) = stamps.select_nth_unstable(middle);
        // The floor first: in between, a forgotten removal is already covered by it.
        self.raise_floor(cutoff);
        self.by_key.retain(|_, t| *t > cutoff);
        self.len.store(self.by_key.len(), Ordering::Relaxed);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use crate::caches::stamp::at as stamp;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_removal_refuses_older_writes_of_its_key_only() {
        let r: Removals<u32> = Removals::new();
        r.removed(1, stamp(20));
        assert!(r.refuses(&1, stamp(10)));
        assert!(!r.refuses(&1, stamp(30)));
        assert!(!r.refuses(&2, stamp(10)));
        // An older removal does not lower what is remembered.
        r.removed(1, stamp(5));
        assert!(r.refuses(&1, stamp(10)));
    }

    #[test]
    fn a_clear_refuses_every_older_write() {
        let r: Removals<u32> = Removals::new();
        r.cleared(stamp(40));
        assert!(r.refuses(&9, stamp(40)));
        assert!(!r.refuses(&9, stamp(41)));
    }

    proptest! {
        /// However many keys are removed, memory stays bounded and every write a remembered or
        /// forgotten removal should refuse is still refused.
        #[test]
        fn forgetting_never_lets_an_older_write_in(
            removals in proptest::collection::vec((0u32..200, 1u64..1000), 1..400),
        ) {
            let r: Removals<u32> = Removals::with_capacity(16);
            let mut newest = std::collections::HashMap::new();
            for (key, micros) in &removals {
                r.removed(*key, stamp(*micros));
                let n = newest.entry(*key).or_insert(0);
                *n = (*n).max(*micros);
                prop_assert!(r.len() <= 16);
            }
            for (key, micros) in newest {
                prop_assert!(r.refuses(&key, stamp(micros - 1)));
            }
        }
    }
}
