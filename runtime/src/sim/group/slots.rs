//! The runtime's own service for the group world: the real [`Ownership`] of the lock domain's
//! slots, with one lock per slot that the node itself grants now and then.
//!
//! It proves the entitlement machinery without the lock cores of `colony-actors` (which run
//! on the same world in that crate's simulator): each node grants the lock of a slot it may
//! serve, for a random lease cut short at its entitlement, and hands its tables over when a
//! slot moves. Holds are recorded with the granter's lease end: a holder counts its lease from
//! before the grant, so this is the latest any holder could believe it holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt;

use super::empty::{EmptySlots, EmptyTable};
use super::service::{Ctx, Service};
use crate::check::Hold;
use crate::consensus::{ClusterState, Command, Domain, Entitlement, GroupStatus, ReplicaId};
use crate::ownership::{Change, Ownership, SlotView};

/// How often a slot's table is sent again while its hand-over is not recorded.
const RESEND: Duration = Duration::from_millis(200);

/// A slot's table on its way: its one hold, as a token and the lease left when sent.
#[derive(Debug, Clone)]
pub struct Handover {
    domain: Domain,
    slot: u16,
    generation: u64,
    hold: Option<(u64, Duration)>,
}

/// One node's slots and their one lock each. See the module doc.
pub struct SlotLocks {
    own: Ownership,
    /// The slots of every other domain that hands over: handed over empty, so that a leaving
    /// node retires.
    others: EmptySlots,
    state: Arc<ClusterState>,
    entitlement: Option<Entitlement>,
    /// The one lock of each slot this node serves or hands over: its token and lease end.
    tables: BTreeMap<u16, Option<(u64, Instant)>>,
    next_grant: Instant,
    next_resend: Instant,
    drift_permille: u32,
    lease: Duration,
    grant_every: Duration,
}

impl SlotLocks {
    fn propose(&mut self, ctx: &mut Ctx<'_, Self>) {
        for command in self.own.proposals(self.entitlement) {
            ctx.propose(command);
        }
        for command in self.others.proposals(self.entitlement) {
            ctx.propose(command);
        }
    }

    /// Sends empty tables of the other domains' slots, as this service's message.
    fn send_empty(ctx: &mut Ctx<'_, Self>, tables: Vec<(ReplicaId, EmptyTable)>) {
        for (to, t) in tables {
            let msg = Handover {
                domain: t.domain,
                slot: t.slot,
                generation: t.generation,
                hold: None,
            };
            ctx.send(to, msg);
        }
    }

    fn send_handover(&self, ctx: &mut Ctx<'_, Self>, slot: u16, to: ReplicaId, generation: u64) {
        let hold = self
            .tables
            .get(&slot)
            .copied()
            .flatten()
            .map(|(token, end)| (token, end.saturating_duration_since(ctx.now)));
        let msg = Handover {
            domain: Domain::Locks,
            slot,
            generation,
            hold,
        };
        ctx.send(to, msg);
    }

    /// Grants the lock of a random free slot this node may serve, for a random lease cut short
    /// at its entitlement, and records the hold.
    fn try_grant(&mut self, ctx: &mut Ctx<'_, Self>) {
        let every = self.grant_every;
        let jitter = Duration::from_nanos(ctx.rng.random_range(0..=every.as_nanos() as u64));
        self.next_grant = ctx.now + every / 2 + jitter;
        let min = self.lease / 10;
        let wanted = min
            + Duration::from_nanos(
                ctx.rng
                    .random_range(0..=(self.lease - min).as_nanos() as u64),
            );
        let pick: u64 = ctx.rng.random();
        let now = ctx.now;
        let free: Vec<u16> = self
            .own
            .serving()
            .filter(|s| self.own.may_serve(*s, now, self.entitlement))
            .filter(|s| {
                self.tables
                    .get(s)
                    .copied()
                    .flatten()
                    .is_none_or(|(_, end)| end <= now)
            })
            .collect();
        if free.is_empty() {
            return;
        }
        let slot = free[(pick % free.len() as u64) as usize];
        let (Some(token), Some(e)) = (
            self.own.issue(slot, now, self.entitlement),
            self.entitlement,
        ) else {
            return;
        };
        let lease = Ownership::lease(now, e, wanted);
        self.tables.insert(slot, Some((token, now + lease)));
        let end = ctx.world_of(now + lease);
        ctx.record.push(Hold {
            name: format!("slot-{slot}"),
            token,
            holder: ctx.name.to_owned(),
            start_us: ctx.world.as_micros() as u64,
            end_us: end.as_micros() as u64,
        });
    }
}

impl Service for SlotLocks {
    type Msg = Handover;
    type Record = Vec<Hold>;

    fn start(ctx: &mut Ctx<'_, Self>) -> Self {
        SlotLocks {
            own: Ownership::new(ctx.replica, Domain::Locks),
            others: EmptySlots::new(ctx.replica, &[Domain::Locks], ctx.now),
            state: Arc::new(ClusterState::new()),
            entitlement: None,
            tables: BTreeMap::new(),
            next_grant: ctx.now,
            next_resend: ctx.now + RESEND,
            drift_permille: ctx.config.group.drift_permille,
            lease: ctx.config.group.liveness,
            grant_every: ctx.config.grant_every,
        }
    }

    fn status(&mut self, ctx: &mut Ctx<'_, Self>, status: &Arc<GroupStatus>) {
        self.state = status.state.clone();
        self.entitlement = status.entitlement;
        for change in self.own.update(&self.state, status.epoch) {
            match change {
                Change::ServeFresh { slot } => {
                    self.tables.insert(slot, None);
                }
                Change::Resume { .. } => {}
                Change::HandOver {
                    slot,
                    to,
                    generation,
                } => self.send_handover(ctx, slot, to, generation),
                Change::Handed { slot } | Change::Drop { slot } => {
                    self.tables.remove(&slot);
                }
            }
        }
        let tables = self.others.update(&self.state, status.epoch);
        Self::send_empty(ctx, tables);
        self.propose(ctx);
    }

    fn message(&mut self, ctx: &mut Ctx<'_, Self>, _: ReplicaId, msg: Handover) {
        if msg.domain != Domain::Locks {
            let table = EmptyTable {
                domain: msg.domain,
                slot: msg.slot,
                generation: msg.generation,
            };
            if self.others.received(&self.state, table, ctx.now) {
                self.propose(ctx);
            }
            return;
        }
        // A duration measured on another clock is stretched by the drift allowance.
        let stretch = |left: Duration| left + left * self.drift_permille / 1000;
        let now = ctx.now;
        let hold = msg.hold.map(|(token, left)| (token, now + stretch(left)));
        let until = hold.map_or(now, |(_, end)| end);
        if self
            .own
            .received(&self.state, msg.slot, msg.generation, until)
        {
            self.tables.insert(msg.slot, hold);
            self.propose(ctx);
        }
    }

    fn timeout(&mut self, ctx: &mut Ctx<'_, Self>) {
        if self.next_grant <= ctx.now {
            self.try_grant(ctx);
        }
        if self.next_resend <= ctx.now {
            self.next_resend = ctx.now + RESEND;
            let pending: Vec<(u16, ReplicaId, u64)> = (0..crate::consensus::SLOTS)
                .filter_map(|slot| match self.own.view(slot) {
                    SlotView::HandingOver { generation, to } => Some((slot, to, generation)),
                    _ => None,
                })
                .collect();
            for (slot, to, generation) in pending {
                self.send_handover(ctx, slot, to, generation);
            }
        }
        if let Some(tables) = self.others.resend(ctx.now) {
            Self::send_empty(ctx, tables);
        }
    }

    fn proposal_failed(&mut self, _: &mut Ctx<'_, Self>, command: &Command) {
        // Asked again with the next status, not here: a group without a leader fails at once.
        self.own.proposal_failed(command);
        self.others.proposal_failed(command);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(
            self.next_grant
                .min(self.next_resend)
                .min(self.others.next_resend()),
        )
    }

    fn ownership(&self) -> &Ownership {
        &self.own
    }
}
