//! In-memory adapters: an in-process bus for the three streams and stores
//! with TTLs. Same semantics as the real adapters, checked by the same
//! conformance suites; state is lost when the process ends.

mod bus;
mod limiter;
mod policy;
mod stores;
mod ttl;

pub use bus::{MemoryBus, MemoryBusStats};
pub use limiter::MemoryRateLimiter;
pub use policy::MemoryPolicyStore;
pub use stores::{MemoryReadModel, MemoryRequestStore, MemoryStateStore};
pub use ttl::TtlMap;
