//! The OSAGO fan-out engine: one quote request to every configured insurer
//! at once, each on its own task with its own deadline.
//!
//! For one [`RequestEvent`](osago_core::RequestEvent) the engine:
//!
//! 1. claims the request in the [`StateStore`](osago_core::ports::StateStore)
//!    (a replayed event starts nothing);
//! 2. publishes `pending` (version 1) for every insurer it will ask;
//! 3. per insurer, concurrently: creates the application (same
//!    Idempotency-Key on every attempt, retried with full-jitter backoff on
//!    retryable failures, never past the deadline), polls its quote,
//!    honouring Retry-After, until the insurer's deadline; every call goes
//!    through the insurer's guard: outbound quota, circuit breaker (for new
//!    work), concurrency slot;
//! 4. publishes exactly one final event per insurer: quoted, declined, an
//!    error of a named kind, or a timeout at the deadline.
//!
//! Deadlines and timers use `tokio::time`, so tests run on a paused clock.
//!
//! # Layout
//!
//! - [`config`] - [`EngineConfig`].
//! - [`engine`] - [`Engine`], [`FanOut`], the per-insurer pipeline.
//! - [`guard`] - one insurer's policies composed around each call.
//! - [`metrics`] - Prometheus metrics of the engine.
//! - [`policy`] - resilience policies: quota, circuit breaker, concurrency, backoff.
//! - [`shared`] - the same policies shared by every pod through a
//!   [`PolicyStore`](osago_core::ports::PolicyStore).

pub mod config;
pub mod engine;
pub mod guard;
pub mod metrics;
pub mod policy;
pub mod shared;

pub use config::EngineConfig;
pub use engine::{Engine, EngineError, FanOut, Insurer, InsurerOutcome, Started};
pub use guard::PolicyConfig;
pub use metrics::EngineMetrics;
pub use shared::SharedConfig;
