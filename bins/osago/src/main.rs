//! `osago`: the whole system in one process on the embedded default.
//! Serves the page at http://127.0.0.1:8080 unless told otherwise.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use osago::EmbeddedConfig;

/// Runs core-app, the aggregator and eight simulated insurers in one process.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address for the page and the API.
    #[arg(long, env = "OSAGO_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Simulated insurer speed-up (1 = realistic timings, up to a minute).
    #[arg(long, env = "OSAGO_SIM_SPEED", default_value_t = 1.0)]
    sim_speed: f64,
    /// Simulator seed.
    #[arg(long, env = "OSAGO_SIM_SEED", default_value_t = 42)]
    sim_seed: u64,
    /// How long each simulated insurer's API answer takes: `50ms..200ms`
    /// (uniform) or `100ms`, divided by --sim-speed. Default: at once.
    #[arg(long, env = "OSAGO_SIM_RESPONSE_TIME", default_value = "0ms", value_parser = parse_response_time)]
    sim_response_time: (Duration, Duration),
    /// The most each insurer gets per request.
    #[arg(long, env = "OSAGO_INSURER_DEADLINE", default_value = "60s", value_parser = osago::parse_duration)]
    insurer_deadline: Duration,
    /// Poll at this fixed interval instead of the adaptive schedule.
    /// Default: adaptive.
    #[arg(long, env = "OSAGO_POLL_INTERVAL", value_parser = osago::parse_duration)]
    poll_interval: Option<Duration>,
    /// SSE heartbeat interval.
    #[arg(long, env = "OSAGO_HEARTBEAT", default_value = "15s", value_parser = osago::parse_duration)]
    heartbeat: Duration,
    /// Socket (connect and read) timeout for insurer calls.
    #[arg(long, env = "OSAGO_INSURER_SOCKET_TIMEOUT", default_value = "5s", value_parser = osago::parse_duration)]
    socket_timeout: Duration,
    /// Quote requests per minute per client address (0: no limit; load
    /// tests from one machine need 0).
    #[arg(long, env = "OSAGO_RATE_LIMIT_PER_MINUTE", default_value_t = 12.0)]
    rate_limit_per_minute: f64,
}

fn parse_response_time(text: &str) -> Result<(Duration, Duration), String> {
    let (fastest, slowest) = insurer_sim::parse_response_time(text).map_err(|e| e.to_string())?;
    if fastest > slowest || slowest > Duration::from_secs(10) {
        return Err("an ordered range of at most 10s, like 50ms..200ms".to_owned());
    }
    Ok((fastest, slowest))
}

fn problems(args: &Args) -> Vec<String> {
    let mut out = Vec::new();
    if !(args.sim_speed.is_finite() && args.sim_speed > 0.0) {
        out.push("--sim-speed must be a positive number".to_owned());
    }
    if args.insurer_deadline.is_zero() || args.insurer_deadline > Duration::from_secs(600) {
        out.push("--insurer-deadline must be between 1ms and 10m".to_owned());
    }
    if args
        .poll_interval
        .is_some_and(|interval| interval.is_zero())
    {
        out.push("--poll-interval must be positive".to_owned());
    }
    if !(args.rate_limit_per_minute.is_finite() && args.rate_limit_per_minute >= 0.0) {
        out.push("--rate-limit-per-minute must be 0 (no limit) or positive".to_owned());
    }
    if args.heartbeat.is_zero() {
        out.push("--heartbeat must be positive".to_owned());
    }
    if args.socket_timeout.is_zero() {
        out.push("--socket-timeout must be positive".to_owned());
    }
    out
}

#[tokio::main]
async fn main() -> ExitCode {
    osago_transport::bootstrap::init_tracing();
    let args = Args::parse();
    let problems = problems(&args);
    if !problems.is_empty() {
        return osago_transport::bootstrap::bad_config("osago", &problems);
    }
    let mut config = EmbeddedConfig {
        sim_speed: args.sim_speed,
        sim_seed: args.sim_seed,
        sim_response_time: args.sim_response_time,
        ..EmbeddedConfig::default()
    };
    config.engine.insurer_deadline = args.insurer_deadline;
    if let Some(interval) = args.poll_interval {
        config.engine.poll = osago_aggregator_lib::policy::PollConfig::fixed(interval);
    }
    config.core.request_deadline = args.insurer_deadline;
    config.core.heartbeat_interval = args.heartbeat;
    config.core.rate_limit.per_second = args.rate_limit_per_minute / 60.0;
    config.http.connect_timeout = args.socket_timeout;
    config.http.read_timeout = args.socket_timeout;

    let listener = match osago_transport::bootstrap::bind("osago", args.listen).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    let system = match osago::start(listener, config).await {
        Ok(system) => system,
        Err(err) => {
            eprintln!("osago: failed to start: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!("OSAGO quotes: open http://{}/", system.addr);
    for (id, addr) in &system.insurers {
        tracing::info!(insurer = %id, %addr, "simulated insurer");
    }
    osago_transport::bootstrap::shutdown_signal().await;
    tracing::info!("shutting down");
    system.stop().await;
    ExitCode::SUCCESS
}
