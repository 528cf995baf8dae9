//! Admission control on tokio's paused clock, through `CoreApp::handle`
//! (the routes an embedder mounts, no socket): at the admission limit a
//! quote request is refused at once with 503 and Retry-After, and admitted
//! again once the rate allows.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use core_app::CoreApp;
use http::header::RETRY_AFTER;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use osago_core::ratelimit::RateLimit;
use osago_core::SystemClock;
use osago_transport::memory::{MemoryBus, MemoryRateLimiter, MemoryReadModel, MemoryRequestStore};

fn deps() -> core_app::Deps {
    let bus = MemoryBus::new();
    let store = MemoryRequestStore::new(Duration::from_secs(60));
    core_app::Deps {
        requests: Arc::new(store.clone()),
        outbox: Arc::new(store),
        publisher: Arc::new(bus.clone()),
        outcomes: Arc::new(bus.clone()),
        live: Arc::new(bus),
        read_model: Arc::new(MemoryReadModel::new(Duration::from_secs(60))),
        clock: Arc::new(SystemClock),
        health: Vec::new(),
        limiter: Arc::new(MemoryRateLimiter::new()),
    }
}

fn post() -> Request<Full<Bytes>> {
    Request::post("/api/osago/requests")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(include_bytes!(
            "../../../docs/examples/request.json"
        ))))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn at_the_admission_limit_requests_are_refused_with_retry_after() {
    let config = core_app::Config {
        // No per-client limit: every request comes from one address here.
        rate_limit: RateLimit {
            per_second: 0.0,
            burst: 1,
        },
        admission: RateLimit {
            per_second: 1.0,
            burst: 2,
        },
        ..core_app::Config::default()
    };
    let core = CoreApp::start(deps(), config, Default::default());
    let peer = "127.0.0.1:40000".parse().unwrap();
    for _ in 0..2 {
        let response = core.handle(peer, post()).await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let refused = core.handle(peer, post()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()[RETRY_AFTER], "1");
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["type"], "/problems/overloaded");

    // A second later the rate admits one more, and only one.
    tokio::time::advance(Duration::from_secs(1)).await;
    let admitted = core.handle(peer, post()).await.unwrap();
    assert_eq!(admitted.status(), StatusCode::ACCEPTED);
    let again = core.handle(peer, post()).await.unwrap();
    assert_eq!(again.status(), StatusCode::SERVICE_UNAVAILABLE);
    let rejected = core
        .app()
        .metrics
        .requests_rejected
        .get_or_create(&core_app::metrics::ReasonLabel {
            reason: "overloaded",
        })
        .get();
    assert_eq!(rejected, 2);
    core.stop().await;
}

#[tokio::test(start_paused = true)]
async fn without_an_admission_rate_nothing_is_refused() {
    let config = core_app::Config {
        rate_limit: RateLimit {
            per_second: 0.0,
            burst: 1,
        },
        ..core_app::Config::default()
    };
    let core = CoreApp::start(deps(), config, Default::default());
    let peer = "127.0.0.1:40000".parse().unwrap();
    for _ in 0..20 {
        let response = core.handle(peer, post()).await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    core.stop().await;
}
