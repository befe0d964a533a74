//! The cluster state: what the group's log builds, the same on every node that applied the same
//! prefix. Deterministic: no clock, no randomness, no iteration over unordered maps.
//!
//! It holds the cluster's settings, who is a member, each member's liveness epoch, and, per
//! domain, which node owns each slot under which epoch, who is handing it over, and the slot's
//! block of fencing tokens.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::{
    Command, Domain, MAX_TOKEN, MemberInfo, Outcome, Refusal, ReplicaId, SLOTS, TOKEN_BLOCK,
};
use super::exec::ExecTable;
use super::jobs::JobTable;
use super::settings::ClusterSettings;

/// Where a member's liveness stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Entitled while it heartbeats; a placement target.
    Live,
    /// Still entitled while its slots move away; no longer a placement target.
    Leaving,
    /// The epoch is over (revoked or retired): nothing it granted in it is still valid.
    Ended,
}

/// A member's liveness: its current epoch and how many heartbeats were applied in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// The epoch, from 1; a node's slots are tied to the epoch they were given in.
    pub epoch: u64,
    /// Heartbeats applied in this epoch.
    pub seq: u64,
    /// Where it stands.
    pub phase: Phase,
    /// The incarnation of the process that registered this epoch ([`MemberInfo::incarnation`]).
    #[serde(default)]
    pub incarnation: u64,
}

impl Liveness {
    /// Whether `epoch` is this member's and still in force.
    pub fn in_force(&self, epoch: u64) -> bool {
        self.epoch == epoch && self.phase != Phase::Ended
    }
}

/// One slot of a domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The owner and the epoch it was given the slot in.
    pub owner: Option<(ReplicaId, u64)>,
    /// Grows with every assignment.
    pub generation: u64,
    /// The previous owner (and its epoch) while it still has to hand its table over.
    pub from: Option<(ReplicaId, u64)>,
    /// The current block of tokens, `[start, end)`.
    pub block: (u64, u64),
}

/// The replicated cluster state. See the module doc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The settings recorded when the group was founded.
    pub settings: Option<ClusterSettings>,
    /// Registered members.
    pub members: BTreeMap<ReplicaId, MemberInfo>,
    /// Their liveness.
    pub liveness: BTreeMap<ReplicaId, Liveness>,
    /// Slots per domain. A state stored before a domain existed gains its slots when loaded.
    #[serde(deserialize_with = "every_domain")]
    pub slots: BTreeMap<Domain, Vec<Slot>>,
    /// The first token of the next block (or of the next job fire).
    pub next_token: u64,
    /// The scheduler's jobs.
    #[serde(default)]
    pub jobs: JobTable,
    /// The bucketed executors' queues.
    #[serde(default)]
    pub exec: ExecTable,
    /// Components switched on or off cluster-wide, by name; a component not named here runs.
    #[serde(default)]
    pub components: BTreeMap<String, bool>,
}

/// The most components the state names.
pub const MAX_COMPONENTS: usize = 1024;

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState::new()
    }
}

impl ClusterState {
    /// The state of a new group.
    pub fn new() -> Self {
        ClusterState {
            settings: None,
            members: BTreeMap::new(),
            liveness: BTreeMap::new(),
            slots: with_every_domain(BTreeMap::new()),
            next_token: 1,
            jobs: JobTable::default(),
            exec: ExecTable::default(),
            components: BTreeMap::new(),
        }
    }

    /// Whether `replica`'s `epoch` is in force.
    pub fn in_force(&self, replica: ReplicaId, epoch: u64) -> bool {
        self.liveness
            .get(&replica)
            .is_some_and(|l| l.in_force(epoch))
    }

    /// The slot `slot` of `domain`.
    pub fn slot(&self, domain: Domain, slot: u16) -> Option<&Slot> {
        self.slots.get(&domain)?.get(usize::from(slot))
    }

    /// Members that may be given slots: live, not leaving.
    pub fn placement_targets(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        self.liveness
            .iter()
            .filter(|(_, l)| l.phase == Phase::Live)
            .map(|(r, _)| *r)
    }

    /// Whether `replica` owns a slot, still has to hand one over, or runs a job's fire, in
    /// `epoch`: until it holds nothing, ending the epoch would free what it may still act on
    /// (a fire whose runner's epoch ended is run again elsewhere).
    pub fn holds_anything(&self, replica: ReplicaId, epoch: u64) -> bool {
        self.slots
            .values()
            .flatten()
            .any(|s| s.owner == Some((replica, epoch)) || s.from == Some((replica, epoch)))
            || self.jobs.runs_on(replica, epoch)
    }

    /// Forgets a member removed from the group (its epoch must have ended).
    pub fn forget(&mut self, replica: ReplicaId) {
        if self
            .liveness
            .get(&replica)
            .is_none_or(|l| l.phase == Phase::Ended)
        {
            self.liveness.remove(&replica);
            self.members.remove(&replica);
            self.jobs.runners.remove(&replica);
        }
    }

    /// Applies one committed command.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        match command {
            Command::Found { settings } => {
                if self.settings.is_none() {
                    self.settings = Some(settings.clone());
                }
                Outcome::Done
            }
            Command::Register { replica, info } => self.register(*replica, info),
            Command::Heartbeat { replica, epoch } => match self.liveness.get_mut(replica) {
                Some(l) if l.in_force(*epoch) => {
                    l.seq += 1;
                    Outcome::Alive { seq: l.seq }
                }
                _ => Outcome::Refused(Refusal::EpochEnded),
            },
            Command::Revoke {
                replica,
                epoch,
                seq,
            } => match self.liveness.get_mut(replica) {
                Some(l) if l.in_force(*epoch) && l.seq == *seq => {
                    l.phase = Phase::Ended;
                    Outcome::Done
                }
                _ => Outcome::Refused(Refusal::Stale),
            },
            Command::Leave { replica, epoch } => match self.liveness.get_mut(replica) {
                Some(l) if l.in_force(*epoch) => {
                    l.phase = Phase::Leaving;
                    Outcome::Done
                }
                _ => Outcome::Refused(Refusal::EpochEnded),
            },
            Command::Retire { replica, epoch } => {
                if !self.in_force(*replica, *epoch) {
                    return Outcome::Refused(Refusal::EpochEnded);
                }
                if self.holds_anything(*replica, *epoch) {
                    return Outcome::Refused(Refusal::Busy);
                }
                if let Some(l) = self.liveness.get_mut(replica) {
                    l.phase = Phase::Ended;
                }
                Outcome::Done
            }
            Command::Assign {
                domain,
                slot,
                generation,
                to,
            } => self.assign(*domain, *slot, *generation, *to),
            Command::Accept {
                domain,
                slot,
                generation,
            } => match self.slot_mut(*domain, *slot) {
                Some(s) if s.generation == *generation && s.from.is_some() => {
                    s.from = None;
                    Outcome::Done
                }
                Some(_) => Outcome::Refused(Refusal::Stale),
                None => Outcome::Refused(Refusal::NoSuchSlot),
            },
            Command::Jobs(command) => {
                let liveness = &self.liveness;
                let next = &mut self.next_token;
                Outcome::Job(self.jobs.apply(
                    command,
                    |r, e| liveness.get(&r).is_some_and(|l| l.in_force(e)),
                    || {
                        let token = *next;
                        (token <= MAX_TOKEN).then(|| {
                            *next += 1;
                            token
                        })
                    },
                ))
            }
            // The core applies a batch's commands one by one, each with its own outcome; one
            // reaching this far was inside another.
            Command::Batch(_) => Outcome::Refused(Refusal::Nested),
            Command::Component { name, enabled } => {
                if name.is_empty() || name.len() > 255 {
                    return Outcome::Refused(Refusal::BadName);
                }
                if !self.components.contains_key(name) && self.components.len() >= MAX_COMPONENTS {
                    return Outcome::Refused(Refusal::TooMany);
                }
                self.components.insert(name.clone(), *enabled);
                Outcome::Done
            }
            Command::Exec(command) => {
                let liveness = &self.liveness;
                Outcome::Exec(self.exec.apply(command, |r, e| {
                    liveness.get(&r).is_some_and(|l| l.in_force(e))
                }))
            }
            Command::Extend {
                domain,
                slot,
                generation,
            } => {
                let Some(s) = self.slot(*domain, *slot) else {
                    return Outcome::Refused(Refusal::NoSuchSlot);
                };
                if s.generation != *generation {
                    return Outcome::Refused(Refusal::Stale);
                }
                match self.draw_block() {
                    Some(block) => {
                        let s = self.slot_mut(*domain, *slot).expect("checked above");
                        s.block = block;
                        Outcome::Block {
                            generation: *generation,
                            start: block.0,
                            end: block.1,
                        }
                    }
                    None => Outcome::Refused(Refusal::Exhausted),
                }
            }
        }
    }

    fn register(&mut self, replica: ReplicaId, info: &MemberInfo) -> Outcome {
        self.members.insert(replica, info.clone());
        let epoch = match self.liveness.get(&replica) {
            Some(l) if l.phase != Phase::Ended => return Outcome::Refused(Refusal::StillLive),
            Some(l) => l.epoch + 1,
            None => 1,
        };
        self.liveness.insert(
            replica,
            Liveness {
                epoch,
                seq: 0,
                phase: Phase::Live,
                incarnation: info.incarnation,
            },
        );
        Outcome::Registered { epoch }
    }

    fn assign(&mut self, domain: Domain, slot: u16, generation: u64, to: ReplicaId) -> Outcome {
        let Some(current) = self.slot(domain, slot).cloned() else {
            return Outcome::Refused(Refusal::NoSuchSlot);
        };
        if current.generation != generation {
            return Outcome::Refused(Refusal::Stale);
        }
        let Some(to_epoch) = self
            .liveness
            .get(&to)
            .filter(|l| l.phase == Phase::Live)
            .map(|l| l.epoch)
        else {
            return Outcome::Refused(Refusal::NotLive);
        };
        if current.owner == Some((to, to_epoch)) {
            return Outcome::Refused(Refusal::Stale);
        }
        // Whoever holds the slot's table hands it to the new owner: the previous owner of an
        // unfinished hand-over, else the current owner, as long as its epoch is in force (an
        // ended epoch granted nothing that is still valid). While both are in force the new
        // owner may already serve from the table it received: no move until the group knows.
        // A domain with no table outside the log moves with no hand-over.
        let alive = |o: &(ReplicaId, u64)| self.in_force(o.0, o.1);
        let from_live = current.from.filter(alive);
        let owner_live = current.owner.filter(alive);
        if from_live.is_some() && owner_live.is_some() {
            return Outcome::Refused(Refusal::Busy);
        }
        let from = from_live
            .or(owner_live)
            .filter(|(r, _)| *r != to && domain.hands_over());
        let Some(block) = self.draw_block() else {
            return Outcome::Refused(Refusal::Exhausted);
        };
        let s = self.slot_mut(domain, slot).expect("checked above");
        s.owner = Some((to, to_epoch));
        s.generation += 1;
        s.from = from;
        s.block = block;
        Outcome::Block {
            generation: s.generation,
            start: block.0,
            end: block.1,
        }
    }

    fn slot_mut(&mut self, domain: Domain, slot: u16) -> Option<&mut Slot> {
        self.slots.get_mut(&domain)?.get_mut(usize::from(slot))
    }

    /// A block above every block drawn before.
    fn draw_block(&mut self) -> Option<(u64, u64)> {
        let start = self.next_token;
        let end = start.checked_add(TOKEN_BLOCK)?;
        if end - 1 > MAX_TOKEN {
            return None;
        }
        self.next_token = end;
        Some((start, end))
    }
}

/// `slots` with the slots of every domain it lacks (a domain added since it was stored).
fn with_every_domain(mut slots: BTreeMap<Domain, Vec<Slot>>) -> BTreeMap<Domain, Vec<Slot>> {
    for domain in Domain::ALL {
        slots
            .entry(domain)
            .or_insert_with(|| vec![Slot::default(); usize::from(SLOTS)]);
    }
    slots
}

fn every_domain<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<Domain, Vec<Slot>>, D::Error> {
    BTreeMap::deserialize(d).map(with_every_domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            incarnation: 1,
        }
    }

    fn registered(n: u64) -> ClusterState {
        let mut s = ClusterState::new();
        for r in 1..=n {
            assert_eq!(
                s.apply(&Command::Register {
                    replica: ReplicaId(r),
                    info: info("n"),
                }),
                Outcome::Registered { epoch: 1 }
            );
        }
        s
    }

    fn assign(s: &mut ClusterState, slot: u16, to: u64) -> Outcome {
        assign_in(s, Domain::Locks, slot, to)
    }

    fn assign_in(s: &mut ClusterState, domain: Domain, slot: u16, to: u64) -> Outcome {
        let generation = s.slot(domain, slot).unwrap().generation;
        s.apply(&Command::Assign {
            domain,
            slot,
            generation,
            to: ReplicaId(to),
        })
    }

    #[test]
    fn a_live_epoch_cannot_be_registered_again_until_it_ends() {
        let mut s = registered(1);
        let again = Command::Register {
            replica: ReplicaId(1),
            info: info("n"),
        };
        assert_eq!(s.apply(&again), Outcome::Refused(Refusal::StillLive));
        let revoke = Command::Revoke {
            replica: ReplicaId(1),
            epoch: 1,
            seq: 0,
        };
        assert_eq!(s.apply(&revoke), Outcome::Done);
        assert_eq!(s.apply(&again), Outcome::Registered { epoch: 2 });
    }

    #[test]
    fn a_heartbeat_applied_after_the_judgement_voids_a_revocation() {
        let mut s = registered(1);
        let beat = Command::Heartbeat {
            replica: ReplicaId(1),
            epoch: 1,
        };
        assert_eq!(s.apply(&beat), Outcome::Alive { seq: 1 });
        let revoke = Command::Revoke {
            replica: ReplicaId(1),
            epoch: 1,
            seq: 0,
        };
        assert_eq!(s.apply(&revoke), Outcome::Refused(Refusal::Stale));
        assert!(s.in_force(ReplicaId(1), 1));
    }

    #[test]
    fn each_assignment_draws_a_block_above_every_earlier_one() {
        let mut s = registered(2);
        let mut last = 0;
        for (slot, to) in [(0, 1), (1, 2), (0, 2), (0, 1)] {
            // Each move from a live owner is a hand-over; finish it before the next.
            let generation = s.slot(Domain::Locks, slot).unwrap().generation;
            let _ = s.apply(&Command::Accept {
                domain: Domain::Locks,
                slot,
                generation,
            });
            let Outcome::Block { start, end, .. } = assign(&mut s, slot, to) else {
                panic!("assigned");
            };
            assert!(start > last && end - start == TOKEN_BLOCK);
            last = end - 1;
        }
    }

    #[test]
    fn a_move_from_a_live_owner_waits_for_its_hand_over_and_one_from_an_ended_owner_does_not() {
        let mut s = registered(3);
        assign(&mut s, 5, 1);
        assign(&mut s, 5, 2);
        let slot = s.slot(Domain::Locks, 5).unwrap().clone();
        assert_eq!(slot.owner, Some((ReplicaId(2), 1)));
        assert_eq!(slot.from, Some((ReplicaId(1), 1)));
        // No move while the hand-over is under way: node 2 may already serve from the table.
        assert_eq!(assign(&mut s, 5, 3), Outcome::Refused(Refusal::Busy));
        // Node 2's epoch ends: the table is still with node 1, which hands it to node 3.
        s.apply(&Command::Revoke {
            replica: ReplicaId(2),
            epoch: 1,
            seq: 0,
        });
        assert!(matches!(assign(&mut s, 5, 3), Outcome::Block { .. }));
        assert_eq!(
            s.slot(Domain::Locks, 5).unwrap().from,
            Some((ReplicaId(1), 1))
        );
        // Node 1's epoch ends too: nothing it granted is valid any more; the next move takes
        // node 3's own table.
        s.apply(&Command::Revoke {
            replica: ReplicaId(1),
            epoch: 1,
            seq: 0,
        });
        assert_eq!(assign(&mut s, 5, 1), Outcome::Refused(Refusal::NotLive));
        s.apply(&Command::Register {
            replica: ReplicaId(1),
            info: info("n"),
        });
        assign(&mut s, 5, 1);
        assert_eq!(
            s.slot(Domain::Locks, 5).unwrap().from,
            Some((ReplicaId(3), 1))
        );
    }

    #[test]
    fn a_node_retires_only_once_it_owns_and_hands_over_nothing() {
        let mut s = registered(2);
        assign(&mut s, 0, 1);
        let retire = Command::Retire {
            replica: ReplicaId(1),
            epoch: 1,
        };
        assert_eq!(s.apply(&retire), Outcome::Refused(Refusal::Busy));
        assign(&mut s, 0, 2);
        assert_eq!(s.apply(&retire), Outcome::Refused(Refusal::Busy));
        let generation = s.slot(Domain::Locks, 0).unwrap().generation;
        s.apply(&Command::Accept {
            domain: Domain::Locks,
            slot: 0,
            generation,
        });
        assert_eq!(s.apply(&retire), Outcome::Done);
        assert!(!s.in_force(ReplicaId(1), 1));
    }

    /// A leaving node's fire given before it left still runs there: ending its epoch would
    /// have the fire run again elsewhere while the first run goes on (scheduler chaos seed 867).
    #[test]
    fn a_node_retires_only_once_no_fire_runs_on_it() {
        use crate::consensus::jobs::{JobCommand, RunOutcome};
        let mut s = registered(2);
        let r1 = ReplicaId(1);
        let jobs = |c: JobCommand| Command::Jobs(c);
        s.apply(&jobs(JobCommand::Runners {
            replica: r1,
            epoch: 1,
            keys: vec!["k".into()],
        }));
        s.apply(&jobs(JobCommand::Schedule {
            job: "j".into(),
            runner: "k".into(),
            overlap: false,
            first_due: Some(1_000),
            history: 3,
            config: Default::default(),
        }));
        let Outcome::Job(crate::consensus::jobs::JobOutcome::Fired { token }) =
            s.apply(&jobs(JobCommand::Fire {
                job: "j".into(),
                generation: 1,
                from: 1_000,
                due: 1_000,
                attempt: 1,
                runner: (r1, 1),
                next_due: None,
                passed: 0,
            }))
        else {
            panic!("not fired");
        };
        assert_eq!(
            s.apply(&Command::Leave {
                replica: r1,
                epoch: 1
            }),
            Outcome::Done
        );
        let retire = Command::Retire {
            replica: r1,
            epoch: 1,
        };
        assert_eq!(s.apply(&retire), Outcome::Refused(Refusal::Busy));
        s.apply(&jobs(JobCommand::Finish {
            job: "j".into(),
            token,
            outcome: RunOutcome::Succeeded,
            message: String::new(),
            started: 1_000,
            millis: 1,
        }));
        assert_eq!(s.apply(&retire), Outcome::Done);
    }

    #[test]
    fn an_outdated_assignment_changes_nothing() {
        let mut s = registered(2);
        assign(&mut s, 0, 1);
        let stale = Command::Assign {
            domain: Domain::Locks,
            slot: 0,
            generation: 0,
            to: ReplicaId(2),
        };
        assert_eq!(s.apply(&stale), Outcome::Refused(Refusal::Stale));
        let unknown = Command::Assign {
            domain: Domain::Locks,
            slot: SLOTS,
            generation: 0,
            to: ReplicaId(2),
        };
        assert_eq!(s.apply(&unknown), Outcome::Refused(Refusal::NoSuchSlot));
    }

    #[test]
    fn tokens_stop_below_two_to_the_fifty_three() {
        let mut s = registered(1);
        s.next_token = MAX_TOKEN + 1 - TOKEN_BLOCK;
        assert!(matches!(assign(&mut s, 0, 1), Outcome::Block { end, .. } if end - 1 == MAX_TOKEN));
        assert_eq!(
            s.apply(&Command::Extend {
                domain: Domain::Locks,
                slot: 0,
                generation: 1
            }),
            Outcome::Refused(Refusal::Exhausted)
        );
    }

    #[test]
    fn a_job_fire_draws_its_token_above_every_block_and_an_ended_runner_cannot_be_given_one() {
        use crate::consensus::jobs::{JobCommand, JobOutcome, JobRefusal};
        let mut s = registered(2);
        let Outcome::Block { end, .. } = assign(&mut s, 0, 1) else {
            panic!("assigned");
        };
        let job = |c| Command::Jobs(c);
        assert_eq!(
            s.apply(&job(JobCommand::Runners {
                replica: ReplicaId(2),
                epoch: 1,
                keys: vec!["k".into()],
            })),
            Outcome::Job(JobOutcome::Done)
        );
        let _ = s.apply(&job(JobCommand::Schedule {
            job: "j".into(),
            runner: "k".into(),
            overlap: false,
            first_due: Some(10),
            history: 5,
            config: Default::default(),
        }));
        let fire = |due| {
            job(JobCommand::Fire {
                job: "j".into(),
                generation: 1,
                from: due,
                due,
                attempt: 1,
                runner: (ReplicaId(2), 1),
                next_due: Some(due + 10),
                passed: 0,
            })
        };
        let Outcome::Job(JobOutcome::Fired { token }) = s.apply(&fire(10)) else {
            panic!("fired");
        };
        assert!(token >= end, "{token} below the block ending at {end}");
        let _ = s.apply(&Command::Revoke {
            replica: ReplicaId(2),
            epoch: 1,
            seq: 0,
        });
        let _ = s.apply(&job(JobCommand::Finish {
            job: "j".into(),
            token,
            outcome: crate::consensus::jobs::RunOutcome::Succeeded,
            message: String::new(),
            started: 0,
            millis: 0,
        }));
        assert_eq!(
            s.apply(&fire(20)),
            Outcome::Job(JobOutcome::Refused(JobRefusal::NoRunner))
        );
    }

    #[test]
    fn an_epoch_records_the_process_that_registered_it_and_a_refused_one_changes_nothing() {
        let mut s = registered(1);
        let again = MemberInfo {
            incarnation: 2,
            ..info("n")
        };
        assert_eq!(
            s.apply(&Command::Register {
                replica: ReplicaId(1),
                info: again,
            }),
            Outcome::Refused(Refusal::StillLive)
        );
        // The epoch in force is still the first process's: the second must not take it up.
        assert_eq!(s.liveness[&ReplicaId(1)].incarnation, 1);
    }

    #[test]
    fn components_are_switched_by_name_within_bounds() {
        let mut s = ClusterState::new();
        let switch = |name: &str, enabled| Command::Component {
            name: name.into(),
            enabled,
        };
        assert_eq!(s.apply(&switch("mail", false)), Outcome::Done);
        assert_eq!(s.components.get("mail"), Some(&false));
        assert_eq!(s.apply(&switch("mail", true)), Outcome::Done);
        assert_eq!(s.components.get("mail"), Some(&true));
        assert_eq!(
            s.apply(&switch("", true)),
            Outcome::Refused(Refusal::BadName)
        );
        assert_eq!(
            s.apply(&switch(&"n".repeat(256), true)),
            Outcome::Refused(Refusal::BadName)
        );
        for i in s.components.len()..MAX_COMPONENTS {
            assert_eq!(s.apply(&switch(&format!("c{i}"), true)), Outcome::Done);
        }
        assert_eq!(
            s.apply(&switch("one-more", true)),
            Outcome::Refused(Refusal::TooMany)
        );
        // A component already named can still be switched.
        assert_eq!(s.apply(&switch("mail", false)), Outcome::Done);
    }

    #[test]
    fn a_jobs_slot_moves_from_a_live_owner_with_no_hand_over_and_its_owner_can_retire() {
        let mut s = registered(2);
        for to in [1, 2] {
            assert!(matches!(
                assign_in(&mut s, Domain::Jobs, 3, to),
                Outcome::Block { .. }
            ));
            assign(&mut s, 3, to);
            assign_in(&mut s, Domain::Executor, 3, to);
        }
        let jobs = s.slot(Domain::Jobs, 3).unwrap();
        assert_eq!((jobs.owner, jobs.from), (Some((ReplicaId(2), 1)), None));
        // The lock and executor slots moved alike wait for their hand-overs; once those
        // arrive, node 1 may retire.
        for domain in [Domain::Locks, Domain::Executor] {
            let slot = s.slot(domain, 3).unwrap();
            assert_eq!(slot.from, Some((ReplicaId(1), 1)));
            let generation = slot.generation;
            let _ = s.apply(&Command::Accept {
                domain,
                slot: 3,
                generation,
            });
        }
        let retire = Command::Retire {
            replica: ReplicaId(1),
            epoch: 1,
        };
        assert_eq!(s.apply(&retire), Outcome::Done);
    }

    #[test]
    fn a_state_stored_before_a_domain_existed_gains_its_slots_when_loaded() {
        for domain in [Domain::Jobs, Domain::Executor] {
            let mut old = registered(1);
            assign(&mut old, 0, 1);
            old.slots.remove(&domain);
            let bytes = crate::wire::encode_payload(&old).unwrap();
            let mut loaded: ClusterState = crate::wire::decode_payload(&bytes).unwrap();
            assert_eq!(loaded.slots[&domain].len(), usize::from(SLOTS));
            assert_eq!(loaded.slots[&Domain::Locks], old.slots[&Domain::Locks]);
            assert!(matches!(
                loaded.apply(&Command::Assign {
                    domain,
                    slot: 0,
                    generation: 0,
                    to: ReplicaId(1),
                }),
                Outcome::Block { generation: 1, .. }
            ));
            assert_eq!(
                loaded.slot(domain, 0).unwrap().owner,
                Some((ReplicaId(1), 1))
            );
        }
    }
}
