//! A node's clocks in a simulated world: a monotonic clock that runs at its own rate (drift),
//! and a wall clock that is also offset (skew).
//!
//! The world keeps one true time (`Duration` since the start of the run); each node reads its
//! clocks through a [`SkewedClock`]. Cores that compare `Instant`s see their node's monotonic
//! clock, and cores that label values with wall-clock microseconds see its wall clock, so a
//! simulation can prove that a promise holds whatever the clocks do within stated bounds.
//!
//! # Examples
//! ```
//! use std::time::{Duration, Instant};
//! use colony_runtime::sim::SkewedClock;
//!
//! let clock = SkewedClock { skew_micros: -200_000, drift_ppm: 20_000 }; // 200 ms behind, 2% fast
//! let t = Duration::from_secs(10);
//! assert_eq!(clock.local(t), Duration::from_millis(10_200));
//! assert_eq!(clock.wall_micros(1_000_000_000, t), 1_000_000_000 + 10_200_000 - 200_000);
//! assert_eq!(clock.world(clock.local(t)), t);
//! let epoch = Instant::now();
//! assert_eq!(clock.world_of(epoch, clock.instant(epoch, t)), t);
//! ```

use std::time::{Duration, Instant};

/// How one node's clocks differ from the world's true time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkewedClock {
    /// Wall-clock offset in microseconds (positive: ahead).
    pub skew_micros: i64,
    /// Rate error of both clocks in parts per million (positive: fast). Keep it within
    /// ±100,000 (10%).
    pub drift_ppm: i64,
}

const MILLION: i128 = 1_000_000;

impl SkewedClock {
    /// How much time this node's monotonic clock has counted after `world` of true time.
    pub fn local(&self, world: Duration) -> Duration {
        let nanos = world.as_nanos() as i128 * (MILLION + self.drift_ppm as i128) / MILLION;
        Duration::from_nanos(nanos.max(0) as u64)
    }

    /// The true time at which this node's monotonic clock has counted `local` (the inverse of
    /// [`Self::local`], rounded up so a deadline is never met early).
    pub fn world(&self, local: Duration) -> Duration {
        let rate = MILLION + self.drift_ppm as i128;
        let nanos = (local.as_nanos() as i128 * MILLION + rate - 1) / rate;
        Duration::from_nanos(nanos.max(0) as u64)
    }

    /// The node's `Instant` at true time `world`, counting from the world's `epoch`.
    pub fn instant(&self, epoch: Instant, world: Duration) -> Instant {
        epoch + self.local(world)
    }

    /// The true time at which the node's monotonic clock reads `at` (at least zero).
    pub fn world_of(&self, epoch: Instant, at: Instant) -> Duration {
        self.world(at.saturating_duration_since(epoch))
    }

    /// The node's wall clock in microseconds at true time `world`, for a world that started at
    /// `start_micros`.
    pub fn wall_micros(&self, start_micros: u64, world: Duration) -> u64 {
        let local = self.local(world).as_micros() as i128;
        (start_micros as i128 + local + self.skew_micros as i128).max(0) as u64
    }
}
