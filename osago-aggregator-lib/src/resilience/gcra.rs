//! An outbound quota per insurer: GCRA (the generic cell rate algorithm)
//! with a burst, and a bounded burst buffer in front of it.
//!
//! GCRA keeps a single number, the TAT (theoretical arrival time): when the
//! next call would be due if calls came exactly at the rate. A call at `now`
//! is admitted when `max(tat, now) + interval - interval * burst <= now`,
//! and then moves the TAT on by one interval. So from idle `burst` calls go
//! at once, and after that one call per `interval = 1 / rate_per_sec`.
//!
//! The arithmetic is [`gcra_step`], on integer microseconds, so that exactly
//! the same steps can run in one atomic Valkey script when the quota is
//! shared by every pod (one key holding the TAT), and a rate such as 450/s
//! or 5 000/s is kept as set rather than rounded to a whole millisecond.
//!
//! [`QuotaQueue`] makes work over the quota wait instead of failing, while
//! its deadline allows: each waiter books the next free slot (the TAT moves
//! on at once, so waiters are served in arrival order without a thundering
//! herd) and sleeps until it. At most `buffer` waiters wait at once.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Rate settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GcraConfig {
    /// Sustained calls per second. Zero, negative or not finite: no limit.
    /// Kept to the microsecond (450/s: one call per 2 222 µs), so any rate
    /// up to 1 000 000/s holds within 0.05 %. Default 50.
    pub rate_per_sec: f64,
    /// Calls admitted at once from idle (at least 1). Default 20.
    pub burst: u32,
}

impl Default for GcraConfig {
    fn default() -> Self {
        Self {
            rate_per_sec: 50.0,
            burst: 20,
        }
    }
}

impl GcraConfig {
    /// Microseconds between calls at the sustained rate (0: no limit).
    pub fn emission_interval_us(&self) -> u64 {
        let rate = self.rate_per_sec;
        if !rate.is_finite() || rate <= 0.0 {
            return 0;
        }
        // `as` saturates; a rate below 1/u64::MAX µs is no concern.
        ((1_000_000.0 / rate).round() as u64).max(1)
    }
}

pub use osago_core::ratelimit::{gcra_step, GcraDecision};

/// A local GCRA limiter. Microseconds count from the instant it was made.
#[derive(Debug, Clone)]
pub struct Gcra {
    config: GcraConfig,
    interval_us: u64,
    origin: Instant,
    tat_us: Option<u64>,
}

impl Gcra {
    /// A limiter with no history (a full burst available).
    pub fn new(config: GcraConfig) -> Self {
        Self {
            interval_us: config.emission_interval_us(),
            config,
            origin: Instant::now(),
            tat_us: None,
        }
    }

    /// Its settings.
    pub fn config(&self) -> &GcraConfig {
        &self.config
    }

    fn us(&self, now: Instant) -> u64 {
        micros(now.saturating_duration_since(self.origin))
    }

    fn step(&self, now_us: u64) -> GcraDecision {
        gcra_step(self.tat_us, now_us, self.interval_us, self.config.burst)
    }

    /// Admits a call at `now`, or says how long until one would be admitted.
    pub fn check(&mut self, now: Instant) -> Result<(), Duration> {
        let decision = self.step(self.us(now));
        if decision.allowed {
            self.tat_us = Some(decision.tat);
            Ok(())
        } else {
            Err(Duration::from_micros(decision.retry_after))
        }
    }

    /// Books the earliest slot at or after `now` if it comes before
    /// `deadline`: `Ok(wait)` (zero when the call may go at once), the slot
    /// at `now + wait` being taken. Otherwise nothing is booked and the error
    /// says how long until a call would be admitted.
    pub fn reserve(&mut self, now: Instant, deadline: Instant) -> Result<Duration, Duration> {
        let now_us = self.us(now);
        let first = self.step(now_us);
        if first.allowed {
            self.tat_us = Some(first.tat);
            return Ok(Duration::ZERO);
        }
        let wait = Duration::from_micros(first.retry_after);
        if now.checked_add(wait).is_none_or(|at| at >= deadline) {
            return Err(wait);
        }
        let booked = self.step(now_us.saturating_add(first.retry_after));
        debug_assert!(booked.allowed, "a call is admitted after its retry_after");
        self.tat_us = Some(booked.tat);
        Ok(wait)
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Quota and burst buffer settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QuotaConfig {
    /// The rate. Default 50/s with a burst of 20.
    pub rate: GcraConfig,
    /// The most calls waiting for a slot at once. Default 1 000.
    pub buffer: usize,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            rate: GcraConfig::default(),
            buffer: 1000,
        }
    }
}

/// Why [`QuotaQueue::admit`] refused a call. The engine ends the work as
/// `rate_limited` either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// No slot before the deadline; nothing was booked.
    #[error("outbound quota exhausted, next slot in {} ms", .retry_after.as_millis())]
    RateLimited {
        /// How long until a call would be admitted.
        retry_after: Duration,
    },
    /// The burst buffer holds as many waiters as it may.
    #[error("outbound quota buffer full")]
    BufferFull,
}

#[derive(Debug)]
struct QueueState {
    gcra: Gcra,
    waiting: usize,
}

/// A GCRA quota with a bounded burst buffer. Share it behind an `Arc`.
#[derive(Debug)]
pub struct QuotaQueue {
    state: Mutex<QueueState>,
    buffer: usize,
}

/// Leaves the buffer when dropped, also when the waiter is cancelled.
struct Waiting<'a>(&'a QuotaQueue);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

impl QuotaQueue {
    /// A queue with a full burst available.
    pub fn new(config: QuotaConfig) -> Self {
        Self {
            state: Mutex::new(QueueState {
                gcra: Gcra::new(config.rate),
                waiting: 0,
            }),
            buffer: config.buffer,
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls waiting for their slot now.
    pub fn waiting(&self) -> usize {
        self.lock().waiting
    }

    /// Waits until the quota admits a call, if that comes before `deadline`.
    /// A call the quota admits at once goes whatever the deadline. Otherwise
    /// it books the next slot and sleeps until it; over the deadline it fails
    /// with [`QuotaError::RateLimited`] at once, and with
    /// [`QuotaError::BufferFull`] when `buffer` calls already wait.
    ///
    /// Cancel-safe: a dropped waiter leaves the buffer. Its booked slot is
    /// not handed to anyone else (the rate errs low, never high).
    pub async fn admit(&self, deadline: Instant) -> Result<(), QuotaError> {
        let now = Instant::now();
        let wait = {
            let mut state = self.lock();
            if state.waiting >= self.buffer {
                return match state.gcra.check(now) {
                    Ok(()) => Ok(()),
                    Err(retry_after) if now + retry_after >= deadline => {
                        Err(QuotaError::RateLimited { retry_after })
                    }
                    Err(_) => Err(QuotaError::BufferFull),
                };
            }
            match state.gcra.reserve(now, deadline) {
                Ok(wait) if wait.is_zero() => return Ok(()),
                Ok(wait) => {
                    state.waiting += 1;
                    wait
                }
                Err(retry_after) => return Err(QuotaError::RateLimited { retry_after }),
            }
        };
        let _waiting = Waiting(self);
        tokio::time::sleep_until(now + wait).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

    fn assert_serde<T: Serialize + for<'de> Deserialize<'de>>() {}

    fn queue(buffer: usize) -> Arc<QuotaQueue> {
        Arc::new(QuotaQueue::new(QuotaConfig {
            buffer,
            ..QuotaConfig::default()
        }))
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn defaults_are_documented() {
        let q = QuotaConfig::default();
        assert_eq!(q.rate.rate_per_sec, 50.0);
        assert_eq!(q.rate.burst, 20);
        assert_eq!(q.buffer, 1000);
        assert_eq!(q.rate.emission_interval_us(), 20_000);
        assert_serde::<QuotaConfig>();
    }

    #[test]
    fn emission_interval() {
        let interval = |rate_per_sec| {
            GcraConfig {
                rate_per_sec,
                burst: 1,
            }
            .emission_interval_us()
        };
        assert_eq!(interval(1.0), 1_000_000);
        assert_eq!(interval(3.0), 333_333);
        assert_eq!(interval(0.5), 2_000_000);
        assert_eq!(interval(450.0), 2_222);
        assert_eq!(interval(1000.0), 1_000);
        assert_eq!(interval(5000.0), 200);
        assert_eq!(interval(2_000_000.0), 1);
        assert_eq!(interval(0.0), 0);
        assert_eq!(interval(-1.0), 0);
        assert_eq!(interval(f64::NAN), 0);
        assert_eq!(interval(f64::INFINITY), 0);
    }

    #[test]
    fn gcra_step_arithmetic() {
        let allowed = |tat| GcraDecision {
            allowed: true,
            tat,
            retry_after: 0,
        };
        // Interval 20 ms, burst 3, from idle at t = 1000.
        assert_eq!(gcra_step(None, 1000, 20, 3), allowed(1020));
        assert_eq!(gcra_step(Some(1020), 1000, 20, 3), allowed(1040));
        assert_eq!(gcra_step(Some(1040), 1000, 20, 3), allowed(1060));
        assert_eq!(
            gcra_step(Some(1060), 1000, 20, 3),
            GcraDecision {
                allowed: false,
                tat: 1060,
                retry_after: 20
            }
        );
        assert_eq!(
            gcra_step(Some(1060), 1013, 20, 3),
            GcraDecision {
                allowed: false,
                tat: 1060,
                retry_after: 7
            }
        );
        assert_eq!(gcra_step(Some(1060), 1020, 20, 3), allowed(1080));
        // An old TAT is as good as none: a full burst again.
        assert_eq!(gcra_step(Some(5), 9000, 20, 3), allowed(9020));
        // Burst 0 reads as 1: one call per interval.
        assert_eq!(gcra_step(None, 0, 20, 0), allowed(20));
        assert!(!gcra_step(Some(20), 0, 20, 0).allowed);
        // Interval 0: no limit.
        for _ in 0..3 {
            assert_eq!(gcra_step(Some(7), 7, 0, 1), allowed(7));
        }
        // No overflow at the ends of the range.
        assert!(gcra_step(Some(u64::MAX), u64::MAX, u64::MAX, u32::MAX).allowed);
        assert!(!gcra_step(Some(u64::MAX), 0, 1, 1).allowed);
    }

    /// Calls admitted over ten seconds at `rate_per_sec` (burst 1), asking
    /// as often as the limiter allows.
    fn admitted_in_ten_seconds(rate_per_sec: f64) -> u64 {
        let mut gcra = Gcra::new(GcraConfig {
            rate_per_sec,
            burst: 1,
        });
        let start = gcra.origin;
        let end = start + secs(10);
        let mut now = start;
        let mut admitted = 0;
        while now < end {
            match gcra.check(now) {
                Ok(()) => admitted += 1,
                Err(wait) => now += wait,
            }
        }
        admitted
    }

    #[test]
    fn rates_are_kept_as_set_not_rounded_to_milliseconds() {
        // Whole milliseconds made 450/s into 500/s (5 001 here) and capped
        // 5 000/s at 1 000/s. One call at the start, then one per interval.
        assert_eq!(admitted_in_ten_seconds(450.0), 4_501);
        assert_eq!(admitted_in_ten_seconds(5_000.0), 50_000);
        assert_eq!(admitted_in_ten_seconds(3.0), 31);
    }

    #[tokio::test(start_paused = true)]
    async fn check_admits_a_burst_then_the_rate() {
        let mut gcra = Gcra::new(GcraConfig::default());
        for n in 0..20 {
            assert_eq!(gcra.check(Instant::now()), Ok(()), "call {n}");
        }
        assert_eq!(gcra.check(Instant::now()), Err(Duration::from_millis(20)));
        tokio::time::advance(Duration::from_millis(15)).await;
        assert_eq!(gcra.check(Instant::now()), Err(Duration::from_millis(5)));
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(gcra.check(Instant::now()), Ok(()));
        assert!(gcra.check(Instant::now()).is_err());
        // Idle long enough, the full burst is back.
        tokio::time::advance(secs(1)).await;
        for _ in 0..20 {
            assert_eq!(gcra.check(Instant::now()), Ok(()));
        }
        assert!(gcra.check(Instant::now()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn reserve_books_only_before_the_deadline() {
        let mut gcra = Gcra::new(GcraConfig {
            rate_per_sec: 10.0,
            burst: 1,
        });
        let now = Instant::now();
        assert_eq!(gcra.reserve(now, now), Ok(Duration::ZERO));
        // The next slot is 100 ms away: a deadline at it is too late.
        let late = now + Duration::from_millis(100);
        assert_eq!(gcra.reserve(now, late), Err(Duration::from_millis(100)));
        assert_eq!(gcra.reserve(now, late), Err(Duration::from_millis(100)));
        assert_eq!(
            gcra.reserve(now, now + secs(1)),
            Ok(Duration::from_millis(100))
        );
        assert_eq!(
            gcra.reserve(now, now + secs(1)),
            Ok(Duration::from_millis(200))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_over_the_quota_is_delayed_not_failed() {
        let q = queue(1000);
        let start = Instant::now();
        let deadline = start + secs(10);
        let tasks: Vec<_> = (0..60)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move { q.admit(deadline).await.map(|()| start.elapsed()) })
            })
            .collect();
        let mut elapsed = Vec::new();
        for task in tasks {
            elapsed.push(task.await.unwrap().expect("admitted within the deadline"));
        }
        elapsed.sort();
        // 20 at once, then one every 20 ms.
        let expected: Vec<Duration> = (0..60u64)
            .map(|n| Duration::from_millis(n.saturating_sub(19) * 20))
            .collect();
        assert_eq!(elapsed, expected);
        assert_eq!(q.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_deadline_fails_at_once() {
        let q = queue(1000);
        let start = Instant::now();
        for _ in 0..20 {
            q.admit(start).await.expect("burst");
        }
        // The next slot is 20 ms away.
        let short = start + Duration::from_millis(20);
        assert_eq!(
            q.admit(short).await,
            Err(QuotaError::RateLimited {
                retry_after: Duration::from_millis(20)
            })
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
        // Nothing was booked by the refusal.
        q.admit(start + secs(1)).await.expect("admitted");
        assert_eq!(start.elapsed(), Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn buffer_full_is_refused() {
        let q = queue(3);
        let start = Instant::now();
        for _ in 0..20 {
            q.admit(start).await.unwrap();
        }
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move { q.admit(start + secs(10)).await })
            })
            .collect();
        while q.waiting() < 3 {
            tokio::task::yield_now().await;
        }
        assert_eq!(q.admit(start + secs(10)).await, Err(QuotaError::BufferFull));
        // Over the deadline says so, buffer or not.
        assert!(matches!(
            q.admit(start + Duration::from_millis(5)).await,
            Err(QuotaError::RateLimited { .. })
        ));
        assert_eq!(start.elapsed(), Duration::ZERO);
        for waiter in waiters {
            waiter.await.unwrap().expect("waiters are served");
        }
        assert_eq!(q.waiting(), 0);
        q.admit(start + secs(10)).await.expect("room again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_the_buffer() {
        let q = queue(1);
        let start = Instant::now();
        for _ in 0..20 {
            q.admit(start).await.unwrap();
        }
        let cancelled =
            tokio::time::timeout(Duration::from_millis(5), q.admit(start + secs(10))).await;
        assert!(cancelled.is_err(), "still waiting when cancelled");
        assert_eq!(q.waiting(), 0);
        // The buffer has room again; the cancelled slot stays booked.
        q.admit(start + secs(10)).await.expect("admitted");
        assert_eq!(start.elapsed(), Duration::from_millis(40));
    }

    #[tokio::test(start_paused = true)]
    async fn long_run_rate_holds_within_ten_percent() {
        for rate_per_sec in [50.0, 3.0, 333.0] {
            let q = Arc::new(QuotaQueue::new(QuotaConfig {
                rate: GcraConfig {
                    rate_per_sec,
                    burst: 20,
                },
                buffer: 1000,
            }));
            let admitted = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let end = start + secs(120);
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    let (q, admitted) = (q.clone(), admitted.clone());
                    tokio::spawn(async move {
                        while Instant::now() < end {
                            let deadline = Instant::now() + secs(2);
                            match q.admit(deadline).await {
                                Ok(()) if Instant::now() < end => {
                                    admitted.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(()) => {}
                                Err(_) => tokio::time::sleep(Duration::from_millis(7)).await,
                            }
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.await.unwrap();
            }
            let rate = admitted.load(Ordering::Relaxed) as f64 / 120.0;
            assert!(
                (rate - rate_per_sec).abs() <= rate_per_sec * 0.1,
                "{rate} per second against {rate_per_sec}"
            );
        }
    }
}
