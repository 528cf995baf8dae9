//! [`Intake`]: the request-consuming loop around an [`Engine`].
//!
//! It owns everything an aggregator pod does besides the fan-out itself:
//!
//! - subscribing to the request stream (retried until it works);
//! - starting each request event on its own task, at most
//!   [`IntakeConfig::max_starting`] at once (a start costs a state-store and
//!   a broker round trip) and at most [`IntakeConfig::max_in_flight_requests`]
//!   fan-outs running;
//! - acknowledging an event only once its request is recorded in the state
//!   store and every insurer's `pending` is published (a start that fails is
//!   retried with full-jitter backoff, and never acknowledged before it
//!   works: the event is delivered again, or taken over);
//! - keeping this pod's leases alive and taking over requests whose pod died;
//! - on shutdown: taking no more events, waiting up to
//!   [`IntakeConfig::drain_timeout`] for running fan-outs, then handing what
//!   is left over through the expiring leases, and giving this pod's shared
//!   concurrency slots back at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use osago_core::ports::RequestSource;
use osago_core::trace::{TraceContext, WithTrace};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ConfigError, Problems};
use crate::engine::{Engine, EngineError, Started};
use crate::resilience::{Backoff, BackoffConfig};

/// The intake's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct IntakeConfig {
    /// Consumer group on the request stream. Default `osago-aggregator`.
    pub group: String,
    /// Requests fanned out at once; the consumer waits beyond this.
    /// Default 20 000.
    pub max_in_flight_requests: usize,
    /// Request events being started at once (recorded in the state store,
    /// `pending` published): one at a time would cap the intake at a few
    /// dozen requests per second. Default 256.
    pub max_starting: usize,
    /// How long shutdown waits for in-flight fan-outs. Default 65 s.
    pub drain_timeout: Duration,
    /// Retries of a start that failed (state store or broker down): full
    /// jitter from 100 ms up to 5 s, never giving up while the pod runs
    /// (`max_attempts` is ignored).
    pub start_retry: BackoffConfig,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        Self {
            group: "osago-aggregator".to_owned(),
            max_in_flight_requests: 20_000,
            max_starting: 256,
            drain_timeout: Duration::from_secs(65),
            start_retry: BackoffConfig {
                base: Duration::from_millis(100),
                cap: Duration::from_secs(5),
                max_attempts: u32::MAX,
            },
        }
    }
}

impl IntakeConfig {
    /// Checks every field; returns all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        if self.group.trim().is_empty() {
            p.push("intake.group", "must not be empty");
        }
        p.at_least(
            "intake.max_in_flight_requests",
            self.max_in_flight_requests as u64,
            1,
        );
        p.at_least("intake.max_starting", self.max_starting as u64, 1);
        p.positive("intake.start_retry.base", self.start_retry.base);
        if self.start_retry.cap < self.start_retry.base {
            p.push(
                "intake.start_retry.cap",
                "must be at least start_retry.base",
            );
        }
        p.into_result()
    }
}

/// Whether the intake consumes: false until it has joined the group, and
/// again once shutdown began (a readiness probe reads it).
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Whether the intake consumes now.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
}

/// The request-consuming loop of an aggregator pod; see the module
/// documentation.
///
/// ```no_run
/// # async fn demo(engine: osago_aggregator_lib::Engine, bus: osago_transport::memory::MemoryBus) {
/// use std::sync::Arc;
/// use osago_aggregator_lib::{Intake, IntakeConfig};
/// use tokio_util::sync::CancellationToken;
///
/// let intake = Intake::new(engine, Arc::new(bus), IntakeConfig::default()).unwrap();
/// let shutdown = CancellationToken::new();
/// let running = tokio::spawn(intake.run(shutdown.clone()));
/// // ... on SIGTERM:
/// shutdown.cancel();
/// running.await.unwrap(); // drained, leases handed over, slots given back
/// # }
/// ```
#[derive(Clone)]
pub struct Intake {
    engine: Engine,
    source: Arc<dyn RequestSource>,
    config: IntakeConfig,
    ready: Readiness,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake")
            .field("engine", &self.engine)
            .field("config", &self.config)
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

/// The longest a stopping intake spends keeping the learned answer times.
const KEEP_ON_SHUTDOWN: Duration = Duration::from_secs(3);

impl Intake {
    /// An intake feeding `engine` from `source`; checks `config`.
    pub fn new(
        engine: Engine,
        source: Arc<dyn RequestSource>,
        config: IntakeConfig,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            engine,
            source,
            config,
            ready: Readiness::default(),
        })
    }

    /// Its readiness, for a probe.
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// The engine it feeds.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Consumes until `shutdown` is cancelled, then drains (see the module
    /// documentation). Must run within a tokio runtime.
    pub async fn run(self, shutdown: CancellationToken) {
        let retry = Backoff::new(self.config.start_retry.clone());
        let mut attempt = 0;
        let mut subscription = loop {
            match self.source.subscribe(&self.config.group).await {
                Ok(s) => break s,
                Err(err) => {
                    tracing::warn!(error = %err, "subscribing to requests failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(retry.jittered(attempt).max(Duration::from_millis(100))) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    attempt = attempt.saturating_add(1);
                }
            }
        };
        // What pods before this one learned of the insurers' answer
        // times, before the first request: a fresh pod's first minute
        // would otherwise poll on the unlearned schedule.
        let restored = self.engine.restore_answer_times().await;
        if restored > 0 {
            tracing::info!(insurers = restored, "answer times started from those kept");
        }
        self.ready.set(true);
        let lease_keeper = self.engine.spawn_lease_keeper();
        let limit = Arc::new(Semaphore::new(self.config.max_in_flight_requests));
        let starting = Arc::new(Semaphore::new(self.config.max_starting));
        let tracker = TaskTracker::new();
        loop {
            let permit = tokio::select! {
                permit = limit.clone().acquire_owned() => permit.expect("semaphore open"),
                _ = shutdown.cancelled() => break,
            };
            let start_permit = tokio::select! {
                permit = starting.clone().acquire_owned() => permit.expect("semaphore open"),
                _ = shutdown.cancelled() => break,
            };
            let delivery = tokio::select! {
                next = subscription.next() => next,
                _ = shutdown.cancelled() => break,
            };
            let delivery = match delivery {
                Some(Ok(d)) => d,
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "request stream error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                None => break,
            };
            // Each event starts on its own task, so one slow start does not
            // hold up the next; the offsets committed stop at the oldest
            // event not yet acknowledged.
            let engine = self.engine.clone();
            let shutdown = shutdown.clone();
            let retry = retry.clone();
            // The request's trace goes on from its record (a new root when
            // the record has none): each insurer's span is its child.
            let trace = delivery.trace.unwrap_or_else(TraceContext::new_root);
            tracker.spawn(async move {
                let mut attempt = 0;
                let fan_out = loop {
                    match engine.start(delivery.event.clone()).await {
                        Ok(started) => break started,
                        Err(err @ (EngineError::State(_) | EngineError::Publish(_))) => {
                            tracing::warn!(request_id = %delivery.event.request_id, error = %err, "starting a fan-out failed; retrying");
                            tokio::select! {
                                _ = tokio::time::sleep(retry.jittered(attempt)) => {}
                                // Not acknowledged: delivered again, or taken over.
                                _ = shutdown.cancelled() => return,
                            }
                            attempt = attempt.saturating_add(1);
                        }
                    }
                };
                delivery.ack.ack();
                drop(start_permit);
                if let Started::Running(fan_out) = fan_out {
                    fan_out.wait().await;
                }
                drop(permit);
            }.in_trace(trace));
        }
        self.ready.set(false);
        tracker.close();
        if tokio::time::timeout(self.config.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("fan-outs still running after the drain timeout");
        }
        // What still runs is handed over: its leases expire and another pod
        // takes it over from the recorded progress.
        lease_keeper.abort();
        // This pod's share of each insurer's concurrency cap, back at once.
        self.engine.release_shared().await;
        // What it learned, for the pod that replaces it (bounded: the
        // orchestrator's grace period is running).
        if tokio::time::timeout(KEEP_ON_SHUTDOWN, self.engine.keep_answer_times())
            .await
            .is_err()
        {
            tracing::warn!("keeping answer times on shutdown timed out");
        }
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use osago_core::insurer::{Application, InsurerError, PollOutcome};
    use osago_core::ports::{EventPublisher, InsurerClient, QuoteSink};
    use osago_core::{
        EventId, InsurerEvent, InsurerId, QuoteRequest, RequestEvent, RequestId, SystemClock,
    };
    use osago_transport::conformance::bus::request_message;
    use osago_transport::memory::{MemoryBus, MemoryStateStore};
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A sink whose every publish takes 50 ms, as a broker round trip
    /// under load may; counts the publishes begun.
    struct SlowSink {
        begun: AtomicUsize,
    }

    #[async_trait]
    impl QuoteSink for SlowSink {
        async fn publish(&self, _event: &InsurerEvent) -> Result<(), osago_core::ports::PortError> {
            self.begun.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(())
        }
    }

    /// An insurer that never gets to answer within the test.
    #[derive(Debug)]
    struct Silent;

    #[async_trait]
    impl InsurerClient for Silent {
        async fn create_application(
            &self,
            _idempotency_key: &str,
            _request: &QuoteRequest,
        ) -> Result<Application, InsurerError> {
            std::future::pending().await
        }

        async fn poll_quote(&self, _application_id: &str) -> Result<PollOutcome, InsurerError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn request_events_start_concurrently() {
        let bus = MemoryBus::new();
        let sink = Arc::new(SlowSink {
            begun: AtomicUsize::new(0),
        });
        let engine = Engine::builder()
            .insurer(InsurerId::new("silent").unwrap(), Arc::new(Silent))
            .sink(sink.clone())
            .state_store(Arc::new(MemoryStateStore::new()))
            .clock(Arc::new(SystemClock))
            .build()
            .unwrap();
        let intake = Intake::new(engine, Arc::new(bus.clone()), IntakeConfig::default()).unwrap();
        let ready = intake.readiness();
        let shutdown = CancellationToken::new();
        let consumer = tokio::spawn(intake.run(shutdown.clone()));
        let now = chrono::Utc::now();
        for _ in 0..40 {
            let event = RequestEvent {
                event_id: EventId::random(),
                request_id: RequestId::random(),
                occurred_at: now,
                deadline_at: now + chrono::Duration::seconds(60),
                request: osago_core::request::sample(),
            };
            EventPublisher::publish(&bus, &request_message(&event))
                .await
                .unwrap();
        }
        // One at a time, 40 starts would take 40 x 50 ms; side by side,
        // every one has published its pending within one round trip.
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(sink.begun.load(Ordering::SeqCst), 40);
        assert!(ready.is_ready());
        shutdown.cancel();
        let _ = consumer.await;
        assert!(!ready.is_ready());
    }
}
