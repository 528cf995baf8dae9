//! Probes and start-up errors of the real binaries: liveness holds while
//! readiness follows the dependencies and the drain, on the admin listener;
//! a failed connection names its cause.

use std::process::Command;
use std::time::{Duration, Instant};

use osago_testkit::{free_port, Postgres, Valkey};
use osago_tests::processes::{binary, wait_healthy, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn probe(http: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let response = http
        .get(url)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .expect("the admin listener answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Polls `url` until it answers `status`; how long that took.
async fn until(http: &reqwest::Client, url: &str, status: u16, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if probe(http, url).await.0 == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{url} not {status} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_dependencies_and_the_drain_while_liveness_holds() {
    let logs = tempfile::tempdir().unwrap();
    let mut valkey = Valkey::start().await;
    let (port, admin_port) = (free_port(), free_port());
    let mut core = Service::start(
        "core-app",
        "core-app",
        &[
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--admin-listen".to_owned(),
            format!("127.0.0.1:{admin_port}"),
            "--rate-limit-store".to_owned(),
            valkey.url(),
        ],
        logs.path(),
    );
    let ready = format!("http://127.0.0.1:{admin_port}/health/ready");
    let live = format!("http://127.0.0.1:{admin_port}/health/live");
    wait_healthy(&core, &ready, Duration::from_secs(60)).await;
    let http = reqwest::Client::new();
    assert_eq!(probe(&http, &live).await.0, 200);
    // Not on the public listener.
    let public = http
        .get(format!("http://127.0.0.1:{port}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);

    // Valkey goes away: readiness turns false within 2 s, liveness holds.
    valkey.kill().await;
    let took = until(&http, &ready, 503, Duration::from_secs(10)).await;
    assert!(
        took < Duration::from_secs(2),
        "readiness turned false after {took:?}"
    );
    let (_, body) = probe(&http, &ready).await;
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["checks"]["valkey"], "unavailable", "{body}");
    assert_eq!(probe(&http, &live).await.0, 200);

    // It comes back: so does readiness.
    valkey.restart().await;
    until(&http, &ready, 200, Duration::from_secs(30)).await;

    // A request in flight (its body half sent) keeps the drain going.
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    slow.write_all(
        b"POST /api/osago/requests HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 4\r\n\r\n{",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = Command::new("kill")
        .args(["-TERM", &core.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    until(&http, &ready, 503, Duration::from_secs(5)).await;
    let (_, body) = probe(&http, &ready).await;
    assert_eq!(body["status"], "draining", "{body}");
    assert_eq!(probe(&http, &live).await.0, 200);

    // The request finishes (400: its body is not JSON), then the process
    // exits cleanly.
    slow.write_all(b"}}}").await.unwrap();
    let mut answer = vec![0; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert_eq!(core.terminate(Duration::from_secs(20)).await, Some(0));
}

#[tokio::test]
async fn a_failed_connection_names_its_cause() {
    let postgres = Postgres::start().await;
    let missing = postgres.url().replace("/postgres", "/no_such_db");
    let output = Command::new(binary("core-app"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--database", &missing, "--connect-timeout", "1s"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("core-app: database:") && last.contains("\"no_such_db\" does not exist"),
        "the last line names the dependency and the server's reason: {stderr}"
    );
}

#[tokio::test]
async fn the_requeue_command_puts_dead_messages_back_in_line() {
    use osago_core::ports::{OutboxStore, RequestStore};
    use osago_transport::postgres::{PostgresConfig, PostgresStore};

    let postgres = Postgres::start().await;
    let url = postgres.create_database("osago").await;
    let store = PostgresStore::connect(&url, PostgresConfig::default())
        .await
        .unwrap();
    let (event, _, _) = osago_transport::conformance::outbox::request_event();
    store
        .create(
            &event,
            &osago_core::request::ConsentRecord::received(&event, [127, 0, 0, 1].into()),
        )
        .await
        .unwrap();
    let claimed = store.claim(10, Duration::from_secs(60)).await.unwrap();
    store.mark_failed(claimed[0].id, 1).await.unwrap();
    assert_eq!(store.dead_count().await.unwrap(), 1);

    let output = Command::new(binary("core-app"))
        .args(["--database", &url, "outbox", "requeue-dead"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), "requeued 1 dead-lettered outbox messages");
    assert_eq!(store.dead_count().await.unwrap(), 0);
    assert_eq!(
        store
            .claim(10, Duration::from_secs(60))
            .await
            .unwrap()
            .len(),
        1
    );
}
