//! Write stamps from a hybrid logical clock: wall-clock microseconds plus a logical counter,
//! advanced past every stamp this node accepts, so that a change made after another one was
//! seen carries a larger stamp whatever the two nodes' clocks say.
//!
//! The wall clock only labels stamps; it never lets a stamp go back, and a received stamp more
//! than the configured bound ahead of this node's wall clock is refused, never adopted: one node
//! with a clock far in the future (or a stamp near `u64::MAX`) cannot drag every clock with it.

use std::time::Duration;

use colony_runtime::NodeId;

use super::msg::Stamp;

/// The stamp of values loaded locally: older than any write, so every write replaces them.
pub const LOADED: Stamp = Stamp {
    micros: 0,
    logical: 0,
    node: [0; 16],
};

/// A received stamp was more than the bound ahead of this node's wall clock; it was not
/// adopted and the clock did not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stamp {stamp_micros} µs is {ahead_micros} µs ahead of this node's wall clock")]
pub struct TooFarAhead {
    /// The refused stamp's physical part.
    pub stamp_micros: u64,
    /// How far ahead of the local wall clock it was.
    pub ahead_micros: u64,
}

/// A hybrid logical clock. Plain data: the caller passes the wall-clock reading.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use colony_actors::NodeId;
/// use colony_actors::caches::core::Hlc;
///
/// let mut a = Hlc::new(NodeId::from_u128(1), Duration::from_secs(1));
/// let mut b = Hlc::new(NodeId::from_u128(2), Duration::from_secs(1));
/// let first = a.tick(5_200_000); // a's clock reads 5.2 s
/// b.observe(first, 5_000_000).unwrap(); // b's clock is 200 ms behind
/// assert!(b.tick(5_000_100) > first); // b's next write is later all the same
/// // A stamp far in the future is refused, and b's clock stays where it was.
/// assert!(b.observe(a.tick(60_000_000), 5_000_200).is_err());
/// assert!(b.tick(5_000_300).micros < 6_000_000);
/// ```
///
#[derive(Debug, Clone)]
pub struct Hlc {
    node: [u8; 16],
    /// The largest (physical, logical) pair issued or accepted.
    micros: u64,
    logical: u32,
    max_ahead_micros: u64,
}

impl Hlc {
    /// A clock for `node` that refuses stamps more than `max_ahead` ahead of its wall clock.
    pub fn new(node: NodeId, max_ahead: Duration) -> Self {
        Hlc {
            node: *node.as_bytes(),
            micros: 0,
            logical: 0,
            max_ahead_micros: u64::try_from(max_ahead.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// The stamp of a change made now, when the wall clock reads `wall_micros`: larger than
    /// every stamp issued or accepted before.
    pub fn tick(&mut self, wall_micros: u64) -> Stamp {
        if wall_micros > self.micros {
            self.micros = wall_micros;
            self.logical = 0;
        } else if self.logical == u32::MAX {
            // Only a burst of four billion stamps in one microsecond gets here.
            self.micros = self.micros.saturating_add(1);
            self.logical = 0;
        } else {
            self.logical += 1;
        }
        self.last()
    }

    /// Accepts a received stamp: later ticks are larger than it.
    ///
    /// # Errors
    /// [`TooFarAhead`] when `stamp` is more than the bound ahead of `wall_micros`; the clock is
    /// unchanged then.
    pub fn observe(&mut self, stamp: Stamp, wall_micros: u64) -> Result<(), TooFarAhead> {
        let limit = wall_micros.saturating_add(self.max_ahead_micros);
        if stamp.micros > limit {
            return Err(TooFarAhead {
                stamp_micros: stamp.micros,
                ahead_micros: stamp.micros - wall_micros,
            });
        }
        if (stamp.micros, stamp.logical) > (self.micros, self.logical) {
            self.micros = stamp.micros;
            self.logical = stamp.logical;
        }
        Ok(())
    }

    /// The largest stamp issued or accepted so far, as this node's.
    pub fn last(&self) -> Stamp {
        Stamp {
            micros: self.micros,
            logical: self.logical,
            node: self.node,
        }
    }
}

/// A stamp of a fixed test node at `micros`.
#[cfg(test)]
pub(crate) fn at(micros: u64) -> Stamp {
    Stamp {
        micros,
        logical: 0,
        node: [1; 16],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOUND: Duration = Duration::from_secs(1);

    fn clock(n: u128) -> Hlc {
        Hlc::new(NodeId::from_u128(n), BOUND)
    }

    #[test]
    fn a_write_after_a_seen_write_is_later_whatever_the_clocks_say() {
        // The issue's case: a is 200 ms ahead of b; b writes after seeing a's write.
        let (mut a, mut b) = (clock(1), clock(2));
        let first = a.tick(10_200_000);
        b.observe(first, 10_000_000).unwrap();
        let second = b.tick(10_000_100);
        assert!(second > first);
        assert!(LOADED < first);
    }

    #[test]
    fn a_stamp_beyond_the_bound_is_refused_and_not_adopted() {
        let mut a = clock(1);
        let before = a.tick(1_000);
        let err = a
            .observe(
                Stamp {
                    micros: u64::MAX,
                    logical: 0,
                    node: [9; 16],
                },
                2_000,
            )
            .unwrap_err();
        assert_eq!(err.stamp_micros, u64::MAX);
        assert_eq!(a.last(), before, "the clock did not move");
        assert_eq!(a.tick(3_000).micros, 3_000);
    }

    proptest! {
        /// Stamps only grow, whatever the wall clock does (steps back, stands still).
        #[test]
        fn ticks_strictly_increase(walls in proptest::collection::vec(0u64..1_000, 1..200)) {
            let mut c = clock(1);
            let mut last = LOADED;
            for w in walls {
                let s = c.tick(w);
                prop_assert!(s > last);
                last = s;
            }
        }

        /// After accepting a stamp, every later tick is larger than it (the merge rule), and a
        /// stamp is accepted exactly when it is within the bound of the local wall clock.
        #[test]
        fn merge_orders_later_writes_after_seen_ones(
            events in proptest::collection::vec((any::<bool>(), 0u64..5_000_000, 0u32..3), 1..200),
        ) {
            let (mut a, mut b) = (clock(1), clock(2));
            let mut seen = LOADED;
            let mut b_wall = 0;
            for (from_a, wall, skew) in events {
                // a's clock runs up to 2 s ahead of b's, so some of its stamps are refused.
                let a_wall = wall + u64::from(skew) * 1_000_000;
                if from_a {
                    let s = a.tick(a_wall);
                    match b.observe(s, wall) {
                        Ok(()) => {
                            prop_assert!(s.micros <= wall + 1_000_000);
                            seen = seen.max(s);
                        }
                        Err(e) => prop_assert!(e.stamp_micros > wall + 1_000_000),
                    }
                } else {
                    let s = b.tick(wall);
                    b_wall = b_wall.max(wall);
                    prop_assert!(s > seen, "{s:?} not after {seen:?}");
                    // b's stamps run ahead of its own clock only as far as accepted ones did.
                    prop_assert!(s.micros <= b_wall.max(seen.micros));
                }
            }
        }
    }
}
