//! Short runs of the load generator against the embedded system (the
//! default eight insurers, sped up 20x), so the benchmark cannot rot: 200
//! users, each POSTs and holds its stream to the end, with no error; and
//! 100 subscribers on one request's stream (the SSE fan-out measurement
//! `scripts/bench-load.sh sse` runs against core-app and nginx + nchan),
//! over HTTP/1.1 and over HTTP/2.

use std::time::Duration;

use loadgen::fanout::FanoutConfig;
use loadgen::{Arrivals, LoadConfig, Report};
use osago::EmbeddedConfig;
use osago_tests::{post_sample, sample_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_users_get_their_quotes_streamed_without_errors() {
    let system = embedded().await;
    let load = LoadConfig {
        targets: vec![format!("http://{}", system.addr)],
        users: 200,
        ramp_per_sec: 400.0,
        source_ips: Vec::new(),
        timeout: Duration::from_secs(60),
        request: sample_json(),
        arrivals: None,
    };
    let started = std::time::Instant::now();
    let records = loadgen::run(load).await;
    let report = Report::of(&records, started.elapsed().as_secs_f64());
    println!("{report:?}");
    assert_eq!(report.users, 200);
    assert_eq!(report.errors, 0, "{:?}", report.sample_errors);
    assert_eq!(report.completed, 200);
    assert!(report.quotes >= 200, "quotes arrived: {}", report.quotes);
    assert!(report.end_to_end_ms.0 > 0.0 && report.pipeline_ms.1 > 0.0);
    assert!(report.request_path_ms.1 > 0.0);
    system.stop().await;
}

/// The steady model: open Poisson arrivals for 4 s at 50 per second, the
/// first 2 s a warm-up that is not reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_arrivals_report_the_sessions_after_the_warm_up() {
    let system = embedded().await;
    let load = LoadConfig {
        targets: vec![format!("http://{}", system.addr)],
        users: 0,
        ramp_per_sec: 1.0,
        source_ips: Vec::new(),
        timeout: Duration::from_secs(60),
        request: sample_json(),
        arrivals: Some(Arrivals {
            rate: 50.0,
            duration: Duration::from_secs(4),
            warm_up: Duration::from_secs(2),
        }),
    };
    let started = std::time::Instant::now();
    let records = loadgen::run(load).await;
    let report = Report::of(&records, started.elapsed().as_secs_f64());
    // About 100 counted sessions (Poisson: 2 s at 50/s), and only those.
    assert!(
        (50..=160).contains(&report.users),
        "{} sessions reported",
        report.users
    );
    assert_eq!(report.errors, 0, "{:?}", report.sample_errors);
    assert_eq!(report.completed, report.users);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_subscribers_see_every_row_of_one_stream() {
    a_hundred_subscribers(0).await;
}

/// The same over HTTP/2 without TLS (as a proxy talking h2c to its pods),
/// 25 streams on each of four connections: hyper serves them (the lean
/// path is HTTP/1's), and every row reaches every stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_subscribers_over_http2_see_every_row_of_one_stream() {
    a_hundred_subscribers(25).await;
}

async fn a_hundred_subscribers(h2_streams_per_connection: usize) {
    let system = embedded().await;
    let base = format!("http://{}", system.addr);
    let created = post_sample(
        &reqwest::Client::new(),
        &format!("{base}/api/osago/requests"),
    )
    .await;
    let url = format!("{base}{}", created["stream_url"].as_str().unwrap());
    let mut open = None;
    let report = loadgen::fanout::subscribe(
        FanoutConfig {
            url,
            token: created["access_token"].as_str().map(str::to_owned),
            subscribers: 100,
            connect_per_sec: 1000.0,
            source_ips: Vec::new(),
            // Every insurer's row at least once (pending, or its outcome).
            events: 8,
            timeout: Duration::from_secs(30),
            first: None,
            h2_streams_per_connection,
        },
        |n| open = Some(n),
    )
    .await;
    assert_eq!(open, Some(100));
    assert_eq!(report.errors, 0, "{:?}", report.sample_errors);
    assert_eq!(report.complete, 100);
    assert!(report.lags_us.len() >= 800, "{} lags", report.lags_us.len());
    assert!(report.lag_ms(0.99) > 0.0);
    // Which HTTP path answered: HTTP/1.1 streams first on their
    // connections take the lean one, HTTP/2 streams are hyper's.
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let path = if h2_streams_per_connection > 0 {
        "hyper"
    } else {
        "first"
    };
    let line = format!(r#"osago_core_sse_stream_paths_total{{path="{path}"}} 100"#);
    assert!(
        metrics.lines().any(|l| l == line),
        "{line} not in the metrics"
    );
    system.stop().await;
}

async fn embedded() -> osago::Embedded {
    let mut config = EmbeddedConfig {
        sim_speed: 20.0,
        // Real insurers' 50-200 ms per answer, sped up like the rest.
        sim_response_time: (Duration::from_millis(50), Duration::from_millis(200)),
        ..EmbeddedConfig::default()
    };
    config.core = config.core.without_client_limits();
    config.core.request_deadline = Duration::from_secs(10);
    config.engine.insurer_deadline = Duration::from_secs(10);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    osago::start(listener, config).await.unwrap()
}
