//! `/health` and `/metrics`, as responses any server can return and as the
//! admin server a service without its own API runs.

use std::convert::Infallible;
use std::net::SocketAddr;
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

/// What `/health` reports on: the dependencies' checks and, for a service
/// that consumes, whether it does.
#[derive(Clone, Default)]
pub struct Health {
    /// The dependencies.
    pub checks: Vec<Arc<dyn HealthCheck>>,
    /// The consumer's readiness, if the service has one.
    pub readiness: Option<Readiness>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("checks", &self.checks.len())
            .field("readiness", &self.readiness)
            .finish()
    }
}

impl Health {
    /// `/health`: 200 when every dependency answers within
    /// [`CHECK_TIMEOUT`] (and the consumer consumes), else 503; the body
    /// names each check's result.
    pub async fn respond(&self) -> Response<Full<Bytes>> {
        let (dependencies, report) =
            osago_transport::health::report(&self.checks, CHECK_TIMEOUT).await;
        let consumer = self.readiness.as_ref().map(Readiness::is_ready);
        let ok = dependencies && consumer.unwrap_or(true);
        let status = match (ok, consumer) {
            (true, _) => "ok",
            (false, Some(false)) => "starting",
            (false, _) => "degraded",
        };
        let mut body = serde_json::json!({ "status": status, "checks": report });
        if let Some(consumer) = consumer {
            body["consumer"] = consumer.into();
        }
        Response::builder()
            .status(if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            })
            .header(CONTENT_TYPE, "application/json")
            .header(CACHE_CONTROL, "no-store")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("valid response")
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

/// The admin endpoints of a service without an API of its own.
#[derive(Debug, Clone)]
pub struct Admin {
    /// What `/health` reports on.
    pub health: Health,
    /// What `/metrics` encodes.
    pub registry: Arc<Registry>,
}

impl Admin {
    /// Answers one admin request.
    pub async fn handle(&self, req: &Request<impl Sized>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/health") => self.health.respond().await,
            (&Method::GET, "/metrics") => metrics(&self.registry),
            _ => Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(Full::new(Bytes::from_static(b"not found")))
                .expect("valid response"),
        }
    }

    /// Serves `/health` and `/metrics` on `listener` until `shutdown`, then
    /// drains open connections (up to 5 s).
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
