//! Bad configuration: each binary checks all of it before binding a port
//! and exits with status 64 and one clear line per problem.

use std::process::Command;

use osago_tests::processes::binary;

fn run(name: &str, args: &[&str]) -> (Option<i32>, Vec<String>) {
    let output = Command::new(binary(name))
        .args(args)
        .env_remove("OSAGO_BUS_URL")
        .env_remove("OSAGO_DATABASE_URL")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    (
        output.status.code(),
        stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

#[test]
fn core_app_reports_every_problem_and_exits_64() {
    let (code, lines) = run(
        "core-app",
        &[
            "--listen",
            "127.0.0.1:1",
            "--bus",
            "nats://x:1",
            "--database",
            "mysql://secret@db/x",
            "--heartbeat",
            "0s",
        ],
    );
    assert_eq!(code, Some(64), "{lines:?}");
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("--bus")));
    assert!(lines.iter().any(|l| l.contains("--database")));
    assert!(lines.iter().any(|l| l.contains("--heartbeat")));
    assert!(
        lines.iter().all(|l| !l.contains("secret")),
        "urls may hold passwords: {lines:?}"
    );
}

#[test]
fn aggregator_reports_every_problem_and_exits_64() {
    let (code, lines) = run(
        "aggregator",
        &[
            "--state",
            "memcached://x",
            "--insurer",
            "Bad Id=http://x",
            "--state-ttl",
            "1h",
        ],
    );
    assert_eq!(code, Some(64), "{lines:?}");
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("--state:")));
    assert!(lines.iter().any(|l| l.contains("--insurer")));
    assert!(lines.iter().any(|l| l.contains("--state-ttl")));
}

#[test]
fn aggregator_checks_per_insurer_policies() {
    let (code, lines) = run(
        "aggregator",
        &[
            "--insurer",
            "alfa=https://127.0.0.1:9",
            "--insurer-socket-timeout",
            "alfa=0s",
            "--insurer-socket-timeout",
            "nobody=5s",
            "--insurer-concurrency",
            "alfa=lots",
            "--insurer-rate=-1",
        ],
    );
    assert_eq!(code, Some(64), "{lines:?}");
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines
        .iter()
        .any(|l| l.contains("--insurer-socket-timeout alfa")));
    assert!(lines
        .iter()
        .any(|l| l.contains("nobody: no such --insurer")));
    assert!(lines
        .iter()
        .any(|l| l.contains("--insurer-concurrency alfa")));
    assert!(lines.iter().any(|l| l.contains("--insurer-rate")));
}

#[test]
fn a_kafka_bus_needs_durable_stores() {
    let (code, lines) = run(
        "core-app",
        &["--bus", "kafka://127.0.0.1:9", "--database", "memory://"],
    );
    assert_eq!(code, Some(64), "{lines:?}");
    let (code, lines) = run(
        "aggregator",
        &[
            "--bus",
            "kafka://127.0.0.1:9",
            "--state",
            "memory://",
            "--insurer",
            "a=https://127.0.0.1:9/",
        ],
    );
    assert_eq!(code, Some(64), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
}

#[test]
fn plain_http_insurers_need_an_explicit_setting() {
    let (code, lines) = run("aggregator", &["--insurer", "alfa=http://127.0.0.1:9/"]);
    assert_eq!(code, Some(64), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("--allow-plain-http"), "{lines:?}");
    let (code, lines) = run(
        "aggregator",
        &[
            "--insurer",
            "alfa=https://127.0.0.1:9/",
            "--insurer-header",
            "alfa=Authorization",
            "--insurer-client-cert",
            "alfa=/nonexistent/cert.pem",
        ],
    );
    assert_eq!(code, Some(64), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("--insurer-header")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("needs both")), "{lines:?}");
}

#[test]
fn set_entries_reach_library_fields_and_bad_ones_are_named() {
    let (code, lines) = run(
        "aggregator",
        &[
            "--insurer",
            "alfa=https://127.0.0.1:9/",
            "--set",
            "engine.resilience.breaker.failure_rate=0",
            "--set",
            "engine.resilience.breaker.nope=1",
            "--set",
            "kafka.session_timeout=soon",
            "--set",
            "queue.depth=1",
        ],
    );
    assert_eq!(code, Some(64), "{lines:?}");
    assert_eq!(lines.len(), 4, "{lines:?}");
    // The library's own check sees the value set (a rate must be above 0).
    assert!(
        lines.iter().any(|l| l.contains("failure_rate")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("no setting \"nope\"")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("kafka.session_timeout")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("\"queue\"")), "{lines:?}");
    let (code, lines) = run(
        "core-app",
        &[
            "--set",
            "core.heartbeat_interval=0s",
            "--set",
            "core.relay.lease=45s",
            "--set",
            "core.connections.http2_max_concurrent_streams=0",
            "--set",
            "core.connections.header_read_timeout=0s",
        ],
    );
    assert_eq!(code, Some(64), "{lines:?}");
    // A connection limit set to what the flag refuses is refused too.
    assert_eq!(
        lines,
        [
            "core-app: --set core.heartbeat_interval must be positive",
            "core-app: --set core.connections.header_read_timeout must be at least 100ms",
            "core-app: --set core.connections.http2_max_concurrent_streams must be at least 1",
        ],
        "{lines:?}"
    );
}

#[test]
fn simulator_rejects_an_unknown_archetype() {
    let (code, lines) = run(
        "insurer-sim",
        &["--insurer-id", "x", "--archetype", "psychic"],
    );
    assert_eq!(code, Some(64), "{lines:?}");
}
