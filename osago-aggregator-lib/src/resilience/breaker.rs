//! A circuit breaker for one insurer.
//!
//! - **Closed**: calls go through; the outcome of the last `window` calls is
//!   kept. Once at least `min_calls` are in the window, the breaker opens when
//!   the failure rate reaches `failure_rate` or the slow-call rate (calls
//!   lasting `slow_call` or more, whatever their result) reaches `slow_rate`.
//! - **Open**: every [`CircuitBreaker::try_acquire`] is refused with
//!   [`Rejected`] (the engine ends the work as `circuit_open` at once) until
//!   `open_for` has passed.
//! - **HalfOpen**: up to `half_open_probes` probe calls are admitted and
//!   judged like the window: as soon as the failed probes reach
//!   `failure_rate` of `half_open_probes` (or the slow ones `slow_rate`) the
//!   breaker opens again for another `open_for`; once every probe has
//!   reported below both rates it closes with an empty window. One unlucky
//!   probe does not keep an insurer that fails a call in seven away for
//!   another `open_for`. A probe that has not reported within `open_for`
//!   counts as failed.
//!
//! Which [`ErrorKind`]s are the insurer's fault is decided by
//! [`counts_as_failure`]: a rejected request (4xx) or a decline says nothing
//! about the insurer's health.
//!
//! The breaker is plain data (`&mut self`, time passed in), to be wrapped in
//! a mutex by its owner. [`BreakerSnapshot`] and
//! [`CircuitBreaker::observe_remote`] / [`CircuitBreaker::force_open`] are
//! the hooks for sharing "open" between pods: a pod publishes its snapshot
//! when it opens, the others observe it.

use std::collections::VecDeque;
use std::time::Duration;

use osago_core::insurer::{ErrorKind, InsurerError};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Circuit breaker settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerConfig {
    /// How many of the latest calls the sliding window keeps. Default 50:
    /// wide enough that an insurer failing 15 % of its calls at random
    /// (the flaky archetype) does not reach 50 % in a window by chance.
    pub window: u32,
    /// Calls the window needs before rates are judged (capped by `window`).
    /// Default 20.
    pub min_calls: u32,
    /// Failure rate (0..=1) at or above which the breaker opens. Default 0.5.
    pub failure_rate: f64,
    /// Slow-call rate (0..=1) at or above which the breaker opens. Default 0.8.
    pub slow_rate: f64,
    /// A call lasting at least this long is slow. Default 5 s.
    pub slow_call: Duration,
    /// How long the breaker stays open before probing. Default 30 s.
    pub open_for: Duration,
    /// Probe calls admitted while half-open (at least 1), judged by the
    /// same rates as the window. Default 10.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: 50,
            min_calls: 20,
            failure_rate: 0.5,
            slow_rate: 0.8,
            slow_call: Duration::from_secs(5),
            open_for: Duration::from_secs(30),
            half_open_probes: 10,
        }
    }
}

/// A change of state, reported so it can be counted and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Transition {
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
}

/// Whether an error of `kind` speaks against the insurer's health.
///
/// Timeouts, unavailability (5xx, refused connections) and unreadable
/// answers count. A rejected request (4xx: the request's fault) does not,
/// nor does `circuit_open` (the insurer was never called), nor the
/// insurer's 429 or our own quota's `rate_limited`: that is flow control,
/// answered by waiting out its `Retry-After` (the poll schedule and the
/// quota do), not by refusing every user for `open_for`. A decline is a
/// successful answer, not an error.
pub fn counts_as_failure(kind: ErrorKind) -> bool {
    match kind {
        ErrorKind::Timeout | ErrorKind::Unavailable | ErrorKind::BadResponse => true,
        ErrorKind::Rejected | ErrorKind::CircuitOpen | ErrorKind::RateLimited => false,
        // Only a reader of a newer writer's event sees it, never a call.
        ErrorKind::Unknown => false,
    }
}

/// How one call went, as the breaker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOutcome {
    /// The insurer was healthy (see [`counts_as_failure`]).
    pub ok: bool,
    /// How long the call took.
    pub duration: Duration,
}

impl CallOutcome {
    /// A healthy call.
    pub fn success(duration: Duration) -> Self {
        Self { ok: true, duration }
    }

    /// A failed call.
    pub fn failure(duration: Duration) -> Self {
        Self {
            ok: false,
            duration,
        }
    }

    /// The outcome of a call that ended with `result`: an error is a failure
    /// only if [`counts_as_failure`] says so.
    pub fn of<T>(result: &Result<T, InsurerError>, duration: Duration) -> Self {
        let ok = match result {
            Ok(_) => true,
            Err(err) => !counts_as_failure(err.kind),
        };
        Self { ok, duration }
    }
}

/// Leave to make one call; hand it back to [`CircuitBreaker::record`] (or
/// [`CircuitBreaker::cancel`] when the call never completed).
#[derive(Debug)]
#[must_use = "a permit is handed back to record or cancel"]
pub struct Permit {
    generation: u64,
    probe: Option<u64>,
    transition: Option<Transition>,
}

impl Permit {
    /// Whether this is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }

    /// The transition acquiring it caused (open to half-open), if any.
    pub fn transition(&self) -> Option<Transition> {
        self.transition
    }
}

/// The breaker refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open, retry in {} ms", .retry_in.as_millis())]
pub struct Rejected {
    /// When the breaker may admit a call again (at the latest, for a
    /// half-open breaker waiting on its probes).
    pub retry_in: Duration,
    /// The transition refusing it caused (a stuck half-open reopening), if any.
    pub transition: Option<Transition>,
}

pub use osago_core::breaker::{BreakerSnapshot, BreakerState};

/// The counts in the sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowStats {
    /// Calls in the window.
    pub calls: u32,
    /// Failed calls among them.
    pub failures: u32,
    /// Slow calls among them.
    pub slow: u32,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    failed: bool,
    slow: bool,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open {
        opened_at: Instant,
        until: Instant,
        /// Opened by [`CircuitBreaker::force_open`] (another pod), not by
        /// calls seen here.
        forced: bool,
    },
    HalfOpen {
        /// Probes handed out in this half-open phase.
        issued: u32,
        /// Probes that reported.
        reported: u32,
        /// Reported probes that failed.
        failed: u32,
        /// Reported probes that were slow.
        slow: u32,
        /// Probes not reported yet, with when they were handed out.
        outstanding: Vec<(u64, Instant)>,
        /// The opening it probes was forced.
        forced: bool,
    },
}

/// A circuit breaker for one insurer. See the module documentation.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    phase: Phase,
    /// Bumped on every transition; permits of an older generation are
    /// ignored when recorded.
    generation: u64,
    next_probe: u64,
    window: VecDeque<Sample>,
    stats: WindowStats,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            window: VecDeque::with_capacity(config.window.max(1) as usize),
            config,
            phase: Phase::Closed,
            generation: 0,
            next_probe: 0,
            stats: WindowStats::default(),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The current state. An open breaker whose `open_for` has passed still
    /// reads `Open` until the next [`CircuitBreaker::try_acquire`].
    pub fn state(&self) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// The counts in the sliding window (empty unless closed).
    pub fn window_stats(&self) -> WindowStats {
        self.stats
    }

    fn probes(&self) -> u32 {
        self.config.half_open_probes.max(1)
    }

    fn set_phase(&mut self, phase: Phase) -> Option<Transition> {
        let from = self.state();
        self.phase = phase;
        self.generation += 1;
        self.window.clear();
        self.stats = WindowStats::default();
        let to = self.state();
        (from != to).then_some(Transition { from, to })
    }

    fn open(&mut self, now: Instant, until: Instant, forced: bool) -> Option<Transition> {
        self.set_phase(Phase::Open {
            opened_at: now,
            until,
            forced,
        })
    }

    /// Asks to make a call at `now`.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, Rejected> {
        let mut transition = None;
        if let Phase::Open { until, forced, .. } = self.phase {
            if now < until {
                return Err(Rejected {
                    retry_in: until - now,
                    transition: None,
                });
            }
            transition = self.set_phase(Phase::HalfOpen {
                issued: 0,
                reported: 0,
                failed: 0,
                slow: 0,
                outstanding: Vec::new(),
                forced,
            });
        }
        let probes = self.probes();
        let open_for = self.config.open_for;
        match &mut self.phase {
            Phase::Closed => Ok(Permit {
                generation: self.generation,
                probe: None,
                transition,
            }),
            Phase::HalfOpen {
                issued,
                outstanding,
                ..
            } => {
                let oldest = outstanding.iter().map(|(_, at)| *at).min();
                if let Some(oldest) = oldest {
                    if now >= oldest + open_for {
                        // A probe that silent is no sign of health.
                        let reopened = self.open(now, now + open_for, false);
                        return Err(Rejected {
                            retry_in: open_for,
                            transition: reopened,
                        });
                    }
                }
                if *issued < probes {
                    *issued += 1;
                    let id = self.next_probe;
                    self.next_probe += 1;
                    outstanding.push((id, now));
                    Ok(Permit {
                        generation: self.generation,
                        probe: Some(id),
                        transition,
                    })
                } else {
                    let retry_in =
                        oldest.map_or(Duration::ZERO, |oldest| (oldest + open_for) - now);
                    Err(Rejected {
                        retry_in,
                        transition,
                    })
                }
            }
            Phase::Open { .. } => unreachable!("an open phase was left above"),
        }
    }

    /// Records how the call made under `permit` went, at `now`. A permit from
    /// before the latest transition is ignored. Returns the transition the
    /// outcome caused, if any.
    pub fn record(
        &mut self,
        now: Instant,
        permit: Permit,
        outcome: CallOutcome,
    ) -> Option<Transition> {
        if permit.generation != self.generation {
            return None;
        }
        let slow = outcome.duration >= self.config.slow_call;
        let probes = self.probes();
        match &mut self.phase {
            Phase::Closed => {
                let sample = Sample {
                    failed: !outcome.ok,
                    slow,
                };
                let size = self.config.window.max(1) as usize;
                while self.window.len() >= size {
                    if let Some(old) = self.window.pop_front() {
                        self.stats.calls -= 1;
                        self.stats.failures -= u32::from(old.failed);
                        self.stats.slow -= u32::from(old.slow);
                    }
                }
                self.window.push_back(sample);
                self.stats.calls += 1;
                self.stats.failures += u32::from(sample.failed);
                self.stats.slow += u32::from(sample.slow);
                if self.trips() {
                    let until = now + self.config.open_for;
                    return self.open(now, until, false);
                }
                None
            }
            Phase::HalfOpen {
                reported,
                failed,
                slow: slow_probes,
                outstanding,
                ..
            } => {
                let id = permit.probe?;
                let index = outstanding.iter().position(|(probe, _)| *probe == id)?;
                outstanding.swap_remove(index);
                *reported += 1;
                *failed += u32::from(!outcome.ok);
                *slow_probes += u32::from(slow);
                let of_all = |count: u32| f64::from(count) / f64::from(probes);
                if of_all(*failed) >= self.config.failure_rate
                    || of_all(*slow_probes) >= self.config.slow_rate
                {
                    let until = now + self.config.open_for;
                    return self.open(now, until, false);
                }
                if *reported >= probes {
                    return self.set_phase(Phase::Closed);
                }
                None
            }
            Phase::Open { .. } => None,
        }
    }

    /// Hands back a permit whose call never completed (abandoned for reasons
    /// that are not the insurer's), so a half-open probe slot is freed.
    pub fn cancel(&mut self, permit: Permit) {
        if permit.generation != self.generation {
            return;
        }
        if let (
            Phase::HalfOpen {
                issued,
                outstanding,
                ..
            },
            Some(id),
        ) = (&mut self.phase, permit.probe)
        {
            if let Some(index) = outstanding.iter().position(|(probe, _)| *probe == id) {
                outstanding.swap_remove(index);
                *issued -= 1;
            }
        }
    }

    fn trips(&self) -> bool {
        let WindowStats {
            calls,
            failures,
            slow,
        } = self.stats;
        let needed = self.config.min_calls.clamp(1, self.config.window.max(1));
        if calls < needed {
            return false;
        }
        let calls = f64::from(calls);
        f64::from(failures) / calls >= self.config.failure_rate
            || f64::from(slow) / calls >= self.config.slow_rate
    }

    /// Opens the breaker from `now` until `until`, whatever it observed
    /// itself (another pod saw the failures). An open breaker is only kept
    /// open longer, never shorter. Returns the transition, if any.
    pub fn force_open(&mut self, now: Instant, until: Instant) -> Option<Transition> {
        if until <= now {
            return None;
        }
        if let Phase::Open { until: current, .. } = &mut self.phase {
            if *current < until {
                *current = until;
            }
            return None;
        }
        self.open(now, until, true)
    }

    /// The state to publish, with times mapped to unix milliseconds through
    /// the pair (`now`, `now_unix_ms`) read together.
    pub fn snapshot(&self, now: Instant, now_unix_ms: u64) -> BreakerSnapshot {
        let unix = |at: Instant| {
            if at >= now {
                now_unix_ms.saturating_add(millis(at - now))
            } else {
                now_unix_ms.saturating_sub(millis(now - at))
            }
        };
        match self.phase {
            Phase::Open {
                opened_at, until, ..
            } => BreakerSnapshot {
                state: BreakerState::Open,
                opened_at_unix_ms: Some(unix(opened_at)),
                open_until_unix_ms: Some(unix(until)),
            },
            _ => BreakerSnapshot {
                state: self.state(),
                opened_at_unix_ms: None,
                open_until_unix_ms: None,
            },
        }
    }

    /// Takes in another pod's published state, at (`now`, `now_unix_ms`):
    ///
    /// - open with time left: this breaker opens until the same moment
    ///   (see [`CircuitBreaker::force_open`]);
    /// - closed: a breaker opened only by another pod closes too (that pod's
    ///   probes succeeded); one opened by its own calls keeps its cycle;
    /// - half-open, or open with no time left: nothing changes.
    ///
    /// Returns the transition, if any.
    pub fn observe_remote(
        &mut self,
        now: Instant,
        now_unix_ms: u64,
        snapshot: &BreakerSnapshot,
    ) -> Option<Transition> {
        match snapshot.state {
            BreakerState::Open => {
                let until_ms = snapshot.open_until_unix_ms?;
                let left = until_ms.checked_sub(now_unix_ms).filter(|ms| *ms > 0)?;
                self.force_open(now, now + Duration::from_millis(left))
            }
            BreakerState::Closed => match self.phase {
                Phase::Open { forced: true, .. } | Phase::HalfOpen { forced: true, .. } => {
                    self.set_phase(Phase::Closed)
                }
                _ => None,
            },
            BreakerState::HalfOpen => None,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_millis(50);
    const OPEN_FOR: Duration = Duration::from_secs(30);

    /// A small breaker, so the tests count few calls: a window of 20, rates
    /// judged from 10 calls, 3 probes.
    fn small() -> BreakerConfig {
        BreakerConfig {
            window: 20,
            min_calls: 10,
            half_open_probes: 3,
            ..BreakerConfig::default()
        }
    }

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(small())
    }

    /// Makes one call with `outcome`; panics if refused.
    fn call(b: &mut CircuitBreaker, outcome: CallOutcome) -> Option<Transition> {
        let now = Instant::now();
        let permit = b.try_acquire(now).expect("admitted");
        b.record(now, permit, outcome)
    }

    fn fail(b: &mut CircuitBreaker) -> Option<Transition> {
        call(b, CallOutcome::failure(FAST))
    }

    fn succeed(b: &mut CircuitBreaker) -> Option<Transition> {
        call(b, CallOutcome::success(FAST))
    }

    fn opened() -> Option<Transition> {
        Some(Transition {
            from: BreakerState::Closed,
            to: BreakerState::Open,
        })
    }

    /// An open breaker, opened at the clock's now.
    fn open_breaker() -> CircuitBreaker {
        let mut b = breaker();
        for _ in 0..9 {
            assert_eq!(fail(&mut b), None);
        }
        assert_eq!(fail(&mut b), opened());
        b
    }

    fn assert_serde<T: Serialize + for<'de> Deserialize<'de>>() {}

    #[test]
    fn defaults_are_documented() {
        let c = BreakerConfig::default();
        assert_eq!((c.window, c.min_calls), (50, 20));
        assert_eq!((c.failure_rate, c.slow_rate), (0.5, 0.8));
        assert_eq!(c.slow_call, Duration::from_secs(5));
        assert_eq!(c.open_for, Duration::from_secs(30));
        assert_eq!(c.half_open_probes, 10);
        assert_serde::<BreakerConfig>();
        assert_serde::<BreakerSnapshot>();
        assert_serde::<Transition>();
    }

    #[test]
    fn failure_kinds() {
        assert!(counts_as_failure(ErrorKind::Timeout));
        assert!(counts_as_failure(ErrorKind::Unavailable));
        assert!(counts_as_failure(ErrorKind::BadResponse));
        assert!(!counts_as_failure(ErrorKind::RateLimited));
        assert!(!counts_as_failure(ErrorKind::Rejected));
        assert!(!counts_as_failure(ErrorKind::CircuitOpen));
        let rejected: Result<(), _> = Err(InsurerError::new(ErrorKind::Rejected, "needs more"));
        assert!(CallOutcome::of(&rejected, FAST).ok);
        let timeout: Result<(), _> = Err(InsurerError::new(ErrorKind::Timeout, "slow"));
        assert!(!CallOutcome::of(&timeout, FAST).ok);
        assert!(CallOutcome::of(&Ok::<_, InsurerError>(()), FAST).ok);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_configured_failures_not_before_min_calls() {
        let mut b = breaker();
        for n in 1..=9 {
            assert_eq!(fail(&mut b), None, "failure {n} of 9 calls");
            assert_eq!(b.state(), BreakerState::Closed);
        }
        assert_eq!(fail(&mut b), opened());
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_at_the_failure_rate() {
        let mut b = breaker();
        // 4 failures in 10 calls: 40 % stays closed.
        for _ in 0..6 {
            succeed(&mut b);
        }
        for _ in 0..4 {
            assert_eq!(fail(&mut b), None);
        }
        assert_eq!(b.window_stats().calls, 10);
        // 5 in 11: 45 %, 6 in 12: 50 % opens.
        assert_eq!(fail(&mut b), None);
        assert_eq!(fail(&mut b), opened());
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_slides() {
        let mut b = breaker();
        for _ in 0..40 {
            succeed(&mut b);
        }
        assert_eq!(b.window_stats().calls, 20);
        // 9 of the last 20 failed: closed (over all 49 calls it would be 18 %).
        for _ in 0..9 {
            assert_eq!(fail(&mut b), None);
        }
        assert_eq!(
            b.window_stats(),
            WindowStats {
                calls: 20,
                failures: 9,
                slow: 0
            }
        );
        assert_eq!(fail(&mut b), opened());
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_slide_out() {
        let mut b = breaker();
        for _ in 0..11 {
            succeed(&mut b);
        }
        for _ in 0..9 {
            assert_eq!(fail(&mut b), None);
        }
        // Twenty successes push every failure out of the window.
        for _ in 0..20 {
            assert_eq!(succeed(&mut b), None);
        }
        assert_eq!(b.window_stats().failures, 0);
        for _ in 0..9 {
            assert_eq!(fail(&mut b), None);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn short_circuits_while_open() {
        let mut b = open_breaker();
        let opened_at = Instant::now();
        for step in [0, 1_000, 15_000, 29_999] {
            let now = opened_at + Duration::from_millis(step);
            let err = b.try_acquire(now).expect_err("open");
            assert_eq!(err.retry_in, OPEN_FOR - Duration::from_millis(step));
            assert_eq!(err.transition, None);
        }
        tokio::time::advance(Duration::from_millis(29_999)).await;
        assert!(b.try_acquire(Instant::now()).is_err());
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(
            b.try_acquire(Instant::now()).unwrap_err().to_string(),
            "circuit open, retry in 1 ms"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn half_opens_after_open_for_and_admits_few_probes() {
        let mut b = open_breaker();
        tokio::time::advance(OPEN_FOR).await;
        let now = Instant::now();
        let first = b.try_acquire(now).expect("probe");
        assert!(first.is_probe());
        assert_eq!(
            first.transition(),
            Some(Transition {
                from: BreakerState::Open,
                to: BreakerState::HalfOpen
            })
        );
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let second = b.try_acquire(now).expect("probe");
        let third = b.try_acquire(now).expect("probe");
        assert_eq!(second.transition(), None);
        let refused = b.try_acquire(now).expect_err("only three probes");
        assert_eq!(refused.retry_in, OPEN_FOR);
        drop((first, second, third));
    }

    #[tokio::test(start_paused = true)]
    async fn closes_after_successful_probes() {
        let mut b = open_breaker();
        tokio::time::advance(OPEN_FOR).await;
        let now = Instant::now();
        let probes: Vec<Permit> = (0..3).map(|_| b.try_acquire(now).unwrap()).collect();
        let mut transitions = Vec::new();
        for probe in probes {
            transitions.push(b.record(now, probe, CallOutcome::success(FAST)));
        }
        assert_eq!(
            transitions,
            [
                None,
                None,
                Some(Transition {
                    from: BreakerState::HalfOpen,
                    to: BreakerState::Closed
                })
            ]
        );
        assert_eq!(b.state(), BreakerState::Closed);
        // The window starts empty: min_calls holds again.
        assert_eq!(b.window_stats(), WindowStats::default());
        for _ in 0..9 {
            assert_eq!(fail(&mut b), None);
        }
        assert_eq!(fail(&mut b), opened());
    }

    #[tokio::test(start_paused = true)]
    async fn reopens_once_failed_probes_reach_the_failure_rate() {
        // Three probes at a failure rate of 0.5: two failures reopen it.
        let mut b = open_breaker();
        tokio::time::advance(OPEN_FOR).await;
        let now = Instant::now();
        let bad = b.try_acquire(now).unwrap();
        let worse = b.try_acquire(now).unwrap();
        let late = b.try_acquire(now).unwrap();
        assert_eq!(b.record(now, bad, CallOutcome::failure(FAST)), None);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(
            b.record(now, worse, CallOutcome::failure(FAST)),
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Open
            })
        );
        // A probe reporting after the reopening changes nothing.
        assert_eq!(b.record(now, late, CallOutcome::success(FAST)), None);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.try_acquire(now).unwrap_err().retry_in, OPEN_FOR);
        tokio::time::advance(OPEN_FOR).await;
        assert!(b.try_acquire(Instant::now()).unwrap().is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn one_failed_probe_below_the_rate_still_closes() {
        let mut b = open_breaker();
        tokio::time::advance(OPEN_FOR).await;
        let now = Instant::now();
        let probes: Vec<Permit> = (0..3).map(|_| b.try_acquire(now).unwrap()).collect();
        let outcomes = [
            CallOutcome::failure(FAST),
            CallOutcome::success(FAST),
            CallOutcome::success(FAST),
        ];
        let transitions: Vec<_> = probes
            .into_iter()
            .zip(outcomes)
            .map(|(probe, outcome)| b.record(now, probe, outcome))
            .collect();
        assert_eq!(
            transitions,
            [
                None,
                None,
                Some(Transition {
                    from: BreakerState::HalfOpen,
                    to: BreakerState::Closed
                })
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_probe_decides_alone() {
        let mut b = CircuitBreaker::new(BreakerConfig {
            half_open_probes: 1,
            ..small()
        });
        for _ in 0..10 {
            fail(&mut b);
        }
        tokio::time::advance(OPEN_FOR).await;
        let now = Instant::now();
        let probe = b.try_acquire(now).unwrap();
        assert_eq!(
            b.record(now, probe, CallOutcome::failure(FAST))
                .map(|t| t.to),
            Some(BreakerState::Open)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_probes_reopen_at_the_slow_rate() {
        // Three probes at a slow rate of 0.8: the third slow one reopens it.
        let mut b = open_breaker();
        tokio::time::advance(OPEN_FOR).await;
        let now = Instant::now();
        let probes: Vec<Permit> = (0..3).map(|_| b.try_acquire(now).unwrap()).collect();
        let slow = CallOutcome::success(Duration::from_secs(5));
        let transitions: Vec<_> = probes
            .into_iter()
            .map(|probe| b.record(now, probe, slow).map(|t| t.to))
            .collect();
        assert_eq!(transitions, [None, None, Some(BreakerState::Open)]);
    }

    /// The flaky archetype fails 15 % of its calls (503) at random and
    /// answers 429 to another 10 % of its polls: with the default settings
    /// the breaker stays closed over 100 000 such calls, and half-open
    /// probes at that rate close it again.
    #[tokio::test(start_paused = true)]
    async fn a_flaky_insurer_is_not_refused_by_default() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        for _ in 0..100_000 {
            let roll: f64 = rng.random();
            let result: Result<(), InsurerError> = if roll < 0.15 {
                Err(InsurerError::new(ErrorKind::Unavailable, "503"))
            } else if roll < 0.25 {
                Err(InsurerError::new(ErrorKind::RateLimited, "429"))
            } else {
                Ok(())
            };
            assert_eq!(call(&mut b, CallOutcome::of(&result, FAST)), None);
        }
        let mut closed = 0;
        for _ in 0..100 {
            b.force_open(Instant::now(), Instant::now() + OPEN_FOR);
            tokio::time::advance(OPEN_FOR).await;
            let now = Instant::now();
            let probes: Vec<Permit> = (0..10).map(|_| b.try_acquire(now).unwrap()).collect();
            for probe in probes {
                let outcome = if rng.random::<f64>() < 0.15 {
                    CallOutcome::failure(FAST)
                } else {
                    CallOutcome::success(FAST)
                };
                b.record(now, probe, outcome);
            }
            closed += u32::from(b.state() == BreakerState::Closed);
        }
        assert!(
            closed >= 95,
            "closed after {closed} of 100 half-open phases"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_probe_counts_as_failed() {
        let mut b = open_breaker();
        tokio::time::advance(OPEN_FOR).await;
        let held: Vec<Permit> = (0..3)
            .map(|_| b.try_acquire(Instant::now()).unwrap())
            .collect();
        tokio::time::advance(Duration::from_secs(10)).await;
        let waiting = b.try_acquire(Instant::now()).unwrap_err();
        assert_eq!(waiting.retry_in, Duration::from_secs(20));
        assert_eq!(waiting.transition, None);
        tokio::time::advance(Duration::from_secs(20)).await;
        let reopened = b.try_acquire(Instant::now()).unwrap_err();
        assert_eq!(
            reopened.transition,
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Open
            })
        );
        assert_eq!(reopened.retry_in, OPEN_FOR);
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_frees_its_slot() {
        let mut b = open_breaker();
        tokio::time::advance(OPEN_FOR).await;
        let now = Instant::now();
        let probes: Vec<Permit> = (0..3).map(|_| b.try_acquire(now).unwrap()).collect();
        assert!(b.try_acquire(now).is_err());
        let mut probes = probes.into_iter();
        b.cancel(probes.next().unwrap());
        let again = b.try_acquire(now).expect("the slot came back");
        for probe in probes.chain([again]) {
            b.record(now, probe, CallOutcome::success(FAST));
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_open_it_too() {
        let slow = CallOutcome::success(Duration::from_secs(5));
        let almost = CallOutcome::success(Duration::from_millis(4_999));
        let mut b = breaker();
        // 7 slow in 10: 70 % < 80 %.
        for _ in 0..3 {
            call(&mut b, almost);
        }
        for _ in 0..7 {
            assert_eq!(call(&mut b, slow), None);
        }
        assert_eq!(b.window_stats().slow, 7);
        assert_eq!(b.state(), BreakerState::Closed);
        // 8 in 11 (73 %), 9 in 12 (75 %), 10 in 13 (77 %), 11 in 14 (79 %), 12 in 15 (80 %).
        for _ in 0..4 {
            assert_eq!(call(&mut b, slow), None);
        }
        assert_eq!(call(&mut b, slow), opened());
    }

    #[tokio::test(start_paused = true)]
    async fn rejected_and_declined_calls_do_not_open_it() {
        let mut b = breaker();
        let rejected: Result<(), _> = Err(InsurerError::new(ErrorKind::Rejected, "missing field"));
        for _ in 0..50 {
            assert_eq!(call(&mut b, CallOutcome::of(&rejected, FAST)), None);
        }
        // A decline is a successful answer.
        let declined: Result<&str, InsurerError> = Ok("declined");
        for _ in 0..50 {
            assert_eq!(call(&mut b, CallOutcome::of(&declined, FAST)), None);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.window_stats().failures, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn late_results_from_before_a_transition_are_ignored() {
        let mut b = breaker();
        let now = Instant::now();
        let early: Vec<Permit> = (0..5).map(|_| b.try_acquire(now).unwrap()).collect();
        for _ in 0..10 {
            fail(&mut b);
        }
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(OPEN_FOR).await;
        let now = Instant::now();
        let probes: Vec<Permit> = (0..3).map(|_| b.try_acquire(now).unwrap()).collect();
        for permit in early {
            assert_eq!(b.record(now, permit, CallOutcome::success(FAST)), None);
        }
        assert_eq!(b.state(), BreakerState::HalfOpen);
        for probe in probes {
            b.record(now, probe, CallOutcome::success(FAST));
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn force_open_and_snapshots_cross_pods() {
        let mut a = open_breaker();
        let now = Instant::now();
        // Pod a opened; its wall clock reads 1_000_000 ms.
        let published = a.snapshot(now, 1_000_000);
        assert_eq!(
            published,
            BreakerSnapshot {
                state: BreakerState::Open,
                opened_at_unix_ms: Some(1_000_000),
                open_until_unix_ms: Some(1_030_000),
            }
        );
        // Pod b reads it 5 s later.
        tokio::time::advance(Duration::from_secs(5)).await;
        let mut b = breaker();
        let now = Instant::now();
        assert_eq!(
            b.observe_remote(now, 1_005_000, &published),
            Some(Transition {
                from: BreakerState::Closed,
                to: BreakerState::Open
            })
        );
        assert_eq!(
            b.try_acquire(now).unwrap_err().retry_in,
            Duration::from_secs(25)
        );
        assert_eq!(
            b.snapshot(now, 1_005_000).open_until_unix_ms,
            Some(1_030_000)
        );
        // Seeing it again, or an older opening, changes nothing.
        assert_eq!(b.observe_remote(now, 1_005_000, &published), None);
        let expired = BreakerSnapshot {
            open_until_unix_ms: Some(1_004_000),
            ..published.clone()
        };
        assert_eq!(breaker().observe_remote(now, 1_005_000, &expired), None);
        // The other pod closed after its probes: a forced opening follows.
        let closed = BreakerSnapshot {
            state: BreakerState::Closed,
            opened_at_unix_ms: None,
            open_until_unix_ms: None,
        };
        assert_eq!(
            b.observe_remote(now, 1_005_000, &closed).map(|t| t.to),
            Some(BreakerState::Closed)
        );
        assert!(b.try_acquire(now).is_ok());
        // A breaker opened by its own calls keeps its cycle.
        assert_eq!(a.observe_remote(now, 1_005_000, &closed), None);
        assert_eq!(a.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn force_open_only_extends() {
        let mut b = breaker();
        let now = Instant::now();
        assert_eq!(b.force_open(now, now), None);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(
            b.force_open(now, now + Duration::from_secs(10))
                .map(|t| t.to),
            Some(BreakerState::Open)
        );
        assert_eq!(b.force_open(now, now + Duration::from_secs(5)), None);
        assert_eq!(
            b.try_acquire(now).unwrap_err().retry_in,
            Duration::from_secs(10)
        );
        assert_eq!(b.force_open(now, now + Duration::from_secs(60)), None);
        assert_eq!(
            b.try_acquire(now).unwrap_err().retry_in,
            Duration::from_secs(60)
        );
    }
}
