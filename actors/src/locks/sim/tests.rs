//! The lock cores under faults: every run ends with every checker passing.
//!
//! A failing seed prints itself; replay it with a trace:
//! `COLONY_SIM_SEED=<seed> COLONY_SIM_TRACE=1 cargo test -p colony-actors --lib
//! locks::sim::tests::replay -- --nocapture` (add `COLONY_SIM_SCRIPT=planned` for the planned
//! moves' script, `isolated` for the isolated owner's, `paused` for the paused holder's,
//! `takeover` for the crashed new owner's, `slow-link` for the slow link's, and
//! `COLONY_SIM_DRIFT_PPM=9900` for a seed of the drift allowance's edge). `COLONY_SIM_SOAK=20`
//! runs twenty times as many seeds.

use std::collections::BTreeMap;
use std::time::Duration;

use colony_runtime::consensus::{Command, Domain, Outcome, ReplicaId, SLOTS};
use colony_runtime::sim::env;
use colony_runtime::sim::group::{Fault, GroupWorld, GroupWorldConfig, Script, Status, check};
use colony_runtime::testkit::check::{Block, granted_with_entitlement};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{LockNode, Lost, NAMES};

type World = GroupWorld<LockNode>;

/// How far each clock drifts from world time at most, in parts per million: two clocks drift
/// apart by up to 1.6% (the allowance is 2%). `COLONY_SIM_DRIFT_PPM` overrides it for a
/// replay.
const DRIFT_PPM: i64 = 8_000;
/// Two clocks drift apart by up to 1.98%: just inside the allowance.
const EDGE_DRIFT_PPM: i64 = 9_900;

fn drift() -> i64 {
    std::env::var("COLONY_SIM_DRIFT_PPM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DRIFT_PPM)
}

fn settled(seed: u64, nodes: usize) -> World {
    settled_with(seed, nodes, drift())
}

fn settled_with(seed: u64, nodes: usize, drift_ppm: i64) -> World {
    let mut config = GroupWorldConfig::new(seed, nodes);
    config.max_drift_ppm = drift_ppm;
    World::start_settled(config)
}

/// The blocks of tokens the group committed, with the node each was given to.
fn blocks(w: &World) -> Vec<Block> {
    let mut owners: BTreeMap<(u16, u64), ReplicaId> = BTreeMap::new();
    let mut out = Vec::new();
    for (command, outcome) in w.history().outcomes.values() {
        let Outcome::Block {
            generation,
            start,
            end,
        } = outcome
        else {
            continue;
        };
        let (slot, owner) = match command {
            Command::Assign {
                domain: Domain::Locks,
                slot,
                to,
                ..
            } => {
                owners.insert((*slot, *generation), *to);
                (*slot, Some(*to))
            }
            Command::Extend {
                domain: Domain::Locks,
                slot,
                ..
            } => (*slot, owners.get(&(*slot, *generation)).copied()),
            _ => continue,
        };
        if let Some(i) = owner.and_then(|r| w.index_of(r)) {
            out.push(Block {
                scope: format!("slot-{slot}"),
                granter: w.name(i).to_owned(),
                start: *start,
                end: *end,
            });
        }
    }
    out
}

/// Every broken promise of the run, one line each.
fn broken(w: &World) -> Vec<String> {
    let record = w.record();
    let mut out = check::all(w.history());
    out.extend(check::holds(&record.holds));
    out.extend(
        granted_with_entitlement(&record.grants, &record.entitled, &blocks(w))
            .into_iter()
            .map(|u| format!("[entitled] {}: {:?}", u.why, u.grant)),
    );
    out
}

fn assert_clean(w: &World, script: &str) {
    let broken = broken(w);
    assert!(
        broken.is_empty(),
        "seed {seed} ({script}) broke a promise; replay with COLONY_SIM_SEED={seed} \
         COLONY_SIM_SCRIPT={script} COLONY_SIM_DRIFT_PPM={drift} COLONY_SIM_TRACE=1 cargo test \
         -p colony-actors --lib locks::sim::tests::replay -- --nocapture\n{}",
        broken.join("\n"),
        seed = w.seed(),
        drift = w.config().max_drift_ppm,
    );
}

/// The node that serves `name`, as the first running node's group state says.
fn owner_of(w: &World, name: &str) -> Option<usize> {
    let replica = (0..w.len())
        .filter_map(|i| w.service(i))
        .find_map(|s| s.table.owner(name))?;
    w.index_of(replica)
}

/// Brings every node back and waits until the cluster can grant every lock again.
fn recover(w: &mut World, script: &str) {
    w.set_faults(0.0, 0.0);
    w.heal();
    for i in 0..w.len() {
        if w.status(i) == Status::Killed {
            w.restart(i);
        }
    }
    assert!(
        w.run_until(World::settled, Duration::from_secs(60)),
        "seed {} ({script}): did not settle after the faults",
        w.seed()
    );
    w.run_for(Duration::from_secs(1));
}

/// A random fault script on 3 to 7 nodes: pauses (often longer than a lease), kills and
/// restarts, partitions, an isolated owner with a waiter on its side, loss and duplication,
/// graceful restarts and joins, on clocks that start apart and drift.
fn chaos(seed: u64) -> World {
    chaos_with(seed, drift())
}

fn chaos_with(seed: u64, drift_ppm: i64) -> World {
    let nodes = 3 + (seed % 5) as usize;
    let mut w = settled_with(seed, nodes, drift_ppm);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_10c5);
    w.set_faults(0.01, 0.01);
    let script = Script {
        steps: 5,
        faults: &[
            Fault::Pause,
            Fault::Pause,
            Fault::KillRestart,
            Fault::Partition,
            Fault::Own(ISOLATE_OWNER),
            Fault::Lossy,
            Fault::Mild,
            Fault::GracefulRestart,
            Fault::Join,
        ],
        gap_ms: (500, 2500),
    };
    w.play_chaos(&mut rng, script, |w, rng, _, _| isolate_owner(w, rng));
    recover(&mut w, "chaos");
    assert_clean(&w, "chaos");
    w
}

/// The locks script's own fault: the owner of a name, alone with its own waiter if one can
/// be found, is cut off for 1 to 4 s.
const ISOLATE_OWNER: u8 = 0;

fn isolate_owner(w: &mut World, rng: &mut StdRng) {
    let target = (0..w.len())
        .find(|j| w.service(*j).is_some_and(|s| s.contended_here().is_some()))
        .or_else(|| owner_of(w, NAMES[rng.random_range(0..NAMES.len())]));
    if let Some(o) = target {
        let rest: Vec<usize> = (0..w.len()).filter(|j| *j != o).collect();
        w.partition(&[&[o], &rest]);
        w.run_for(Duration::from_millis(rng.random_range(1000..4000)));
        w.heal();
    }
}

/// A name's owner is cut off alone with one of its own clients waiting for the name, while a
/// client of another node holds it: the majority serves the name again only once the owner's
/// entitlement and the holder's lease are over, and the waiter on the owner's side is never
/// granted it from there.
fn isolated(seed: u64) -> World {
    let nodes = 3 + (seed % 3) as usize;
    let mut w = settled(seed, nodes);
    let found = w.run_until(
        |w| (0..w.len()).any(|j| w.service(j).is_some_and(|s| s.contended_here().is_some())),
        Duration::from_secs(30),
    );
    assert!(found, "seed {seed}: no owner with a waiter of its own");
    let o = (0..w.len())
        .find(|j| w.service(*j).is_some_and(|s| s.contended_here().is_some()))
        .expect("found above");
    let rest: Vec<usize> = (0..w.len()).filter(|j| *j != o).collect();
    w.partition(&[&[o], &rest]);
    w.run_for(Duration::from_secs(4));
    recover(&mut w, "isolated");
    assert_clean(&w, "isolated");
    w
}

/// A hold of node `i` with half a lease or more to run: its guard and its index in the record.
fn holding(w: &World, i: usize) -> Option<(u64, usize)> {
    let half = w.config().group.liveness / 2;
    w.service(i)?.holding(w.clock(i), half)
}

/// A holder paused for longer than a lease: its hold ends by its own clock (the record's end
/// is the lease end it last counted), it is told on waking that it lost the lock, and others
/// are granted the name meanwhile without overlapping it.
fn paused_holder(seed: u64) -> World {
    let nodes = 3 + (seed % 3) as usize;
    let mut w = settled(seed, nodes);
    let lease = w.config().group.liveness;
    let found = w.run_until(
        |w| (0..w.len()).any(|j| holding(w, j).is_some()),
        Duration::from_secs(30),
    );
    assert!(found, "seed {seed}: nobody holds a lock");
    let (i, (guard, hold)) = (0..w.len())
        .find_map(|j| Some((j, holding(&w, j)?)))
        .expect("found above");
    let paused_at = w.now();
    let pause = lease * 2 + lease / 2;
    w.pause(i, pause);
    w.run_for(pause + lease);
    let record = w.record();
    let end = Duration::from_micros(record.holds[hold].end_us);
    // Renewals stop with the pause: the lease it counted ends within a lease of the pause.
    assert!(
        end <= paused_at + lease,
        "seed {seed}: the paused holder's lease ran to {end:?}, paused at {paused_at:?}"
    );
    let holder = format!("{}/{guard}", w.name(i));
    assert!(
        record
            .lost
            .iter()
            .any(|l| l.holder == holder && l.at >= paused_at + pause),
        "seed {seed}: {holder} was not told it lost its lock on waking"
    );
    recover(&mut w, "paused");
    assert_clean(&w, "paused");
    w
}

/// A node joins, is handed slots with their holds, and crashes at once: the holds it took over
/// must end before the next owner, which serves the slots with empty tables once the crashed
/// node's epoch is revoked, grants their names again.
/// Returns the world and whether the node had taken holds over when it crashed.
fn taken_over_then_killed(seed: u64) -> (World, bool) {
    let nodes = 3 + (seed % 3) as usize;
    let mut w = settled(seed, nodes);
    w.run_for(Duration::from_secs(2));
    let j = w.join();
    let took = w.run_until(
        |w| {
            w.service(j)
                .is_some_and(|s| s.table.holds().next().is_some())
        },
        Duration::from_secs(10),
    );
    w.kill(j);
    w.run_for(Duration::from_secs(3));
    recover(&mut w, "takeover");
    assert_clean(&w, "takeover");
    (w, took)
}

/// Requests from one node to the owner of a name take longer than the wire allowance while the
/// owner stays entitled (a congested connection): the waiters on that node time out, ask again
/// and find their first request still queued.
fn slow_link(seed: u64) -> World {
    let nodes = 3 + (seed % 3) as usize;
    let mut w = settled(seed, nodes);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0a5e_d0ff);
    for _ in 0..3 {
        w.run_for(Duration::from_millis(rng.random_range(200..1500)));
        if let Some(o) = owner_of(&w, NAMES[rng.random_range(0..NAMES.len())]) {
            let from = (o + 1 + rng.random_range(0..w.len() - 1)) % w.len();
            w.slow(
                from,
                o,
                Duration::from_millis(rng.random_range(2_100..3_500)),
            );
            w.run_for(Duration::from_secs(4));
            w.heal();
        }
    }
    w.run_for(Duration::from_secs(3));
    recover(&mut w, "slow-link");
    assert_clean(&w, "slow-link");
    w
}

/// Planned moves only: a rolling graceful restart of every node, then a join, on healthy links.
/// Returns the world and when the moves began (its record counts the holds lost).
fn planned(seed: u64) -> (World, Duration) {
    let nodes = 3 + (seed % 3) as usize;
    let mut w = settled(seed, nodes);
    w.run_for(Duration::from_secs(2));
    let began = w.now();
    for i in 0..nodes {
        assert!(w.leave_and_stop(i), "seed {seed}: node {i} did not retire");
        w.run_for(Duration::from_millis(300));
        w.restart(i);
        assert!(
            w.run_until(World::settled, Duration::from_secs(20)),
            "seed {seed}: node {i} did not come back"
        );
        w.run_for(Duration::from_secs(1));
    }
    w.join();
    assert!(w.run_until(World::settled, Duration::from_secs(20)));
    w.run_for(Duration::from_secs(2));
    assert_clean(&w, "planned");
    (w, began)
}

/// The rolling-restart CI failure's gap (a process test lost a hold 0.85 s after the last
/// restart): the old owner refused renewals as soon as it applied a move, and a next owner that
/// applied it late served nothing yet. Each restarted node is paused for 700 ms at the moment
/// the group first gives it a slot, before it applied that: no hold of another node may be lost
/// (the paused node's own may: it cannot renew them). Seed 0 lost three before the old owner
/// lent the holds until the next owner asks for them.
#[test]
fn planned_moves_to_a_node_that_applies_them_late_keep_every_other_hold() {
    const PAUSE: Duration = Duration::from_millis(700);
    for seed in 0..10 * env::soak() {
        let nodes = 3 + (seed % 3) as usize;
        let mut w = settled(seed, nodes);
        w.run_for(Duration::from_secs(2));
        let mut pauses = Vec::new();
        for i in 0..nodes {
            assert!(w.leave_and_stop(i), "seed {seed}: node {i} did not retire");
            w.run_for(Duration::from_millis(300));
            w.restart(i);
            assert!(
                w.run_until(|w| given(w, i, false), Duration::from_secs(20)),
                "seed {seed}: no slot moved to node {i}"
            );
            assert!(
                !given(&w, i, true),
                "seed {seed}: node {i} applied its move"
            );
            pauses.push((format!("{}/", w.name(i)), w.now()));
            w.pause(i, PAUSE);
            assert!(
                w.run_until(World::settled, Duration::from_secs(20)),
                "seed {seed}: node {i} did not come back"
            );
            w.run_for(Duration::from_secs(1));
        }
        assert_clean(&w, "planned-late");
        // A paused node learns it lost its holds when it resumes.
        let own = |l: &Lost| {
            pauses.iter().any(|(node, at)| {
                l.holder.starts_with(node.as_str()) && l.at >= *at && l.at <= *at + PAUSE * 2
            })
        };
        assert_no_hold_lost_but(&w, Duration::ZERO, own);
    }
}

/// Whether a locks slot is given to node `i` in another node's applied state (`itself`: in
/// node `i`'s own).
fn given(w: &World, i: usize, itself: bool) -> bool {
    let me = w.replica(i);
    let mut cores = (0..w.len())
        .filter(|j| (*j == i) == itself)
        .filter_map(|j| w.core(j));
    cores.any(|c| {
        (0..SLOTS).any(|slot| {
            c.state()
                .slot(Domain::Locks, slot)
                .is_some_and(|s| s.owner.is_some_and(|(r, _)| r == me))
        })
    })
}

/// Replays `COLONY_SIM_SEED` with the script `COLONY_SIM_SCRIPT` (chaos unless named).
#[test]
fn replay() {
    let Some(seed) = env::replay_seed() else {
        return;
    };
    let w = match std::env::var("COLONY_SIM_SCRIPT").as_deref() {
        Ok("planned") => planned(seed).0,
        Ok("isolated") => isolated(seed),
        Ok("paused") => paused_holder(seed),
        Ok("takeover") => taken_over_then_killed(seed).0,
        Ok("slow-link") => slow_link(seed),
        _ => chaos(seed),
    };
    eprintln!("{}", summary(&w));
}

fn summary(w: &World) -> String {
    let r = w.record();
    format!(
        "seed {}: {} holds, {} grants and renewals, {} renewals, {} releases, {} busy, {} gave up, \
         {} cancels, {} lost",
        w.seed(),
        r.holds.len(),
        r.grants.len(),
        r.renewals,
        r.releases,
        r.busy,
        r.gave_up,
        r.cancels,
        r.lost.len()
    )
}

#[test]
fn no_fault_script_breaks_exclusivity_tokens_or_entitlement() {
    let (mut holds, mut renewals, mut releases, mut busy, mut cancels, mut lost) =
        (0, 0, 0, 0, 0, 0);
    for seed in 0..120 * env::soak() {
        let w = chaos(seed);
        let r = w.record();
        holds += r.holds.len();
        renewals += r.renewals;
        releases += r.releases;
        busy += r.busy;
        cancels += r.cancels;
        lost += r.lost.len();
    }
    // The runs reached the paths under test.
    assert!(
        holds > 0 && renewals > 0 && releases > 0 && busy > 0 && cancels > 0 && lost > 0,
        "{holds} holds, {renewals} renewals, {releases} releases, {busy} busy, {cancels} \
         cancels, {lost} lost"
    );
}

#[test]
fn clocks_at_the_edge_of_the_drift_allowance_break_nothing() {
    for seed in 10_000..10_000 + 30 * env::soak() {
        chaos_with(seed, EDGE_DRIFT_PPM);
    }
}

#[test]
fn an_isolated_owner_with_a_waiter_on_its_side_grants_nothing_the_majority_contradicts() {
    for seed in 0..40 * env::soak() {
        isolated(seed);
    }
}

#[test]
fn a_holder_paused_past_its_lease_sees_it_expire_by_its_own_clock() {
    for seed in 0..16 * env::soak() {
        paused_holder(seed);
    }
}

#[test]
fn holds_taken_over_by_a_node_that_crashes_end_before_the_next_owner_grants() {
    let seeds = 16 * env::soak();
    let took = (0..seeds).filter(|s| taken_over_then_killed(*s).1).count() as u64;
    // The runs reached the path under test.
    assert!(took * 2 > seeds, "only {took} of {seeds} took holds over");
}

#[test]
fn waiters_whose_requests_take_longer_than_the_wire_allowance_count_no_lease_too_long() {
    for seed in 0..16 * env::soak() {
        slow_link(seed);
    }
}

#[test]
fn planned_moves_keep_every_hold() {
    let mut holds = 0;
    for seed in 0..10 * env::soak() {
        // From the start: the joins that form the cluster are planned moves too.
        let (w, _) = planned(seed);
        assert_no_hold_lost(&w, Duration::ZERO);
        holds += w.record().holds.len();
    }
    // Shown with --nocapture.
    eprintln!("planned moves: {holds} holds, none lost");
}

/// The joins that form the cluster are planned moves too. Seed 14 once lost holds: a joining
/// node found its own registration only in the snapshot it caught up with, did not know the
/// epoch as its own, and left the tables sent to it untaken for 600 ms (registrations now name
/// the process's incarnation); with it, renewals going to the previous owner first and a new
/// owner holding requests until its table arrives.
#[test]
fn joins_that_form_the_cluster_keep_every_hold() {
    for seed in [14, 38] {
        let (w, _) = planned(seed);
        assert_no_hold_lost(&w, Duration::ZERO);
    }
}

/// No hold was lost since `began`.
fn assert_no_hold_lost(w: &World, began: Duration) {
    assert_no_hold_lost_but(w, began, |_| false);
}

/// [`assert_no_hold_lost`], but for the losses `excused` names.
fn assert_no_hold_lost_but(w: &World, began: Duration, excused: impl Fn(&Lost) -> bool) {
    let lost: Vec<String> = w
        .record()
        .lost
        .iter()
        .filter(|l| l.at >= began && !excused(l))
        .map(|l| l.to_string())
        .collect();
    assert!(
        lost.is_empty(),
        "seed {}: planned moves lost {} holds (replay with COLONY_SIM_SCRIPT=planned):\n{}\n{}",
        w.seed(),
        lost.len(),
        lost.join("\n"),
        summary(w)
    );
}

/// Seeds that once broke a promise. Each names the fix; the exact-output tests beside each core
/// prove the fix on its own too.
#[test]
fn fault_scripts_that_once_failed() {
    // A grant after a long wait in the queue of an owner whose clock ran faster was counted
    // past the owner's lease (`HoldingsConfig::granted_at`). Found as seed 15; seeds 9 and
    // 10004 (at the edge of the drift allowance) break it in today's simulator.
    chaos(9);
    chaos_with(10_004, EDGE_DRIFT_PPM);
    // A group without a leader failed a hand-over's record at once, and the status reporting
    // it asked again, without time passing (`LockTable::proposal_failed`).
    chaos_with(10_407, EDGE_DRIFT_PPM);
    // A slot whose table had left was lent again on a superseding move, renewing a hold the
    // next owner had served from that table (`a_table_that_left_is_never_lent_again`).
    chaos(1_030);
    // A grant cut short at its owner's entitlement was renewed at the moment it was declared
    // lost, during a rolling restart (`HoldingsConfig::next_renew`). Found as seed 3; seed 2
    // breaks it in today's simulator.
    let (w, began) = planned(2);
    assert_no_hold_lost(&w, began);
    // An answer to a restarted process's earlier request was taken for its own (the
    // simulator's request ids; fixed in the simulator).
    chaos(18);
    // Found while the simulator still duplicated lock requests, which the transport never
    // does; today's runs of these seeds no longer reach the bug, which
    // `core_tests.rs` pins: a waiter that asked again was told its first request's wait
    // (`LockTable::acquire`), and a renewal cut short at a new owner's entitlement moved a
    // handed-over lease's end back at the owner but not at the holder (`LockTable::renew`).
    chaos(122);
    chaos(170);
}
