//! One insurer's resilience guard: the policies of [`crate::policy`]
//! composed around every call to it (quota, then circuit breaker, then a
//! concurrency slot, then the call, its outcome recorded).
//!
//! These are the pod-local policies; sharing them across pods through
//! Valkey builds on the same state (issue 4 continues there).

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use osago_core::insurer::{ErrorKind, InsurerError};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::metrics::{EngineMetrics, InsurerLabel, TransitionLabels};
use crate::policy::{
    Backoff, BackoffConfig, BreakerConfig, CallOutcome, CircuitBreaker, ConcurrencyConfig,
    ConcurrencyLimit, GcraConfig, QuotaConfig, QuotaQueue, Transition,
};

/// The policies of one insurer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyConfig {
    /// Outbound quota with its burst buffer.
    pub quota: QuotaConfig,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// Calls in flight at once.
    pub concurrency: ConcurrencyConfig,
    /// Retries of `POST /applications` (and of failed polls).
    pub backoff: BackoffConfig,
    /// Consecutive failed polls tolerated before the insurer ends with the
    /// last failure's kind.
    pub poll_retries: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            quota: QuotaConfig {
                // A partner contract sets this; the default only guards against runaways.
                rate: GcraConfig {
                    rate_per_sec: 500.0,
                    burst: 200,
                },
                buffer: 10_000,
            },
            breaker: BreakerConfig::default(),
            concurrency: ConcurrencyConfig::default(),
            backoff: BackoffConfig::default(),
            poll_retries: 3,
        }
    }
}

/// What kind of call goes through the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `POST /applications`: new work, gated by the circuit breaker.
    Create,
    /// `GET /quotes/{id}`: work already accepted by the insurer.
    Poll,
}

/// Why a call did not happen or failed.
#[derive(Debug)]
pub enum CallError {
    /// Refused here, without calling the insurer (circuit open, quota
    /// exhausted before the deadline, no slot before the deadline): final.
    Refused(InsurerError),
    /// The insurer's call failed.
    Failed(InsurerError),
}

/// One insurer's guard.
#[derive(Debug)]
pub struct Guard {
    label: InsurerLabel,
    quota: QuotaQueue,
    breaker: Mutex<CircuitBreaker>,
    limit: ConcurrencyLimit,
    /// Backoff between retries.
    pub backoff: Backoff,
    /// Consecutive failed polls tolerated.
    pub poll_retries: u32,
    metrics: EngineMetrics,
}

impl Guard {
    /// A guard for the insurer labelled `label`.
    pub fn new(label: InsurerLabel, config: &PolicyConfig, metrics: EngineMetrics) -> Self {
        metrics.breaker_state.get_or_create(&label).set(0);
        Self {
            quota: QuotaQueue::new(config.quota.clone()),
            breaker: Mutex::new(CircuitBreaker::new(config.breaker.clone())),
            limit: ConcurrencyLimit::from_config(&config.concurrency),
            backoff: Backoff::new(config.backoff.clone()),
            poll_retries: config.poll_retries,
            label,
            metrics,
        }
    }

    fn transition(&self, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        self.metrics
            .breaker_state
            .get_or_create(&self.label)
            .set(t.to.as_gauge());
        self.metrics
            .breaker_transitions
            .get_or_create(&TransitionLabels {
                insurer: self.label.insurer.clone(),
                to: t.to.as_str().to_owned(),
            })
            .inc();
        tracing::info!(insurer = %self.label.insurer, from = t.from.as_str(), to = t.to.as_str(), "circuit breaker changed state");
    }

    /// Runs `call` under the quota, the breaker (for new work) and a
    /// concurrency slot, all bounded by `deadline`.
    pub async fn call<T, F>(
        &self,
        kind: CallKind,
        deadline: Instant,
        call: F,
    ) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, InsurerError>>,
    {
        let waited = Instant::now();
        if let Err(err) = self.quota.admit(deadline).await {
            self.metrics
                .quota_rejections
                .get_or_create(&self.label)
                .inc();
            return Err(CallError::Refused(InsurerError::new(
                ErrorKind::RateLimited,
                format!("{err}"),
            )));
        }
        if waited.elapsed() > Duration::ZERO {
            self.metrics.quota_waits.get_or_create(&self.label).inc();
        }
        let permit = if kind == CallKind::Create {
            let acquired = self
                .breaker
                .lock()
                .expect("breaker lock")
                .try_acquire(Instant::now());
            match acquired {
                Ok(permit) => {
                    self.transition(permit.transition());
                    Some(permit)
                }
                Err(rejected) => {
                    self.transition(rejected.transition);
                    return Err(CallError::Refused(
                        InsurerError::new(ErrorKind::CircuitOpen, "circuit open: insurer failing")
                            .with_retry_after(Some(rejected.retry_in)),
                    ));
                }
            }
        } else {
            None
        };
        let slot = match self.limit.acquire(deadline).await {
            Ok(slot) => slot,
            Err(_) => {
                if let Some(permit) = permit {
                    self.breaker.lock().expect("breaker lock").cancel(permit);
                }
                return Err(CallError::Refused(InsurerError::new(
                    ErrorKind::Timeout,
                    "no call slot before the deadline",
                )));
            }
        };
        let in_use = InUse::new(self.metrics.slots_in_use.get_or_create(&self.label).clone());
        let started = Instant::now();
        let result = call.await;
        drop(in_use);
        drop(slot);
        if let Some(permit) = permit {
            let outcome = CallOutcome::of(&result, started.elapsed());
            let transition =
                self.breaker
                    .lock()
                    .expect("breaker lock")
                    .record(Instant::now(), permit, outcome);
            self.transition(transition);
        }
        result.map_err(CallError::Failed)
    }
}

/// Counts a call in flight while alive (also when the call is cancelled).
struct InUse(prometheus_client::metrics::gauge::Gauge);

impl InUse {
    fn new(gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.dec();
    }
}
