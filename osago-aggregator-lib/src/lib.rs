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
//! # Embedding
//!
//! Build the engine with [`Engine::builder`] (it checks the whole
//! [`EngineConfig`] and names every bad field at once), then either call
//! [`Engine::start`] per request yourself, or hand the engine and a
//! [`RequestSource`](osago_core::ports::RequestSource) to an [`Intake`],
//! which runs the consumer loop a pod needs: acknowledgement after start,
//! intake limits, lease keeping and takeover, drain on shutdown. The
//! README's example (a doctest) shows both in a few lines.
//!
//! # Layout
//!
//! - [`config`] - [`EngineConfig`], the one configuration tree, and
//!   [`ConfigError`].
//! - [`builder`] - [`EngineBuilder`].
//! - [`engine`] - [`Engine`], [`FanOut`], the per-insurer pipeline.
//! - [`intake`] - [`Intake`], the request-consuming loop.
//! - [`guard`] - one insurer's resilience policies composed around each call.
//! - [`metrics`] - Prometheus metrics of the engine.
//! - [`resilience`] - the policies: quota, circuit breaker, concurrency,
//!   backoff, poll schedule.
//! - [`shared`] - the same policies shared by every pod through a
//!   [`ResilienceStore`](osago_core::ports::ResilienceStore).

#![warn(missing_docs)]

pub mod builder;
pub mod config;
pub mod engine;
pub mod guard;
pub mod intake;
pub mod metrics;
pub mod resilience;
pub mod shared;

pub use builder::EngineBuilder;
pub use config::{ConfigError, ConfigProblem, EngineConfig, RequirementsConfig};
pub use engine::{Engine, EngineError, FanOut, Insurer, InsurerOutcome, Started};
pub use guard::ResilienceConfig;
pub use intake::{Intake, IntakeConfig, Readiness};
pub use metrics::EngineMetrics;
pub use resilience::{
    BackoffConfig, BreakerConfig, ConcurrencyConfig, GcraConfig, PollConfig, QuotaConfig,
};
pub use shared::SharedConfig;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
