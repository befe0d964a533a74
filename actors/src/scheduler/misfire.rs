//! Which due times to fire now, given the next due time on record, the wall clock and the
//! job's misfire policy. No IO, no clock of its own: the node that fires passes `now`.
//!
//! A due time is **on time** when `now` is at most `grace` past it, and **missed** otherwise.
//! On-time times always fire (each is its own fire, in order). Missed ones follow the policy:
//! [`MisfirePolicy::FireOnce`] folds every due time into one fire labelled with the latest,
//! [`MisfirePolicy::CatchUp`] fires the latest `max` of them (oldest first),
//! [`MisfirePolicy::Skip`] fires none of the missed ones. However long the cluster was down,
//! a plan is made: there is no limit of missed times past which a job stops (Kubernetes
//! CronJob's 100), and the work is bounded by what fires, not by what was missed.

use super::config::MisfirePolicy;
use super::schedule::Schedule;

/// Missed times counted one by one at most; beyond, the count is a lower bound.
const COUNT_AT_MOST: u64 = 10_000;

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Due times to fire, oldest first (UTC milliseconds).
    pub fire: Vec<u64>,
    /// Due times passed over (coalesced into a fire, or skipped).
    pub passed: u64,
    /// `passed` is a lower bound: more were missed than were counted.
    pub passed_at_least: bool,
    /// The next due time after the ones handled, if the schedule has one.
    pub next_due: Option<u64>,
}

/// Plans the fires of a job whose next due time on record is `next_due`, at wall time `now`
/// (both UTC milliseconds). Nothing is due yet when `next_due > now`.
pub fn plan(
    schedule: &Schedule,
    policy: MisfirePolicy,
    next_due: u64,
    now: u64,
    grace: u64,
) -> Plan {
    if next_due > now {
        return Plan {
            next_due: Some(next_due),
            ..Plan::default()
        };
    }
    let next = schedule.next_after_ms(now);
    let Some(latest) = schedule
        .latest_at_or_before_ms(now)
        .filter(|l| *l >= next_due)
    else {
        // The record's due time is not on the schedule's grid (the schedule was replaced):
        // treat it as the one due time.
        return decide(policy, &[next_due], 1, false, now, grace, next);
    };
    // The latest few due times, newest first, walking back from `latest`; counting all of
    // them only as far as a bound.
    let keep = match policy {
        MisfirePolicy::CatchUp { max } => (max as usize).max(1),
        _ => 1,
    };
    let mut recent = vec![latest];
    let mut at = latest;
    while recent.len() < keep {
        match at
            .checked_sub(1)
            .and_then(|b| schedule.latest_at_or_before_ms(b))
        {
            Some(prev) if prev >= next_due => {
                recent.push(prev);
                at = prev;
            }
            _ => break,
        }
    }
    recent.reverse();
    let (count, at_least) = count_between(schedule, next_due, latest);
    decide(policy, &recent, count, at_least, now, grace, next)
}

/// Due times in `[from, to]`, counted up to [`COUNT_AT_MOST`].
fn count_between(schedule: &Schedule, from: u64, to: u64) -> (u64, bool) {
    let mut count = 1;
    let mut at = from;
    while count < COUNT_AT_MOST {
        match schedule.next_after_ms(at) {
            Some(next) if next <= to => {
                count += 1;
                at = next;
            }
            _ => return (count, false),
        }
    }
    (count, schedule.next_after_ms(at).is_some_and(|n| n <= to))
}

/// `recent`: the latest due times (oldest first) out of `count` due now.
fn decide(
    policy: MisfirePolicy,
    recent: &[u64],
    count: u64,
    at_least: bool,
    now: u64,
    grace: u64,
    next_due: Option<u64>,
) -> Plan {
    let on_time = |due: &u64| now.saturating_sub(*due) <= grace;
    let fire: Vec<u64> = match policy {
        MisfirePolicy::FireOnce => recent.last().copied().into_iter().collect(),
        MisfirePolicy::CatchUp { .. } => recent.to_vec(),
        MisfirePolicy::Skip => recent.iter().copied().filter(on_time).collect(),
    };
    Plan {
        passed: count - fire.len() as u64,
        passed_at_least: at_least,
        fire,
        next_due,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::scheduler::schedule::from_ms;

    const T0: u64 = 1_800_000_000_000;

    fn every(ms: u64) -> Schedule {
        Schedule::interval(Duration::from_millis(ms), from_ms(T0)).unwrap()
    }

    #[test]
    fn an_on_time_due_time_fires_under_every_policy() {
        for policy in [
            MisfirePolicy::FireOnce,
            MisfirePolicy::CatchUp { max: 5 },
            MisfirePolicy::Skip,
        ] {
            let p = plan(&every(200), policy, T0 + 200, T0 + 205, 1000);
            assert_eq!(p.fire, [T0 + 200], "{policy:?}");
            assert_eq!((p.passed, p.next_due), (0, Some(T0 + 400)), "{policy:?}");
        }
    }

    #[test]
    fn nothing_is_due_before_its_time() {
        let p = plan(
            &every(200),
            MisfirePolicy::FireOnce,
            T0 + 200,
            T0 + 100,
            1000,
        );
        assert!(p.fire.is_empty());
        assert_eq!(p.next_due, Some(T0 + 200));
    }

    #[test]
    fn missed_times_follow_the_policy() {
        // Down from T0 + 200 to T0 + 10_050: 50 due times passed.
        let (due, now, grace) = (T0 + 200, T0 + 10_050, 100);
        let once = plan(&every(200), MisfirePolicy::FireOnce, due, now, grace);
        assert_eq!(once.fire, [T0 + 10_000]);
        assert_eq!((once.passed, once.next_due), (49, Some(T0 + 10_200)));
        let catch_up = plan(
            &every(200),
            MisfirePolicy::CatchUp { max: 3 },
            due,
            now,
            grace,
        );
        assert_eq!(catch_up.fire, [T0 + 9_600, T0 + 9_800, T0 + 10_000]);
        assert_eq!(catch_up.passed, 47);
        // T0 + 10_000 is 50 ms old: on time, so it fires even under Skip.
        let skip = plan(&every(200), MisfirePolicy::Skip, due, now, grace);
        assert_eq!((skip.fire, skip.passed), (vec![T0 + 10_000], 49));
        let skip_late = plan(&every(200), MisfirePolicy::Skip, due, now + 100, grace);
        assert_eq!((skip_late.fire, skip_late.passed), (vec![], 50));
    }

    #[test]
    fn a_cluster_back_after_a_year_still_plans_its_jobs() {
        let year = 365 * 24 * 3600 * 1000;
        let p = plan(
            &every(200),
            MisfirePolicy::FireOnce,
            T0 + 200,
            T0 + year,
            1000,
        );
        assert_eq!(p.fire, [T0 + year]);
        assert!(p.passed_at_least && p.passed >= COUNT_AT_MOST - 1);
        assert_eq!(p.next_due, Some(T0 + year + 200));
        let cron = Schedule::cron("*/1 * * * * *", "Europe/Berlin").unwrap();
        let p = plan(
            &cron,
            MisfirePolicy::CatchUp { max: 2 },
            T0,
            T0 + year,
            1000,
        );
        assert_eq!(p.fire, [T0 + year - 1000, T0 + year]);
    }

    #[test]
    fn a_due_time_off_the_grid_fires_once() {
        // The record says T0 + 50 (the job was replaced by one on another grid).
        let p = plan(&every(200), MisfirePolicy::Skip, T0 + 50, T0 + 60, 1000);
        assert_eq!(p.fire, [T0 + 50]);
        assert_eq!(p.next_due, Some(T0 + 200));
    }
}
