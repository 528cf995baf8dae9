//! core-app on the open internet (issue 14): slow and idle clients are cut,
//! one address cannot starve another, a client-written forwarding header
//! does not move its bucket, the stream and quotes need the request's own
//! token, and every answer carries the security headers; under a flood,
//! refusals do not wait for the shared limiter (issue 12).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use osago::{Embedded, EmbeddedConfig};
use osago_tests::sample_json;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

fn no_insurers() -> EmbeddedConfig {
    let mut config = EmbeddedConfig {
        insurers: vec![],
        ..EmbeddedConfig::default()
    };
    config.core.rate_limit.per_second = 0.0;
    config
}

/// A connection from the loopback address `from` (127.0.0.x).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::from(from), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the server closes; what it sent.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn a_slowloris_is_cut_within_the_header_timeout() {
    // The default header-read timeout, 10 s.
    let config = no_insurers();
    let timeout = config.core.connections.header_read_timeout;
    assert_eq!(timeout, Duration::from_secs(10));
    let system = osago_tests::start_embedded(config).await;
    let started = Instant::now();
    let mut slow = TcpStream::connect(system.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: osago\r\nX-Slow: ")
        .await
        .unwrap();
    // And one that sends nothing at all.
    let mut silent = TcpStream::connect(system.addr).await.unwrap();
    // A byte every 5 s, until the server hangs up.
    let cut_at = loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let wrote = slow.write_all(b"a").await;
        let mut probe = [0u8; 256];
        let closed =
            match tokio::time::timeout(Duration::from_millis(50), slow.read(&mut probe)).await {
                Ok(Ok(0)) | Ok(Err(_)) => true,
                Ok(Ok(_)) => true, // an answer (408/400) then close: cut as well
                Err(_) => false,
            };
        if wrote.is_err() || closed {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < timeout + Duration::from_secs(6),
            "a slowloris still connected after {:?}",
            started.elapsed()
        );
    };
    assert!(
        cut_at <= timeout + Duration::from_secs(5) + Duration::from_millis(500),
        "cut after {cut_at:?}"
    );
    // The silent one was cut at the timeout too.
    let mut buf = [0u8; 16];
    let silent_read = tokio::time::timeout(Duration::from_secs(1), silent.read(&mut buf)).await;
    assert!(
        matches!(silent_read, Ok(Ok(0)) | Ok(Err(_))),
        "a connection that never sent a byte is still open after {:?}",
        started.elapsed()
    );
    // The server still serves.
    let page = reqwest::get(format!("http://{}/", system.addr))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    system.stop().await;
}

#[tokio::test]
async fn idle_sockets_from_one_address_cannot_starve_a_second_client() {
    let mut config = no_insurers();
    config.core.connections.max_connections = 8;
    config.core.connections.max_connections_per_client = 4;
    let system = osago_tests::start_embedded(config).await;
    // One address opens eight idle sockets: four are held, four refused.
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..8 {
        let mut socket = connect_from([127, 0, 0, 1], system.addr).await;
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(300), socket.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => refused.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            _ => held.push(socket),
        }
    }
    assert_eq!(held.len(), 4, "refused: {refused:?}");
    assert_eq!(refused.len(), 4);
    for answer in &refused {
        assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
        assert!(answer.contains("retry-after: 1"), "{answer}");
    }
    // A second client is served.
    let mut second = connect_from([127, 0, 0, 2], system.addr).await;
    second
        .write_all(b"GET / HTTP/1.1\r\nHost: osago\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut second, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Past the total cap, everyone gets 503 with Retry-After at once.
    for _ in 0..4 {
        held.push(connect_from([127, 0, 0, 3], system.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut late = connect_from([127, 0, 0, 4], system.addr).await;
    let answer = read_to_close(&mut late, Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    // Slots come back when the idle ones leave.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let page = reqwest::get(format!("http://{}/", system.addr))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    system.stop().await;
}

async fn post_from(system: &Embedded, forwarded: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/api/osago/requests", system.addr))
        .json(&sample_json());
    if let Some(value) = forwarded {
        request = request.header("x-forwarded-for", value);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_client_written_forwarded_entry_does_not_change_the_bucket() {
    let limited = |trusted: Vec<&str>| {
        let mut config = no_insurers();
        config.core.rate_limit = osago_core::ratelimit::RateLimit {
            per_second: 1.0 / 60.0,
            burst: 2,
        };
        config.core.trusted_proxies = trusted.into_iter().map(|n| n.parse().unwrap()).collect();
        config
    };
    // Behind a trusted proxy (the test's own address), the client is the
    // right-most untrusted entry; what it wrote to the left is not believed.
    let system = osago_tests::start_embedded(limited(vec!["127.0.0.1/32", "10.0.0.0/8"])).await;
    for spoof in ["1.1.1.1", "2.2.2.2"] {
        let header = format!("{spoof}, 203.0.113.7, 10.0.0.2");
        assert_eq!(post_from(&system, Some(&header)).await, 202);
    }
    assert_eq!(
        post_from(&system, Some("3.3.3.3, 203.0.113.7, 10.0.0.2")).await,
        429,
        "a new left-most entry opened a new bucket"
    );
    // Another client behind the same proxy has its own bucket.
    assert_eq!(post_from(&system, Some("198.51.100.9")).await, 202);
    // IPv6 clients count by their /64.
    assert_eq!(post_from(&system, Some("2001:db8:1:2::1")).await, 202);
    assert_eq!(post_from(&system, Some("2001:db8:1:2::ffff")).await, 202);
    assert_eq!(post_from(&system, Some("2001:db8:1:2:abcd::9")).await, 429);
    assert_eq!(post_from(&system, Some("2001:db8:1:3::1")).await, 202);
    system.stop().await;

    // Without trusted proxies the header is ignored: every value counts
    // against the peer.
    let system = osago_tests::start_embedded(limited(vec![])).await;
    assert_eq!(post_from(&system, Some("1.1.1.1")).await, 202);
    assert_eq!(post_from(&system, Some("2.2.2.2")).await, 202);
    assert_eq!(post_from(&system, Some("3.3.3.3")).await, 429);
    system.stop().await;
}

async fn get(url: &str, auth: Option<(&str, &str)>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some((name, value)) = auth {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    if content_type.starts_with("text/event-stream") {
        return (status, content_type);
    }
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn the_stream_and_quotes_need_the_requests_own_token() {
    let system = osago_tests::start_embedded(no_insurers()).await;
    let http = reqwest::Client::new();
    let post = || async {
        let response = http
            .post(format!("http://{}/api/osago/requests", system.addr))
            .json(&sample_json())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_owned();
        let created: Value = response.json().await.unwrap();
        (created, cookie)
    };
    let (a, a_cookie) = post().await;
    let (b, _) = post().await;
    let base = format!("http://{}", system.addr);
    let a_token = a["access_token"].as_str().unwrap();
    let b_token = b["access_token"].as_str().unwrap();
    for part in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/api/osago/requests/",
    ] {
        assert!(a_cookie.contains(part), "{a_cookie}");
    }
    let unknown_id = "6f2c1f8e-4a7a-4c43-9d47-3f1f7a1b2c3d";
    for what in ["quotes", "stream"] {
        let url = format!("{base}{}", a[format!("{what}_url")].as_str().unwrap());
        let unknown = get(
            &format!("{base}/api/osago/requests/{unknown_id}/{what}"),
            Some(("authorization", &format!("Bearer {a_token}"))),
        )
        .await;
        assert_eq!(unknown.0, 404);
        let bearer_b = format!("Bearer {b_token}");
        let garbage = format!("Bearer {}x", &a_token[..a_token.len() - 1]);
        for (why, auth) in [
            ("no token", None),
            (
                "another request's token",
                Some(("authorization", bearer_b.as_str())),
            ),
            ("a forged token", Some(("authorization", garbage.as_str()))),
            (
                "another request's cookie",
                Some(("cookie", &*format!("osago_access={b_token}"))),
            ),
        ] {
            let answer = get(&url, auth).await;
            assert_eq!(answer, unknown, "{what} with {why}");
        }
        // The owner's token opens it, as a bearer token or as the cookie.
        let bearer_a = format!("Bearer {a_token}");
        let (status, _) = get(&url, Some(("authorization", &bearer_a))).await;
        assert_eq!(status, 200, "{what} with its token");
        let cookie = a_cookie.split(';').next().unwrap();
        let (status, _) = get(&url, Some(("cookie", cookie))).await;
        assert_eq!(status, 200, "{what} with its cookie");
    }
    system.stop().await;
}

#[tokio::test]
async fn tokens_survive_a_restart_and_a_key_rotation() {
    let k1 = "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let k2 = "k2:ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
    let keys = |spec: &str| core_app::access::AccessKeys::parse(spec).unwrap();
    let id = osago_core::RequestId::random();
    // Issued by one pod under k1 ...
    let token = keys(k1).issue(&id);
    // ... accepted by a restarted pod (same configured keys), by one that
    // rotated to k2 and still lists k1, and refused once k1 is dropped.
    assert!(keys(k1).verify(&id, &token));
    assert!(keys(&format!("{k2},{k1}")).verify(&id, &token));
    assert!(!keys(k2).verify(&id, &token));

    // End to end: a core-app process restarted on the same keys file
    // accepts the token its predecessor issued.
    let dir = tempfile::tempdir().unwrap();
    let keys_file = dir.path().join("access-keys");
    std::fs::write(&keys_file, format!("# signing key first\n{k1}\n")).unwrap();
    let pg = osago_testkit::Postgres::start().await;
    let port = osago_testkit::free_port();
    let admin = osago_testkit::free_port();
    let run = || {
        let mut command = std::process::Command::new(osago_tests::processes::binary("core-app"));
        command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--database", &pg.url()])
            .args(["--access-keys-file", keys_file.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command.spawn().unwrap()
    };
    let base = format!("http://127.0.0.1:{port}");
    let ready = || async {
        for _ in 0..200 {
            if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{admin}/health/ready")).await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("core-app not ready");
    };
    let mut first = run();
    ready().await;
    // A client that claims it consented in 2001: the server stamps its own
    // time, and records the text versions and the client's address.
    let mut body = sample_json();
    body["consent"]["given_at"] = serde_json::json!("2001-01-01T00:00:00Z");
    let created: Value = reqwest::Client::new()
        .post(format!("{base}/api/osago/requests"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let quotes = format!("{base}{}", created["quotes_url"].as_str().unwrap());
    let bearer = format!("Bearer {}", created["access_token"].as_str().unwrap());
    assert!(created["access_token"].as_str().unwrap().starts_with("k1."));
    assert_eq!(get(&quotes, Some(("authorization", &bearer))).await.0, 200);
    let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    let (consent, given_at): (Value, String) = sqlx::query_as(
        "SELECT consent, request->'consent'->>'given_at' FROM osago_requests \
         WHERE request_id = $1::text::uuid",
    )
    .bind(created["request_id"].as_str().unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(consent["client_address"], "127.0.0.1", "{consent}");
    assert_eq!(
        consent["personal_data_text"],
        osago_core::request::PROCESSING_TEXT_VERSION
    );
    assert_eq!(
        consent["transfer_text"],
        osago_core::request::TRANSFER_TEXT_VERSION
    );
    assert!(
        !given_at.starts_with("2001"),
        "the browser's time was kept: {given_at}"
    );
    assert_eq!(
        consent["given_at"].as_str().unwrap().get(..4),
        given_at.get(..4)
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second = run();
    ready().await;
    assert_eq!(
        get(&quotes, Some(("authorization", &bearer))).await.0,
        200,
        "the restarted core-app refused its predecessor's token"
    );
    second.kill().unwrap();
    second.wait().unwrap();
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_the_page_no_inline_code() {
    let system = osago_tests::start_embedded(no_insurers()).await;
    let base = format!("http://{}", system.addr);
    let page = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(!html.contains("<style"), "inline style block");
    assert!(!html.contains(" style="), "inline style attribute");
    for script in html.split("<script").skip(1) {
        let tag = &script[..script.find('>').unwrap()];
        assert!(tag.contains("src="), "an inline script: <script{tag}>");
    }
    // The API's answers and the page's files carry them too.
    for (path, status) in [
        ("/app.js", 200),
        ("/app.css", 200),
        ("/consent/processing", 200),
        ("/consent/transfer", 200),
        (
            "/api/osago/requests/6f2c1f8e-4a7a-4c43-9d47-3f1f7a1b2c3d/quotes",
            404,
        ),
    ] {
        let response = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(
            response.headers()["x-content-type-options"],
            "nosniff",
            "{path}"
        );
        assert_eq!(
            response.headers()["referrer-policy"],
            "no-referrer",
            "{path}"
        );
    }
    let js = reqwest::get(format!("{base}/app.js")).await.unwrap();
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    // The consent texts carry the versions the server asks for.
    let processing = reqwest::get(format!("{base}/consent/processing"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(processing.contains(osago_core::request::PROCESSING_TEXT_VERSION));
    let transfer = reqwest::get(format!("{base}/consent/transfer"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(transfer.contains(osago_core::request::TRANSFER_TEXT_VERSION));
    // The page opens empty: no sample personal data, consents unticked.
    let sample_name = sample_json()["owner"]["full_name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!html.contains(&sample_name));
    assert!(
        !html.contains("checked"),
        "a box is ticked when the page opens"
    );
    system.stop().await;
}

#[tokio::test]
async fn a_stream_reader_is_held_to_its_caps() {
    let mut config = no_insurers();
    config.core.max_streams_per_client = 2;
    config.core.read_limit = osago_core::ratelimit::RateLimit {
        per_second: 0.5,
        burst: 4,
    };
    let system = osago_tests::start_embedded(config).await;
    let created: Value = reqwest::Client::new()
        .post(format!("http://{}/api/osago/requests", system.addr))
        .json(&sample_json())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!(
        "http://{}{}",
        system.addr,
        created["stream_url"].as_str().unwrap()
    );
    let token = created["access_token"].as_str().unwrap();
    let open = || reqwest::Client::new().get(&url).bearer_auth(token).send();
    let first = open().await.unwrap();
    let second = open().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open().await.unwrap();
    assert_eq!(third.status(), 429, "a third stream from one client");
    assert!(third.headers().contains_key("retry-after"));
    drop((first, second));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The streams are closed, but the read rate (4 at once) is spent.
    let fourth = open().await.unwrap();
    assert_eq!(fourth.status(), 200, "a stream slot freed on close");
    drop(fourth);
    let fifth = open().await.unwrap();
    assert_eq!(fifth.status(), 429, "the read rate");
    let problem: Value = fifth.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .starts_with("too many reads from this client"),
        "{problem}"
    );
    system.stop().await;
}

/// A core-app process on `limiter` (a Valkey URL) failing `mode`; its API
/// and admin addresses.
fn core_app_on(limiter: &str, mode: &str) -> (std::process::Child, String, String) {
    core_app_with(&["--rate-limit-store", limiter, "--limiter-failure", mode])
}

/// A core-app process on free ports with `args`: it, its API and its admin
/// base URLs.
fn core_app_with(args: &[&str]) -> (std::process::Child, String, String) {
    let (port, admin) = (osago_testkit::free_port(), osago_testkit::free_port());
    let child = std::process::Command::new(osago_tests::processes::binary("core-app"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(args)
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    (
        child,
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{admin}"),
    )
}

async fn wait_ready(admin: &str) {
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("{admin}/health/live")).await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("core-app not live");
}

#[tokio::test]
async fn a_limiter_store_that_is_down_fails_open_or_closed_as_set_and_is_counted() {
    let mut valkey = osago_testkit::Valkey::start().await;
    let (mut closed, closed_api, closed_admin) = core_app_on(&valkey.url(), "closed");
    let (mut open, open_api, open_admin) = core_app_on(&valkey.url(), "open");
    wait_ready(&closed_admin).await;
    wait_ready(&open_admin).await;
    let post = |base: String| async move {
        reqwest::Client::new()
            .post(format!("{base}/api/osago/requests"))
            .json(&sample_json())
            .send()
            .await
            .unwrap()
    };
    // With the store up both accept.
    assert_eq!(post(closed_api.clone()).await.status(), 202);
    assert_eq!(post(open_api.clone()).await.status(), 202);
    valkey.kill().await;
    let refused = post(closed_api.clone()).await;
    assert_eq!(refused.status(), 503, "closed lets nothing through");
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        post(open_api.clone()).await.status(),
        202,
        "open lets it through"
    );
    let counted = |admin: String, decision: &'static str| async move {
        let metrics = reqwest::get(format!("{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let line = format!(
            "osago_core_limiter_unavailable_total{{limit=\"rate_limited\",decision=\"{decision}\"}} 1"
        );
        assert!(metrics.contains(&line), "no {line} in:\n{metrics}");
    };
    counted(closed_admin, "closed").await;
    counted(open_admin, "open").await;
    closed.kill().unwrap();
    open.kill().unwrap();
    let _ = (closed.wait(), open.wait());
}

/// Script calls Valkey has run since its stats were last reset.
async fn valkey_script_calls(url: &str) -> u64 {
    use deadpool_redis::redis;
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    stats
        .lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| {
            line.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[tokio::test]
async fn under_a_flood_refusals_skip_valkey_and_the_shared_admission_rate_holds() {
    let valkey = osago_testkit::Valkey::start().await;
    // Two pods sharing one admission limit of 2 a second (burst 1); no
    // per-client limits, as every request here comes from 127.0.0.1.
    let mut pods = Vec::new();
    let url = valkey.url();
    for _ in 0..2 {
        let (child, api, admin) = core_app_with(&[
            "--rate-limit-store",
            &url,
            "--rate-limit-per-minute",
            "0",
            "--max-connections-per-client",
            "0",
            "--admission-rate",
            "2",
            "--admission-burst",
            "1",
        ]);
        wait_ready(&admin).await;
        pods.push((child, api));
    }
    {
        use deadpool_redis::redis;
        let client = redis::Client::open(valkey.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    // Four clients per pod, each posting as fast as it is answered, for 3 s.
    let start = Instant::now();
    let until = start + Duration::from_secs(3);
    let mut clients = Vec::new();
    for (_, api) in &pods {
        for _ in 0..4 {
            let url = format!("{api}/api/osago/requests");
            clients.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                let (mut admitted, mut refused) = (0u64, 0u64);
                while Instant::now() < until {
                    let response = http.post(&url).json(&sample_json()).send().await.unwrap();
                    match response.status().as_u16() {
                        202 => admitted += 1,
                        503 => {
                            assert!(response.headers().contains_key("retry-after"));
                            refused += 1;
                        }
                        other => panic!("status {other}"),
                    }
                    response.bytes().await.unwrap();
                }
                (admitted, refused)
            }));
        }
    }
    let (mut admitted, mut refused) = (0, 0);
    for client in clients {
        let (a, r) = client.await.unwrap();
        admitted += a;
        refused += r;
    }
    let seconds = start.elapsed().as_secs_f64();
    let scripts = valkey_script_calls(&valkey.url()).await;
    println!(
        "{admitted} admitted and {refused} refused in {seconds:.1} s; {scripts} limiter scripts on Valkey"
    );

    // One limit for both pods: 2 a second and the burst of 1, whichever
    // pod the requests reached; and no pod refuses past the moment the
    // shared limiter would admit again, so the rate is used.
    assert!(
        admitted as f64 <= 2.0 + 2.0 * seconds,
        "{admitted} admitted in {seconds:.1} s"
    );
    assert!(
        admitted as f64 >= seconds,
        "{admitted} admitted in {seconds:.1} s"
    );
    // Without the pods' memory of refusals every request is one script
    // (scripts == admitted + refused); with it, a pod asks again only when
    // the limiter could admit, about once per 500 ms per client at most.
    assert!(
        refused >= 100,
        "the flood reached the limit: {refused} refused"
    );
    assert!(
        scripts * 4 <= admitted + refused,
        "{scripts} scripts for {} requests",
        admitted + refused
    );
    for (mut child, _) in pods {
        child.kill().unwrap();
        let _ = child.wait();
    }
}

#[tokio::test]
async fn the_embedded_binary_keeps_admin_endpoints_off_its_public_listener() {
    let (port, admin) = (osago_testkit::free_port(), osago_testkit::free_port());
    let mut child = std::process::Command::new(osago_tests::processes::binary("osago"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let admin = format!("http://127.0.0.1:{admin}");
    wait_ready(&admin).await;
    for path in ["/health/live", "/health/ready", "/metrics"] {
        let on_admin = reqwest::get(format!("{admin}{path}")).await.unwrap();
        assert_eq!(on_admin.status(), 200, "{path} on the admin listener");
        let public = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .unwrap();
        assert_eq!(public.status(), 404, "{path} on the public listener");
    }
    let page = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    child.kill().unwrap();
    let _ = child.wait();
}

/// Reads a streaming answer until its head and first event are in.
async fn read_head_and_first_event(socket: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            if body.contains("\n\n") {
                return (head.to_ascii_lowercase(), body.to_owned());
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, socket.read(&mut chunk))
            .await
            .expect("a head and an event within 10 s")
            .unwrap();
        assert!(n > 0, "closed early: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The header lines of `head` but those that differ by design between the
/// two paths (date, the request id's value, connection, framing).
fn comparable(head: &str) -> Vec<String> {
    let mut lines: Vec<String> = head
        .lines()
        .skip(1)
        .filter(|l| {
            ![
                "date:",
                "x-request-id:",
                "connection:",
                "transfer-encoding:",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn a_stream_on_its_own_or_a_kept_alive_connection_is_answered_lean_and_the_same() {
    let system = osago_tests::start_embedded(no_insurers()).await;
    let created = osago_tests::post_sample(
        &reqwest::Client::new(),
        &format!("http://{}/api/osago/requests", system.addr),
    )
    .await;
    let path = created["stream_url"].as_str().unwrap();
    let token = created["access_token"].as_str().unwrap();
    let get =
        format!("GET {path} HTTP/1.1\r\nHost: osago\r\nAuthorization: Bearer {token}\r\n\r\n");
    // First on its connection: the lean path, which closes after the stream.
    let mut own = TcpStream::connect(system.addr).await.unwrap();
    own.write_all(get.as_bytes()).await.unwrap();
    let (lean_head, lean_body) = read_head_and_first_event(&mut own).await;
    assert!(lean_head.starts_with("http/1.1 200 ok"), "{lean_head}");
    assert!(lean_head.contains("\r\nconnection: close"), "{lean_head}");
    assert!(
        lean_head.contains("\r\ntransfer-encoding: chunked"),
        "{lean_head}"
    );
    assert!(lean_head.contains("\r\nx-request-id: "), "{lean_head}");
    // After another request on a kept-alive connection (as an ingress
    // pooling its connections sends it): hyper hands it back to the lean
    // path, its head whole or in pieces. After a request with a chunked
    // body (whose end the hand-back does not follow): hyper's path.
    let mut answers = Vec::new();
    for (before, in_pieces, lean) in [
        ("", false, true),
        ("", true, true),
        ("Transfer-Encoding: chunked\r\n\r\n0\r\n", false, false),
    ] {
        let mut shared = TcpStream::connect(system.addr).await.unwrap();
        shared
            .write_all(
                format!("GET /favicon.ico HTTP/1.1\r\nHost: osago\r\n{before}\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut first = [0u8; 1024];
        let n = shared.read(&mut first).await.unwrap();
        assert!(first[..n].starts_with(b"HTTP/1.1 204"));
        if in_pieces {
            let (start, rest) = get.as_bytes().split_at(10);
            shared.write_all(start).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            shared.write_all(rest).await.unwrap();
        } else {
            shared.write_all(get.as_bytes()).await.unwrap();
        }
        let (head, body) = read_head_and_first_event(&mut shared).await;
        assert_eq!(
            head.contains("\r\nconnection: close"),
            lean,
            "lean when handed back, else hyper's ({before:?}): {head}"
        );
        answers.push((head, body));
    }
    // The same answer every way: status, headers, first event.
    let event = |body: &str| {
        let body = body.split_once("\r\n").unwrap().1.to_owned();
        body.split("\n\n").next().unwrap().to_owned()
    };
    for (head, body) in &answers {
        assert_eq!(comparable(&lean_head), comparable(head));
        assert_eq!(event(&lean_body), event(body));
    }
    assert!(event(&lean_body).starts_with("retry: "), "{lean_body}");
    // Each counted by the path that answered it.
    let metrics = reqwest::get(format!("http://{}/metrics", system.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"osago_core_sse_stream_paths_total{path="first"} 1"#,
        r#"osago_core_sse_stream_paths_total{path="handed_back"} 2"#,
        r#"osago_core_sse_stream_paths_total{path="hyper"} 1"#,
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }
    system.stop().await;
}
