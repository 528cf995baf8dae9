//! The embedded stack end to end: real HTTP client, real SSE, sped-up
//! simulated insurers (one never answers, one answers garbage).

use std::time::Duration;

use insurer_sim::Archetype;
use osago::{Embedded, EmbeddedConfig};
use osago_core::InsurerId;
use osago_tests::{complete_quotes, read_stream, rows_by_insurer, sample_json, without_started_at};
use serde_json::Value;

const INSURERS: usize = 9;

fn lineup() -> Vec<(InsurerId, Archetype)> {
    [
        ("swift", Archetype::Fast),
        ("steady", Archetype::Typical),
        ("patient", Archetype::CalculateThenPoll),
        ("flaky", Archetype::Flaky),
        ("strict", Archetype::StrictUnderwriter),
        ("addon", Archetype::MandatoryAddOn),
        ("silent", Archetype::Hang),
        ("garbage", Archetype::Garbage),
        ("broken", Archetype::Broken),
    ]
    .into_iter()
    .map(|(id, a)| (InsurerId::new(id).unwrap(), a))
    .collect()
}

async fn start() -> Embedded {
    let mut config = EmbeddedConfig {
        insurers: lineup(),
        sim_speed: 20.0,
        ..EmbeddedConfig::default()
    };
    config.engine.insurer_deadline = Duration::from_secs(3);
    config.engine.poll =
        osago_aggregator_lib::resilience::PollConfig::fixed(Duration::from_millis(300));
    config.core.request_deadline = Duration::from_secs(3);
    config.core.stream_grace = Duration::from_secs(2);
    config.core.heartbeat_interval = Duration::from_millis(500);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    osago::start(listener, config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_insurer_reaches_exactly_one_final_state_on_the_stream() {
    let system = start().await;
    let base = format!("http://{}", system.addr);
    let http = reqwest::Client::new();

    let created = http
        .post(format!("{base}/api/osago/requests"))
        .json(&sample_json())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let created: Value = created.json().await.unwrap();
    let stream_url = format!("{base}{}", created["stream_url"].as_str().unwrap());
    let quotes_url = format!("{base}{}", created["quotes_url"].as_str().unwrap());

    let response = http
        .get(&stream_url)
        .bearer_auth(created["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = read_stream(response, Duration::from_secs(30)).await;

    // done last, nothing after it.
    let last = events.last().expect("events");
    assert_eq!(last.event, "done", "{events:#?}");
    assert!(
        events.iter().any(|e| e.event == "heartbeat"),
        "heartbeats while waiting"
    );

    let by_insurer = rows_by_insurer(&events);
    assert_eq!(by_insurer.len(), INSURERS, "{by_insurer:#?}");
    for (insurer, seen) in &by_insurer {
        let statuses: Vec<&str> = seen.iter().map(|v| v["status"].as_str().unwrap()).collect();
        assert_eq!(
            statuses[0], "pending",
            "{insurer}: pending first: {statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == "pending").count(),
            1,
            "{insurer}: one pending"
        );
        let finals: Vec<&&str> = statuses.iter().filter(|s| **s != "pending").collect();
        assert_eq!(
            finals.len(),
            1,
            "{insurer}: exactly one final: {statuses:?}"
        );
        assert_eq!(seen.last().unwrap()["insurers_total"], INSURERS);
    }
    let final_of = |id: &str| by_insurer[id].last().unwrap().clone();
    let silent = final_of("silent");
    assert_eq!(
        (silent["status"].as_str(), silent["error_kind"].as_str()),
        (Some("failed"), Some("timeout"))
    );
    let garbage = final_of("garbage");
    assert_eq!(
        (garbage["status"].as_str(), garbage["error_kind"].as_str()),
        (Some("failed"), Some("bad_response"))
    );
    let swift = final_of("swift");
    if swift["status"] == "quoted" {
        assert!(swift["quote"]["premium_kopecks"].as_i64().unwrap() > 0);
    }
    assert!(
        by_insurer
            .values()
            .any(|s| s.last().unwrap()["status"] == "quoted"),
        "at least one price"
    );

    // A failure at application time (500 on POST) is a final error too.
    let broken = final_of("broken");
    assert_eq!(
        (broken["status"].as_str(), broken["error_kind"].as_str()),
        (Some("failed"), Some("unavailable"))
    );

    // Event ids are cursors; the last insurer event's id names every insurer.
    let last_id = events.iter().rev().find_map(|e| e.id.clone()).unwrap();
    assert_eq!(last_id.split(',').count(), INSURERS, "{last_id}");

    // The done event tallies the outcomes.
    let done = last.json();
    let total: u64 = ["quoted", "declined", "failed"]
        .iter()
        .map(|k| done[k].as_u64().unwrap())
        .sum();
    assert_eq!(
        (total as usize, done["pending"].as_u64()),
        (INSURERS, Some(0))
    );

    // The quotes endpoint returns the same final state.
    let quotes = complete_quotes(
        &http,
        &quotes_url,
        created["access_token"].as_str().unwrap(),
        Duration::from_secs(10),
    )
    .await;
    let rows = quotes["insurers"].as_array().unwrap();
    assert_eq!(rows.len(), INSURERS);
    for row in rows {
        let id = row["insurer_id"].as_str().unwrap();
        assert_eq!(
            without_started_at(row),
            without_started_at(&final_of(id)),
            "{id}: quotes endpoint equals the stream's final state"
        );
    }

    // Reconnecting with Last-Event-ID after the end: 204, so EventSource
    // stops instead of replaying `done` every `retry`.
    let again = http
        .get(&stream_url)
        .bearer_auth(created["access_token"].as_str().unwrap())
        .header("Last-Event-ID", &last_id)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 204);
    assert!(again.text().await.unwrap().is_empty());
    // Opened afresh (no cursor) it is the whole state and `done`.
    let fresh = http
        .get(&stream_url)
        .bearer_auth(created["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let replay = read_stream(fresh, Duration::from_secs(10)).await;
    assert_eq!(replay.last().unwrap().event, "done");
    assert_eq!(rows_by_insurer(&replay).len(), INSURERS);

    // With a partial cursor, only what the client lacks is sent.
    let partial = format!("silent:{}", silent["version"]);
    let again = http
        .get(&stream_url)
        .bearer_auth(created["access_token"].as_str().unwrap())
        .header("Last-Event-ID", partial)
        .send()
        .await
        .unwrap();
    let replay = read_stream(again, Duration::from_secs(10)).await;
    let replayed = rows_by_insurer(&replay);
    assert_eq!(replayed.len(), INSURERS - 1);
    assert!(!replayed.contains_key("silent"));

    // The pipeline's stages were timed: the aggregator's publish, the live
    // feed's delay and the SSE delivery, once per event each (the stream
    // was open before any event arrived, so every live row went through).
    let metrics = http
        .get(format!("http://{}/metrics", system.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |name: &str| -> u64 {
        let line = format!("{name}_count ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    };
    let published = count("osago_aggregator_publish_seconds");
    assert!(published >= 2 * INSURERS as u64, "{published}");
    assert_eq!(count("osago_core_live_feed_delay_seconds"), published);
    let delivered = count("osago_core_sse_delivery_seconds");
    assert!(delivered >= INSURERS as u64, "{delivered}");
    // The buyer's first price, once: the streams opened later had a price
    // in their snapshot already.
    assert_eq!(count("osago_core_first_price_seconds"), 1);

    // The outbox row was published and removed; every state entry has a TTL.
    assert_eq!(system.requests.outbox_len(), 0);
    let ttls = system.state.ttls();
    assert!(!ttls.is_empty());
    assert!(ttls
        .iter()
        .all(|t| *t > Duration::ZERO && *t <= Duration::from_secs(6 * 3600)));

    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_health_are_served() {
    let system = start().await;
    let base = format!("http://{}", system.addr);
    let page = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script src="/app.js""#));
    let script = reqwest::get(format!("{base}/app.js"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(script.contains("/api/osago/requests"));
    let health = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "osago_core_requests_created",
        "osago_core_open_streams",
        "osago_core_sse_events_sent",
        "osago_core_insurer_outcomes",
        "osago_core_insurer_answer_seconds",
        "osago_aggregator_fanouts",
    ] {
        assert!(metrics.contains(name), "{name} in /metrics");
    }
    system.stop().await;
}
