//! What a running component holds: released, in reverse order, when the component stops.
//!
//! A component's caches, runners, executors, listeners and tasks are the application's; the
//! node cannot know which of them a component made. A [`Scope`] lets the component say so once,
//! when it makes them, and the node releases them after `on_stop`, whether the component was
//! disabled, the node stopped, or `on_start` failed half-way. Stopping and starting a component
//! then leaves nothing behind, even if its `on_stop` forgets something.

use std::any::Any;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// One thing a scope holds.
enum Held {
    /// Dropped at release (a subscription, a handle whose drop unregisters).
    Value(Box<dyn Any + Send>),
    /// Aborted at release.
    Task(tokio::task::AbortHandle),
    /// Called at release (an executor's `shutdown`, a runner's unregistration).
    Release(Box<dyn FnOnce() + Send>),
}

/// The resources of one run of a component (from `on_start` to after `on_stop`). Cloning gives
/// another handle to the same scope. Once released, whatever is added is released at once.
///
/// Get it with [`crate::Node::component_scope`] in `on_start`.
///
/// # Examples
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use colony_runtime::lifecycle::Scope;
/// use colony_runtime::events::Events;
///
/// let events = Events::default();
/// let scope = Scope::new("mail");
/// scope.keep(events.subscribe::<u32>(8));
/// scope.spawn(async { /* the component's loop */ });
/// scope.on_release(|| tracing::info!("mail released"));
/// assert_eq!((scope.len(), events.listeners::<u32>()), (3, 1));
/// scope.release();
/// assert!(scope.is_released());
/// assert_eq!(events.listeners::<u32>(), 0);
/// # });
/// ```
#[derive(Clone)]
pub struct Scope {
    inner: Arc<Inner>,
}

struct Inner {
    component: String,
    /// `None` once released.
    held: Mutex<Option<Vec<Held>>>,
}

impl Scope {
    /// An empty scope for `component`.
    pub fn new(component: &str) -> Self {
        Scope {
            inner: Arc::new(Inner {
                component: component.to_owned(),
                held: Mutex::new(Some(Vec::new())),
            }),
        }
    }

    /// The component it belongs to.
    pub fn component(&self) -> &str {
        &self.inner.component
    }

    /// Holds `value` until the release, then drops it.
    pub fn keep<T: Send + 'static>(&self, value: T) {
        self.hold(Held::Value(Box::new(value)));
    }

    /// Runs `task` on the current tokio runtime until it ends or the release aborts it.
    ///
    /// # Panics
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(task);
        self.hold(Held::Task(handle.abort_handle()));
    }

    /// Calls `release` at the release.
    pub fn on_release(&self, release: impl FnOnce() + Send + 'static) {
        self.hold(Held::Release(Box::new(release)));
    }

    /// How many things it holds.
    pub fn len(&self) -> usize {
        self.lock().as_ref().map_or(0, Vec::len)
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it was released.
    pub fn is_released(&self) -> bool {
        self.lock().is_none()
    }

    /// Releases what it holds, the latest first. Later releases do nothing.
    pub fn release(&self) {
        let held = self.lock().take().unwrap_or_default();
        if !held.is_empty() {
            tracing::debug!(
                component = %self.inner.component,
                held = held.len(),
                "releasing what the component held"
            );
        }
        // Outside the lock: a release may touch the scope again.
        held.into_iter().rev().for_each(release);
    }

    fn hold(&self, item: Held) {
        let mut held = self.lock();
        match held.as_mut() {
            Some(items) => items.push(item),
            None => {
                drop(held);
                release(item);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<Held>>> {
        self.inner.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn release(item: Held) {
    match item {
        Held::Value(value) => drop(value),
        Held::Task(task) => task.abort(),
        Held::Release(f) => f(),
    }
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("component", &self.inner.component)
            .field("held", &self.len())
            .field("released", &self.is_released())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn releases_the_latest_first_once_and_at_once_after() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let scope = Scope::new("c");
        for i in 0..3 {
            let order = order.clone();
            scope.on_release(move || order.lock().unwrap().push(i));
        }
        scope.release();
        scope.release();
        assert_eq!(*order.lock().unwrap(), [2, 1, 0]);
        let late = Arc::new(AtomicUsize::new(0));
        let l = late.clone();
        scope.on_release(move || {
            l.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(late.load(Ordering::Relaxed), 1);
        assert!(scope.is_empty());
    }

    #[tokio::test]
    async fn a_task_is_aborted_and_a_value_dropped() {
        let alive = Arc::new(());
        let scope = Scope::new("c");
        let in_task = alive.clone();
        scope.spawn(async move {
            let _alive = in_task;
            std::future::pending::<()>().await;
        });
        scope.keep(alive.clone());
        assert_eq!(Arc::strong_count(&alive), 3);
        scope.release();
        // The aborted task drops its future when the runtime next polls it.
        while Arc::strong_count(&alive) > 1 {
            tokio::task::yield_now().await;
        }
    }
}
