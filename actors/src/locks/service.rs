//! The lock service of a node: installing it, and the [`Locks`] handle applications use.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use colony_runtime::Node;
use colony_runtime::consensus::GroupConfig;
use colony_runtime::lifecycle::ComponentError;
use colony_runtime::shell::Shell;
use colony_runtime::wire;

use super::actor::{LockDriver, LockHandle, LockInput, LockStats};
use super::core::{LockTable, TableConfig};
use super::entity::EntityLock;
use super::error::NameError;
use super::gateway::LockGateway;
use super::holdings::{Holdings, HoldingsConfig};
use super::lock::ClusterLock;
use super::msg::{REPORT, SERVICE};
use super::name;
use super::report::{LocksReport, ServedLock};

/// Settings of the lock service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockSettings {
    /// How long a grant lasts without renewal: a crashed holder's lock is free again within one
    /// lease, and a crashed owner's names within one lease plus the revocation allowance.
    /// Holders renew three times per lease. A cluster setting (`lock_lease_ms`): every node
    /// must have the same, and `colony::node_with` records it in the node's settings.
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
    pub holdings: HoldingsConfig,
    next_guard: AtomicU64,
}

impl Shared {
    pub(crate) fn next_guard(&self) -> u64 {
        self.next_guard.fetch_add(1, Ordering::Relaxed)
    }
}

/// Starts the lock service on `node`: its actor and its `locks` gateway. Every node of a cluster
/// must run it, since any node may serve a name; `colony::node()` installs it.
///
/// # Errors
/// [`ComponentError`] when the actor or the gateway cannot start.
pub async fn install(node: &Node, settings: LockSettings) -> Result<(), ComponentError> {
    let fail = |reason: String| ComponentError {
        component: "locks".into(),
        reason,
    };
    // The lease in force is the cluster's: the node's setting, agreed through the group.
    if settings.lease != node.config().lock_lease {
        tracing::warn!(asked = ?settings.lease, cluster = ?node.config().lock_lease,
            "the lock lease is a cluster setting (lock_lease_ms): using the node's");
    }
    let settings = LockSettings {
        lease: node.config().lock_lease,
    };
    let drift_permille = GroupConfig::with_liveness(settings.lease).drift_permille;
    let holdings = HoldingsConfig {
        lease: settings.lease,
        margin: settings.margin(),
        drift_permille,
    };
    let table = LockTable::new(
        node.group().status().replica,
        TableConfig {
            lease: settings.lease,
            drift_permille,
            resend: Duration::from_millis(300),
        },
    );
    let driver = LockDriver::new(
        node.clone(),
        table,
        Holdings::new(holdings),
        holdings.renew_every(),
    );
    let service = Shell::spawn(driver, node.watch_members())
        .await
        .map_err(|e| fail(e.to_string()))?;
    service.with_mut(|d| d.shell = Some(service.caster()));
    // Feed the group's status to the table, the current one first.
    crate::wiring::feed_group(node, &service, LockInput::Group);
    node.register_service(
        SERVICE,
        Arc::new(LockGateway {
            service: service.clone(),
        }),
    )
    .await
    .map_err(|e| fail(e.to_string()))?;
    let report = service.clone();
    node.register_admin_view(
        "locks",
        Arc::new(move |node| {
            let report = report.clone();
            Box::pin(async move {
                let report = cluster_report(&node, &report).await;
                serde_json::to_value(report).map_err(|e| e.to_string())
            })
        }),
    );
    let measured = service.clone();
    node.add_metrics_collector(Arc::new(move |_node| metrics(&measured)));
    node.set_extension(Arc::new(Shared {
        node: node.clone(),
        service,
        settings,
        holdings,
        next_guard: AtomicU64::new(1),
    }));
    Ok(())
}

/// How long `GET /locks` waits for the other nodes' names.
const REPORT_TIMEOUT: Duration = Duration::from_secs(1);

/// This node's report with the names every other up node serves: one request shows the
/// cluster's locks although each node serves only its slots of names.
async fn cluster_report(node: &Node, service: &LockHandle) -> LocksReport {
    let mut report = service.with(|d| d.report(std::time::Instant::now()));
    let others: Vec<_> = node
        .members()
        .into_iter()
        .filter(|m| m.id != node.id() && m.state.is_up())
        .collect();
    let ids: Vec<_> = others.iter().map(|m| m.id).collect();
    let answers = node
        .request_each(&ids, SERVICE, REPORT, Vec::new(), Some(REPORT_TIMEOUT))
        .await;
    let mut served = Vec::new();
    for (member, answer) in others.iter().zip(answers) {
        let theirs = answer.map_err(|e| e.to_string()).and_then(|bytes| {
            wire::decode_payload::<Vec<ServedLock>>(&bytes).map_err(|e| e.to_string())
        });
        match theirs {
            Ok(theirs) => served.extend(theirs),
            Err(error) => {
                tracing::debug!(node = %member.name, %error, "a node's lock report is missing");
                report.unanswered.push(member.name.clone());
            }
        }
    }
    report.add(served);
    report
}

/// The lock service's figures for `/metrics`.
fn metrics(service: &LockHandle) {
    use metrics::{counter, gauge};
    let (c, names, waiters, held) = service.with(|d| {
        let waiters: usize = d.table.names().map(|n| n.waiters.len()).sum();
        (d.counters, d.table.len(), waiters, d.holdings.len())
    });
    counter!("colony_lock_grants_total").absolute(c.grants);
    counter!("colony_lock_grants_after_wait_total").absolute(c.granted_after_wait);
    counter!("colony_lock_busy_total").absolute(c.busy);
    counter!("colony_lock_wait_timeouts_total").absolute(c.timed_out);
    counter!("colony_lock_lease_losses_total").absolute(c.lease_losses);
    counter!("colony_lock_hand_overs_total").absolute(c.hand_overs);
    gauge!("colony_lock_served_names").set(names as f64);
    gauge!("colony_lock_waiters").set(waiters as f64);
    gauge!("colony_lock_held_guards").set(held as f64);
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
        shared.service.cast(LockInput::Stats(tx)).ok()?;
        rx.await.ok()
    }

    /// The node that serves lock `name` now, as this node's group state says (`None`: no node
    /// is entitled to it yet, or the service is not installed).
    pub fn owner_of(&self, name: &str) -> Option<colony_runtime::NodeId> {
        let shared = self.shared.as_ref()?;
        super::actor::owner_of(&shared.node, &name::named_key(name))
    }

    /// The lease in force.
    pub fn settings(&self) -> Option<LockSettings> {
        self.shared.as_ref().map(|s| s.settings)
    }

    pub(crate) fn lock_for_key(&self, key: String, display: &str) -> ClusterLock {
        ClusterLock::new(self.shared.clone(), key, display)
    }
}
