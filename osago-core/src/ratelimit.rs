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

impl RateLimit {
    /// Milliseconds between calls at the sustained rate (0: no limit).
    pub fn emission_interval_ms(&self) -> u64 {
        if !self.per_second.is_finite() || self.per_second <= 0.0 {
            return 0;
        }
        ((1000.0 / self.per_second).round() as u64).max(1)
    }
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
    pub tat_ms: u64,
    /// When not allowed, milliseconds until the call would be (0 otherwise).
    pub retry_after_ms: u64,
}

/// One GCRA decision, on integer milliseconds.
///
/// - `tat_ms`: the stored TAT, `None` when there is none (first call, or the
///   key expired);
/// - `now_ms`: the current time on the same clock;
/// - `emission_interval_ms`: milliseconds per call (0: everything is allowed);
/// - `burst`: calls admitted at once from idle (0 reads as 1).
///
/// Saturating arithmetic; this exact sequence is what the shared Valkey
/// script runs (`now_ms` from `TIME`, the TAT in one key whose lifetime can be
/// `tat_ms - now_ms`, after which a missing key means the same as an old TAT):
///
/// ```text
/// tat      = max(stored or now, now)
/// new_tat  = tat + interval
/// allow_at = new_tat - interval * burst        (0 if negative)
/// if now < allow_at: denied, keep tat, retry after allow_at - now
/// else:              allowed, store new_tat
/// ```
pub fn gcra_step(
    tat_ms: Option<u64>,
    now_ms: u64,
    emission_interval_ms: u64,
    burst: u32,
) -> GcraDecision {
    let tat = tat_ms.unwrap_or(now_ms).max(now_ms);
    let new_tat = tat.saturating_add(emission_interval_ms);
    let tolerance = emission_interval_ms.saturating_mul(u64::from(burst.max(1)));
    let allow_at = new_tat.saturating_sub(tolerance);
    if now_ms < allow_at {
        GcraDecision {
            allowed: false,
            tat_ms: tat,
            retry_after_ms: allow_at - now_ms,
        }
    } else {
        GcraDecision {
            allowed: true,
            tat_ms: new_tat,
            retry_after_ms: 0,
        }
    }
}
