//! The orchestrator's handle on one Colony cluster of three nodes: two `colony node` processes
//! (the real binary, through the testkit) and a `writer` process (this binary, a node
//! in-process; see [`crate::writer`]).
//!
//! A cache receives changes only on the nodes where it was created, so the peers run the hidden
//! `--workload` option with a `cache_hammer` that creates the replicated cache in the mode
//! measured and writes nothing: its reader only reads the keys present in its "database", a
//! directory of the shared home, which holds just [`PROBE_KEY`]. The peers' history of those
//! reads is how [`Cluster::check_peers_apply`] proves that the writes reach their caches.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use colony::actors::caches::Mode;
use colony_runtime::testkit::{ClusterSpec, TestCluster};

use crate::common::Batch;
use crate::common::process::Worker;
use crate::writer::PROBE_KEY;
use crate::{NODES, Options, ROLE_VAR, mode_name};

/// The database directory of the workload, relative to the shared home.
const DB: &str = "db";
/// The workload's history file, relative to each peer's home.
const HISTORY: &str = "cache-history.jsonl";
/// The history of the asynchronous copy cache's workload (copy cluster only).
const ASYNC_HISTORY: &str = "cache-async-history.jsonl";
/// How often the peers read [`PROBE_KEY`].
const READ_EVERY_MS: u64 = 100;
/// How long the end-to-end check may take at each step.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// A running cluster; dropping it kills its processes.
pub struct Cluster {
    /// The replication mode of the cache written.
    pub mode: Mode,
    writer: Worker,
    cluster: TestCluster,
    _workload: tempfile::TempDir,
}

impl Cluster {
    /// Starts the two peers and the writer, with `echo` as the writer's loopback servers. Does not wait for the writer: see [`Self::ready`].
    ///
    /// # Errors
    /// A process could not be started.
    pub fn start(mode: Mode, options: &Options, echo: &[SocketAddr]) -> anyhow::Result<Self> {
        let workload = tempfile::tempdir()?;
        let file = workload.path().join("workload.json");
        let description = serde_json::json!({
            "kind": "cache_hammer",
            "mode": mode_name(mode),
            "synchronous": true,
            "keys_per_node": 1,
            "write_every_ms": 1000,
            "read_every_ms": READ_EVERY_MS,
            "writes": 0,
            "db": DB,
            "history": HISTORY,
        });
        std::fs::write(&file, description.to_string())?;
        let mut spec = ClusterSpec::new(env!("CARGO_BIN_EXE_colony"), NODES - 1);
        spec.cluster_size = Some(NODES);
        spec.cookie = options.cookie.clone();
        spec.extra_args = vec!["--workload".into(), file.display().to_string()];
        if mode == Mode::Copy {
            // The asynchronous copy cache the writer's `aput` writes: the peers must have it
            // to apply its changes.
            let file = workload.path().join("workload-async.json");
            let mut description = description.clone();
            description["cache"] = crate::writer::ASYNC_COPY.into();
            description["synchronous"] = false.into();
            description["history"] = ASYNC_HISTORY.into();
            std::fs::write(&file, description.to_string())?;
            spec.extra_args
                .extend(["--workload".into(), file.display().to_string()]);
        }
        let cluster = TestCluster::start(spec)?;
        let db = cluster.shared_home().join(DB);
        std::fs::create_dir_all(&db)?;
        std::fs::write(db.join(PROBE_KEY), "1")?;
        let mut args = vec![
            "--mode".to_owned(),
            mode_name(mode).to_owned(),
            "--seed".to_owned(),
            cluster.addr(0).to_string(),
            "--cookie".to_owned(),
            options.cookie.clone(),
            "--warmup".to_owned(),
            options.warmup.to_string(),
        ];
        for echo in echo {
            args.extend(["--echo".to_owned(), echo.to_string()]);
        }
        let writer = Worker::start(ROLE_VAR, crate::WRITER, &args)?;
        Ok(Cluster {
            mode,
            writer,
            cluster,
            _workload: workload,
        })
    }

    /// Waits until the writer has joined and warmed up.
    ///
    /// # Errors
    /// The writer failed.
    pub fn ready(&mut self) -> anyhow::Result<()> {
        let line = self.writer.read_line()?;
        if line.trim() != "ready" {
            bail!("the writer said {line:?}");
        }
        Ok(())
    }

    /// Has the writer run `command` (see `writer::Writer::command`) and returns the batch.
    ///
    /// # Errors
    /// The writer failed.
    pub fn batch(&mut self, command: &str) -> anyhow::Result<Batch> {
        let mode = mode_name(self.mode);
        self.writer.batch(command, |errors| {
            format!("{mode} writer: {errors} of `{command}` failed")
        })
    }

    /// Proves, end to end, that the peers created the cache and apply the writer's writes: each
    /// peer has read [`PROBE_KEY`] from its database as 1 and cached it; the database then says
    /// 2, behind the caches' back, and the writer writes 3. A peer must then read 3 (copy mode:
    /// the value came with the change) or 2 (invalidation: its entry was dropped and loaded
    /// again). A peer without the cache would go on reading 1.
    ///
    /// # Errors
    /// A peer did not read what it should in time.
    pub fn check_peers_apply(&mut self) -> anyhow::Result<()> {
        self.wait_for_peers_reading(1)?;
        std::fs::write(self.cluster.shared_home().join(DB).join(PROBE_KEY), "2")?;
        let answer = self.writer.request("probe 3")?;
        if answer.trim() != "ok" {
            bail!("the writer answered {answer:?} to probe");
        }
        self.wait_for_peers_reading(if self.mode == Mode::Copy { 3 } else { 2 })
    }

    /// Waits until the last read of [`PROBE_KEY`] on every peer gave `value`.
    fn wait_for_peers_reading(&self, value: u64) -> anyhow::Result<()> {
        let histories: Vec<PathBuf> = (0..self.cluster.len())
            .map(|i| self.cluster.home(i).join(HISTORY))
            .collect();
        let read = self.cluster.wait_until(CHECK_TIMEOUT, |_| {
            histories.iter().all(|h| last_probe_read(h) == Some(value))
        });
        if read.is_none() {
            bail!(
                "{} cache: the peers did not read {PROBE_KEY} = {value}; histories in {}",
                mode_name(self.mode),
                self.cluster.home(0).display()
            );
        }
        Ok(())
    }
}

/// The value of the last read of [`PROBE_KEY`] in a workload history.
fn last_probe_read(history: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(history).ok()?;
    text.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|e| e["event"] == "read" && e["key"] == PROBE_KEY)?["value"]
        .as_u64()
}
