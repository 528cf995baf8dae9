//! What an operator gets (issue 15): a request id on every answer and log
//! line, JSON logs, HTTP and outbox metrics, build info, every metric
//! documented, CORS for configured origins only.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::time::Duration;

use osago::EmbeddedConfig;
use osago_tests::sample_json;
use serde_json::Value;

fn quiet() -> EmbeddedConfig {
    let mut config = EmbeddedConfig {
        insurers: vec![],
        ..EmbeddedConfig::default()
    };
    config.core = config.core.without_client_limits();
    config
}

#[tokio::test]
async fn a_request_id_is_honoured_or_made_and_always_returned() {
    let system = osago_tests::start_embedded(quiet()).await;
    let base = format!("http://{}", system.addr);
    let http = reqwest::Client::new();
    let id_of = |response: &reqwest::Response| {
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let given = http
        .get(format!("{base}/"))
        .header("x-request-id", "lb-7f3a.42:1")
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(&given), "lb-7f3a.42:1");
    let made = http.get(format!("{base}/nowhere")).send().await.unwrap();
    assert_eq!(made.status(), 404);
    assert!(uuid_like(&id_of(&made)), "{}", id_of(&made));
    for hostile in ["has space", "<script>", &"x".repeat(129)] {
        let replaced = http
            .post(format!("{base}/api/osago/requests"))
            .header("x-request-id", hostile)
            .json(&sample_json())
            .send()
            .await
            .unwrap();
        assert_eq!(replaced.status(), 202);
        assert!(
            uuid_like(&id_of(&replaced)),
            "{hostile}: {}",
            id_of(&replaced)
        );
    }
    system.stop().await;
}

fn uuid_like(text: &str) -> bool {
    text.len() == 36 && text.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn cors_answers_configured_origins_only() {
    let mut config = quiet();
    config.core.cors_origins = vec!["https://partner.example".to_owned()];
    let system = osago_tests::start_embedded(config).await;
    let url = format!("http://{}/api/osago/requests", system.addr);
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let granted = preflight("https://partner.example").await.unwrap();
    assert_eq!(granted.status(), 204);
    let headers = granted.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://partner.example"
    );
    assert!(headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert!(headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("content-type"));
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(!refused
        .headers()
        .contains_key("access-control-allow-origin"));
    assert!(!refused
        .headers()
        .contains_key("access-control-allow-methods"));
    // The actual request: the allowed origin may read the answer.
    let post = |origin: &'static str| {
        http.post(&url)
            .header("origin", origin)
            .json(&sample_json())
            .send()
    };
    let allowed = post("https://partner.example").await.unwrap();
    assert_eq!(allowed.status(), 202);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://partner.example"
    );
    assert_eq!(allowed.headers()["vary"], "origin");
    let other = post("https://evil.example").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    system.stop().await;

    // None configured (the default): no CORS header for anyone.
    let system = osago_tests::start_embedded(quiet()).await;
    let url = format!("http://{}/api/osago/requests", system.addr);
    let answer = reqwest::Client::new()
        .post(&url)
        .header("origin", "https://partner.example")
        .json(&sample_json())
        .send()
        .await
        .unwrap();
    assert!(!answer.headers().contains_key("access-control-allow-origin"));
    system.stop().await;
}

/// `/metrics` as (family name as sampled, type).
fn families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            let sampled = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            (sampled, kind.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn http_outbox_and_build_metrics_are_exposed() {
    let system = osago_tests::start_embedded(quiet()).await;
    let base = format!("http://{}", system.addr);
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{base}/api/osago/requests"))
        .json(&sample_json())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let quotes = format!("{base}{}", created["quotes_url"].as_str().unwrap());
    assert_eq!(
        http.get(&quotes)
            .bearer_auth(created["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(http.get(&quotes).send().await.unwrap().status(), 404);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"osago_core_http_requests_total{route="/api/osago/requests",method="POST",status="202"} 1"#,
        r#"osago_core_http_requests_total{route="/api/osago/requests/{id}/quotes",method="GET",status="200"} 1"#,
        r#"osago_core_http_requests_total{route="/api/osago/requests/{id}/quotes",method="GET",status="404"} 1"#,
        r#"osago_core_http_request_seconds_count{route="/api/osago/requests"} 1"#,
        "osago_core_outbox_backlog 0",
        "osago_core_outbox_oldest_age_seconds 0.0",
        "osago_core_open_streams 0",
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }
    assert!(
        metrics.contains(&format!(
            "osago_build_info{{service=\"core-app\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{metrics}"
    );
    // No request id reaches a label.
    assert!(!metrics.contains(created["request_id"].as_str().unwrap()));
    system.stop().await;
}

#[tokio::test]
async fn every_metric_is_documented() {
    // The embedded system exposes core-app's and the engine's metrics; the
    // aggregator binary adds its own (intake, shared policies, build info).
    let mut config = EmbeddedConfig::default();
    config.core = config.core.without_client_limits();
    let system = osago_tests::start_embedded(config).await;
    let mut exposed: BTreeSet<String> = families(
        &reqwest::get(format!("http://{}/metrics", system.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .into_iter()
    .map(|(name, _)| name)
    .collect();
    system.stop().await;

    let admin = osago_testkit::free_port();
    let mut aggregator = std::process::Command::new(osago_tests::processes::binary("aggregator"))
        .args(["--listen", &format!("127.0.0.1:{admin}")])
        .args([
            "--insurer",
            "alfa=http://127.0.0.1:9/",
            "--allow-plain-http",
        ])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut text = String::new();
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{admin}/metrics")).await {
            text = r.text().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    aggregator.kill().unwrap();
    let _ = aggregator.wait();
    assert!(!text.is_empty(), "the aggregator's /metrics never answered");
    exposed.extend(families(&text).into_iter().map(|(name, _)| name));

    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/operations.md"
    ))
    .unwrap();
    let section = docs
        .split("## Metrics")
        .nth(1)
        .expect("docs/operations.md has a ## Metrics section");
    let missing: Vec<&String> = exposed
        .iter()
        .filter(|name| !section.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics missing from docs/operations.md ## Metrics: {missing:?}"
    );
    assert!(exposed.len() > 30, "{exposed:?}");
}

#[tokio::test]
async fn json_logs_carry_the_request_id_on_every_line_of_a_request() {
    let (port, admin) = (osago_testkit::free_port(), osago_testkit::free_port());
    let mut core = std::process::Command::new(osago_tests::processes::binary("core-app"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = core.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    post_once_up(port, ("x-request-id", "trace-me-1".to_owned())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    nix_terminate(core.id());
    let _ = core.wait();
    let lines = lines.join().unwrap();
    assert!(lines.len() >= 3, "{lines:?}");
    let mut accepted = None;
    for line in &lines {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value["level"].is_string() && value["timestamp"].is_string(),
            "{line}"
        );
        if value["message"] == "quote request accepted" {
            accepted = Some(value);
        }
    }
    let accepted = accepted.unwrap_or_else(|| panic!("no acceptance line in {lines:?}"));
    assert_eq!(accepted["span"]["request_id"], "trace-me-1", "{accepted}");
    assert_eq!(
        accepted["span"]["route"], "/api/osago/requests",
        "{accepted}"
    );
    let sample = sample_json();
    let all = lines.join("\n");
    for personal in [
        sample["owner"]["full_name"].as_str().unwrap(),
        sample["contact"]["phone"].as_str().unwrap(),
        sample["vehicle"]["vin"].as_str().unwrap(),
    ] {
        assert!(!all.contains(personal), "personal data in the logs");
    }
}

/// POSTs the sample, with one extra header, to the core-app starting on
/// `port` as soon as it listens; it must be accepted.
async fn post_once_up(port: u16, header: (&str, String)) {
    let mut posted = None;
    for _ in 0..200 {
        if let Ok(r) = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/api/osago/requests"))
            .header(header.0, &header.1)
            .json(&sample_json())
            .send()
            .await
        {
            posted = Some(r.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(posted.map(|s| s.as_u16()), Some(202));
}

fn nix_terminate(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// With `--otlp-endpoint`, core-app exports its spans over OTLP/HTTP, and
/// the span of a POST joins the caller's W3C trace: the collector receives
/// the caller's trace id and, as the span's parent, the caller's span id.
#[tokio::test]
async fn spans_are_exported_over_otlp_in_the_callers_trace() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let collector = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&collector)
        .await;
    let (port, admin) = (osago_testkit::free_port(), osago_testkit::free_port());
    let mut core = std::process::Command::new(osago_tests::processes::binary("core-app"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--otlp-endpoint", &collector.uri()])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    post_once_up(
        port,
        ("traceparent", format!("00-{trace_id}-{caller_span}-01")),
    )
    .await;
    // SIGTERM: the exporter flushes on the way out.
    nix_terminate(core.id());
    let _ = core.wait();
    let bodies: Vec<Vec<u8>> = collector
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.body)
        .collect();
    assert!(!bodies.is_empty(), "nothing reached the OTLP collector");
    let all: Vec<u8> = bodies.concat();
    let bytes = |hex: &str| -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    };
    // OTLP protobuf carries ids as raw bytes.
    let contains = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(&bytes(trace_id)),
        "the caller's trace id was not exported"
    );
    assert!(
        contains(&bytes(caller_span)),
        "no span has the caller's span as parent"
    );
    assert!(contains(b"core-app"), "the service name is missing");
    // No personal value in any exported span.
    let sample = sample_json();
    for personal in [
        sample["owner"]["full_name"].as_str().unwrap(),
        sample["vehicle"]["vin"].as_str().unwrap(),
    ] {
        assert!(!contains(personal.as_bytes()), "personal data exported");
    }
}
