//! Exponential backoff with full jitter, bounded by attempts and a deadline.
//!
//! The delay before retry number `attempt` (zero-based: 0 is the first
//! retry, after the first call failed) is drawn uniformly from
//! `[0, min(cap, base * 2^attempt)]` ("full jitter", which spreads the
//! retries of many clients that failed together). A server's Retry-After
//! hint raises the delay, never lowers it. No retry is scheduled at or past
//! the deadline, and none after `max_attempts` calls in total.
//!
//! Randomness comes from an injectable [`Jitter`] source, so tests pin it.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// A source of uniform numbers in `[0, 1)`.
pub trait Jitter: Send + Sync {
    /// The next number in `[0, 1)`. Values outside are clamped, NaN reads as 0.
    fn unit(&self) -> f64;
}

impl<F> Jitter for F
where
    F: Fn() -> f64 + Send + Sync,
{
    fn unit(&self) -> f64 {
        self()
    }
}

/// The default [`Jitter`]: a counter hashed with a randomly keyed SipHash
/// ([`RandomState`]), so no `rand` dependency is needed. Not for
/// cryptography; plenty for spreading retries.
#[derive(Debug, Default)]
pub struct RandomJitter {
    state: RandomState,
    counter: AtomicU64,
}

impl RandomJitter {
    /// A source with a fresh random key.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Jitter for RandomJitter {
    fn unit(&self) -> f64 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut hasher = self.state.build_hasher();
        hasher.write_u64(n);
        // The top 53 bits make an evenly spread f64 in [0, 1).
        (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A [`Jitter`] that always answers the same number: for tests, or
/// `FixedJitter(1.0)` to always wait the full ceiling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FixedJitter(pub f64);

impl Jitter for FixedJitter {
    fn unit(&self) -> f64 {
        self.0
    }
}

/// Backoff settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackoffConfig {
    /// The ceiling of the first retry's delay. Default 100 ms.
    pub base: Duration,
    /// The largest ceiling any delay gets. Default 5 s.
    pub cap: Duration,
    /// The most calls in total, the first one included (5: up to 4
    /// retries). Default 5.
    pub max_attempts: u32,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
            max_attempts: 5,
        }
    }
}

/// Exponential backoff with full jitter. Stateless apart from its jitter
/// source: one value serves every call sequence. Cheap to clone.
#[derive(Clone)]
pub struct Backoff {
    config: BackoffConfig,
    jitter: Arc<dyn Jitter>,
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backoff")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Backoff {
    /// A backoff drawing its jitter from a [`RandomJitter`].
    pub fn new(config: BackoffConfig) -> Self {
        Self::with_jitter(config, Arc::new(RandomJitter::new()))
    }

    /// A backoff drawing its jitter from `jitter`.
    pub fn with_jitter(config: BackoffConfig, jitter: Arc<dyn Jitter>) -> Self {
        Self { config, jitter }
    }

    /// Its settings.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// The upper bound of retry `attempt`'s delay: `min(cap, base * 2^attempt)`
    /// (saturating, so a huge `attempt` gives `cap`).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let BackoffConfig { base, cap, .. } = self.config;
        1u32.checked_shl(attempt)
            .and_then(|factor| base.checked_mul(factor))
            .map_or(cap, |delay| delay.min(cap))
    }

    /// A delay for retry `attempt`, uniform in `[0, ceiling(attempt)]`,
    /// ignoring attempts and deadline.
    pub fn jittered(&self, attempt: u32) -> Duration {
        let unit = self.jitter.unit();
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        self.ceiling(attempt).mul_f64(unit)
    }

    /// Whether retry `attempt` (zero-based) is within `max_attempts` calls.
    pub fn allows(&self, attempt: u32) -> bool {
        attempt.saturating_add(1) < self.config.max_attempts
    }

    /// The delay before retry `attempt` (zero-based: 0 after the first call
    /// failed), or `None` when attempts are exhausted or the retry would not
    /// start before `deadline`. Reads the clock.
    pub fn delay(&self, attempt: u32, deadline: Instant) -> Option<Duration> {
        self.next_delay(attempt, None, deadline)
    }

    /// Like [`Backoff::delay`], honouring the server's Retry-After hint: the
    /// delay is `max(jittered, retry_after)`. Reads the clock.
    pub fn next_delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        deadline: Instant,
    ) -> Option<Duration> {
        self.next_delay_at(Instant::now(), attempt, retry_after, deadline)
    }

    /// [`Backoff::next_delay`] at `now`: `None` when attempts are exhausted or
    /// `now + delay >= deadline` (a retry is never scheduled at or past the
    /// deadline).
    pub fn next_delay_at(
        &self,
        now: Instant,
        attempt: u32,
        retry_after: Option<Duration>,
        deadline: Instant,
    ) -> Option<Duration> {
        if !self.allows(attempt) {
            return None;
        }
        let delay = self
            .jittered(attempt)
            .max(retry_after.unwrap_or(Duration::ZERO));
        let at = now.checked_add(delay)?;
        (at < deadline).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(jitter: f64) -> Backoff {
        Backoff::with_jitter(BackoffConfig::default(), Arc::new(FixedJitter(jitter)))
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn defaults_are_documented() {
        let c = BackoffConfig::default();
        assert_eq!(c.base, Duration::from_millis(100));
        assert_eq!(c.cap, Duration::from_secs(5));
        assert_eq!(c.max_attempts, 5);
    }

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let b = backoff(0.0);
        let ms = |n| b.ceiling(n).as_millis();
        assert_eq!(
            (0..8).map(ms).collect::<Vec<_>>(),
            [100, 200, 400, 800, 1600, 3200, 5000, 5000]
        );
        assert_eq!(b.ceiling(31), Duration::from_secs(5));
        assert_eq!(b.ceiling(32), Duration::from_secs(5));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_jitter_values_land_inside_the_bounds() {
        let config = BackoffConfig {
            max_attempts: u32::MAX,
            ..BackoffConfig::default()
        };
        for unit in [0.0, 0.5, 0.999] {
            let b = Backoff::with_jitter(config.clone(), Arc::new(FixedJitter(unit)));
            for attempt in 0..40 {
                let ceiling = b.ceiling(attempt);
                let delay = b.delay(attempt, far()).expect("fits");
                assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
                assert_eq!(delay, ceiling.mul_f64(unit));
            }
        }
        // Full jitter: the lowest draw is no wait at all, the middle is half.
        assert_eq!(backoff(0.0).delay(3, far()), Some(Duration::ZERO));
        assert_eq!(
            backoff(0.5).delay(3, far()),
            Some(Duration::from_millis(400))
        );
        assert_eq!(
            backoff(0.999).delay(0, far()),
            Some(Duration::from_micros(99_900))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn random_delays_stay_within_bounds_and_spread() {
        let config = BackoffConfig {
            max_attempts: u32::MAX,
            ..BackoffConfig::default()
        };
        let b = Backoff::new(config);
        for attempt in 0..10 {
            let ceiling = b.ceiling(attempt);
            let draws: Vec<Duration> = (0..2_000)
                .map(|_| b.delay(attempt, far()).expect("fits"))
                .collect();
            assert!(draws.iter().all(|d| *d <= ceiling));
            // Spread over the whole range, not pinned to the ceiling.
            let low = draws.iter().filter(|d| **d < ceiling / 4).count();
            let high = draws.iter().filter(|d| **d > ceiling * 3 / 4).count();
            assert!(low > 300 && high > 300, "low {low}, high {high}");
            let mean = draws.iter().sum::<Duration>() / draws.len() as u32;
            assert!(
                mean > ceiling * 4 / 10 && mean < ceiling * 6 / 10,
                "mean {mean:?} of {ceiling:?}"
            );
        }
    }

    #[test]
    fn out_of_range_jitter_is_clamped() {
        for (unit, expect) in [(-1.0, 0), (f64::NAN, 0), (7.0, 100)] {
            let b = backoff(unit);
            assert_eq!(b.jittered(0), Duration::from_millis(expect));
        }
        let closure: Arc<dyn Jitter> = Arc::new(|| 0.25);
        let b = Backoff::with_jitter(BackoffConfig::default(), closure);
        assert_eq!(b.jittered(2), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn exhausted_after_max_attempts() {
        let b = backoff(0.5);
        // 5 calls in total: retries 0..=3 after the first call.
        for attempt in 0..4 {
            assert!(b.delay(attempt, far()).is_some(), "retry {attempt}");
        }
        assert_eq!(b.delay(4, far()), None);
        assert_eq!(b.delay(100, far()), None);
        let once = Backoff::with_jitter(
            BackoffConfig {
                max_attempts: 1,
                ..BackoffConfig::default()
            },
            Arc::new(FixedJitter(0.0)),
        );
        assert_eq!(once.delay(0, far()), None);
        let none = Backoff::with_jitter(
            BackoffConfig {
                max_attempts: 0,
                ..BackoffConfig::default()
            },
            Arc::new(FixedJitter(0.0)),
        );
        assert_eq!(none.delay(0, far()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn never_schedules_at_or_past_the_deadline() {
        let b = backoff(0.5); // retry 3: 400 ms
        let start = Instant::now();
        assert_eq!(
            b.delay(3, start + Duration::from_millis(401)),
            Some(Duration::from_millis(400))
        );
        assert_eq!(b.delay(3, start + Duration::from_millis(400)), None);
        assert_eq!(b.delay(3, start + Duration::from_millis(10)), None);
        assert_eq!(b.delay(0, start), None);
        assert_eq!(b.delay(0, start - Duration::from_millis(1)), None);
        // The deadline is measured from the clock's now.
        let deadline = start + Duration::from_secs(1);
        tokio::time::advance(Duration::from_millis(700)).await;
        assert_eq!(b.delay(3, deadline), None);
        assert_eq!(b.delay(1, deadline), Some(Duration::from_millis(100)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_loop_ends_before_its_deadline() {
        let b = Backoff::new(BackoffConfig {
            max_attempts: 1_000,
            ..BackoffConfig::default()
        });
        let start = Instant::now();
        let deadline = start + Duration::from_secs(20);
        let mut attempt = 0;
        while let Some(delay) = b.next_delay(attempt, None, deadline) {
            tokio::time::sleep(delay).await;
            assert!(Instant::now() < deadline);
            attempt += 1;
        }
        assert!(attempt > 3, "some retries fit: {attempt}");
        assert!(Instant::now() < deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let b = backoff(0.5);
        let hint = Some(Duration::from_secs(2));
        // The hint wins over a shorter jittered delay...
        assert_eq!(b.next_delay(0, hint, far()), Some(Duration::from_secs(2)));
        // ...the jittered delay over a shorter hint...
        assert_eq!(
            b.next_delay(3, Some(Duration::from_millis(10)), far()),
            Some(Duration::from_millis(400))
        );
        // ...even beyond the cap...
        assert_eq!(
            b.next_delay(0, Some(Duration::from_secs(30)), far()),
            Some(Duration::from_secs(30))
        );
        // ...but never past the deadline.
        let deadline = Instant::now() + Duration::from_secs(2);
        assert_eq!(b.next_delay(0, hint, deadline), None);
        assert_eq!(
            b.next_delay(0, Some(Duration::from_millis(1999)), deadline),
            Some(Duration::from_millis(1999))
        );
        // And attempts still run out.
        assert_eq!(b.next_delay(4, hint, far()), None);
    }
}
