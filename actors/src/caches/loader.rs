//! Loaders: how a cache fills a missing key.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

type LoadFn<K, V> =
    dyn Fn(K) -> Pin<Box<dyn Future<Output = Result<V, String>> + Send>> + Send + Sync;

/// Loads the value of a missing key, typically from the system of record. It must not call
/// another replicated cache (a load may run while that cache's changes are being applied).
///
/// # Examples
/// ```
/// use colony_actors::caches::Loader;
/// let loader = Loader::new(|id: u64| async move { Ok::<_, std::io::Error>(format!("user-{id}")) });
/// # let _ = loader;
/// ```
pub struct Loader<K, V>(Arc<LoadFn<K, V>>);

impl<K, V> Clone for Loader<K, V> {
    fn clone(&self) -> Self {
        Loader(self.0.clone())
    }
}

impl<K: Send + 'static, V: Send + 'static> Loader<K, V> {
    /// A loader from an async function; its error is reported as text.
    pub fn new<F, Fut, E>(load: F) -> Self
    where
        F: Fn(K) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        Loader(Arc::new(move |k| {
            let fut = load(k);
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        }))
    }

    pub(crate) async fn load(&self, key: K) -> Result<V, String> {
        (self.0)(key).await
    }
}
