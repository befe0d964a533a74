//! The consensus group across real processes: it forms, elects again when its leader is
//! killed, keeps every member's place across restarts (one node, or all of them), refuses a
//! node whose settings disagree, and takes a node whose store is unreadable back as a new
//! member.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{converged_cluster, locks, logs, serial, spec};
use colony_runtime::ConsensusReport;
use colony_runtime::testkit::TestCluster;

/// Each running node's consensus report.
fn reports(cluster: &TestCluster) -> Vec<Option<ConsensusReport>> {
    (0..cluster.len())
        .map(|i| cluster.status(i).map(|s| s.consensus))
        .collect()
}

/// Waits until every node in `nodes` agrees on one leader and `voters` voters and is
/// registered in an epoch; returns the agreed report of the first.
fn wait_for_group(cluster: &TestCluster, nodes: &[usize], voters: usize) -> ConsensusReport {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = reports(cluster);
        let seen: Vec<&ConsensusReport> = nodes.iter().filter_map(|i| all[*i].as_ref()).collect();
        let agreed = seen.len() == nodes.len()
            && seen.iter().all(|r| {
                r.leader.is_some()
                    && r.leader == seen[0].leader
                    && r.voters.len() == voters
                    && r.epoch.is_some()
                    && r.problem.is_none()
            });
        if agreed {
            return seen[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no agreed group: {all:#?}\n{}",
            logs(cluster)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn index_of(cluster: &TestCluster, replica: &str) -> usize {
    (0..cluster.len())
        .find(|i| {
            cluster
                .status(*i)
                .is_some_and(|s| s.consensus.replica == replica)
        })
        .expect("a node with that replica id")
}

#[test]
fn a_group_forms_elects_again_and_keeps_every_member_across_restarts() {
    let _serial = serial();
    let mut cluster = converged_cluster(3);
    let all = [0, 1, 2];
    let first = wait_for_group(&cluster, &all, 3);
    let ids: Vec<String> = reports(&cluster)
        .into_iter()
        .map(|r| r.unwrap().replica)
        .collect();

    // Kill the leader: the others elect a new one in a higher term.
    let leader = index_of(&cluster, first.leader.as_deref().unwrap());
    cluster.kill(leader);
    let others: Vec<usize> = all.iter().copied().filter(|i| *i != leader).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    let second = loop {
        let r = cluster.status(others[0]).map(|s| s.consensus);
        if let Some(r) = r.filter(|r| r.leader.is_some() && r.leader != first.leader) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader\n{}",
            logs(&cluster)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(second.term > first.term);

    // The killed node comes back with the same member id and a new epoch.
    cluster.restart(leader).unwrap();
    let back = wait_for_group(&cluster, &all, 3);
    assert_eq!(back.voters.len(), 3);
    assert_eq!(
        cluster.status(leader).unwrap().consensus.replica,
        ids[leader]
    );

    // Every node stops, then starts again: the group, its members and its log are recovered.
    for i in all {
        cluster.terminate(i, Duration::from_secs(15));
    }
    for i in all {
        cluster.restart(i).unwrap();
    }
    let again = wait_for_group(&cluster, &all, 3);
    assert_eq!(again.group, first.group);
    let mut before = first.voters.clone();
    let mut after = again.voters.clone();
    before.sort();
    after.sort();
    assert_eq!(before, after, "the same members vote");
    assert!(again.commit >= back.commit);
}

#[test]
fn a_node_whose_settings_disagree_is_refused_with_both_values() {
    let _serial = serial();
    let cluster = converged_cluster(3);
    wait_for_group(&cluster, &[0, 1, 2], 3);
    let home = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut node = Command::new(env!("CARGO_BIN_EXE_colony"))
        .arg("node")
        .args(["--name", "odd"])
        .arg("--home")
        .arg(home.path())
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--seeds", &cluster.addr(0).to_string()])
        .args(["--cookie", &spec(3).cookie])
        .args(["--cluster-size", "3"])
        .args(["--lock-lease-ms", "1500"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = node.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the odd node was not refused");
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = node.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success());
    assert!(
        stderr.contains("`lock_lease_ms` is 1500 on this node but 5000 in the cluster"),
        "{stderr}"
    );
}

/// Node 2's store is made unreadable by `corrupt` while it is down; it comes back under a new
/// member id, with its old file moved aside and a log line naming it, and the group keeps its
/// state: the old id leaves the voters, the new one replaces it, and lock tokens go on above
/// those granted before.
fn an_unreadable_store_rejoins_as_a_new_member(corrupt: impl FnOnce(&std::path::Path)) {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // A short voter grace period: the group replaces the old id 5 s after it went, not 30 s.
    let args = ["--voter-grace-ms", "5000"];
    let mut cluster = locks::hammer_on_clocks(dir.path(), 3, &["kept"], 1, 100, &[], &args);
    wait_for_group(&cluster, &[0, 1, 2], 3);
    assert!(
        locks::wait_progress(&cluster, 0, 6, Duration::from_secs(30)),
        "no locks granted:\n{}",
        logs(&cluster)
    );
    let old = cluster.status(2).unwrap().consensus.replica;
    let group = cluster.status(2).unwrap().consensus.group;
    cluster.kill(2);
    let top_before = token_max(&cluster);
    let store = cluster.home(2).join("state").join("consensus.redb");
    corrupt(&store);
    cluster.restart(2).unwrap();

    // A new member id, the old file moved aside, and a log line that names the file.
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        let r = cluster.status(2).map(|s| s.consensus);
        if let Some(r) = r.filter(|r| r.epoch.is_some()) {
            break r.replica;
        }
        assert!(
            Instant::now() < deadline,
            "never rejoined\n{}",
            logs(&cluster)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(new, old, "a new member id");
    let log = cluster.log(2);
    assert!(
        log.contains("the consensus store is unreadable")
            && log.contains(&store.display().to_string()),
        "{log}"
    );
    let moved_aside = std::fs::read_dir(cluster.home(2).join("state"))
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .contains("consensus.corrupt-")
        });
    assert!(moved_aside);

    // The group replaces the old id with the new one (after the voter grace period) and never
    // hears the old one again: no node reports it as leader or voter from then on.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = reports(&cluster);
        assert!(
            all.iter()
                .flatten()
                .all(|r| r.leader.as_deref() != Some(old.as_str())),
            "the old member id leads: {all:#?}"
        );
        let replaced = all.iter().all(|r| {
            r.as_ref().is_some_and(|r| {
                r.group == group
                    && r.voters.len() == 3
                    && r.voters.contains(&new)
                    && !r.voters.contains(&old)
                    && r.outgoing.is_empty()
            })
        });
        if replaced {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old member id was not replaced: {all:#?}\n{}",
            logs(&cluster)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Locks go on, tokens above every one granted before the store was lost, the rejoined
    // node's included.
    let granted_anew = cluster.wait_until(Duration::from_secs(30), |c| {
        locks::events(c, 2).iter().any(|e| {
            e["event"] == "acquired" && e["token"].as_u64().is_some_and(|t| t > top_before)
        })
    });
    assert!(
        granted_anew.is_some(),
        "the rejoined node was never granted the lock:\n{}",
        logs(&cluster)
    );
    locks::stop_and_check(cluster);
}

/// The highest fencing token any node recorded.
fn token_max(cluster: &TestCluster) -> u64 {
    locks::all_events(cluster)
        .iter()
        .filter_map(|e| e["token"].as_u64())
        .max()
        .unwrap_or(0)
}

#[test]
fn a_node_whose_store_is_garbage_comes_back_as_a_new_member() {
    an_unreadable_store_rejoins_as_a_new_member(|store| {
        std::fs::write(store, b"not a consensus store: junk written over it").unwrap();
    });
}

#[test]
fn a_node_whose_store_is_truncated_comes_back_as_a_new_member() {
    an_unreadable_store_rejoins_as_a_new_member(|store| {
        let len = std::fs::metadata(store).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(store).unwrap();
        file.set_len(len / 2).unwrap();
    });
}

/// The largest commit index any running node reports.
fn top_commit(cluster: &TestCluster) -> u64 {
    reports(cluster)
        .into_iter()
        .flatten()
        .map(|r| r.commit)
        .max()
        .unwrap_or(0)
}

/// Waits until `done` holds for the reports, at most `limit`; fails with `what` otherwise.
fn wait_reports(
    cluster: &TestCluster,
    limit: Duration,
    what: &str,
    done: impl Fn(&[Option<ConsensusReport>]) -> bool,
) {
    let deadline = Instant::now() + limit;
    loop {
        let all = reports(cluster);
        if done(&all) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {all:#?}\n{}",
            logs(cluster)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A member down while the others compacted their logs behind a snapshot larger than one
/// request (`--max-message-bytes 16384`, a state of 100 jobs and their histories) catches up
/// from the snapshot sent in pieces, and takes part again. Sent whole, the snapshot was refused
/// before it left, and the member never caught up while it still heartbeated.
#[test]
fn a_member_behind_a_snapshot_larger_than_a_request_catches_up_from_its_pieces() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let jobs: Vec<serde_json::Value> = (0..100)
        .map(|i| serde_json::json!({ "id": format!("j{i:03}"), "every_ms": 500, "work_ms": 0 }))
        .collect();
    let workload = serde_json::json!({
        "kind": "sched_hammer", "scheduler": "n1", "poll_ms": 600_000,
        "history": "log/sched.jsonl", "jobs": jobs,
    });
    let mut spec = crate::common::workload_spec(3, dir.path(), &workload);
    spec.extra_args
        .extend(["--max-message-bytes".into(), "16384".into()]);
    let mut cluster = TestCluster::start(spec).expect("spawn nodes");
    crate::common::assert_converges(&cluster, "no convergence");
    let first = wait_for_group(&cluster, &[0, 1, 2], 3);
    let leader = index_of(&cluster, first.leader.as_deref().unwrap());
    let behind = (0..3).rev().find(|i| *i != leader).unwrap();
    // The jobs are scheduled and firing: the state is far larger than one request.
    wait_reports(
        &cluster,
        Duration::from_secs(30),
        "the jobs never ran",
        |all| all.iter().flatten().any(|r| r.commit >= 1_000),
    );
    let before = cluster.status(behind).unwrap().consensus;
    cluster.kill(behind);
    let left_at = top_commit(&cluster);
    let snapshots = |all: &[Option<ConsensusReport>]| {
        all.iter().flatten().map(|r| r.snapshots).max().unwrap_or(0)
    };
    let made = snapshots(&reports(&cluster));
    // Every live member compacts its log past what the stopped one has, twice over.
    wait_reports(
        &cluster,
        Duration::from_secs(90),
        "the others did not compact their logs",
        |all| {
            all.iter().flatten().all(|r| r.snapshots >= made + 2)
                && all.iter().flatten().any(|r| r.commit > left_at + 2_048)
        },
    );
    cluster.restart(behind).unwrap();
    let target = top_commit(&cluster);
    wait_reports(
        &cluster,
        Duration::from_secs(60),
        "the member that was down did not catch up",
        |all| {
            all[behind]
                .as_ref()
                .is_some_and(|r| r.applied >= target && r.installed >= 1 && r.epoch.is_some())
        },
    );
    let back = cluster.status(behind).unwrap().consensus;
    assert_eq!(back.replica, before.replica, "the same member came back");
    wait_for_group(&cluster, &[0, 1, 2], 3);
}
