//! Bench clusters of this binary's `node` role: one Colony node per process, seeded to the
//! first, each answering one command per stdin line (see the bench's own node module).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use colony_runtime::testkit::free_port;

use super::process::Worker;

/// The node processes; `None` once killed.
pub struct Nodes {
    nodes: Vec<Option<Worker>>,
}

impl Nodes {
    /// Starts `n` processes in the role `node` (selected by `role_var`), each given `--cookie`,
    /// `--lease-ms`, its `--port` and, but the first, `--seed`; returns once each said `ready`.
    ///
    /// # Errors
    /// A process could not start or said something else.
    pub fn start(role_var: &str, n: usize, cookie: &str, lease: Duration) -> anyhow::Result<Nodes> {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let seed: SocketAddr = format!("127.0.0.1:{}", ports[0]).parse()?;
        let mut nodes = Vec::new();
        for port in &ports {
            let mut args = vec![
                "--cookie".into(),
                cookie.to_owned(),
                "--lease-ms".into(),
                lease.as_millis().to_string(),
                "--port".into(),
                port.to_string(),
            ];
            if *port != ports[0] {
                args.extend(["--seed".into(), seed.to_string()]);
            }
            nodes.push(Some(Worker::start(role_var, "node", &args)?));
        }
        let mut started = Nodes { nodes };
        for i in 0..n {
            let line = started.node(i)?.read_line()?;
            if line.trim() != "ready" {
                bail!("node {i} said {line:?}");
            }
        }
        Ok(started)
    }

    /// Node `i`, unless it was killed.
    ///
    /// # Errors
    /// It was killed.
    pub fn node(&mut self, i: usize) -> anyhow::Result<&mut Worker> {
        self.nodes[i].as_mut().context("that node was killed")
    }

    /// The nodes not killed.
    pub fn alive(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut w) = self.nodes[i].take() {
            w.kill();
        }
    }
}

/// The node process's options as [`Nodes::start`] gives them: cookie, lease, port and seed.
#[derive(Debug, Clone, Default)]
pub struct NodeArgs {
    /// The cluster cookie.
    pub cookie: String,
    /// The lease (`lock_lease`: also the group's liveness period).
    pub lease: Duration,
    /// This node's port.
    pub port: Option<u16>,
    /// The node it joins through.
    pub seed: Option<SocketAddr>,
}

impl NodeArgs {
    /// The test kit's cookie and a 2 s lease, as the lock benches use.
    pub fn bench() -> NodeArgs {
        NodeArgs {
            cookie: colony_runtime::testkit::ClusterSpec::new("colony", 1).cookie,
            lease: Duration::from_secs(2),
            ..NodeArgs::default()
        }
    }

    /// Takes `flag value` if it is one of these options.
    ///
    /// # Errors
    /// A bad value.
    pub fn take(&mut self, flag: &str, value: &str) -> anyhow::Result<bool> {
        match flag {
            "--cookie" => self.cookie = value.to_owned(),
            "--lease-ms" => self.lease = Duration::from_millis(super::number(flag, value)? as u64),
            "--port" => self.port = Some(u16::try_from(super::number(flag, value)?)?),
            "--seed" => self.seed = Some(value.parse().context("--seed")?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Starts this node with every primitive, in a fresh home, as one of `cluster_size`.
    ///
    /// # Errors
    /// The node did not start.
    pub async fn start_node(
        &self,
        cluster_size: usize,
    ) -> anyhow::Result<(colony::Node, tempfile::TempDir)> {
        // `RUST_LOG` set: the node logs to stderr, which the orchestrator passes on.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .try_init();
        }
        let home = tempfile::tempdir()?;
        let port = self.port.context("--port is required in the node role")?;
        let node = colony::node()
            .name(format!("n{port}"))
            .home(home.path())
            .bind(format!("127.0.0.1:{port}"))
            .seeds(self.seed)
            .cookie(self.cookie.clone())
            .cluster_size(cluster_size)
            .lock_lease(self.lease)
            .start()
            .await
            .context("start the node")?;
        Ok((node, home))
    }
}

/// The `main` of a bench whose processes are the orchestrator (no role) and `node`s: parses
/// the options of the invocation selecting `bench`, then runs `orchestrate`, or `node` on a
/// runtime in a process with the role.
///
/// # Errors
/// Bad options, an unknown role, or what the role returned.
pub fn main<O>(
    bench: &str,
    role_var: &str,
    parse: impl FnOnce(super::Invocation) -> anyhow::Result<O>,
    orchestrate: impl FnOnce(&O) -> anyhow::Result<()>,
    node: impl FnOnce(&O, &tokio::runtime::Runtime) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Some(invocation) = super::invocation(bench, std::env::args().skip(1))? else {
        return Ok(());
    };
    let options = parse(invocation)?;
    match std::env::var(role_var).ok().as_deref() {
        None => orchestrate(&options),
        Some("node") => node(
            &options,
            &tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?,
        ),
        Some(other) => bail!("unknown {role_var} {other}"),
    }
}
