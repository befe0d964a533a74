//! When a job is due: every so often, by a cron expression in a time zone, or once.
//!
//! Due times are wall-clock instants (UTC milliseconds): a schedule says *when* to fire, never
//! whether a fire already happened (the consensus group's log decides that). Cron expressions
//! go through croner, whose daylight-saving contract is the one cron users expect: a fixed-time
//! job whose time falls into a spring-forward gap runs right after the gap, once in a fall-back
//! overlap; a job with a wildcard or step in its hour keeps its real interval (skips the gap,
//! runs in both passes of the overlap). Zones are IANA names compiled into the binary
//! (chrono-tz), so every node computes the same times whatever its host's tzdata.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::{Deserialize, Serialize};

/// The latest due time a schedule may name: the year 9999, well inside every type involved.
const LATEST_MS: u64 = 253_402_300_799_000;

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("invalid cron expression {expr:?}: {reason} (five fields, or six with seconds first)")]
    InvalidCron {
        /// The expression.
        expr: String,
        /// What the parser said.
        reason: String,
    },
    /// The time zone is not an IANA zone name.
    #[error("unknown time zone {zone:?}: give an IANA name such as \"Europe/Berlin\" or \"UTC\"")]
    UnknownZone {
        /// The name given.
        zone: String,
    },
    /// An interval of zero.
    #[error("an interval schedule needs a period of at least one millisecond")]
    ZeroInterval,
    /// A time before 1970 or after 9999.
    #[error("a due time must lie between 1970 and 9999")]
    OutOfRange,
}

/// When a job is due. Build one with [`Schedule::interval`], [`Schedule::cron`] or
/// [`Schedule::once`].
///
/// # Examples
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use colony_actors::scheduler::Schedule;
///
/// let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
/// let every_five_minutes = Schedule::interval(Duration::from_secs(300), start).unwrap();
/// let times = every_five_minutes.next_run_times(start, 2);
/// assert_eq!(times, [start + Duration::from_secs(300), start + Duration::from_secs(600)]);
///
/// let nightly = Schedule::cron("0 30 2 * * *", "Europe/Berlin").unwrap();
/// assert_eq!(nightly.next_run_times(start, 3).len(), 3);
/// assert!(Schedule::cron("0 61 * * *", "UTC").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule(Kind);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Kind {
    Interval { every_ms: u64, first_ms: u64 },
    Cron { expr: String, zone: String },
    Once { at_ms: u64 },
}

/// For people: `every 5 s from 2026-01-01T00:00:00Z`, `cron 0 30 2 * * * in Europe/Berlin`,
/// `once at 2026-06-01T12:00:00Z`.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use colony_actors::scheduler::{Schedule, from_ms};
/// let s = Schedule::interval(Duration::from_secs(90), from_ms(1_767_225_600_000)).unwrap();
/// assert_eq!(s.to_string(), "every 90 s from 2026-01-01T00:00:00Z");
/// let s = Schedule::cron("0 0 9 * * MON-FRI", "Europe/Berlin").unwrap();
/// assert_eq!(s.to_string(), "cron 0 0 9 * * MON-FRI in Europe/Berlin");
/// ```
impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let utc = |ms: u64| match i64::try_from(ms)
            .ok()
            .and_then(DateTime::from_timestamp_millis)
        {
            Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            None => format!("{ms} ms"),
        };
        match &self.0 {
            Kind::Interval { every_ms, first_ms } => {
                let every = match *every_ms {
                    ms if ms % 3_600_000 == 0 => format!("{} h", ms / 3_600_000),
                    ms if ms % 60_000 == 0 => format!("{} min", ms / 60_000),
                    ms if ms % 1_000 == 0 => format!("{} s", ms / 1_000),
                    ms => format!("{ms} ms"),
                };
                write!(f, "every {every} from {}", utc(*first_ms))
            }
            Kind::Cron { expr, zone } => write!(f, "cron {expr} in {zone}"),
            Kind::Once { at_ms } => write!(f, "once at {}", utc(*at_ms)),
        }
    }
}

impl Schedule {
    /// Due at `first_run`, then every `every` after it (measured from `first_run`, so a late
    /// fire does not shift the ones after it).
    ///
    /// # Errors
    /// [`ScheduleError::ZeroInterval`], or [`ScheduleError::OutOfRange`] for a first run outside
    /// 1970–9999.
    pub fn interval(every: Duration, first_run: SystemTime) -> Result<Self, ScheduleError> {
        let every_ms = u64::try_from(every.as_millis()).map_err(|_| ScheduleError::OutOfRange)?;
        if every_ms == 0 {
            return Err(ScheduleError::ZeroInterval);
        }
        Ok(Schedule(Kind::Interval {
            every_ms,
            first_ms: to_ms(first_run)?,
        }))
    }

    /// Due whenever the cron expression `expr` matches in time zone `zone` (an IANA name).
    /// Five fields (minute first) or six (second first); croner's extensions (`L`, `#`, `W`)
    /// work.
    ///
    /// # Errors
    /// [`ScheduleError::InvalidCron`] or [`ScheduleError::UnknownZone`].
    pub fn cron(expr: &str, zone: &str) -> Result<Self, ScheduleError> {
        let schedule = Schedule(Kind::Cron {
            expr: expr.to_owned(),
            zone: zone.to_owned(),
        });
        schedule.check()?;
        Ok(schedule)
    }

    /// Due once, at `at`.
    ///
    /// # Errors
    /// [`ScheduleError::OutOfRange`] for a time outside 1970–9999.
    pub fn once(at: SystemTime) -> Result<Self, ScheduleError> {
        Ok(Schedule(Kind::Once { at_ms: to_ms(at)? }))
    }

    /// Checks a schedule that came from elsewhere (a stored record, a peer): the same checks
    /// as its constructor.
    ///
    /// # Errors
    /// What the constructor would have refused.
    pub fn check(&self) -> Result<(), ScheduleError> {
        match &self.0 {
            Kind::Interval { every_ms, first_ms } => {
                if *every_ms == 0 {
                    return Err(ScheduleError::ZeroInterval);
                }
                if *first_ms > LATEST_MS {
                    return Err(ScheduleError::OutOfRange);
                }
            }
            Kind::Cron { expr, zone } => {
                parse(expr, zone)?;
            }
            Kind::Once { at_ms } => {
                if *at_ms > LATEST_MS {
                    return Err(ScheduleError::OutOfRange);
                }
            }
        }
        Ok(())
    }

    /// The first due time of a job scheduled at `now_ms`: a one-off's time even when it has
    /// passed (so it still runs, as its misfire policy says), else the first at or after
    /// `now_ms` (a new job owes nothing for the times before it existed).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use colony_actors::scheduler::{Schedule, from_ms};
    ///
    /// let every = Schedule::interval(Duration::from_millis(100), from_ms(1_000)).unwrap();
    /// assert_eq!(every.first_due_ms(1_250), Some(1_300));
    /// assert_eq!(every.first_due_ms(1_300), Some(1_300));
    /// let once = Schedule::once(from_ms(1_000)).unwrap();
    /// assert_eq!(once.first_due_ms(5_000), Some(1_000));
    /// ```
    pub fn first_due_ms(&self, now_ms: u64) -> Option<u64> {
        match &self.0 {
            Kind::Once { at_ms } => Some(*at_ms),
            _ => self.next_after_ms(now_ms.saturating_sub(1)),
        }
    }

    /// The first due time strictly after `after_ms` (UTC milliseconds), if there is one.
    pub fn next_after_ms(&self, after_ms: u64) -> Option<u64> {
        let next = match &self.0 {
            Kind::Interval { every_ms, first_ms } => {
                if *first_ms > after_ms {
                    *first_ms
                } else {
                    let periods = (after_ms - first_ms) / every_ms + 1;
                    first_ms.checked_add(periods.checked_mul(*every_ms)?)?
                }
            }
            Kind::Once { at_ms } => (*at_ms > after_ms).then_some(*at_ms)?,
            Kind::Cron { expr, zone } => {
                let (cron, after) = zoned(expr, zone, after_ms)?;
                ms_of(cron.find_next_occurrence(&after, false).ok()?)?
            }
        };
        (next <= LATEST_MS).then_some(next)
    }

    /// The latest due time at or before `at_ms`, if there is one.
    pub fn latest_at_or_before_ms(&self, at_ms: u64) -> Option<u64> {
        match &self.0 {
            Kind::Interval { every_ms, first_ms } => {
                let since = at_ms.checked_sub(*first_ms)?;
                Some(first_ms + since / every_ms * every_ms)
            }
            Kind::Once { at_ms: due } => (*due <= at_ms).then_some(*due),
            Kind::Cron { expr, zone } => {
                let (cron, at) = zoned(expr, zone, at_ms)?;
                ms_of(cron.find_previous_occurrence(&at, true).ok()?)
            }
        }
    }

    /// The first due time strictly after `after`.
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        let after = to_ms(after).ok()?;
        self.next_after_ms(after).map(from_ms)
    }

    /// The next `n` due times strictly after `from` (fewer if the schedule ends).
    pub fn next_run_times(&self, from: SystemTime, n: usize) -> Vec<SystemTime> {
        let Ok(mut at) = to_ms(from) else {
            return Vec::new();
        };
        let mut times = Vec::with_capacity(n.min(1024));
        while times.len() < n {
            let Some(next) = self.next_after_ms(at) else {
                break;
            };
            times.push(from_ms(next));
            at = next;
        }
        times
    }
}

fn parse(expr: &str, zone: &str) -> Result<(Cron, Tz), ScheduleError> {
    let cron = Cron::from_str(expr).map_err(|e| ScheduleError::InvalidCron {
        expr: expr.to_owned(),
        reason: e.to_string(),
    })?;
    let tz = Tz::from_str(zone).map_err(|_| ScheduleError::UnknownZone {
        zone: zone.to_owned(),
    })?;
    Ok((cron, tz))
}

/// [`parse`], remembering the last expression parsed on this thread: planning walks one
/// schedule many times over, and parsing costs more than the walk.
fn parsed(expr: &str, zone: &str) -> Option<(Cron, Tz)> {
    type Last = Option<(String, String, Cron, Tz)>;
    thread_local! {
        static LAST: std::cell::RefCell<Last> = const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| {
        if let Some((e, z, cron, tz)) = last.as_ref()
            && e == expr
            && z == zone
        {
            return Some((cron.clone(), *tz));
        }
        let (cron, tz) = parse(expr, zone).ok()?;
        *last = Some((expr.to_owned(), zone.to_owned(), cron.clone(), tz));
        Some((cron, tz))
    })
}

/// The parsed expression, and `ms` as a time in its zone; `None` for a record that does not
/// parse (checked when scheduled) or a time out of range.
fn zoned(expr: &str, zone: &str, ms: u64) -> Option<(Cron, DateTime<Tz>)> {
    let (cron, tz) = parsed(expr, zone)?;
    let at = Utc
        .timestamp_millis_opt(i64::try_from(ms).ok()?)
        .single()?
        .with_timezone(&tz);
    Some((cron, at))
}

fn ms_of(t: DateTime<Tz>) -> Option<u64> {
    u64::try_from(t.timestamp_millis()).ok()
}

/// `t` as UTC milliseconds.
///
/// # Errors
/// [`ScheduleError::OutOfRange`] before 1970 or after 9999.
pub fn to_ms(t: SystemTime) -> Result<u64, ScheduleError> {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| ScheduleError::OutOfRange)?
        .as_millis();
    u64::try_from(ms)
        .ok()
        .filter(|ms| *ms <= LATEST_MS)
        .ok_or(ScheduleError::OutOfRange)
}

/// UTC milliseconds as a time.
pub fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// UTC milliseconds of `y-m-d h:mi:s` UTC.
    fn utc(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> u64 {
        Utc.with_ymd_and_hms(y, m, d, h, mi, s)
            .unwrap()
            .timestamp_millis() as u64
    }

    fn next(s: &Schedule, from: u64, n: usize) -> Vec<u64> {
        s.next_run_times(from_ms(from), n)
            .into_iter()
            .map(|t| to_ms(t).unwrap())
            .collect()
    }

    #[test]
    fn cron_times_across_daylight_saving_changes() {
        // (expression, zone, from (UTC), expected due times (UTC)).
        let table: &[(&str, &str, u64, &[u64])] = &[
            // Europe/Berlin springs forward at 02:00 on 2026-03-29: a fixed 02:30 job runs
            // right after the gap, at 03:00 CEST (01:00Z).
            (
                "30 2 * * *",
                "Europe/Berlin",
                utc(2026, 3, 28, 0, 0, 0),
                &[
                    utc(2026, 3, 28, 1, 30, 0),
                    utc(2026, 3, 29, 1, 0, 0),
                    utc(2026, 3, 30, 0, 30, 0),
                ],
            ),
            // ...and falls back at 03:00 on 2026-10-25: the fixed 02:30 job runs once.
            (
                "30 2 * * *",
                "Europe/Berlin",
                utc(2026, 10, 24, 0, 0, 0),
                &[
                    utc(2026, 10, 24, 0, 30, 0),
                    utc(2026, 10, 25, 0, 30, 0),
                    utc(2026, 10, 26, 1, 30, 0),
                ],
            ),
            // A job every 30 minutes (seconds field first) keeps its real interval: no fire
            // inside the gap...
            (
                "0 */30 * * * *",
                "Europe/Berlin",
                utc(2026, 3, 29, 0, 0, 0),
                &[
                    utc(2026, 3, 29, 0, 30, 0),
                    utc(2026, 3, 29, 1, 0, 0),
                    utc(2026, 3, 29, 1, 30, 0),
                ],
            ),
            // ...and both passes of the repeated hour.
            (
                "0 */30 * * * *",
                "Europe/Berlin",
                utc(2026, 10, 24, 23, 30, 0),
                &[
                    utc(2026, 10, 25, 0, 0, 0),
                    utc(2026, 10, 25, 0, 30, 0),
                    utc(2026, 10, 25, 1, 0, 0),
                    utc(2026, 10, 25, 1, 30, 0),
                    utc(2026, 10, 25, 2, 0, 0),
                ],
            ),
            // America/New_York falls back at 02:00 on 2026-11-01: 01:30 happens twice, the
            // job runs once (the first pass, EDT).
            (
                "30 1 * * *",
                "America/New_York",
                utc(2026, 10, 31, 12, 0, 0),
                &[
                    utc(2026, 11, 1, 5, 30, 0),
                    utc(2026, 11, 2, 6, 30, 0),
                    utc(2026, 11, 3, 6, 30, 0),
                ],
            ),
            // ...and springs forward at 02:00 on 2026-03-08: 02:30 runs at 03:00 EDT.
            (
                "30 2 * * *",
                "America/New_York",
                utc(2026, 3, 7, 12, 0, 0),
                &[
                    utc(2026, 3, 8, 7, 0, 0),
                    utc(2026, 3, 9, 6, 30, 0),
                    utc(2026, 3, 10, 6, 30, 0),
                ],
            ),
            // Seconds.
            (
                "*/15 * * * * *",
                "UTC",
                utc(2026, 1, 1, 0, 0, 0),
                &[
                    utc(2026, 1, 1, 0, 0, 15),
                    utc(2026, 1, 1, 0, 0, 30),
                    utc(2026, 1, 1, 0, 0, 45),
                ],
            ),
        ];
        for (expr, zone, from, expected) in table {
            let s = Schedule::cron(expr, zone).unwrap();
            assert_eq!(
                next(&s, *from, expected.len()),
                *expected,
                "{expr:?} in {zone}"
            );
        }
    }

    #[test]
    fn a_time_inside_a_second_waits_for_the_next_matching_second() {
        let s = Schedule::cron("* * * * * *", "UTC").unwrap();
        let from = utc(2026, 1, 1, 0, 0, 0) + 500;
        assert_eq!(next(&s, from, 1), [utc(2026, 1, 1, 0, 0, 1)]);
    }

    #[test]
    fn intervals_count_from_the_first_run() {
        let first = utc(2026, 1, 1, 0, 0, 0);
        let s = Schedule::interval(Duration::from_millis(200), from_ms(first)).unwrap();
        assert_eq!(next(&s, first - 1, 2), [first, first + 200]);
        assert_eq!(next(&s, first, 2), [first + 200, first + 400]);
        // Late by two and a half periods: the next time is still on the grid.
        assert_eq!(next(&s, first + 500, 1), [first + 600]);
    }

    #[test]
    fn the_latest_due_time_looks_back_exactly() {
        let first = utc(2026, 1, 1, 0, 0, 0);
        let s = Schedule::interval(Duration::from_millis(200), from_ms(first)).unwrap();
        assert_eq!(s.latest_at_or_before_ms(first - 1), None);
        assert_eq!(s.latest_at_or_before_ms(first + 399), Some(first + 200));
        assert_eq!(s.latest_at_or_before_ms(first + 400), Some(first + 400));
        let c = Schedule::cron("30 2 * * *", "Europe/Berlin").unwrap();
        // Before the gap-shifted 03:00 CEST fire of 2026-03-29, the latest was the day before.
        assert_eq!(
            c.latest_at_or_before_ms(utc(2026, 3, 29, 0, 59, 0)),
            Some(utc(2026, 3, 28, 1, 30, 0))
        );
    }

    #[test]
    fn once_is_due_once() {
        let at = utc(2026, 6, 1, 12, 0, 0);
        let s = Schedule::once(from_ms(at)).unwrap();
        assert_eq!(next(&s, at - 1, 3), [at]);
        assert!(next(&s, at, 1).is_empty());
    }

    #[test]
    fn bad_schedules_are_refused_with_what_is_wrong() {
        let bad = Schedule::cron("0 61 * * *", "UTC").unwrap_err();
        assert!(
            matches!(&bad, ScheduleError::InvalidCron { expr, .. } if expr == "0 61 * * *"),
            "{bad}"
        );
        let zone = Schedule::cron("0 0 * * *", "Mars/Olympus_Mons").unwrap_err();
        assert_eq!(
            zone,
            ScheduleError::UnknownZone {
                zone: "Mars/Olympus_Mons".into()
            }
        );
        assert_eq!(
            Schedule::interval(Duration::ZERO, SystemTime::now()),
            Err(ScheduleError::ZeroInterval)
        );
        assert_eq!(
            Schedule::once(UNIX_EPOCH - Duration::from_secs(1)),
            Err(ScheduleError::OutOfRange)
        );
        // A stored record is checked the same way, and never panics a node.
        let stored = Schedule(Kind::Cron {
            expr: "not cron".into(),
            zone: "UTC".into(),
        });
        assert!(stored.check().is_err());
        assert_eq!(stored.next_after_ms(0), None);
        let huge = Schedule(Kind::Interval {
            every_ms: u64::MAX,
            first_ms: 0,
        });
        assert_eq!(huge.next_after_ms(1), None);
    }
}
