//! Adapters for the ports of `osago-core`, one module per backend, each
//! behind a cargo feature.
//!
//! # Layout
//!
//! - [`memory`] (feature `memory`): the in-process bus for the three streams
//!   and the stores, all with TTLs; the embedded default and the fakes the
//!   conformance suites hold the real adapters to.
//! - [`http`] (feature `http`): the insurer partner API client (reqwest),
//!   contract in `docs/insurer-api.md`.
//! - [`postgres`] (feature `postgres`): requests with the transactional
//!   outbox, the read model and the audit log (sqlx; SQL in `.sql` files).
//! - [`kafka`] (feature `kafka`): the three topics (rdkafka).
//! - [`valkey`] (feature `valkey`): the aggregator's state store
//!   (deadpool-redis).
//! - `conformance` (feature `conformance`): the test suites every
//!   implementation of a port passes, run against the memory and the real
//!   adapters; for tests, never compiled into a release binary.
//!
//! This crate is the only one that knows topic names, key layouts and wire
//! formats of the outside world.
//!
//! ```
//! use osago_core::{request::sample, EventId, RequestEvent, RequestId};
//! use osago_transport::codec::{decode_request_event, request_outbox_message};
//!
//! let now = chrono::Utc::now();
//! let event = RequestEvent {
//!     event_id: EventId::random(),
//!     request_id: RequestId::random(),
//!     occurred_at: now,
//!     deadline_at: now + chrono::Duration::seconds(60),
//!     request: sample(),
//! };
//! // What every request store enqueues on its outbox, and the relay publishes.
//! let message = request_outbox_message(&event);
//! assert_eq!(message.key, event.request_id.to_string());
//! assert_eq!(decode_request_event(&message.payload).unwrap(), event);
//! ```

#![warn(missing_docs)]

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod health;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod resolve;
#[cfg(feature = "valkey")]
pub mod valkey;

pub mod codec;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
