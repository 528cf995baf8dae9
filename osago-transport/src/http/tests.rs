//! The HTTP client against wiremock insurers.

use std::time::{Duration, Instant};

use chrono::Utc;
use osago_core::insurer::{ErrorKind, PollOutcome, Quote};
use osago_core::ports::InsurerClient;
use osago_core::request::sample;
use osago_core::tariff::{self, Coefficients};
use osago_core::{InsurerId, Kopecks};
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

use super::*;

fn client(server: &MockServer, config: HttpInsurerConfig) -> HttpInsurerClient {
    HttpInsurerClient::new(
        InsurerId::new("mock").unwrap(),
        Url::parse(&server.uri()).unwrap(),
        config,
    )
    .unwrap()
}

fn quote() -> Quote {
    let start = Utc::now().date_naive() + chrono::Duration::days(1);
    let premium = tariff::premium(&sample(), Kopecks::from_rub(7000), start).unwrap();
    Quote {
        premium_kopecks: premium.premium_kopecks,
        coefficients: Coefficients {
            ..premium.coefficients
        },
        capped: premium.capped,
        valid_until: Utc::now(),
        add_ons: vec![],
        message: None,
        purchase_url: None,
        ready_at: Some(Utc::now()),
        price_check: None,
    }
}

fn created(id: &str) -> ResponseTemplate {
    ResponseTemplate::new(202)
        .insert_header("Retry-After", "2")
        .set_body_json(json!({"application_id": id, "status": "IN_PROGRESS"}))
}

/// Answers IN_PROGRESS `n` times, then READY.
struct ReadyAfter {
    n: usize,
    calls: std::sync::atomic::AtomicUsize,
    quote: Quote,
}

impl Respond for ReadyAfter {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if call < self.n {
            ResponseTemplate::new(200).set_body_json(
                json!({"application_id": "app-1", "status": "IN_PROGRESS", "retry_after_ms": 250}),
            )
        } else {
            ResponseTemplate::new(200).set_body_json(
                json!({"application_id": "app-1", "status": "READY", "quote": self.quote}),
            )
        }
    }
}

#[tokio::test]
async fn create_sends_the_idempotency_key_and_reads_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/applications"))
        .and(header("Idempotency-Key", "key-1"))
        .and(header("content-type", "application/json"))
        .respond_with(created("app-1"))
        .expect(1)
        .mount(&server)
        .await;
    let app = client(&server, HttpInsurerConfig::default())
        .create_application("key-1", &sample())
        .await
        .unwrap();
    assert_eq!(app.id, "app-1");
    assert_eq!(app.retry_after, Some(Duration::from_secs(2)));
}

#[tokio::test]
async fn ready_after_n_polls() {
    let server = MockServer::start().await;
    let q = quote();
    Mock::given(method("GET"))
        .and(path("/quotes/app-1"))
        .respond_with(ReadyAfter {
            n: 3,
            calls: Default::default(),
            quote: q.clone(),
        })
        .mount(&server)
        .await;
    let c = client(&server, HttpInsurerConfig::default());
    for _ in 0..3 {
        assert_eq!(
            c.poll_quote("app-1").await.unwrap(),
            PollOutcome::Pending {
                retry_after: Some(Duration::from_millis(250))
            }
        );
    }
    assert_eq!(c.poll_quote("app-1").await.unwrap(), PollOutcome::Quoted(q));
}

#[tokio::test]
async fn a_calculation_error_is_the_insurers_final_word() {
    let server = MockServer::start().await;
    Mock::given(path("/quotes/e"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"application_id": "e", "status": "CALCULATION_ERROR", "reason": "the rating engine failed"}),
        ))
        .mount(&server)
        .await;
    let err = client(&server, HttpInsurerConfig::default())
        .poll_quote("e")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(err.terminal && !err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn declined_and_no_calculation_are_declines() {
    let server = MockServer::start().await;
    Mock::given(path("/quotes/d"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"application_id": "d", "status": "DECLINED", "reason": "driver under 22"}),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/quotes/n"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"application_id": "n", "status": "NO_CALCULATION_AVAILABLE"}),
            ),
        )
        .mount(&server)
        .await;
    let c = client(&server, HttpInsurerConfig::default());
    assert_eq!(
        c.poll_quote("d").await.unwrap(),
        PollOutcome::Declined {
            reason: "driver under 22".into()
        }
    );
    assert_eq!(
        c.poll_quote("n").await.unwrap(),
        PollOutcome::Declined {
            reason: "no calculation available".into()
        }
    );
}

#[tokio::test]
async fn bad_request_with_field_errors_is_rejected_naming_fields_only() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "message": "Иванов: a valid residential address is required",
            "properties": [{"property": "owner.address.apartment", "message": "required for Иванов"}]
        })))
        .mount(&server)
        .await;
    let err = client(&server, HttpInsurerConfig::default())
        .create_application("k", &sample())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Rejected);
    assert_eq!(
        err.message,
        "insurer needs more data: owner.address.apartment"
    );
    // The engine learns the insurer's requirements from these.
    assert_eq!(err.fields, ["owner.address.apartment"]);
    assert!(!err.to_string().contains("Иванов"));
}

#[tokio::test]
async fn too_many_requests_carries_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3"))
        .mount(&server)
        .await;
    let err = client(&server, HttpInsurerConfig::default())
        .poll_quote("a")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::RateLimited);
    assert_eq!(err.retry_after, Some(Duration::from_secs(3)));
}

#[tokio::test]
async fn server_error_is_unavailable() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let err = client(&server, HttpInsurerConfig::default())
        .create_application("k", &sample())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
}

#[tokio::test]
async fn malformed_json_is_a_bad_response() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw("{\"status\": \"READY\", ", "application/json"),
        )
        .mount(&server)
        .await;
    let err = client(&server, HttpInsurerConfig::default())
        .poll_quote("a")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadResponse);
}

#[tokio::test]
async fn wrong_content_type_is_a_bad_response() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw("<html>maintenance</html>", "text/html"),
        )
        .mount(&server)
        .await;
    let err = client(&server, HttpInsurerConfig::default())
        .poll_quote("a")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadResponse);
}

#[tokio::test]
async fn huge_body_is_a_bad_response() {
    let server = MockServer::start().await;
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(300 * 1024));
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(huge, "application/json"))
        .mount(&server)
        .await;
    let err = client(&server, HttpInsurerConfig::default())
        .poll_quote("a")
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.message.as_str()),
        (ErrorKind::BadResponse, "answer body too large")
    );
}

#[tokio::test]
async fn unknown_status_is_a_bad_response() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"application_id": "a", "status": "PONDERING"})),
        )
        .mount(&server)
        .await;
    let err = client(&server, HttpInsurerConfig::default())
        .poll_quote("a")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadResponse);
}

#[tokio::test]
async fn a_silent_server_times_out_on_the_socket_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let config = HttpInsurerConfig {
        read_timeout: Duration::from_millis(300),
        ..HttpInsurerConfig::default()
    };
    let c = HttpInsurerClient::new(
        InsurerId::new("silent").unwrap(),
        Url::parse(&format!("http://{addr}/")).unwrap(),
        config,
    )
    .unwrap();
    let started = Instant::now();
    let err = c.create_application("k", &sample()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    // Ended by the socket timeout, not by the 10 s call timeout.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn default_socket_timeout_is_five_seconds() {
    let config = HttpInsurerConfig::default();
    assert_eq!(config.read_timeout, Duration::from_secs(5));
    assert_eq!(config.connect_timeout, Duration::from_secs(5));
}

#[tokio::test]
async fn refused_connection_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = HttpInsurerClient::new(
        InsurerId::new("gone").unwrap(),
        Url::parse(&format!("http://{addr}/")).unwrap(),
        HttpInsurerConfig::default(),
    )
    .unwrap();
    let err = c.poll_quote("a").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
}
