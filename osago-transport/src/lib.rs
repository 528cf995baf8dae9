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
//!
//! This crate is the only one that knows topic names, key layouts and wire
//! formats of the outside world.

#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "memory")]
pub mod memory;

pub mod codec;
