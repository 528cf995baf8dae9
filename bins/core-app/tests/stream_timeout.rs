//! core-app alone (no aggregator answering): the stream opens, heartbeats,
//! and ends with `timeout` once the request's deadline and grace pass.

use std::sync::Arc;
use std::time::Duration;

use osago_core::SystemClock;
use osago_transport::memory::{MemoryBus, MemoryReadModel, MemoryRequestStore};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_request_nobody_answers_ends_with_timeout() {
    let bus = MemoryBus::new();
    let store = MemoryRequestStore::new(Duration::from_secs(60));
    let deps = core_app::Deps {
        requests: Arc::new(store.clone()),
        outbox: Arc::new(store.clone()),
        publisher: Arc::new(bus.clone()),
        outcomes: Arc::new(bus.clone()),
        live: Arc::new(bus.clone()),
        read_model: Arc::new(MemoryReadModel::new(Duration::from_secs(60))),
        clock: Arc::new(SystemClock),
        health: Vec::new(),
        limiter: Arc::new(osago_transport::memory::MemoryRateLimiter::new()),
    };
    let config = core_app::Config {
        request_deadline: Duration::from_millis(600),
        stream_grace: Duration::from_millis(200),
        heartbeat_interval: Duration::from_millis(250),
        ..core_app::Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(core_app::run(
        listener,
        None,
        deps,
        config,
        Default::default(),
        stop.clone().cancelled_owned(),
    ));

    let sample: serde_json::Value =
        serde_json::from_str(include_str!("../../../docs/examples/request.json")).unwrap();
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("http://{addr}/api/osago/requests"))
        .json(&sample)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let body = tokio::time::timeout(
        Duration::from_secs(10),
        http.get(format!(
            "http://{addr}{}",
            created["stream_url"].as_str().unwrap()
        ))
        .bearer_auth(created["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text(),
    )
    .await
    .expect("the stream ends by itself")
    .unwrap();
    assert!(body.starts_with("retry: 2000\n"), "{body}");
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.last(), Some(&"timeout"), "{body}");
    assert!(events.contains(&"heartbeat"), "{body}");
    assert!(!events.contains(&"insurer"));
    // The relay published the request event and emptied the outbox.
    assert_eq!(store.outbox_len(), 0);
    assert_eq!(
        bus.stats()
            .published
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    stop.cancel();
    server.await.unwrap().unwrap();
}
