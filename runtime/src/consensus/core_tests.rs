//! The group core's refusals of bad input, and a walk through founding and registering.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use raft::eraftpb::{Entry, Message, MessageType};

use super::core::*;
use super::*;

fn identity(replica: u64) -> Identity {
    Identity {
        replica: ReplicaId(replica),
        info: MemberInfo {
            name: format!("n{replica}"),
            addr: "127.0.0.1:1".parse().unwrap(),
            incarnation: 1,
        },
        settings: ClusterSettings {
            cluster_size: 3,
            quorum: 2,
            lock_lease_ms: 1000,
            probe_period_ms: 400,
            probe_rtt_ms: 150,
            suspect_to_down_ms: 1200,
        },
    }
}

/// A founded one-voter group, run until its settings and its own registration are applied.
fn founded(now: Instant) -> GroupCore {
    founded_with(now, GroupConfig::with_liveness(Duration::from_secs(1)))
}

fn founded_with(now: Instant, config: GroupConfig) -> GroupCore {
    let mut core = GroupCore::found(identity(1), config, 77, now, 5);
    let mut t = now;
    while core.epoch().is_none() {
        t += Duration::from_millis(100);
        core.handle_timeout(t);
        settle(&mut core);
        assert!(t < now + Duration::from_secs(5), "never registered");
    }
    core
}

/// Drains the core's outputs, making the snapshots it asks for at once as its driver would.
fn settle(core: &mut GroupCore) {
    while let Some(output) = core.poll_output() {
        if let Output::Capture(capture) = output {
            core.captured(capture.encode());
        }
    }
}

fn msg(kind: MessageType, from: u64, to: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.from = from;
    m.to = to;
    m.term = term;
    m
}

#[test]
fn a_founding_node_leads_records_the_settings_and_registers_itself() {
    let t0 = Instant::now();
    let core = founded(t0);
    assert!(core.is_leader());
    assert_eq!(core.state().settings, Some(identity(1).settings));
    assert_eq!(core.epoch(), Some(1));
    assert!(core.entitlement(t0 + Duration::from_millis(200)).is_some());
}

#[test]
fn messages_from_other_groups_strangers_or_with_a_forged_sender_are_refused() {
    let t0 = Instant::now();
    let mut core = founded(t0);
    let term = core.term();
    let append = msg(MessageType::MsgAppend, 2, 1, term + 5);
    assert!(matches!(
        core.handle_message(t0, 99, ReplicaId(2), append.clone()),
        Err(Refused::OtherGroup { .. })
    ));
    let campaign = msg(MessageType::MsgRequestVote, 2, 1, term + 5);
    assert!(matches!(
        core.handle_message(t0, 77, ReplicaId(2), campaign),
        Err(Refused::Stranger(ReplicaId(2)))
    ));
    assert!(matches!(
        core.handle_message(t0, 77, ReplicaId(3), append),
        Err(Refused::Misaddressed { .. })
    ));
    let local = msg(MessageType::MsgHup, 1, 1, term);
    assert!(matches!(
        core.handle_message(t0, 77, ReplicaId(1), local),
        Err(Refused::Malformed(_))
    ));
    assert_eq!(core.stats().refused, 4);
    assert_eq!(core.term(), term, "nothing was stepped");
    assert!(core.is_leader());
}

#[test]
fn messages_no_correct_peer_sends_are_refused_before_raft_sees_them() {
    let t0 = Instant::now();
    let mut core = founded(t0);
    let last = core.log().last();
    let mut beat = msg(MessageType::MsgHeartbeat, 1, 1, core.term());
    beat.commit = last + 10;
    assert!(matches!(
        core.handle_message(t0, 77, ReplicaId(1), beat),
        Err(Refused::Malformed(_))
    ));
    let mut append = msg(MessageType::MsgAppend, 1, 1, core.term());
    append.index = last;
    append.set_entries(
        vec![
            Entry {
                index: last + 1,
                term: 1,
                ..Default::default()
            },
            Entry {
                index: last + 3,
                term: 1,
                ..Default::default()
            },
        ]
        .into(),
    );
    assert!(matches!(
        core.handle_message(t0, 77, ReplicaId(1), append),
        Err(Refused::Malformed(_))
    ));
    let mut snap = msg(MessageType::MsgSnapshot, 1, 1, core.term());
    snap.mut_snapshot().mut_metadata().index = last + 5;
    snap.mut_snapshot().data = b"not a cluster state".to_vec().into();
    assert!(matches!(
        core.handle_message(t0, 77, ReplicaId(1), snap),
        Err(Refused::Malformed(_))
    ));
}

#[test]
fn a_message_from_a_stale_term_changes_nothing() {
    let t0 = Instant::now();
    let mut core = founded(t0);
    let (term, applied) = (core.term(), core.applied_index());
    let stale = msg(MessageType::MsgRequestVote, 1, 1, term - 1);
    let _ = core.handle_message(t0, 77, ReplicaId(1), stale);
    assert_eq!(core.term(), term);
    assert!(core.is_leader());
    assert_eq!(core.applied_index(), applied);
}

/// Runs `core` until `until`, in 100 ms steps, dropping its outputs.
fn run(core: &mut GroupCore, from: Instant, until: Instant) -> Instant {
    let mut t = from;
    while t < until {
        t += Duration::from_millis(100);
        core.handle_timeout(t);
        settle(core);
    }
    t
}

/// A member that vanishes from gossip's view without being listed down (a node restarted at
/// its address under a new replica id replaces its old identity there) is removed once the
/// voter grace period has passed, as one listed down would be.
#[test]
fn a_member_gone_from_the_view_is_removed_after_the_grace_period() {
    let t0 = Instant::now();
    let mut core = founded(t0);
    core.set_peers(t0, [(ReplicaId(2), PeerState::Up)]);
    let t = run(&mut core, t0, t0 + Duration::from_secs(1));
    assert!(core.conf_state().learners.contains(&2), "the peer joins");
    core.set_peers(t, []);
    let grace = GroupConfig::with_liveness(Duration::from_secs(1)).voter_grace;
    let t = run(&mut core, t, t + grace / 2);
    assert!(core.conf_state().learners.contains(&2), "removed too early");
    let t = run(&mut core, t, t + grace);
    assert!(!core.conf_state().learners.contains(&2), "never removed");
    let term = core.term();
    let append = msg(MessageType::MsgAppend, 2, 1, term + 5);
    assert!(matches!(
        core.handle_message(t, 77, ReplicaId(2), append),
        Err(Refused::Removed(ReplicaId(2)))
    ));
    assert!(core.is_leader(), "a removed member deposes no one");
    // It comes back with its old id (its store kept): added again, it is heard again.
    core.set_peers(t, [(ReplicaId(2), PeerState::Up)]);
    let t = run(&mut core, t, t + Duration::from_secs(1));
    assert!(core.conf_state().learners.contains(&2), "added again");
    let response = msg(MessageType::MsgAppendResponse, 2, 1, core.term());
    assert!(
        core.handle_message(t, 77, ReplicaId(2), response).is_ok(),
        "a member added again is heard (a node down past the grace period once never caught up)"
    );
}

/// A node that missed the change adding a member still follows that member once it leads:
/// the leader's messages are the only way the lagging node learns of it (seed 730 of the
/// scheduler's chaos once left a voter refusing its new leader as a stranger forever).
#[test]
fn a_lagging_node_follows_a_leader_added_after_its_last_configuration() {
    let t0 = Instant::now();
    let mut core = founded(t0);
    let term = core.term();
    let mut heartbeat = msg(MessageType::MsgHeartbeat, 2, 1, term + 1);
    heartbeat.commit = core.log().last();
    core.handle_message(t0, 77, ReplicaId(2), heartbeat)
        .expect("a leader's heartbeat is stepped");
    assert_eq!(core.leader(), Some(ReplicaId(2)));
    assert_eq!(core.term(), term + 1);
    assert_eq!(core.stats().refused, 0);
}

/// A founded group with a second member, replica 2, that gossip lists up: a learner.
fn with_a_learner(t0: Instant) -> (GroupCore, Instant) {
    let mut core = founded(t0);
    core.set_peers(t0, [(ReplicaId(2), PeerState::Up)]);
    let t = run(&mut core, t0, t0 + Duration::from_secs(1));
    assert!(core.conf_state().learners.contains(&2));
    (core, t)
}

/// The core still leads, keeps its entitlement and applies its own heartbeats.
fn still_commits(core: &mut GroupCore, t: Instant) {
    let applied = core.applied_index();
    let t = run(core, t, t + Duration::from_secs(2));
    assert!(core.is_leader());
    assert!(core.applied_index() > applied, "nothing applied");
    assert!(core.entitlement(t).is_some(), "entitlement lapsed");
}

/// What a member sends: an append response, a heartbeat, and an append carrying an entry.
fn from_the_learner(core: &GroupCore) -> Vec<Message> {
    let (term, last) = (core.term(), core.log().last());
    let mut response = msg(MessageType::MsgAppendResponse, 2, 1, term);
    response.index = last;
    let beat = msg(MessageType::MsgHeartbeat, 2, 1, term);
    let mut append = msg(MessageType::MsgAppend, 2, 1, term);
    append.index = last;
    append.log_term = term;
    append.set_entries(
        vec![Entry {
            index: last + 1,
            term,
            data: b"an entry this member never proposed".to_vec().into(),
            ..Default::default()
        }]
        .into(),
    );
    vec![response, beat, append]
}

/// Every prefix of a member's messages: each either fails to decode (the shell counts it) or
/// is stepped or refused; nothing panics, and the group goes on committing.
#[test]
fn truncated_messages_from_a_member_change_nothing() {
    let t0 = Instant::now();
    let (mut core, t) = with_a_learner(t0);
    let (term, leader) = (core.term(), core.leader());
    for m in from_the_learner(&core) {
        let bytes = encode_message(&m);
        for cut in 0..bytes.len() {
            if let Ok(m) = decode_message(&bytes[..cut]) {
                let _ = core.handle_message(t, 77, ReplicaId(2), m);
            }
        }
    }
    assert_eq!((core.term(), core.leader()), (term, leader));
    still_commits(&mut core, t);
}

/// A member's messages from an earlier term are ignored, and those with no term at all (which
/// raft-rs would step as its own) are refused.
#[test]
fn messages_from_a_stale_term_or_none_change_nothing() {
    let t0 = Instant::now();
    let (mut core, t) = with_a_learner(t0);
    let (term, leader, commit) = (core.term(), core.leader(), core.commit_index());
    assert!(term >= 2, "the founding election took term {term}");
    let refused = core.stats().refused;
    for mut m in from_the_learner(&core) {
        m.term = term - 1;
        for e in m.mut_entries().iter_mut() {
            e.term = term - 1;
        }
        assert!(core.handle_message(t, 77, ReplicaId(2), m.clone()).is_ok());
        m.term = 0;
        assert!(matches!(
            core.handle_message(t, 77, ReplicaId(2), m),
            Err(Refused::Malformed(_))
        ));
    }
    assert_eq!(core.stats().refused, refused + 3);
    assert_eq!((core.term(), core.leader()), (term, leader));
    assert!(core.commit_index() >= commit);
    still_commits(&mut core, t);
}

proptest! {
    #[test]
    fn junk_never_decodes_into_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let t0 = Instant::now();
        let mut core = founded(t0);
        if let Ok(m) = decode_message(&bytes) {
            let from = ReplicaId(m.from);
            let _ = core.handle_message(t0, 77, from, m);
        }
        let _ = decode_command(&bytes);
    }
}

/// Commands proposed together share one entry and apply one after the other, each with its
/// own outcome and handle; a batch inside a batch applies nothing.
#[test]
fn commands_proposed_together_share_an_entry_and_keep_their_own_outcomes() {
    let t0 = Instant::now();
    let mut core = founded(t0);
    let component = |name: &str| Command::Component {
        name: name.into(),
        enabled: true,
    };
    let ids = core.propose_many(
        t0,
        vec![
            component("a"),
            component(""),
            Command::Batch(vec![component("c")]),
            component("b"),
        ],
    );
    assert_eq!(ids.len(), 4);
    let mut applied = Vec::new();
    let mut t = t0;
    while applied.len() < 4 {
        while let Some(output) = core.poll_output() {
            if let Output::Applied(a) = output
                && a.proposal.is_some()
            {
                applied.push(a);
            }
        }
        t += Duration::from_millis(100);
        core.handle_timeout(t);
        assert!(t < t0 + Duration::from_secs(5), "not applied: {applied:?}");
    }
    let index = applied[0].index;
    let got: Vec<(u64, u32, Option<ProposalId>, Outcome)> = applied
        .into_iter()
        .map(|a| (a.index, a.position, a.proposal, a.outcome))
        .collect();
    assert_eq!(
        got,
        [
            (index, 0, Some(ids[0]), Outcome::Done),
            (index, 1, Some(ids[1]), Outcome::Refused(Refusal::BadName)),
            (index, 2, Some(ids[2]), Outcome::Refused(Refusal::Nested)),
            (index, 3, Some(ids[3]), Outcome::Done),
        ]
    );
    assert_eq!(core.state().components.len(), 2);
}

/// Commands too large to share an entry are split until each entry fits (or holds one).
#[test]
fn commands_too_large_together_go_in_entries_that_fit() {
    let t0 = Instant::now();
    let mut core = founded(t0);
    let large = |c: char| Command::Component {
        name: c.to_string().repeat(200 << 10),
        enabled: true,
    };
    let ids = core.propose_many(t0, vec![large('a'), large('b'), large('c')]);
    let mut applied = Vec::new();
    let mut t = t0;
    while applied.len() < 3 {
        while let Some(output) = core.poll_output() {
            if let Output::Applied(a) = output
                && a.proposal.is_some()
            {
                applied.push((a.index, a.position, a.proposal));
            }
        }
        t += Duration::from_millis(100);
        core.handle_timeout(t);
        assert!(t < t0 + Duration::from_secs(5), "not applied: {applied:?}");
    }
    let indexes: std::collections::BTreeSet<u64> = applied.iter().map(|a| a.0).collect();
    assert_eq!(indexes.len(), 3, "one entry each: {applied:?}");
    let proposals: Vec<Option<ProposalId>> = applied.iter().map(|a| a.2).collect();
    assert_eq!(proposals, ids.into_iter().map(Some).collect::<Vec<_>>());
}

/// Proposes a component named after the applied index, and moves 100 ms on.
fn propose_one(core: &mut GroupCore, t: Instant, prefix: &str) -> Instant {
    let name = format!("{prefix}{:0>40}", core.applied_index());
    core.propose_many(
        t,
        vec![Command::Component {
            name,
            enabled: true,
        }],
    );
    let t = t + Duration::from_millis(100);
    core.handle_timeout(t);
    t
}

/// Proposes one command after another until the core asks for a snapshot; returns the
/// capture and the time (the other outputs are dropped).
fn until_captured(core: &mut GroupCore, mut t: Instant) -> (Capture, Instant) {
    let t0 = t;
    loop {
        t = propose_one(core, t, "");
        while let Some(output) = core.poll_output() {
            if let Output::Capture(capture) = output {
                return (capture, t);
            }
        }
        assert!(t < t0 + Duration::from_secs(60), "no snapshot asked for");
    }
}

fn persisted_snapshots(core: &mut GroupCore) -> (Vec<u64>, Vec<Capture>) {
    let (mut snapshots, mut captures) = (Vec::new(), Vec::new());
    while let Some(output) = core.poll_output() {
        match output {
            Output::Persist(p) => snapshots.extend(p.snapshot.map(|s| s.get_metadata().index)),
            Output::Capture(c) => captures.push(c),
            _ => {}
        }
    }
    (snapshots, captures)
}

/// A snapshot is encoded off the core: the core hands out the state as of an index, goes on
/// applying meanwhile without asking for another, and compacts its log only once the snapshot
/// comes back; one that is not the one asked for changes nothing.
#[test]
fn a_snapshot_is_made_while_the_core_goes_on_and_compacts_the_log_once_it_is_back() {
    let t0 = Instant::now();
    let mut config = GroupConfig::with_liveness(Duration::from_secs(1));
    config.compact_every = 4;
    let mut core = founded_with(t0, config);
    let (capture, mut t) = until_captured(&mut core, t0);
    let index = capture.index();
    assert!(core.log().snapshot_ref().get_metadata().index < index);
    for _ in 0..30 {
        t = propose_one(&mut core, t, "later");
        let (snapshots, captures) = persisted_snapshots(&mut core);
        assert!(
            snapshots.is_empty() && captures.is_empty(),
            "one capture at a time"
        );
    }
    assert!(core.applied_index() > index + 30);
    assert!(
        core.log().entries_ref()[0].index <= index,
        "compacted early"
    );

    let mut stale = capture.encode();
    stale.mut_metadata().index = index - 1;
    core.captured(stale);
    assert_eq!(persisted_snapshots(&mut core), (vec![], vec![]));

    let made = core.stats().snapshots;
    let snapshot = capture.encode();
    core.captured(snapshot.clone());
    let (snapshots, _) = persisted_snapshots(&mut core);
    assert_eq!(snapshots, [index]);
    assert_eq!(core.log().snapshot_ref(), &snapshot);
    assert_eq!(core.log().entries_ref()[0].index, index + 1);
    assert_eq!(core.stats().snapshots, made + 1);
    let (next, t) = until_captured(&mut core, t);
    assert!(next.index() > index + 30);
    core.captured(next.encode());
    still_commits(&mut core, t);
}

/// A snapshot captured before a configuration change comes back after it: the log is
/// compacted up to it but keeps the newer configuration (the snapshot keeps its own), and a
/// fresh snapshot is asked for at once (a member added meanwhile cannot install the older).
#[test]
fn a_snapshot_older_than_the_configuration_compacts_the_log_and_a_fresh_one_follows() {
    let t0 = Instant::now();
    let mut config = GroupConfig::with_liveness(Duration::from_secs(1));
    config.compact_every = 4;
    let mut core = founded_with(t0, config);
    let (capture, mut t) = until_captured(&mut core, t0);
    core.set_peers(t, [(ReplicaId(2), PeerState::Up)]);
    let until = t + Duration::from_secs(1);
    while t < until {
        t += Duration::from_millis(100);
        core.handle_timeout(t);
        assert_eq!(persisted_snapshots(&mut core), (vec![], vec![]));
    }
    assert!(core.conf_state().learners.contains(&2));

    let old = capture.encode();
    assert!(!old.get_metadata().get_conf_state().learners.contains(&2));
    core.captured(old.clone());
    let (snapshots, captures) = persisted_snapshots(&mut core);
    assert_eq!(snapshots, [capture.index()]);
    assert_eq!(core.log().snapshot_ref(), &old);
    assert!(
        core.conf_state().learners.contains(&2),
        "the configuration went back"
    );
    let fresh = captures
        .first()
        .expect("a fresh snapshot is asked for")
        .encode();
    assert!(fresh.get_metadata().get_conf_state().learners.contains(&2));
    core.captured(fresh);
    let (snapshots, _) = persisted_snapshots(&mut core);
    assert_eq!(snapshots, [core.applied_index()]);
    assert!(core.conf_state().learners.contains(&2));
}

/// What a founding node persists reads back as its log: restarted before its first snapshot,
/// it keeps what it applied (its entries used to follow a founding snapshot never written,
/// and read back as an empty log).
#[test]
fn a_founding_node_restarted_before_its_first_snapshot_keeps_its_state() {
    let t0 = Instant::now();
    let mut core = GroupCore::found(
        identity(1),
        GroupConfig::with_liveness(Duration::from_secs(1)),
        77,
        t0,
        5,
    );
    let mut disk = Log::default();
    let component = Command::Component {
        name: "kept".into(),
        enabled: true,
    };
    let mut t = t0;
    core.propose_many(t, vec![component]);
    while !core.state().components.contains_key("kept") {
        while let Some(output) = core.poll_output() {
            if let Output::Persist(p) = output {
                disk.apply(&p);
            }
        }
        t += Duration::from_millis(100);
        core.handle_timeout(t);
        assert!(t < t0 + Duration::from_secs(5), "never applied");
    }
    while let Some(output) = core.poll_output() {
        if let Output::Persist(p) = output {
            disk.apply(&p);
        }
    }
    assert!(disk.is_initialized());
    assert_eq!(disk.last(), core.log().last());
    let restarted = GroupCore::restore(
        identity(1),
        GroupConfig::with_liveness(Duration::from_secs(1)),
        77,
        disk,
        t,
        6,
    );
    assert!(restarted.state().components.contains_key("kept"));
}
