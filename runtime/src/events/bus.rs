//! The bus itself.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

/// The node's event bus, one channel family per event type.
///
/// # Examples
/// ```
/// # tokio_test();
/// # fn tokio_test() { tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use colony_runtime::events::Events;
/// #[derive(Clone, Debug, PartialEq)]
/// struct Deployed(u32);
/// let events = Events::default();
/// let mut sub = events.subscribe::<Deployed>(16);
/// events.publish(Deployed(7));
/// assert_eq!(sub.recv().await, Some(Deployed(7)));
/// # }) }
/// ```
#[derive(Clone, Default)]
pub struct Events {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    topics: Mutex<HashMap<TypeId, Box<dyn Any + Send>>>,
    published: AtomicU64,
    dropped: AtomicU64,
}

struct Topic<E> {
    listeners: Vec<Listener<E>>,
}

struct Listener<E> {
    tx: mpsc::Sender<E>,
    dropped: Arc<AtomicU64>,
}

/// One listener's queue. Dropping it unsubscribes.
pub struct Subscription<E> {
    rx: mpsc::Receiver<E>,
    dropped: Arc<AtomicU64>,
}

impl<E> Subscription<E> {
    /// The next event, or `None` once the bus is gone.
    ///
    /// # Cancel safety
    /// Cancel-safe: an event is either returned or stays queued.
    pub async fn recv(&mut self) -> Option<E> {
        self.rx.recv().await
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<E> {
        self.rx.try_recv().ok()
    }

    /// How many events this listener missed because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Events {
    /// Adds a listener for events of type `E` with a queue of `capacity` (at least 1).
    pub fn subscribe<E: Clone + Send + 'static>(&self, capacity: usize) -> Subscription<E> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut topics = self.inner.topics.lock().expect("event bus lock poisoned");
        let topic = topics.entry(TypeId::of::<E>()).or_insert_with(|| {
            Box::new(Topic::<E> {
                listeners: Vec::new(),
            })
        });
        let topic = topic
            .downcast_mut::<Topic<E>>()
            .expect("topic stored under its own TypeId");
        topic.listeners.push(Listener {
            tx,
            dropped: dropped.clone(),
        });
        Subscription { rx, dropped }
    }

    /// Delivers `event` to every listener of its type that has room; returns how many got it.
    pub fn publish<E: Clone + Send + 'static>(&self, event: E) -> usize {
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        let dropped = &self.inner.dropped;
        self.with_topic(|topic: &mut Topic<E>| {
            let mut delivered = 0;
            topic
                .listeners
                .retain(|l| match l.tx.try_send(event.clone()) {
                    Ok(()) => {
                        delivered += 1;
                        true
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        l.dropped.fetch_add(1, Ordering::Relaxed);
                        dropped.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                });
            delivered
        })
        .unwrap_or(0)
    }

    /// Listeners of events of type `E` now (those whose subscription was dropped are gone).
    pub fn listeners<E: Clone + Send + 'static>(&self) -> usize {
        self.with_topic(|topic: &mut Topic<E>| {
            topic.listeners.retain(|l| !l.tx.is_closed());
            topic.listeners.len()
        })
        .unwrap_or(0)
    }

    /// Runs `f` on the topic of `E`, if anyone ever subscribed to it.
    fn with_topic<E: 'static, R>(&self, f: impl FnOnce(&mut Topic<E>) -> R) -> Option<R> {
        let mut topics = self.inner.topics.lock().expect("event bus lock poisoned");
        topics
            .get_mut(&TypeId::of::<E>())
            .and_then(|t| t.downcast_mut::<Topic<E>>())
            .map(f)
    }

    /// Events published since the bus was made, of every type.
    pub fn published(&self) -> u64 {
        self.inner.published.load(Ordering::Relaxed)
    }

    /// Events dropped for full listener queues, of every type.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("published", &self.published())
            .field("dropped", &self.dropped())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let bus = Events::default();
        let mut slow = bus.subscribe::<u32>(2);
        let mut fast = bus.subscribe::<u32>(100);
        for i in 0..10u32 {
            bus.publish(i);
        }
        assert_eq!(slow.dropped(), 8);
        assert_eq!(bus.dropped(), 8);
        assert_eq!(slow.try_recv(), Some(0));
        assert_eq!(slow.try_recv(), Some(1));
        assert_eq!(slow.try_recv(), None);
        assert_eq!((0..10).filter_map(|_| fast.try_recv()).count(), 10);
    }

    #[test]
    fn types_are_separate_and_closed_listeners_are_removed() {
        let bus = Events::default();
        let strings = bus.subscribe::<String>(4);
        let mut numbers = bus.subscribe::<u64>(4);
        assert_eq!(bus.publish(5u64), 1);
        drop(strings);
        assert_eq!(bus.publish("x".to_string()), 0);
        assert_eq!(numbers.try_recv(), Some(5));
    }
}
