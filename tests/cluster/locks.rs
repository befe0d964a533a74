//! Cluster locks across node processes under crashes, pauses and partitions. Each node hammers
//! a few names and records every hold; the checkers then prove that no two holds of a name
//! overlapped within their valid windows and that tokens only grew (DESIGN: Locks).

use std::time::Duration;

use crate::common::locks::{
    LEASE_MS, assert_progress, assert_renewing, events, hammer, hammer_on_clocks, holding, holds,
    stop_and_check, total, wait_progress,
};
use crate::common::{assert_converges, logs, serial, wait_voters};
use colony_runtime::ownership::slot_of;
use colony_runtime::testkit::TestCluster;

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
    // Every node's `GET /locks` lists the hold, with its token and the node serving the name
    // (one node serves it; the others ask it).
    let listing = |c: &TestCluster, i: usize| {
        let v = c.admin(i).view("locks").ok()?;
        let hold = v["served"]
            .as_array()?
            .iter()
            .find(|h| h["name"] == "n:fenced" && !h["holder"].is_null())?
            .clone();
        let token = hold["token"].as_str()?.parse::<u64>().ok()?;
        (token > 0 && v["unanswered"].as_array()?.is_empty())
            .then(|| hold["served_by"].as_str().map(str::to_owned))?
    };
    let listed = cluster.wait_until(Duration::from_secs(10), |c| {
        let servers: Vec<Option<String>> = c.all().into_iter().map(|i| listing(c, i)).collect();
        servers[0].is_some() && servers.iter().all(|s| *s == servers[0])
    });
    assert!(
        listed.is_some(),
        "the nodes did not all list the hold served by one node:\n{}",
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
        crate::common::locks::events(c, sleeper)
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
    serving_node_seen_by(cluster, 0, name)
}

/// The node that serves lock `name`'s slot, by node `by`'s `/cluster`.
fn serving_node_seen_by(
    cluster: &colony_runtime::testkit::TestCluster,
    by: usize,
    name: &str,
) -> Option<usize> {
    let status = cluster.status(by)?;
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
    assert_renewing(&cluster, 3, Duration::from_secs(30));
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
                crate::common::locks::events(c, i)
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

/// Lock names of the skewed-clock test: enough that each node serves some of them.
const MANY: [&str; 16] = [
    "a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "b0", "b1", "b2", "b3", "b4", "b5",
];

/// Who serves each of [`MANY`], as node `by` sees it, once every name has a live server that is
/// not `dead`.
fn servers_without(
    cluster: &colony_runtime::testkit::TestCluster,
    by: usize,
    dead: Option<usize>,
) -> Vec<usize> {
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let servers: Vec<Option<usize>> = MANY
            .iter()
            .map(|n| serving_node_seen_by(cluster, by, n))
            .collect();
        if servers.iter().all(|s| s.is_some_and(|s| Some(s) != dead)) {
            return servers.into_iter().flatten().collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "names not served by live nodes: {servers:?}\n{}",
            logs(cluster)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wall clocks five leases ahead and behind decide nothing: names move to and from the skewed
/// nodes as owners are killed and come back, holds renew on them and under them, and the
/// history (renewals counted) has no two holders and no token going back (DESIGN: "no wall
/// clock decides safety").
#[test]
fn wall_clocks_five_leases_apart_decide_nothing_while_names_move_between_them() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // n2 runs 5 s ahead, n3 5 s behind; the lease is 1 s.
    let offsets = [0, 5_000, -5_000];
    let skewed = |i: usize| offsets[i] != 0;
    let mut cluster = hammer_on_clocks(dir.path(), 3, &MANY, 1, LEASE_MS * 5 / 2, &offsets, &[]);
    wait_voters(&cluster, 3);
    // The offsets took effect: a node's first incarnation is its wall clock in microseconds.
    let true_now = colony_runtime::clock::WallClock::system().now_micros() as i64;
    for (i, offset) in offsets.iter().enumerate() {
        let incarnation = cluster.status(i).unwrap().members[0].incarnation as i64;
        let off_ms = (incarnation - true_now) / 1000;
        assert!(
            (off_ms - offset).abs() < 2_000,
            "{} seems {off_ms} ms off, not {offset}",
            cluster.name(i)
        );
    }
    assert_renewing(&cluster, 6, Duration::from_secs(40));
    let mut seen = vec![servers_without(&cluster, 0, None)];
    // Kill the unskewed node, then bring it back; then the one whose clock runs ahead. Its
    // names move to the skewed nodes and back on planned hand-overs, then away from one.
    for (victim, observer) in [(0, 1), (1, 0)] {
        cluster.kill(victim);
        seen.push(servers_without(&cluster, observer, Some(victim)));
        let what = format!("locks stuck after {} died", cluster.name(victim));
        assert_progress(&cluster, 8, Duration::from_secs(40), &what);
        cluster.restart(victim).unwrap();
        crate::common::assert_converges(&cluster, "no convergence after a restart");
        wait_voters(&cluster, 3);
        seen.push(servers_without(&cluster, observer, None));
        let what = format!("locks stuck after {} came back", cluster.name(victim));
        assert_progress(&cluster, 8, Duration::from_secs(40), &what);
    }
    let moves: Vec<(usize, usize)> = seen
        .windows(2)
        .flat_map(|w| w[0].iter().copied().zip(w[1].iter().copied()))
        .filter(|(a, b)| a != b)
        .collect();
    assert!(
        moves.iter().any(|(_, to)| skewed(*to)),
        "no name moved to a skewed node: {seen:?}"
    );
    assert!(
        moves.iter().any(|(from, _)| skewed(*from)),
        "no name moved away from a skewed node: {seen:?}"
    );
    // The skewed nodes held names served elsewhere, renewing them past their first lease.
    for i in (0..3).filter(|&i| skewed(i)) {
        let name = cluster.name(i).to_owned();
        let renewed_elsewhere = holds(&events(&cluster, i)).iter().any(|h| {
            let served_by = MANY
                .iter()
                .position(|n| h.name == format!("n:{n}") || h.name == *n)
                .map(|k| seen[0][k]);
            served_by.is_some_and(|s| s != i)
                && h.end_us.saturating_sub(h.start_us) > LEASE_MS * 1000
        });
        assert!(
            renewed_elsewhere,
            "{name} renewed no hold served by another node"
        );
    }
    stop_and_check(cluster);
}
