//! `core-app`: the thin binary. Reads flags and environment, checks all of
//! it before binding, builds the adapters named by URL and runs
//! [`core_app::run`] until SIGTERM or Ctrl-C.
//!
//! Adapters: `--database memory://` or `postgres://…`; `--bus memory://` or
//! `kafka://host:port[,host:port]`. Several core-app processes share one
//! PostgreSQL and one broker: each relays the outbox (claims never overlap),
//! the projector group shares the quote streams, and every process follows
//! the streams live for the SSE connections it holds.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use core_app::Deps;
use osago_core::ports::{HealthCheck, OutboxStore, RateLimiter, ReadModel, RequestStore};
use osago_core::ratelimit::RateLimit;
use osago_core::SystemClock;
use osago_transport::bootstrap::{retry_connect, shutdown_signal};
use osago_transport::kafka::{KafkaBus, KafkaConfig};
use osago_transport::memory::{MemoryBus, MemoryRateLimiter, MemoryReadModel, MemoryRequestStore};
use osago_transport::postgres::{PostgresConfig, PostgresStore};
use osago_transport::resolve::{self, BusUrl, DatabaseUrl, StateUrl};
use osago_transport::valkey::{ValkeyConfig, ValkeyStateStore};

/// core-app: quote requests in, quotes streamed out over SSE.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address for the API and the page.
    #[arg(long, env = "OSAGO_CORE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The event bus: memory:// or kafka://host:port[,host:port]
    #[arg(long, env = "OSAGO_BUS_URL", default_value = "memory://")]
    bus: String,
    /// The database: memory:// or postgres://user@host:port/db
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
    /// How long requests (personal data) and quotes are kept.
    #[arg(long, env = "OSAGO_RETENTION", default_value = "3days", value_parser = humantime::parse_duration)]
    retention: Duration,
    /// Record every quote and error event in the audit log (PostgreSQL).
    #[arg(long, env = "OSAGO_AUDIT", default_value_t = false)]
    audit: bool,
    /// Consumer group of the read-model projector.
    #[arg(
        long,
        env = "OSAGO_PROJECTOR_GROUP",
        default_value = "core-app-read-model"
    )]
    projector_group: String,
    /// Where inbound rate limits are kept: memory:// (this process) or
    /// redis://host:port (Valkey, shared by every core-app).
    #[arg(long, env = "OSAGO_RATE_LIMIT_URL", default_value = "memory://")]
    rate_limit_store: String,
    /// Quote requests per minute per client (0: no limit).
    #[arg(long, env = "OSAGO_RATE_LIMIT_PER_MINUTE", default_value_t = 12.0)]
    rate_limit_per_minute: f64,
    /// Quote requests a client may send at once.
    #[arg(long, env = "OSAGO_RATE_LIMIT_BURST", default_value_t = 5)]
    rate_limit_burst: u32,
    /// Header naming the client behind a trusted proxy (e.g. x-forwarded-for).
    #[arg(long, env = "OSAGO_CLIENT_IP_HEADER")]
    client_ip_header: Option<String>,
    /// This pod's stable name in the consumer groups (static membership,
    /// `group.instance.id`; for example the StatefulSet pod name): restarted
    /// under the same name, it takes back its partitions at once.
    #[arg(long, env = "OSAGO_INSTANCE_ID")]
    instance_id: Option<String>,
    /// How long the broker may hold a fetch that has no new records
    /// (`fetch.wait.max.ms`, 0..=1s). Kafka answers as soon as a record
    /// arrives; tansu 0.6.0 holds every fetch this long, so on tansu a
    /// shorter wait means lower latency for more idle fetches.
    #[arg(long, env = "OSAGO_KAFKA_FETCH_WAIT", default_value = "10ms", value_parser = humantime::parse_duration)]
    kafka_fetch_wait: Duration,
    /// How long to keep retrying the database and the broker at start-up.
    #[arg(long, env = "OSAGO_CONNECT_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
}

/// Checked configuration.
struct Checked {
    bus: BusUrl,
    database: DatabaseUrl,
    limits: StateUrl,
}

fn check(args: &Args) -> Result<Checked, Vec<String>> {
    let mut problems = Vec::new();
    if args
        .instance_id
        .as_deref()
        .is_some_and(|id| id.trim().is_empty())
    {
        problems.push("--instance-id must not be empty".to_owned());
    }
    if args.kafka_fetch_wait > Duration::from_secs(1) {
        problems.push("--kafka-fetch-wait must be at most 1s".to_owned());
    }
    let bus = resolve::bus(&args.bus)
        .map_err(|e| problems.push(format!("--bus: {e}")))
        .ok();
    let database = resolve::database(&args.database)
        .map_err(|e| problems.push(format!("--database: {e}")))
        .ok();
    if args.request_deadline.is_zero() || args.request_deadline > Duration::from_secs(600) {
        problems.push("--request-deadline must be between 1ms and 10m".to_owned());
    }
    if args.heartbeat.is_zero() {
        problems.push("--heartbeat must be positive".to_owned());
    }
    if args.body_limit < 1024 {
        problems.push("--body-limit must be at least 1024".to_owned());
    }
    if args.retention < Duration::from_secs(60) {
        problems.push("--retention must be at least 1m".to_owned());
    }
    let limits = resolve::state(&args.rate_limit_store)
        .map_err(|e| problems.push(format!("--rate-limit-store: {e}")))
        .ok();
    if !args.rate_limit_per_minute.is_finite() || args.rate_limit_per_minute < 0.0 {
        problems.push("--rate-limit-per-minute must be zero or positive".to_owned());
    }
    if args.rate_limit_burst == 0 {
        problems.push("--rate-limit-burst must be at least 1".to_owned());
    }
    if args.projector_group.trim().is_empty() {
        problems.push("--projector-group must not be empty".to_owned());
    }
    if let (Some(BusUrl::Kafka(_)), Some(DatabaseUrl::Memory)) = (&bus, &database) {
        problems.push(
            "--database memory:// cannot share a kafka bus between processes: use postgres://"
                .to_owned(),
        );
    }
    match (bus, database, limits) {
        (Some(bus), Some(database), Some(limits)) if problems.is_empty() => Ok(Checked {
            bus,
            database,
            limits,
        }),
        _ => Err(problems),
    }
}

async fn build(args: &Args, checked: Checked) -> Result<Deps, String> {
    let mut health: Vec<Arc<dyn HealthCheck>> = Vec::new();
    let limiter: Arc<dyn RateLimiter> = match checked.limits {
        StateUrl::Memory => Arc::new(MemoryRateLimiter::new()),
        StateUrl::Valkey(url) => {
            let store = retry_connect("valkey", args.connect_timeout, || {
                ValkeyStateStore::connect(&url, ValkeyConfig::default())
            })
            .await
            .map_err(|e| format!("rate limits: {e}"))?;
            let store = Arc::new(store);
            health.push(store.clone());
            store
        }
    };
    type Stores = (
        Arc<dyn RequestStore>,
        Arc<dyn OutboxStore>,
        Arc<dyn ReadModel>,
    );
    let (requests, outbox, read_model): Stores = match checked.database {
        DatabaseUrl::Memory => {
            let store = MemoryRequestStore::new(args.retention);
            (
                Arc::new(store.clone()),
                Arc::new(store),
                Arc::new(MemoryReadModel::new(args.retention)),
            )
        }
        DatabaseUrl::Postgres(url) => {
            let config = PostgresConfig {
                retention: args.retention,
                audit: args.audit,
                ..PostgresConfig::default()
            };
            let store = retry_connect("postgres", args.connect_timeout, || {
                PostgresStore::connect(&url, config.clone())
            })
            .await
            .map_err(|e| format!("database: {e}"))?;
            let store = Arc::new(store);
            health.push(store.clone());
            (store.clone(), store.clone(), store)
        }
    };
    let deps = match checked.bus {
        BusUrl::Memory => {
            let bus = MemoryBus::new();
            Deps {
                requests,
                outbox,
                publisher: Arc::new(bus.clone()),
                outcomes: Arc::new(bus.clone()),
                live: Arc::new(bus),
                read_model,
                clock: Arc::new(SystemClock),
                health,
                limiter,
            }
        }
        BusUrl::Kafka(servers) => {
            let mut config = KafkaConfig::new(servers);
            config.instance_id = args.instance_id.clone();
            config.fetch_wait = args.kafka_fetch_wait;
            let bus = retry_connect("kafka", args.connect_timeout, || {
                KafkaBus::connect(config.clone())
            })
            .await
            .map_err(|e| format!("bus: {e}"))?;
            let bus = Arc::new(bus);
            health.push(bus.clone());
            Deps {
                requests,
                outbox,
                publisher: bus.clone(),
                outcomes: bus.clone(),
                live: bus,
                read_model,
                clock: Arc::new(SystemClock),
                health,
                limiter,
            }
        }
    };
    Ok(deps)
}

#[tokio::main]
async fn main() -> ExitCode {
    osago_transport::bootstrap::init_tracing();
    let args = Args::parse();
    let checked = match check(&args) {
        Ok(checked) => checked,
        Err(problems) => return osago_transport::bootstrap::bad_config("core-app", &problems),
    };
    let listener = match osago_transport::bootstrap::bind("core-app", args.listen).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    let deps = tokio::select! {
        built = build(&args, checked) => match built {
            Ok(deps) => deps,
            Err(err) => {
                eprintln!("core-app: {err}");
                return ExitCode::FAILURE;
            }
        },
        _ = shutdown_signal() => return ExitCode::SUCCESS,
    };
    let config = core_app::Config {
        request_deadline: args.request_deadline,
        heartbeat_interval: args.heartbeat,
        body_limit: args.body_limit,
        retention: args.retention,
        projector_group: args.projector_group.clone(),
        rate_limit: RateLimit {
            per_second: args.rate_limit_per_minute / 60.0,
            burst: args.rate_limit_burst,
        },
        client_ip_header: args.client_ip_header.clone(),
        ..core_app::Config::default()
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
