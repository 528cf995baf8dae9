//! In-memory adapters: an in-process bus for the three streams and stores
//! with TTLs. Same semantics as the real adapters, checked by the same
//! conformance suites; state is lost when the process ends.

mod bus;
mod limiter;
mod resilience;
mod stores;
mod ttl;

pub use bus::{MemoryBus, MemoryBusStats};
pub use limiter::MemoryRateLimiter;
pub use resilience::MemoryResilienceStore;
pub use stores::{MemoryReadModel, MemoryRequestStore, MemoryStateStore};
pub use ttl::TtlMap;
