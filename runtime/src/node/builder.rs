//! Building and starting a node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::{Inner, Node, admin, builtin};
use crate::NodeId;
use crate::config::{ConfigError, ConfigLayer, MembershipTimings, NodeConfig};
use crate::consensus::disk::{Disk, Loaded};
use crate::consensus::group::{GroupDriver, GroupService};
use crate::consensus::{
    ClusterSettings, Group, GroupConfig, GroupCore, Identity, MemberInfo, ReplicaId,
};
use crate::events::Events;
use crate::homes::{HomeError, HomeUpdateHandler, LocalHome, RecordError, Settled, SharedHome};
use crate::lifecycle::{Component, ComponentError};
use crate::membership::{GossipKey, MembershipCore, NodeIdentity, driver, next_incarnation};
use crate::shell::Shell;
use crate::transport::{Transport, TransportError};

/// Why a node did not start. Whatever had started was stopped again.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The settings are incomplete or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A home directory cannot be used.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// The shared home's recorded location cannot be read or written.
    #[error(transparent)]
    HomeRecord(#[from] RecordError),
    /// The incarnation could not be recorded in the local home's `state/`.
    #[error("cannot record node state in {path}: {source}")]
    State {
        /// The state directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The gossip socket could not be bound.
    #[error("cannot listen on {addr}: {source} (is another process using this port?)")]
    Bind {
        /// The bind address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The TCP transport could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The admin endpoint could not listen.
    #[error("cannot serve the admin endpoint on {addr}: {source}")]
    Admin {
        /// The admin address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The admin endpoint would listen beyond loopback with no token to guard it.
    #[error(
        "the admin endpoint {addr} is not a loopback address, and no admin token is set: set COLONY_ADMIN_TOKEN (or the local home's `admin-token` file), or serve it on 127.0.0.1"
    )]
    AdminUnprotected {
        /// The admin address.
        addr: SocketAddr,
    },
    /// The local home's admin token file exists but cannot be read.
    #[error("cannot read the admin token file {path}: {source}")]
    AdminToken {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A component's `on_start` failed.
    #[error(transparent)]
    Component(#[from] ComponentError),
    /// The consensus store cannot be used.
    #[error(transparent)]
    Consensus(#[from] crate::consensus::disk::DiskError),
    /// This node's settings disagree with the cluster's.
    #[error(transparent)]
    Settings(#[from] crate::consensus::Disagreement),
}

/// Settings for a node, then [`NodeBuilder::start`].
///
/// Values set here beat a layer passed with [`NodeBuilder::layer`]; unset ones fall back to the
/// defaults of [`ConfigLayer::resolve`].
#[derive(Default)]
pub struct NodeBuilder {
    layer: ConfigLayer,
    lower: ConfigLayer,
    timings: Option<MembershipTimings>,
    components: Vec<Arc<dyn Component>>,
    hooks: Vec<StartHook>,
    home_updates: Vec<Arc<dyn HomeUpdateHandler>>,
}

/// A hook run while the node starts, before it joins: see [`NodeBuilder::on_start`].
pub type StartHook = Box<
    dyn FnOnce(
            Node,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), ComponentError>> + Send>,
        > + Send,
>;

impl NodeBuilder {
    /// The node's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.layer.name = Some(name.into());
        self
    }

    /// The local home directory.
    pub fn home(mut self, dir: impl Into<PathBuf>) -> Self {
        self.layer.home = Some(dir.into());
        self
    }

    /// The shared home directory.
    pub fn shared_home(mut self, dir: impl Into<PathBuf>) -> Self {
        self.layer.shared_home = Some(dir.into());
        self
    }

    /// `host:port` for TCP and UDP; port 0 picks a free one.
    pub fn bind(mut self, addr: impl ToString) -> Self {
        self.layer.bind = Some(addr.to_string());
        self
    }

    /// Nodes to join through.
    pub fn seeds<S: ToString>(mut self, seeds: impl IntoIterator<Item = S>) -> Self {
        self.layer.seeds = Some(seeds.into_iter().map(|s| s.to_string()).collect());
        self
    }

    /// The cluster cookie.
    pub fn cookie(mut self, cookie: impl Into<String>) -> Self {
        self.layer.cookie = Some(cookie.into());
        self
    }

    /// The expected number of nodes.
    pub fn cluster_size(mut self, n: usize) -> Self {
        self.layer.cluster_size = Some(n);
        self
    }

    /// The cluster lock lease (a cluster setting: every node must agree).
    pub fn lock_lease(mut self, lease: Duration) -> Self {
        self.layer.lock_lease_ms = Some(lease.as_millis() as u64);
        self
    }

    /// How long a voter may be unreachable before the group replaces it (default 30 s).
    pub fn voter_grace(mut self, grace: Duration) -> Self {
        self.layer.voter_grace_ms = Some(grace.as_millis() as u64);
        self
    }

    /// An explicit quorum instead of a majority.
    pub fn quorum(mut self, n: usize) -> Self {
        self.layer.quorum = Some(n);
        self
    }

    /// Failure-detection timings.
    pub fn timings(mut self, timings: MembershipTimings) -> Self {
        self.timings = Some(timings);
        self
    }

    /// The largest request or response, in bytes.
    pub fn max_message_bytes(mut self, n: usize) -> Self {
        self.layer.max_message_bytes = Some(n);
        self
    }

    /// Serve the admin endpoint on `addr`.
    pub fn admin(mut self, addr: impl ToString) -> Self {
        self.layer.admin = Some(addr.to_string());
        self
    }

    /// The admin endpoint's bearer token (see [`NodeConfig::admin_token`]).
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.layer.admin_token = Some(token.into());
        self
    }

    /// The address peers reach this node at, when not the bound one.
    pub fn advertise(mut self, addr: impl ToString) -> Self {
        self.layer.advertise = Some(addr.to_string());
        self
    }

    /// Accept fault-injection commands (tests only).
    pub fn fault_injection(mut self, on: bool) -> Self {
        self.layer.fault_injection = Some(on);
        self
    }

    /// Shift this node's wall clock by `offset_ms` milliseconds (tests only: refused at start
    /// unless [`Self::fault_injection`] is on). See [`crate::clock`].
    ///
    /// # Examples
    /// ```
    /// let builder = colony_runtime::Node::builder().cookie("c").clock_offset_ms(-200);
    /// assert!(builder.resolve().is_err(), "refused without fault injection");
    /// let config = builder.fault_injection(true).resolve().unwrap();
    /// assert_eq!(config.wall_clock().offset(), -200);
    /// ```
    pub fn clock_offset_ms(mut self, offset_ms: i64) -> Self {
        self.layer.clock_offset_ms = Some(offset_ms);
        self
    }

    /// Settings from another source (file, environment, flags), below the values set here.
    pub fn layer(mut self, layer: ConfigLayer) -> Self {
        self.lower = layer.over(self.lower);
        self
    }

    /// Runs `hook` once the transport is up and before the node joins, in the order added. Services
    /// that every node must offer before peers see it up (the primitives) register here.
    pub fn on_start(mut self, hook: StartHook) -> Self {
        self.hooks.push(hook);
        self
    }

    /// Adds a handler run when the shared home moved since this node last ran, in the order
    /// added. If one fails, the node starts locked for maintenance: see
    /// [`crate::homes::settle`] and [`Node::maintenance`].
    pub fn home_update_handler(mut self, handler: impl HomeUpdateHandler) -> Self {
        self.home_updates.push(Arc::new(handler));
        self
    }

    /// Adds a component; see [`Component`] for the order of calls.
    pub fn component(mut self, component: impl Component) -> Self {
        self.components.push(Arc::new(component));
        self
    }

    /// The settings the node would run with.
    ///
    /// # Errors
    /// [`ConfigError`] for missing or invalid values.
    pub fn resolve(&self) -> Result<NodeConfig, ConfigError> {
        let mut config = self.layer.clone().over(self.lower.clone()).resolve()?;
        if let Some(t) = self.timings {
            config.timings = t;
            config.validate()?;
        }
        Ok(config)
    }

    /// Creates the homes, binds the port, joins the cluster and starts the components.
    /// Returns once the node is up; while no seed answers it keeps trying (and logs why).
    ///
    /// # Errors
    /// [`StartError`]; nothing is left running.
    pub async fn start(self) -> Result<Node, StartError> {
        let node = self.start_until(std::future::pending()).await?;
        Ok(node.expect("a pending stop never fires"))
    }

    /// Like [`start`](Self::start), but gives up when `stop` resolves first (a signal, say).
    /// Returns `None` then. Once peers may have seen this node, giving up means leaving
    /// gracefully, so they see it *left*, never *down*: dropping a `start` future instead would
    /// leave a member behind that nobody told.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), colony_runtime::StartError> {
    /// let stop = async {
    ///     let _ = tokio::signal::ctrl_c().await;
    /// };
    /// let builder = colony_runtime::Node::builder()
    ///     .name("n1")
    ///     .home("/var/lib/colony")
    ///     .cookie("secret")
    ///     .bind("127.0.0.1:7946");
    /// match builder.start_until(stop).await? {
    ///     Some(node) => node.shutdown().await,
    ///     None => println!("interrupted while joining; left again"),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`StartError`]; nothing is left running.
    pub async fn start_until(
        self,
        stop: impl Future<Output = ()>,
    ) -> Result<Option<Node>, StartError> {
        let config = self.resolve()?;
        start(
            config,
            self.components,
            self.hooks,
            &self.home_updates,
            stop,
        )
        .await
    }
}

async fn start(
    config: NodeConfig,
    components: Vec<Arc<dyn Component>>,
    hooks: Vec<StartHook>,
    home_updates: &[Arc<dyn HomeUpdateHandler>],
    stop: impl Future<Output = ()>,
) -> Result<Option<Node>, StartError> {
    if config.bind.ip().is_unspecified() && config.advertise.is_none() {
        return Err(ConfigError::Invalid {
            setting: "bind",
            reason: "is 0.0.0.0 or [::], which peers cannot dial: set `advertise` to the address they reach this node at".into(),
        }
        .into());
    }
    let admin_gate = admin_gate(&config)?;
    let local_home = LocalHome::open(&config.home)?;
    let shared_home = SharedHome::open(&config.shared_home)?;
    let maintenance = match crate::homes::settle(&local_home, &shared_home, home_updates).await? {
        Settled::Locked { message, .. } => Some(message),
        Settled::First | Settled::Unchanged | Settled::Moved(_) => None,
    };
    let now_micros = config.wall_clock().now_micros();
    let incarnation =
        next_incarnation(&local_home.state(), now_micros).map_err(|source| StartError::State {
            path: local_home.state(),
            source,
        })?;
    let (socket, bound) = bind_gossip(config.bind).await?;
    // What peers dial and gossip about; the sockets stay on `bound`.
    let addr = config.advertise.unwrap_or(bound);
    let id = NodeId::random();
    let fresh_replica = u64::from_le_bytes(id.as_bytes()[8..].try_into().expect("8 bytes")) | 1;
    let (disk, stored) = Disk::open(&local_home.state().join("consensus.redb"), fresh_replica)?;
    let identity = NodeIdentity {
        id,
        name: config.name.clone(),
        addr,
        incarnation,
        replica: stored.replica,
    };
    let seed = u64::from_le_bytes(id.as_bytes()[..8].try_into().expect("8 bytes"));
    let core = MembershipCore::new(
        identity,
        config.timings,
        config.cluster_size,
        GossipKey::from_cookie(config.cookie.expose()),
        seed,
    );
    let events = Events::default();
    let (membership, pending) = driver::prepare(core, socket, events.clone(), local_home.state());
    // The listener comes first, so that peers who see this node up can dial it at once.
    let transport = Transport::start(
        id,
        bound,
        config.cookie.expose(),
        config.max_message_bytes,
        membership.watch(),
    )
    .await?;
    let (messaging, receiver) = crate::messaging::service(membership.clone());
    let registered = transport
        .register(
            builtin::SERVICE,
            Arc::new(builtin::NodeService::new(membership.clone())),
        )
        .and_then(|()| transport.register(crate::messaging::SERVICE, receiver));
    if let Err(e) = registered {
        transport.stop();
        return Err(e.into());
    }
    let group = match start_group(
        &config,
        &shared_home,
        addr,
        incarnation,
        disk,
        stored,
        &transport,
        &membership,
    )
    .await
    {
        Ok(group) => group,
        Err(e) => {
            transport.stop();
            return Err(e);
        }
    };
    tracing::info!(node = %config.name, %id, %addr, %bound, incarnation, "node started");
    let metrics = super::metrics::NodeMetrics::new(&config.name);
    let node = Node {
        inner: Arc::new(Inner {
            config,
            id,
            addr,
            local_home,
            shared_home,
            events,
            membership,
            transport,
            group,
            started: tokio::sync::Mutex::new(vec![false; components.len()]),
            scopes: std::sync::Mutex::new(vec![None; components.len()]),
            components,
            extensions: Default::default(),
            actions: Default::default(),
            views: Default::default(),
            item_actions: Default::default(),
            stopping: AtomicBool::new(false),
            admin_gate,
            metrics,
            maintenance,
            messaging,
            admin: std::sync::Mutex::new(None),
        }),
    };
    node.register_admin_view(
        "components",
        Arc::new(|node: Node| {
            Box::pin(async move {
                serde_json::to_value(node.components().await).map_err(|e| e.to_string())
            })
        }),
    );
    for (action, enabled) in [("enable", true), ("disable", false)] {
        node.register_admin_item_action(
            "components",
            action,
            Arc::new(move |node: Node, name: String| {
                Box::pin(async move {
                    let done = node.set_component_enabled(&name, enabled).await;
                    Some(
                        done.map(|()| serde_json::json!({ "name": name, "enabled": enabled }))
                            .map_err(|e| e.to_string()),
                    )
                })
            }),
        );
    }
    if let Some(admin_addr) = node.inner.config.admin {
        match admin::AdminServer::serve(admin_addr, node.clone()).await {
            Ok(server) => *node.inner.admin.lock().expect("admin lock") = Some(server),
            Err(source) => {
                // Never started: dropping it lets the leave below return at once.
                drop(pending);
                node.shutdown().await;
                return Err(StartError::Admin {
                    addr: admin_addr,
                    source,
                });
            }
        }
    }
    // Services every node must offer (the primitives) register before anyone sees it up.
    for hook in hooks {
        if let Err(e) = hook(node.clone()).await {
            drop(pending);
            node.shutdown().await;
            return Err(e.into());
        }
    }
    pending.start(&node.inner.config.seeds);
    let join = async {
        node.joined().await;
        tracing::info!(node = %node.name(), members = node.members().len(), "joined the cluster");
        wait_for_group(&node).await?;
        node.start_components().await.map_err(StartError::from)
    };
    tokio::select! {
        started = join => match started {
            Ok(()) => Ok(Some(node)),
            Err(e) => {
                node.shutdown().await;
                Err(e)
            }
        },
        () = stop => {
            tracing::info!(node = %node.name(), "stopped while starting");
            node.shutdown().await;
            Ok(None)
        }
    }
}

/// The admin endpoint's gate, from the settings or the local home's token file; refuses an
/// endpoint beyond loopback that no token guards, before anything listens.
fn admin_gate(config: &NodeConfig) -> Result<admin::Gate, StartError> {
    let Some(addr) = config.admin else {
        return Ok(admin::Gate::new(None));
    };
    let token = match &config.admin_token {
        Some(token) => Some(token.expose().trim().to_owned()),
        None => {
            let path = config.home.join(LocalHome::ADMIN_TOKEN);
            let token = LocalHome::admin_token_in(&config.home).map_err(|source| {
                StartError::AdminToken {
                    path: path.clone(),
                    source,
                }
            })?;
            if token.is_some() {
                warn_if_readable_by_others(&path);
            }
            token
        }
    };
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(StartError::AdminUnprotected { addr });
    }
    Ok(admin::Gate::new(token.as_deref()))
}

/// A token file others on the machine can read is no secret: say so (the node still starts,
/// as with any file the operator chose to share).
fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the admin token file can be read by other users: chmod 600 it"
        );
    }
}

/// Binds the UDP gossip socket. For port 0 it picks a port whose TCP twin is free as well, since
/// the transport listens on the same number.
async fn bind_gossip(bind: SocketAddr) -> Result<(UdpSocket, SocketAddr), StartError> {
    let fail = |source| StartError::Bind { addr: bind, source };
    for _ in 0..32 {
        let socket = UdpSocket::bind(bind).await.map_err(fail)?;
        let addr = socket.local_addr().map_err(fail)?;
        if bind.port() != 0 || std::net::TcpListener::bind(addr).is_ok() {
            return Ok((socket, addr));
        }
    }
    Err(fail(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no port free for both UDP and TCP",
    )))
}

/// Founds the group, or restores this node's place in it from its store, and starts its shell.
///
/// A node founds a new group only when it has never belonged to one, has no seeds, and either
/// runs alone (`cluster_size` 1) or finds no founding mark in the shared home: a founding node
/// whose store was lost must not found a second group beside the first.
#[allow(
    clippy::too_many_arguments,
    reason = "the parts of a starting node, each used once"
)]
async fn start_group(
    config: &NodeConfig,
    shared_home: &SharedHome,
    addr: SocketAddr,
    incarnation: u64,
    disk: Disk,
    stored: Loaded,
    transport: &Transport,
    membership: &driver::MembershipHandle,
) -> Result<Group, StartError> {
    let me = Identity {
        replica: ReplicaId(stored.replica),
        info: MemberInfo {
            name: config.name.clone(),
            addr,
            incarnation,
        },
        settings: cluster_settings(config),
    };
    let group_config = GroupConfig {
        voter_grace: config.voter_grace,
        ..GroupConfig::with_liveness(config.lock_lease)
    };
    let now = std::time::Instant::now();
    let seed = stored.replica ^ now.elapsed().as_nanos() as u64 ^ u64::from(std::process::id());
    let mark = shared_home.data().join("consensus-founded");
    let found = !stored.log.is_initialized()
        && config.seeds.is_empty()
        && (config.cluster_size == 1 || !mark.exists());
    let core = if found {
        let group_id = seed.rotate_left(17) | 1;
        if config.cluster_size > 1 {
            let written = std::fs::create_dir_all(mark.parent().expect("a parent"))
                .and_then(|()| std::fs::write(&mark, format!("{group_id:x}\n")));
            if let Err(source) = written {
                return Err(StartError::State { path: mark, source });
            }
        }
        tracing::info!(group = %format!("{group_id:x}"), "founding a new consensus group");
        GroupCore::found(me, group_config, group_id, now, seed)
    } else {
        GroupCore::restore(me, group_config, stored.group, stored.log, now, seed)
    };
    let (driver, status) = GroupDriver::new(core, disk, transport.clone());
    let shell = Shell::spawn(driver, membership.watch())
        .await
        .map_err(|e| TransportError::Start {
            addr,
            reason: e.to_string(),
        })?;
    shell.with_mut(|d| d.shell = Some(shell.caster()));
    transport.register(
        crate::consensus::group::SERVICE,
        Arc::new(GroupService(shell.clone())),
    )?;
    Ok(Group::new(shell, status))
}

/// The settings this node must share with its cluster.
fn cluster_settings(config: &NodeConfig) -> ClusterSettings {
    ClusterSettings {
        cluster_size: config.cluster_size as u32,
        quorum: config.quorum as u32,
        lock_lease_ms: config.lock_lease.as_millis() as u64,
        probe_period_ms: config.timings.probe_period.as_millis() as u64,
        probe_rtt_ms: config.timings.probe_rtt.as_millis() as u64,
        suspect_to_down_ms: config.timings.suspect_to_down.as_millis() as u64,
    }
}

/// Waits until this node has the cluster's settings from the group (it was added and caught
/// up), and refuses to go on if its own disagree.
async fn wait_for_group(node: &Node) -> Result<(), StartError> {
    let mut status = node.group().watch();
    let mut said = std::time::Instant::now();
    loop {
        let s = status.borrow_and_update().clone();
        if let Some(d) = &s.disagreement {
            return Err(StartError::Settings(d.clone()));
        }
        if let Some(settings) = &s.state.settings {
            if let Some(d) = cluster_settings(node.config()).disagreement(settings) {
                return Err(StartError::Settings(d));
            }
            // Registered in an epoch: the group may give this node slots from now on.
            if s.epoch.is_some() {
                return Ok(());
            }
        }
        if said.elapsed() > Duration::from_secs(5) {
            said = std::time::Instant::now();
            tracing::info!(leader = ?s.leader, "waiting to be added to the consensus group");
        }
        if let Ok(Err(_)) = tokio::time::timeout(Duration::from_secs(1), status.changed()).await {
            // The group stopped: the node is stopping.
            return Ok(());
        }
    }
}
