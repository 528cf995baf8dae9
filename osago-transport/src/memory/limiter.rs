//! The in-memory [`RateLimiter`]: GCRA per key on tokio's clock, each key
//! expiring once its theoretical arrival time has passed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use osago_core::ports::{PortError, RateLimiter};
use osago_core::ratelimit::{gcra_step, Admission, RateLimit};
use tokio::time::Instant;

use super::TtlMap;

/// GCRA per key, in memory (one process only).
#[derive(Debug, Clone)]
pub struct MemoryRateLimiter {
    epoch: Instant,
    tats: Arc<Mutex<TtlMap<String, u64>>>,
}

impl Default for MemoryRateLimiter {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            tats: Arc::default(),
        }
    }
}

impl MemoryRateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, key: &str, limit: &RateLimit) -> Result<Admission, PortError> {
        let interval = limit.emission_interval_us();
        if interval == 0 {
            return Ok(Admission::Allowed);
        }
        let now_us = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut tats = self.tats.lock().expect("limiter lock");
        let decision = gcra_step(tats.get(key).copied(), now_us, interval, limit.burst);
        if !decision.allowed {
            return Ok(Admission::Limited {
                retry_after: Duration::from_micros(decision.retry_after),
            });
        }
        let ttl = Duration::from_micros(decision.tat.saturating_sub(now_us).max(1));
        tats.insert(key.to_owned(), decision.tat, ttl);
        Ok(Admission::Allowed)
    }
}
