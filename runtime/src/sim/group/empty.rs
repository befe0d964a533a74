//! The slots of the domains a simulated service does not run, handed over empty.
//!
//! Every real node runs a service for every domain that hands over (locks, executor), so a
//! slot of any of them moves only once its previous owner sent its table. A simulator that
//! runs one primitive keeps the others' slots with [`EmptySlots`]: it hands them over empty,
//! as a node with no lock held and no batch running does, so a leaving node can retire.

use std::time::{Duration, Instant};

use crate::consensus::{ClusterState, Command, Domain, Entitlement, ReplicaId, SLOTS};
use crate::ownership::{Change, Ownership, SlotView};

/// How often an empty table is sent again while its hand-over is not recorded.
const RESEND: Duration = Duration::from_millis(200);

/// An empty table of a slot on its way to the slot's next owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmptyTable {
    /// The slot's domain.
    pub domain: Domain,
    /// The slot.
    pub slot: u16,
    /// The next owner's generation.
    pub generation: u64,
}

impl EmptyTable {
    fn of(domain: Domain, slot: u16, generation: u64) -> Self {
        EmptyTable {
            domain,
            slot,
            generation,
        }
    }
}

/// One node's slots of the domains its simulated service does not run. See the module doc.
#[derive(Debug)]
pub struct EmptySlots {
    owns: Vec<Ownership>,
    next_resend: Instant,
}

impl EmptySlots {
    /// The slots of every domain that hands over, except `except`, for member `me`.
    pub fn new(me: ReplicaId, except: &[Domain], now: Instant) -> Self {
        EmptySlots {
            owns: Domain::ALL
                .into_iter()
                .filter(|d| d.hands_over() && !except.contains(d))
                .map(|d| Ownership::new(me, d))
                .collect(),
            next_resend: now + RESEND,
        }
    }

    /// The group's state changed: the tables of slots that moved away, to send.
    pub fn update(
        &mut self,
        state: &ClusterState,
        epoch: Option<u64>,
    ) -> Vec<(ReplicaId, EmptyTable)> {
        let mut out = Vec::new();
        for own in &mut self.owns {
            let domain = own.domain();
            for change in own.update(state, epoch) {
                if let Change::HandOver {
                    slot,
                    to,
                    generation,
                } = change
                {
                    out.push((to, EmptyTable::of(domain, slot, generation)));
                }
            }
        }
        out
    }

    /// A table arrived; returns whether it was awaited (then ask [`Self::proposals`]).
    pub fn received(&mut self, state: &ClusterState, table: EmptyTable, now: Instant) -> bool {
        self.owns
            .iter_mut()
            .find(|o| o.domain() == table.domain)
            .is_some_and(|o| o.received(state, table.slot, table.generation, now))
    }

    /// What the slots need proposed (the records of hand-overs received). Not to be asked on
    /// every status: a group without a leader fails a proposal at once, and the status
    /// reporting that would ask again at once.
    pub fn proposals(&mut self, entitlement: Option<Entitlement>) -> Vec<Command> {
        self.owns
            .iter_mut()
            .flat_map(|o| o.proposals(entitlement))
            .collect()
    }

    /// A proposal failed: it may be asked again.
    pub fn proposal_failed(&mut self, command: &Command) {
        for own in &mut self.owns {
            own.proposal_failed(command);
        }
    }

    /// When the tables not yet recorded are due to be sent again.
    pub fn next_resend(&self) -> Instant {
        self.next_resend
    }

    /// The tables to send again, if they are due (then ask [`Self::proposals`] too).
    pub fn resend(&mut self, now: Instant) -> Option<Vec<(ReplicaId, EmptyTable)>> {
        if now < self.next_resend {
            return None;
        }
        self.next_resend = now + RESEND;
        let mut out = Vec::new();
        for own in &self.owns {
            let domain = own.domain();
            for slot in 0..SLOTS {
                if let SlotView::HandingOver { generation, to } = own.view(slot) {
                    out.push((to, EmptyTable::of(domain, slot, generation)));
                }
            }
        }
        Some(out)
    }
}
