//! Load benchmark, real-stack mode: 2 core-apps and 2 aggregators (release
//! binaries) on private PostgreSQL, Valkey and the Kafka-protocol broker,
//! eight simulated insurers at real speed, and the load generator's virtual
//! users spread over both core-apps. Prints one markdown row per N.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo bench -p osago-benches --bench load_real -- 2500
//! ```

use std::time::{Duration, Instant};

use loadgen::{LoadConfig, Report};
use osago_tests::stack::{InsurerSpec, Stack, StackOptions};

fn main() {
    let levels: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let levels = if levels.is_empty() {
        vec![2500]
    } else {
        levels
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("| users | errors | end-to-end p50/p99 ms | pipeline p50/p99 ms | detection p50/p99 ms | first quote p50/p99 ms | done p50/p99 ms | quotes |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for users in levels {
        let report = runtime.block_on(async {
            let stack = Stack::start(StackOptions {
                insurers: InsurerSpec::lineup(),
                deadline: Duration::from_secs(60),
                sim_speed: 1.0,
                static_membership: false,
            })
            .await;
            let started = Instant::now();
            let records = loadgen::run(LoadConfig {
                targets: stack.cores.iter().map(|c| c.base()).collect(),
                users,
                ramp_per_sec: (users as f64 / 10.0).max(250.0),
                source_ips: (1..=8)
                    .map(|i| std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, i)))
                    .collect(),
                timeout: Duration::from_secs(120),
                request: osago_tests::sample_json(),
            })
            .await;
            Report::of(&records, started.elapsed().as_secs_f64())
        });
        let pair = |(a, b): (f64, f64)| format!("{a:.0} / {b:.0}");
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            report.users,
            report.errors,
            pair(report.end_to_end_ms),
            pair(report.pipeline_ms),
            pair(report.detection_ms),
            pair(report.first_quote_ms),
            pair(report.done_ms),
            report.quotes
        );
        for error in &report.sample_errors {
            println!("error: {error}");
        }
    }
}
