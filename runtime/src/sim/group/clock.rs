//! Per-node clocks: each node's monotonic clock starts at its own offset and runs at its own
//! rate, so nodes disagree both on what time it is and on how long a second lasts.

use std::time::{Duration, Instant};

/// A node's clock, as a function of the world's simulated time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    /// The node's reading at world time zero, past `base`.
    offset: Duration,
    /// How much faster than world time it runs, in parts per million (negative: slower).
    rate_ppm: i64,
}

impl Clock {
    /// A clock reading `base + offset` at world time zero and running `rate_ppm` fast.
    pub fn new(base: Instant, offset: Duration, rate_ppm: i64) -> Self {
        assert!(
            rate_ppm.abs() < 100_000,
            "a clock drifting by 10% is not a clock"
        );
        Clock {
            base,
            offset,
            rate_ppm,
        }
    }

    /// How far reading `at` is past the world's common origin: the node's wall clock, off by
    /// its offset and drift like every reading of this clock.
    pub fn since_origin(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.base)
    }

    /// The node's reading at world time `t`.
    pub fn local(&self, t: Duration) -> Instant {
        let ns = t.as_nanos() as i128;
        let local = ns + ns * i128::from(self.rate_ppm) / 1_000_000;
        self.base + self.offset + Duration::from_nanos(local.max(0) as u64)
    }

    /// The earliest world time at which the node reads `at` or later.
    pub fn world(&self, at: Instant) -> Duration {
        let local = at
            .saturating_duration_since(self.base + self.offset)
            .as_nanos() as i128;
        let rate = 1_000_000 + i128::from(self.rate_ppm);
        // Ceiling division: the node must have reached `at` by then.
        let ns = (local * 1_000_000 + rate - 1) / rate;
        let mut t = Duration::from_nanos(ns.max(0) as u64);
        while self.local(t) < at {
            t += Duration::from_nanos(1);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_time_is_the_inverse_of_local_time() {
        let base = Instant::now();
        for rate in [-8_000, 0, 8_000] {
            let c = Clock::new(base, Duration::from_secs(3), rate);
            for ms in [0u64, 1, 999, 123_456] {
                let t = Duration::from_millis(ms);
                let at = c.local(t);
                let back = c.world(at);
                assert!(c.local(back) >= at);
                assert!(back <= t, "rate {rate}: {back:?} > {t:?}");
            }
        }
    }
}
