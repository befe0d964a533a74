//! The locks held by this node's guards, with no IO: when to renew, and when a lease is lost.
//!
//! The owner says how long each grant or renewal lasts from when it received the request. This
//! node counts that duration from the moment its request left, shortened by the drift
//! allowance, so the lease ends here no later than on the owner however the two clocks run. It
//! is declared lost at `valid_until - margin`, before it ends, whenever a renewal has not
//! succeeded by then, and at once when the owner says the guard no longer holds it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::core::Answer;

/// Timing of renewals.
#[derive(Debug, Clone, Copy)]
pub struct HoldingsConfig {
    /// The longest lease an owner grants.
    pub lease: Duration,
    /// How long before the lease ends it is declared lost if not renewed.
    pub margin: Duration,
    /// The drift allowance, in parts per thousand: a lease is counted that much shorter here.
    pub drift_permille: u32,
}

impl HoldingsConfig {
    /// Renew three times per lease, as etcd's keep-alive does.
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }

    /// The earliest this node may count a grant to have begun, for a request sent at
    /// `sent_at` that waited `waited` in the owner's queue: the wait is measured on the
    /// owner's clock, which may run faster than this one, so it is shortened by the drift
    /// allowance.
    pub fn granted_at(&self, sent_at: Instant, waited: Duration) -> Instant {
        sent_at + self.shrink(waited)
    }

    /// The end of a lease of `lease_ms` granted for a request sent at `sent_at`, as this node
    /// may count it.
    pub fn valid_until(&self, sent_at: Instant, lease_ms: u64) -> Instant {
        let lease = Duration::from_millis(lease_ms).min(self.lease);
        sent_at + self.shrink(lease)
    }

    /// Whether a lease that ends at `valid_until` is worth holding at `now`: a renewal has a
    /// margin's time to come back before it is declared lost.
    pub fn usable(&self, now: Instant, valid_until: Instant) -> bool {
        valid_until > now + self.margin * 2
    }

    /// `d` as measured by another node, shortened by the drift allowance: this node's clock
    /// has surely counted at least that much over the same real time.
    pub fn shrink(&self, d: Duration) -> Duration {
        d - d * self.drift_permille / 1000
    }

    /// When a lease valid until `valid_until` is renewed next: after [`renew_every`], or
    /// halfway to the margin if that comes first (a lease cut short at its owner's entitlement
    /// is renewed sooner); a retry after a failure comes four times as soon.
    ///
    /// [`renew_every`]: HoldingsConfig::renew_every
    fn renew_at(&self, now: Instant, valid_until: Instant, retry: bool) -> Instant {
        let left = valid_until.saturating_duration_since(now + self.margin) / 2;
        let wait = left.min(self.renew_every());
        let wait = if retry { wait / 4 } else { wait };
        now + wait.max(Duration::from_millis(5))
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Ask the owner to renew `guard`'s lease on `name`; report back with
    /// [`Holdings::renewed`] or [`Holdings::renew_failed`] passing `sent_at`.
    Renew {
        /// The guard.
        guard: u64,
        /// The lock name.
        name: String,
        /// Its token.
        token: u64,
    },
    /// The guard's lease now runs until `valid_until`.
    Extended {
        /// The guard.
        guard: u64,
        /// The new end of its lease, as this node counts it.
        valid_until: Instant,
    },
    /// The guard's lease can no longer be trusted: signal its holder.
    Lost {
        /// The guard.
        guard: u64,
    },
}

#[derive(Debug, Clone)]
struct Holding {
    name: String,
    token: u64,
    valid_until: Instant,
    next_renew: Instant,
    in_flight: bool,
}

/// Why a renewal failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewFailure {
    /// The owner says the guard does not hold the lock: lost now.
    NotHeld,
    /// No answer, or the owner moved: try again until the lease runs out.
    Unreachable,
}

/// What the answer to a renewal (`None`: none came in time) means for the holding: the lease
/// the owner gave, or why it failed.
pub fn renew_outcome(answer: Option<Answer>) -> Result<u64, RenewFailure> {
    match answer {
        Some(Answer::Renewed { lease_ms }) => Ok(lease_ms),
        Some(Answer::NotHeld) => Err(RenewFailure::NotHeld),
        _ => Err(RenewFailure::Unreachable),
    }
}

/// This node's held locks.
#[derive(Debug)]
pub struct Holdings {
    config: HoldingsConfig,
    held: HashMap<u64, Holding>,
    outputs: VecDeque<Output>,
}

impl Holdings {
    /// No holdings yet.
    pub fn new(config: HoldingsConfig) -> Self {
        Holdings {
            config,
            held: HashMap::new(),
            outputs: VecDeque::new(),
        }
    }

    /// Guards holding a lock.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether no guard holds a lock.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Until when `guard`'s lease is valid here, if it is held.
    pub fn valid_until(&self, guard: u64) -> Option<Instant> {
        self.held.get(&guard).map(|h| h.valid_until)
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next renewal or lost deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.held
            .values()
            .map(|h| {
                let lost_at = h.valid_until - self.config.margin;
                if h.in_flight {
                    lost_at
                } else {
                    h.next_renew.min(lost_at)
                }
            })
            .min()
    }

    /// `guard` was granted `name` with `token` for `lease_ms`; the request left at `sent_at`.
    pub fn granted(
        &mut self,
        now: Instant,
        guard: u64,
        name: String,
        token: u64,
        sent_at: Instant,
        lease_ms: u64,
    ) {
        let valid_until = self.config.valid_until(sent_at, lease_ms);
        self.held.insert(
            guard,
            Holding {
                name,
                token,
                valid_until,
                next_renew: self.config.renew_at(now, valid_until, false),
                in_flight: false,
            },
        );
    }

    /// A renewal sent at `sent_at` succeeded for `lease_ms`.
    pub fn renewed(&mut self, now: Instant, guard: u64, sent_at: Instant, lease_ms: u64) {
        let until = self.config.valid_until(sent_at, lease_ms);
        if let Some(h) = self.held.get_mut(&guard) {
            h.valid_until = h.valid_until.max(until);
            h.next_renew = self.config.renew_at(now, h.valid_until, false);
            h.in_flight = false;
            self.outputs.push_back(Output::Extended {
                guard,
                valid_until: h.valid_until,
            });
        }
    }

    /// A renewal failed.
    pub fn renew_failed(&mut self, now: Instant, guard: u64, why: RenewFailure) {
        match why {
            RenewFailure::NotHeld => self.lose(guard),
            RenewFailure::Unreachable => {
                if let Some(h) = self.held.get_mut(&guard) {
                    h.in_flight = false;
                    // Retry soon: the lease is running out.
                    h.next_renew = self.config.renew_at(now, h.valid_until, true);
                }
            }
        }
    }

    /// `guard` released its lock (or gave it up): forget it.
    pub fn released(&mut self, guard: u64) {
        self.held.remove(&guard);
    }

    /// Sends due renewals and declares lost the leases about to end.
    pub fn handle_timeout(&mut self, now: Instant) {
        let margin = self.config.margin;
        let mut lost = Vec::new();
        for (guard, h) in &mut self.held {
            if now + margin >= h.valid_until {
                lost.push(*guard);
            } else if !h.in_flight && now >= h.next_renew {
                h.in_flight = true;
                self.outputs.push_back(Output::Renew {
                    guard: *guard,
                    name: h.name.clone(),
                    token: h.token,
                });
            }
        }
        for guard in lost {
            self.lose(guard);
        }
    }

    fn lose(&mut self, guard: u64) {
        if self.held.remove(&guard).is_some() {
            self.outputs.push_back(Output::Lost { guard });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HoldingsConfig {
        HoldingsConfig {
            lease: Duration::from_secs(3),
            margin: Duration::from_millis(500),
            drift_permille: 0,
        }
    }

    fn drain(h: &mut Holdings) -> Vec<Output> {
        std::iter::from_fn(|| h.poll_output()).collect()
    }

    #[test]
    fn renews_every_third_of_a_lease() {
        let t0 = Instant::now();
        let mut h = Holdings::new(config());
        h.granted(t0, 1, "a".into(), 7, t0, 3000);
        assert_eq!(h.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        h.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(
            drain(&mut h),
            [Output::Renew {
                guard: 1,
                name: "a".into(),
                token: 7
            }]
        );
        h.renewed(
            t0 + Duration::from_millis(1010),
            1,
            t0 + Duration::from_secs(1),
            3000,
        );
        assert_eq!(h.valid_until(1), Some(t0 + Duration::from_secs(4)));
    }

    #[test]
    fn a_lease_that_cannot_be_renewed_is_lost_before_it_ends() {
        let t0 = Instant::now();
        let mut h = Holdings::new(config());
        h.granted(t0, 1, "a".into(), 7, t0, 3000);
        let mut lost_at = None;
        while lost_at.is_none() {
            let now = h.poll_timeout().unwrap();
            h.handle_timeout(now);
            for out in drain(&mut h) {
                match out {
                    Output::Renew { guard, .. } => {
                        h.renew_failed(now, guard, RenewFailure::Unreachable)
                    }
                    Output::Lost { .. } => lost_at = Some(now),
                    Output::Extended { .. } => panic!("no renewal succeeded"),
                }
            }
        }
        let lost_at = lost_at.unwrap();
        assert!(
            lost_at < t0 + config().lease,
            "lost signalled at or after the lease end"
        );
        assert_eq!(lost_at, t0 + config().lease - config().margin);
    }

    #[test]
    fn a_lease_cut_short_by_the_owner_is_renewed_before_it_would_be_lost() {
        let t0 = Instant::now();
        let mut h = Holdings::new(config());
        // 1.2 s of a 3 s lease: lost at 0.7 s unless renewed, so renewed halfway there.
        h.granted(t0, 1, "a".into(), 7, t0, 1200);
        assert_eq!(h.poll_timeout(), Some(t0 + Duration::from_millis(350)));
        // A failed renewal is tried again four times as soon.
        let t1 = t0 + Duration::from_millis(350);
        h.handle_timeout(t1);
        assert!(matches!(drain(&mut h)[..], [Output::Renew { .. }]));
        h.renew_failed(t1, 1, RenewFailure::Unreachable);
        assert_eq!(h.poll_timeout(), Some(t1 + Duration::from_micros(43_750)));
    }

    #[test]
    fn not_held_is_lost_at_once() {
        let t0 = Instant::now();
        let mut h = Holdings::new(config());
        h.granted(t0, 1, "a".into(), 7, t0, 3000);
        h.renew_failed(t0, 1, RenewFailure::NotHeld);
        assert_eq!(drain(&mut h), [Output::Lost { guard: 1 }]);
        assert!(h.is_empty());
    }

    /// Found by the lock simulator (its planned moves; `fault_scripts_that_once_failed` keeps a
    /// seed): an owner whose entitlement
    /// ran short during a rolling restart granted 600 ms of a 1 s lease; the renewal, due a
    /// third of a lease later, came at the very moment the lease was declared lost.
    #[test]
    fn a_short_lease_is_renewed_early_enough_to_keep_it() {
        let t0 = Instant::now();
        let config = HoldingsConfig {
            lease: Duration::from_secs(1),
            margin: Duration::from_millis(200),
            drift_permille: 20,
        };
        let mut h = Holdings::new(config);
        h.granted(t0, 1, "a".into(), 7, t0, 600);
        let lost_at = h.valid_until(1).unwrap() - config.margin;
        let renew_at = h.poll_timeout().unwrap();
        assert!(
            renew_at + config.renew_every() / 2 <= lost_at,
            "renews at {:?}, lost at {:?}",
            renew_at - t0,
            lost_at - t0
        );
        h.handle_timeout(renew_at);
        assert!(matches!(drain(&mut h)[..], [Output::Renew { .. }]));
        // A full lease still renews every third of a lease.
        h.granted(t0, 2, "b".into(), 8, t0, 1000);
        h.renewed(t0, 2, t0, 1000);
        let _ = drain(&mut h);
        assert_eq!(
            h.held[&2].next_renew,
            t0 + config.renew_every(),
            "a full lease keeps its rhythm"
        );
    }

    /// Found by the lock simulator (its fault scripts; `fault_scripts_that_once_failed` keeps a
    /// seed): a waiter granted after
    /// 3.66 s in the queue of an owner whose clock ran 1.6% faster counted its lease 30 ms past
    /// the owner's, into the next holder's.
    #[test]
    fn a_wait_counted_on_a_faster_clock_is_shortened_by_the_drift_allowance() {
        let t0 = Instant::now();
        let config = HoldingsConfig {
            drift_permille: 20,
            ..config()
        };
        let waited = Duration::from_millis(3_000);
        assert_eq!(
            config.granted_at(t0, waited),
            t0 + Duration::from_millis(2_940)
        );
        // The owner's clock ran 2% fast: its 3 s of waiting took 2.94 s here.
        let granted_here = t0 + Duration::from_millis(2_940);
        assert!(config.granted_at(t0, waited) <= granted_here);
    }

    #[test]
    fn the_holder_never_counts_a_longer_lease_than_the_owner_gave() {
        let t0 = Instant::now();
        let config = HoldingsConfig {
            drift_permille: 20,
            ..config()
        };
        let mut h = Holdings::new(config);
        // A lease cut short at the owner's entitlement, and one longer than any owner grants.
        h.granted(t0, 1, "a".into(), 7, t0, 1000);
        h.granted(t0, 2, "b".into(), 8, t0, 60_000);
        assert_eq!(h.valid_until(1), Some(t0 + Duration::from_millis(980)));
        assert_eq!(h.valid_until(2), Some(t0 + Duration::from_millis(2940)));
    }
}
