//! Domain core of the OSAGO quote-streaming system.
//!
//! This crate knows the business and nothing about transport: no SQL, no
//! topic names, no Redis keys, no HTTP. Everything that talks to the outside
//! world is a port (a trait in [`ports`]) implemented in `osago-transport`.
//!
//! ```
//! use osago_core::request::sample;
//! use osago_core::{tariff, Kopecks};
//!
//! let request = sample();
//! let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
//! assert!(request.validate(today).is_ok()); // every rule at once otherwise
//! let start = request.policy.effective_start(today);
//! let premium = tariff::premium(&request, Kopecks::from_rub(7_000), start).unwrap();
//! assert!(premium.premium_kopecks > Kopecks(0)); // exact integer kopecks
//! ```
//!
//! # Layout
//!
//! - [`ids`] - request, insurer and event identifiers.
//! - [`money`] - [`Kopecks`], the only money type (integer kopecks).
//! - [`clock`] - the injected wall clock for timestamps.
//! - [`request`] - the quote request a person fills in, and its validation.
//! - [`directive`] - the tariff directive's data: coefficients, bonus-malus
//!   classes, regions, tables.
//! - [`tariff`] - the regulated premium formula.
//! - [`events`] - the v1 events of the three streams (requests, quotes, errors).
//! - [`showcase`] - the read model row ("quote showcase") built from events.
//! - [`insurer`] - what an insurer's partner API answers, and its error kinds.
//! - [`insurer_text`] - an insurer's free text, filtered before anyone reads it.
//! - [`outbox`] - the transactional outbox message.
//! - [`ports`] - the traits adapters implement.
//! - [`ratelimit`] - the GCRA arithmetic and rate limits.
//! - [`slots`] - the shared concurrency cap's lease grants.
//! - [`breaker`] - the circuit-breaker state pods share.
//! - [`violation`] - the rules a request's field can break: code, English and Russian.
//! - [`trace`] - the W3C trace context that follows a request across services.

#![warn(missing_docs)]

pub mod breaker;
pub mod clock;
pub mod directive;
pub mod events;
pub mod ids;
pub mod insurer;
pub mod insurer_text;
pub mod money;
pub mod outbox;
pub mod ports;
pub mod ratelimit;
pub mod request;
pub mod showcase;
pub mod slots;
pub mod tariff;
pub mod trace;
pub mod violation;

pub use clock::{Clock, ManualClock, SystemClock};
pub use events::{ErrorEvent, ErrorKind, InsurerEvent, QuoteEvent, QuoteStatus, RequestEvent};
pub use ids::{EventId, InsurerId, RequestId};
pub use money::Kopecks;
pub use request::{FieldError, QuoteRequest};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
