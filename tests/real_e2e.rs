//! The real pipeline end to end: core-app and the aggregator as separate
//! processes (the real binaries) on a private PostgreSQL, Valkey and
//! Kafka-protocol broker, eight simulated insurers (the real simulator
//! binary), and a client that POSTs and reads the SSE stream.
//!
//! It also holds the operability contract (issue 15) on the real stack: one
//! trace id in the JSON logs of core-app, the aggregator and the insurer
//! simulators; every record on the topics valid against its JSON Schema
//! and carrying the trace; every HTTP answer valid against the OpenAPI
//! document; poison records in the dead-letter topic with their metric; the
//! on-call metrics on both services' `/metrics`.

use std::time::Duration;

use deadpool_redis::redis;
use osago_testkit::{free_port, Postgres, Tansu, Valkey};
use osago_tests::processes::{wait_healthy, Service};
use osago_tests::{
    complete_quotes, contracts, read_stream, rows_by_insurer, sample_json, without_started_at,
};
use serde_json::Value;

/// The trace the test's POST starts (W3C `traceparent`).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

const LINEUP: [(&str, &str); 8] = [
    ("swift", "fast"),
    ("steady", "typical"),
    ("patient", "calculate-then-poll"),
    ("legacy", "slow-legacy"),
    ("flaky", "flaky"),
    ("strict", "strict-underwriter"),
    ("addon", "mandatory-add-on"),
    ("silent", "hang"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flows_through_the_real_services() {
    let logs = tempfile::tempdir().unwrap();
    let postgres = Postgres::start().await;
    let valkey = Valkey::start().await;
    let tansu = Tansu::start().await;
    let database = postgres.create_database("osago").await;

    let mut insurers = Vec::new();
    let mut specs = Vec::new();
    for (id, archetype) in LINEUP {
        let port = free_port();
        let args = [
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--insurer-id".to_owned(),
            id.to_owned(),
            "--archetype".to_owned(),
            archetype.to_owned(),
            "--speed".to_owned(),
            "20".to_owned(),
            "--log-format".to_owned(),
            "json".to_owned(),
        ];
        insurers.push(Service::start(
            &format!("sim-{id}"),
            "insurer-sim",
            &args,
            logs.path(),
        ));
        specs.push(format!("{id}=http://127.0.0.1:{port}/"));
    }

    let aggregator_port = free_port();
    let mut aggregator = Service::start(
        "aggregator",
        "aggregator",
        &[
            "--listen".to_owned(),
            format!("127.0.0.1:{aggregator_port}"),
            "--bus".to_owned(),
            format!("kafka://{}", tansu.bootstrap()),
            "--state".to_owned(),
            valkey.url(),
            "--allow-plain-http".to_owned(),
            "--insurer".to_owned(),
            specs.join(","),
            "--insurer-deadline".to_owned(),
            "5s".to_owned(),
            "--poll-interval".to_owned(),
            "200ms".to_owned(),
            "--log-format".to_owned(),
            "json".to_owned(),
            "--set".to_owned(),
            "kafka.statistics_interval=1s".to_owned(),
        ],
        logs.path(),
    );
    let core_port = free_port();
    let core_admin_port = free_port();
    let mut core = Service::start(
        "core-app",
        "core-app",
        &[
            "--listen".to_owned(),
            format!("127.0.0.1:{core_port}"),
            "--admin-listen".to_owned(),
            format!("127.0.0.1:{core_admin_port}"),
            "--bus".to_owned(),
            format!("kafka://{}", tansu.bootstrap()),
            "--database".to_owned(),
            database.clone(),
            "--request-deadline".to_owned(),
            "5s".to_owned(),
            "--heartbeat".to_owned(),
            "1s".to_owned(),
            "--log-format".to_owned(),
            "json".to_owned(),
            "--set".to_owned(),
            "kafka.statistics_interval=1s".to_owned(),
        ],
        logs.path(),
    );
    wait_healthy(
        &aggregator,
        &format!("http://127.0.0.1:{aggregator_port}/health/ready"),
        Duration::from_secs(90),
    )
    .await;
    wait_healthy(
        &core,
        &format!("http://127.0.0.1:{core_admin_port}/health/ready"),
        Duration::from_secs(90),
    )
    .await;
    // The admin endpoints live on the admin listener only.
    for path in ["/metrics", "/health", "/health/ready"] {
        let public = reqwest::get(format!("http://127.0.0.1:{core_port}{path}"))
            .await
            .unwrap();
        assert_eq!(public.status(), 404, "{path} on the public listener");
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{core_admin_port}/metrics"))
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);

    let base = format!("http://127.0.0.1:{core_port}");
    let http = reqwest::Client::new();
    let openapi = contracts::openapi();
    let created = http
        .post(format!("{base}/api/osago/requests"))
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .json(&sample_json())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let created: Value = created.json().await.unwrap();
    contracts::assert_openapi_valid(&openapi, "Created", &created);
    let request_id = created["request_id"].as_str().unwrap().to_owned();
    let stream = http
        .get(format!("{base}{}", created["stream_url"].as_str().unwrap()))
        .bearer_auth(created["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let events = read_stream(stream, Duration::from_secs(60)).await;
    let context = || {
        format!(
            "events: {events:#?}\naggregator:\n{}\ncore-app:\n{}",
            aggregator.tail(),
            core.tail()
        )
    };

    assert_eq!(
        events.last().map(|e| e.event.as_str()),
        Some("done"),
        "{}",
        context()
    );
    let by_insurer = rows_by_insurer(&events);
    assert_eq!(by_insurer.len(), LINEUP.len(), "{}", context());
    for event in events.iter().filter(|e| e.event == "insurer") {
        contracts::assert_openapi_valid(&openapi, "OfferRow", &event.json());
    }
    for (insurer, rows) in &by_insurer {
        let statuses: Vec<&str> = rows.iter().map(|r| r["status"].as_str().unwrap()).collect();
        assert_eq!(
            statuses.first(),
            Some(&"pending"),
            "{insurer}: {statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s != "pending").count(),
            1,
            "{insurer}: {statuses:?}"
        );
    }
    let silent = by_insurer["silent"].last().unwrap();
    assert_eq!(silent["error_kind"], "timeout");

    // The read model equals what the stream showed.
    let quotes_url = format!("{base}{}", created["quotes_url"].as_str().unwrap());
    let quotes = complete_quotes(
        &http,
        &quotes_url,
        created["access_token"].as_str().unwrap(),
        Duration::from_secs(20),
    )
    .await;
    contracts::assert_openapi_valid(&openapi, "QuotesView", &quotes);
    for row in quotes["insurers"].as_array().unwrap() {
        let insurer = row["insurer_id"].as_str().unwrap();
        assert_eq!(
            without_started_at(row),
            without_started_at(by_insurer[insurer].last().unwrap()),
            "{insurer}"
        );
    }

    // The outbox row was published and cleaned up; the read model has a row per insurer.
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM osago_outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(outbox, 0);
    let offers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM osago_offers WHERE status <> 'pending'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(offers as usize, LINEUP.len());

    // Every key the aggregator wrote to Valkey has a TTL of at most 6 hours
    // (shared-quota keys live milliseconds; PTTL -2 means it just expired).
    let client = redis::Client::open(valkey.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the aggregator kept state in Valkey");
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            ttl == -2 || (1..=6 * 3600 * 1000).contains(&ttl),
            "{key} has PTTL {ttl} ms"
        );
    }

    let records = topic_records(&tansu.bootstrap()).await;
    every_record_is_valid_and_traced(&records, &request_id);
    poison_records_land_in_the_dead_letter_topic(
        &tansu.bootstrap(),
        &format!("http://127.0.0.1:{aggregator_port}/metrics"),
        &format!("http://127.0.0.1:{core_admin_port}/metrics"),
    )
    .await;
    the_on_call_metrics_are_exposed(
        &format!("http://127.0.0.1:{aggregator_port}/metrics"),
        &format!("http://127.0.0.1:{core_admin_port}/metrics"),
    )
    .await;

    // Both services stop cleanly on SIGTERM.
    assert_eq!(
        core.terminate(Duration::from_secs(20)).await,
        Some(0),
        "{}",
        core.tail()
    );
    assert_eq!(
        aggregator.terminate(Duration::from_secs(90)).await,
        Some(0),
        "{}",
        aggregator.tail()
    );
    // One trace id across the three kinds of process, from their JSON logs.
    for service in [&core, &aggregator, &insurers[0], &insurers[1]] {
        let lines = traced_lines(service);
        assert!(
            !lines.is_empty(),
            "no JSON log line of {} carries trace {TRACE_ID}:\n{}",
            service.name,
            service.tail()
        );
    }
    let core_lines = traced_lines(&core);
    assert!(
        core_lines
            .iter()
            .any(|l| l["message"] == "quote request accepted"),
        "{core_lines:?}"
    );
    assert!(traced_lines(&aggregator)
        .iter()
        .any(|l| l["message"] == "fan-out started"));
    assert!(traced_lines(&insurers[0])
        .iter()
        .any(|l| l["message"] == "application created"));
    // Every line of every log is JSON.
    for service in insurers.iter().chain([&core, &aggregator]) {
        for line in std::fs::read_to_string(&service.log).unwrap().lines() {
            assert!(
                serde_json::from_str::<Value>(line).is_ok(),
                "{}: not JSON: {line}",
                service.name
            );
        }
    }
    drop(insurers);
}

/// The JSON log lines of `service` that carry [`TRACE_ID`] (as an event
/// field, or a field of the current span).
fn traced_lines(service: &Service) -> Vec<Value> {
    std::fs::read_to_string(&service.log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["trace_id"] == TRACE_ID || line["span"]["trace_id"] == TRACE_ID)
        .collect()
}

/// One record read back from the broker.
#[derive(Debug)]
struct Record {
    topic: String,
    key: Option<String>,
    payload: Vec<u8>,
    headers: std::collections::BTreeMap<String, String>,
}

/// Every record on the three topics and the dead-letter topic, read from
/// the beginning by a fresh consumer group until 5 s bring nothing new.
async fn topic_records(bootstrap: &str) -> Vec<Record> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};

    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("e2e-reader-{}", uuid_like()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer
        .subscribe(&[
            "osago.requests.v1",
            "osago.quotes.v1",
            "osago.errors.v1",
            "osago.dead-letter.v1",
        ])
        .unwrap();
    let mut records = Vec::new();
    let mut quiet_for = Duration::from_secs(20); // the first join takes a while
    loop {
        match tokio::time::timeout(quiet_for, consumer.recv()).await {
            Ok(Ok(message)) => {
                quiet_for = Duration::from_secs(5);
                let headers = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(Record {
                    topic: message.topic().to_owned(),
                    key: message
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Ok(Err(err)) => panic!("reading the topics: {err}"),
            Err(_) => break,
        }
    }
    records
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Every record the services wrote validates against its topic's JSON
/// Schema and carries the content type and schema version; the request's
/// record and its insurers' events carry the POST's trace.
fn every_record_is_valid_and_traced(records: &[Record], request_id: &str) {
    let mut validated = std::collections::BTreeMap::<&str, usize>::new();
    let mut traced = 0;
    for topic in ["osago.requests.v1", "osago.quotes.v1", "osago.errors.v1"] {
        let validator = contracts::topic_validator(topic);
        for record in records.iter().filter(|r| r.topic == topic) {
            let event: Value = serde_json::from_slice(&record.payload)
                .unwrap_or_else(|e| panic!("{topic}: a record is not JSON: {e}"));
            let errors: Vec<String> = validator
                .iter_errors(&event)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{topic}: {errors:?}");
            assert_eq!(record.headers["content-type"], "application/json");
            assert_eq!(record.headers["osago-schema-version"], "1");
            if event["request_id"] == request_id {
                let traceparent = record.headers.get("traceparent").unwrap_or_else(|| {
                    panic!("{topic}: a record of the request has no traceparent")
                });
                assert_eq!(&traceparent[3..35], TRACE_ID, "{topic}");
                traced += 1;
            }
            *validated.entry(topic).or_default() += 1;
        }
    }
    assert_eq!(
        validated.get("osago.requests.v1"),
        Some(&1),
        "{validated:?}"
    );
    // A pending and a final event per insurer (the silent one's final is a timeout error).
    assert!(
        validated.get("osago.quotes.v1").copied().unwrap_or(0) >= LINEUP.len(),
        "{validated:?}"
    );
    assert!(validated.contains_key("osago.errors.v1"), "{validated:?}");
    assert_eq!(
        traced,
        records
            .iter()
            .filter(|r| r.topic != "osago.dead-letter.v1")
            .count()
    );
}

/// `name{labels} value` lines of a `/metrics` text whose name is `family`.
async fn samples(url: &str, family: &str) -> Vec<String> {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(family) && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// A record the request topic's consumer (the aggregator) and one the
/// quote topic's consumer (core-app's read model) cannot decode: each lands
/// in the dead-letter topic, with where it came from, and
/// `osago_kafka_dead_letters_total` counts it on the service that read it.
async fn poison_records_land_in_the_dead_letter_topic(
    bootstrap: &str,
    aggregator_metrics: &str,
    core_metrics: &str,
) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for (topic, key, payload) in [
        ("osago.requests.v1", "poison-request", &b"{not json"[..]),
        (
            "osago.quotes.v1",
            "poison-quote",
            &br#"{"event_id": 1}"#[..],
        ),
    ] {
        producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for (url, topic) in [
        (aggregator_metrics, "osago.requests.v1"),
        (core_metrics, "osago.quotes.v1"),
    ] {
        loop {
            let dead = samples(url, "osago_kafka_dead_letters_total").await;
            if dead
                .iter()
                .any(|l| l.contains(&format!("topic=\"{topic}\"")) && l.ends_with(" 1"))
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no dead letter counted for {topic}: {dead:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let records = topic_records(bootstrap).await;
    let dead: Vec<&Record> = records
        .iter()
        .filter(|r| r.topic == "osago.dead-letter.v1")
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    for (key, source, payload) in [
        ("poison-request", "osago.requests.v1", &b"{not json"[..]),
        (
            "poison-quote",
            "osago.quotes.v1",
            &br#"{"event_id": 1}"#[..],
        ),
    ] {
        let letter = dead
            .iter()
            .find(|r| r.key.as_deref() == Some(key))
            .unwrap_or_else(|| panic!("no dead letter keyed {key}: {dead:?}"));
        assert_eq!(letter.payload, payload);
        assert_eq!(letter.headers["osago-dead-letter-topic"], source);
        assert!(letter.headers["osago-dead-letter-offset"]
            .parse::<i64>()
            .is_ok());
        assert!(letter.headers["osago-dead-letter-reason"].contains("undecodable"));
    }
}

/// The metrics an on-call needs, on both services, after a real request.
async fn the_on_call_metrics_are_exposed(aggregator_metrics: &str, core_metrics: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for (url, families) in [
        (
            core_metrics,
            &[
                "osago_core_http_requests_total{",
                "osago_core_http_request_seconds_bucket{",
                "osago_core_open_streams ",
                "osago_core_first_price_seconds_bucket{",
                "osago_core_outbox_backlog ",
                "osago_core_outbox_oldest_age_seconds ",
                "osago_core_insurer_answer_seconds_bucket{",
                "osago_core_insurer_outcomes_total{",
                "osago_kafka_consumer_lag{",
                "osago_kafka_records_skipped_total{",
                "osago_kafka_dead_letters_total{",
                "osago_build_info{service=\"core-app\"",
            ][..],
        ),
        (
            aggregator_metrics,
            &[
                "osago_aggregator_answer_seconds_bucket{",
                "osago_aggregator_outcomes_total{",
                "osago_aggregator_breaker_state{",
                "osago_kafka_consumer_lag{",
                "osago_kafka_records_skipped_total{",
                "osago_kafka_dead_letters_total{",
                "osago_build_info{service=\"aggregator\"",
            ][..],
        ),
    ] {
        for family in families {
            loop {
                if !samples(url, family).await.is_empty() {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{url} has no {family}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}
