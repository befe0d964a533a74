//! The guard of a held lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::actor::{Lease, LockInput, ask_holder};
use super::core::{Answer, Holder};
use super::error::UnlockError;
use super::msg::LockRequest;
use super::service::Shared;

/// A held cluster lock. Release it with [`LockGuard::unlock`]; dropping it releases it too, in
/// the background.
///
/// Check [`LockGuard::token`] at every store you write under the lock: a store that remembers
/// the highest token it has seen and refuses lower ones cannot be corrupted by a holder that
/// stalled past its lease.
pub struct LockGuard {
    shared: Arc<Shared>,
    key: String,
    name: Arc<str>,
    holder: Holder,
    token: u64,
    lease: watch::Receiver<Lease>,
    done: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("token", &self.token)
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl LockGuard {
    pub(crate) fn new(
        shared: Arc<Shared>,
        key: String,
        name: Arc<str>,
        holder: Holder,
        token: u64,
        lease: watch::Receiver<Lease>,
    ) -> Self {
        LockGuard {
            shared,
            key,
            name,
            holder,
            token,
            lease,
            done: false,
        }
    }

    /// The fencing token of this grant: strictly greater than the token of every earlier grant
    /// of the same name, across owner failover too.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the lease has been lost, or is about to end without a renewal. Computed from the
    /// lease's end too, so it is right at once after this process was paused.
    pub fn is_lost(&self) -> bool {
        let lease = self.lease.borrow();
        lease.lost || Instant::now() + self.shared.settings.margin() >= lease.valid_until
    }

    /// When the lease ends unless renewed, as this node counts it (never later than the owner).
    /// Renewals move it forward; [`LockGuard::lost`] fires shortly before it if they fail.
    pub fn valid_until(&self) -> std::time::Instant {
        self.lease.borrow().valid_until
    }

    /// Resolves when the lease can no longer be trusted: renewal failed until shortly before the
    /// lease's end, or the owner says the lock is no longer held. It
    /// resolves *before* the lease ends, so stop work on it and stop writing with its token.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn lost(&self) {
        let mut lease = self.lease.clone();
        let margin = self.shared.settings.margin();
        loop {
            let (lost, deadline) = {
                let l = lease.borrow_and_update();
                (l.lost, l.valid_until - margin)
            };
            if lost {
                return;
            }
            tokio::select! {
                // A closed channel means the lock service stopped: the lease is gone with it.
                changed = lease.changed() => if changed.is_err() { return },
                () = tokio::time::sleep_until(deadline.into()) => return,
            }
        }
    }

    /// Releases the lock.
    ///
    /// # Errors
    /// [`UnlockError::Lost`] if the lease was lost first (nothing to release, and work done
    /// after the loss was not protected); [`UnlockError::Unreachable`] if the owner did not
    /// answer (the lease then ends by itself).
    pub async fn unlock(mut self) -> Result<(), UnlockError> {
        self.done = true;
        release(
            self.shared.clone(),
            self.key.clone(),
            self.holder,
            self.token,
            self.is_lost(),
            &self.name,
        )
        .await
    }
}

async fn release(
    shared: Arc<Shared>,
    key: String,
    holder: Holder,
    token: u64,
    already_lost: bool,
    name: &str,
) -> Result<(), UnlockError> {
    let _ = shared.service.send(LockInput::Forget(holder.guard));
    if already_lost {
        return Err(UnlockError::Lost {
            name: name.to_owned(),
        });
    }
    let op = LockRequest::Release {
        name: key,
        holder,
        token,
    };
    // The renewals' route: a release during a hand-over reaches whichever node serves the hold.
    match ask_holder(&shared.node, &op, Duration::from_secs(2)).await {
        Some(Answer::Released) => Ok(()),
        Some(Answer::NotHeld) => Err(UnlockError::Lost {
            name: name.to_owned(),
        }),
        _ => Err(UnlockError::Unreachable {
            name: name.to_owned(),
        }),
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (shared, key, holder, token, lost) = (
            self.shared.clone(),
            self.key.clone(),
            self.holder,
            self.token,
            self.is_lost(),
        );
        let name = self.name.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = release(shared, key, holder, token, lost, &name).await {
                        tracing::debug!(error = %e, "release on drop");
                    }
                });
            }
            // No runtime to release from: the lease ends by itself.
            Err(_) => {
                let _ = shared.service.cast(LockInput::Forget(holder.guard));
            }
        }
    }
}
