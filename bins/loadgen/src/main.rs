//! `loadgen`: runs N virtual users against one or more core-apps and prints
//! what they saw (markdown row and, with `--json`, the full report).
//!
//! ```text
//! loadgen --target http://127.0.0.1:8080 --users 2500 --ramp 500 \
//!         --source-ips 8 --watch osago=$(pidof osago)
//! ```
//!
//! `--processes P` splits the users over P child processes (each may hold at
//! most 20 000 open files); `--source-ips K` connects from 127.0.0.1 ..
//! 127.0.0.K in turn. `--watch name=pid` reports the peak RSS and the CPU
//! seconds of a server process over the run.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use clap::Parser;
use loadgen::fanout::FanoutConfig;
use loadgen::{proc_cpu, proc_usage, LoadConfig, ProcessUsage, Report};

#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// core-app base URL (repeat, or comma-separate, for several).
    #[arg(
        long = "target",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080"
    )]
    targets: Vec<String>,
    /// Virtual users.
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Users started per second.
    #[arg(long, default_value_t = 200.0)]
    ramp: f64,
    /// Connect from 127.0.0.1 .. 127.0.0.K in turn (0: the default address).
    #[arg(long, default_value_t = 0)]
    source_ips: u8,
    /// How long a user waits for its stream to end.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Split the users over this many child processes.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Server processes to measure, as `name=pid` (repeatable).
    #[arg(long = "watch")]
    watch: Vec<String>,
    /// Print the full report as JSON (children use it).
    #[arg(long)]
    json: bool,
    /// Open Poisson arrivals at this many sessions per second instead of a
    /// burst of --users (0: the burst).
    #[arg(long, default_value_t = 0.0)]
    arrival_rate: f64,
    /// With --arrival-rate: how long sessions keep arriving.
    #[arg(long, default_value = "240s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// With --arrival-rate: sessions started before this are not reported.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    warm_up: Duration,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Hold N SSE streams of one URL and measure the delivery lag of every
    /// event stamped with `occurred_at` (one publisher, many subscribers).
    /// Prints `connected K` once every stream is open or failed, then the
    /// report as JSON.
    Subscribe {
        /// The stream URL.
        #[arg(long)]
        url: String,
        /// The stream's access token (the POST answer's `access_token`).
        #[arg(long, env = "LOADGEN_TOKEN")]
        token: Option<String>,
        /// Subscribers.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Subscribers connected per second.
        #[arg(long, default_value_t = 2000.0)]
        connect_rate: f64,
        /// Connect from 127.0.0.1 .. 127.0.0.K in turn (0: the default address).
        #[arg(long, default_value_t = 0)]
        source_ips: u8,
        /// Stamped events each subscriber waits for.
        #[arg(long, default_value_t = 10)]
        events: usize,
        /// How long a subscriber waits for them.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// A URL each subscriber gets before its stream, so that the stream
        /// is asked for on a kept-alive connection (as behind a proxy that
        /// pools its upstream connections).
        #[arg(long)]
        first: Option<String>,
        /// Streams over HTTP/2 without TLS (prior knowledge, as a proxy
        /// talks h2c to a pod), this many on each connection (0: HTTP/1.1,
        /// a connection per stream). hyper's server allows 200 at once.
        #[arg(long, default_value_t = 0)]
        h2_streams_per_connection: usize,
    },
}

fn source_addresses(k: u8) -> Vec<IpAddr> {
    (1..=k)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect()
}

fn subscribe(command: Cmd) -> ExitCode {
    let Cmd::Subscribe {
        url,
        token,
        subscribers,
        connect_rate,
        source_ips,
        events,
        timeout,
        first,
        h2_streams_per_connection,
    } = command;
    if subscribers == 0 || connect_rate <= 0.0 {
        eprintln!("loadgen subscribe: --subscribers and --connect-rate must be positive");
        return ExitCode::from(64);
    }
    let config = FanoutConfig {
        url,
        token,
        subscribers,
        connect_per_sec: connect_rate,
        source_ips: source_addresses(source_ips),
        events,
        timeout,
        first,
        h2_streams_per_connection,
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let report = runtime.block_on(loadgen::fanout::subscribe(config, |open| {
        println!("connected {open}");
        let _ = std::io::Write::flush(&mut std::io::stdout());
    }));
    println!("{}", serde_json::to_string(&report).expect("report JSON"));
    ExitCode::SUCCESS
}

fn sample_request() -> serde_json::Value {
    serde_json::from_str(include_str!("../../../docs/examples/request.json"))
        .expect("the sample request is JSON")
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(command) = args.command {
        return subscribe(command);
    }
    if !(args.arrival_rate.is_finite() && args.arrival_rate >= 0.0) || args.warm_up >= args.duration
    {
        eprintln!(
            "loadgen: --arrival-rate must be 0 or positive, --warm-up shorter than --duration"
        );
        return ExitCode::from(64);
    }
    if args.users == 0 || args.ramp <= 0.0 || args.targets.is_empty() || args.processes == 0 {
        eprintln!("loadgen: --users, --ramp and --processes must be positive, --target given");
        return ExitCode::from(64);
    }
    let watched: Vec<(String, u32)> = args
        .watch
        .iter()
        .filter_map(|w| {
            let (name, pid) = w.split_once('=')?;
            Some((name.to_owned(), pid.parse().ok()?))
        })
        .collect();
    let cpu_before: Vec<f64> = watched
        .iter()
        .map(|(_, pid)| proc_cpu(*pid).unwrap_or(0.0))
        .collect();
    let started = Instant::now();
    let report = if args.processes > 1 {
        let exe = std::env::current_exe().expect("own path");
        let per = args.users.div_ceil(args.processes);
        let children: Vec<_> = (0..args.processes)
            .map(|_| {
                Command::new(&exe)
                    .args(["--users", &per.to_string()])
                    .args(["--ramp", &(args.ramp / args.processes as f64).to_string()])
                    .args(["--source-ips", &args.source_ips.to_string()])
                    .args(["--timeout", &format!("{}s", args.timeout.as_secs())])
                    .args(["--target", &args.targets.join(",")])
                    .args([
                        "--arrival-rate",
                        &(args.arrival_rate / args.processes as f64).to_string(),
                    ])
                    .args(["--duration", &format!("{}ms", args.duration.as_millis())])
                    .args(["--warm-up", &format!("{}ms", args.warm_up.as_millis())])
                    .arg("--json")
                    .output()
            })
            .collect();
        let parts: Vec<Report> = children
            .into_iter()
            .filter_map(|c| c.ok())
            .filter_map(|out| serde_json::from_slice(&out.stdout).ok())
            .collect();
        Report::merge(&parts)
    } else {
        let source_ips = source_addresses(args.source_ips);
        let config = LoadConfig {
            targets: args.targets.clone(),
            users: args.users,
            ramp_per_sec: args.ramp,
            source_ips,
            timeout: args.timeout,
            request: sample_request(),
            arrivals: (args.arrival_rate > 0.0).then_some(loadgen::Arrivals {
                rate: args.arrival_rate,
                duration: args.duration,
                warm_up: args.warm_up,
            }),
        };
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let records = runtime.block_on(loadgen::run(config));
        Report::of(&records, started.elapsed().as_secs_f64())
    };
    let mut report = report;
    report.processes = watched
        .iter()
        .zip(cpu_before)
        .filter_map(|((name, pid), before)| {
            let (peak_rss_kib, cpu) = proc_usage(*pid)?;
            Some(ProcessUsage {
                name: name.clone(),
                peak_rss_kib,
                cpu_seconds: cpu - before,
            })
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string(&report).expect("report JSON"));
        return ExitCode::SUCCESS;
    }
    println!(
        "| users | errors | end-to-end p50/p99 ms | pipeline p50/p99 ms | detection p50/p99 ms | first quote p50/p99 ms | done p50/p99 ms | quotes | seconds |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let pair = |(a, b): (f64, f64)| format!("{a:.0} / {b:.0}");
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
        report.users,
        report.errors,
        pair(report.end_to_end_ms),
        pair(report.pipeline_ms),
        pair(report.detection_ms),
        pair(report.first_quote_ms),
        pair(report.done_ms),
        report.quotes,
        report.seconds
    );
    for process in &report.processes {
        println!(
            "{}: peak RSS {:.1} MiB, CPU {:.1} s ({:.2} ms per request)",
            process.name,
            process.peak_rss_kib as f64 / 1024.0,
            process.cpu_seconds,
            process.cpu_seconds * 1000.0 / report.users.max(1) as f64
        );
    }
    for error in &report.sample_errors {
        println!("error: {error}");
    }
    if report.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
