//! Membership across real node processes: convergence, crash and pause detection, restart,
//! partitions, graceful leave. DESIGN: "Membership is ours, not the transport's".

use std::time::{Duration, Instant};

use crate::common::{
    OBSERVATION_SLACK, assert_converges, converged_cluster, detection_bound, logs, serial, spec,
};
use colony_runtime::MemberState;
use colony_runtime::testkit::TestCluster;

#[test]
fn five_nodes_converge_from_one_seed() {
    let _serial = serial();
    let cluster = converged_cluster(5);
    for i in cluster.all() {
        let status = cluster.status(i).expect("status");
        assert!(status.has_quorum, "{} lacks quorum", cluster.name(i));
        assert_eq!(status.members.len(), 5);
        assert!(cluster.admin(i).healthy());
    }
}

#[test]
fn a_killed_node_is_seen_down_by_every_other_node_within_the_bound_and_rejoins_after_restart() {
    let _serial = serial();
    let mut cluster = converged_cluster(5);
    let victim = 3;
    let before = incarnation_seen_by(&cluster, 0, victim);
    let killed_at = Instant::now();
    cluster.kill(victim);
    let survivors = [0, 1, 2, 4];
    let allowed = detection_bound(cluster.len()) + OBSERVATION_SLACK;
    let seen = cluster.wait_until(allowed, |c| {
        survivors
            .iter()
            .all(|&s| c.sees(s, victim, MemberState::Down))
    });
    assert!(
        seen.is_some(),
        "not every survivor saw n4 down within {allowed:?} of the kill (elapsed {:?}):\n{}",
        killed_at.elapsed(),
        logs(&cluster)
    );
    // Quorum (3 of 5) survives one crash.
    assert!(
        survivors
            .iter()
            .all(|&s| cluster.status(s).unwrap().has_quorum)
    );

    cluster.restart(victim).unwrap();
    assert_converges(&cluster, "restarted node did not rejoin");
    for s in survivors {
        let after = incarnation_seen_by(&cluster, s, victim);
        assert!(
            after > before,
            "{} sees incarnation {after}, not above {before}",
            cluster.name(s)
        );
    }
}

#[test]
fn a_paused_node_is_declared_down_and_rejoins_after_it_resumes() {
    let _serial = serial();
    let cluster = converged_cluster(3);
    let victim = 2;
    cluster.pause(victim);
    let allowed = detection_bound(cluster.len()) + OBSERVATION_SLACK;
    let down = cluster.wait_until(allowed, |c| {
        c.sees(0, victim, MemberState::Down) && c.sees(1, victim, MemberState::Down)
    });
    assert!(
        down.is_some(),
        "paused node not declared down within {allowed:?}:\n{}",
        logs(&cluster)
    );
    // Links follow membership: the survivors close theirs to the node declared down.
    let dropped = cluster.wait_until(Duration::from_secs(5), |c| {
        links(c, 0) == 1 && links(c, 1) == 1
    });
    cluster.resume(victim);
    assert!(
        dropped.is_some(),
        "links to a down node were kept:\n{}",
        logs(&cluster)
    );
    assert_converges(&cluster, "resumed node did not rejoin");
    let all = cluster.all();
    // ...and redial once it is back.
    let redialled = cluster.wait_until(Duration::from_secs(10), |c| {
        all.iter().all(|&i| links(c, i) == 2)
    });
    assert!(
        redialled.is_some(),
        "links not re-established:\n{}",
        logs(&cluster)
    );
    assert!(
        cluster.log(victim).contains("declared down by the cluster"),
        "the resumed node should notice it was declared down:\n{}",
        cluster.log(victim)
    );
}

#[test]
fn a_two_three_partition_leaves_quorum_only_on_the_three_side_and_heals_to_one_view() {
    let _serial = serial();
    let cluster = converged_cluster(5);
    let (minority, majority) = ([0usize, 1], [2usize, 3, 4]);
    cluster.partition(&[&minority, &majority]).unwrap();
    let split = cluster.wait_until(Duration::from_secs(20), |c| {
        c.converged(&minority) && c.converged(&majority)
    });
    assert!(split.is_some(), "sides did not settle:\n{}", logs(&cluster));
    for i in minority {
        assert!(
            !cluster.status(i).unwrap().has_quorum,
            "{} kept quorum",
            cluster.name(i)
        );
    }
    for i in majority {
        assert!(
            cluster.status(i).unwrap().has_quorum,
            "{} lost quorum",
            cluster.name(i)
        );
    }
    let cut = cluster.wait_until(Duration::from_secs(5), |c| {
        minority.iter().all(|&i| links(c, i) == 1) && majority.iter().all(|&i| links(c, i) == 2)
    });
    assert!(
        cut.is_some(),
        "links crossed the partition:\n{}",
        logs(&cluster)
    );

    cluster.heal().unwrap();
    assert_converges(&cluster, "no single view after healing");
    let all = cluster.all();
    assert!(all.iter().all(|&i| cluster.status(i).unwrap().has_quorum));
}

#[test]
fn graceful_shutdown_is_seen_as_left_not_down() {
    let _serial = serial();
    let mut cluster = converged_cluster(3);
    let status = cluster.terminate(2, Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "node did not exit cleanly: {status:?}"
    );
    let left = cluster.wait_until(Duration::from_secs(5), |c| {
        c.sees(0, 2, MemberState::Left) && c.sees(1, 2, MemberState::Left)
    });
    assert!(
        left.is_some(),
        "departure not seen as left:\n{}",
        logs(&cluster)
    );
    // And it stays left: the failure detector must not turn it into down later.
    std::thread::sleep(detection_bound(cluster.len()));
    assert!(cluster.sees(0, 2, MemberState::Left) && cluster.sees(1, 2, MemberState::Left));
    assert!(
        !cluster.log(0).contains("member down"),
        "{}",
        cluster.log(0)
    );
}

#[test]
fn a_node_without_seeds_is_a_one_node_cluster_with_quorum() {
    let _serial = serial();
    let mut s = spec(1);
    s.cluster_size = Some(1);
    let cluster = TestCluster::start(s).unwrap();
    let up = cluster.wait_until(Duration::from_secs(10), |c| c.admin(0).healthy());
    assert!(up.is_some(), "{}", logs(&cluster));
    let status = cluster.status(0).unwrap();
    assert!(status.has_quorum);
    assert_eq!(status.members.len(), 1);
    assert_eq!(status.members[0].state, MemberState::Up);
}

/// Node `i`'s open outgoing links.
fn links(cluster: &TestCluster, i: usize) -> u64 {
    cluster
        .admin(i)
        .stats()
        .ok()
        .and_then(|s| s["transport"]["links"].as_u64())
        .unwrap_or(u64::MAX)
}

fn incarnation_seen_by(cluster: &TestCluster, observer: usize, target: usize) -> u64 {
    cluster
        .status(observer)
        .expect("status")
        .members
        .iter()
        .filter(|m| m.name == cluster.name(target))
        .map(|m| m.incarnation)
        .max()
        .expect("target listed")
}
