//! `aggregator`: the thin binary. Reads flags and environment, checks all
//! of it before binding, builds the adapters and runs [`aggregator::run`]
//! until SIGTERM or Ctrl-C.
//!
//! Adapters in this build: `memory://` for the bus and the state store
//! (useful only for trying the binary; the `osago` binary runs the whole
//! system in one process). Insurers are named with `--insurer id=url`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use osago_aggregator_lib::{Engine, EngineConfig, EngineMetrics, Insurer};
use osago_core::{InsurerId, SystemClock};
use osago_transport::http::{HttpInsurerClient, HttpInsurerConfig};
use osago_transport::memory::{MemoryBus, MemoryStateStore};

/// osago-aggregator: fans quote requests out to insurers.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address for /health and /metrics.
    #[arg(
        long,
        env = "OSAGO_AGGREGATOR_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    listen: SocketAddr,
    /// The event bus: memory://
    #[arg(long, env = "OSAGO_BUS_URL", default_value = "memory://")]
    bus: String,
    /// The state store: memory://
    #[arg(long, env = "OSAGO_STATE_URL", default_value = "memory://")]
    state: String,
    /// An insurer as `id=base-url` (repeat, or comma-separate in the env var).
    #[arg(long = "insurer", env = "OSAGO_INSURERS", value_delimiter = ',')]
    insurers: Vec<String>,
    /// The most each insurer gets per request.
    #[arg(long, env = "OSAGO_INSURER_DEADLINE", default_value = "60s", value_parser = humantime::parse_duration)]
    insurer_deadline: Duration,
    /// Poll interval when an insurer gives no Retry-After.
    #[arg(long, env = "OSAGO_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// Socket (connect and read) timeout for insurer calls.
    #[arg(long, env = "OSAGO_INSURER_SOCKET_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    socket_timeout: Duration,
}

/// Parses every `id=url`, collecting problems.
fn parse_insurers(specs: &[String], problems: &mut Vec<String>) -> Vec<(InsurerId, url::Url)> {
    let mut out = Vec::new();
    for spec in specs {
        let Some((id, url)) = spec.split_once('=') else {
            problems.push(format!("--insurer {spec:?}: expected id=url"));
            continue;
        };
        match (InsurerId::new(id), url::Url::parse(url)) {
            (Ok(id), Ok(url)) if matches!(url.scheme(), "http" | "https") => out.push((id, url)),
            (Err(err), _) => problems.push(format!("--insurer {id:?}: {err}")),
            _ => problems.push(format!("--insurer {id}: not an http(s) url")),
        }
    }
    if out.is_empty() && problems.is_empty() {
        problems.push("at least one --insurer id=url is required".to_owned());
    }
    out
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut problems = Vec::new();
    for (flag, url) in [("--bus", &args.bus), ("--state", &args.state)] {
        if url != "memory://" {
            problems.push(format!(
                "{flag}: unsupported adapter url (this build supports memory://)"
            ));
        }
    }
    if args.insurer_deadline.is_zero()
        || args.poll_interval.is_zero()
        || args.socket_timeout.is_zero()
    {
        problems.push("durations must be positive".to_owned());
    }
    let insurers = parse_insurers(&args.insurers, &mut problems);
    if !problems.is_empty() {
        for p in problems {
            eprintln!("aggregator: {p}");
        }
        return ExitCode::from(64);
    }
    let http = HttpInsurerConfig {
        connect_timeout: args.socket_timeout,
        read_timeout: args.socket_timeout,
        ..HttpInsurerConfig::default()
    };
    let mut clients = Vec::new();
    for (id, url) in insurers {
        match HttpInsurerClient::new(id.clone(), url, http.clone()) {
            Ok(client) => clients.push(Insurer {
                id,
                client: Arc::new(client),
            }),
            Err(err) => {
                eprintln!("aggregator: http client for {id}: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    let bus = MemoryBus::new();
    let mut registry = prometheus_client::registry::Registry::default();
    let engine = Engine::new(
        clients,
        Arc::new(bus.clone()),
        Arc::new(MemoryStateStore::new()),
        Arc::new(SystemClock),
        EngineConfig {
            insurer_deadline: args.insurer_deadline,
            poll_interval: args.poll_interval,
            ..EngineConfig::default()
        },
        EngineMetrics::register(&mut registry),
    );
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(err) => {
            eprintln!("aggregator: cannot listen on {}: {err}", args.listen);
            return ExitCode::from(64);
        }
    };
    let deps = aggregator::Deps {
        engine,
        requests: Arc::new(bus),
    };
    match aggregator::run(
        listener,
        deps,
        aggregator::Config::default(),
        registry,
        shutdown_signal(),
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("aggregator: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
