//! The admin endpoints: `/health/live`, `/health/ready` (and `/health`, the
//! same as ready), `/metrics`; as responses any server can return and as the
//! admin server each service runs on its own listener, away from the public
//! API.
//!
//! - **Liveness** says the process runs and answers: 200 as long as it
//!   does. A dependency outage never fails it, so an orchestrator does not
//!   restart pods in a loop while a broker is down.
//! - **Readiness** says the pod should get traffic: every dependency
//!   answered its check within [`CHECK_TIMEOUT`] (checked on each probe, so
//!   it turns false within a probe of losing one), the consumer consumes,
//!   and the pod is not draining.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use osago_aggregator_lib::Readiness;
use osago_core::ports::HealthCheck;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// How long one dependency check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Set once a service starts draining (after SIGTERM): readiness turns
/// false so no new traffic arrives while open work finishes. Clones share
/// the flag.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    /// Marks the service as draining.
    pub fn start(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether it drains.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the health endpoints report on: the dependencies' checks, for a
/// service that consumes whether it does, and whether it drains.
#[derive(Clone, Default)]
pub struct Health {
    /// The dependencies.
    pub checks: Vec<Arc<dyn HealthCheck>>,
    /// The consumer's readiness, if the service has one.
    pub readiness: Option<Readiness>,
    /// Set when the service drains.
    pub draining: Draining,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("checks", &self.checks.len())
            .field("readiness", &self.readiness)
            .field("draining", &self.draining)
            .finish()
    }
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .header(CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

impl Health {
    /// `/health/live`: 200 `{"status":"live"}` while the process answers,
    /// whatever its dependencies do.
    pub fn live(&self) -> Response<Full<Bytes>> {
        json(StatusCode::OK, &serde_json::json!({ "status": "live" }))
    }

    /// `/health/ready` (and `/health`): 200 when every dependency answers
    /// within [`CHECK_TIMEOUT`], the consumer consumes and the service does
    /// not drain; else 503. The body names each check's result and the
    /// status: `ok`, `starting` (the consumer has not joined yet),
    /// `degraded` (a dependency fails) or `draining`.
    pub async fn ready(&self) -> Response<Full<Bytes>> {
        let (dependencies, report) =
            osago_transport::health::report(&self.checks, CHECK_TIMEOUT).await;
        let consumer = self.readiness.as_ref().map(Readiness::is_ready);
        let draining = self.draining.is_draining();
        let ok = dependencies && consumer.unwrap_or(true) && !draining;
        let status = match (ok, draining, consumer, dependencies) {
            (true, ..) => "ok",
            (false, true, ..) => "draining",
            (false, false, _, false) => "degraded",
            (false, false, ..) => "starting",
        };
        let mut body = serde_json::json!({ "status": status, "checks": report });
        if let Some(consumer) = consumer {
            body["consumer"] = consumer.into();
        }
        let code = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json(code, &body)
    }
}

/// `/metrics`: the registry in the OpenMetrics text format, or 503 when it
/// cannot be encoded (never a partial page).
pub fn metrics(registry: &Registry) -> Response<Full<Bytes>> {
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!(error = %err, "encoding metrics failed");
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header(RETRY_AFTER, "1")
            .body(Full::new(Bytes::from_static(b"metrics encoding failed")))
            .expect("valid response");
    }
    Response::builder()
        .header(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .body(Full::new(Bytes::from(text)))
        .expect("valid response")
}

/// The admin endpoints of a service, served on their own listener.
#[derive(Debug, Clone)]
pub struct Admin {
    /// What the health endpoints report on.
    pub health: Health,
    /// What `/metrics` encodes.
    pub registry: Arc<Registry>,
}

/// The `service` and `version` labels of `osago_build_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct BuildLabels {
    service: &'static str,
    version: &'static str,
}

/// Registers `osago_build_info{service, version} 1`: which build answers,
/// for dashboards to join on and for a rollout to be seen.
pub fn register_build_info(registry: &mut Registry, service: &'static str) {
    let info = prometheus_client::metrics::family::Family::<
        BuildLabels,
        prometheus_client::metrics::gauge::Gauge,
    >::default();
    info.get_or_create(&BuildLabels {
        service,
        version: env!("CARGO_PKG_VERSION"),
    })
    .set(1);
    registry.register(
        "osago_build_info",
        "The running build: service and version (always 1)",
        info,
    );
}

/// A bus's consumer lag and skipped records, encoded at each scrape:
/// `osago_kafka_consumer_lag{group,topic,partition}` (messages between the
/// group's committed offset and the partition's end, as librdkafka last
/// reported it), `osago_kafka_records_skipped_total{group,topic}`
/// (records a consumer could not decode) and
/// `osago_kafka_dead_letters_total{group,topic}` (those of them written to
/// the dead-letter topic, after which the consumer moved past them).
#[cfg(feature = "kafka")]
#[derive(Debug, Clone)]
pub struct ConsumerMetrics(pub Arc<osago_transport::kafka::ConsumerStats>);

/// Without Kafka there is nothing to report.
#[cfg(not(feature = "kafka"))]
#[derive(Debug, Clone)]
pub struct ConsumerMetrics(());

#[cfg(feature = "kafka")]
impl prometheus_client::collector::Collector for ConsumerMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;

        let mut lag = encoder.encode_descriptor(
            "osago_kafka_consumer_lag",
            "Messages between a consumer group's committed offset and the partition's end",
            None,
            MetricType::Gauge,
        )?;
        for (group, topic, partition, behind) in self.0.lag() {
            let labels = [
                ("group", group),
                ("topic", topic),
                ("partition", partition.to_string()),
            ];
            ConstGauge::new(behind).encode(lag.encode_family(&labels)?)?;
        }
        let mut skipped = encoder.encode_descriptor(
            "osago_kafka_records_skipped",
            "Records a consumer group could not decode and moved past",
            None,
            MetricType::Counter,
        )?;
        for (group, topic, count) in self.0.skipped() {
            let labels = [("group", group), ("topic", topic)];
            ConstCounter::new(count).encode(skipped.encode_family(&labels)?)?;
        }
        let mut dead = encoder.encode_descriptor(
            "osago_kafka_dead_letters",
            "Undecodable records a consumer group wrote to the dead-letter topic (labelled with the topic they came from)",
            None,
            MetricType::Counter,
        )?;
        for (group, topic, count) in self.0.dead_letters() {
            let labels = [("group", group), ("topic", topic)];
            ConstCounter::new(count).encode(dead.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl ConsumerMetrics {
    /// Registers these metrics in `registry` (nothing without Kafka).
    pub fn register(self, registry: &mut Registry) {
        #[cfg(feature = "kafka")]
        registry.register_collector(Box::new(self));
        #[cfg(not(feature = "kafka"))]
        let _ = registry;
    }
}

impl Admin {
    /// Whether `path` is one of the admin endpoints.
    pub fn serves(path: &str) -> bool {
        matches!(
            path,
            "/health" | "/health/live" | "/health/ready" | "/metrics"
        )
    }

    /// Answers one admin request; 404 for any other path.
    pub async fn handle(&self, req: &Request<impl Sized>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/health/live") => self.health.live(),
            (&Method::GET, "/health" | "/health/ready") => self.health.ready().await,
            (&Method::GET, "/metrics") => metrics(&self.registry),
            _ => Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(Full::new(Bytes::from_static(b"not found")))
                .expect("valid response"),
        }
    }

    /// Serves the admin endpoints on `listener` until `shutdown`, then
    /// drains open connections (up to 5 s). A service keeps it running
    /// while it drains, so probes see readiness false, not a refused
    /// connection.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let admin = Arc::new(self);
        crate::serve::serve(
            listener,
            move |_: SocketAddr, req: Request<hyper::body::Incoming>| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(&req).await) }
            },
            shutdown,
            || {},
            Duration::from_secs(5),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use http_body_util::BodyExt;
    use osago_core::ports::{PortError, PortErrorKind};

    #[derive(Debug)]
    struct Switch(Arc<AtomicBool>);

    #[async_trait]
    impl HealthCheck for Switch {
        fn name(&self) -> &'static str {
            "switch"
        }
        async fn check(&self) -> Result<(), PortError> {
            if self.0.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err(PortError::new(PortErrorKind::Unavailable, "switched off"))
            }
        }
    }

    async fn get(admin: &Admin, path: &str) -> (StatusCode, serde_json::Value) {
        let req = Request::get(path).body(()).unwrap();
        let response = admin.handle(&req).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[tokio::test]
    async fn liveness_holds_while_readiness_follows_dependencies_and_drain() {
        let up = Arc::new(AtomicBool::new(true));
        let admin = Admin {
            health: Health {
                checks: vec![Arc::new(Switch(up.clone()))],
                ..Health::default()
            },
            registry: Arc::new(Registry::default()),
        };
        assert_eq!(get(&admin, "/health/live").await.0, StatusCode::OK);
        let (code, body) = get(&admin, "/health/ready").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body["status"], "ok");
        assert_eq!(get(&admin, "/health").await.0, StatusCode::OK);

        up.store(false, Ordering::Relaxed);
        let (code, body) = get(&admin, "/health/ready").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["checks"]["switch"], "unavailable");
        assert_eq!(get(&admin, "/health/live").await.0, StatusCode::OK);

        up.store(true, Ordering::Relaxed);
        admin.health.draining.start();
        let (code, body) = get(&admin, "/health/ready").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "draining");
        assert_eq!(get(&admin, "/health/live").await.0, StatusCode::OK);
        assert_eq!(get(&admin, "/nope").await.0, StatusCode::NOT_FOUND);
    }
}
