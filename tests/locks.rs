//! Cluster locks across node processes under crashes, pauses and partitions. Each node hammers
//! a few names and records every hold; the checkers then prove that no two holds of a name
//! overlapped within their valid windows and that tokens only grew (DESIGN: Locks).

mod common;

use std::time::Duration;

use colony_runtime::ownership::slot_of;
use common::locks::{
    LEASE_MS, hammer, holding, renewed_holds, stop_and_check, total, wait_progress,
};
use common::{assert_converges, logs, serial, wait_voters};

const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

fn slot(name: &str) -> usize {
    usize::from(slot_of(
        colony::actors::locks::name::named_key(name).as_bytes(),
    ))
}

#[test]
fn no_overlap_when_a_holder_is_killed() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = hammer(dir.path(), 3, &NAMES, 2, 100);
    wait_voters(&cluster, 3);
    assert!(
        wait_progress(&cluster, 0, 20, Duration::from_secs(30)),
        "no progress:\n{}",
        logs(&cluster)
    );
    assert!(
        cluster
            .wait_until(Duration::from_secs(10), |c| holding(c, 1))
            .is_some()
    );
    cluster.kill(1);
    let before = total(&cluster);
    assert!(
        wait_progress(&cluster, before, 30, Duration::from_secs(30)),
        "locks stuck after the holder died:\n{}",
        logs(&cluster)
    );
    stop_and_check(cluster);
}

#[test]
fn no_overlap_when_the_owner_is_killed() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = hammer(dir.path(), 3, &NAMES, 2, 50);
    // Faults only once the group has its voters: a group that loses its one founding voter
    // before it grew has nobody to elect.
    wait_voters(&cluster, 3);
    assert!(
        wait_progress(&cluster, 0, 20, Duration::from_secs(30)),
        "no progress:\n{}",
        logs(&cluster)
    );
    let status = cluster.status(0).unwrap();
    let owner = status.consensus.lock_slots[slot("alpha")].clone().unwrap();
    let victim = status
        .members
        .iter()
        .find(|m| format!("{:x}", m.replica) == owner)
        .unwrap()
        .name
        .clone();
    let victim = cluster
        .all()
        .into_iter()
        .find(|&i| cluster.name(i) == victim)
        .unwrap();
    cluster.kill(victim);
    let before = total(&cluster);
    assert!(
        wait_progress(&cluster, before, 30, Duration::from_secs(40)),
        "locks stuck after the owner died:\n{}",
        logs(&cluster)
    );
    stop_and_check(cluster);
}

#[test]
fn a_holder_paused_past_its_lease_is_fenced_off_when_it_wakes() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cluster = hammer(dir.path(), 3, &["fenced"], 2, 300);
    assert!(
        wait_progress(&cluster, 0, 6, Duration::from_secs(30)),
        "no progress:\n{}",
        logs(&cluster)
    );
    let sleeper = 2;
    assert!(
        cluster
            .wait_until(Duration::from_secs(20), |c| holding(c, sleeper))
            .is_some()
    );
    // The node that serves the name lists its holder, token and lease on `GET /locks`.
    let listed = cluster.wait_until(Duration::from_secs(10), |c| {
        c.all().into_iter().any(|i| {
            c.admin(i).view("locks").is_ok_and(|v| {
                v["served"].as_array().is_some_and(|s| {
                    s.iter().any(|h| {
                        h["name"] == "n:fenced" && h["token"].as_u64().is_some_and(|t| t > 0)
                    })
                })
            })
        })
    });
    assert!(
        listed.is_some(),
        "no node listed the hold:\n{}",
        logs(&cluster)
    );
    cluster.pause(sleeper);
    let before = total(&cluster);
    // The others take the lock once the paused holder's lease has run out.
    let moved_on = wait_progress(&cluster, before, 3, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(LEASE_MS));
    cluster.resume(sleeper);
    assert!(
        moved_on,
        "nobody took over from the paused holder:\n{}",
        logs(&cluster)
    );
    // The sleeper wakes up, writes with its old token, and the store refuses it.
    let refused = cluster.wait_until(Duration::from_secs(20), |c| {
        common::locks::events(c, sleeper)
            .iter()
            .any(|e| e["event"] == "write" && e["accepted"] == false)
    });
    assert!(
        refused.is_some(),
        "the stale write was not refused:\n{}",
        cluster.log(sleeper)
    );
    let events = stop_and_check(cluster);
    let stale = events
        .iter()
        .find(|e| e["event"] == "write" && e["accepted"] == false)
        .unwrap();
    assert_eq!(
        stale["lost"], true,
        "the stale holder was told it lost the lock: {stale}"
    );
}

#[test]
fn no_overlap_across_a_two_three_partition_and_its_healing() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cluster = hammer(dir.path(), 5, &NAMES, 1, 50);
    assert!(
        wait_progress(&cluster, 0, 20, Duration::from_secs(30)),
        "no progress:\n{}",
        logs(&cluster)
    );
    wait_voters(&cluster, 5);
    split_heal_and_check(cluster, 20, Duration::from_secs(30));
}

/// Cuts {n1, n2} from {n3, n4, n5}, waits for `progress` holds on the majority side, heals,
/// waits for as many again, and checks the whole history.
fn split_heal_and_check(
    cluster: colony_runtime::testkit::TestCluster,
    progress: usize,
    within: Duration,
) {
    cluster.partition(&[&[0, 1], &[2, 3, 4]]).unwrap();
    let before = total(&cluster);
    assert!(
        wait_progress(&cluster, before, progress, within),
        "the majority side made no progress:\n{}",
        logs(&cluster)
    );
    cluster.heal().unwrap();
    assert_converges(&cluster, "no single view");
    let before = total(&cluster);
    assert!(
        wait_progress(&cluster, before, progress, within),
        "no progress after healing:\n{}",
        logs(&cluster)
    );
    stop_and_check(cluster);
}

/// The node that serves lock `name`'s slot, by node 0's `/cluster`.
fn serving_node(cluster: &colony_runtime::testkit::TestCluster, name: &str) -> Option<usize> {
    let status = cluster.status(0)?;
    let owner = status.consensus.lock_slots.get(slot(name))?.clone()?;
    let member = status
        .members
        .iter()
        .find(|m| format!("{:x}", m.replica) == owner)?;
    cluster
        .all()
        .into_iter()
        .find(|&i| cluster.name(i) == member.name)
}

#[test]
fn holds_that_renew_stay_exclusive_across_a_two_three_partition() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // Each hold lasts two and a half leases: it lives on renewals.
    let cluster = hammer(dir.path(), 5, &NAMES, 1, LEASE_MS * 5 / 2);
    wait_voters(&cluster, 5);
    assert!(
        cluster
            .wait_until(Duration::from_secs(30), |c| renewed_holds(c, LEASE_MS) >= 3)
            .is_some(),
        "no hold outlived its first lease:\n{}",
        logs(&cluster)
    );
    split_heal_and_check(cluster, 4, Duration::from_secs(40));
}

#[test]
fn no_overlap_when_the_node_that_serves_and_holds_a_name_is_killed() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = hammer(dir.path(), 3, &NAMES, 1, LEASE_MS * 2);
    wait_voters(&cluster, 3);
    // Wait for a node that holds a name whose slot it serves itself.
    let found = cluster.wait_until(Duration::from_secs(30), |c| {
        NAMES.iter().any(|n| {
            serving_node(c, n).is_some_and(|i| {
                common::locks::events(c, i)
                    .iter()
                    .rev()
                    .find(|e| e["name"] == format!("n:{n}") || e["name"] == *n)
                    .is_some_and(|e| e["event"] == "acquired")
            })
        })
    });
    assert!(
        found.is_some(),
        "no node held a name it serves:\n{}",
        logs(&cluster)
    );
    let victim = NAMES
        .iter()
        .filter_map(|n| serving_node(&cluster, n))
        .find(|&i| holding(&cluster, i))
        .expect("a serving holder");
    cluster.kill(victim);
    let before = total(&cluster);
    assert!(
        wait_progress(&cluster, before, 6, Duration::from_secs(40)),
        "locks stuck after the serving holder died:\n{}",
        logs(&cluster)
    );
    stop_and_check(cluster);
}

#[test]
fn a_rolling_restart_of_every_node_under_load_keeps_every_promise() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = hammer(dir.path(), 5, &NAMES, 1, LEASE_MS * 2);
    wait_voters(&cluster, 5);
    assert!(wait_progress(&cluster, 0, 6, Duration::from_secs(30)));
    let now_us = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
    };
    // While a node restarts its own holders go with it; everyone else's must not notice.
    let mut restarting = Vec::new();
    for i in 0..5 {
        let from = now_us();
        cluster.terminate(i, Duration::from_secs(15));
        cluster.restart(i).unwrap();
        assert_converges(&cluster, "no convergence after a restart");
        wait_voters(&cluster, 5);
        restarting.push((cluster.name(i).to_owned(), from, now_us()));
    }
    let before = total(&cluster);
    assert!(
        wait_progress(&cluster, before, 6, Duration::from_secs(40)),
        "no progress after the rolling restart:\n{}",
        logs(&cluster)
    );
    // Stopping every node ends with a group that lost its quorum: holds go then, as promised.
    let stopping = now_us();
    let events = stop_and_check(cluster);
    // While a node restarts its own holds may go with it (its guards stop); every other hold
    // moves with its slot and is renewed by the next owner.
    let lost: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "lost")
        .filter(|e| {
            let at = e["at_us"].as_u64().unwrap_or(0);
            at < stopping
                && !restarting.iter().any(|(name, from, to)| {
                    e["node"] == name.as_str() && (*from..=*to).contains(&at)
                })
        })
        .collect();
    assert!(
        lost.is_empty(),
        "planned moves lost holds of nodes that were not restarting: {lost:#?}\nrestarts: {restarting:?}"
    );
}
