//! The cache service of a node: its caches by name, the `caches` gateway, flushes, and the
//! clearing of replicated caches when a node comes back from a failure or a partition.

use std::any::{Any, type_name};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colony_runtime::clock::WallClock;
use colony_runtime::lifecycle::ComponentError;
use colony_runtime::{MemberEvent, Node, NodeId, wire};
use tokio::sync::{Notify, watch};

use super::cache::{Cache, CacheKey, CacheValue, Inner};
use super::core::{Change, CoherenceCore, CoreConfig, CoreStats, Lease, Output};
use super::error::CacheError;
use super::gateway::CacheGateway;
use super::loader::Loader;
use super::loads::Loads;
use super::msg::{Flush, FlushCache, SERVICE, Stamp, SyncReply, SyncRequest};
use super::reference::CachedReference;
use super::replicator::Replicator;
use super::settings::CacheSettings;
use super::stamp::LOADED;
use super::store::{CacheStats, Store};

/// A cache as the service sees it, whatever its types.
pub(crate) trait Replica: Send + Sync {
    /// Applies a change decided by the coherence core.
    fn apply(&self, change: &Change) -> Result<(), String>;
    /// Drops every entry (and marks loads in progress stale); writes older than `stamp` are
    /// refused from now on (`LOADED` refuses none: a local flush is no write).
    fn clear(&self, stamp: Stamp);
    fn settings(&self) -> CacheSettings;
    /// Entries on this node.
    fn len(&self) -> u64;
    /// This node's counters.
    fn stats(&self) -> CacheStats;
}

impl<K: CacheKey, V: CacheValue> Replica for Inner<K, V> {
    fn apply(&self, change: &Change) -> Result<(), String> {
        let decode_key = |b: &[u8]| wire::decode_payload::<K>(b).map_err(|e| e.to_string());
        let decode_value = |b: &[u8]| wire::decode_payload::<V>(b).map_err(|e| e.to_string());
        self.store.apply(
            self.settings.mode,
            change,
            decode_key,
            decode_value,
            |key| match key {
                Some(key) => self.loads.changed(key),
                None => self.loads.changed_all(),
            },
        )
    }

    fn clear(&self, stamp: Stamp) {
        self.loads.changed_all();
        self.store.clear(stamp);
    }

    fn settings(&self) -> CacheSettings {
        self.settings
    }

    fn len(&self) -> u64 {
        self.store.len()
    }

    fn stats(&self) -> CacheStats {
        self.store.stats()
    }
}

struct Registered {
    typed: Arc<dyn Any + Send + Sync>,
    types: &'static str,
    replica: Arc<dyn Replica>,
}

/// The lease of the coherence core as readers see it, without a lock: nanoseconds since
/// `origin` until which cached values may be served (`u64::MAX`: always, 0: not now).
struct Published {
    origin: Instant,
    until: AtomicU64,
    changed: watch::Sender<()>,
}

impl Published {
    /// Publishes `lease`. Called only under the coherence lock, so a load then a store is
    /// enough; most changes leave the lease as it was, and then the readers' cache line is not
    /// written at all.
    fn set(&self, lease: Lease) {
        let until = match lease {
            Lease::Unbounded => u64::MAX,
            Lease::Expired => 0,
            Lease::Until(t) => u64::try_from(t.saturating_duration_since(self.origin).as_nanos())
                .unwrap_or(u64::MAX - 1)
                .max(1),
        };
        if self.until.load(Ordering::Acquire) != until {
            self.until.store(until, Ordering::Release);
            self.changed.send_replace(());
        }
    }

    fn allows(&self, now: Instant) -> bool {
        match self.until.load(Ordering::Acquire) {
            u64::MAX => true,
            0 => false,
            until => now < self.origin + Duration::from_nanos(until),
        }
    }
}

/// What every handle of one node's cache service shares.
pub(crate) struct Shared {
    pub node: Node,
    pub wall: WallClock,
    pub replicator: Replicator,
    core: Mutex<CoherenceCore>,
    lease: Published,
    wake: Notify,
    caches: Mutex<HashMap<String, Registered>>,
}

impl Shared {
    /// Feeds the coherence core one input at this instant, then carries out every output, in
    /// order, before anyone else can feed it: a clear is applied before a lease that follows it
    /// is published.
    pub(crate) fn input<T>(
        self: &Arc<Self>,
        feed: impl FnOnce(&mut CoherenceCore, Instant, u64) -> T,
    ) -> T {
        let mut core = self.core.lock().expect("coherence lock");
        let armed = core.poll_timeout();
        let result = feed(&mut core, Instant::now(), self.wall.now_micros());
        while let Some(output) = core.poll_output() {
            match output {
                Output::SendSync { to, id } => self.ask(to, id, core.config().lease),
                Output::Apply { cache, change } => {
                    if let Some(replica) = self.replica(&cache)
                        && let Err(e) = replica.apply(&change)
                    {
                        tracing::warn!(
                            cache,
                            error = %e,
                            "undecodable cache change: its key was dropped, or the cache emptied"
                        );
                    }
                }
                Output::Clear(reason) => {
                    self.clear_replicated(&format!("{reason:?}"));
                }
            }
        }
        self.lease.set(core.lease());
        // The timer is re-armed only when the deadline moved: most changes leave it alone.
        let moved = core.poll_timeout() != armed;
        drop(core);
        if moved {
            self.wake.notify_one();
        }
        result
    }

    /// Runs `f` on the coherence core at this instant, for commands and getters that queue no
    /// output (stamps, targets, counts).
    pub(crate) fn with_core<T>(&self, f: impl FnOnce(&mut CoherenceCore, Instant, u64) -> T) -> T {
        let mut core = self.core.lock().expect("coherence lock");
        let result = f(&mut core, Instant::now(), self.wall.now_micros());
        debug_assert!(
            core.poll_output().is_none(),
            "an output was left in the core"
        );
        result
    }

    /// Whether this node may serve cached values of replicated caches now.
    pub(crate) fn leased(&self) -> bool {
        self.lease.allows(Instant::now())
    }

    /// Waits until this node holds its leases, at most until `deadline`; says whether it does.
    pub(crate) async fn await_lease(&self, deadline: tokio::time::Instant) -> bool {
        let mut changed = self.lease.changed.subscribe();
        loop {
            if self.leased() {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            // A lease that runs out publishes nothing: look again every few milliseconds.
            let tick = (now + Duration::from_millis(20)).min(deadline);
            let _ = tokio::time::timeout_at(tick, changed.changed()).await;
        }
    }

    /// Counters of the coherence core.
    pub(crate) fn core_stats(&self) -> CoreStats {
        self.core.lock().expect("coherence lock").stats()
    }

    /// Asks `to` for a lease, in the background; the answer goes back to the core.
    fn ask(self: &Arc<Self>, to: NodeId, id: u64, timeout: Duration) {
        let shared = self.clone();
        tokio::spawn(async move {
            let answer = shared
                .node
                .request::<SyncRequest, SyncReply>(
                    to,
                    SERVICE,
                    "sync",
                    &SyncRequest {},
                    Some(timeout),
                )
                .await;
            if let Ok(reply) = answer {
                shared.input(|core, now, wall| core.handle_sync_reply(now, wall, to, id, reply));
            }
        });
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

    /// Empties the cache `name` on this node if it exists and is flushable; returns how many
    /// caches were emptied (0 or 1).
    pub(crate) fn flush_local_named(&self, name: &str) -> usize {
        let Some(replica) = self.replica(name).filter(|r| r.settings().flushable) else {
            return 0;
        };
        replica.clear(LOADED);
        1
    }

    /// Every cache on this node as `GET /caches` reports it, by name.
    pub(crate) fn report(&self) -> super::report::CachesReport {
        let caches = self.caches.lock().expect("caches lock");
        let mut reports: Vec<_> = caches
            .iter()
            .map(|(name, r)| {
                super::report::CacheReport::of(
                    name,
                    &r.replica.settings(),
                    r.replica.len(),
                    r.replica.stats(),
                )
            })
            .collect();
        drop(caches);
        reports.sort_by(|a, b| a.name.cmp(&b.name));
        super::report::CachesReport { caches: reports }
    }

    /// Copies every cache's size and counters into the node's recorder (see
    /// `Node::add_metrics_collector`), labelled by cache.
    fn metrics(&self) {
        use metrics::{counter, gauge};
        for cache in self.report().caches {
            let name = cache.name;
            let s = cache.stats;
            gauge!("colony_cache_entries", "cache" => name.clone()).set(cache.size as f64);
            counter!("colony_cache_hits_total", "cache" => name.clone()).absolute(s.hits);
            counter!("colony_cache_misses_total", "cache" => name.clone()).absolute(s.misses);
            counter!("colony_cache_loads_total", "cache" => name.clone()).absolute(s.loads);
            counter!("colony_cache_load_failures_total", "cache" => name.clone())
                .absolute(s.load_failures);
            counter!("colony_cache_evictions_total", "cache" => name.clone()).absolute(s.evictions);
            counter!("colony_cache_unacknowledged_total", "cache" => name)
                .absolute(s.unacknowledged);
        }
    }

    /// Empties this node's replicated caches: they may have missed changes.
    fn clear_replicated(&self, why: &str) {
        let replicated: Vec<_> = self
            .replicas()
            .into_iter()
            .filter(|r| r.settings().is_replicated())
            .collect();
        if !replicated.is_empty() {
            tracing::debug!(
                caches = replicated.len(),
                "clearing replicated caches: {why}"
            );
        }
        replicated.iter().for_each(|r| r.clear(LOADED));
    }
}

/// Starts the cache service on `node`: its `caches` gateway, the coherence core with its
/// timer, and the watches that feed it the membership view. Every node of a cluster must run
/// it; `colony::node()` installs it.
///
/// # Errors
/// [`ComponentError`] when the gateway cannot start.
pub async fn install(node: &Node) -> Result<(), ComponentError> {
    let (changed, _) = watch::channel(());
    let config = CoreConfig::default();
    let shared = Arc::new(Shared {
        node: node.clone(),
        wall: node.wall_clock(),
        replicator: Replicator::new(node.clone()),
        core: Mutex::new(CoherenceCore::new(node.id(), config)),
        lease: Published {
            origin: Instant::now(),
            until: AtomicU64::new(0),
            changed,
        },
        wake: Notify::new(),
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
    // The view as it stands now, before any cache exists: a node alone serves at once.
    let members = view_of(&node.watch_members().borrow());
    shared.input(|core, now, _| core.handle_view(now, members));
    tokio::spawn(drive(shared.clone()));
    tokio::spawn(watch_events(shared.clone()));
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
    register_admin(node, &shared);
    node.set_extension(shared);
    Ok(())
}

/// `GET /caches`, `POST /caches/{name}/flush` and the caches' figures in `/metrics`.
fn register_admin(node: &Node, shared: &Arc<Shared>) {
    let measured = Arc::downgrade(shared);
    node.add_metrics_collector(Arc::new(move |_node| {
        if let Some(shared) = measured.upgrade() {
            shared.metrics();
        }
    }));
    // Weak: the node keeps its views, and the service keeps the node.
    let reported = Arc::downgrade(shared);
    node.register_admin_view(
        "caches",
        Arc::new(move |_node| {
            let report = reported.upgrade().map(|s| s.report()).unwrap_or_default();
            Box::pin(async move { serde_json::to_value(report).map_err(|e| e.to_string()) })
        }),
    );
    let flushed = Arc::downgrade(shared);
    node.register_admin_item_action(
        "caches",
        "flush",
        Arc::new(move |node: Node, name: String| {
            let known = flushed
                .upgrade()
                .is_some_and(|s| s.replica(&name).is_some());
            Box::pin(async move {
                if !known {
                    return None;
                }
                let missed = node.caches().flush_cache_cluster(&name).await;
                Some(missed.map_err(|e| e.to_string()).map(|missed| {
                    let missed: Vec<String> = missed.iter().map(ToString::to_string).collect();
                    serde_json::json!({ "flushed": name, "unconfirmed": missed })
                }))
            })
        }),
    );
}

/// Drives the core: feeds it every membership view and runs its timer (one sleep until
/// `poll_timeout`, re-armed after every input). Ends when the membership view closes.
async fn drive(shared: Arc<Shared>) {
    let mut views = shared.node.watch_members();
    let mut view_changed = true;
    loop {
        if view_changed {
            let members = view_of(&views.borrow_and_update());
            shared.input(|core, now, _| core.handle_view(now, members));
        }
        let next = shared.core.lock().expect("coherence lock").poll_timeout();
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        // `notify_one` keeps a permit when nobody waits: an input made since `poll_timeout`
        // was read still wakes this loop.
        view_changed = tokio::select! {
            changed = views.changed() => match changed {
                Ok(()) => true,
                Err(_) => return,
            },
            () = sleep => {
                shared.input(|core, now, _| core.handle_timeout(now));
                false
            }
            () = shared.wake.notified() => false,
        };
    }
}

/// `(id, gone)` of every member of `view`, as the core takes it.
fn view_of(view: &colony_runtime::membership::View) -> Vec<(NodeId, bool)> {
    view.members
        .iter()
        .map(|m| (m.id, m.state.is_gone()))
        .collect()
}

/// Clears on rejoins: a node that was down or cut off missed changes, and so may this node
/// have (both sides of a healed partition see the other rejoin). A missed event may be one.
async fn watch_events(shared: Arc<Shared>) {
    let mut events = shared.node.subscribe(256);
    let mut dropped = 0;
    while let Some(event) = events.recv().await {
        let missed = events.dropped() != dropped;
        dropped = events.dropped();
        if missed || matches!(event, MemberEvent::NodeRejoined { .. }) {
            shared.input(|core, now, _| core.handle_rejoined(now));
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

    /// Counters of this node's cache coherence: stamps refused for being too far ahead, clears
    /// and why, gaps seen. `None` when the service is not installed.
    pub fn coherence_stats(&self) -> Option<CoreStats> {
        self.shared.as_ref().map(|s| s.core_stats())
    }

    /// Empties every flushable cache on every up node. Returns the nodes that did not confirm.
    ///
    /// # Errors
    /// [`CacheError::NotInstalled`].
    pub async fn flush_cluster(&self) -> Result<Vec<NodeId>, CacheError> {
        self.on_every_up_node("flush", &Flush {}).await
    }

    /// Empties the cache `name` on every up node where it exists and is flushable. Returns the
    /// nodes that did not confirm.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo(node: colony_runtime::Node) -> Result<(), colony_actors::caches::CacheError> {
    /// use colony_actors::caches::CachesExt;
    /// let unconfirmed = node.caches().flush_cache_cluster("users").await?;
    /// assert!(unconfirmed.is_empty(), "some nodes did not confirm: {unconfirmed:?}");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`CacheError::NotInstalled`].
    pub async fn flush_cache_cluster(&self, name: &str) -> Result<Vec<NodeId>, CacheError> {
        let flush = FlushCache {
            name: name.to_owned(),
        };
        self.on_every_up_node("flush_cache", &flush).await
    }

    /// Sends a flush of `kind` to every up node; returns those that did not confirm.
    async fn on_every_up_node<Q: serde::Serialize>(
        &self,
        kind: &str,
        request: &Q,
    ) -> Result<Vec<NodeId>, CacheError> {
        let shared = self.shared.as_ref().ok_or(CacheError::NotInstalled)?;
        let mut missed = Vec::new();
        for node in shared.node.up_members() {
            let answer = shared
                .node
                .request::<Q, usize>(node, SERVICE, kind, request, None)
                .await;
            if let Err(e) = answer {
                tracing::warn!(peer = %shared.node.member_name(node), id = %node, error = %e, kind, "cache flush not confirmed");
                missed.push(node);
            }
        }
        Ok(missed)
    }
}
