//! Service wiring shared by the OSAGO binaries (`core-app`, `aggregator`,
//! `osago`), so a setting, a listener or an adapter is added to every
//! service in one place.
//!
//! # Layout
//!
//! - [`settings`] - the flags every service shares ([`settings::CommonArgs`]:
//!   bus URL, instance id, broker fetch wait, connect timeout) and
//!   [`Problems`], the one way configuration problems are collected and
//!   reported (one line each, exit status 64).
//! - [`ports`] - adapters built from URLs: the bus, the state store (with
//!   the shared resilience store and the inbound rate limiter), the
//!   database. `kafka://`, `redis://` and `postgres://` need the cargo
//!   features `kafka`, `valkey` and `postgres`; without them the URL is
//!   refused with a clear message, and the client is not compiled.
//! - [`serve`] - the HTTP accept loop with graceful drain, used by
//!   core-app's API and by the admin server.
//! - [`admin`] - `/health` (dependency checks plus readiness) and
//!   `/metrics` (503 when encoding fails), and the admin server.
//! - [`aggregator`] - the aggregator service: its flags, wiring of the
//!   engine ([`osago_aggregator_lib::EngineBuilder`]) and the intake
//!   ([`osago_aggregator_lib::Intake`]), and its admin server.
//! - [`config`] - one configuration: a TOML file (`--config`), the
//!   environment and the flags, every problem at once, `--print-config`.
//! - [`launch`] - the start-up sequence of a binary: configure, check,
//!   bind, connect (abandoned on SIGTERM), run until SIGTERM.

#![warn(missing_docs)]

pub mod admin;
pub mod aggregator;
pub mod client;
pub mod config;
pub mod launch;
pub mod ports;
pub mod serve;
pub mod settings;

pub use settings::Problems;

/// The one backoff every retry of ours uses (full jitter, never past a
/// deadline), re-exported for the services' own retry loops.
pub use osago_aggregator_lib::resilience::{Backoff, BackoffConfig};

/// Full jitter from `base` doubling up to `cap`, for a loop that retries
/// for as long as the process runs.
pub fn retry_forever(base: std::time::Duration, cap: std::time::Duration) -> Backoff {
    Backoff::new(BackoffConfig {
        base,
        cap,
        max_attempts: u32::MAX,
    })
}
