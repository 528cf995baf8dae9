//! Embedding the fan-out engine with your own insurer integration.
//!
//! Implement [`InsurerClient`] for your partner API, hand it to the
//! [`Engine`] together with a sink for quote events and a state store (here
//! the in-memory ones), and feed it request events.
//!
//! Run with `cargo run -p osago-examples --example custom_insurer`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use osago_aggregator_lib::{Engine, EngineConfig, EngineMetrics, Insurer, Started};
use osago_core::insurer::{Application, InsurerError, PollOutcome, Quote};
use osago_core::ports::{InsurerClient, LiveFeed};
use osago_core::request::sample;
use osago_core::tariff;
use osago_core::{
    Clock, EventId, InsurerId, Kopecks, QuoteRequest, RequestEvent, RequestId, SystemClock,
};
use osago_transport::memory::{MemoryBus, MemoryStateStore};

/// An insurer that prices every request at its own base rate at once.
#[derive(Debug)]
struct FlatRateInsurer {
    tb: Kopecks,
}

#[async_trait]
impl InsurerClient for FlatRateInsurer {
    async fn create_application(
        &self,
        idempotency_key: &str,
        _request: &QuoteRequest,
    ) -> Result<Application, InsurerError> {
        // A real client would POST the request with this key, so retries
        // never create two applications.
        Ok(Application {
            id: idempotency_key.to_owned(),
            retry_after: Some(Duration::from_millis(10)),
        })
    }

    async fn poll_quote(&self, _application_id: &str) -> Result<PollOutcome, InsurerError> {
        let request = sample();
        let start = request.policy.effective_start(SystemClock.today());
        let premium = tariff::premium(&request, self.tb, start)
            .map_err(|e| InsurerError::new(osago_core::ErrorKind::Rejected, e.to_string()))?;
        Ok(PollOutcome::Quoted(Quote {
            premium_kopecks: premium.premium_kopecks,
            coefficients: premium.coefficients,
            capped: premium.capped,
            valid_until: SystemClock.now() + chrono::Duration::hours(24),
            add_ons: vec![],
            message: None,
            purchase_url: None,
            ready_at: Some(SystemClock.now()),
        }))
    }
}

#[tokio::main]
async fn main() {
    let bus = MemoryBus::new();
    let mut live = bus.follow().await.expect("memory feed");
    let engine = Engine::new(
        vec![Insurer {
            id: InsurerId::new("flat-rate").expect("valid id"),
            client: Arc::new(FlatRateInsurer {
                tb: Kopecks::from_rub(7_000),
            }),
        }],
        Arc::new(bus.clone()),
        Arc::new(MemoryStateStore::new()),
        Arc::new(SystemClock),
        EngineConfig::default(),
        EngineMetrics::default(),
    );
    let now = SystemClock.now();
    let event = RequestEvent {
        event_id: EventId::random(),
        request_id: RequestId::random(),
        occurred_at: now,
        deadline_at: now + chrono::Duration::seconds(60),
        request: sample(),
    };
    if let Started::Running(fan_out) = engine.start(event).await.expect("fan-out starts") {
        for outcome in fan_out.wait().await {
            println!("{}: {}", outcome.insurer_id, outcome.outcome);
        }
    }
    while let Some(event) = tokio::time::timeout(Duration::from_millis(10), live.next())
        .await
        .ok()
        .flatten()
    {
        println!("event v{} final={}", event.version(), event.is_final());
    }
}
