//! osago-aggregator as a service: consumes request events, runs the fan-out
//! engine for each, and serves `/health` and `/metrics` (core never calls it
//! over HTTP).
//!
//! [`run`] takes a bound listener, the adapters, the settings and a shutdown
//! future; [`consume`] is the consumer loop alone, for embedding.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use osago_aggregator_lib::{Engine, EngineError, Started};
use osago_core::ports::{HealthCheck, RequestSource};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Service settings (the engine has its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Consumer group on the request stream.
    pub group: String,
    /// Requests fanned out at once; the consumer waits beyond this.
    pub max_in_flight_requests: usize,
    /// Request events being started at once (recorded in the state store,
    /// `pending` published): starting one costs a state-store and a broker
    /// round trip, so one at a time would cap the intake at a few dozen
    /// requests per second.
    pub max_starting: usize,
    /// How long shutdown waits for in-flight fan-outs.
    pub drain_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            group: "osago-aggregator".to_owned(),
            max_in_flight_requests: 20_000,
            max_starting: 256,
            drain_timeout: Duration::from_secs(65),
        }
    }
}

/// The adapters the service runs on.
#[derive(Clone)]
pub struct Deps {
    /// The fan-out engine (with its insurers, sink and state store).
    pub engine: Engine,
    /// The request stream.
    pub requests: Arc<dyn RequestSource>,
    /// What `/health` reports on besides the consumer (broker, Valkey).
    pub health: Vec<Arc<dyn HealthCheck>>,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// Runs the service until `shutdown`: the consumer and `/health`, `/metrics`.
pub async fn run(
    listener: TcpListener,
    deps: Deps,
    config: Config,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let token = CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(deps.health.clone());
    let consumer = tokio::spawn(consume(deps, config, token.clone(), ready.clone()));
    let registry = Arc::new(registry);
    let builder = auto::Builder::new(TokioExecutor::new());
    tracing::info!(addr = %listener.local_addr()?, "aggregator listening");
    tokio::pin!(shutdown);
    loop {
        let (socket, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let registry = registry.clone();
        let ready = ready.clone();
        let checks = checks.clone();
        let service = service_fn(move |req| {
            let registry = registry.clone();
            let ready = ready.clone();
            let checks = checks.clone();
            async move {
                Ok::<_, std::convert::Infallible>(route(&req, &registry, &ready, &checks).await)
            }
        });
        let connection = builder
            .serve_connection(TokioIo::new(socket), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    token.cancel();
    let _ = consumer.await;
    tracing::info!("aggregator stopped");
    Ok(())
}

async fn route(
    req: &Request<Incoming>,
    registry: &Registry,
    ready: &AtomicBool,
    checks: &[Arc<dyn HealthCheck>],
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => {
            let consumer = ready.load(Ordering::Relaxed);
            let (dependencies, report) =
                osago_transport::health::report(checks, Duration::from_secs(1)).await;
            let ok = consumer && dependencies;
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::json!({
                "status": if ok { "ok" } else if consumer { "degraded" } else { "starting" },
                "consumer": consumer,
                "checks": report,
            });
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .expect("valid response")
        }
        (&Method::GET, "/metrics") => {
            let mut text = String::new();
            let _ = prometheus_client::encoding::text::encode(&mut text, registry);
            Response::builder()
                .header(
                    "content-type",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .body(Full::new(Bytes::from(text)))
                .expect("valid response")
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"not found")))
            .expect("valid response"),
    }
}

/// The consumer loop: joins the group, starts a fan-out per request event
/// and acknowledges the event once the request is recorded in the state
/// store and its pending events are published. Meanwhile it renews this
/// pod's leases and takes over requests whose pod died
/// ([`Engine::spawn_lease_keeper`]). On shutdown it stops taking events and
/// waits (up to the drain timeout) for running fan-outs to finish; what is
/// left is handed over through the expiring leases.
pub async fn consume(
    deps: Deps,
    config: Config,
    shutdown: CancellationToken,
    ready: Arc<AtomicBool>,
) {
    let mut subscription = loop {
        match deps.requests.subscribe(&config.group).await {
            Ok(s) => break s,
            Err(err) => {
                tracing::warn!(error = %err, "subscribing to requests failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    };
    ready.store(true, Ordering::Relaxed);
    // Renews this pod's leases and takes over requests of pods that died.
    let lease_keeper = deps.engine.spawn_lease_keeper();
    let limit = Arc::new(Semaphore::new(config.max_in_flight_requests.max(1)));
    let starting = Arc::new(Semaphore::new(config.max_starting.max(1)));
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
        // Each event starts on its own task, so one slow start (a broker
        // or Valkey round trip) does not hold up the next; the offsets
        // committed stop at the oldest event not yet acknowledged.
        let engine = deps.engine.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let mut backoff = Duration::from_millis(100);
            let fan_out = loop {
                match engine.start(delivery.event.clone()).await {
                    Ok(started) => break started,
                    Err(err @ (EngineError::State(_) | EngineError::Publish(_))) => {
                        tracing::warn!(request_id = %delivery.event.request_id, error = %err, "starting a fan-out failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            // Not acknowledged: delivered again, or taken over.
                            _ = shutdown.cancelled() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            };
            delivery.ack.ack();
            drop(start_permit);
            if let Started::Running(fan_out) = fan_out {
                fan_out.wait().await;
            }
            drop(permit);
        });
    }
    ready.store(false, Ordering::Relaxed);
    tracker.close();
    if tokio::time::timeout(config.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("fan-outs still running after the drain timeout");
    }
    // What still runs is handed over: its leases expire and another pod
    // takes it over from the recorded progress.
    lease_keeper.abort();
    // This pod's share of each insurer's concurrency cap, back at once.
    deps.engine.release_shared().await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;
    use osago_aggregator_lib::{EngineConfig, EngineMetrics, Insurer};
    use osago_core::insurer::{Application, InsurerError, PollOutcome};
    use osago_core::ports::{EventPublisher, InsurerClient, QuoteSink};
    use osago_core::{
        EventId, InsurerEvent, InsurerId, QuoteRequest, RequestEvent, RequestId, SystemClock,
    };
    use osago_transport::conformance::bus::request_message;
    use osago_transport::memory::{MemoryBus, MemoryStateStore};

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
        let engine = Engine::new(
            vec![Insurer {
                id: InsurerId::new("silent").unwrap(),
                client: Arc::new(Silent),
            }],
            sink.clone(),
            Arc::new(MemoryStateStore::new()),
            Arc::new(SystemClock),
            EngineConfig::default(),
            EngineMetrics::default(),
        );
        let deps = Deps {
            engine,
            requests: Arc::new(bus.clone()),
            health: Vec::new(),
        };
        let shutdown = CancellationToken::new();
        let consumer = tokio::spawn(consume(
            deps,
            Config::default(),
            shutdown.clone(),
            Arc::new(AtomicBool::new(false)),
        ));
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
        shutdown.cancel();
        let _ = consumer.await;
    }
}
