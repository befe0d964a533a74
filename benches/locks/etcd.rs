//! The etcd side: a 3-member etcd cluster on 127.0.0.1, driven through its JSON gRPC gateway.
//!
//! etcd is installed from Debian (`etcd-server`, `etcd-client`) if `etcd` or `etcdctl` is
//! missing. The members listen on free ports with data directories in a temporary directory;
//! they are SIGKILLed and the directory removed when [`Etcd`] is dropped, and they die with this
//! process (`common::process::Owned`).
//!
//! The gateway of etcd 3.4 (checked on 3.4.23) serves, as `POST` with JSON bodies and 64-bit
//! integers as strings: `/v3/lease/grant` `{TTL}` → `{ID}`, `/v3/lease/revoke` `{ID}`,
//! `/v3/lock/lock` `{name, lease}` (name in base64) → `{key}`, `/v3/lock/unlock` `{key}`,
//! `/v3/kv/range`, `/v3/maintenance/status` → `{header.member_id, leader}`; and `GET /health`.
//!
//! Each client is a thread with its own connection and its own lease (granted before the run,
//! revoked after it): a cycle is `lock` then `unlock`, as an etcd client with a session does.
//! In etcd, `lock` writes a key under the lease and waits until every older key of the name is
//! gone; `unlock` deletes the key; each is a Raft write committed by a majority.
//!
//! Takeover (e): `etcdctl lock --ttl <lease> <name>` holds the name with a session lease of the
//! same length that etcdctl keeps alive; a waiter queues with `/v3/lock/lock` through a
//! follower, and the etcdctl process is SIGKILLed: its lease ends one TTL after its last
//! keep-alive, and etcd then deletes its key, which lets the waiter through.
//!
//! Takeover (f), the analogue of killing a Colony node that is both the name's owner and its
//! holder: etcdctl talks only to the **leader** (the member that keeps leases and decides
//! grants), the waiter to a follower, and etcdctl and the leader member are SIGKILLed together.
//! The survivors elect a new leader, whose lessor extends every lease by the election time; the
//! holder's lease then runs out a TTL later and the waiter is let through. The killed member is
//! started again on its data directory after the run, and the bench waits for a healthy
//! cluster and finds the leader again.
//!
//! Commits (h): `/v3/kv/put` of a small value, one client at a time through a follower
//! (latency), and 16 clients spread over the three members (puts per second): each put is one
//! Raft entry committed by a majority, fsynced, like Colony's proposals.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use colony_runtime::testkit::free_port;
use serde_json::{Value, json};

use crate::colony::SETTLE;
use crate::common::Batch;
use crate::common::process::{Owned, ensure_installed};
use crate::{ERROR_PAUSE, Run, System, Workload};

/// Members of the etcd cluster.
const MEMBERS: usize = 3;
/// How long the cluster may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The TTL of a client's lease in the timed runs: longer than any run, so it needs no
/// keep-alive.
const CLIENT_LEASE_TTL: u64 = 120;
/// The longest one gateway call may take (a waiter's `lock` included).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The running etcd cluster.
pub struct Etcd {
    /// Each member's client URL.
    urls: Vec<String>,
    /// Each member's (client, peer) ports.
    ports: Vec<(u16, u16)>,
    /// The leader's index in `urls`, and a follower's.
    leader: usize,
    follower: usize,
    /// The lease TTL of the takeover's holder, in seconds.
    ttl: u64,
    version: String,
    /// Killed when dropped, before the directory is removed; `None` while one is down.
    members: Vec<Option<Owned>>,
    dir: tempfile::TempDir,
}

/// A gateway client with its own connection.
struct Client {
    agent: ureq::Agent,
    url: String,
}

impl Client {
    fn new(url: &str) -> Client {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(CALL_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        Client {
            agent,
            url: url.to_owned(),
        }
    }

    /// `POST /v3/{path}` with `body`; the answer, or an error for any status but 200.
    fn call(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let mut response = self
            .agent
            .post(format!("{}/v3/{path}", self.url))
            .send_json(body)?;
        let status = response.status();
        let answer: Value = response.body_mut().read_json()?;
        if status != 200 {
            bail!("{path}: {status} {answer}");
        }
        Ok(answer)
    }

    /// A new lease of `ttl` seconds.
    fn grant(&self, ttl: u64) -> anyhow::Result<String> {
        let answer = self.call("lease/grant", &json!({ "TTL": ttl }))?;
        string(&answer["ID"]).context("lease/grant without ID")
    }

    fn revoke(&self, lease: &str) -> anyhow::Result<()> {
        self.call("lease/revoke", &json!({ "ID": lease })).map(drop)
    }

    /// Takes lock `name` (base64) with `lease`; the key that holds it (base64).
    fn lock(&self, name: &str, lease: &str) -> anyhow::Result<String> {
        let answer = self.call("lock/lock", &json!({ "name": name, "lease": lease }))?;
        string(&answer["key"]).context("lock/lock without key")
    }

    fn unlock(&self, key: &str) -> anyhow::Result<()> {
        self.call("lock/unlock", &json!({ "key": key })).map(drop)
    }

    /// Whether this member is the leader, and etcd's version.
    fn status(&self) -> anyhow::Result<(bool, String)> {
        let answer = self.call("maintenance/status", &json!({}))?;
        let leader = string(&answer["leader"]).context("status without leader")?;
        let me = string(&answer["header"]["member_id"]).context("status without member_id")?;
        let version = string(&answer["version"]).unwrap_or_default();
        Ok((leader == me, version))
    }

    fn healthy(&self) -> bool {
        self.agent
            .get(format!("{}/health", self.url))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
            .is_some_and(|v| v["health"] == "true")
    }
}

/// A JSON string or number as a string (the gateway writes 64-bit integers as strings).
fn string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Etcd {
    /// Installs etcd if needed and starts the cluster; `lease` is the takeover holder's TTL.
    ///
    /// # Errors
    /// etcd could not be installed or started, or did not become healthy in time.
    pub fn start(lease: Duration) -> anyhow::Result<Etcd> {
        // etcd-server has `etcd`, etcd-client `etcdctl`.
        let packages = ["etcd-server", "etcd-client"];
        ensure_installed(&["etcd", "--version"], &packages)?;
        ensure_installed(&["etcdctl", "version"], &packages)?;
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16)> = (0..MEMBERS).map(|_| (free_port(), free_port())).collect();
        let urls: Vec<String> = ports
            .iter()
            .map(|(client, _)| format!("http://127.0.0.1:{client}"))
            .collect();
        let mut etcd = Etcd {
            urls,
            ports,
            leader: 0,
            follower: 1,
            ttl: lease.as_secs(),
            version: String::new(),
            members: Vec::new(),
            dir,
        };
        for i in 0..MEMBERS {
            let member = etcd.spawn_member(i)?;
            etcd.members.push(Some(member));
        }
        etcd.wait_for_leader()?;
        println!(
            "etcd {}: {MEMBERS} members, leader e{}, clients at {}",
            etcd.version,
            etcd.leader + 1,
            etcd.urls.join(" ")
        );
        Ok(etcd)
    }

    /// Starts member `i` on its data directory (created on the first start; a restart resumes
    /// from it and ignores the initial-cluster flags).
    fn spawn_member(&self, i: usize) -> anyhow::Result<Owned> {
        let peer_url = |i: usize| format!("http://127.0.0.1:{}", self.ports[i].1);
        let initial_cluster = (0..MEMBERS)
            .map(|i| format!("e{}={}", i + 1, peer_url(i)))
            .collect::<Vec<_>>()
            .join(",");
        let name = format!("e{}", i + 1);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))?;
        let url = &self.urls[i];
        Owned::spawn(
            Command::new("etcd")
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(self.dir.path().join(&name))
                .args(["--listen-client-urls", url])
                .args(["--advertise-client-urls", url])
                .args(["--listen-peer-urls", &peer_url(i)])
                .args(["--initial-advertise-peer-urls", &peer_url(i)])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-state", "new"])
                .args([
                    "--initial-cluster-token",
                    &format!("colony-bench-{}", std::process::id()),
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
        )
        .with_context(|| format!("spawn etcd member {name}"))
    }

    /// Waits until every member is healthy and one leads; records the leader and a follower.
    fn wait_for_leader(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some((leader, version)) = self.find_leader() {
                self.leader = leader;
                self.follower = (leader + 1) % MEMBERS;
                self.version = version;
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd did not become healthy with a leader; logs in {}",
                    self.dir.path().display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The leader's index and the version, once every member is healthy.
    fn find_leader(&self) -> Option<(usize, String)> {
        let clients: Vec<Client> = self.urls.iter().map(|u| Client::new(u)).collect();
        if !clients.iter().all(Client::healthy) {
            return None;
        }
        clients.iter().enumerate().find_map(|(i, c)| {
            let (leader, version) = c.status().ok()?;
            leader.then_some((i, version))
        })
    }

    /// The member client `i` of `workload` talks to.
    fn url_of(&self, workload: Workload, i: usize) -> &str {
        let member = match workload {
            Workload::Owner => self.leader,
            Workload::NonOwner => self.follower,
            Workload::Commit => self.follower,
            Workload::Contended | Workload::Distinct | Workload::Commits => i % MEMBERS,
        };
        &self.urls[member]
    }
}

impl System for Etcd {
    fn name(&self) -> &str {
        "etcd"
    }

    fn run(&mut self, workload: Workload, length: Duration) -> anyhow::Result<Run> {
        if workload.is_commit() {
            return self.puts(workload, length);
        }
        let setups: Vec<(Client, String, String)> = (0..workload.clients())
            .map(|i| {
                let client = Client::new(self.url_of(workload, i));
                let lease = client.grant(CLIENT_LEASE_TTL)?;
                let name = BASE64.encode(format!("bench-{workload:?}-{}", i % workload.names()));
                anyhow::Ok((client, name, lease))
            })
            .collect::<Result<_, _>>()?;
        let run = loop_clients(&setups, length, |(client, name, lease)| {
            client
                .lock(name, lease)
                .and_then(|key| client.unlock(&key))
                .is_ok()
        })?;
        for (client, _, lease) in &setups {
            client.revoke(lease)?;
        }
        Ok(run)
    }

    fn takeover(&mut self, run: usize) -> anyhow::Result<Duration> {
        self.kill_and_take(&format!("takeover-{}", run + 1), None)
    }

    fn owner_takeover(&mut self, run: usize) -> anyhow::Result<Duration> {
        let leader = self.leader;
        let took = self.kill_and_take(&format!("owner-takeover-{}", run + 1), Some(leader))?;
        self.members[leader] = Some(self.spawn_member(leader)?);
        self.wait_for_leader()
            .context("etcd after restarting the killed leader")?;
        Ok(took)
    }
}

impl Etcd {
    /// One takeover of `name`: etcdctl holds it, a waiter queues through a follower, then
    /// etcdctl is SIGKILLed, and with it member `member` if given (etcdctl then talks to that
    /// member only; it stays down). The time from the kill until the waiter holds the name.
    fn kill_and_take(&mut self, name: &str, member: Option<usize>) -> anyhow::Result<Duration> {
        let endpoints = match member {
            Some(m) => self.urls[m].clone(),
            None => self.urls.join(","),
        };
        let mut holder = Owned::spawn(
            Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={endpoints}"))
                .args(["lock", &format!("--ttl={}", self.ttl), name])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        )
        .context("spawn etcdctl lock")?;
        // etcdctl prints the key once it holds the lock.
        let stdout = holder.child().stdout.take().context("etcdctl stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim().is_empty() {
            bail!("etcdctl lock exited without holding {name}");
        }
        let waiter_member = match member {
            Some(m) if m == self.follower => (m + 1) % MEMBERS,
            _ => self.follower,
        };
        let client = Client::new(&self.urls[waiter_member]);
        let lease = client.grant(CLIENT_LEASE_TTL)?;
        let encoded = BASE64.encode(name);
        let mut killed_member = member.and_then(|m| self.members[m].take());
        let (took, key) = std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                let key = client.lock(&encoded, &lease);
                (Instant::now(), key)
            });
            std::thread::sleep(SETTLE);
            let killed = Instant::now();
            holder.kill();
            if let Some(m) = killed_member.as_mut() {
                m.kill();
            }
            let (granted, key) = waiter
                .join()
                .map_err(|_| anyhow!("the etcd waiter panicked"))?;
            anyhow::Ok((granted - killed, key?))
        })?;
        client.unlock(&key)?;
        client.revoke(&lease)?;
        Ok(took)
    }

    /// Puts of (h): `workload.clients()` clients each put their own key in a loop.
    fn puts(&self, workload: Workload, length: Duration) -> anyhow::Result<Run> {
        let clients: Vec<(Client, String)> = (0..workload.clients())
            .map(|i| {
                let key = BASE64.encode(format!("bench-put-{i}"));
                (Client::new(self.url_of(workload, i)), key)
            })
            .collect();
        let value = BASE64.encode("x");
        loop_clients(&clients, length, |(client, key)| {
            let body = json!({ "key": key, "value": value });
            client.call("kv/put", &body).is_ok()
        })
    }
}

/// Runs one thread per client of `clients`, each repeating `op` (timed; `true` when it
/// succeeded) until `length` has passed.
fn loop_clients<C: Sync>(
    clients: &[C],
    length: Duration,
    op: impl Fn(&C) -> bool + Sync,
) -> anyhow::Result<Run> {
    let start = Instant::now();
    let until = start + length;
    let batches = std::thread::scope(|scope| {
        let threads: Vec<_> = clients
            .iter()
            .map(|client| {
                let op = &op;
                scope.spawn(move || {
                    let mut run = Batch::default();
                    while Instant::now() < until {
                        let start = Instant::now();
                        let ok = op(client);
                        run.record(start, ok);
                        if !ok {
                            std::thread::sleep(ERROR_PAUSE);
                        }
                    }
                    run
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().map_err(|_| anyhow!("an etcd client panicked")))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    Ok(Run::gather(start, batches))
}
