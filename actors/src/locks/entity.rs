//! Entity locks: one lock per entity id within a namespace.

use std::marker::PhantomData;

use super::error::{LockError, NameError};
use super::guard::LockGuard;
use super::name;
use super::service::Locks;

/// Locks for the entities of one namespace, such as repositories or pull requests. Work on
/// different keys runs concurrently; work on one key runs one at a time in the whole cluster.
///
/// # Examples
/// ```no_run
/// # async fn run(node: colony_runtime::Node) -> Result<(), Box<dyn std::error::Error>> {
/// use colony_actors::locks::LocksExt;
/// let repositories = node.locks().entity_lock::<u64>("com.example.repository")?;
/// let size = repositories
///     .with_lock(&42, async |guard| {
///         // only one node works on repository 42 now; guard.token() fences its writes
///         guard.token()
///     })
///     .await?;
/// # Ok(()) }
/// ```
pub struct EntityLock<K> {
    locks: Locks,
    namespace: String,
    _key: PhantomData<fn(&K)>,
}

impl<K> Clone for EntityLock<K> {
    fn clone(&self) -> Self {
        EntityLock {
            locks: self.locks.clone(),
            namespace: self.namespace.clone(),
            _key: PhantomData,
        }
    }
}

impl<K: std::fmt::Display> EntityLock<K> {
    pub(crate) fn new(locks: Locks, namespace: &str) -> Self {
        EntityLock {
            locks,
            namespace: namespace.to_owned(),
            _key: PhantomData,
        }
    }

    /// Waits for `key`'s lock, runs `work` with the guard, and releases the lock.
    ///
    /// # Errors
    /// [`EntityLockError::Name`] for a key over 255 bytes; [`EntityLockError::Lock`] if the lock
    /// could not be taken.
    pub async fn with_lock<T>(
        &self,
        key: &K,
        work: impl AsyncFnOnce(&LockGuard) -> T,
    ) -> Result<T, EntityLockError> {
        let guard = self.lock(key).await?;
        let result = work(&guard).await;
        // A lost lease is reported through the guard; the work's result stands either way.
        let _ = guard.unlock().await;
        Ok(result)
    }

    /// Waits for `key`'s lock and returns its guard.
    ///
    /// # Errors
    /// As [`Self::with_lock`].
    pub async fn lock(&self, key: &K) -> Result<LockGuard, EntityLockError> {
        let key = key.to_string();
        name::validate(&key)?;
        let lock = self.locks.lock_for_key(
            name::entity_key(&self.namespace, &key),
            &format!("{}/{key}", self.namespace),
        );
        Ok(lock.lock().await?)
    }
}

/// Why an entity lock was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntityLockError {
    /// The key's text form is not a valid lock name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The lock could not be taken.
    #[error(transparent)]
    Lock(#[from] LockError),
}
