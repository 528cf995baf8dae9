//! Hostile input (issue 14): generated inputs, over 100 000 in all within a
//! bounded time, through every parser that takes bytes from outside, with
//! the counts printed (`cargo test --test hostile_input -- --nocapture`
//! shows them; the test command prints them too):
//!
//! - the quote request: decode, then validation, on random bytes and on
//!   the sample with one field replaced by a random value or removed;
//! - the SSE cursor (`Last-Event-ID`), on random and near-valid text;
//! - insurers' answers (`POST /applications`, `GET /quotes/{id}`), on
//!   random bytes and on valid answers with one field mutated;
//! - request heads first on their connection (core-app sorts them itself
//!   between its lean stream path and hyper), random and edited.
//!
//! None may panic. Over HTTP, hostile bodies get only 4xx problem+json, and
//! hostile heads a status below 500 or a closed connection.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

/// Runs `cases` inputs from `strategy` through `check`; prints the count.
fn fuzz<S: Strategy>(name: &str, cases: u32, strategy: S, check: impl Fn(S::Value)) -> u64
where
    S::Value: std::fmt::Debug,
{
    let started = Instant::now();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let count = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&strategy, |input| {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            check(input);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let count = count.into_inner();
    println!(
        "fuzz: {name}: {count} inputs, no panic, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    count
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        "[0-9A-Za-zА-Яа-я ]{0,20}".prop_map(Value::String),
        Just(json!(u64::MAX)),
        Just(json!("9999-99-99")),
        Just(json!("2026-02-30")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer in `value` (objects' keys and arrays' items).
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{at}/{k}");
                out.push(p.clone());
                pointers(v, p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(v, p, out);
            }
        }
        _ => {}
    }
}

/// `base` with the field at one of its pointers replaced (or, for `None`,
/// removed).
fn mutated(base: Value) -> impl Strategy<Value = Value> {
    let mut all = Vec::new();
    pointers(&base, String::new(), &mut all);
    (
        prop::sample::select(all),
        prop::option::weighted(0.85, json_value()),
    )
        .prop_map(move |(pointer, replacement)| {
            let mut value = base.clone();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            match (value.pointer_mut(parent), replacement) {
                (Some(Value::Object(map)), Some(new)) => {
                    map.insert(key.to_owned(), new);
                }
                (Some(Value::Object(map)), None) => {
                    map.remove(key);
                }
                (Some(Value::Array(items)), Some(new)) => {
                    items[key.parse::<usize>().unwrap()] = new;
                }
                (Some(Value::Array(items)), None) => {
                    items.remove(key.parse::<usize>().unwrap());
                }
                _ => {}
            }
            value
        })
}

fn check_request(bytes: &[u8]) {
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
    if let Ok(request) = osago_core::request::decode(bytes) {
        if let Err(errors) = request.validate(today) {
            assert!(!errors.is_empty());
        }
    }
}

#[test]
fn a_hundred_thousand_hostile_inputs_and_no_panic() {
    let started = Instant::now();
    let sample = osago_tests::sample_json();
    let mut total = 0;

    total += fuzz(
        "request decode+validate, random bytes",
        15_000,
        prop::collection::vec(any::<u8>(), 0..600),
        |bytes| check_request(&bytes),
    );
    total += fuzz(
        "request decode+validate, one field mutated or removed",
        35_000,
        mutated(sample.clone()),
        |value| check_request(value.to_string().as_bytes()),
    );
    total += fuzz(
        "SSE cursor (Last-Event-ID), random text",
        15_000,
        ".{0,300}",
        |text| {
            let _ = core_app::sse::Cursor::parse(&text);
        },
    );
    total += fuzz(
        "SSE cursor (Last-Event-ID), near-valid",
        15_000,
        "([a-z0-9_-]{0,12}:[0-9-]{0,25},?){0,40}",
        |text| {
            let _ = core_app::sse::Cursor::parse(&text);
        },
    );
    let created =
        json!({"application_id": "app-1", "status": "IN_PROGRESS", "retry_after_ms": 250});
    // A real READY answer: the sample's premium and breakdown.
    let request = osago_core::request::sample();
    let start = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
    let premium =
        osago_core::tariff::premium(&request, osago_core::Kopecks(600_000), start).unwrap();
    let quote = json!({
        "application_id": "app-1",
        "status": "READY",
        "quote": {
            "premium_kopecks": premium.premium_kopecks,
            "coefficients": premium.coefficients,
            "capped": premium.capped,
            "valid_until": "2026-12-01T00:00:00Z",
            "add_ons": [],
            "purchase_url": "https://insurer.example/buy/1"
        },
        "reason": "ok",
        "retry_after_ms": 100
    });
    assert!(matches!(
        osago_transport::http::decode_quote(quote.to_string().as_bytes(), None),
        Ok(osago_core::insurer::PollOutcome::Quoted(_))
    ));
    total += fuzz(
        "insurer answers, random bytes",
        10_000,
        prop::collection::vec(any::<u8>(), 0..400),
        |bytes| {
            let _ = osago_transport::http::decode_created(&bytes, None);
            let _ = osago_transport::http::decode_quote(&bytes, Some(Duration::from_secs(1)));
        },
    );
    total += fuzz(
        "insurer application answer, one field mutated",
        5_000,
        mutated(created),
        |value| {
            let _ = osago_transport::http::decode_created(value.to_string().as_bytes(), None);
        },
    );
    total += fuzz(
        "insurer quote answer, one field mutated",
        10_000,
        mutated(quote),
        |value| {
            let _ = osago_transport::http::decode_quote(value.to_string().as_bytes(), None);
        },
    );
    println!(
        "fuzz: {total} generated inputs in all, no panic, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(total >= 100_000, "only {total} inputs");
}

#[tokio::test]
async fn hostile_bodies_over_http_get_only_4xx_problems() {
    let mut config = osago::EmbeddedConfig {
        insurers: vec![],
        ..osago::EmbeddedConfig::default()
    };
    config.core = config.core.without_client_limits();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let system = osago::start(listener, config).await.unwrap();
    let url = format!("http://{}/api/osago/requests", system.addr);
    let http = reqwest::Client::new();

    let mut bodies: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), Vec::new()),
        ("deep nesting".into(), "[".repeat(100_000).into_bytes()),
        (
            "a huge number".into(),
            format!("{{\"policy\":{}}}", "9".repeat(5000)).into_bytes(),
        ),
        ("not utf-8".into(), vec![0xff, 0xfe, 0x00, 0x7b]),
        ("a string".into(), b"\"hello\"".to_vec()),
        ("nul bytes".into(), b"{\"a\":\"\0\0\0\"}".to_vec()),
        ("oversize".into(), vec![b' '; 70 * 1024]),
    ];
    // And a few hundred generated ones.
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        mutated(osago_tests::sample_json()).prop_map(|v| v.to_string().into_bytes()),
    ];
    for _ in 0..300 {
        let body = strategy.new_tree(&mut runner).unwrap().current();
        bodies.push(("generated".into(), body));
    }
    let (mut refused, mut accepted) = (0, 0);
    for (what, body) in bodies {
        let response = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        if status == 202 {
            // A mutation that is still a valid request.
            accepted += 1;
            continue;
        }
        assert!((400..500).contains(&status), "{what}: {status}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], status, "{what}");
        refused += 1;
    }
    println!(
        "fuzz: HTTP hostile bodies: {refused} refused with 4xx problem+json, {accepted} valid"
    );
    assert!(refused > 200);
    system.stop().await;
}

/// `base` with up to eight bytes replaced, inserted or removed.
fn edited(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((0..3u8, any::<usize>(), any::<u8>()), 1..8).prop_map(move |edits| {
        let mut bytes = base.clone();
        for (kind, at, byte) in edits {
            let at = at % (bytes.len() + 1);
            match kind {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => {}
            }
        }
        bytes
    })
}

/// Request heads, first on their connection (where core-app sorts them
/// itself between its lean stream path and hyper): random bytes and a
/// real stream request with bytes edited. Each is answered with a status
/// below 500 or closed, none hangs, and the server still streams after.
#[tokio::test]
async fn hostile_request_heads_are_answered_or_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = osago::EmbeddedConfig {
        insurers: vec![],
        ..osago::EmbeddedConfig::default()
    };
    config.core = config.core.without_client_limits();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let system = osago::start(listener, config).await.unwrap();
    let created = osago_tests::post_sample(
        &reqwest::Client::new(),
        &format!("http://{}/api/osago/requests", system.addr),
    )
    .await;
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: osago\r\nAuthorization: Bearer {}\r\nLast-Event-ID: a:1\r\n\r\n",
        created["stream_url"].as_str().unwrap(),
        created["access_token"].as_str().unwrap()
    )
    .into_bytes();
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        edited(head.clone()),
    ];
    let (mut answered, mut closed) = (0, 0);
    for case in 0..401 {
        let bytes = match case {
            0 => head.clone(),
            _ => strategy.new_tree(&mut runner).unwrap().current(),
        };
        let mut socket = tokio::net::TcpStream::connect(system.addr).await.unwrap();
        let _ = socket.write_all(&bytes).await;
        // Nothing more is coming: a partial head is closed at once
        // instead of at the header-read timeout.
        let _ = socket.shutdown().await;
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            while !got.windows(2).any(|w| w == b"\r\n") {
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        let shown = String::from_utf8_lossy(&bytes).into_owned();
        assert!(read.is_ok(), "neither answered nor closed: {shown:?}");
        if got.is_empty() {
            closed += 1;
            continue;
        }
        let line = String::from_utf8_lossy(&got).into_owned();
        let status: u16 = line
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| line.strip_prefix("HTTP/1.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not a status line {line:?} for {shown:?}"));
        assert!(status < 500, "{status} for {shown:?}");
        if case == 0 {
            assert_eq!(status, 200, "the unedited stream request");
        }
        answered += 1;
    }
    println!("fuzz: HTTP hostile request heads: {answered} answered below 500, {closed} closed");
    // The server still serves a stream.
    let mut socket = tokio::net::TcpStream::connect(system.addr).await.unwrap();
    socket.write_all(&head).await.unwrap();
    let mut first = [0u8; 64];
    let n = socket.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &first[..n]);
    system.stop().await;
}
