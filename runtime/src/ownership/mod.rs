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
//! Drive it with [`Ownership::update`] after every applied command (it compares the state with
//! what it served and says what changed), and [`Ownership::received`] when a hand-over arrives.

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
    // FNV-1a, folded: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
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
}

impl Ownership {
    /// Nothing served yet.
    pub fn new(me: ReplicaId, domain: Domain) -> Self {
        Ownership {
            me,
            domain,
            slots: vec![SlotView::NotMine; usize::from(SLOTS)],
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
                (Some(e), SlotView::HandingOver { .. }) => {
                    // Given back, and nobody else holds a table in force: this node's never left.
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
        }
        changes
    }

    /// A hand-over of `slot` for `generation` arrived. Returns the command to propose (the
    /// group then records it) if it completes this node's wait: install the table and serve.
    /// `None`: not awaited (early, late or not for this node); the sender tries again.
    pub fn received(
        &mut self,
        state: &ClusterState,
        slot: u16,
        generation: u64,
    ) -> Option<Command> {
        let i = usize::from(slot);
        let SlotView::Awaiting { generation: g } = *self.slots.get(i)? else {
            return None;
        };
        let s = state.slot(self.domain, slot)?;
        let (owner, epoch) = s.owner?;
        if g != generation || owner != self.me {
            return None;
        }
        self.slots[i] = SlotView::Serving {
            generation,
            epoch,
            next: s.block.0,
            end: s.block.1,
            extending: false,
        };
        Some(Command::Accept {
            domain: self.domain,
            slot,
            generation,
        })
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

    /// The commands to propose for slots whose block is three quarters used: each slot asks
    /// once until its next block arrives.
    pub fn extensions(&mut self) -> Vec<Command> {
        let domain = self.domain;
        let mut wanted = Vec::new();
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

    /// Forgets an extension request that failed, so that the next call asks again.
    pub fn extension_failed(&mut self, slot: u16) {
        if let Some(SlotView::Serving { extending, .. }) = self.slots.get_mut(usize::from(slot)) {
            *extending = false;
        }
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
