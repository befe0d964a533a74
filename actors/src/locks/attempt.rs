//! One acquire as its caller drives it, with no IO: how long to ask the owner to queue the
//! request, and what each answer (or its absence) means for the caller.
//!
//! [`ClusterLock`](super::ClusterLock) runs it on the node; the seeded simulator runs the same
//! one for its clients. Drive it with [`Attempt::wait`] before each request, then
//! [`Attempt::answer`] with what came back; sleep for [`Next::Retry`]'s `after` before asking
//! again.

use std::time::{Duration, Instant};

use super::core::Answer;
use super::gateway::MAX_WAIT;
use super::holdings::HoldingsConfig;

/// Extra time a request may take on the wire beyond the owner's wait.
pub const WIRE_SLACK: Duration = Duration::from_secs(2);
/// How long a `try_lock` keeps asking while the name's slot is moving or its owner is
/// unreachable.
pub const TRY_FOR: Duration = Duration::from_secs(2);

/// How long an acquire may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only if the name is free now (`try_lock`).
    Try,
    /// Until this deadline (`try_lock_for`).
    For(Instant),
    /// As long as it takes (`lock`).
    Forever,
}

/// Why an acquire could not be answered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No node may grant the name now (its slot is moving, or its owner's entitlement lapsed).
    Unavailable,
    /// The owner did not answer within `after`.
    Unreachable {
        /// How long the request was given.
        after: Duration,
    },
}

/// What the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Next {
    /// Granted: the lease of `lease_ms` counts from `sent_at` (the request's send time, moved
    /// on by the time it waited in the owner's queue as [`HoldingsConfig::granted_at`] counts
    /// it).
    Granted {
        /// The fencing token.
        token: u64,
        /// When the lease starts, as the caller counts it.
        sent_at: Instant,
        /// The lease the owner gave.
        lease_ms: u64,
    },
    /// Someone else holds the name and the caller did not wait.
    Busy,
    /// Ask again at once (the owner's wait ended, the caller's did not).
    Again,
    /// Ask again after `after`.
    Retry {
        /// How long to back off.
        after: Duration,
        /// What went wrong.
        failure: Failure,
    },
    /// The caller's time is up: no grant (`failure` set for a `try_lock` that never reached
    /// an owner). `withdraw`: the owner may still queue the request, so cancel it there.
    GaveUp {
        /// Why, for a `try_lock`.
        failure: Option<Failure>,
        /// Whether to send a cancel.
        withdraw: bool,
    },
}

/// One acquire. See the module doc.
#[derive(Debug, Clone)]
pub struct Attempt {
    mode: Mode,
    started: Instant,
    backoff: Duration,
    holdings: HoldingsConfig,
    /// Requests numbered so far.
    sent: u64,
}

impl Attempt {
    /// An acquire in `mode` starting at `now`, on a node that counts leases as `holdings`
    /// says.
    pub fn new(mode: Mode, now: Instant, holdings: HoldingsConfig) -> Self {
        Attempt {
            mode,
            started: now,
            backoff: Duration::from_millis(5),
            holdings,
            sent: 0,
        }
    }

    /// The number of the request about to be sent: 1, 2, ... The owner takes a request only
    /// from a later one than it granted or queued for this guard, so a request held up on the
    /// way cannot end the grant a later one got (see `LockTable::acquire_attempt`).
    pub fn number(&mut self) -> u64 {
        self.sent += 1;
        self.sent
    }

    /// How long the next request asks the owner to queue it (`None`: answer at once).
    pub fn wait(&self, now: Instant) -> Option<Duration> {
        match self.mode {
            Mode::Try => None,
            Mode::For(deadline) => Some(deadline.saturating_duration_since(now).min(MAX_WAIT)),
            Mode::Forever => Some(MAX_WAIT),
        }
        .filter(|w| !w.is_zero())
    }

    /// `wait` in the request's whole milliseconds, rounded up: a remainder under a millisecond
    /// is still a wait, never a `try_lock` answered `Busy` before the caller's deadline.
    pub fn wait_ms(wait: Option<Duration>) -> u64 {
        wait.map_or(0, |w| w.as_micros().div_ceil(1000) as u64)
    }

    /// How long a request that asks to wait `wait` may take before the caller gives up on it.
    pub fn timeout(wait: Option<Duration>) -> Duration {
        wait.unwrap_or_default() + WIRE_SLACK
    }

    /// What to do after `answer` (`None`: no answer within `timeout`) to a request sent at
    /// `sent_at`; `owner_known`: whether this node's group state names an owner of the name.
    pub fn answer(
        &mut self,
        now: Instant,
        sent_at: Instant,
        timeout: Duration,
        answer: Option<Answer>,
        owner_known: bool,
    ) -> Next {
        let failure = match answer {
            Some(Answer::Granted {
                token,
                lease_ms,
                waited_us,
            }) => {
                let waited = Duration::from_micros(waited_us);
                let start = self.holdings.granted_at(sent_at, waited);
                // A grant whose request was held up on the way (a paused owner, say) may come
                // with so little of its lease left, as this node must count it, that it would
                // be lost before a renewal could come back. Asking again gives it back: the
                // owner grants afresh, or queues the caller. After a backoff, as after any
                // answer that came too late: an owner whose grants keep arriving unusable is
                // asked at the backoff's pace, not the round trip's.
                if self
                    .holdings
                    .usable(now, self.holdings.valid_until(start, lease_ms))
                {
                    return Next::Granted {
                        token,
                        sent_at: start,
                        lease_ms,
                    };
                }
                Some(Failure::Unreachable {
                    after: now.saturating_duration_since(sent_at),
                })
            }
            Some(Answer::Busy) => return Next::Busy,
            Some(Answer::TimedOut) => None,
            // The slot is moving, or its owner's entitlement lapsed: ask again.
            Some(Answer::NotOwner | Answer::Moved { .. }) => Some(Failure::Unavailable),
            None if !owner_known => Some(Failure::Unavailable),
            _ => Some(Failure::Unreachable { after: timeout }),
        };
        let expired = match self.mode {
            Mode::Try => now.saturating_duration_since(self.started) >= TRY_FOR,
            Mode::For(deadline) => now >= deadline,
            Mode::Forever => false,
        };
        if expired {
            return Next::GaveUp {
                failure: failure.filter(|_| self.mode == Mode::Try),
                // The owner answered and holds nothing for us: no need to withdraw. `Cancelled`
                // says it took an earlier request of ours for this one, which it may hold.
                withdraw: matches!(
                    answer,
                    None | Some(Answer::Granted { .. } | Answer::Cancelled)
                ),
            };
        }
        match failure {
            Some(failure) => {
                let after = self.backoff;
                self.backoff = (self.backoff * 2).min(Duration::from_millis(250));
                Next::Retry { after, failure }
            }
            None => Next::Again,
        }
    }

    /// How long since the acquire started.
    pub fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_fraction_of_a_millisecond_is_asked_for_as_a_wait_not_a_try() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_millis(200);
        let mut attempt = Attempt::new(
            Mode::For(deadline),
            t0,
            HoldingsConfig {
                lease: Duration::from_secs(15),
                margin: Duration::from_secs(1),
                drift_permille: 10,
            },
        );
        assert_eq!(Attempt::wait_ms(attempt.wait(t0)), 200);
        // The owner's wait ended a little before the caller's (its clock read earlier).
        let now = deadline - Duration::from_micros(300);
        let timeout = Attempt::timeout(attempt.wait(t0));
        let next = attempt.answer(now, t0, timeout, Some(Answer::TimedOut), true);
        assert_eq!(next, Next::Again);
        assert_eq!(Attempt::wait_ms(attempt.wait(now)), 1, "a wait, not a try");
        let next = attempt.answer(deadline, now, timeout, Some(Answer::TimedOut), true);
        assert_eq!(
            next,
            Next::GaveUp {
                failure: None,
                withdraw: false
            }
        );
        assert_eq!(Attempt::wait_ms(None), 0);
    }

    /// Found by the lock simulator (`planned_moves_to_a_node_that_applies_them_late_...`): an
    /// acquire that reached a paused owner 0.69 s after it was sent was granted 922 ms there,
    /// but the caller must count the lease from its send time; it was declared lost 10 ms
    /// after it was held, before its first renewal came back.
    #[test]
    fn a_grant_too_short_to_renew_is_given_back_by_asking_again_after_a_backoff() {
        let t0 = Instant::now();
        let holdings = HoldingsConfig {
            lease: Duration::from_secs(1),
            margin: Duration::from_millis(200),
            drift_permille: 20,
        };
        let mut attempt = Attempt::new(Mode::Forever, t0, holdings);
        let granted = Some(Answer::Granted {
            token: 7,
            lease_ms: 922,
            waited_us: 77_000,
        });
        let timeout = Attempt::timeout(attempt.wait(t0));
        let late = t0 + Duration::from_millis(770);
        let slow = Failure::Unreachable {
            after: Duration::from_millis(770),
        };
        assert_eq!(
            attempt.answer(late, t0, timeout, granted.clone(), true),
            Next::Retry {
                after: Duration::from_millis(5),
                failure: slow
            }
        );
        // Late again: the backoff grows, as after any slow answer.
        assert_eq!(
            attempt.answer(late, t0, timeout, granted.clone(), true),
            Next::Retry {
                after: Duration::from_millis(10),
                failure: slow
            }
        );
        let prompt = t0 + Duration::from_millis(100);
        assert!(matches!(
            attempt.answer(prompt, t0, timeout, granted.clone(), true),
            Next::Granted { token: 7, .. }
        ));
        // A caller whose time is up withdraws the grant it will not use.
        let mut attempt = Attempt::new(Mode::For(late), t0, holdings);
        assert_eq!(
            attempt.answer(late, t0, timeout, granted, true),
            Next::GaveUp {
                failure: None,
                withdraw: true
            }
        );
    }

    /// `Cancelled` answers a request the owner took for an earlier one of the same guard, a
    /// grant or a wait it may still hold: a caller that gives up then withdraws, and requests
    /// are numbered so that the owner can tell.
    #[test]
    fn requests_are_numbered_and_a_caller_told_cancelled_withdraws_when_it_gives_up() {
        let t0 = Instant::now();
        let holdings = HoldingsConfig {
            lease: Duration::from_secs(1),
            margin: Duration::from_millis(200),
            drift_permille: 20,
        };
        let deadline = t0 + Duration::from_millis(500);
        let mut attempt = Attempt::new(Mode::For(deadline), t0, holdings);
        assert_eq!((attempt.number(), attempt.number()), (1, 2));
        let timeout = Attempt::timeout(attempt.wait(t0));
        assert_eq!(
            attempt.answer(deadline, t0, timeout, Some(Answer::Cancelled), true),
            Next::GaveUp {
                failure: None,
                withdraw: true
            }
        );
    }
}
