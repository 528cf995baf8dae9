//! core-app: accepts OSAGO quote requests, publishes them through a
//! transactional outbox, keeps the quote showcase (read model) and streams
//! each insurer's answer to the browser over SSE.
//!
//! [`run`] takes a bound listener, the adapters ([`Deps`]), the settings and
//! a shutdown future, so tests start it on port 0 and stop it at will.
//! [`CoreApp`] is the same without a listener: its routes, to mount behind
//! an embedder's own server.
//!
//! # Layout
//!
//! - [`access`] - stream access tokens.
//! - [`cli`] - the `core-app` binary's flags, checked and connected.
//! - [`config`] - [`Config`].
//! - [`http`] - routes, handlers, problem+json.
//! - [`sse`] - one request's event stream, resumable by `Last-Event-ID`.
//! - [`hub`] - the pod-local fan-out of live events to streams.
//! - [`relay`] - the outbox relay.
//! - [`projector`] - the read-model consumer.
//! - `refusals` - rate-limit refusals a pod answers itself until the
//!   shared limiter could admit again.
//! - [`metrics`] - Prometheus metrics.

pub mod access;
pub mod cli;
pub mod config;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod projector;
mod refusals;
pub mod relay;
pub mod sse;

use std::future::Future;
use std::sync::Arc;

use std::convert::Infallible;
use std::net::SocketAddr;

use ::http::{Request, Response};
use osago_core::ports::{
    EventPublisher, HealthCheck, LiveFeed, OutboxStore, OutcomeSource, RateLimiter, ReadModel,
    RequestStore,
};
use osago_core::Clock;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, RelayConfig};
pub use metrics::Metrics;

use hub::Hub;

/// The adapters core-app runs on.
#[derive(Clone)]
pub struct Deps {
    /// Requests, written together with their outbox message.
    pub requests: Arc<dyn RequestStore>,
    /// The outbox, read by the relay.
    pub outbox: Arc<dyn OutboxStore>,
    /// Where the relay publishes request events.
    pub publisher: Arc<dyn EventPublisher>,
    /// Quote and error events for the read model (consumer group).
    pub outcomes: Arc<dyn OutcomeSource>,
    /// Every quote and error event, for this pod's SSE streams.
    pub live: Arc<dyn LiveFeed>,
    /// The quote showcase.
    pub read_model: Arc<dyn ReadModel>,
    /// Wall clock for timestamps and dates.
    pub clock: Arc<dyn Clock>,
    /// What `/health` reports on besides the process itself.
    pub health: Vec<Arc<dyn HealthCheck>>,
    /// The inbound rate limiter (shared by every instance in production).
    pub limiter: Arc<dyn RateLimiter>,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps").finish_non_exhaustive()
    }
}

/// Shared state of a running core-app.
#[derive(Debug)]
pub struct App {
    /// Settings.
    pub config: Config,
    /// Adapters.
    pub deps: Deps,
    /// Metrics.
    pub metrics: Metrics,
    /// The admin endpoints (`/health/live`, `/health/ready`, `/metrics`).
    pub admin: osago_service::admin::Admin,
    /// Whether the API listener answers the admin endpoints too (no admin
    /// listener of its own).
    pub admin_on_api: bool,
    /// Live events for this pod's streams.
    pub hub: Arc<Hub>,
    /// Who a request comes from (see [`Config::trusted_proxies`]).
    pub trusted: osago_service::client::TrustedProxies,
    /// Event streams open per client on this instance.
    pub streams: Arc<http::ClientStreams>,
    /// Cancelled at shutdown: streams end, background tasks stop.
    pub shutdown: CancellationToken,
}

/// A started core-app without a listener of its own: its background tasks
/// (outbox relay, read-model projector, live feed, purge) run, and
/// [`CoreApp::handle`] answers its routes, so an embedder can mount them
/// behind their own server, authentication and routes.
#[derive(Debug)]
pub struct CoreApp {
    app: Arc<App>,
    background: tokio::task::JoinSet<()>,
}

impl CoreApp {
    /// Starts the background tasks. Metrics are registered in `registry`
    /// (which may already hold other metrics, as in the embedded binary)
    /// and served at `/metrics`, with the health endpoints, by
    /// [`CoreApp::handle`]; [`CoreApp::admin`] serves them on a listener of
    /// their own instead. Must be called within a tokio runtime.
    pub fn start(deps: Deps, config: Config, registry: Registry) -> Self {
        Self::start_with(deps, config, registry, true)
    }

    fn start_with(deps: Deps, config: Config, mut registry: Registry, admin_on_api: bool) -> Self {
        // A key the shared limiter refused is refused here until it could
        // admit again: under a flood, refusals cost no round trip.
        let deps = Deps {
            limiter: Arc::new(refusals::RefusalMemo::new(deps.limiter)),
            ..deps
        };
        let metrics = Metrics::register(&mut registry);
        osago_service::admin::register_build_info(&mut registry, "core-app");
        let token = CancellationToken::new();
        let admin = osago_service::admin::Admin {
            health: osago_service::admin::Health {
                checks: deps.health.clone(),
                ..Default::default()
            },
            registry: Arc::new(registry),
        };
        let app = Arc::new(App {
            config: config.clone(),
            deps: deps.clone(),
            metrics: metrics.clone(),
            admin,
            admin_on_api,
            hub: Arc::new(Hub::default()),
            trusted: trusted_proxies(&config),
            streams: Arc::default(),
            shutdown: token.clone(),
        });
        let mut background = tokio::task::JoinSet::new();
        background.spawn(relay::run(
            deps.outbox.clone(),
            deps.publisher.clone(),
            deps.clock.clone(),
            config.relay.clone(),
            metrics.clone(),
            token.clone(),
        ));
        background.spawn(projector::run(
            deps.outcomes.clone(),
            deps.read_model.clone(),
            config.projector_group.clone(),
            config.request_deadline,
            config.projector_batch,
            metrics.clone(),
            token.clone(),
        ));
        background.spawn(app.hub.clone().pump(
            deps.live.clone(),
            deps.clock.clone(),
            metrics.clone(),
            token.clone(),
        ));
        background.spawn(purge_expired(
            deps.requests.clone(),
            purge_interval(config.retention),
            token,
        ));
        Self { app, background }
    }

    /// Answers one request from `peer` (see [`http`] for the routes).
    pub async fn handle<B: http::RequestBody>(
        &self,
        peer: SocketAddr,
        req: Request<B>,
    ) -> Result<Response<http::Body>, Infallible> {
        http::handle(self.app.clone(), peer, req).await
    }

    /// The shared state (settings, adapters, metrics).
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// The admin endpoints, to serve on a listener of their own.
    pub fn admin(&self) -> osago_service::admin::Admin {
        self.app.admin.clone()
    }

    /// Ends open event streams (with a retry hint, so clients reconnect to
    /// another pod) and stops the background tasks.
    pub async fn stop(mut self) {
        self.app.shutdown.cancel();
        while self.background.join_next().await.is_some() {}
    }
}

/// Runs core-app on `listener` until `shutdown` resolves: the HTTP API, the
/// outbox relay, the read-model projector and the live feed pump (see
/// [`CoreApp`]); then stops accepting, ends the streams and drains open
/// connections up to [`Config::drain_timeout`].
///
/// With an `admin` listener the admin endpoints (`/health/live`,
/// `/health/ready`, `/metrics`) are served there, not on the API, and it
/// keeps answering through the drain (readiness `draining`); without one
/// the API answers them.
pub async fn run(
    listener: TcpListener,
    admin: Option<TcpListener>,
    deps: Deps,
    config: Config,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let core = CoreApp::start_with(deps, config, registry, admin.is_none());
    tracing::info!(addr = %listener.local_addr()?, "core-app listening");
    let app = core.app.clone();
    let drain = app.config.drain_timeout;
    let token = app.shutdown.clone();
    let draining = app.admin.health.draining.clone();
    let rejected = app.metrics.requests_rejected.clone();
    let stream_paths = app.metrics.stream_paths.clone();
    let edge = osago_service::serve::Edge {
        limits: app.config.connections.clone(),
        trusted: app.trusted.clone(),
        on_refused: Some(Arc::new(move |reason| {
            rejected
                .get_or_create(&metrics::ReasonLabel { reason })
                .inc();
        })),
        on_stream: Some(Arc::new(move |path| {
            stream_paths
                .get_or_create(&metrics::PathLabel { path })
                .inc();
        })),
    };
    let streams = app.clone();
    let api = osago_service::serve::serve_edge_lean(
        listener,
        edge,
        move |peer, req| http::handle(app.clone(), peer, req),
        // A stream asked for first on its connection (EventSource's own
        // connection), or on a kept-alive one once hyper hands it back, is
        // answered without hyper's per-connection buffers.
        osago_service::serve::LeanStreams {
            route: http::is_stream_path,
            handler: move |peer, req| http::handle(streams.clone(), peer, req),
        },
        shutdown,
        // Readiness turns false, streams end now (with a retry hint), so
        // connections can drain.
        move || {
            draining.start();
            token.cancel();
        },
        drain,
    );
    match admin {
        Some(admin) => {
            tracing::info!(addr = %admin.local_addr()?, "core-app admin listening");
            let served = CancellationToken::new();
            let stop_admin = served.clone();
            let api = async move {
                api.await;
                served.cancel();
            };
            tokio::join!(core.admin().serve(admin, stop_admin.cancelled_owned()), api);
        }
        None => api.await,
    }
    core.stop().await;
    tracing::info!("core-app stopped");
    Ok(())
}

/// The proxies `config` trusts, and the header they name the client in.
fn trusted_proxies(config: &Config) -> osago_service::client::TrustedProxies {
    let header = config
        .client_ip_header
        .as_deref()
        .and_then(|name| ::http::HeaderName::try_from(name).ok())
        .unwrap_or(::http::HeaderName::from_static("x-forwarded-for"));
    osago_service::client::TrustedProxies::new(config.trusted_proxies.clone(), header)
}

/// How often expired rows are deleted: a twentieth of the retention, at
/// least every second and at most every ten minutes, so personal data
/// outlives its retention by 5 % at most (reads never see an expired row).
pub fn purge_interval(retention: std::time::Duration) -> std::time::Duration {
    (retention / 20).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(600),
    )
}

/// Deletes expired requests (personal data, consent records), quotes,
/// audit rows and outbox rows in every state, `every` so often.
async fn purge_expired(
    requests: Arc<dyn RequestStore>,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = every.tick() => match requests.purge_expired().await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "expired requests purged"),
                Err(err) => tracing::warn!(error = %err, "purging expired requests failed"),
            },
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn the_purge_runs_often_enough_for_the_retention() {
        let purge = super::purge_interval;
        assert_eq!(
            purge(Duration::from_secs(3 * 24 * 3600)),
            Duration::from_secs(600)
        );
        assert_eq!(purge(Duration::from_secs(3600)), Duration::from_secs(180));
        assert_eq!(purge(Duration::from_secs(60)), Duration::from_secs(3));
        assert_eq!(purge(Duration::from_secs(5)), Duration::from_secs(1));
    }
}
