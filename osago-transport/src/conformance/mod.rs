//! Conformance suites: one per port, the same assertions for the memory
//! adapter and the real one. Each suite is a set of `pub async fn`s taking an
//! instance of the port (fresh where the check needs an empty store; shared
//! otherwise, with random ids); the adapters' tests call them.
//!
//! They panic on failure, like any test assertion.

pub mod bus;
pub mod limiter;
pub mod outbox;
pub mod read_model;
pub mod resilience;
pub mod state_store;
