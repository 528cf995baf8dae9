//! The in-memory [`ResilienceStore`], on tokio's clock: one process's pods
//! (engines) share quotas, slot leases and breaker states through it, with
//! the same arithmetic as the Valkey scripts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use osago_core::breaker::BreakerSnapshot;
use osago_core::ports::{PortError, QuotaGrant, ResilienceStore, SlotClaim};
use osago_core::ratelimit::{gcra_take, RateLimit};
use osago_core::slots::{grant_slots, SlotGrant, SlotHolder};
use tokio::time::Instant;

use super::TtlMap;

#[derive(Debug, Default)]
struct State {
    /// Quota TATs in microseconds since `epoch`.
    tats: TtlMap<String, u64>,
    /// Slot leases: key -> holder -> (lease, expiry).
    slots: HashMap<String, HashMap<String, (SlotHolder, Instant)>>,
    breakers: TtlMap<String, BreakerSnapshot>,
}

/// Shared policy state in memory (one process only).
#[derive(Debug, Clone)]
pub struct MemoryResilienceStore {
    epoch: Instant,
    state: Arc<Mutex<State>>,
}

impl Default for MemoryResilienceStore {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            state: Arc::default(),
        }
    }
}

impl MemoryResilienceStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl ResilienceStore for MemoryResilienceStore {
    async fn take_quota(
        &self,
        key: &str,
        limit: &RateLimit,
        want: u32,
    ) -> Result<QuotaGrant, PortError> {
        let interval = limit.emission_interval_us();
        let now = self.epoch.elapsed().as_micros() as u64;
        let mut state = self.lock();
        let block = gcra_take(
            state.tats.get(key).copied(),
            now,
            interval,
            limit.burst,
            want,
        );
        if block.granted > 0 && interval > 0 {
            let ttl = Duration::from_micros(block.tat.saturating_sub(now).max(1));
            state.tats.insert(key.to_owned(), block.tat, ttl);
        }
        Ok(QuotaGrant {
            granted: block.granted,
            retry_after: Duration::from_micros(block.retry_after),
        })
    }

    async fn claim_slots(&self, key: &str, claim: &SlotClaim) -> Result<SlotGrant, PortError> {
        let now = Instant::now();
        let mut state = self.lock();
        let leases = state.slots.entry(key.to_owned()).or_default();
        leases.retain(|_, (_, expires)| *expires > now);
        let others: Vec<SlotHolder> = leases
            .iter()
            .filter(|(holder, _)| **holder != claim.holder)
            .map(|(_, (lease, _))| *lease)
            .collect();
        let grant = grant_slots(claim.cap, claim.want, claim.floor, &others);
        leases.insert(
            claim.holder.clone(),
            (
                SlotHolder {
                    held: grant.held,
                    want: claim.want,
                },
                now + claim.ttl,
            ),
        );
        Ok(grant)
    }

    async fn release_slots(&self, key: &str, holder: &str) -> Result<(), PortError> {
        if let Some(leases) = self.lock().slots.get_mut(key) {
            leases.remove(holder);
        }
        Ok(())
    }

    async fn put_breaker(
        &self,
        key: &str,
        value: &BreakerSnapshot,
        ttl: Duration,
    ) -> Result<(), PortError> {
        self.lock().breakers.insert(
            key.to_owned(),
            value.clone(),
            ttl.max(Duration::from_millis(1)),
        );
        Ok(())
    }

    async fn get_breaker(&self, key: &str) -> Result<Option<BreakerSnapshot>, PortError> {
        Ok(self.lock().breakers.get(key).cloned())
    }
}
