//! The Colony side: two `colony node` processes (`n1`, `n2`, through the testkit) and a node in
//! this process (`bench`) that runs every client, all with the same lock lease.
//!
//! The consensus group gives each of the 64 lock slots to a node; the bench waits until the
//! group has its 3 voters and every slot an owner. Names are then chosen by their owner
//! (`locks().owner_of(name)`, in the bench node's view of the group's state): (a) one the bench
//! node owns; (b) and (c) one `n1` owns; (d) 8 that `n1` owns and 8 that `n2` owns. So every
//! cycle of (b), (c) and (d) crosses the wire, twice (acquire and release). With
//! `--distinct-names hashed`, the 16 names of (d) are placed by the hash alone, as an
//! application's names would be (about a third then owned by the bench node). Each name is
//! taken once before any timed run.
//!
//! Takeovers: a further `colony node` process (`holderN` or `ownerN`, the real binary) joins
//! with the hidden `--workload` option, a `lock_hammer` whose 16 clients each take one name and
//! hold it for an hour. The group moves some slots to it when it joins.
//! - (e) Once it holds a name that `n1` or `n2` serves (holder, owner and waiter are three
//!   processes), the bench node queues for that name, the holder is SIGKILLed, and the time
//!   until the bench node's `lock()` returns is measured: the owner frees the name when the
//!   holder's last renewed lease ends.
//! - (f) Once it holds a name whose slot it serves itself, the same: the owner dies with the
//!   holder. The group's leader revokes its epoch a lease (stretched by the drift allowance)
//!   after it applied the node's last heartbeat, gives the slot to another node, which serves
//!   it with an empty table; the waiter, asking again, is granted there. The killed node joined
//!   last, so it is a learner of the group, not a voter.
//!
//! Commits (h): the bench node proposes a command that changes nothing through its group handle
//! (`node.group().propose`): an `Extend` of a slot that does not exist, which the state applies
//! as a refusal. It takes the whole path of any command: forwarded to the leader if the bench
//! node is a follower, appended and made durable (redb) on a majority, committed, applied on
//! the bench node, answered.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use colony::actors::locks::LockSettings;
use colony::{ClusterLock, LocksExt, MemberState, Node, NodeId, Primitives};
use colony_runtime::consensus::{self, Domain, SLOTS};
use colony_runtime::testkit::{ClusterSpec, TestCluster, free_port};

use crate::common::Batch;
use crate::common::process::Owned;
use crate::{ERROR_PAUSE, Run, System, Workload};

/// The `colony` binary.
pub const BINARY: &str = env!("CARGO_BIN_EXE_colony");
/// How long the cluster may take to form, and a name to become grantable.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Names the takeover's holder takes, one per client: enough that one is owned by `n1` or `n2`.
const HOLDER_NAMES: usize = 16;
/// How long the waiter is given to queue before the holder is killed (same for etcd).
pub const SETTLE: Duration = Duration::from_millis(200);
/// How long a takeover may take before the run counts as failed.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one proposal of (h) may take before it counts as failed.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Candidate names tried when picking names by owner: far more than needed with 64 slots.
const CANDIDATES: usize = 100_000;

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
    /// Whether the bench node's role in the group was printed.
    said_role: bool,
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
                    ..Primitives::default()
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
            if let (Some(n1), Some(n2)) = (up(0), up(1))
                && group_settled(&node)
            {
                break [n1, n2];
            }
            if Instant::now() > deadline {
                bail!(
                    "the 3 Colony nodes did not see each other up with 3 voters and every slot owned"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let pick = |prefix: &str, owner: NodeId, count: usize| {
            let names: Vec<String> = (0..CANDIDATES)
                .map(|i| format!("bench-{prefix}-{i}"))
                .filter(|n| owner_of(&node, n) == Some(owner))
                .take(count)
                .collect();
            if names.len() < count {
                bail!("fewer than {count} names owned by {owner}");
            }
            anyhow::Ok(names)
        };
        let distinct: Vec<String> = if hashed {
            (0..16).map(|i| format!("bench-d-{i}")).collect()
        } else {
            let mut remote = pick("d", peers[0], 8)?;
            remote.extend(pick("d", peers[1], 8)?);
            remote
        };
        let local = distinct
            .iter()
            .filter(|n| owner_of(&node, n) == Some(node.id()))
            .count();
        println!("Colony: (d) uses 16 names, {local} of them owned by the bench node");
        let names = Names {
            owner: pick("a", node.id(), 1)?,
            non_owner: pick("b", peers[0], 1)?,
            contended: pick("c", peers[0], 1)?,
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
            said_role: false,
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
            Workload::Commit | Workload::Commits => &[],
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

    /// Starts a holder process named `name` whose clients hold `HOLDER_NAMES` names starting
    /// with `name`; returns it and its history file.
    fn spawn_holder(&self, name: &str, dir: &Path) -> anyhow::Result<(Owned, std::path::PathBuf)> {
        let home = dir.join("home");
        let names: Vec<String> = (0..HOLDER_NAMES).map(|i| format!("{name}-{i}")).collect();
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
                .args(["--name", name])
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
        Ok((holder, home.join("holds.jsonl")))
    }

    /// A name the holder `holder` holds (per its history) whose owner in the bench node's view
    /// passes `wanted` (given the holder's id), once that view has the holder up and the slots
    /// that move to it have moved ([`placed`]): a hand-over to or from the holder under way
    /// when it is killed would make (e) wait for the group, as (f) does.
    fn held_by(
        &self,
        holder: &str,
        history: &Path,
        wanted: impl Fn(NodeId, NodeId) -> bool,
    ) -> Option<String> {
        let id = up_member(&self.node, holder)?;
        if !placed(&self.node, id) {
            return None;
        }
        let text = std::fs::read_to_string(history).ok()?;
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| event["event"] == "acquired")
            .filter_map(|event| event["name"].as_str().map(str::to_owned))
            .find(|n| owner_of(&self.node, n).is_some_and(|o| wanted(o, id)))
    }

    /// One takeover: a holder process `holder` joins and holds names; once it holds one whose
    /// owner passes `wanted`, the bench node queues for it and the holder is SIGKILLed. The
    /// time from the kill until the bench node holds the name.
    fn kill_and_take(
        &mut self,
        holder_name: &str,
        wanted: impl Fn(NodeId, NodeId) -> bool,
    ) -> anyhow::Result<Duration> {
        let dir = tempfile::tempdir()?;
        let (mut holder, history) = self.spawn_holder(holder_name, dir.path())?;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        let name = loop {
            if let Some(name) = self.held_by(holder_name, &history, &wanted) {
                break name;
            }
            if let Ok(Some(status)) = holder.child().try_wait() {
                bail!("the holder exited ({status}); see its log");
            }
            if Instant::now() > deadline {
                bail!("{holder_name} held no name with the wanted owner in time");
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
            up_member(&self.node, holder_name).is_none()
        });
        settled.context("the killed holder was never seen down")?;
        Ok(took)
    }

    /// `proposers` tasks propose a command that changes nothing until `length` has passed.
    fn commits(&self, proposers: usize, length: Duration) -> Run {
        self.runtime.block_on(async {
            let start = Instant::now();
            let until = start + length;
            let tasks: Vec<_> = (0..proposers)
                .map(|_| tokio::spawn(propose_until(self.node.clone(), until)))
                .collect();
            let mut clients = Vec::new();
            for task in tasks {
                clients.push(task.await.unwrap_or_default());
            }
            Run::gather(start, clients)
        })
    }

    /// Whether the bench node leads the group now.
    fn leads(&self) -> bool {
        let status = self.node.group().status();
        status.leader == Some(status.replica)
    }
}

impl System for Colony {
    fn name(&self) -> &str {
        "Colony"
    }

    fn run(&mut self, workload: Workload, length: Duration) -> anyhow::Result<Run> {
        if workload.is_commit() {
            if !self.said_role {
                self.said_role = true;
                let role = if self.leads() {
                    "the leader"
                } else {
                    "a follower"
                };
                println!("Colony: the bench node proposes as {role} of the group");
            }
            return Ok(self.commits(workload.clients(), length));
        }
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
        let peers = self.peers;
        self.kill_and_take(&format!("holder{}", run + 1), move |owner, _| {
            peers.contains(&owner)
        })
    }

    fn owner_takeover(&mut self, run: usize) -> anyhow::Result<Duration> {
        self.kill_and_take(&format!("owner{}", run + 1), |owner, holder| {
            owner == holder
        })
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

/// One proposer of (h): proposes, one at a time, a command the group commits and the state
/// applies as a refusal (an `Extend` of a slot that does not exist), until `until`.
async fn propose_until(node: Node, until: Instant) -> Batch {
    let noop = consensus::Command::Extend {
        domain: Domain::Locks,
        slot: SLOTS,
        generation: 0,
    };
    let group = node.group().clone();
    let mut run = Batch::default();
    while Instant::now() < until {
        let start = Instant::now();
        let ok = group.propose(noop.clone(), PROPOSE_TIMEOUT).await.is_ok();
        run.record(start, ok);
        if !ok {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
    run
}

/// Whether `node` sees the group with 3 voters (no joint change under way) and every lock slot
/// owned, by 3 different nodes.
fn group_settled(node: &Node) -> bool {
    let status = node.group().status();
    let owners: Option<std::collections::HashSet<_>> = (0..SLOTS)
        .map(|s| {
            status
                .state
                .slot(Domain::Locks, s)
                .and_then(|slot| slot.owner)
                .map(|(replica, _)| replica)
        })
        .collect();
    status.voters.len() == 3 && status.outgoing.is_empty() && owners.is_some_and(|o| o.len() == 3)
}

/// Whether, in `node`'s view, the node `holder` serves some slots and no slot is being handed
/// over by a live node: the placement that followed its joining is complete.
fn placed(node: &Node, holder: NodeId) -> bool {
    let Some(replica) = node
        .members()
        .into_iter()
        .find(|m| m.id == holder)
        .map(|m| m.replica)
    else {
        return false;
    };
    let status = node.group().status();
    let state = &status.state;
    let slots: Vec<_> = (0..SLOTS)
        .filter_map(|s| state.slot(Domain::Locks, s))
        .collect();
    slots
        .iter()
        .any(|s| s.owner.is_some_and(|(r, _)| r.0 == replica))
        && !slots
            .iter()
            .any(|s| s.from.is_some_and(|(r, e)| state.in_force(r, e)))
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
