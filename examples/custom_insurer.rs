//! Embedding the fan-out engine with your own insurer integration.
//!
//! Implement [`InsurerClient`] for your partner API, build an [`Engine`]
//! with it, a sink for quote events and a state store (here the in-memory
//! ones), and let an [`Intake`] consume request events: it acknowledges each
//! once started, keeps leases, and drains on shutdown.
//!
//! Run with `cargo run -p osago-examples --example custom_insurer`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use osago_aggregator_lib::{Engine, Intake, IntakeConfig};
use osago_core::insurer::{Application, InsurerError, PollOutcome, Quote};
use osago_core::ports::{EventPublisher, InsurerClient, LiveFeed};
use osago_core::request::sample;
use osago_core::tariff;
use osago_core::{
    Clock, ErrorKind, EventId, InsurerEvent, InsurerId, Kopecks, QuoteRequest, QuoteStatus,
    RequestEvent, RequestId, SystemClock,
};
use osago_transport::codec::request_outbox_message;
use osago_transport::memory::{MemoryBus, MemoryStateStore};
use tokio_util::sync::CancellationToken;

/// An insurer that prices each request it is given by the regulated
/// formula at its own base rate, and has the price ready at the first poll.
#[derive(Debug)]
struct FlatRateInsurer {
    tb: Kopecks,
    /// Applications by id: the priced answer.
    applications: Mutex<HashMap<String, PollOutcome>>,
}

#[async_trait]
impl InsurerClient for FlatRateInsurer {
    async fn create_application(
        &self,
        idempotency_key: &str,
        request: &QuoteRequest,
    ) -> Result<Application, InsurerError> {
        // A real client POSTs the request with this key, so retries never
        // create two applications; here the key is the application id.
        let start = request.policy.effective_start(SystemClock.today());
        let answer = match tariff::premium(request, self.tb, start) {
            Ok(premium) => PollOutcome::Quoted(Quote {
                premium_kopecks: premium.premium_kopecks,
                coefficients: premium.coefficients,
                capped: premium.capped,
                valid_until: SystemClock.now() + chrono::Duration::hours(24),
                add_ons: vec![],
                message: None,
                purchase_url: None,
                ready_at: Some(SystemClock.now()),
                price_check: None,
            }),
            // The tariff has no answer for this request (an unknown region,
            // say): a decline, not an error of ours.
            Err(err) => PollOutcome::Declined {
                reason: err.to_string(),
            },
        };
        self.applications
            .lock()
            .expect("applications")
            .insert(idempotency_key.to_owned(), answer);
        Ok(Application {
            id: idempotency_key.to_owned(),
            retry_after: Some(Duration::from_millis(10)),
        })
    }

    async fn poll_quote(&self, application_id: &str) -> Result<PollOutcome, InsurerError> {
        self.applications
            .lock()
            .expect("applications")
            .get(application_id)
            .cloned()
            .ok_or_else(|| InsurerError::new(ErrorKind::Rejected, "unknown application"))
    }
}

#[tokio::main]
async fn main() {
    let bus = MemoryBus::new();
    let mut live = bus.follow().await.expect("memory feed");
    let engine = Engine::builder()
        .insurer(
            InsurerId::new("flat-rate").expect("valid id"),
            Arc::new(FlatRateInsurer {
                tb: Kopecks::from_rub(7_000),
                applications: Mutex::default(),
            }),
        )
        .sink(Arc::new(bus.clone()))
        .state_store(Arc::new(MemoryStateStore::new()))
        .build()
        .expect("a valid engine");
    let intake = Intake::new(engine, Arc::new(bus.clone()), IntakeConfig::default())
        .expect("a valid intake");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(intake.run(shutdown.clone()));

    // What core-app's outbox relay does: a request event on the bus.
    let now = SystemClock.now();
    let event = RequestEvent {
        event_id: EventId::random(),
        request_id: RequestId::random(),
        occurred_at: now,
        deadline_at: now + chrono::Duration::seconds(60),
        request: sample(),
    };
    bus.publish(&request_outbox_message(&event))
        .await
        .expect("published");

    // Prices arrive as events: pending, then the final one.
    let expected = tariff::premium(
        &event.request,
        Kopecks::from_rub(7_000),
        event.request.policy.effective_start(SystemClock.today()),
    )
    .expect("the sample is priced");
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), live.next())
            .await
            .expect("an event within 5 s")
            .expect("the feed is open")
            .event;
        let InsurerEvent::Quote(quote) = next else {
            panic!("unexpected error event: {next:?}");
        };
        println!("{}: {:?}", quote.insurer_id, quote.status);
        if quote.status == QuoteStatus::Quoted {
            let premium = quote.quote.expect("a quoted event has a quote");
            assert_eq!(premium.premium_kopecks, expected.premium_kopecks);
            println!("premium: {}", premium.premium_kopecks);
            break;
        }
    }
    shutdown.cancel();
    running.await.expect("the intake drains");
}
