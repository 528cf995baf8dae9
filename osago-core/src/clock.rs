//! The wall clock, injected so timestamps are testable.
//!
//! Deadlines and timers use `tokio::time` (outside this crate); this clock
//! only stamps events (`occurred_at`, `deadline_at`) and dates validation.

use std::fmt;
use std::sync::Mutex;

use chrono::{DateTime, Duration, NaiveDate, SubsecRound, Utc};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;

    /// Today's date in Moscow (UTC+3 all year since 2014): the date a
    /// buyer means by "today" and "tomorrow", and OSAGO's ages and start
    /// dates are counted in. Between 21:00 and 24:00 UTC it is already
    /// the next day.
    fn today(&self) -> NaiveDate {
        (self.now() + chrono::Duration::hours(MOSCOW_UTC_OFFSET_HOURS)).date_naive()
    }
}

/// Moscow's offset from UTC, in hours (no daylight saving since 2014).
pub const MOSCOW_UTC_OFFSET_HOURS: i64 = 3;

/// The system clock, at microsecond precision (what databases keep, so a
/// stamp reads back exactly as it was written).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock stopped at `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(now),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().expect("clock lock");
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().expect("clock lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_is_the_moscow_date() {
        let evening = DateTime::parse_from_rfc3339("2026-11-30T20:59:59Z").unwrap();
        let clock = ManualClock::new(evening.with_timezone(&Utc));
        assert_eq!(
            clock.today(),
            NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()
        );
        let late = DateTime::parse_from_rfc3339("2026-11-30T21:00:00Z").unwrap();
        let clock = ManualClock::new(late.with_timezone(&Utc));
        assert_eq!(clock.today(), NaiveDate::from_ymd_opt(2026, 12, 1).unwrap());
    }
}
