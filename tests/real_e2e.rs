//! The real pipeline end to end: core-app and the aggregator as separate
//! processes (the real binaries) on a private PostgreSQL, Valkey and
//! Kafka-protocol broker, eight simulated insurers (the real simulator
//! binary), and a client that POSTs and reads the SSE stream.

use std::time::Duration;

use deadpool_redis::redis;
use osago_testkit::{free_port, Postgres, Tansu, Valkey};
use osago_tests::processes::{wait_healthy, Service};
use osago_tests::{complete_quotes, read_stream, rows_by_insurer, sample_json, without_started_at};
use serde_json::Value;

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
    let created = http
        .post(format!("{base}/api/osago/requests"))
        .json(&sample_json())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let created: Value = created.json().await.unwrap();
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
    drop(insurers);
}
