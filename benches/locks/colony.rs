//! The Colony side: two `colony node` processes (`n1`, `n2`, through the testkit) and a node in
//! this process (`bench`) that runs every client, all with the same lock lease.
//!
//! Names are chosen by their owner (`node.owner_of` of the name's placement key, in the bench
//! node's view): (a) one the bench node owns; (b) and (c) one `n1` owns; (d) 8 that `n1` owns and
//! 8 that `n2` owns. So every cycle of (b), (c) and (d) crosses the wire, twice (acquire and
//! release). With `--distinct-names hashed`, the 16 names of (d) are placed by the hash alone,
//! as an application's names would be (about a third then owned by the bench node). Each name is taken once before any timed run: a name becomes grantable only a
//! takeover delay (lease + failure-detection bound) after its owner's view last changed.
//!
//! Takeover: a further `colony node` process (`holderN`, the real binary) joins with the hidden
//! `--workload` option, a `lock_hammer` whose 16 clients each take one name and hold it for an
//! hour. Once it holds a name that `n1` or `n2` owns in the 4-member view (so holder, owner and
//! waiter are three processes), the bench node queues for that name, the holder is SIGKILLed,
//! and the time until the bench node's `lock()` returns is measured: the owner frees the name
//! when the holder's last renewed lease ends.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use colony::actors::locks::LockSettings;
use colony::{ClusterLock, LocksExt, MemberState, Node, NodeId, Primitives};
use colony_runtime::testkit::{ClusterSpec, TestCluster, free_port};

use crate::common::Batch;
use crate::common::process::Owned;
use crate::{ERROR_PAUSE, Run, System, Workload};

/// The `colony` binary.
const BINARY: &str = env!("CARGO_BIN_EXE_colony");
/// How long the cluster may take to form, and a name to become grantable.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Names the takeover's holder takes, one per client: enough that one is owned by `n1` or `n2`.
const HOLDER_NAMES: usize = 16;
/// How long the waiter is given to queue before the holder is killed (same for etcd).
pub const SETTLE: Duration = Duration::from_millis(200);
/// How long a takeover may take before the run counts as failed.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// The names of each workload.
struct Names {
    owner: Vec<String>,
    non_owner: Vec<String>,
    contended: Vec<String>,
    distinct: Vec<String>,
}

/// The running Colony cluster; dropping it stops the bench node and kills the processes.
pub struct Colony {
    runtime: tokio::runtime::Runtime,
    node: Node,
    cluster: TestCluster,
    cookie: String,
    lease: Duration,
    /// The ids of `n1` and `n2`.
    peers: [NodeId; 2],
    names: Names,
    _home: tempfile::TempDir,
}

impl Colony {
    /// Starts `n1` and `n2`, then the bench node, waits until all three see each other and
    /// every name of the workloads has been taken once. With `hashed`, the names of (d) are
    /// placed by the hash alone instead of all on `n1` and `n2`.
    ///
    /// # Errors
    /// A process or the bench node did not start, or the cluster did not form in time.
    pub fn start(lease: Duration, hashed: bool) -> anyhow::Result<Colony> {
        let mut spec = ClusterSpec::new(BINARY, 2);
        spec.cluster_size = Some(3);
        spec.extra_args = vec!["--lock-lease-ms".into(), lease.as_millis().to_string()];
        let cookie = spec.cookie.clone();
        let cluster = TestCluster::start(spec)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let home = tempfile::tempdir()?;
        let node = runtime
            .block_on(
                colony::node_with(Primitives {
                    locks: LockSettings { lease },
                })
                .name("bench")
                .home(home.path())
                .bind("127.0.0.1:0")
                .seeds([cluster.addr(0)])
                .cookie(cookie.clone())
                .cluster_size(3)
                .start(),
            )
            .context("start the bench node")?;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        let peers = loop {
            let up = |i: usize| {
                let id = up_member(&node, cluster.name(i))?;
                let sees_all = cluster.status(i).is_some_and(|s| {
                    s.members
                        .iter()
                        .filter(|m| m.state == MemberState::Up)
                        .count()
                        == 3
                });
                (node.is_connected(id) && sees_all).then_some(id)
            };
            if let (Some(n1), Some(n2)) = (up(0), up(1)) {
                break [n1, n2];
            }
            if Instant::now() > deadline {
                bail!("the 3 Colony nodes did not see each other up");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let pick = |prefix: &str, owner: NodeId, count: usize| {
            (0..)
                .map(|i| format!("bench-{prefix}-{i}"))
                .filter(|n| owner_of(&node, n) == Some(owner))
                .take(count)
                .collect::<Vec<_>>()
        };
        let distinct: Vec<String> = if hashed {
            (0..16).map(|i| format!("bench-d-{i}")).collect()
        } else {
            let mut remote = pick("d", peers[0], 8);
            remote.extend(pick("d", peers[1], 8));
            remote
        };
        let local = distinct
            .iter()
            .filter(|n| owner_of(&node, n) == Some(node.id()))
            .count();
        println!("Colony: (d) uses 16 names, {local} of them owned by the bench node");
        let names = Names {
            owner: pick("a", node.id(), 1),
            non_owner: pick("b", peers[0], 1),
            contended: pick("c", peers[0], 1),
            distinct,
        };
        let colony = Colony {
            runtime,
            node,
            cluster,
            cookie,
            lease,
            peers,
            names,
            _home: home,
        };
        colony.take_every_name_once()?;
        Ok(colony)
    }

    fn names(&self, workload: Workload) -> &[String] {
        match workload {
            Workload::Owner => &self.names.owner,
            Workload::NonOwner => &self.names.non_owner,
            Workload::Contended => &self.names.contended,
            Workload::Distinct => &self.names.distinct,
        }
    }

    /// Takes and releases every workload name once, waiting out the takeover delay.
    fn take_every_name_once(&self) -> anyhow::Result<()> {
        let locks = self.node.locks();
        let names = Workload::ALL
            .into_iter()
            .flat_map(|w| self.names(w).to_vec());
        let locks: Vec<ClusterLock> = names
            .map(|n| locks.lock_for_name(&n))
            .collect::<Result<_, _>>()?;
        self.runtime.block_on(async {
            let tasks: Vec<_> = locks
                .into_iter()
                .map(|lock| {
                    tokio::spawn(async move {
                        let guard = tokio::time::timeout(SETUP_TIMEOUT, lock.lock())
                            .await
                            .map_err(|_| anyhow!("{} was never granted", lock.name()))??;
                        guard.unlock().await?;
                        anyhow::Ok(())
                    })
                })
                .collect();
            for task in tasks {
                task.await??;
            }
            anyhow::Ok(())
        })
    }

    /// Starts a holder process for takeover run `run`; returns it and its history file.
    fn spawn_holder(
        &self,
        run: usize,
        dir: &Path,
    ) -> anyhow::Result<(Owned, std::path::PathBuf, String)> {
        let name = format!("holder{}", run + 1);
        let home = dir.join("home");
        let names: Vec<String> = (0..HOLDER_NAMES)
            .map(|i| format!("takeover-{}-{i}", run + 1))
            .collect();
        let workload = serde_json::json!({
            "kind": "lock_hammer",
            "names": names,
            "clients": HOLDER_NAMES,
            "hold_ms": 3_600_000u64,
            "pause_ms": 0,
            "history": "holds.jsonl",
        });
        let workload_file = dir.join("workload.json");
        std::fs::write(&workload_file, workload.to_string())?;
        let log = File::create(dir.join("node.log"))?;
        let holder = Owned::spawn(
            Command::new(BINARY)
                .arg("node")
                .args(["--name", &name])
                .arg("--home")
                .arg(&home)
                .args(["--bind", &format!("127.0.0.1:{}", free_port())])
                .args(["--seeds", &self.cluster.addr(0).to_string()])
                .args(["--cookie", &self.cookie])
                .args(["--cluster-size", "3"])
                .args(["--lock-lease-ms", &self.lease.as_millis().to_string()])
                .arg("--workload")
                .arg(&workload_file)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
        )
        .context("spawn the holder")?;
        Ok((holder, home.join("holds.jsonl"), name))
    }

    /// A name the holder `holder` holds (per its history) that `n1` or `n2` owns in the bench
    /// node's view, once that view has the holder up.
    fn held_by(&self, holder: &str, history: &Path) -> Option<String> {
        up_member(&self.node, holder)?;
        let text = std::fs::read_to_string(history).ok()?;
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| event["event"] == "acquired")
            .filter_map(|event| event["name"].as_str().map(str::to_owned))
            .find(|n| owner_of(&self.node, n).is_some_and(|o| self.peers.contains(&o)))
    }
}

impl System for Colony {
    fn name(&self) -> &str {
        "Colony"
    }

    fn run(&mut self, workload: Workload, length: Duration) -> anyhow::Result<Run> {
        let names = self.names(workload);
        let locks = self.node.locks();
        let locks: Vec<ClusterLock> = (0..workload.clients())
            .map(|i| locks.lock_for_name(&names[i % names.len()]))
            .collect::<Result<_, _>>()?;
        self.runtime.block_on(async move {
            let start = Instant::now();
            let until = start + length;
            let tasks: Vec<_> = locks
                .into_iter()
                .map(|lock| tokio::spawn(client(lock, until)))
                .collect();
            let mut clients = Vec::new();
            for task in tasks {
                clients.push(task.await?);
            }
            Ok(Run::gather(start, clients))
        })
    }

    fn takeover(&mut self, run: usize) -> anyhow::Result<Duration> {
        let dir = tempfile::tempdir()?;
        let (mut holder, history, holder_name) = self.spawn_holder(run, dir.path())?;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        let name = loop {
            if let Some(name) = self.held_by(&holder_name, &history) {
                break name;
            }
            if let Ok(Some(status)) = holder.child().try_wait() {
                bail!("the holder exited ({status}); see its log");
            }
            if Instant::now() > deadline {
                bail!("the holder held no name owned by n1 or n2 in time");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let lock = self.node.locks().lock_for_name(&name)?;
        let waiter = self.runtime.spawn(async move {
            let guard = lock.lock().await;
            (Instant::now(), guard)
        });
        std::thread::sleep(SETTLE);
        let killed = Instant::now();
        holder.kill();
        let (granted, guard) = self
            .runtime
            .block_on(async { tokio::time::timeout(TAKEOVER_TIMEOUT, waiter).await })
            .context("the waiter was not granted the lock in time")??;
        let took = granted - killed;
        self.runtime.block_on(guard?.unlock())?;
        // Start the next run from a settled view: the bench node has seen the holder down.
        let settled = self.cluster.wait_until(SETUP_TIMEOUT, |_| {
            up_member(&self.node, &holder_name).is_none()
        });
        settled.context("the killed holder was never seen down")?;
        Ok(took)
    }
}

impl Drop for Colony {
    fn drop(&mut self) {
        self.runtime.block_on(self.node.shutdown());
    }
}

/// One client: acquire and release until `until`.
async fn client(lock: ClusterLock, until: Instant) -> Batch {
    let mut run = Batch::default();
    while Instant::now() < until {
        let start = Instant::now();
        let ok = match lock.lock().await {
            Ok(guard) => guard.unlock().await.is_ok(),
            Err(_) => false,
        };
        run.record(start, ok);
        if !ok {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
    run
}

/// The owner of lock `name` in `node`'s view.
fn owner_of(node: &Node, name: &str) -> Option<NodeId> {
    node.locks().owner_of(name)
}

/// The id of the member named `name` if `node` sees it up.
fn up_member(node: &Node, name: &str) -> Option<NodeId> {
    node.members()
        .into_iter()
        .find(|m| m.name == name && m.state.is_up())
        .map(|m| m.id)
}
