//! Bad input gets a clear answer: 400 for malformed JSON, 422 naming each
//! field that breaks a rule, 413 for an oversize body, 404 for an unknown
//! request, 415 for a non-JSON body; the server keeps serving.

use std::time::Duration;

use osago::{Embedded, EmbeddedConfig};
use osago_tests::sample_json;
use serde_json::{json, Value};

async fn start() -> Embedded {
    let mut config = EmbeddedConfig {
        insurers: vec![],
        ..EmbeddedConfig::default()
    };
    // Many requests from one address: the inbound limit has its own test.
    config.core.rate_limit.per_second = 0.0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    osago::start(listener, config).await.unwrap()
}

async fn post(system: &Embedded, body: impl Into<reqwest::Body>) -> (u16, String, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/osago/requests", system.addr))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, content_type, body)
}

fn paths(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["path"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Sets (or adds) the value at a JSON pointer.
fn set(value: &mut Value, pointer: &str, new: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match value
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("{pointer}"))
    {
        Value::Object(map) => {
            map.insert(key.to_owned(), new);
        }
        Value::Array(items) => items[key.parse::<usize>().unwrap()] = new,
        _ => panic!("{pointer}"),
    }
}

fn remove(value: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    value
        .pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(key);
}

fn today_plus(days: i64) -> String {
    (chrono_today() + days).to_string()
}

/// Today in Moscow (UTC+3), the date core-app validates against, as days
/// since the epoch.
fn chrono_today() -> DateDays {
    DateDays(
        (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + 3 * 3600)
            / 86_400,
    )
}

struct DateDays(i64);

impl std::ops::Add<i64> for DateDays {
    type Output = DateDays;
    fn add(self, rhs: i64) -> DateDays {
        DateDays(self.0 + rhs)
    }
}

impl std::fmt::Display for DateDays {
    /// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

#[tokio::test]
async fn malformed_json_is_400() {
    let system = start().await;
    for body in ["{\"policy\": ", "not json", ""] {
        let (status, content_type, problem) = post(&system, body).await;
        assert_eq!(status, 400, "{body:?}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(problem["status"], 400);
        assert!(problem["title"].is_string() && problem["detail"].is_string());
    }
    system.stop().await;
}

#[tokio::test]
async fn every_rule_is_reported_as_422_naming_its_field() {
    let system = start().await;
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|v| set(v, "/vehicle/vin", json!("XTAGFL110MY12345O"))),
            "vehicle.vin",
        ),
        (
            Box::new(|v| set(v, "/vehicle/vin", json!("SHORT"))),
            "vehicle.vin",
        ),
        (Box::new(|v| remove(v, "/vehicle/vin")), "vehicle.vin"),
        (
            Box::new(|v| set(v, "/vehicle/plate", json!("Q123QQ77"))),
            "vehicle.plate",
        ),
        (
            Box::new(|v| set(v, "/policy/start_date", json!(today_plus(-1)))),
            "policy.start_date",
        ),
        (
            // Today is too soon: a policy starts tomorrow at the earliest.
            Box::new(|v| set(v, "/policy/start_date", json!(today_plus(0)))),
            "policy.start_date",
        ),
        (
            Box::new(|v| set(v, "/policy/start_date", json!(today_plus(61)))),
            "policy.start_date",
        ),
        (
            Box::new(|v| set(v, "/policy/usage_period_months", json!(2))),
            "policy.usage_period_months",
        ),
        (
            Box::new(|v| set(v, "/policy/usage_period_months", json!(13))),
            "policy.usage_period_months",
        ),
        (
            Box::new(|v| set(v, "/policy/purpose", json!("racing"))),
            "policy.purpose",
        ),
        (
            Box::new(|v| set(v, "/vehicle/engine_power_hp", Value::Null)),
            "vehicle.engine_power_hp",
        ),
        (
            Box::new(|v| set(v, "/vehicle/engine_power_hp", json!(0))),
            "vehicle.engine_power_hp",
        ),
        (
            Box::new(|v| set(v, "/vehicle/year", json!(1800))),
            "vehicle.year",
        ),
        (
            Box::new(|v| set(v, "/vehicle/year", json!(2999))),
            "vehicle.year",
        ),
        (
            Box::new(|v| set(v, "/vehicle/make", json!(" "))),
            "vehicle.make",
        ),
        (
            Box::new(|v| set(v, "/vehicle/document/series", json!("9"))),
            "vehicle.document.series",
        ),
        (
            Box::new(|v| set(v, "/vehicle/document/number", json!("12"))),
            "vehicle.document.number",
        ),
        (
            Box::new(|v| set(v, "/vehicle/document/issue_date", json!(today_plus(5)))),
            "vehicle.document.issue_date",
        ),
        (
            Box::new(|v| set(v, "/owner/full_name", json!("Иванов"))),
            "owner.full_name",
        ),
        (
            Box::new(|v| set(v, "/owner/birth_date", json!("1890-01-01"))),
            "owner.birth_date",
        ),
        (
            Box::new(|v| set(v, "/owner/passport/series", json!("45"))),
            "owner.passport.series",
        ),
        (
            Box::new(|v| set(v, "/owner/passport/number", json!("12345X"))),
            "owner.passport.number",
        ),
        (
            Box::new(|v| set(v, "/owner/address/region_code", json!("00"))),
            "owner.address.region_code",
        ),
        (
            Box::new(|v| set(v, "/drivers/list", json!([]))),
            "drivers.list",
        ),
        (
            Box::new(|v| {
                set(
                    v,
                    "/drivers/list/0/birth_date",
                    json!(today_plus(-365 * 17)),
                );
                set(v, "/drivers/list/0/experience_start", json!(today_plus(-1)));
            }),
            "drivers.list[0].birth_date",
        ),
        (
            Box::new(|v| set(v, "/drivers/list/0/experience_start", json!("1995-01-01"))),
            "drivers.list[0].experience_start",
        ),
        (
            Box::new(|v| set(v, "/drivers/list/0/experience_start", json!(today_plus(3)))),
            "drivers.list[0].experience_start",
        ),
        (
            Box::new(|v| set(v, "/drivers/list/0/licence/number", json!("1"))),
            "drivers.list[0].licence.number",
        ),
        (
            Box::new(|v| set(v, "/drivers/list/0/kbm_class", json!("14"))),
            "drivers.list[0].kbm_class",
        ),
        (
            Box::new(|v| set(v, "/contact/phone", json!("89161234567"))),
            "contact.phone",
        ),
        (
            Box::new(|v| set(v, "/contact/email", json!("nobody"))),
            "contact.email",
        ),
        (
            Box::new(|v| set(v, "/consent/personal_data", json!(false))),
            "consent.personal_data",
        ),
        (Box::new(|v| remove(v, "/consent")), "consent"),
        // Two separate consents (152-FZ as amended): transfer to the
        // insurers is its own, and each names the text it was given for.
        (
            Box::new(|v| set(v, "/consent/transfer_to_insurers", json!(false))),
            "consent.transfer_to_insurers",
        ),
        (
            Box::new(|v| remove(v, "/consent/transfer_to_insurers")),
            "consent.transfer_to_insurers",
        ),
        (
            Box::new(|v| {
                set(
                    v,
                    "/consent/personal_data_text",
                    json!("processing-2020-01-01"),
                )
            }),
            "consent.personal_data_text",
        ),
        (
            Box::new(|v| remove(v, "/consent/transfer_text")),
            "consent.transfer_text",
        ),
        (
            Box::new(|v| set(v, "/vehicle/year", json!("2021"))),
            "vehicle.year",
        ),
        (
            Box::new(|v| set(v, "/vehicle/colour", json!("red"))),
            "vehicle.colour",
        ),
    ];
    for (mutate, path) in cases {
        let mut body = sample_json();
        mutate(&mut body);
        let (status, content_type, problem) = post(&system, body.to_string()).await;
        assert_eq!(status, 422, "{path}: {problem}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(paths(&problem), [path], "{problem}");
    }
    system.stop().await;
}

#[tokio::test]
async fn all_violations_come_at_once() {
    let system = start().await;
    let mut body = sample_json();
    set(&mut body, "/vehicle/vin", json!("bad"));
    set(&mut body, "/contact/phone", json!("123"));
    set(&mut body, "/consent/personal_data", json!(false));
    let (status, _, problem) = post(&system, body.to_string()).await;
    assert_eq!(status, 422);
    assert_eq!(
        paths(&problem),
        ["vehicle.vin", "contact.phone", "consent.personal_data"]
    );
    assert_eq!(problem["type"], "/problems/validation-error");
    system.stop().await;
}

#[tokio::test]
async fn oversize_bodies_are_413_with_or_without_content_length() {
    let system = start().await;
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(70 * 1024));
    let (status, content_type, _) = post(&system, huge.clone()).await;
    assert_eq!(
        (status, content_type.as_str()),
        (413, "application/problem+json")
    );
    // Chunked, so the limit is enforced while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = huge
        .into_bytes()
        .chunks(8 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let (status, _, _) = post(&system, body).await;
    assert_eq!(status, 413);
    system.stop().await;
}

/// Connection buffers are capped at 8 KiB (osago_service::serve::MAX_BUF):
/// a body of up to the body limit still streams through, while a header
/// section over the cap is refused with 431.
#[tokio::test]
async fn bodies_stream_past_the_buffer_cap_and_huge_headers_are_431() {
    let system = start().await;
    let mut sample = sample_json();
    sample["pad"] = json!(" ".repeat(40 * 1024));
    let (status, _, body) = post(&system, serde_json::to_vec(&sample).unwrap()).await;
    // Read whole and judged: an unknown field is a 422 naming it, not a
    // transport error.
    assert_eq!(status, 422, "{body}");
    let response = reqwest::Client::new()
        .get(format!("http://{}/", system.addr))
        .header("x-filler", "y".repeat(10 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    system.stop().await;
}

#[tokio::test]
async fn unknown_requests_are_404_and_wrong_methods_405() {
    let system = start().await;
    let base = format!("http://{}/api/osago/requests", system.addr);
    let http = reqwest::Client::new();
    for path in [
        format!("{base}/6f2c1f8e-4a7a-4c43-9d47-3f1f7a1b2c3d/stream"),
        format!("{base}/6f2c1f8e-4a7a-4c43-9d47-3f1f7a1b2c3d/quotes"),
        format!("{base}/not-a-uuid/quotes"),
        format!("http://{}/nothing/here", system.addr),
    ] {
        let response = http.get(&path).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    let response = http.get(&base).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    system.stop().await;
}

#[tokio::test]
async fn non_json_media_type_is_415_and_the_server_keeps_serving() {
    let system = start().await;
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/osago/requests", system.addr))
        .header("content-type", "text/plain")
        .body(sample_json().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    // No content type at all is refused too (a cross-site form or beacon
    // could send that without a preflight).
    let untyped = reqwest::Client::new()
        .post(format!("http://{}/api/osago/requests", system.addr))
        .body(sample_json().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(untyped.status(), 415);
    let (status, _, created) = post(&system, sample_json().to_string()).await;
    assert_eq!(status, 202, "{created}");
    assert!(created["request_id"].is_string());
    let health = reqwest::get(format!("http://{}/health", system.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    tokio::time::sleep(Duration::from_millis(10)).await;
    system.stop().await;
}

#[tokio::test]
async fn a_client_over_the_inbound_limit_gets_429_with_retry_after() {
    let mut config = EmbeddedConfig {
        insurers: vec![],
        ..EmbeddedConfig::default()
    };
    config.core.rate_limit = osago_core::ratelimit::RateLimit {
        per_second: 1.0 / 60.0,
        burst: 2,
    };
    // Behind a proxy the test plays (its own address is trusted): the
    // client is the forwarded address.
    config.core.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let system = osago::start(listener, config).await.unwrap();
    let http = reqwest::Client::new();
    let post = |client: &'static str| {
        http.post(format!("http://{}/api/osago/requests", system.addr))
            .header("x-forwarded-for", client)
            .json(&sample_json())
            .send()
    };
    assert_eq!(post("203.0.113.7").await.unwrap().status(), 202);
    assert_eq!(post("203.0.113.7").await.unwrap().status(), 202);
    let limited = post("203.0.113.7").await.unwrap();
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        limited.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = limited.json().await.unwrap();
    assert_eq!(problem["status"], 429);
    // Another client is not affected.
    assert_eq!(post("198.51.100.9").await.unwrap().status(), 202);
    system.stop().await;
}

/// What a person types is made canonical before the rules see it: a VIN in
/// lower case with a space and a Cyrillic look-alike, a plate in Latin
/// letters with spaces, a document series with a space are accepted, and
/// a 422 message for a truly wrong VIN comes in both languages.
#[tokio::test]
async fn typed_vins_and_plates_are_normalised_and_refusals_speak_russian() {
    let system = start().await;
    let mut body = sample_json();
    set(&mut body, "/vehicle/vin", json!("хtagfl110my 123456"));
    set(&mut body, "/vehicle/plate", json!("a 123 bc 777"));
    set(&mut body, "/vehicle/document/series", json!("99 аа"));
    let (status, _, answer) = post(&system, body.to_string()).await;
    assert_eq!(status, 202, "{answer}");

    let mut wrong = sample_json();
    set(&mut wrong, "/vehicle/vin", json!("XTA123"));
    let (status, _, problem) = post(&system, wrong.to_string()).await;
    assert_eq!(status, 422);
    let error = &problem["errors"][0];
    assert_eq!(error["path"], "vehicle.vin");
    assert_eq!(error["code"], "vin");
    assert!(error["message"].as_str().unwrap().starts_with("must be 17"));
    assert!(error["message_ru"]
        .as_str()
        .unwrap()
        .starts_with("VIN — 17"));
    system.stop().await;
}
