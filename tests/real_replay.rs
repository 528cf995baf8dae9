//! A replayed request event starts no second fan-out, even on another
//! aggregator instance: the dedup mark lives in a real Valkey.

use std::sync::Arc;
use std::time::Duration;

use osago_aggregator_lib::{Engine, EngineConfig, PollConfig, Started};
use osago_core::request::sample;
use osago_core::{Clock, EventId, InsurerId, RequestEvent, RequestId, SystemClock};
use osago_testkit::Valkey;
use osago_transport::http::{HttpInsurerClient, HttpInsurerConfig};
use osago_transport::memory::MemoryBus;
use osago_transport::valkey::{ValkeyConfig, ValkeyStore};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn engine(valkey: &Valkey, insurer: &MockServer) -> Engine {
    let state = ValkeyStore::connect(&valkey.url(), ValkeyConfig::default())
        .await
        .unwrap();
    let client = HttpInsurerClient::new(
        InsurerId::new("mock").unwrap(),
        url::Url::parse(&insurer.uri()).unwrap(),
        HttpInsurerConfig::default(),
    )
    .unwrap();
    let mut config = EngineConfig::default();
    config.poll = PollConfig::fixed(Duration::from_millis(50));
    Engine::builder()
        .insurer(InsurerId::new("mock").unwrap(), Arc::new(client))
        .sink(Arc::new(MemoryBus::new()))
        .state_store(Arc::new(state))
        .config(config)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_replayed_request_event_starts_no_second_fan_out() {
    let valkey = Valkey::start().await;
    let insurer = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/applications"))
        .respond_with(
            ResponseTemplate::new(202)
                .set_body_json(json!({"application_id": "a-1", "status": "IN_PROGRESS"})),
        )
        .expect(1)
        .mount(&insurer)
        .await;
    Mock::given(method("GET"))
        .and(path("/quotes/a-1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"application_id": "a-1", "status": "DECLINED", "reason": "no"}),
            ),
        )
        .mount(&insurer)
        .await;
    let now = SystemClock.now();
    let event = RequestEvent {
        event_id: EventId::random(),
        request_id: RequestId::random(),
        occurred_at: now,
        deadline_at: now + chrono::Duration::seconds(60),
        request: sample(),
    };
    let first = engine(&valkey, &insurer).await;
    match first.start(event.clone()).await.unwrap() {
        Started::Running(fan_out) => {
            let outcomes = fan_out.wait().await;
            assert_eq!(outcomes[0].outcome, "declined");
        }
        Started::Duplicate => panic!("the first delivery starts the fan-out"),
    }
    // The same event again, on the same instance and on another one.
    assert!(matches!(
        first.start(event.clone()).await.unwrap(),
        Started::Duplicate
    ));
    let second = engine(&valkey, &insurer).await;
    assert!(matches!(
        second.start(event).await.unwrap(),
        Started::Duplicate
    ));
    // MockServer verifies `expect(1)` on drop: one application only.
}
