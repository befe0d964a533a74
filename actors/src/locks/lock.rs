//! A named cluster lock and its acquire loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::actor::{Lease, LockInput, ask, tell_holders};
use super::attempt::{Attempt, Failure, Mode, Next, WIRE_SLACK};
use super::core::Holder;
use super::error::LockError;
use super::guard::LockGuard;
use super::msg::LockRequest;
use super::service::Shared;

/// A cluster-wide lock with a name. Cheap to clone.
///
/// Locks are **not re-entrant**: a second acquire of a held name waits (or fails), from the same
/// task and node too. A lock is held by a guard, not by a thread or a node, and a re-entrant
/// cluster lock would hide which guard's fencing token protects which write.
#[derive(Clone)]
pub struct ClusterLock {
    shared: Option<Arc<Shared>>,
    key: String,
    name: Arc<str>,
}

impl ClusterLock {
    pub(crate) fn new(shared: Option<Arc<Shared>>, key: String, name: &str) -> Self {
        ClusterLock {
            shared,
            key,
            name: name.into(),
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes the lock if it is free now.
    ///
    /// # Errors
    /// [`LockError::Unavailable`], [`LockError::Unreachable`], [`LockError::ShuttingDown`] or
    /// [`LockError::NotInstalled`];
    /// `Ok(None)` means someone else holds it.
    pub async fn try_lock(&self) -> Result<Option<LockGuard>, LockError> {
        self.acquire(Mode::Try).await
    }

    /// Takes the lock, waiting up to `timeout` in FIFO order behind earlier waiters.
    ///
    /// # Errors
    /// As [`Self::try_lock`]; `Ok(None)` means the time ran out.
    ///
    /// # Cancel safety
    /// Dropping the future withdraws the wait; a grant that raced the drop ends with its lease.
    pub async fn try_lock_for(&self, timeout: Duration) -> Result<Option<LockGuard>, LockError> {
        self.acquire(Mode::For(Instant::now() + timeout)).await
    }

    /// Takes the lock, waiting as long as it takes (FIFO per name). While no node may grant
    /// the name (no quorum, a slot moving) it keeps waiting.
    ///
    /// # Errors
    /// [`LockError::NotInstalled`] or [`LockError::ShuttingDown`].
    pub async fn lock(&self) -> Result<LockGuard, LockError> {
        loop {
            if let Some(guard) = self.acquire(Mode::Forever).await? {
                return Ok(guard);
            }
        }
    }

    async fn acquire(&self, mode: Mode) -> Result<Option<LockGuard>, LockError> {
        let shared = self.shared.as_ref().ok_or(LockError::NotInstalled)?;
        let node = &shared.node;
        let holder = Holder {
            node: node.id(),
            guard: shared.next_guard(),
        };
        // Until an answer settles it, leaving (an error, a timeout, the future dropped) withdraws
        // the wait at the owner, so that a grant racing the departure does not linger a lease.
        let mut withdraw = Withdraw {
            shared: shared.clone(),
            op: Some(LockRequest::Cancel {
                name: self.key.clone(),
                holder,
            }),
        };
        let mut attempt = Attempt::new(mode, Instant::now(), shared.holdings);
        let mut said = Instant::now();
        loop {
            let wait = attempt.wait(Instant::now());
            let timeout = Attempt::timeout(wait);
            if node.is_stopping() {
                withdraw.op = None;
                return Err(LockError::ShuttingDown);
            }
            if let Some(message) = node.maintenance() {
                withdraw.op = None;
                return Err(LockError::Maintenance {
                    message: message.to_owned(),
                });
            }
            let op = LockRequest::Acquire {
                name: self.key.clone(),
                holder,
                wait_ms: Attempt::wait_ms(wait),
                attempt: attempt.number(),
            };
            let sent_at = Instant::now();
            let answer = ask(node, op, timeout).await;
            let owner_known = answer.is_some() || super::actor::owner_of(node, &self.key).is_some();
            match attempt.answer(Instant::now(), sent_at, timeout, answer, owner_known) {
                Next::Granted {
                    token,
                    sent_at,
                    lease_ms,
                } => {
                    withdraw.op = None;
                    return Ok(Some(self.held(shared, holder, token, sent_at, lease_ms)));
                }
                Next::Busy => {
                    withdraw.op = None;
                    return Ok(None);
                }
                Next::Again => {}
                Next::GaveUp {
                    failure,
                    withdraw: still,
                } => {
                    if !still {
                        withdraw.op = None;
                    }
                    return match failure {
                        Some(f) => Err(self.error(f)),
                        None => Ok(None),
                    };
                }
                Next::Retry { after, failure } => {
                    // A wait that keeps failing is worth an operator's look.
                    if said.elapsed() >= Duration::from_secs(5) {
                        said = Instant::now();
                        let (e, waited) = (self.error(failure), attempt.elapsed(Instant::now()));
                        tracing::warn!(lock = %self.name, error = %e, ?waited, "still cannot acquire");
                    }
                    tokio::time::sleep(after).await;
                }
            }
        }
    }

    fn error(&self, failure: Failure) -> LockError {
        let name = self.name.to_string();
        match failure {
            Failure::Unavailable => LockError::Unavailable { name },
            Failure::Unreachable { after } => LockError::Unreachable { name, after },
        }
    }

    fn held(
        &self,
        shared: &Arc<Shared>,
        holder: Holder,
        token: u64,
        sent_at: Instant,
        lease_ms: u64,
    ) -> LockGuard {
        let lease = Lease {
            valid_until: shared.holdings.valid_until(sent_at, lease_ms),
            lost: false,
        };
        let (lease_tx, lease_rx) = watch::channel(lease);
        // If the actor is gone the node is stopping; the guard then reads as lost.
        if shared
            .service
            .send(LockInput::Held {
                guard: holder.guard,
                name: self.key.clone(),
                token,
                sent_at,
                lease_ms,
                lease: lease_tx.clone(),
            })
            .is_err()
        {
            lease_tx.send_modify(|l| l.lost = true);
        }
        let (key, name) = (self.key.clone(), self.name.clone());
        LockGuard::new(shared.clone(), key, name, holder, token, lease_rx)
    }
}

/// Withdraws a wait when dropped while still armed.
struct Withdraw {
    shared: Arc<Shared>,
    op: Option<LockRequest>,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        let Some(op) = self.op.take() else {
            return;
        };
        let node = self.shared.node.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { tell_holders(&node, &op, WIRE_SLACK).await });
        }
    }
}
