//! The node: one process's membership in a Colony cluster, and the handle applications hold.

mod admin;
/// The JSON bodies of the admin endpoint.
pub mod admin_types {
    pub use super::admin::{AdminStats, ClusterStatus, ConsensusReport, Faults};
}
mod builder;
mod builtin;
mod components;
mod metrics;

pub use builder::{NodeBuilder, StartError, StartHook};
pub use components::{ComponentControlError, ComponentStatus};
pub use metrics::MetricsCollector;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use crate::config::NodeConfig;
use crate::events::{Events, Subscription};
use crate::homes::{LocalHome, SharedHome};
use crate::lifecycle::Component;
use crate::membership::driver::MembershipHandle;
use crate::membership::{Member, MemberEvent, MembershipStats};
use crate::transport::{RequestError, Service, Transport, TransportCounters, TransportError};
use crate::{NodeId, placement, quorum, wire};

/// A running node. Cheap to clone; every clone is the same node.
///
/// # Examples
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use colony_runtime::Node;
/// let node = Node::builder()
///     .name("alpha")
///     .home("/var/lib/colony/alpha")
///     .bind("127.0.0.1:7401")
///     .seeds(["127.0.0.1:7400"])
///     .cookie("change-me")
///     .cluster_size(3)
///     .start()
///     .await?;
/// println!("{} members, quorum: {}", node.members().len(), node.has_quorum());
/// node.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    config: NodeConfig,
    id: NodeId,
    addr: SocketAddr,
    local_home: LocalHome,
    shared_home: SharedHome,
    events: Events,
    membership: MembershipHandle,
    transport: Transport,
    group: crate::consensus::Group,
    components: Vec<Arc<dyn Component>>,
    /// Which components run now, by index.
    started: Mutex<Vec<bool>>,
    /// Per component, what it holds while it runs (see [`crate::lifecycle::Scope`]).
    scopes: std::sync::Mutex<Vec<Option<crate::lifecycle::Scope>>>,
    extensions: dashmap::DashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>,
    actions: dashmap::DashMap<String, AdminAction>,
    views: dashmap::DashMap<String, AdminAction>,
    item_actions: dashmap::DashMap<(String, String), AdminItemAction>,
    stopping: AtomicBool,
    admin_gate: admin::Gate,
    metrics: metrics::NodeMetrics,
    /// Set when a shared-home move failed at start: see [`Node::maintenance`].
    maintenance: Option<String>,
    messaging: Arc<crate::messaging::MessagingState>,
    admin: std::sync::Mutex<Option<admin::AdminServer>>,
}

/// How long a leaving node waits for its slots to move away with their tables.
const LEAVE_GROUP_WITHIN: Duration = Duration::from_secs(5);

/// An operation that operators may start from the admin endpoint (`POST /actions/{name}`);
/// it answers with JSON or an error message.
pub type AdminAction = Arc<
    dyn Fn(
            Node,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<serde_json::Value, String>> + Send>,
        > + Send
        + Sync,
>;

/// An operation on one item of an admin view (`POST /{view}/{item}/{action}`, e.g.
/// `POST /caches/users/flush`), given the item's name; `None` if there is no such item.
pub type AdminItemAction = Arc<
    dyn Fn(
            Node,
            String,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Option<Result<serde_json::Value, String>>> + Send>,
        > + Send
        + Sync,
>;

/// Counters from every layer of the node, as served by the admin endpoint's `/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStats {
    /// Gossip packets.
    pub membership: MembershipStats,
    /// Links and requests.
    pub transport: TransportCounters,
    /// The consensus group's counters (messages refused, leader changes, ...).
    pub consensus: crate::consensus::GroupStats,
    /// Requests the admin endpoint refused.
    pub admin: admin::AdminStats,
    /// Events published on the local bus.
    pub events_published: u64,
    /// Events dropped for full listener queues.
    pub events_dropped: u64,
    /// Tokio tasks alive in the node's runtime (0 when read outside a runtime): whatever the
    /// network opens and closes must bring this back down.
    pub tasks: usize,
}

impl Node {
    /// Starts configuring a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// This process's node id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The address peers reach the node at (TCP and UDP): the advertised one if set, else the
    /// bound one, with the real port if 0 was asked.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The settings the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// The node's wall clock: every wall-clock read of a component goes through it, so that a
    /// test can offset one node's clock (`clock_offset_ms`). See [`crate::clock`].
    ///
    /// # Examples
    /// ```no_run
    /// # fn demo(node: colony_runtime::Node) {
    /// let micros = node.wall_clock().now_micros();
    /// # let _ = micros; }
    /// ```
    pub fn wall_clock(&self) -> crate::clock::WallClock {
        self.inner.config.wall_clock()
    }

    /// The node's local home.
    pub fn local_home(&self) -> &LocalHome {
        &self.inner.local_home
    }

    /// The cluster's shared home, as mounted on this node.
    pub fn shared_home(&self) -> &SharedHome {
        &self.inner.shared_home
    }

    /// The consensus group as this node takes part in it.
    pub fn group(&self) -> &crate::consensus::Group {
        &self.inner.group
    }

    /// The node's event bus (membership events and the application's own).
    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// Watches the membership view: the receiver wakes on every change of the member table.
    pub fn watch_members(&self) -> tokio::sync::watch::Receiver<Arc<crate::membership::View>> {
        self.inner.membership.watch()
    }

    /// Whether `up` nodes reach this node's quorum.
    pub fn is_quorum(&self, up: usize) -> bool {
        quorum::has_quorum(up, self.inner.config.quorum)
    }

    /// The value of type `T` attached to this node, if any (see [`Node::set_extension`]).
    pub fn extension<T: std::any::Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let value = self
            .inner
            .extensions
            .get(&std::any::TypeId::of::<T>())?
            .clone();
        value.downcast::<T>().ok()
    }

    /// Attaches `value` to this node, one per type: how services built on the runtime (the
    /// primitives of `colony-actors`) keep their per-node state. Replaces an earlier value.
    pub fn set_extension<T: std::any::Any + Send + Sync>(&self, value: Arc<T>) {
        self.inner
            .extensions
            .insert(std::any::TypeId::of::<T>(), value);
    }

    /// Offers `action` on the admin endpoint as `POST /actions/{name}` (e.g. `caches.flush`).
    pub fn register_admin_action(&self, name: &str, action: AdminAction) {
        self.inner.actions.insert(name.to_owned(), action);
    }

    /// Offers `view` on the admin endpoint as `GET /{name}` (e.g. `locks`): a read-only JSON
    /// report of a primitive. Names the endpoint serves itself (`health`, `cluster`, `stats`)
    /// are never shadowed.
    pub fn register_admin_view(&self, name: &str, view: AdminAction) {
        self.inner.views.insert(name.to_owned(), view);
    }

    /// Offers `action` on each item of the admin view `view` as
    /// `POST /{view}/{item}/{name}` (e.g. `POST /caches/users/flush`).
    ///
    /// # Examples
    /// ```no_run
    /// # fn demo(node: colony_runtime::Node) {
    /// use std::sync::Arc;
    /// node.register_admin_item_action(
    ///     "queues",
    ///     "purge",
    ///     Arc::new(|_node, item: String| {
    ///         Box::pin(async move { Some(Ok(serde_json::json!({ "purged": item }))) })
    ///     }),
    /// );
    /// # }
    /// ```
    pub fn register_admin_item_action(&self, view: &str, name: &str, action: AdminItemAction) {
        self.inner
            .item_actions
            .insert((view.to_owned(), name.to_owned()), action);
    }

    /// Runs the action `name` on `item` of the admin view `view`: `None` if there is no such
    /// action, `Some(None)` if there is no such item.
    pub async fn run_admin_item_action(
        &self,
        view: &str,
        name: &str,
        item: &str,
    ) -> Option<Option<Result<serde_json::Value, String>>> {
        let key = (view.to_owned(), name.to_owned());
        let action = self.inner.item_actions.get(&key)?.clone();
        Some(action(self.clone(), item.to_owned()).await)
    }

    /// Where the admin endpoint listens (the real port if 0 was asked); `None` without one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        let admin = self.inner.admin.lock().expect("admin lock");
        admin.as_ref().map(admin::AdminServer::addr)
    }

    /// Adds `collector` to what `GET /metrics` reports: services built on the runtime (the
    /// primitives) copy their counters into the node's recorder through it.
    ///
    /// # Examples
    /// ```no_run
    /// # fn demo(node: colony_runtime::Node, queued: std::sync::Arc<std::sync::atomic::AtomicU64>) {
    /// use std::sync::Arc;
    /// node.add_metrics_collector(Arc::new(move |_node| {
    ///     let n = queued.load(std::sync::atomic::Ordering::Relaxed);
    ///     metrics::gauge!("myapp_queued").set(n as f64);
    /// }));
    /// # }
    /// ```
    pub fn add_metrics_collector(&self, collector: MetricsCollector) {
        self.inner.metrics.add_collector(collector);
    }

    /// This node's metrics in the Prometheus text format, as `GET /metrics` serves them; every
    /// series is labelled `node="<name>"`.
    pub fn render_metrics(&self) -> String {
        self.inner.metrics.render(self)
    }

    /// Runs the admin view `name`; `None` if there is none.
    pub async fn run_admin_view(&self, name: &str) -> Option<Result<serde_json::Value, String>> {
        let view = self.inner.views.get(name)?.clone();
        Some(view(self.clone()).await)
    }

    /// Runs the admin action `name`; `None` if there is none.
    pub async fn run_admin_action(&self, name: &str) -> Option<Result<serde_json::Value, String>> {
        let action = self.inner.actions.get(name)?.clone();
        Some(action(self.clone()).await)
    }

    /// Subscribes to membership events with a queue of `capacity`; see [`Events`].
    pub fn subscribe(&self, capacity: usize) -> Subscription<MemberEvent> {
        self.inner.events.subscribe(capacity)
    }

    /// The local node as a member.
    pub fn local(&self) -> Member {
        self.inner.membership.view().local().clone()
    }

    /// The name of member `id`, or `?` for a node this one does not know: for log lines
    /// about a peer, which name it beside its id.
    ///
    /// # Examples
    /// ```no_run
    /// # fn demo(node: colony_runtime::Node, peer: colony_runtime::NodeId) {
    /// tracing::warn!(peer = %node.member_name(peer), id = %peer, "no answer");
    /// assert_eq!(node.member_name(node.id()), node.name());
    /// # }
    /// ```
    pub fn member_name(&self, id: NodeId) -> String {
        let view = self.inner.membership.view();
        let member = view.members.iter().find(|m| m.id == id);
        member.map_or_else(|| "?".to_owned(), |m| m.name.clone())
    }

    /// Every known member, this node first.
    pub fn members(&self) -> Vec<Member> {
        self.inner.membership.view().members.clone()
    }

    /// Ids of the members that are up, this node included.
    pub fn up_members(&self) -> Vec<NodeId> {
        self.inner.membership.view().up.clone()
    }

    /// Whether the members this node sees up reach the quorum.
    pub fn has_quorum(&self) -> bool {
        quorum::has_quorum(
            self.inner.membership.view().up.len(),
            self.inner.config.quorum,
        )
    }

    /// The up member that owns `key` by rendezvous hashing.
    pub fn owner_of(&self, key: &[u8]) -> Option<NodeId> {
        placement::owner_of(key, self.inner.membership.view().up.iter().copied())
    }

    /// Counters from every layer.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            membership: self.inner.membership.stats(),
            transport: self.inner.transport.counters(),
            consensus: self.inner.group.status().stats,
            admin: self.inner.admin_gate.stats(),
            events_published: self.inner.events.published(),
            events_dropped: self.inner.events.dropped(),
            tasks: tokio::runtime::Handle::try_current()
                .map(|h| h.metrics().num_alive_tasks())
                .unwrap_or(0),
        }
    }

    /// Makes `service` reachable under `name` from every node, this one included.
    ///
    /// # Errors
    /// [`TransportError::DuplicateService`] if the name is taken, [`TransportError::ServiceName`]
    /// if it is longer than 255 bytes.
    pub async fn register_service(
        &self,
        name: &str,
        service: Arc<dyn Service>,
    ) -> Result<(), TransportError> {
        self.inner.transport.register(name, service)
    }

    /// Sends a typed request to `service` on `node` and decodes the typed answer. The request
    /// goes through the wire encoding even when `node` is this one.
    ///
    /// Requests to other nodes travel over this node's authenticated link to `node`. If the
    /// link is not open yet (`node` just came up, or its link is being redialled), the request
    /// waits for it, within `timeout`; a node that is no member (unknown, down or left) fails
    /// at once with [`RequestError::NotMember`].
    ///
    /// # Errors
    /// See [`RequestError`]; each variant says whether the request may have run.
    pub async fn request<Q: Serialize, A: DeserializeOwned>(
        &self,
        node: NodeId,
        service: &str,
        kind: &str,
        request: &Q,
        timeout: Option<Duration>,
    ) -> Result<A, RequestError> {
        let payload = wire::encode_payload(request).map_err(RequestError::Encode)?;
        let answer = self
            .request_raw(node, service, kind, payload, timeout)
            .await?;
        wire::decode_payload(&answer).map_err(|error| RequestError::BadReply { node, error })
    }

    /// Sends an already encoded payload; see [`Node::request`].
    ///
    /// # Errors
    /// See [`RequestError`].
    pub async fn request_raw(
        &self,
        node: NodeId,
        service: &str,
        kind: &str,
        payload: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, RequestError> {
        let timeout = timeout.unwrap_or(self.inner.config.request_timeout);
        let started = std::time::Instant::now();
        let answer = self
            .inner
            .transport
            .request(node, service, kind, payload, timeout)
            .await;
        self.inner.metrics.request_took(service, started.elapsed());
        answer
    }

    /// Sends the same encoded payload to each of `nodes` at once and waits for all of them, at
    /// most `timeout` (the configured request timeout if `None`) in all. Answers come in the
    /// order of `nodes`, each as [`Node::request_raw`] would give it; one node's failure does
    /// not hold up the others'. Cheaper than one `request_raw` per node: the request is encoded
    /// once and, over links, one timer covers every node.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo(node: colony_runtime::Node) {
    /// let others: Vec<_> = node.members().iter().map(|m| m.id).filter(|&id| id != node.id()).collect();
    /// for (peer, answer) in others.iter().zip(node.request_each(&others, "node", "echo", b"hi".to_vec(), None).await) {
    ///     println!("{peer}: {answer:?}");
    /// }
    /// # }
    /// ```
    pub async fn request_each(
        &self,
        nodes: &[NodeId],
        service: &str,
        kind: &str,
        payload: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Vec<Result<Vec<u8>, RequestError>> {
        let timeout = timeout.unwrap_or(self.inner.config.request_timeout);
        self.inner
            .transport
            .request_each(nodes, service, kind, payload, timeout)
            .await
    }

    /// Whether this node's link to `node` is open (always true for this node). A request to a
    /// member without one waits for it, up to the request's timeout.
    pub fn is_connected(&self, node: NodeId) -> bool {
        node == self.inner.id || self.inner.transport.has_link(node)
    }

    /// Cuts this node off from `addrs`, both gossip and links, or heals it with an empty set.
    /// Only for tests: refused (returns `false`) unless the node was started with
    /// `fault_injection`.
    pub async fn set_blocked(&self, addrs: HashSet<SocketAddr>) -> bool {
        if !self.inner.config.fault_injection {
            return false;
        }
        tracing::warn!(?addrs, "fault filter set");
        self.inner.transport.set_blocked(addrs.clone());
        self.inner.membership.set_blocked(addrs).await;
        true
    }

    /// Resolves once the node has joined (at once for a node without seeds).
    pub async fn joined(&self) {
        let mut watch = self.inner.membership.watch();
        while !watch.borrow_and_update().local().state.is_up() {
            if watch.changed().await.is_err() {
                return;
            }
        }
    }

    /// This node's cluster channels: see [`crate::messaging`].
    pub fn messaging(&self) -> crate::messaging::Messaging {
        self.inner.messaging.handle(self.clone())
    }

    /// Why this node is locked for maintenance, if it is: the shared home moved and an update
    /// handler failed at start (see [`crate::homes::settle`]). The message is safe to show
    /// anyone. Primitives refuse work while it is set; a restart with the old location or a
    /// successful retry of the move clears it.
    pub fn maintenance(&self) -> Option<&str> {
        self.inner.maintenance.as_deref()
    }

    /// Whether [`Node::shutdown`] has begun: services refuse new work from then on.
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }

    /// Leaves the cluster gracefully: stops components in reverse order, tells every member this
    /// node is leaving (they see it *left*, not *down*), then closes its links and the listener.
    /// Calling it again does nothing.
    pub async fn shutdown(&self) {
        if self.inner.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::info!(node = %self.name(), "leaving the cluster");
        self.stop_components().await;
        // Slots move away with their tables while the transport still carries them.
        let handed_over = self.inner.group.leave(LEAVE_GROUP_WITHIN).await;
        if !handed_over {
            tracing::warn!(
                "left before every slot was handed over; they move once this node's epoch is revoked"
            );
        }
        self.inner.membership.leave().await;
        self.inner.group.stop();
        self.inner.transport.stop();
        if let Some(admin) = self.inner.admin.lock().expect("admin lock").take() {
            admin.stop();
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id)
            .field("name", &self.inner.config.name)
            .field("addr", &self.inner.addr)
            .finish()
    }
}
