//! `colony node`.

use std::time::Duration;

use anyhow::Context;
use colony::Primitives;
use colony::actors::locks::LockSettings;
use colony_runtime::config::{ConfigLayer, from_env};
use tokio::signal::unix::{SignalKind, signal};

use super::NodeArgs;

impl NodeArgs {
    fn layer(&self) -> ConfigLayer {
        ConfigLayer {
            name: self.name.clone(),
            home: self.home.clone(),
            shared_home: self.shared_home.clone(),
            bind: self.bind.clone(),
            seeds: self.seeds.clone(),
            cookie: self.cookie.clone(),
            cluster_size: self.cluster_size,
            quorum: self.quorum,
            probe_period_ms: self.probe_period_ms,
            probe_rtt_ms: self.probe_rtt_ms,
            suspect_to_down_ms: self.suspect_to_down_ms,
            max_message_bytes: self.max_message_bytes,
            request_timeout_ms: None,
            lock_lease_ms: self.lock_lease_ms,
            voter_grace_ms: self.voter_grace_ms,
            admin: self.admin.clone(),
            admin_token: None,
            advertise: self.advertise.clone(),
            fault_injection: self.fault_injection.then_some(true),
            clock_offset_ms: self.clock_offset_ms,
        }
    }
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => ConfigLayer::from_file(path)?,
        None => ConfigLayer::default(),
    };
    let env = from_env(|k| std::env::var(k).ok());
    let layer = args.layer().over(env.over(file));
    // The node opens its home again at start; opening it here puts the log files in place first.
    let home = colony_runtime::homes::LocalHome::open(&layer.clone().resolve()?.home)?;
    let _logs = super::logs::to_stdout_and_files(
        args.log_format,
        &home.log(),
        args.log_rotation,
        args.log_max_size,
        args.log_max_files,
    )?;
    let mut primitives = Primitives::default();
    if let Some(ms) = layer.lock_lease_ms {
        primitives.locks = LockSettings {
            lease: Duration::from_millis(ms),
        };
    }
    let workloads = args
        .workload
        .iter()
        .map(|path| super::workload::Workload::load(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut interrupt = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let stop = async {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    };
    // A signal while joining still leaves gracefully: peers may already list this node.
    let Some(node) = colony::node_with(primitives)
        .layer(layer)
        .start_until(stop)
        .await?
    else {
        return Ok(());
    };
    let running: Vec<_> = workloads
        .into_iter()
        .map(|w| tokio::spawn(w.run(node.clone())))
        .collect();
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    for task in running {
        task.abort();
    }
    node.shutdown().await;
    tracing::info!("node stopped");
    Ok(())
}
