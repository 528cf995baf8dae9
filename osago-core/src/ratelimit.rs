//! Rate limiting: the GCRA arithmetic shared by every limiter (local
//! outbound quotas, the shared quota script, the inbound B2C limit), and the
//! limit a [`RateLimiter`](crate::ports::RateLimiter) enforces.

use serde::{Deserialize, Serialize};

/// A rate with a burst.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Sustained calls per second (zero or less: no limit).
    pub per_second: f64,
    /// Calls admitted at once from idle (at least 1).
    pub burst: u32,
}

/// A limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The call may go.
    Allowed,
    /// Over the limit: try again after this long.
    Limited {
        /// How long until a call would be admitted.
        retry_after: std::time::Duration,
    },
}

/// What one [`gcra_step`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraDecision {
    /// The call may go now.
    pub allowed: bool,
    /// The TAT to keep: moved on when allowed, unchanged when not.
    pub tat: u64,
    /// When not allowed, the time until the call would be (0 otherwise).
    pub retry_after: u64,
}

/// One GCRA decision, on integer time units (every limiter of ours counts
/// microseconds, so rates are kept as set: 450/s is one call per 2 222 µs,
/// and rates above 1 000/s work).
///
/// - `tat`: the stored TAT, `None` when there is none (first call, or the
///   key expired);
/// - `now`: the current time on the same clock;
/// - `interval`: time per call (0: everything is allowed);
/// - `burst`: calls admitted at once from idle (0 reads as 1).
///
/// Saturating arithmetic; this exact sequence is what the shared Valkey
/// script runs (`now` from `TIME`, the TAT in one key whose lifetime can be
/// `tat - now`, after which a missing key means the same as an old TAT):
///
/// ```text
/// tat      = max(stored or now, now)
/// new_tat  = tat + interval
/// allow_at = new_tat - interval * burst        (0 if negative)
/// if now < allow_at: denied, keep tat, retry after allow_at - now
/// else:              allowed, store new_tat
/// ```
pub fn gcra_step(tat: Option<u64>, now: u64, interval: u64, burst: u32) -> GcraDecision {
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat.saturating_add(interval);
    let tolerance = interval.saturating_mul(u64::from(burst.max(1)));
    let allow_at = new_tat.saturating_sub(tolerance);
    if now < allow_at {
        GcraDecision {
            allowed: false,
            tat,
            retry_after: allow_at - now,
        }
    } else {
        GcraDecision {
            allowed: true,
            tat: new_tat,
            retry_after: 0,
        }
    }
}

impl RateLimit {
    /// Microseconds between calls at the sustained rate (0: no limit); every
    /// limiter counts in microseconds so that rates such as 450/s are kept
    /// within 0.05 %, not rounded to a whole millisecond.
    pub fn emission_interval_us(&self) -> u64 {
        if !self.per_second.is_finite() || self.per_second <= 0.0 {
            return 0;
        }
        ((1_000_000.0 / self.per_second).round() as u64).max(1)
    }
}

/// What one [`gcra_take`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraBlock {
    /// Calls granted now, at most the `want` asked for (0: none).
    pub granted: u32,
    /// The TAT to keep (moved on by `granted` intervals).
    pub tat: u64,
    /// When nothing was granted, the time until one call would be.
    pub retry_after: u64,
}

/// GCRA taking up to `want` calls at once (a block), on integer time units
/// (the shared quota uses microseconds): as many as the burst allows now,
/// at least one when any is allowed. With `want == 1` it decides exactly as
/// [`gcra_step`].
///
/// ```text
/// tat       = max(stored or now, now)
/// available = (now + interval * burst - tat) / interval   (whole calls, >= 0)
/// granted   = min(want, available)
/// if granted == 0: keep tat, retry after tat + interval - interval * burst - now
/// else:            store tat + granted * interval
/// ```
///
/// This exact sequence is what the shared Valkey script runs.
pub fn gcra_take(tat: Option<u64>, now: u64, interval: u64, burst: u32, want: u32) -> GcraBlock {
    if interval == 0 {
        return GcraBlock {
            granted: want,
            tat: now,
            retry_after: 0,
        };
    }
    let tat = tat.unwrap_or(now).max(now);
    let horizon = now.saturating_add(interval.saturating_mul(u64::from(burst.max(1))));
    let available = horizon.saturating_sub(tat) / interval;
    let granted = u32::try_from(available.min(u64::from(want))).unwrap_or(want);
    if granted == 0 {
        return GcraBlock {
            granted: 0,
            tat,
            retry_after: tat.saturating_add(interval).saturating_sub(horizon).max(1),
        };
    }
    GcraBlock {
        granted,
        tat: tat.saturating_add(interval.saturating_mul(u64::from(granted))),
        retry_after: 0,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn interval_in_microseconds_keeps_odd_rates() {
        let limit = RateLimit {
            per_second: 300.0,
            burst: 1,
        };
        assert_eq!(limit.emission_interval_us(), 3333);
        let fast = RateLimit {
            per_second: 450.0,
            burst: 1,
        };
        assert_eq!(fast.emission_interval_us(), 2222);
        let faster = RateLimit {
            per_second: 5_000.0,
            burst: 1,
        };
        assert_eq!(faster.emission_interval_us(), 200);
        let off = RateLimit {
            per_second: 0.0,
            burst: 1,
        };
        assert_eq!(off.emission_interval_us(), 0);
    }

    #[test]
    fn a_block_takes_the_burst_then_one_per_interval() {
        let first = gcra_take(None, 1_000, 10, 5, 8);
        assert_eq!(first.granted, 5);
        assert_eq!(first.tat, 1_050);
        let denied = gcra_take(Some(first.tat), 1_000, 10, 5, 8);
        assert_eq!(denied.granted, 0);
        assert_eq!(denied.retry_after, 10);
        assert_eq!(denied.tat, first.tat);
        let later = gcra_take(Some(first.tat), 1_025, 10, 5, 8);
        assert_eq!(later.granted, 2);
        assert_eq!(later.tat, 1_070);
    }

    proptest! {
        /// One call at a time, `gcra_take` decides as `gcra_step`.
        #[test]
        fn take_one_is_gcra_step(
            tat in proptest::option::of(0u64..10_000),
            now in 0u64..10_000,
            interval in 1u64..500,
            burst in 0u32..20,
        ) {
            let step = gcra_step(tat, now, interval, burst);
            let take = gcra_take(tat, now, interval, burst, 1);
            prop_assert_eq!(step.allowed, take.granted == 1);
            prop_assert_eq!(step.tat, take.tat);
            prop_assert_eq!(step.retry_after, take.retry_after);
        }

        /// However the calls are grouped into blocks and spread in time,
        /// no window of length `t` grants more than `burst + t / interval`.
        #[test]
        fn blocks_never_exceed_rate_plus_burst(
            interval in 1u64..100,
            burst in 1u32..20,
            asks in proptest::collection::vec((0u64..200, 1u32..30), 1..60),
        ) {
            let mut tat = None;
            let mut now = 0;
            let mut granted_at = Vec::new();
            for (gap, want) in asks {
                now += gap;
                let block = gcra_take(tat, now, interval, burst, want);
                prop_assert!(block.granted <= want);
                if block.granted == 0 {
                    prop_assert!(block.retry_after > 0);
                }
                tat = Some(block.tat);
                granted_at.extend(std::iter::repeat_n(now, block.granted as usize));
            }
            for (i, start) in granted_at.iter().enumerate() {
                for (j, end) in granted_at.iter().enumerate().skip(i) {
                    let calls = (j - i + 1) as u64;
                    prop_assert!(calls <= u64::from(burst) + (end - start) / interval);
                }
            }
        }
    }
}
