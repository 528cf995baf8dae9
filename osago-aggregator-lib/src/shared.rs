//! The policies shared by every aggregator pod through a [`ResilienceStore`]
//! (Valkey in production), without a round trip per insurer call:
//!
//! - **quota**: [`SharedQuota`] takes the insurer's outbound quota from the
//!   store in blocks ([`gcra_take`](osago_core::ratelimit::gcra_take)) and
//!   spends them locally for at most one `quota_window`; unspent calls
//!   lapse, so the shared rate errs low, never high. Callers that find no
//!   local call left wait while one of them refills, so the block asked for
//!   grows with the demand (callers waiting, plus what was spent in the last
//!   window); a new block wakes as many waiters as it has calls, all at
//!   once. One round trip serves a block; at peak, dozens of calls.
//! - **concurrency**: a keeper task per insurer leases slots of the cap
//!   across pods ([`grant_slots`](osago_core::slots::grant_slots)) and sets
//!   the local [`ConcurrencyLimit`](crate::resilience::ConcurrencyLimit)'s
//!   capacity to the grant. It claims again every `renew_every`, at once
//!   when calls queue for a slot, and every `contended_every` while some pod
//!   wants more than it holds. A lease not renewed for `lease_ttl` expires:
//!   a dead pod's share comes back.
//! - **circuit breaker**: a pod's own transitions to open (and back to
//!   closed after its probes) are published at once; every pod reads the
//!   insurer's published state every `breaker_sync` and takes it in
//!   ([`CircuitBreaker::observe_remote`]), so what one pod observes opens
//!   the breaker for all.
//!
//! When the store is unreachable each pod falls back to its local policies:
//! the local quota at the full configured rate, its last slot grant (the
//! full cap if it never had one), its own breaker. The cross-pod limits are
//! then per pod until the store answers again; this is logged and counted in
//! `osago_aggregator_policy_store_calls{result="error"}`.
//!
//! [`CircuitBreaker::observe_remote`]: crate::resilience::CircuitBreaker::observe_remote

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use osago_core::ports::ResilienceStore;
use osago_core::ratelimit::RateLimit;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::{EngineMetrics, StoreCallLabels};
use crate::resilience::{QuotaError, QuotaQueue};

/// How the policies are shared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SharedConfig {
    /// This pod's name in slot leases: unique per process (random by
    /// default).
    pub holder: String,
    /// How long calls of a quota block stay usable. Default 50 ms.
    pub quota_window: Duration,
    /// Lifetime of a slot lease that is not renewed. Default 10 s.
    pub lease_ttl: Duration,
    /// Renewal of slot leases when nobody waits. Default 1 s.
    pub renew_every: Duration,
    /// Renewal while slots are contended. Default 50 ms.
    pub contended_every: Duration,
    /// How often a pod reads the insurers' shared breaker states. Default 250 ms.
    pub breaker_sync: Duration,
}

impl Default for SharedConfig {
    fn default() -> Self {
        Self {
            holder: format!("pod-{}", uuid::Uuid::new_v4().simple()),
            quota_window: Duration::from_millis(50),
            lease_ttl: Duration::from_secs(10),
            renew_every: Duration::from_secs(1),
            contended_every: Duration::from_millis(50),
            breaker_sync: Duration::from_millis(250),
        }
    }
}

/// Counts a call to the store in the metrics.
pub(crate) fn count_call<T, E>(metrics: &EngineMetrics, op: &'static str, result: &Result<T, E>) {
    metrics
        .policy_store_calls
        .get_or_create(&StoreCallLabels {
            op: op.to_owned(),
            result: if result.is_ok() { "ok" } else { "error" }.to_owned(),
        })
        .inc();
}

#[derive(Debug)]
struct QuotaState {
    /// Calls left of the last block.
    tokens: u32,
    /// Until when they may be spent.
    valid_until: Instant,
    /// Callers inside `admit`.
    waiting: usize,
    /// Calls admitted since `window_start`.
    admitted: u32,
    window_start: Instant,
    /// Calls admitted in the last whole window.
    recent: u32,
}

/// One insurer's outbound quota, shared by every pod. See the module
/// documentation.
#[derive(Debug)]
pub(crate) struct SharedQuota {
    store: Arc<dyn ResilienceStore>,
    key: String,
    limit: RateLimit,
    window: Duration,
    max_block: u32,
    buffer: usize,
    state: Mutex<QuotaState>,
    /// Whether a caller is refilling (one at a time).
    refilling: AtomicBool,
    /// Wakes waiting callers: one per call of a new block, all at once (a
    /// chain of lock hand-overs, one woken caller at a time, lets a block
    /// lapse on a busy runtime before its calls are spent), and one more,
    /// so a caller finding the block spent takes over the refilling.
    ready: Notify,
    /// The local quota used while the store is unreachable.
    fallback: QuotaQueue,
    metrics: EngineMetrics,
}

/// Leaves `waiting` when dropped, also when the caller is cancelled.
struct Waiting<'a>(&'a SharedQuota);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

impl SharedQuota {
    pub(crate) fn new(
        store: Arc<dyn ResilienceStore>,
        key: String,
        config: &crate::resilience::QuotaConfig,
        window: Duration,
        metrics: EngineMetrics,
    ) -> Self {
        let limit = RateLimit {
            per_second: config.rate.rate_per_sec,
            burst: config.rate.burst.max(1),
        };
        let per_window = (limit.per_second.max(0.0) * window.as_secs_f64()).ceil();
        let max_block = (per_window as u32).clamp(1, limit.burst);
        let now = Instant::now();
        Self {
            store,
            key,
            limit,
            window,
            max_block,
            buffer: config.buffer,
            state: Mutex::new(QuotaState {
                tokens: 0,
                valid_until: now,
                waiting: 0,
                admitted: 0,
                window_start: now,
                recent: 0,
            }),
            refilling: AtomicBool::new(false),
            ready: Notify::new(),
            fallback: QuotaQueue::new(config.clone()),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, QuotaState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a call of the current block, if one is left and still valid.
    fn take_local(&self, now: Instant) -> bool {
        let mut state = self.lock();
        if state.tokens > 0 && now < state.valid_until {
            state.tokens -= 1;
            state.admitted += 1;
            true
        } else {
            false
        }
    }

    /// The block to ask for: the callers waiting plus what the last window
    /// spent, within `1..=max_block`.
    fn block_size(&self, now: Instant) -> u32 {
        let mut state = self.lock();
        if now.duration_since(state.window_start) >= self.window {
            state.recent = state.admitted;
            state.admitted = 0;
            state.window_start = now;
        }
        let waiting = u32::try_from(state.waiting).unwrap_or(u32::MAX);
        waiting
            .saturating_add(state.recent)
            .clamp(1, self.max_block)
    }

    /// Waits until the shared quota admits a call, if that comes before
    /// `deadline`; see [`QuotaQueue::admit`] for the contract.
    pub(crate) async fn admit(&self, deadline: Instant) -> Result<(), QuotaError> {
        if self.limit.emission_interval_us() == 0 || self.take_local(Instant::now()) {
            return Ok(());
        }
        {
            let mut state = self.lock();
            if state.waiting >= self.buffer {
                return Err(QuotaError::BufferFull);
            }
            state.waiting += 1;
        }
        let _waiting = Waiting(self);
        loop {
            // Registered before looking, so no wake-up falls in between.
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.take_local(Instant::now()) {
                return Ok(());
            }
            if self.refilling.swap(true, Ordering::AcqRel) {
                // Another caller refills: wait for its block (or its end).
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    // A wake-up meant for the next caller may have come
                    // with the deadline: pass it on.
                    self.ready.notify_one();
                    return Err(QuotaError::RateLimited {
                        retry_after: Duration::ZERO,
                    });
                }
                continue;
            }
            let refill = Refill(self);
            let want = self.block_size(Instant::now());
            let taken = self.store.take_quota(&self.key, &self.limit, want).await;
            count_call(&self.metrics, "take_quota", &taken);
            match taken {
                Ok(grant) if grant.granted > 0 => {
                    let more = {
                        let mut state = self.lock();
                        state.tokens = grant.granted - 1;
                        state.valid_until = Instant::now() + self.window;
                        state.admitted += 1;
                        state.tokens
                    };
                    // Ending the refill wakes one caller; wake one more per
                    // call of the block.
                    drop(refill);
                    for _ in 0..more {
                        self.ready.notify_one();
                    }
                    return Ok(());
                }
                Ok(grant) => {
                    let now = Instant::now();
                    let first = now + grant.retry_after;
                    if first >= deadline {
                        return Err(QuotaError::RateLimited {
                            retry_after: grant.retry_after,
                        });
                    }
                    // Wait for a block's worth, not one call's, so a
                    // saturated quota costs one round trip per block.
                    let interval = Duration::from_micros(self.limit.emission_interval_us());
                    let block = first + interval * want.saturating_sub(1);
                    tokio::time::sleep_until(if block < deadline { block } else { first }).await;
                    drop(refill);
                }
                Err(err) => {
                    drop(refill);
                    tracing::warn!(insurer = %self.key, error = %err, "shared quota unreachable; using the local quota");
                    return self.fallback.admit(deadline).await;
                }
            }
        }
    }
}

/// Ends a refill when dropped (also when the caller is cancelled) and wakes
/// a waiting caller, which spends the new block or takes over the
/// refilling.
struct Refill<'a>(&'a SharedQuota);

impl Drop for Refill<'_> {
    fn drop(&mut self) {
        self.0.refilling.store(false, Ordering::Release);
        self.0.ready.notify_one();
    }
}
