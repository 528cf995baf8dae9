//! A short run of the load generator against the embedded system (the
//! default eight insurers, sped up 20x), so the benchmark cannot rot: 200
//! users, each POSTs and holds its stream to the end, with no error.

use std::time::Duration;

use loadgen::{LoadConfig, Report};
use osago::EmbeddedConfig;
use osago_tests::sample_json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_users_get_their_quotes_streamed_without_errors() {
    let mut config = EmbeddedConfig {
        sim_speed: 20.0,
        ..EmbeddedConfig::default()
    };
    config.core.rate_limit.per_second = 0.0;
    config.core.request_deadline = Duration::from_secs(10);
    config.engine.insurer_deadline = Duration::from_secs(10);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let system = osago::start(listener, config).await.unwrap();
    let load = LoadConfig {
        targets: vec![format!("http://{}", system.addr)],
        users: 200,
        ramp_per_sec: 400.0,
        source_ips: Vec::new(),
        timeout: Duration::from_secs(60),
        request: sample_json(),
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
    system.stop().await;
}
