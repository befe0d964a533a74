//! Helpers shared by the multi-process tests.
#![allow(dead_code)]

pub mod caches;
pub mod locks;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use colony_runtime::config::MembershipTimings;
use colony_runtime::testkit::{ClusterSpec, TestCluster};

/// Multi-process tests share two cores: one cluster at a time keeps failure detection honest.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

pub fn spec(nodes: usize) -> ClusterSpec {
    ClusterSpec::new(env!("CARGO_BIN_EXE_colony"), nodes)
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

/// Waits until `node` sees `members` nodes up (itself included) and holds a session to each
/// of them; fails the test after `timeout`.
pub async fn wait_up_and_connected(node: &colony::Node, members: usize, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while node.up_members().len() < members
        || !node.members().iter().all(|m| node.is_connected(m.id))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no sessions to the peers"
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
    panic!("no session to {}:\n{}", cluster.name(i), logs(cluster));
}

/// Sends `bytes` to `node`'s `node` service over the ractor_cluster session, as no node would.
pub async fn raw_call(node: colony_runtime::NodeId, bytes: Vec<u8>) -> colony_runtime::wire::Reply {
    let cell = ractor::pg::get_members(&colony_runtime::transport::gateway_group("node", node))
        .into_iter()
        .next()
        .expect("gateway proxy");
    let gateway = ractor::ActorRef::<colony_runtime::transport::GatewayMsg>::from(cell);
    match ractor::rpc::call(
        &gateway.get_cell(),
        |port| colony_runtime::transport::GatewayMsg::Call(bytes, port),
        Some(Duration::from_secs(5)),
    )
    .await
    {
        Ok(ractor::rpc::CallResult::Success(bytes)) => {
            colony_runtime::wire::decode(&bytes, LIMIT).expect("reply decodes")
        }
        other => panic!(
            "no reply: {:?}",
            other.map(|r| matches!(r, ractor::rpc::CallResult::Timeout))
        ),
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
