//! Outbox latency on the real services: from the commit of a request (and
//! its outbox row) in PostgreSQL to (a) the broker's acknowledgement of the
//! event on `osago.requests.v1` and (b) a consumer receiving it. The relay
//! is woken by LISTEN/NOTIFY; its fallback poll is 1 s, so a missed wake-up
//! would show as a ~1 s outlier.
//!
//! `cargo bench -p osago-benches --bench outbox_latency` (starts a private
//! PostgreSQL and tansu; about a minute). `OSAGO_BENCH_REQUESTS` sets the
//! count (default 1000).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use core_app::{Metrics, RelayConfig};
use osago_core::outbox::OutboxMessage;
use osago_core::ports::{EventPublisher, PortError, RequestSource, RequestStore};
use osago_core::request::sample;
use osago_core::{EventId, RequestEvent, RequestId};
use osago_testkit::{Postgres, Tansu};
use osago_transport::kafka::{KafkaBus, KafkaConfig};
use osago_transport::postgres::{PostgresConfig, PostgresStore};
use tokio_util::sync::CancellationToken;

type Stamps = Arc<Mutex<HashMap<RequestId, Instant>>>;

/// Records when the broker acknowledged each request event.
struct Timed {
    inner: Arc<KafkaBus>,
    acked: Stamps,
}

#[async_trait]
impl EventPublisher for Timed {
    async fn publish(&self, message: &OutboxMessage) -> Result<(), PortError> {
        self.inner.publish(message).await?;
        if let Ok(id) = message.key.parse() {
            self.acked.lock().unwrap().insert(id, Instant::now());
        }
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn summary(name: &str, mut values: Vec<Duration>) -> String {
    values.sort();
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    format!(
        "| {name} | {} | {} | {} | {} | {} |",
        values.len(),
        ms(percentile(&values, 0.5)),
        ms(percentile(&values, 0.9)),
        ms(percentile(&values, 0.99)),
        ms(*values.last().unwrap())
    )
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::var("OSAGO_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let postgres = Postgres::start().await;
    let tansu = Tansu::start().await;
    let url = postgres.create_database("bench").await;
    let store = Arc::new(
        PostgresStore::connect(&url, PostgresConfig::default())
            .await
            .expect("postgres"),
    );
    let bus = Arc::new(
        KafkaBus::connect(KafkaConfig::new(tansu.bootstrap()))
            .await
            .expect("kafka"),
    );
    let acked: Stamps = Arc::default();
    let consumed: Stamps = Arc::default();
    let committed: Stamps = Arc::default();

    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(core_app::relay::run(
        store.clone(),
        Arc::new(Timed {
            inner: bus.clone(),
            acked: acked.clone(),
        }),
        Arc::new(osago_core::SystemClock),
        RelayConfig::default(),
        Metrics::default(),
        shutdown.clone(),
    ));
    let mut subscription = RequestSource::subscribe(&*bus, "outbox-latency-bench")
        .await
        .expect("subscribe");
    let consumer = {
        let consumed = consumed.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            while let Some(Ok(delivery)) = subscription.next().await {
                consumed
                    .lock()
                    .unwrap()
                    .insert(delivery.event.request_id, Instant::now());
                delivery.ack.ack();
                seen += 1;
                if seen == count + 20 {
                    return;
                }
            }
        })
    };

    let write = |request_id: RequestId| {
        let store = store.clone();
        async move {
            let now = Utc::now();
            let event = RequestEvent {
                event_id: EventId::random(),
                request_id,
                occurred_at: now,
                deadline_at: now + chrono::Duration::seconds(60),
                request: sample(),
            };
            store
                .create(
                    &event,
                    &osago_core::request::ConsentRecord::received(&event, [127, 0, 0, 1].into()),
                )
                .await
                .expect("create");
            Instant::now()
        }
    };

    // Warm-up: connections, group join, first fetches.
    for _ in 0..20 {
        write(RequestId::random()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    acked.lock().unwrap().clear();
    consumed.lock().unwrap().clear();

    let started = Instant::now();
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let id = RequestId::random();
        let at = write(id).await;
        committed.lock().unwrap().insert(id, at);
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), consumer).await;
    let elapsed = started.elapsed();
    shutdown.cancel();
    let _ = relay.await;

    let committed = committed.lock().unwrap();
    let latencies = |stamps: &Stamps| -> Vec<Duration> {
        let stamps = stamps.lock().unwrap();
        ids.iter()
            .filter_map(|id| Some(stamps.get(id)?.saturating_duration_since(committed[id])))
            .collect()
    };
    let to_ack = latencies(&acked);
    let to_consumer = latencies(&consumed);
    println!("outbox latency, {count} requests, one every ~5 ms ({elapsed:.1?} in all)");
    println!("| from commit to | n | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    println!(
        "{}",
        summary("broker ack on osago.requests.v1", to_ack.clone())
    );
    println!("{}", summary("consumer receives it", to_consumer.clone()));
    assert_eq!(to_ack.len(), count, "every request was published");
    assert_eq!(to_consumer.len(), count, "every request was consumed");
}
