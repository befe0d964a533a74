//! One load per key per node at a time, and no stale load cached over a newer change.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::error::CacheError;

/// A load in progress: callers of the same key share its result.
pub(crate) struct Inflight<V> {
    result: OnceCell<Result<V, CacheError>>,
    /// A change to the key arrived while loading: the loaded value may be older than it.
    stale: AtomicBool,
}

impl<V> Inflight<V> {
    pub(crate) fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Acquire)
    }
}

/// The loads in progress on this node, by key. Holds only keys being loaded right now.
pub(crate) struct Loads<K, V> {
    inflight: Mutex<HashMap<K, Arc<Inflight<V>>>>,
}

impl<K: Hash + Eq + Clone, V: Clone> Loads<K, V> {
    pub(crate) fn new() -> Self {
        Loads {
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `load` for `key` unless a load of it is already running, in which case its result
    /// is shared. `load` gets the in-flight record, to check staleness under the entry's lock
    /// when it stores (see `Store::put_loaded`).
    pub(crate) async fn run<F, Fut>(&self, key: &K, load: F) -> Result<V, CacheError>
    where
        F: FnOnce(Arc<Inflight<V>>) -> Fut,
        Fut: Future<Output = Result<V, CacheError>>,
    {
        let inflight = self
            .inflight
            .lock()
            .expect("loads lock")
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Inflight {
                    result: OnceCell::new(),
                    stale: AtomicBool::new(false),
                })
            })
            .clone();
        let me = inflight.clone();
        let result = inflight.result.get_or_init(|| load(me)).await.clone();
        // The first caller to finish clears the slot; later ones find it gone or replaced.
        let mut map = self.inflight.lock().expect("loads lock");
        if map.get(key).is_some_and(|i| Arc::ptr_eq(i, &inflight)) {
            map.remove(key);
        }
        result
    }

    /// A change to `key` arrived: a load of it in progress must not be cached, and callers
    /// from now on must not share it (they started after the change), so it leaves the table.
    pub(crate) fn changed(&self, key: &K) {
        if let Some(i) = self.inflight.lock().expect("loads lock").remove(key) {
            i.stale.store(true, Ordering::Release);
        }
    }

    /// Every key changed.
    pub(crate) fn changed_all(&self) {
        for (_, i) in self.inflight.lock().expect("loads lock").drain() {
            i.stale.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn concurrent_callers_share_one_load() {
        let loads: Arc<Loads<u32, u32>> = Arc::new(Loads::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (loads, runs) = (loads.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                loads
                    .run(&7, |_| async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        Ok(49)
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(49));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(loads.inflight.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_caller_after_a_change_does_not_join_the_stale_load() {
        let loads: Arc<Loads<u32, u32>> = Arc::new(Loads::new());
        let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
        let l1 = loads.clone();
        let first = tokio::spawn(async move {
            l1.run(&1, |_| async move {
                let _ = gate_rx.await;
                Ok(10)
            })
            .await
        });
        tokio::task::yield_now().await;
        while loads.inflight.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        loads.changed(&1);
        let second = loads.run(&1, |_| async { Ok(11) }).await;
        assert_eq!(second, Ok(11), "the later caller loaded afresh");
        gate_tx.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(10));
    }

    #[tokio::test]
    async fn a_change_during_a_load_marks_it_stale() {
        let loads: Arc<Loads<u32, u32>> = Arc::new(Loads::new());
        let l2 = loads.clone();
        let stale = loads
            .run(&1, |me| async move {
                l2.changed(&1);
                Ok::<_, CacheError>(if me.is_stale() { 1 } else { 0 })
            })
            .await;
        assert_eq!(stale, Ok(1));
    }
}
