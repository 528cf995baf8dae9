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

    /// Today's date (UTC).
    fn today(&self) -> NaiveDate {
        self.now().date_naive()
    }
}

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
