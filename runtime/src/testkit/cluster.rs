//! Starting, faulting and observing a cluster of node processes.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;
use super::http::AdminClient;
use crate::config::MembershipTimings;
use crate::membership::MemberState;
use crate::node::admin_types::ClusterStatus;

/// What cluster to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The `colony` binary.
    pub binary: PathBuf,
    /// Number of node processes.
    pub nodes: usize,
    /// The cluster size the nodes are told (defaults to `nodes`).
    pub cluster_size: Option<usize>,
    /// The cookie.
    pub cookie: String,
    /// Membership timings.
    pub timings: MembershipTimings,
    /// Extra arguments for every node.
    pub extra_args: Vec<String>,
    /// Where homes go; a fresh temporary directory when `None`.
    pub root: Option<PathBuf>,
    /// The admin token every node is given (`COLONY_ADMIN_TOKEN`), a fresh random one by
    /// default; `None` starts the nodes without one (their endpoints then serve reads only).
    pub admin_token: Option<String>,
    /// Wall-clock offsets in milliseconds by node index (`--clock-offset-ms`); nodes past the
    /// end of the list, and nodes added later, run on the system clock.
    pub clock_offsets_ms: Vec<i64>,
}

impl ClusterSpec {
    /// `nodes` processes of `binary` with default settings.
    pub fn new(binary: impl Into<PathBuf>, nodes: usize) -> Self {
        ClusterSpec {
            binary: binary.into(),
            nodes,
            cluster_size: None,
            cookie: "colony-test-cookie".into(),
            timings: MembershipTimings::default(),
            extra_args: Vec::new(),
            root: None,
            admin_token: Some(uuid::Uuid::new_v4().simple().to_string()),
            clock_offsets_ms: Vec::new(),
        }
    }

    /// The same spec with node `i`'s wall clock shifted by `offsets_ms[i]` milliseconds.
    ///
    /// # Examples
    /// ```
    /// use colony_runtime::testkit::ClusterSpec;
    /// let spec = ClusterSpec::new("colony", 3).clock_offsets_ms([200, 0, -200]);
    /// assert_eq!(spec.clock_offsets_ms, vec![200, 0, -200]);
    /// ```
    pub fn clock_offsets_ms(mut self, offsets_ms: impl IntoIterator<Item = i64>) -> Self {
        self.clock_offsets_ms = offsets_ms.into_iter().collect();
        self
    }
}

struct Proc {
    name: String,
    port: u16,
    admin_port: u16,
    home: PathBuf,
    cookie: String,
    child: Option<Child>,
}

/// A running cluster of node processes; dropping it kills them all and removes their files.
pub struct TestCluster {
    spec: ClusterSpec,
    root: PathBuf,
    _tmp: Option<tempfile_dir::TempDir>,
    procs: Vec<Proc>,
}

mod tempfile_dir {
    /// A directory removed on drop, unless `COLONY_KEEP_TEST_DIRS` is set.
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            if std::env::var_os("COLONY_KEEP_TEST_DIRS").is_none() {
                let _ = std::fs::remove_dir_all(&self.0);
            } else {
                eprintln!("test cluster files kept in {}", self.0.display());
            }
        }
    }
}

fn temp_root() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "colony-test-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

impl TestCluster {
    /// Starts every node; node 0 is the seed of the others. Does not wait for convergence.
    ///
    /// # Errors
    /// A process could not be spawned.
    pub fn start(spec: ClusterSpec) -> std::io::Result<TestCluster> {
        let (root, tmp) = match &spec.root {
            Some(r) => (r.clone(), None),
            None => {
                let r = temp_root()?;
                (r.clone(), Some(tempfile_dir::TempDir(r)))
            }
        };
        let mut cluster = TestCluster {
            procs: Vec::new(),
            spec,
            root,
            _tmp: tmp,
        };
        for i in 0..cluster.spec.nodes {
            cluster.procs.push(Proc {
                name: format!("n{}", i + 1),
                port: free_port(),
                admin_port: free_port(),
                home: cluster.root.join(format!("n{}", i + 1)),
                cookie: cluster.spec.cookie.clone(),
                child: None,
            });
        }
        for i in 0..cluster.procs.len() {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    /// Adds one more node (seeded by node 0) with its own cookie; returns its index.
    ///
    /// # Errors
    /// The process could not be spawned.
    pub fn add_node(&mut self, cookie: &str) -> std::io::Result<usize> {
        let i = self.procs.len();
        self.procs.push(Proc {
            name: format!("n{}", i + 1),
            port: free_port(),
            admin_port: free_port(),
            home: self.root.join(format!("n{}", i + 1)),
            cookie: cookie.to_owned(),
            child: None,
        });
        self.spawn(i)?;
        Ok(i)
    }

    fn spawn(&mut self, i: usize) -> std::io::Result<()> {
        let seed = format!("127.0.0.1:{}", self.procs[0].port);
        let size = self.spec.cluster_size.unwrap_or(self.spec.nodes);
        let t = self.spec.timings;
        let p = &self.procs[i];
        std::fs::create_dir_all(p.home.join("log"))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(p.home.join("log").join("node.log"))?;
        let mut cmd = Command::new(&self.spec.binary);
        cmd.arg("node")
            .args(["--name", &p.name])
            .arg("--home")
            .arg(&p.home)
            .arg("--shared-home")
            .arg(self.root.join("shared"))
            .args(["--bind", &format!("127.0.0.1:{}", p.port)])
            .args(["--cookie", &p.cookie])
            .args(["--cluster-size", &size.to_string()])
            .args(["--admin", &format!("127.0.0.1:{}", p.admin_port)])
            .args(["--probe-period-ms", &t.probe_period.as_millis().to_string()])
            .args(["--probe-rtt-ms", &t.probe_rtt.as_millis().to_string()])
            .args([
                "--suspect-to-down-ms",
                &t.suspect_to_down.as_millis().to_string(),
            ])
            .arg("--fault-injection")
            .args(&self.spec.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("COLONY_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("COLONY_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if i != 0 {
            cmd.args(["--seeds", &seed]);
        }
        if let Some(token) = &self.spec.admin_token {
            cmd.env("COLONY_ADMIN_TOKEN", token);
        }
        if let Some(offset) = self.spec.clock_offsets_ms.get(i).filter(|o| **o != 0) {
            cmd.arg(format!("--clock-offset-ms={offset}"));
        }
        let child = cmd.spawn()?;
        self.procs[i].child = Some(child);
        Ok(())
    }

    /// The cluster size the nodes are told: an in-process node that joins must say the same.
    pub fn cluster_size(&self) -> usize {
        self.spec.cluster_size.unwrap_or(self.spec.nodes)
    }

    /// Number of nodes (running or not).
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Node `i`'s name (`n1`, `n2`, ...).
    pub fn name(&self, i: usize) -> &str {
        &self.procs[i].name
    }

    /// Node `i`'s gossip and transport address.
    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.procs[i].port))
    }

    /// Node `i`'s admin address.
    pub fn admin_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.procs[i].admin_port))
    }

    /// A client for node `i`'s admin endpoint.
    pub fn admin(&self, i: usize) -> AdminClient {
        AdminClient::new(self.admin_addr(i)).with_token(self.spec.admin_token.clone())
    }

    /// The admin token every node was given, if any: what an operator would type into the
    /// cluster page.
    ///
    /// # Examples
    /// ```no_run
    /// use colony_runtime::testkit::{ClusterSpec, TestCluster};
    /// let cluster = TestCluster::start(ClusterSpec::new("colony", 3)).unwrap();
    /// assert!(cluster.admin_token().is_some(), "a fresh random one by default");
    /// ```
    pub fn admin_token(&self) -> Option<&str> {
        self.spec.admin_token.as_deref()
    }

    /// Node `i`'s local home.
    pub fn home(&self, i: usize) -> &Path {
        &self.procs[i].home
    }

    /// The shared home.
    pub fn shared_home(&self) -> PathBuf {
        self.root.join("shared")
    }

    /// Node `i`'s process id, if running.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].child.as_ref().map(Child::id)
    }

    /// Node `i`'s view of the cluster, if it answers.
    pub fn status(&self, i: usize) -> Option<ClusterStatus> {
        self.admin(i).cluster().ok()
    }

    /// Everything node `i` wrote to stdout and stderr, across restarts.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.procs[i].home.join("log").join("node.log")).unwrap_or_default()
    }

    fn signal(&self, i: usize, signal: i32) {
        if let Some(pid) = self.pid(i) {
            // SAFETY: kill(2) with a pid we spawned and still own as a `Child`.
            unsafe {
                libc::kill(pid as i32, signal);
            }
        }
    }

    /// SIGKILL node `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        self.signal(i, libc::SIGKILL);
        if let Some(mut child) = self.procs[i].child.take() {
            let _ = child.wait();
        }
    }

    /// SIGSTOP node `i`.
    ///
    /// Returns once every thread of the process has stopped: `kill(2)` only queues the signal,
    /// and a thread busy on another core can still answer a request in the meantime.
    pub fn pause(&self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        let Some(pid) = self.pid(i) else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !all_threads_stopped(pid) {
            assert!(
                Instant::now() < deadline,
                "node {i} did not stop after SIGSTOP"
            );
            std::thread::yield_now();
        }
    }

    /// SIGCONT node `i`.
    pub fn resume(&self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    /// SIGTERM node `i` (a graceful leave) and wait up to `timeout` for it to exit.
    /// Returns its exit status, or `None` if it had to be killed.
    pub fn terminate(&mut self, i: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.signal(i, libc::SIGTERM);
        let mut child = self.procs[i].child.take()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Starts node `i` again on the same address and home.
    ///
    /// # Errors
    /// The process could not be spawned.
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        if self.procs[i].child.is_some() {
            self.kill(i);
        }
        self.spawn(i)
    }

    /// Splits the cluster: each node is cut off from every node outside its group.
    ///
    /// # Errors
    /// A node's admin endpoint refused.
    pub fn partition(&self, groups: &[&[usize]]) -> Result<(), super::AdminError> {
        for (g, group) in groups.iter().enumerate() {
            let others: Vec<SocketAddr> = groups
                .iter()
                .enumerate()
                .filter(|(h, _)| *h != g)
                .flat_map(|(_, other)| other.iter().map(|&j| self.addr(j)))
                .collect();
            for &i in *group {
                self.admin(i).set_faults(others.clone())?;
            }
        }
        Ok(())
    }

    /// Removes every partition on the running nodes.
    ///
    /// # Errors
    /// A node's admin endpoint refused.
    pub fn heal(&self) -> Result<(), super::AdminError> {
        for i in 0..self.len() {
            if self.procs[i].child.is_some() {
                self.admin(i).set_faults(Vec::new())?;
            }
        }
        Ok(())
    }

    /// Polls until `done` holds or `timeout` passes; returns the time it took, or `None`.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&TestCluster) -> bool,
    ) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if done(self) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }

    /// Whether node `observer` sees node `target` (by name) in `state`.
    pub fn sees(&self, observer: usize, target: usize, state: MemberState) -> bool {
        self.status(observer).is_some_and(|s| {
            s.members
                .iter()
                .filter(|m| m.name == self.procs[target].name)
                .max_by_key(|m| m.incarnation)
                .is_some_and(|m| m.state == state)
        })
    }

    /// Whether every node in `group` sees exactly the nodes of `group` up (and itself up).
    pub fn converged(&self, group: &[usize]) -> bool {
        group.iter().all(|&i| {
            self.status(i).is_some_and(|s| {
                let mut up: Vec<&str> = s
                    .members
                    .iter()
                    .filter(|m| m.state == MemberState::Up)
                    .map(|m| m.name.as_str())
                    .collect();
                up.sort_unstable();
                let mut want: Vec<&str> =
                    group.iter().map(|&j| self.procs[j].name.as_str()).collect();
                want.sort_unstable();
                up == want
            })
        })
    }

    /// Waits until every node in `group` sees exactly `group` up.
    pub fn wait_converged(&self, group: &[usize], timeout: Duration) -> Option<Duration> {
        self.wait_until(timeout, |c| c.converged(group))
    }

    /// Indices of every node.
    pub fn all(&self) -> Vec<usize> {
        (0..self.len()).collect()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            // SIGKILL works on stopped processes too; resuming first keeps a failed kill from
            // leaving a stopped process behind.
            self.resume(i);
            self.kill(i);
        }
    }
}

/// Whether every thread of `pid` is stopped, as `/proc/<pid>/task/*/stat` says.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true; // gone: nothing of it runs
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command name, which is in parentheses and may hold spaces.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            matches!(state, Some('T' | 't'))
        })
    })
}
