//! The cache service of a node: its caches by name, the `caches` gateway, flushes, and the
//! clearing of replicated caches when a node comes back from a failure or a partition.

use std::any::{Any, type_name};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use colony_runtime::lifecycle::ComponentError;
use colony_runtime::{MemberEvent, Node, wire};

use super::cache::{Cache, CacheKey, CacheValue, Inner};
use super::error::CacheError;
use super::gateway::CacheGateway;
use super::loader::Loader;
use super::loads::Loads;
use super::msg::{Flush, Hello, Op, SERVICE, Stamp};
use super::peers::Peers;
use super::reference::CachedReference;
use super::replicator::Replicator;
use super::settings::CacheSettings;
use super::stamp::LOADED;
use super::stamp::Stamper;
use super::store::Store;

/// A cache as the service sees it, whatever its types.
pub(crate) trait Replica: Send + Sync {
    /// Applies a change received from another node.
    fn apply(&self, op: &Op) -> Result<(), String>;
    /// Drops every entry (and marks loads in progress stale); writes older than `stamp` are
    /// refused from now on (`LOADED` refuses none: a local flush is no write).
    fn clear(&self, stamp: Stamp);
    fn settings(&self) -> CacheSettings;
}

impl<K: CacheKey, V: CacheValue> Replica for Inner<K, V> {
    fn apply(&self, op: &Op) -> Result<(), String> {
        match op {
            Op::Invalidate { key, stamp } => {
                let key: K = wire::decode_payload(key).map_err(|e| e.to_string())?;
                self.loads.changed(&key);
                self.store.remove(&key, *stamp);
            }
            Op::Put { key, value, stamp } => {
                let key: K = wire::decode_payload(key).map_err(|e| e.to_string())?;
                let value: V = wire::decode_payload(value).map_err(|e| e.to_string())?;
                self.loads.changed(&key);
                self.store.put(key, value, *stamp);
            }
            Op::Clear { stamp } => self.clear(*stamp),
        }
        Ok(())
    }

    fn clear(&self, stamp: Stamp) {
        self.loads.changed_all();
        self.store.clear(stamp);
    }

    fn settings(&self) -> CacheSettings {
        self.settings
    }
}

struct Registered {
    typed: Arc<dyn Any + Send + Sync>,
    types: &'static str,
    replica: Arc<dyn Replica>,
}

/// What every handle of one node's cache service shares.
pub(crate) struct Shared {
    pub node: Node,
    pub stamper: Stamper,
    pub replicator: Replicator,
    pub greetings: Arc<Peers>,
    caches: Mutex<HashMap<String, Registered>>,
}

impl Shared {
    /// Whether loaded values may be cached: every up peer has answered this node's greeting.
    pub(crate) fn ready(&self) -> bool {
        self.greetings
            .ready(self.node.id(), &self.node.up_members())
    }

    pub(crate) fn replica(&self, name: &str) -> Option<Arc<dyn Replica>> {
        self.caches
            .lock()
            .expect("caches lock")
            .get(name)
            .map(|r| r.replica.clone())
    }

    fn replicas(&self) -> Vec<Arc<dyn Replica>> {
        self.caches
            .lock()
            .expect("caches lock")
            .values()
            .map(|r| r.replica.clone())
            .collect()
    }

    /// Empties this node's flushable caches; returns how many.
    pub(crate) fn flush_local(&self) -> usize {
        let flushable: Vec<_> = self
            .replicas()
            .into_iter()
            .filter(|r| r.settings().flushable)
            .collect();
        flushable.iter().for_each(|r| r.clear(LOADED));
        flushable.len()
    }

    /// Empties this node's replicated caches: they may have missed changes.
    fn clear_replicated(&self, why: &str) {
        let replicated: Vec<_> = self
            .replicas()
            .into_iter()
            .filter(|r| r.settings().is_replicated())
            .collect();
        if !replicated.is_empty() {
            tracing::info!(
                caches = replicated.len(),
                "clearing replicated caches: {why}"
            );
        }
        replicated.iter().for_each(|r| r.clear(LOADED));
    }
}

/// Starts the cache service on `node`: its `caches` gateway, and the watch that clears
/// replicated caches when this node or a peer comes back from being down. Every node of a
/// cluster must run it; `colony::node()` installs it.
///
/// # Errors
/// [`ComponentError`] when the gateway cannot start.
pub async fn install(node: &Node) -> Result<(), ComponentError> {
    let greetings = Arc::new(Peers::default());
    let shared = Arc::new(Shared {
        node: node.clone(),
        stamper: Stamper::new(node.id()),
        replicator: Replicator::new(node.clone(), greetings.clone()),
        greetings,
        caches: Mutex::new(HashMap::new()),
    });
    node.register_service(
        SERVICE,
        Arc::new(CacheGateway {
            shared: shared.clone(),
        }),
    )
    .await
    .map_err(|e| ComponentError {
        component: "caches".into(),
        reason: e.to_string(),
    })?;
    let mut events = node.subscribe(256);
    let watcher = shared.clone();
    tokio::spawn(async move {
        let mut dropped = 0;
        while let Some(event) = events.recv().await {
            // A node that was down or cut off missed changes, and so may this node have: both
            // sides of a healed partition see the other rejoin. A missed event may be one too.
            match &event {
                MemberEvent::NodeRejoined { member, previous } => {
                    watcher.greetings.forget(*previous);
                    watcher.greetings.forget(member.id);
                    watcher.clear_replicated(&format!("{} rejoined", member.name));
                }
                MemberEvent::NodeDown(m) | MemberEvent::NodeLeft(m) => {
                    watcher.greetings.forget(m.id)
                }
                _ => {}
            }
            if events.dropped() != dropped {
                dropped = events.dropped();
                watcher.clear_replicated("membership events were missed");
            }
        }
    });
    tokio::spawn(greet(shared.clone()));
    node.register_admin_action(
        "caches.flush",
        Arc::new(|node: Node| {
            Box::pin(async move {
                let missed = node
                    .caches()
                    .flush_cluster()
                    .await
                    .map_err(|e| e.to_string())?;
                let missed: Vec<String> = missed.iter().map(ToString::to_string).collect();
                Ok(serde_json::json!({ "flushed": true, "unconfirmed": missed }))
            })
        }),
    );
    node.set_extension(shared);
    Ok(())
}

/// Greets every up peer that has not answered yet, whenever membership changes and until it does.
async fn greet(shared: Arc<Shared>) {
    let node = shared.node.clone();
    let mut views = node.watch_members();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
    loop {
        tokio::select! {
            changed = views.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        let pending = shared.greetings.to_greet(node.id(), &node.up_members());
        if pending.is_empty() {
            continue;
        }
        let Ok(hello) = wire::encode_payload(&Hello {}) else {
            return;
        };
        // All at once: a silent peer costs the others nothing.
        let timeout = Some(std::time::Duration::from_millis(500));
        let answers = node
            .request_each(&pending, SERVICE, "hello", hello, timeout)
            .await;
        for (peer, answer) in pending.into_iter().zip(answers) {
            if answer.is_ok() {
                shared.greetings.greeted(peer);
            }
        }
    }
}

/// Gives a node's cache service: `node.caches()`.
pub trait CachesExt {
    /// The cache service of this node.
    fn caches(&self) -> Caches;
}

impl CachesExt for Node {
    fn caches(&self) -> Caches {
        Caches {
            shared: self.extension::<Shared>(),
        }
    }
}

/// A node's cache factory. Cheap to clone.
///
/// # Examples
/// ```no_run
/// # async fn run(node: colony_runtime::Node) -> Result<(), Box<dyn std::error::Error>> {
/// use colony_actors::caches::{CacheSettings, CachesExt, Loader};
/// let users = node.caches().get_cache::<u64, String>(
///     "com.example.users",
///     Some(Loader::new(|id: u64| async move { Ok::<_, std::io::Error>(format!("user {id}")) })),
///     CacheSettings::replicate_via_invalidation(),
/// )?;
/// let name = users.get(&7).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Caches {
    shared: Option<Arc<Shared>>,
}

impl Caches {
    /// The cache named `name`: created with `loader` and `settings` the first time, the same
    /// cache every later time on this node (`loader` and `settings` are then ignored).
    ///
    /// # Errors
    /// [`CacheError::TypeMismatch`] if the name is taken with other key or value types;
    /// [`CacheError::BadName`]; [`CacheError::NotInstalled`].
    pub fn get_cache<K: CacheKey, V: CacheValue>(
        &self,
        name: &str,
        loader: Option<Loader<K, V>>,
        settings: CacheSettings,
    ) -> Result<Cache<K, V>, CacheError> {
        let shared = self.shared.as_ref().ok_or(CacheError::NotInstalled)?;
        if name.is_empty() || name.len() > 255 {
            return Err(CacheError::BadName);
        }
        let types = type_name::<(K, V)>();
        let mut caches = shared.caches.lock().expect("caches lock");
        if let Some(existing) = caches.get(name) {
            return existing
                .typed
                .clone()
                .downcast::<Inner<K, V>>()
                .map(|inner| Cache { inner })
                .map_err(|_| CacheError::TypeMismatch {
                    name: name.to_owned(),
                    existing: existing.types.to_owned(),
                });
        }
        let inner = Arc::new(Inner {
            name: name.to_owned(),
            settings,
            store: Store::new(&settings),
            loads: Loads::new(),
            loader,
            shared: shared.clone(),
        });
        caches.insert(
            name.to_owned(),
            Registered {
                typed: inner.clone(),
                types,
                replica: inner.clone(),
            },
        );
        Ok(Cache { inner })
    }

    /// A single value kept under `name`, filled by `supplier`; see [`CachedReference`].
    ///
    /// # Errors
    /// As [`Self::get_cache`].
    pub fn get_cached_reference<V: CacheValue>(
        &self,
        name: &str,
        supplier: Loader<(), V>,
        settings: CacheSettings,
    ) -> Result<CachedReference<V>, CacheError> {
        self.get_cache(name, Some(supplier), settings)
            .map(CachedReference::new)
    }

    /// Names of the caches created on this node.
    pub fn names(&self) -> Vec<String> {
        self.shared.as_ref().map_or_else(Vec::new, |s| {
            let mut names: Vec<String> = s
                .caches
                .lock()
                .expect("caches lock")
                .keys()
                .cloned()
                .collect();
            names.sort();
            names
        })
    }

    /// Empties every flushable cache on every up node. Returns the nodes that did not confirm.
    ///
    /// # Errors
    /// [`CacheError::NotInstalled`].
    pub async fn flush_cluster(&self) -> Result<Vec<colony_runtime::NodeId>, CacheError> {
        let shared = self.shared.as_ref().ok_or(CacheError::NotInstalled)?;
        let mut missed = Vec::new();
        for node in shared.node.up_members() {
            let answer = shared
                .node
                .request::<Flush, usize>(node, SERVICE, "flush", &Flush {}, None)
                .await;
            if let Err(e) = answer {
                tracing::warn!(%node, error = %e, "cache flush not confirmed");
                missed.push(node);
            }
        }
        Ok(missed)
    }
}
