//! Node settings: what a node is called, where it keeps its files, where it listens, whom it
//! asks to join, and how fast it decides that a peer is gone.
//!
//! Settings come in layers. [`ConfigLayer`] holds the optional values of one source (a TOML
//! file, the environment, command-line flags); [`ConfigLayer::over`] stacks them so that flags
//! beat the environment, the environment beats the file and the file beats the defaults.
//! [`NodeConfig`] is the validated result.

mod env;
mod layer;
mod timings;

pub use env::from_env;
pub use layer::ConfigLayer;
pub use timings::MembershipTimings;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The default cap on one request's encoded size, 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The validated settings of one node.
///
/// Build it with [`crate::Node::builder`] or from layers with [`ConfigLayer::resolve`].
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// A human-readable node name, shown in member lists. Need not be unique, but should be.
    pub name: String,
    /// The local home: node-private files (`caches/ log/ tmp/ state/`).
    pub home: PathBuf,
    /// The shared home: files every node sees (`config/ data/ plugins/`).
    pub shared_home: PathBuf,
    /// One `host:port` for both the TCP transport and UDP gossip. Port 0 picks a free port.
    pub bind: SocketAddr,
    /// Addresses of nodes to join through. Empty: this node starts a cluster of its own.
    pub seeds: Vec<SocketAddr>,
    /// The shared secret that authenticates links and gossip. Never logged.
    pub cookie: Secret,
    /// How many nodes the cluster is meant to have; quorum is a majority of it.
    pub cluster_size: usize,
    /// The number of reachable nodes (this one included) needed for exclusive work.
    /// Defaults to a majority of `cluster_size`.
    pub quorum: usize,
    /// Failure-detection timings.
    pub timings: MembershipTimings,
    /// Largest encoded request or response, in bytes; larger ones fail at the caller.
    pub max_message_bytes: usize,
    /// Timeout for one request to another node when the caller gives none.
    pub request_timeout: Duration,
    /// How long a cluster lock grant lasts without renewal, and how long a node stays entitled
    /// to grant after its last heartbeat to the consensus group was committed. A cluster
    /// setting: every node must have the same. 500 ms to 10 minutes; default 5 s.
    pub lock_lease: Duration,
    /// How long a voter of the consensus group may be unreachable (down, or gone from the
    /// member list) before the leader replaces it with another member. Shorter restores the
    /// group's fault tolerance sooner; longer spares a node that restarts slowly from coming
    /// back as a learner. 2 s to 1 day; default 30 s.
    pub voter_grace: Duration,
    /// Where the admin HTTP endpoint listens, if anywhere.
    pub admin: Option<SocketAddr>,
    /// The bearer token the admin endpoint asks for (`COLONY_ADMIN_TOKEN`); when `None`, the
    /// node reads the local home's `admin-token` file at start, and without one the endpoint
    /// serves loopback only and refuses every change.
    pub admin_token: Option<Secret>,
    /// The address peers reach this node at, when it is not `bind` (NAT, containers); `bind`
    /// may then be `0.0.0.0`.
    pub advertise: Option<SocketAddr>,
    /// Accept fault-injection commands on the admin endpoint (tests only; see `docs/testing.md`).
    pub fault_injection: bool,
    /// Shift this node's wall clock by this many milliseconds (tests only: it proves that
    /// nothing depends on clocks agreeing). Accepted only with `fault_injection`; see
    /// [`crate::clock`]. Default 0.
    pub clock_offset_ms: i64,
}

/// A secret string (the cluster cookie) that prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; keep it out of logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why a set of settings was refused. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        /// The file named with `--config`.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for Colony's settings.
    #[error("config file {path} is not valid: {message}")]
    ParseFile {
        /// The file named with `--config`.
        path: PathBuf,
        /// The parser's explanation, with line and column.
        message: String,
    },
    /// A setting has a value Colony cannot use.
    #[error("setting `{setting}` is invalid: {reason}")]
    Invalid {
        /// The setting's name as written in the file, e.g. `bind` or `cluster_size`.
        setting: &'static str,
        /// What is wrong and what would be accepted.
        reason: String,
    },
    /// A required setting has no value in any source.
    #[error(
        "setting `{setting}` is required: set it in the config file, the environment ({env}) or a flag"
    )]
    Missing {
        /// The setting's name.
        setting: &'static str,
        /// The environment variable that can carry it.
        env: &'static str,
    },
}

impl NodeConfig {
    /// Checks the relations between settings: quorum within the cluster size, sane timings.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: String| Err(ConfigError::Invalid { setting, reason });
        if self.name.is_empty() || self.name.len() > 128 {
            return invalid("name", "must be 1 to 128 bytes long".into());
        }
        if self.cookie.expose().is_empty() {
            return invalid("cookie", "must not be empty".into());
        }
        if self.cluster_size == 0 {
            return invalid("cluster_size", "must be at least 1".into());
        }
        if self.cluster_size == 1 && !self.seeds.is_empty() {
            return invalid(
                "cluster_size",
                "is 1 but seeds are given: set cluster_size to the number of nodes the cluster is meant to have".into(),
            );
        }
        if self.lock_lease < Duration::from_millis(500)
            || self.lock_lease > Duration::from_secs(600)
        {
            return invalid("lock_lease_ms", "must be between 500 and 600000".into());
        }
        if self.voter_grace < Duration::from_secs(2)
            || self.voter_grace > Duration::from_secs(86_400)
        {
            return invalid("voter_grace_ms", "must be between 2000 and 86400000".into());
        }
        if self.quorum == 0 || self.quorum > self.cluster_size {
            return invalid(
                "quorum",
                format!("must be between 1 and cluster_size ({})", self.cluster_size),
            );
        }
        if self.max_message_bytes < 1024 || self.max_message_bytes > 15 * 1024 * 1024 {
            return invalid(
                "max_message_bytes",
                "must be between 1 KiB and 15 MiB (the transport's frame limit is 16 MiB)".into(),
            );
        }
        if self
            .admin_token
            .as_ref()
            .is_some_and(|t| t.expose().trim().is_empty())
        {
            return invalid("admin_token", "must not be blank".into());
        }
        if self
            .advertise
            .is_some_and(|a| a.ip().is_unspecified() || a.port() == 0)
        {
            return invalid(
                "advertise",
                "must be an address and port peers can reach, not 0.0.0.0, [::] or port 0".into(),
            );
        }
        if self.clock_offset_ms != 0 && !self.fault_injection {
            return invalid(
                "clock_offset_ms",
                "is a test-only setting: it is accepted only with `fault_injection = true`".into(),
            );
        }
        self.timings.validate()
    }

    /// The node's wall clock: the system clock shifted by `clock_offset_ms`.
    pub fn wall_clock(&self) -> crate::clock::WallClock {
        crate::clock::WallClock::with_offset_ms(self.clock_offset_ms)
    }
}

/// The majority of `cluster_size`: more than half.
pub fn majority(cluster_size: usize) -> usize {
    cluster_size / 2 + 1
}
