//! A single cached value.

use super::cache::{Cache, CacheValue};
use super::error::CacheError;

/// One value kept cluster-coherent like a cache entry: [`CachedReference::get`] fills it from its
/// supplier when empty, [`CachedReference::reset`] empties it here and (replicated) everywhere.
pub struct CachedReference<V> {
    cache: Cache<(), V>,
}

impl<V> Clone for CachedReference<V> {
    fn clone(&self) -> Self {
        CachedReference {
            cache: self.cache.clone(),
        }
    }
}

impl<V: CacheValue> CachedReference<V> {
    pub(crate) fn new(cache: Cache<(), V>) -> Self {
        CachedReference { cache }
    }

    /// The value, supplied if absent.
    ///
    /// # Errors
    /// [`CacheError::Load`] when the supplier fails.
    pub async fn get(&self) -> Result<V, CacheError> {
        Ok(self
            .cache
            .get(&())
            .await?
            .expect("a cached reference always has a supplier"))
    }

    /// Empties the reference; the next `get` supplies it again.
    ///
    /// # Errors
    /// Never for `()` keys in practice; see [`Cache::remove`].
    pub async fn reset(&self) -> Result<(), CacheError> {
        self.cache.remove(&()).await
    }
}
