//! Which slots of a domain this node may serve now, and the fencing tokens it draws for them:
//! the entitlement machinery every exclusive primitive shares (locks now; job fires and bucket
//! ownership next). No IO.
//!
//! A node serves a slot only while all of these hold:
//! - the group's state (as this node applied it) gives the slot to this node, in this node's
//!   current epoch;
//! - this node's entitlement has not ended on its own clock ([`Entitlement`]);
//! - the previous owner handed its table over, or its epoch ended (then nothing it granted is
//!   still valid).
//!
//! Every token comes from the slot's current block, which the group drew above every block
//! before it, so tokens of one slot (and so of every key in it) strictly increase across
//! owners without any clock. A lease given for a key never outlives the granter's entitlement.
//!
//! A new owner serves from a received table at once, but records the hand-over (proposes
//! [`Command::Accept`]) only once its own entitlement outlasts every lease the table carries.
//! Until then the previous owner's table stays authoritative; after it, the leases this node
//! inherited end before its own entitlement does, so if its epoch is revoked, a next owner that
//! serves fresh after that revocation can meet none of them.
//!
//! Drive it with [`Ownership::update`] after every applied command (it compares the state with
//! what it served and says what changed), [`Ownership::received`] when a hand-over arrives, and
//! propose what [`Ownership::proposals`] returns after either.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::consensus::{ClusterState, Command, Domain, Entitlement, ReplicaId, SLOTS, TOKEN_BLOCK};

/// The slot of `key` in every domain: a stable hash, the same on every node.
///
/// # Examples
/// ```
/// use colony_runtime::ownership::slot_of;
/// assert_eq!(slot_of(b"reindex"), slot_of(b"reindex"));
/// assert!(slot_of(b"reindex") < colony_runtime::consensus::SLOTS);
/// ```
pub fn slot_of(key: &[u8]) -> u16 {
    slot_of_parts(&[key])
}

/// [`slot_of`] the concatenation of `parts`, without building it.
///
/// # Examples
/// ```
/// use colony_runtime::ownership::{slot_of, slot_of_parts};
/// assert_eq!(slot_of_parts(&[b"mail", b"\0", b"user-7"]), slot_of(b"mail\0user-7"));
/// ```
pub fn slot_of_parts(parts: &[&[u8]]) -> u16 {
    // FNV-1a, folded: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ((h ^ (h >> 32)) % u64::from(SLOTS)) as u16
}

/// Where one slot stands on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotView {
    /// Another node's (or nobody's).
    NotMine,
    /// Given to this node at `generation`; waiting for the previous owner's table.
    Awaiting {
        /// The slot's generation.
        generation: u64,
    },
    /// This node's: it serves the slot with tokens `next..end`.
    Serving {
        /// The slot's generation.
        generation: u64,
        /// The epoch it was given in.
        epoch: u64,
        /// The next token.
        next: u64,
        /// One past the last token of the block.
        end: u64,
        /// Another block was asked for.
        extending: bool,
    },
    /// Was this node's; its table goes to `to` until the group records the hand-over.
    HandingOver {
        /// The new owner's generation.
        generation: u64,
        /// The new owner.
        to: ReplicaId,
    },
}

/// What changed for one slot; the primitive acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Change {
    /// Start serving the slot with an empty table (nothing granted before is still valid).
    ServeFresh {
        /// The slot.
        slot: u16,
    },
    /// Serve the slot again with the table this node was handing over (it came back before
    /// the hand-over finished).
    Resume {
        /// The slot.
        slot: u16,
    },
    /// Stop serving the slot and send its table to `to` for `generation` (again until
    /// [`Change::Handed`]).
    HandOver {
        /// The slot.
        slot: u16,
        /// The new owner.
        to: ReplicaId,
        /// Its generation.
        generation: u64,
    },
    /// The hand-over is recorded: forget the slot's table.
    Handed {
        /// The slot.
        slot: u16,
    },
    /// Stop serving the slot and forget its table: this node's epoch ended, so nothing it
    /// granted is valid any more.
    Drop {
        /// The slot.
        slot: u16,
    },
}

/// The slots of one domain as this node serves them. See the module doc.
#[derive(Debug, Clone)]
pub struct Ownership {
    me: ReplicaId,
    domain: Domain,
    slots: Vec<SlotView>,
    /// Received hand-overs not yet recorded by the group, by slot.
    accepting: BTreeMap<u16, Accepting>,
}

/// A hand-over this node serves from but has yet to record.
#[derive(Debug, Clone, Copy)]
struct Accepting {
    generation: u64,
    /// When the last lease the table carried ends, on this node's clock.
    leases_until: Instant,
    /// The [`Command::Accept`] is proposed and not known to have failed.
    asked: bool,
}

impl Ownership {
    /// Nothing served yet.
    pub fn new(me: ReplicaId, domain: Domain) -> Self {
        Ownership {
            me,
            domain,
            slots: vec![SlotView::NotMine; usize::from(SLOTS)],
            accepting: BTreeMap::new(),
        }
    }

    /// The domain.
    pub fn domain(&self) -> Domain {
        self.domain
    }

    /// Where `slot` stands.
    pub fn view(&self, slot: u16) -> SlotView {
        self.slots
            .get(usize::from(slot))
            .copied()
            .unwrap_or(SlotView::NotMine)
    }

    /// Brings every slot in line with `state`, given this node's current `epoch` (`None`:
    /// it has none in force). Returns what changed.
    pub fn update(&mut self, state: &ClusterState, epoch: Option<u64>) -> Vec<Change> {
        let mut changes = Vec::new();
        let epoch = epoch.filter(|e| state.in_force(self.me, *e));
        for slot in 0..SLOTS {
            let Some(s) = state.slot(self.domain, slot) else {
                continue;
            };
            let i = usize::from(slot);
            let old = self.slots[i];
            let mine = epoch.filter(|e| s.owner == Some((self.me, *e)));
            let new = match (mine, old) {
                (
                    Some(e),
                    SlotView::Serving {
                        generation,
                        next,
                        extending,
                        end,
                        ..
                    },
                ) if generation == s.generation => {
                    // Still this node's; a new block (an extension) starts above the old one.
                    SlotView::Serving {
                        generation,
                        epoch: e,
                        next: next.max(s.block.0),
                        end: s.block.1,
                        extending: extending && s.block.1 == end,
                    }
                }
                // Another node's table is authoritative while that node's epoch is in force
                // (it may have served since this node handed the slot over): wait for it.
                (Some(_), _) if s.from.is_some_and(|(r, fe)| state.in_force(r, fe)) => {
                    SlotView::Awaiting {
                        generation: s.generation,
                    }
                }
                // Given back, and nobody else holds a table in force: this node's never left
                // (the move may have come and gone within one update). Whatever another node
                // took over from it ended with that node's entitlement.
                (Some(e), _) if keeps_table(old, e) => {
                    changes.push(Change::Resume { slot });
                    serving(s, e)
                }
                (Some(e), _) => {
                    changes.push(Change::ServeFresh { slot });
                    serving(s, e)
                }
                (None, _) => {
                    let handing = epoch.is_some_and(|e| s.from == Some((self.me, e)));
                    match (handing, s.owner) {
                        (true, Some((to, _))) => {
                            let sent = matches!(old, SlotView::HandingOver { generation, .. } if generation == s.generation);
                            if !sent {
                                changes.push(Change::HandOver {
                                    slot,
                                    to,
                                    generation: s.generation,
                                });
                            }
                            SlotView::HandingOver {
                                generation: s.generation,
                                to,
                            }
                        }
                        _ => {
                            match old {
                                SlotView::Serving { .. } => changes.push(Change::Drop { slot }),
                                SlotView::HandingOver { .. } => {
                                    changes.push(Change::Handed { slot })
                                }
                                _ => {}
                            }
                            SlotView::NotMine
                        }
                    }
                }
            };
            self.slots[i] = new;
            let recording = matches!(new, SlotView::Serving { generation, .. } if generation == s.generation)
                && s.from.is_some();
            if !recording {
                self.accepting.remove(&slot);
            }
        }
        changes
    }

    /// A hand-over of `slot` for `generation` arrived, carrying leases that end by
    /// `leases_until` (this node's clock, drift allowed for). Returns whether it completes this
    /// node's wait: then install the table and serve; [`Ownership::proposals`] records it once
    /// this node's entitlement outlasts those leases. `false`: not awaited (early, late or not
    /// for this node); the sender tries again.
    pub fn received(
        &mut self,
        state: &ClusterState,
        slot: u16,
        generation: u64,
        leases_until: Instant,
    ) -> bool {
        let i = usize::from(slot);
        let Some(SlotView::Awaiting { generation: g }) = self.slots.get(i).copied() else {
            return false;
        };
        let Some(s) = state.slot(self.domain, slot) else {
            return false;
        };
        let Some((owner, epoch)) = s.owner else {
            return false;
        };
        if g != generation || owner != self.me {
            return false;
        }
        self.slots[i] = serving(s, epoch);
        self.accepting.insert(
            slot,
            Accepting {
                generation,
                leases_until,
                asked: false,
            },
        );
        true
    }

    /// Whether this node may act on `slot` at `now`.
    pub fn may_serve(&self, slot: u16, now: Instant, entitlement: Option<Entitlement>) -> bool {
        match (self.view(slot), entitlement) {
            (SlotView::Serving { epoch, .. }, Some(e)) => e.epoch == epoch && e.until > now,
            _ => false,
        }
    }

    /// The next fencing token of `slot`, if this node may serve it now and its block is not
    /// used up.
    pub fn issue(
        &mut self,
        slot: u16,
        now: Instant,
        entitlement: Option<Entitlement>,
    ) -> Option<u64> {
        if !self.may_serve(slot, now, entitlement) {
            return None;
        }
        let SlotView::Serving { next, end, .. } = &mut self.slots[usize::from(slot)] else {
            return None;
        };
        if *next >= *end {
            return None;
        }
        *next += 1;
        Some(*next - 1)
    }

    /// The commands to propose now: the hand-overs this node's `entitlement` now outlasts,
    /// and another block for slots whose block is three quarters used. Each is asked once,
    /// until it is recorded or [`Ownership::proposal_failed`] says it failed.
    pub fn proposals(&mut self, entitlement: Option<Entitlement>) -> Vec<Command> {
        let domain = self.domain;
        let mut wanted = Vec::new();
        for (slot, a) in &mut self.accepting {
            let in_epoch = matches!(
                self.slots[usize::from(*slot)],
                SlotView::Serving { epoch, .. } if entitlement.is_some_and(|e| e.epoch == epoch)
            );
            if !a.asked && in_epoch && entitlement.is_some_and(|e| e.until >= a.leases_until) {
                a.asked = true;
                wanted.push(Command::Accept {
                    domain,
                    slot: *slot,
                    generation: a.generation,
                });
            }
        }
        for (i, view) in self.slots.iter_mut().enumerate() {
            if let SlotView::Serving {
                generation,
                next,
                end,
                extending,
                ..
            } = view
                && !*extending
                && *next + TOKEN_BLOCK / 4 >= *end
            {
                *extending = true;
                wanted.push(Command::Extend {
                    domain,
                    slot: i as u16,
                    generation: *generation,
                });
            }
        }
        wanted
    }

    /// How long a grant or renewal made at `now` may last: `lease`, cut short where this node's
    /// entitlement ends first.
    pub fn lease(now: Instant, entitlement: Entitlement, lease: Duration) -> Duration {
        lease.min(entitlement.until.saturating_duration_since(now))
    }

    /// The lease a new grant made at `now` may have, if it is worth giving: at least half of
    /// `lease`. A shorter one means this node's heartbeats are committing late; a holder would
    /// lose it about as soon as it got it, so new grants wait for the next heartbeat instead
    /// (renewals take what there is).
    pub fn grant_lease(
        now: Instant,
        entitlement: Entitlement,
        lease: Duration,
    ) -> Option<Duration> {
        let granted = Self::lease(now, entitlement, lease);
        (granted >= lease / 2).then_some(granted)
    }

    /// Slots this node serves now.
    pub fn serving(&self) -> impl Iterator<Item = u16> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, v)| matches!(v, SlotView::Serving { .. }))
            .map(|(i, _)| i as u16)
    }

    /// Forgets a proposal from [`Ownership::proposals`] that failed, so that the next call
    /// asks again. Other commands are not this type's.
    pub fn proposal_failed(&mut self, command: &Command) {
        match command {
            Command::Extend { domain, slot, .. } if *domain == self.domain => {
                if let Some(SlotView::Serving { extending, .. }) =
                    self.slots.get_mut(usize::from(*slot))
                {
                    *extending = false;
                }
            }
            Command::Accept {
                domain,
                slot,
                generation,
            } if *domain == self.domain => {
                if let Some(a) = self
                    .accepting
                    .get_mut(slot)
                    .filter(|a| a.generation == *generation)
                {
                    a.asked = false;
                }
            }
            _ => {}
        }
    }
}

/// Whether a slot given to this node in `epoch` may keep the table it had in view `old`.
fn keeps_table(old: SlotView, epoch: u64) -> bool {
    match old {
        SlotView::HandingOver { .. } => true,
        SlotView::Serving { epoch: e, .. } => e == epoch,
        _ => false,
    }
}

fn serving(s: &crate::consensus::Slot, epoch: u64) -> SlotView {
    SlotView::Serving {
        generation: s.generation,
        epoch,
        next: s.block.0,
        end: s.block.1,
        extending: false,
    }
}

#[cfg(test)]
mod tests;
