//! The lawful price range (issue 16, item 5): core-app answers the POST
//! with the range the regulated formula allows for this request, before any
//! insurer answers; every quote carries its premium checked against it
//! (set by the aggregator, never taken from the insurer), and a premium
//! outside it is counted per insurer. The `bait-price` archetype quotes
//! half the lowest lawful premium.

use std::time::Duration;

use insurer_sim::Archetype;
use osago::EmbeddedConfig;
use osago_core::InsurerId;
use osago_tests::{contracts, post_sample, read_stream, rows_by_insurer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bait_price_is_flagged_in_the_event_the_view_and_the_metric() {
    let mut config = EmbeddedConfig {
        insurers: [("fair", Archetype::Fast), ("bait", Archetype::BaitPrice)]
            .into_iter()
            .map(|(id, a)| (InsurerId::new(id).unwrap(), a))
            .collect(),
        sim_speed: 20.0,
        ..EmbeddedConfig::default()
    };
    config.core = config.core.without_client_limits();
    config.engine.insurer_deadline = Duration::from_secs(5);
    config.core.request_deadline = Duration::from_secs(5);
    let system = osago_tests::start_embedded(config).await;
    let base = format!("http://{}", system.addr);
    let http = reqwest::Client::new();

    let created = post_sample(&http, &format!("{base}/api/osago/requests")).await;
    contracts::assert_openapi_valid(&contracts::openapi(), "Created", &created);
    let range = &created["lawful_range"];
    let (min, max) = (
        range["min_kopecks"].as_i64().unwrap(),
        range["max_kopecks"].as_i64().unwrap(),
    );
    assert!(0 < min && min < max, "{range}");

    let stream = http
        .get(format!("{base}{}", created["stream_url"].as_str().unwrap()))
        .bearer_auth(created["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let events = read_stream(stream, Duration::from_secs(30)).await;
    let rows = rows_by_insurer(&events);
    let last = |id: &str| rows[id].last().unwrap().clone();
    let (fair, bait) = (last("fair"), last("bait"));
    assert_eq!(fair["status"], "quoted", "{fair}");
    assert_eq!(bait["status"], "quoted", "{bait}");
    let fair_premium = fair["quote"]["premium_kopecks"].as_i64().unwrap();
    assert!(
        (min..=max).contains(&fair_premium),
        "{fair_premium} in {min}..={max}"
    );
    assert_eq!(fair["quote"]["price_check"]["verdict"], "within");
    assert!(bait["quote"]["premium_kopecks"].as_i64().unwrap() < min);
    assert_eq!(bait["quote"]["price_check"]["verdict"], "below_minimum");
    assert_eq!(bait["quote"]["price_check"]["range"], *range);
    for row in [&fair, &bait] {
        contracts::assert_openapi_valid(&contracts::openapi(), "OfferRow", row);
    }

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"osago_aggregator_quotes_outside_range_total{insurer="bait",verdict="below_minimum"} 1"#
        ),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"quotes_outside_range_total{insurer="fair""#));
    system.stop().await;
}

/// An insurer cannot claim a verdict: whatever `price_check` its answer
/// carries is dropped by the client and set by the aggregator.
#[test]
fn an_insurers_own_verdict_is_ignored() {
    let mut quote = serde_json::to_value(osago_core::insurer::Quote {
        premium_kopecks: osago_core::Kopecks(100),
        coefficients: osago_core::tariff::premium(
            &osago_core::request::sample(),
            osago_core::Kopecks::from_rub(5_000),
            chrono::NaiveDate::from_ymd_opt(2026, 12, 2).unwrap(),
        )
        .unwrap()
        .coefficients,
        capped: false,
        valid_until: chrono::Utc::now(),
        add_ons: vec![],
        message: None,
        purchase_url: None,
        ready_at: None,
        price_check: None,
    })
    .unwrap();
    quote["price_check"] = serde_json::json!({
        "range": {"min_kopecks": 1, "max_kopecks": 1_000_000_000},
        "verdict": "within"
    });
    let body = serde_json::json!({"application_id": "app-1", "status": "READY", "quote": quote});
    let decoded = osago_transport::http::decode_quote(body.to_string().as_bytes(), None).unwrap();
    let osago_core::insurer::PollOutcome::Quoted(quote) = decoded else {
        panic!("{decoded:?}");
    };
    assert_eq!(quote.price_check, None);
}
