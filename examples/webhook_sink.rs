//! Embedding the engine without Kafka: every quote and error event goes to
//! a webhook (an HTTP POST of the event's JSON, encoded by
//! `osago-transport`'s codec) instead of a topic.
//!
//! The webhook receiver here is a local wiremock server standing in for
//! your endpoint; the insurer is `osago-transport`'s partner API client
//! against a scripted wiremock insurer.
//!
//! Run with `cargo run -p osago-examples --example webhook_sink`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use osago_aggregator_lib::{Engine, EngineConfig, PollConfig, Started};
use osago_core::ports::{PortError, PortErrorKind, QuoteSink};
use osago_core::request::sample;
use osago_core::{Clock, EventId, InsurerEvent, InsurerId, RequestEvent, RequestId, SystemClock};
use osago_transport::codec::encode_insurer_event;
use osago_transport::http::{HttpInsurerClient, HttpInsurerConfig};
use osago_transport::memory::MemoryStateStore;
use serde_json::json;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Posts every event to `url`; a non-2xx answer is a failed publish, which
/// the engine retries with backoff.
#[derive(Debug)]
struct WebhookSink {
    client: reqwest::Client,
    url: String,
}

#[async_trait]
impl QuoteSink for WebhookSink {
    async fn publish(&self, event: &InsurerEvent) -> Result<(), PortError> {
        let (stream, key, payload) = encode_insurer_event(event);
        let answer = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-osago-stream", stream.as_str())
            .header("x-osago-key", key)
            .body(payload)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| {
                PortError::new(PortErrorKind::Unavailable, "webhook unreachable").with_source(e)
            })?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(PortError::new(
                PortErrorKind::Unavailable,
                format!("webhook answered {}", answer.status()),
            ))
        }
    }
}

#[tokio::main]
async fn main() {
    // Your endpoint.
    let webhook = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/osago-events"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&webhook)
        .await;
    // An insurer speaking the partner API (docs/insurer-api.md).
    let insurer = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/applications"))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({
            "application_id": "a-1",
            "status": "IN_PROGRESS",
        })))
        .mount(&insurer)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/quotes/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "application_id": "a-1",
            "status": "DECLINED",
            "reason": "outside our underwriting rules",
        })))
        .mount(&insurer)
        .await;

    let id = InsurerId::new("mock").expect("valid id");
    let client = HttpInsurerClient::new(
        id.clone(),
        url::Url::parse(&insurer.uri()).expect("url"),
        HttpInsurerConfig::default(),
    )
    .expect("client");
    let mut config = EngineConfig::default();
    config.poll = PollConfig::fixed(Duration::from_millis(50));
    let engine = Engine::builder()
        .insurer(id, Arc::new(client))
        .sink(Arc::new(WebhookSink {
            client: reqwest::Client::new(),
            url: format!("{}/osago-events", webhook.uri()),
        }))
        .state_store(Arc::new(MemoryStateStore::new()))
        .config(config)
        .build()
        .expect("a valid engine");

    let now = SystemClock.now();
    let event = RequestEvent {
        event_id: EventId::random(),
        request_id: RequestId::random(),
        occurred_at: now,
        deadline_at: now + chrono::Duration::seconds(60),
        request: sample(),
    };
    let Started::Running(fan_out) = engine.start(event).await.expect("started") else {
        unreachable!("a fresh request");
    };
    for outcome in fan_out.wait().await {
        println!(
            "{}: {} (published: {})",
            outcome.insurer_id, outcome.outcome, outcome.published
        );
        assert!(outcome.published);
    }
    // The webhook saw the pending event and the final one.
    let received = webhook.received_requests().await.expect("recording");
    let statuses: Vec<String> = received
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
            body["status"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    println!("webhook received: {statuses:?}");
    assert_eq!(statuses, ["pending", "declined"]);
}
