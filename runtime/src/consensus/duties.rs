//! What a core does on its own as time passes: every node keeps its liveness; the leader
//! revokes epochs that stopped heartbeating, places slots, and keeps the voter set whole.

use std::time::Instant;

use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};

use super::command::{Command, Domain, ReplicaId, SLOTS};
use super::core::{GroupCore, Output, PeerState};
use super::state::Phase;
use crate::placement::owner_by;

/// The placement key of a slot: every leader computes the same owner from it.
pub fn slot_key(domain: Domain, slot: u16) -> Vec<u8> {
    let mut key = domain.name().as_bytes().to_vec();
    key.push(b'/');
    key.extend_from_slice(&slot.to_be_bytes());
    key
}

/// How many committed entries a member may miss and still count as caught up.
const CAUGHT_UP: u64 = 64;

impl GroupCore {
    /// This node's liveness: register, heartbeat, and, when leaving, leave and retire.
    pub(super) fn own_duties(&mut self, now: Instant) {
        let me = self.me.replica;
        // A leaving leader hands leadership on, and again whenever it gets it back: stopping as
        // leader would stall every commit for an election, and so every entitlement.
        if self.mine.leaving
            && self.is_leader()
            && self.raw.raft.lead_transferee.is_none()
            && let Some(to) = self.transfer_target()
        {
            self.raw.transfer_leader(to.0);
        }
        let Some(settings) = self.state.settings.clone() else {
            return;
        };
        if let Some(d) = self.me.settings.disagreement(&settings) {
            if self.disagrees.is_none() {
                self.outputs.push_back(Output::Disagrees(d.clone()));
                self.disagrees = Some(d);
            }
            return;
        }
        let conf = self.conf_state();
        if !conf.voters.contains(&me.0) && !conf.learners.contains(&me.0) {
            return;
        }
        if self.mine.next.is_some_and(|next| next > now) {
            return;
        }
        self.mine.next = Some(now + self.config.beat_every());
        let command = match (self.mine.epoch, self.mine.leaving) {
            (None, false) => Command::Register {
                replica: me,
                info: self.me.info.clone(),
            },
            (None, true) => return,
            (Some(epoch), leaving) => {
                let phase = self.state.liveness.get(&me).map(|l| l.phase);
                if leaving && phase == Some(Phase::Live) {
                    self.propose_once(now, Command::Leave { replica: me, epoch });
                }
                if leaving && !self.state.holds_anything(me, epoch) {
                    self.propose_once(now, Command::Retire { replica: me, epoch });
                }
                Command::Heartbeat { replica: me, epoch }
            }
        };
        let id = self.propose_quiet(now, command);
        self.mine.sent.insert(id, now);
    }

    /// The leader's duties, in order: settings, revocations, voters, placement.
    pub(super) fn leader_duties(&mut self, now: Instant) {
        if self.state.settings.is_none() {
            let settings = self.me.settings.clone();
            self.propose_once(now, Command::Found { settings });
            return;
        }
        self.revoke_silent(now);
        self.keep_voters(now);
        self.place_slots(now);
    }

    /// Revokes each epoch whose last heartbeat this node applied longer ago than the liveness
    /// period allows: its owner's entitlement has ended by then, whatever its clock says.
    fn revoke_silent(&mut self, now: Instant) {
        let after = self.config.revoke_after();
        let silent: Vec<Command> = self
            .state
            .liveness
            .iter()
            .filter(|(_, l)| l.phase != Phase::Ended)
            .filter(|(r, _)| {
                let heard = self.heard.get(r).copied().unwrap_or(now);
                now.saturating_duration_since(heard) > after
            })
            .map(|(r, l)| Command::Revoke {
                replica: *r,
                epoch: l.epoch,
                seq: l.seq,
            })
            .collect();
        for r in self.state.liveness.keys() {
            self.heard.entry(*r).or_insert(now);
        }
        for command in silent {
            self.propose_once(now, command);
        }
    }

    /// Members that may take slots now: live, not leaving, heard from within the liveness
    /// period.
    fn fresh_targets(&self, now: Instant) -> Vec<ReplicaId> {
        self.state
            .placement_targets()
            .filter(|r| {
                self.heard
                    .get(r)
                    .is_some_and(|h| now.saturating_duration_since(*h) < self.config.liveness)
            })
            .collect()
    }

    /// Gives every slot to its rendezvous owner among the fresh targets. A slot whose owner's
    /// epoch ended moves at once; a slot of a live owner moves with a hand-over, and not again
    /// until that hand-over is recorded.
    fn place_slots(&mut self, now: Instant) {
        let targets = self.fresh_targets(now);
        if targets.is_empty() {
            return;
        }
        let mut moves = Vec::new();
        for domain in Domain::ALL {
            for slot in 0..SLOTS {
                let Some(current) = self.state.slot(domain, slot) else {
                    continue;
                };
                let Some(desired) =
                    owner_by(&slot_key(domain, slot), targets.iter().copied(), |r| {
                        r.0.to_be_bytes()
                    })
                else {
                    continue;
                };
                let live = |o: &(ReplicaId, u64)| self.state.in_force(o.0, o.1);
                let handing_over = current.from.as_ref().is_some_and(live);
                let settled = match current.owner {
                    // A live owner hands over only to a node that has caught up with the log:
                    // one still catching up (a joining learner, say) would apply the move
                    // long after the owner stopped serving, leaving its holders nowhere to
                    // renew.
                    Some(owner) if live(&owner) => {
                        owner.0 == desired || handing_over || !self.caught_up(desired)
                    }
                    _ => false,
                };
                if !settled {
                    moves.push(Command::Assign {
                        domain,
                        slot,
                        generation: current.generation,
                        to: desired,
                    });
                }
            }
        }
        for command in moves {
            self.propose_once(now, command);
        }
    }

    /// Adds members gossip sees as learners, promotes learners while voters are short of the
    /// target, and removes voters unreachable for longer than the grace period. One change at
    /// a time, as raft requires.
    fn keep_voters(&mut self, now: Instant) {
        if self.raw.raft.has_pending_conf() {
            return;
        }
        let conf = self.conf_state().clone();
        let in_conf = |r: &ReplicaId| conf.voters.contains(&r.0) || conf.learners.contains(&r.0);
        let up = |r: &ReplicaId| {
            *r == self.me.replica || matches!(self.peers.get(r), Some((PeerState::Up, _)))
        };
        let unreachable_long = |r: &ReplicaId| match self.peers.get(r) {
            Some((PeerState::Up, _)) => false,
            Some((_, since)) => now.saturating_duration_since(*since) >= self.config.voter_grace,
            None => false,
        };
        if let Some(stranger) = self.peers.keys().find(|r| !in_conf(r) && up(r)).copied() {
            self.propose_conf(change(stranger, ConfChangeType::AddLearnerNode));
            return;
        }
        if let Some(gone) = conf
            .voters
            .iter()
            .chain(&conf.learners)
            .map(|r| ReplicaId(*r))
            .find(|r| *r != self.me.replica && unreachable_long(r))
        {
            self.propose_conf(change(gone, ConfChangeType::RemoveNode));
            return;
        }
        let reachable = conf
            .voters
            .iter()
            .chain(&conf.learners)
            .filter(|r| up(&ReplicaId(**r)))
            .count();
        // An odd number of voters: an even one tolerates no more failures and needs more acks.
        let mut target = reachable.min(self.config.max_voters).max(1);
        if target % 2 == 0 {
            target -= 1;
        }
        if conf.voters.len() >= target || !conf.voters_outgoing.is_empty() {
            return;
        }
        let last = self.raw.raft.raft_log.last_index();
        let mut caught_up: Vec<u64> = conf
            .learners
            .iter()
            .filter(|r| up(&ReplicaId(**r)))
            .filter(|r| {
                self.raw
                    .raft
                    .prs()
                    .get(**r)
                    .is_some_and(|p| p.matched + 16 >= last)
            })
            .copied()
            .collect();
        caught_up.sort_unstable();
        // Grow from an odd number of voters to the next odd one in one (joint) change: a group
        // of two voters would lose its quorum to either one's failure.
        let grow = if conf.voters.len() % 2 == 1 { 2 } else { 1 };
        if caught_up.len() >= grow {
            let mut cc = ConfChangeV2::default();
            for learner in &caught_up[..grow] {
                cc.mut_changes()
                    .push(single(ReplicaId(*learner), ConfChangeType::AddNode));
            }
            self.propose_conf(cc);
        }
    }

    /// Whether `replica` has the log about as far as it is committed, by this leader's view of
    /// its replication: this node itself, or a member being replicated to (not probed or sent
    /// a snapshot) within a few entries of the commit index.
    fn caught_up(&self, replica: ReplicaId) -> bool {
        if replica == self.me.replica {
            return true;
        }
        let committed = self.raw.raft.raft_log.committed;
        self.raw.raft.prs().get(replica.0).is_some_and(|p| {
            p.state == raft::ProgressState::Replicate && p.matched + CAUGHT_UP >= committed
        })
    }

    /// The voter most caught up, other than this node.
    pub(super) fn transfer_target(&self) -> Option<ReplicaId> {
        let me = self.me.replica.0;
        self.conf_state()
            .voters
            .iter()
            .filter(|r| **r != me)
            .filter(|r| matches!(self.peers.get(&ReplicaId(**r)), Some((PeerState::Up, _))))
            .max_by_key(|r| {
                (
                    self.raw.raft.prs().get(**r).map_or(0, |p| p.matched),
                    std::cmp::Reverse(**r),
                )
            })
            .map(|r| ReplicaId(*r))
    }
}

fn single(replica: ReplicaId, kind: ConfChangeType) -> ConfChangeSingle {
    let mut single = ConfChangeSingle::default();
    single.set_change_type(kind);
    single.node_id = replica.0;
    single
}

fn change(replica: ReplicaId, kind: ConfChangeType) -> ConfChangeV2 {
    let mut cc = ConfChangeV2::default();
    cc.set_changes(vec![single(replica, kind)].into());
    cc
}
