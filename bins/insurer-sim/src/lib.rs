//! insurer-sim: a simulated insurer partner API, one archetype per instance
//! (fast, typical, calculate-then-poll, slow legacy, flaky, strict
//! underwriter, mandatory add-on, needs more data, and the failure drills
//! hang, broken and garbage). It speaks the contract of
//! `docs/insurer-api.md` with the wire types of `osago_transport::http::wire`.
//!
//! [`run`] takes a bound listener, a [`SimConfig`] and a shutdown future, so
//! tests start it on port 0. Every random draw is seeded from the config's
//! seed and the idempotency key, so a run repeats exactly.
//!
//! # Layout
//!
//! - [`archetype`] - [`Archetype`] and its latency model.
//! - [`config`] - [`SimConfig`] and [`default_lineup`].
//! - [`underwriting`] - the strict underwriter's rules.
//! - `plan`: ready times, outcomes and injected faults.
//! - `seed`: stable seeds and the insurer's base rate per region.
//! - `store`: keys and applications in memory, expiring after an hour.
//! - `api`, `reply`: routes, handlers and answers.
//! - `server`: [`run`].

pub mod archetype;
pub mod config;
pub mod underwriting;

mod api;
mod plan;
mod reply;
mod seed;
mod server;
mod store;

pub use api::MAX_BODY_BYTES;
pub use archetype::{Archetype, UnknownArchetype};
pub use config::{default_lineup, parse_response_time, SimConfig, DEFAULT_TB_RANGE_RUB};
pub use server::run;
