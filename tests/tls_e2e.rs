//! TLS and credentials to every dependency, with the real binaries:
//! PostgreSQL requiring TLS (verify-full against a CA the test makes),
//! Valkey over TLS with a client certificate, the broker over TLS (tansu
//! behind stunnel, advertising the TLS address), and an insurer over https
//! that requires a client certificate (stunnel) and a header (the
//! simulator). Then the same dependencies spoken to in plaintext: each
//! start fails naming the dependency and the cause.

use std::process::Command;
use std::time::Duration;

use osago_testkit::{free_port, Postgres, Stunnel, Tansu, TestPki, Valkey};
use osago_tests::processes::{binary, wait_healthy, Service};
use osago_tests::{read_stream, rows_by_insurer, sample_json};
use serde_json::Value;

const SECRET_HEADER: &str = "Authorization: Bearer s3cret-t0ken";

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// The Kafka flags of a TLS client trusting the test CA.
fn kafka_tls(pki: &TestPki, tls_port: u16) -> Vec<String> {
    vec![
        "--bus".into(),
        format!("kafka://localhost:{tls_port}"),
        "--kafka-property".into(),
        "security.protocol=SSL".into(),
        "--kafka-property".into(),
        format!("ssl.ca.location={}", path(&pki.ca)),
        // Unused over SSL (no SASL here), and never to be printed.
        "--kafka-property".into(),
        "sasl.password=k4fka-s3cret".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flows_with_tls_to_every_dependency() {
    let logs = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let postgres = Postgres::start_tls(&pki).await;
    postgres.create_database("osago").await;
    let database = postgres.tls_url("osago", &pki);
    let valkey = Valkey::start_tls(&pki).await;
    let (broker_port, broker_tls_port) = (free_port(), free_port());
    let _tansu = Tansu::start_behind(broker_port, broker_tls_port).await;
    let _broker_tls = Stunnel::start(&pki, broker_port, Some(broker_tls_port), false).await;
    let sim_port = free_port();
    let _sim = Service::start(
        "sim-swift",
        "insurer-sim",
        &[
            "--listen".into(),
            format!("127.0.0.1:{sim_port}"),
            "--insurer-id".into(),
            "swift".into(),
            "--archetype".into(),
            "fast".into(),
            "--speed".into(),
            "20".into(),
            "--require-header".into(),
            SECRET_HEADER.into(),
        ],
        logs.path(),
    );
    let insurer_tls = Stunnel::start(&pki, sim_port, None, true).await;

    let aggregator_port = free_port();
    let aggregator = Service::start(
        "aggregator",
        "aggregator",
        &[
            vec![
                "--listen".into(),
                format!("127.0.0.1:{aggregator_port}"),
                "--state".into(),
                valkey.tls_url(),
                "--valkey-ca-file".into(),
                path(&pki.ca),
                "--valkey-cert-file".into(),
                path(&pki.client_cert),
                "--valkey-key-file".into(),
                path(&pki.client_key),
                "--insurer".into(),
                format!("swift=https://localhost:{}/", insurer_tls.port),
                "--insurer-ca-file".into(),
                path(&pki.ca),
                "--insurer-client-cert".into(),
                format!("swift={}", path(&pki.client_cert)),
                "--insurer-client-key".into(),
                format!("swift={}", path(&pki.client_key)),
                "--insurer-header".into(),
                format!("swift={SECRET_HEADER}"),
                "--insurer-deadline".into(),
                "10s".into(),
            ],
            kafka_tls(&pki, broker_tls_port),
        ]
        .concat(),
        logs.path(),
    );
    let (core_port, core_admin_port) = (free_port(), free_port());
    let core = Service::start(
        "core-app",
        "core-app",
        &[
            vec![
                "--listen".into(),
                format!("127.0.0.1:{core_port}"),
                "--admin-listen".into(),
                format!("127.0.0.1:{core_admin_port}"),
                "--database".into(),
                database.clone(),
                "--request-deadline".into(),
                "10s".into(),
                "--heartbeat".into(),
                "1s".into(),
            ],
            kafka_tls(&pki, broker_tls_port),
        ]
        .concat(),
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

    let base = format!("http://127.0.0.1:{core_port}");
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
    let rows = rows_by_insurer(&events);
    let last = rows["swift"].last().unwrap();
    assert_eq!(last["status"], "quoted", "{}", context());

    // Nothing printed the insurer's or the broker's secret.
    for log in std::fs::read_dir(logs.path()).unwrap() {
        let text = std::fs::read_to_string(log.unwrap().path()).unwrap_or_default();
        assert!(
            !text.contains("s3cret-t0ken"),
            "a log holds the insurer secret"
        );
        assert!(
            !text.contains("k4fka-s3cret"),
            "a log holds the broker secret"
        );
    }
}

/// Runs `name` with `args` until it exits (a failed start); its status and
/// last stderr line.
fn failed_start(name: &str, args: &[String]) -> (Option<i32>, String) {
    let output = Command::new(binary(name))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    (output.status.code(), last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_where_tls_is_required_fails_naming_the_dependency_and_the_cause() {
    let pki = TestPki::new();
    let postgres = Postgres::start_tls(&pki).await;
    postgres.create_database("osago").await;
    let valkey = Valkey::start_tls(&pki).await;
    let (broker_port, broker_tls_port) = (free_port(), free_port());
    let _tansu = Tansu::start_behind(broker_port, broker_tls_port).await;
    let _broker_tls = Stunnel::start(&pki, broker_port, Some(broker_tls_port), false).await;
    let listen = |flag: &str| vec![flag.to_owned(), format!("127.0.0.1:{}", free_port())];

    // PostgreSQL without TLS.
    let plain = format!(
        "postgres://postgres@127.0.0.1:{}/osago?sslmode=disable",
        postgres.port
    );
    let (code, line) = failed_start(
        "core-app",
        &[
            listen("--listen"),
            listen("--admin-listen"),
            vec![
                "--database".into(),
                plain,
                "--connect-timeout".into(),
                "1s".into(),
            ],
        ]
        .concat(),
    );
    eprintln!("{line}");
    assert_eq!(code, Some(1), "{line}");
    assert!(
        line.starts_with("core-app: database:") && line.contains("no encryption"),
        "{line}"
    );

    // PostgreSQL with TLS, but a CA that did not sign the server's
    // certificate.
    let other = TestPki::new();
    let (code, line) = failed_start(
        "core-app",
        &[
            listen("--listen"),
            listen("--admin-listen"),
            vec![
                "--database".into(),
                postgres.tls_url("osago", &other),
                "--connect-timeout".into(),
                "1s".into(),
            ],
        ]
        .concat(),
    );
    eprintln!("{line}");
    assert_eq!(code, Some(1), "{line}");
    assert!(
        line.starts_with("core-app: database:") && line.to_lowercase().contains("certificate"),
        "{line}"
    );

    // Valkey in plaintext on its TLS port.
    let (code, line) = failed_start(
        "aggregator",
        &[
            listen("--listen"),
            vec![
                "--state".into(),
                format!("redis://127.0.0.1:{}", valkey.tls_port.unwrap()),
                "--allow-plain-http".into(),
                "--insurer".into(),
                "a=http://127.0.0.1:9/".into(),
                "--connect-timeout".into(),
                "1s".into(),
            ],
        ]
        .concat(),
    );
    eprintln!("{line}");
    assert_eq!(code, Some(1), "{line}");
    assert!(line.starts_with("aggregator: valkey:"), "{line}");
    assert!(
        line.len() > "aggregator: valkey: Unavailable: valkey: ping failed".len(),
        "the cause is named: {line}"
    );

    // The broker in plaintext on its TLS address.
    let (code, line) = failed_start(
        "core-app",
        &[
            listen("--listen"),
            listen("--admin-listen"),
            vec![
                "--bus".into(),
                format!("kafka://localhost:{broker_tls_port}"),
                "--database".into(),
                postgres.tls_url("osago", &pki),
                "--connect-timeout".into(),
                "1s".into(),
            ],
        ]
        .concat(),
    );
    eprintln!("{line}");
    assert_eq!(code, Some(1), "{line}");
    // The client's own diagnosis comes with the timeout.
    assert!(
        line.starts_with("core-app: bus:")
            && line.contains("last connection failure: ")
            && line.contains("Disconnected"),
        "{line}"
    );
}
