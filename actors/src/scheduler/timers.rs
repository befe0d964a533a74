//! [`Timers`]: one timer per job (or per run), in time order, so that the scheduler core looks
//! at a job when its time comes instead of looking at every job on every tick.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

/// At most one timer per key (a job id, a run's token), each with a value; the earliest time
/// first.
#[derive(Debug, Clone)]
pub(super) struct Timers<K, T, V> {
    by_id: BTreeMap<K, (T, V)>,
    by_time: BTreeSet<(T, K)>,
}

impl<K: Ord + Clone, T: Ord + Copy, V> Timers<K, T, V> {
    /// No timers.
    pub(super) fn new() -> Self {
        Timers {
            by_id: BTreeMap::new(),
            by_time: BTreeSet::new(),
        }
    }

    /// Key `id`'s timer: its time and value.
    pub(super) fn get<Q>(&self, id: &Q) -> Option<(T, &V)>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.by_id.get(id).map(|(t, v)| (*t, v))
    }

    /// Sets key `id`'s timer to `at`, with `value`, replacing any it had.
    pub(super) fn set<Q>(&mut self, id: &Q, at: T, value: V)
    where
        K: Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        match self.by_id.get_mut(id) {
            Some(entry) => {
                if entry.0 != at {
                    let old = (entry.0, id.to_owned());
                    self.by_time.remove(&old);
                    self.by_time.insert((at, old.1));
                }
                *entry = (at, value);
            }
            None => {
                self.by_id.insert(id.to_owned(), (at, value));
                self.by_time.insert((at, id.to_owned()));
            }
        }
    }

    /// Removes key `id`'s timer, if it had one.
    pub(super) fn clear<Q>(&mut self, id: &Q)
    where
        K: Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        if let Some((at, _)) = self.by_id.remove(id) {
            self.by_time.remove(&(at, id.to_owned()));
        }
    }

    /// The earliest time set.
    pub(super) fn first(&self) -> Option<T> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// Adds to `ids` the keys whose time is `now` or earlier (their timers stay set).
    pub(super) fn expired(&self, now: T, ids: &mut Vec<K>) {
        ids.extend(
            self.by_time
                .iter()
                .take_while(|(t, _)| *t <= now)
                .map(|(_, id)| id.clone()),
        );
    }

    /// Keeps the timers of the keys for which `keep` says yes.
    pub(super) fn retain<Q>(&mut self, keep: impl Fn(&Q) -> bool)
    where
        K: Borrow<Q>,
        Q: ?Sized,
    {
        self.by_id.retain(|id, _| keep(id.borrow()));
        self.by_time.retain(|(_, id)| keep(id.borrow()));
    }

    /// How many timers are set.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_set_again_moves_and_expired_ones_are_named_in_time_order() {
        let mut t = Timers::<String, _, _>::new();
        t.set("b", 20, 'b');
        t.set("a", 10, 'a');
        t.set("c", 5, 'c');
        t.set("a", 30, 'A');
        t.clear("c");
        t.clear("missing");
        t.set("d", 1, 'd');
        t.retain(|id: &str| id != "d");
        assert_eq!(t.len(), 2);
        assert_eq!(t.get("a"), Some((30, &'A')));
        assert_eq!(t.first(), Some(20));
        let mut due = Vec::new();
        t.expired(19, &mut due);
        assert!(due.is_empty());
        t.expired(30, &mut due);
        assert_eq!(due, ["b", "a"]);
        assert_eq!(t.len(), 2, "expired timers stay until cleared or set again");
        t.clear("b");
        t.clear("a");
        assert_eq!(t.first(), None);
    }
}
