//! The lock service of a node: installing it, and the [`Locks`] handle applications use.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use colony_runtime::Node;
use colony_runtime::lifecycle::ComponentError;
use ractor::Actor;

use super::actor::{LockActor, LockHandle, LockMsg, LockStats};
use super::core::TableConfig;
use super::entity::EntityLock;
use super::error::NameError;
use super::gateway::LockGateway;
use super::holdings::HoldingsConfig;
use super::lock::ClusterLock;
use super::msg::SERVICE;
use super::name;

/// Settings of the lock service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockSettings {
    /// How long a grant lasts without renewal. A crashed holder's lock is free again within
    /// one lease; a new owner waits a lease plus the failure-detection bound before granting
    /// names it took over. Holders renew three times per lease.
    pub lease: Duration,
}

impl LockSettings {
    /// How long before its end a lease that could not be renewed is declared lost.
    pub fn margin(&self) -> Duration {
        self.lease / 5
    }
}

impl Default for LockSettings {
    fn default() -> Self {
        LockSettings {
            lease: Duration::from_secs(5),
        }
    }
}

/// What every handle of one node's lock service shares.
pub(crate) struct Shared {
    pub node: Node,
    pub service: LockHandle,
    pub settings: LockSettings,
    next_guard: AtomicU64,
}

impl Shared {
    pub(crate) fn next_guard(&self) -> u64 {
        self.next_guard.fetch_add(1, Ordering::Relaxed)
    }
}

/// Starts the lock service on `node`: its actor and its `locks` gateway. Every node of a cluster
/// must run it, since any node may own a name; `colony::node()` installs it.
///
/// # Errors
/// [`ComponentError`] when the actor or the gateway cannot start.
pub async fn install(node: &Node, settings: LockSettings) -> Result<(), ComponentError> {
    let fail = |reason: String| ComponentError {
        component: "locks".into(),
        reason,
    };
    let config = node.config();
    let takeover_delay = if config.cluster_size == 1 {
        // No other owner can have granted anything.
        Duration::ZERO
    } else {
        settings.lease + config.timings.detection_bound(config.cluster_size)
    };
    let actor = LockActor {
        node: node.clone(),
        table: TableConfig {
            lease: settings.lease,
            takeover_delay,
        },
        holdings: HoldingsConfig {
            lease: settings.lease,
            margin: settings.margin(),
        },
        // Well below the time others need to declare this node down and take over.
        pause_threshold: config.timings.probe_period,
    };
    let (state, wake) = actor.initial_state();
    let config = actor.clone();
    let (actor, _) = Actor::spawn(None, actor, (state.clone(), wake))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let service = LockHandle {
        actor,
        config,
        state,
    };
    node.register_service(
        SERVICE,
        Arc::new(LockGateway {
            service: service.clone(),
        }),
    )
    .await
    .map_err(|e| fail(e.to_string()))?;
    node.set_extension(Arc::new(Shared {
        node: node.clone(),
        service,
        settings,
        next_guard: AtomicU64::new(1),
    }));
    Ok(())
}

/// Gives a node's lock service: `node.locks()`.
pub trait LocksExt {
    /// The lock service of this node.
    fn locks(&self) -> Locks;
}

impl LocksExt for Node {
    fn locks(&self) -> Locks {
        Locks {
            shared: self.extension::<Shared>(),
        }
    }
}

/// A node's lock service. Cheap to clone.
///
/// # Examples
/// ```no_run
/// # async fn run(node: colony_runtime::Node) -> Result<(), Box<dyn std::error::Error>> {
/// use colony_actors::locks::LocksExt;
/// let lock = node.locks().lock_for_name("com.example.reindex")?;
/// if let Some(guard) = lock.try_lock().await? {
///     // Pass guard.token() to every store you write, so a stale holder is refused.
///     println!("reindexing with token {}", guard.token());
///     guard.unlock().await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Locks {
    shared: Option<Arc<Shared>>,
}

impl Locks {
    /// A lock named `name` (1 to 255 bytes). Creating it costs nothing and acquires nothing.
    ///
    /// # Errors
    /// [`NameError`] for an empty or too long name.
    pub fn lock_for_name(&self, name: &str) -> Result<ClusterLock, NameError> {
        name::validate(name)?;
        Ok(ClusterLock::new(
            self.shared.clone(),
            name::named_key(name),
            name,
        ))
    }

    /// Locks per entity of one kind, in `namespace` (the seeds' repository and pull-request
    /// locks): different keys are independent, one key is serialized cluster-wide, and
    /// namespaces are independent of each other.
    ///
    /// # Errors
    /// [`NameError`] for a bad namespace, or one starting with the reserved `colony.`.
    pub fn entity_lock<K: std::fmt::Display>(
        &self,
        namespace: &str,
    ) -> Result<EntityLock<K>, NameError> {
        name::validate_namespace(namespace)?;
        Ok(EntityLock::new(self.clone(), namespace))
    }

    /// The state this node's lock service keeps (see [`LockStats`]); `None` if not installed.
    pub async fn stats(&self) -> Option<LockStats> {
        let shared = self.shared.as_ref()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        shared.service.actor.cast(LockMsg::Stats(tx)).ok()?;
        rx.await.ok()
    }

    /// The lease in force.
    pub fn settings(&self) -> Option<LockSettings> {
        self.shared.as_ref().map(|s| s.settings)
    }

    pub(crate) fn lock_for_key(&self, key: String, display: &str) -> ClusterLock {
        ClusterLock::new(self.shared.clone(), key, display)
    }
}
