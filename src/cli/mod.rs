//! Command-line parsing and dispatch.

mod components;
mod demo;
mod logs;
mod node;
mod status;
mod workload;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Colony: cluster primitives for Rust applications.
#[derive(Debug, Parser)]
#[command(name = "colony", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node until SIGINT or SIGTERM, then leave the cluster gracefully.
    Node(Box<NodeArgs>),
    /// Print a node's view of the cluster, from its admin endpoint.
    Status {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List a node's components, or switch one on or off on every node.
    Components {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(subcommand)]
        action: components::Action,
    },
    /// Start a local 3-node cluster, kill a node, restart it, and clean up.
    Demo,
}

/// A node's admin endpoint, for the commands that talk to one.
#[derive(Debug, clap::Args)]
pub struct Endpoint {
    /// The node's admin endpoint.
    #[arg(long, value_name = "HOST:PORT")]
    admin: SocketAddr,
    /// The node's admin token, if it has one.
    #[arg(
        long,
        env = "COLONY_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
}

/// Flags of `colony node`. Flags beat the environment, which beats the config file.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// A TOML config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The node's name.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The local home directory [env: COLONY_HOME].
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// The shared home directory [env: COLONY_SHARED_HOME] (default: <home>/shared).
    #[arg(long, value_name = "DIR")]
    shared_home: Option<PathBuf>,
    /// Address for both the TCP transport and UDP gossip.
    #[arg(long, value_name = "HOST:PORT")]
    bind: Option<String>,
    /// Nodes to join through.
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]", value_delimiter = ',')]
    seeds: Option<Vec<String>>,
    /// The cluster cookie [env: COLONY_COOKIE]; prefer the environment, flags show in `ps`.
    #[arg(long, value_name = "SECRET")]
    cookie: Option<String>,
    /// The expected number of nodes; quorum is a majority of it.
    #[arg(long, value_name = "N")]
    cluster_size: Option<usize>,
    /// An explicit quorum instead of a majority.
    #[arg(long, value_name = "N")]
    quorum: Option<usize>,
    /// Serve the admin endpoint here. Beyond loopback it needs a token
    /// [env: COLONY_ADMIN_TOKEN, or the file <home>/admin-token].
    #[arg(long, value_name = "HOST:PORT")]
    admin: Option<String>,
    /// The address peers reach this node at, when not the bound one (NAT, containers); `bind`
    /// may then be 0.0.0.0.
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// SWIM probe period in milliseconds.
    #[arg(long, value_name = "MS")]
    probe_period_ms: Option<u64>,
    /// SWIM direct-probe timeout in milliseconds.
    #[arg(long, value_name = "MS")]
    probe_rtt_ms: Option<u64>,
    /// How long a member stays suspect before it is down, in milliseconds.
    #[arg(long, value_name = "MS")]
    suspect_to_down_ms: Option<u64>,
    /// The largest request or response, in bytes.
    #[arg(long, value_name = "BYTES")]
    max_message_bytes: Option<usize>,
    /// How long a lock grant lasts without renewal, in milliseconds (default 5000).
    #[arg(long, value_name = "MS")]
    lock_lease_ms: Option<u64>,
    /// How long a voter may be unreachable before the group replaces it, in milliseconds
    /// (default 30000).
    #[arg(long, value_name = "MS")]
    voter_grace_ms: Option<u64>,
    /// Accept fault-injection commands on the admin endpoint. For tests only.
    #[arg(long, hide = true)]
    fault_injection: bool,
    /// Shift this node's wall clock by this many milliseconds; needs `--fault-injection`.
    /// For tests only.
    #[arg(long, hide = true, value_name = "MS", allow_hyphen_values = true)]
    clock_offset_ms: Option<i64>,
    /// How log lines are written, on stdout and in the local home's `log/`.
    #[arg(long, value_enum, default_value_t)]
    log_format: logs::LogFormat,
    /// When a new log file is started in the local home's `log/`.
    #[arg(long, value_enum, default_value_t)]
    log_rotation: logs::LogRotation,
    /// Start a new log file whenever the current one would pass this size (bytes; suffixes
    /// K, M and G of 1024). Without it, one file per period, whatever its size.
    #[arg(long, value_name = "SIZE", value_parser = logs::parse_size)]
    log_max_size: Option<u64>,
    /// How many log files to keep; the oldest are removed.
    #[arg(long, value_name = "N", default_value_t = 7)]
    log_max_files: usize,
    /// Run a scripted workload (JSON file) once the node is up; may be repeated. For tests,
    /// benchmarks and the demo only.
    #[arg(long, hide = true, value_name = "FILE")]
    workload: Vec<PathBuf>,
}

/// Runs the command; `colony node` sets up its own logs once it knows its home.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if !matches!(cli.command, Command::Node(_)) {
        logs::to_stderr();
    }
    match cli.command {
        Command::Node(args) => node::run(*args).await,
        Command::Status { endpoint, json } => status::run(endpoint.admin, json, endpoint.token),
        Command::Components { endpoint, action } => {
            tokio::task::spawn_blocking(move || {
                components::run(endpoint.admin, endpoint.token, action)
            })
            .await?
        }
        Command::Demo => tokio::task::spawn_blocking(demo::run).await?,
    }
}
