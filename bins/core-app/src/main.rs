//! `core-app`: the thin binary. Reads flags and environment, checks all of
//! it before binding, builds the adapters named by URL and runs
//! [`core_app::run`] until SIGTERM or Ctrl-C.
//!
//! Adapters in this build: `memory://` (the in-process bus and stores; on
//! its own, without an aggregator in the process, requests only time out —
//! the `osago` binary runs the whole system in one process).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use osago_core::SystemClock;
use osago_transport::memory::{MemoryBus, MemoryReadModel, MemoryRequestStore};

/// core-app: quote requests in, quotes streamed out over SSE.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address for the API and the page.
    #[arg(long, env = "OSAGO_CORE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The event bus: memory://
    #[arg(long, env = "OSAGO_BUS_URL", default_value = "memory://")]
    bus: String,
    /// The database: memory://
    #[arg(long, env = "OSAGO_DATABASE_URL", default_value = "memory://")]
    database: String,
    /// How long insurers get per request.
    #[arg(long, env = "OSAGO_REQUEST_DEADLINE", default_value = "60s", value_parser = humantime::parse_duration)]
    request_deadline: Duration,
    /// SSE heartbeat interval.
    #[arg(long, env = "OSAGO_HEARTBEAT", default_value = "15s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "OSAGO_BODY_LIMIT", default_value_t = 64 * 1024)]
    body_limit: usize,
}

fn problems(args: &Args) -> Vec<String> {
    let mut out = Vec::new();
    for (flag, url) in [("--bus", &args.bus), ("--database", &args.database)] {
        if url != "memory://" {
            out.push(format!(
                "{flag}: unsupported adapter url (this build supports memory://)"
            ));
        }
    }
    if args.request_deadline.is_zero() {
        out.push("--request-deadline must be positive".to_owned());
    }
    if args.heartbeat.is_zero() {
        out.push("--heartbeat must be positive".to_owned());
    }
    if args.body_limit < 1024 {
        out.push("--body-limit must be at least 1024".to_owned());
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
    let problems = problems(&args);
    if !problems.is_empty() {
        for p in problems {
            eprintln!("core-app: {p}");
        }
        return ExitCode::from(64);
    }
    let config = core_app::Config {
        request_deadline: args.request_deadline,
        heartbeat_interval: args.heartbeat,
        body_limit: args.body_limit,
        ..core_app::Config::default()
    };
    let bus = MemoryBus::new();
    let store = MemoryRequestStore::new(config.retention);
    let deps = core_app::Deps {
        requests: Arc::new(store.clone()),
        outbox: Arc::new(store),
        publisher: Arc::new(bus.clone()),
        outcomes: Arc::new(bus.clone()),
        live: Arc::new(bus),
        read_model: Arc::new(MemoryReadModel::new(config.retention)),
        clock: Arc::new(SystemClock),
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(err) => {
            eprintln!("core-app: cannot listen on {}: {err}", args.listen);
            return ExitCode::from(64);
        }
    };
    let registry = prometheus_client::registry::Registry::default();
    match core_app::run(listener, deps, config, registry, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("core-app: {err}");
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
