//! The node's wall clock: the system clock plus a fixed offset that tests may set.
//!
//! Wall-clock time never decides order in Colony (hybrid logical clocks, epochs and fencing
//! tokens do), but some values that cross nodes are labelled with it: cache stamps, lease
//! reports, cron due times. To prove that nothing depends on clocks agreeing, a test can start
//! a node whose wall clock runs ahead or behind the others with `clock_offset_ms` (TOML key, or
//! the hidden flag `--clock-offset-ms`); it is accepted only together with `fault_injection`.
//! Every wall-clock read of a component goes through [`crate::Node::wall_clock`], so the offset
//! applies to all of them. Monotonic time (`Instant`) is not affected.
//!
//! Not here: a synchronized clock. Two nodes' `WallClock`s may differ by any amount.
//!
//! # Examples
//! ```
//! use colony_runtime::clock::WallClock;
//!
//! let ahead = WallClock::with_offset_ms(200);
//! let system = WallClock::system();
//! let diff = ahead.now_micros() as i64 - system.now_micros() as i64;
//! assert!((190_000..1_000_000).contains(&diff), "{diff}");
//! assert_eq!(ahead.offset(), 200);
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A wall clock: the system clock shifted by a fixed number of milliseconds (zero outside
/// tests). Cheap to copy; every copy reads the same clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WallClock {
    offset_ms: i64,
}

impl WallClock {
    /// The system clock, unshifted.
    pub const fn system() -> Self {
        WallClock { offset_ms: 0 }
    }

    /// The system clock shifted by `offset_ms` (positive: ahead). For tests; a node gets its
    /// clock from its settings (`clock_offset_ms`).
    pub const fn with_offset_ms(offset_ms: i64) -> Self {
        WallClock { offset_ms }
    }

    /// The offset from the system clock, in milliseconds.
    pub const fn offset(&self) -> i64 {
        self.offset_ms
    }

    /// The current wall-clock time. Saturates at the Unix epoch rather than going before it.
    pub fn now(&self) -> SystemTime {
        let system = SystemTime::now();
        let shift = Duration::from_millis(self.offset_ms.unsigned_abs());
        let shifted = if self.offset_ms >= 0 {
            system.checked_add(shift)
        } else {
            system.checked_sub(shift)
        };
        shifted.map_or(UNIX_EPOCH, |t| t.max(UNIX_EPOCH))
    }

    /// Milliseconds since the Unix epoch ([`Self::now`]); 0 if the clock reads before it.
    ///
    /// ```
    /// use colony_runtime::clock::WallClock;
    ///
    /// let ahead = WallClock::with_offset_ms(60_000).now_millis();
    /// let now = WallClock::system().now_millis();
    /// assert!(ahead >= now + 59_000);
    /// ```
    pub fn now_millis(&self) -> u64 {
        self.now_micros() / 1_000
    }

    /// Microseconds since the Unix epoch ([`Self::now`]); 0 if the clock reads before it.
    pub fn now_micros(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_negative_offset_runs_behind_and_never_before_the_epoch() {
        let behind = WallClock::with_offset_ms(-200);
        let diff = WallClock::system().now_micros() as i64 - behind.now_micros() as i64;
        assert!((190_000..1_000_000).contains(&diff), "{diff}");
        let far = WallClock::with_offset_ms(i64::MIN);
        assert_eq!(far.now(), UNIX_EPOCH);
        assert_eq!(far.now_micros(), 0);
    }
}
