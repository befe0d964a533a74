//! Helpers shared by the multi-process tests.
#![allow(dead_code)]

pub mod caches;
pub mod locks;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use colony_runtime::NodeId;
use colony_runtime::config::MembershipTimings;
use colony_runtime::testkit::{ClusterSpec, TestCluster};
use colony_runtime::wire::{self, Envelope, Reply};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Multi-process tests share two cores: one cluster at a time keeps failure detection honest.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Every JSON line of the history file `path` (relative to each node's home), over every node.
pub fn histories(cluster: &TestCluster, path: &str) -> Vec<serde_json::Value> {
    cluster
        .all()
        .into_iter()
        .flat_map(|i| {
            std::fs::read_to_string(cluster.home(i).join(path))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<serde_json::Value>>()
        })
        .collect()
}

pub fn spec(nodes: usize) -> ClusterSpec {
    ClusterSpec::new(env!("CARGO_BIN_EXE_colony"), nodes)
}

/// A spec of `nodes` processes that each run `workload` (its description written in `dir`).
pub fn workload_spec(
    nodes: usize,
    dir: &std::path::Path,
    workload: &serde_json::Value,
) -> ClusterSpec {
    let file = dir.join("workload.json");
    std::fs::write(&file, workload.to_string()).expect("write the workload");
    let mut spec = spec(nodes);
    spec.extra_args = vec!["--workload".into(), file.display().to_string()];
    spec
}

/// Starts `nodes` processes, each running `workload` (a workload's JSON, written to `dir`), and
/// waits until they all see each other up.
pub fn cluster_with_workload(
    dir: &std::path::Path,
    nodes: usize,
    workload: &serde_json::Value,
) -> TestCluster {
    let cluster = TestCluster::start(workload_spec(nodes, dir, workload)).expect("spawn nodes");
    assert_converges(&cluster, "no convergence");
    cluster
}

/// Starts `nodes` processes and waits until they all see each other up.
pub fn converged_cluster(nodes: usize) -> TestCluster {
    let cluster = TestCluster::start(spec(nodes)).expect("spawn nodes");
    assert_converges(&cluster, "cluster did not converge");
    cluster
}

/// Waits until every node sees every node up; fails with `what` and the logs otherwise.
pub fn assert_converges(cluster: &TestCluster, what: &str) {
    let all = cluster.all();
    assert!(
        cluster
            .wait_converged(&all, Duration::from_secs(30))
            .is_some(),
        "{what}:\n{}",
        logs(cluster)
    );
}

/// Time the test allows itself to observe a state over HTTP, on top of a promised bound.
pub const OBSERVATION_SLACK: Duration = Duration::from_millis(1000);

/// The detection bound of a cluster of `nodes`.
pub fn detection_bound(nodes: usize) -> Duration {
    MembershipTimings::default().detection_bound(nodes)
}

/// Waits until `node` sees `members` nodes up (itself included) and has an open link to each
/// of them; fails the test after `timeout`.
pub async fn wait_up_and_connected(node: &colony::Node, members: usize, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while node.up_members().len() < members
        || !node.members().iter().all(|m| node.is_connected(m.id))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no links to the peers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The in-process node's `max_message_bytes`.
pub const LIMIT: usize = 64 * 1024;

/// The test process joins the cluster as one more node: a process holds one node.
pub async fn join(
    cluster: &colony_runtime::testkit::TestCluster,
    home: &std::path::Path,
) -> colony_runtime::Node {
    colony_runtime::Node::builder()
        .name("tester")
        .home(home)
        .bind("127.0.0.1:0")
        .seeds([cluster.addr(0)])
        .cookie("colony-test-cookie")
        .cluster_size(cluster.cluster_size())
        .max_message_bytes(LIMIT)
        .start()
        .await
        .expect("start the in-process node")
}

pub async fn peer_id(
    node: &colony_runtime::Node,
    cluster: &colony_runtime::testkit::TestCluster,
    i: usize,
) -> colony_runtime::NodeId {
    for _ in 0..400 {
        if let Some(m) = node
            .members()
            .into_iter()
            .find(|m| m.name == cluster.name(i) && m.state.is_up())
            && node.is_connected(m.id)
        {
            return m.id;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no link to {}:\n{}", cluster.name(i), logs(cluster));
}

/// A link opened by hand with the cluster's cookie, the way a node opens one
/// (`runtime/src/transport/links/handshake.rs`), so that it can send envelopes no node sends.
pub struct RawLink {
    stream: tokio::net::TcpStream,
    next_id: u64,
}

impl RawLink {
    /// Connects from `source` to `target` and proves the cookie, naming itself `claim`.
    pub async fn open(
        target: SocketAddr,
        source: IpAddr,
        claim: NodeId,
    ) -> std::io::Result<RawLink> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        let mut stream = socket.connect(target).await?;
        let key: [u8; 32] = Sha256::new()
            .chain_update(b"colony link v1")
            .chain_update(b"colony-test-cookie")
            .finalize()
            .into();
        let mine = [0x5a; 16];
        stream
            .write_all(&[&b"COLONYL1"[..], claim.as_bytes(), &mine].concat())
            .await?;
        let mut answer = [0; 64];
        stream.read_exact(&mut answer).await?;
        let (server, theirs) = (&answer[..16], &answer[16..32]);
        let mut proof = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        for part in [&b"client"[..], theirs, &mine, claim.as_bytes(), server] {
            proof.update(part);
        }
        stream.write_all(&proof.finalize().into_bytes()).await?;
        Ok(RawLink { stream, next_id: 1 })
    }

    /// Sends `envelope` to the `node` service and reads its reply.
    pub async fn call(&mut self, envelope: &Envelope) -> Reply {
        self.call_service("node", envelope).await
    }

    /// Sends `envelope` to `service` and reads its reply.
    pub async fn call_service(&mut self, service: &str, envelope: &Envelope) -> Reply {
        self.call_bytes(service, &wire::encode(envelope, LIMIT).unwrap())
            .await
    }

    /// Sends `body` as the envelope bytes of a request to `service`, whatever they are, and
    /// reads its reply.
    pub async fn call_bytes(&mut self, service: &str, body: &[u8]) -> Reply {
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = Vec::new();
        let length = 1 + 8 + 1 + service.len() + body.len();
        frame.extend_from_slice(&(length as u32).to_le_bytes());
        frame.push(1);
        frame.extend_from_slice(&id.to_le_bytes());
        frame.push(service.len() as u8);
        frame.extend_from_slice(service.as_bytes());
        frame.extend_from_slice(body);
        self.stream.write_all(&frame).await.unwrap();
        let len = self.stream.read_u32_le().await.unwrap() as usize;
        let mut reply = vec![0; len];
        self.stream.read_exact(&mut reply).await.unwrap();
        assert_eq!((reply[0], &reply[1..9]), (2, &id.to_le_bytes()[..]));
        wire::decode(&reply[9..], LIMIT).unwrap()
    }
}

/// Waits until node 0 sees `voters` voters in the consensus group (a partition while the group
/// is still forming can leave the larger side without a voting majority).
pub fn wait_voters(cluster: &TestCluster, voters: usize) {
    let done = cluster.wait_until(Duration::from_secs(30), |c| {
        c.status(0).is_some_and(|s| {
            s.consensus.voters.len() == voters
                && s.consensus.learners.is_empty()
                && s.consensus.outgoing.is_empty()
        })
    });
    assert!(
        done.is_some(),
        "the group never had {voters} voters:\n{}",
        logs(cluster)
    );
}

pub fn logs(cluster: &TestCluster) -> String {
    cluster
        .all()
        .into_iter()
        .map(|i| {
            let status = cluster
                .status(i)
                .map(|s| format!("{:?}", s.consensus))
                .unwrap_or_else(|| "no status".into());
            format!(
                "----- {} -----\n{}\nconsensus: {status}\n",
                cluster.name(i),
                cluster.log(i)
            )
        })
        .collect()
}
