//! Resilience policies for calls to insurers: pure, local building blocks
//! (no I/O), every timer on `tokio::time`, so each is tested on the paused
//! clock. Shared (Valkey) variants build on the same state and arithmetic.
//!
//! - [`gcra`] - the outbound quota per insurer: [`Gcra`], a GCRA limiter
//!   (calls per second with a burst) whose whole state is one TAT and whose
//!   arithmetic is the pure [`gcra_step`] (integer milliseconds, as the
//!   shared script will run it); and [`QuotaQueue`], the bounded burst buffer
//!   where work over the quota waits for its slot while its deadline allows.
//! - [`breaker`] - [`CircuitBreaker`], per insurer: a count-based sliding
//!   window opening on the failure or slow-call rate, short-circuiting while
//!   open, probing while half-open; transitions are returned for metrics and
//!   [`BreakerSnapshot`] is the form shared between pods.
//!   [`counts_as_failure`] decides which error kinds are the insurer's fault.
//! - [`concurrency`] - [`ConcurrencyLimit`], at most C calls in flight per
//!   insurer, waiters served earliest deadline first, each [`Slot`] freed
//!   when dropped.
//! - [`backoff`] - [`Backoff`], exponential backoff with full jitter between
//!   retries, never past the deadline, honouring Retry-After.
//! - [`schedule`] - [`PollPlan`], when to poll: first near the insurer's
//!   learned answer time ([`AnswerTimes`]), then at a growing interval,
//!   Retry-After honoured, the last poll fitted before the deadline.
//!
//! # How the engine composes them
//!
//! For each call to an insurer (creating the application, or a poll):
//!
//! 1. **quota**: `QuotaQueue::admit(deadline)`; over the deadline or with a
//!    full buffer the work ends as `rate_limited`. The quota comes first so
//!    that waiting for it holds no breaker probe and no concurrency slot.
//! 2. **circuit breaker**: `CircuitBreaker::try_acquire(now)`; refused, the
//!    work ends at once as `circuit_open`.
//! 3. **concurrency slot**: `ConcurrencyLimit::acquire(deadline)`; if none
//!    comes free before the deadline the work ends as a timeout.
//! 4. **the call**, timed; its outcome goes to `CircuitBreaker::record`
//!    (`CallOutcome::of`), and the slot is dropped.
//! 5. On a retryable failure (`ErrorKind::is_retryable`), **backoff**:
//!    `Backoff::next_delay(attempt, retry_after, deadline)` gives the sleep
//!    before going round again from step 1, or `None` to end with the
//!    failure's kind.
//!
//! A breaker permit whose call is abandoned without an answer goes back via
//! `CircuitBreaker::cancel`, so half-open probe slots are not lost.

pub mod backoff;
pub mod breaker;
pub mod concurrency;
pub mod gcra;
pub mod schedule;

pub use backoff::{Backoff, BackoffConfig, FixedJitter, Jitter, RandomJitter};
pub use breaker::{
    counts_as_failure, BreakerConfig, BreakerSnapshot, BreakerState, CallOutcome, CircuitBreaker,
    Permit, Rejected, Transition, WindowStats,
};
pub use concurrency::{ConcurrencyConfig, ConcurrencyLimit, Elapsed, Slot};
pub use gcra::{gcra_step, Gcra, GcraConfig, GcraDecision, QuotaConfig, QuotaError, QuotaQueue};
pub use schedule::{racers, AnswerTimes, PollConfig, PollPlan, RaceRank, Unkept};
