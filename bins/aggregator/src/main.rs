//! `aggregator`: the thin binary. Reads flags and environment, checks all
//! of it before binding, builds the adapters named by URL and runs
//! [`aggregator::run`] until SIGTERM or Ctrl-C.
//!
//! Adapters: `--bus memory://` or `kafka://host:port[,host:port]`;
//! `--state memory://` or `redis://host:port` (Valkey). Insurers are named
//! with `--insurer id=url`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use osago_aggregator_lib::policy::PollConfig;
use osago_aggregator_lib::{
    Engine, EngineConfig, EngineMetrics, Insurer, PolicyConfig, SharedConfig,
};
use osago_core::ports::{HealthCheck, PolicyStore, QuoteSink, RequestSource, StateStore};
use osago_core::{InsurerId, SystemClock};
use osago_transport::bootstrap::{retry_connect, shutdown_signal};
use osago_transport::http::{HttpInsurerClient, HttpInsurerConfig};
use osago_transport::kafka::{KafkaBus, KafkaConfig};
use osago_transport::memory::{MemoryBus, MemoryStateStore};
use osago_transport::resolve::{self, BusUrl, StateUrl};
use osago_transport::valkey::{ValkeyConfig, ValkeyStateStore};

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
    /// The event bus: memory:// or kafka://host:port[,host:port]
    #[arg(long, env = "OSAGO_BUS_URL", default_value = "memory://")]
    bus: String,
    /// The state store: memory:// or redis://host:port (Valkey)
    #[arg(long, env = "OSAGO_STATE_URL", default_value = "memory://")]
    state: String,
    /// An insurer as `id=base-url` (repeat, or comma-separate in the env var).
    #[arg(long = "insurer", env = "OSAGO_INSURERS", value_delimiter = ',')]
    insurers: Vec<String>,
    /// The most each insurer gets per request.
    #[arg(long, env = "OSAGO_INSURER_DEADLINE", default_value = "60s", value_parser = humantime::parse_duration)]
    insurer_deadline: Duration,
    /// Poll at this fixed interval instead of the adaptive schedule (first
    /// poll near the insurer's learned answer time, then intervals short
    /// where its answers are dense, up to 1 s). Default: adaptive.
    #[arg(long, env = "OSAGO_POLL_INTERVAL", value_parser = humantime::parse_duration)]
    poll_interval: Option<Duration>,
    /// Socket (connect and read) timeout for insurer calls.
    #[arg(long, env = "OSAGO_INSURER_SOCKET_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    socket_timeout: Duration,
    /// The socket timeout of one insurer, as `id=duration` (repeat, or
    /// comma-separate in the env var).
    #[arg(
        long = "insurer-socket-timeout",
        env = "OSAGO_INSURER_SOCKET_TIMEOUTS",
        value_delimiter = ','
    )]
    insurer_socket_timeouts: Vec<String>,
    /// The most calls in flight to one insurer, across all aggregator pods
    /// when the state store is Valkey.
    #[arg(long, env = "OSAGO_INSURER_CONCURRENCY", default_value_t = 20)]
    concurrency: u32,
    /// The concurrency cap of one insurer, as `id=calls` (repeat, or
    /// comma-separate in the env var).
    #[arg(
        long = "insurer-concurrency",
        env = "OSAGO_INSURER_CONCURRENCIES",
        value_delimiter = ','
    )]
    insurer_concurrencies: Vec<String>,
    /// Outbound calls per second to one insurer (across all pods when the
    /// state store is Valkey); 0 for no limit.
    #[arg(long, env = "OSAGO_INSURER_RATE", default_value_t = 500.0)]
    insurer_rate: f64,
    /// Calls admitted at once from idle under the outbound rate.
    #[arg(long, env = "OSAGO_INSURER_BURST", default_value_t = 200)]
    insurer_burst: u32,
    /// How long in-flight state lives in the state store (2 to 6 hours).
    #[arg(long, env = "OSAGO_STATE_TTL", default_value = "4h", value_parser = humantime::parse_duration)]
    state_ttl: Duration,
    /// Consumer group on the request stream.
    #[arg(
        long,
        env = "OSAGO_AGGREGATOR_GROUP",
        default_value = "osago-aggregator"
    )]
    group: String,
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
    /// How long to keep retrying the broker and Valkey at start-up.
    #[arg(long, env = "OSAGO_CONNECT_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
}

/// Checked configuration.
struct Checked {
    bus: BusUrl,
    state: StateUrl,
    insurers: Vec<(InsurerId, url::Url)>,
    socket_timeouts: BTreeMap<InsurerId, Duration>,
    concurrencies: BTreeMap<InsurerId, u32>,
}

/// Parses every `id=value` of `flag` for a known insurer, collecting problems.
fn parse_per_insurer<T>(
    flag: &str,
    specs: &[String],
    insurers: &[(InsurerId, url::Url)],
    parse: impl Fn(&str) -> Option<T>,
    problems: &mut Vec<String>,
) -> BTreeMap<InsurerId, T> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let Some((id, value)) = spec.split_once('=') else {
            problems.push(format!("{flag} {spec:?}: expected id=value"));
            continue;
        };
        let Ok(id) = InsurerId::new(id) else {
            problems.push(format!("{flag} {id:?}: not an insurer id"));
            continue;
        };
        if !insurers.iter().any(|(known, _)| *known == id) {
            problems.push(format!("{flag} {id}: no such --insurer"));
            continue;
        }
        match parse(value) {
            Some(value) => {
                out.insert(id, value);
            }
            None => problems.push(format!("{flag} {id}: invalid value {value:?}")),
        }
    }
    out
}

/// Parses every `id=url`, collecting problems.
fn parse_insurers(specs: &[String], problems: &mut Vec<String>) -> Vec<(InsurerId, url::Url)> {
    let mut out: Vec<(InsurerId, url::Url)> = Vec::new();
    for spec in specs {
        let Some((id, url)) = spec.split_once('=') else {
            problems.push(format!("--insurer {spec:?}: expected id=url"));
            continue;
        };
        match (InsurerId::new(id), url::Url::parse(url)) {
            (Ok(id), _) if out.iter().any(|(seen, _)| *seen == id) => {
                problems.push(format!("--insurer {id}: named twice"));
            }
            (Ok(id), Ok(url)) if matches!(url.scheme(), "http" | "https") => out.push((id, url)),
            (Err(err), _) => problems.push(format!("--insurer {id:?}: {err}")),
            (Ok(id), _) => problems.push(format!("--insurer {id}: not an http(s) url")),
        }
    }
    if specs.is_empty() {
        problems.push("at least one --insurer id=url is required".to_owned());
    }
    out
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
    let state = resolve::state(&args.state)
        .map_err(|e| problems.push(format!("--state: {e}")))
        .ok();
    if args.insurer_deadline.is_zero() || args.insurer_deadline > Duration::from_secs(600) {
        problems.push("--insurer-deadline must be between 1ms and 10m".to_owned());
    }
    if args
        .poll_interval
        .is_some_and(|interval| interval.is_zero())
    {
        problems.push("--poll-interval must be positive".to_owned());
    }
    if args.socket_timeout.is_zero() {
        problems.push("--socket-timeout must be positive".to_owned());
    }
    if args.concurrency == 0 {
        problems.push("--concurrency must be at least 1".to_owned());
    }
    if !(args.insurer_rate.is_finite() && args.insurer_rate >= 0.0) {
        problems.push("--insurer-rate must be 0 (no limit) or a positive number".to_owned());
    }
    if args.insurer_burst == 0 {
        problems.push("--insurer-burst must be at least 1".to_owned());
    }
    if !(Duration::from_secs(2 * 3600)..=Duration::from_secs(6 * 3600)).contains(&args.state_ttl) {
        problems.push("--state-ttl must be between 2h and 6h".to_owned());
    }
    if args.group.trim().is_empty() {
        problems.push("--group must not be empty".to_owned());
    }
    let insurers = parse_insurers(&args.insurers, &mut problems);
    let socket_timeouts = parse_per_insurer(
        "--insurer-socket-timeout",
        &args.insurer_socket_timeouts,
        &insurers,
        |v| humantime::parse_duration(v).ok().filter(|d| !d.is_zero()),
        &mut problems,
    );
    let concurrencies = parse_per_insurer(
        "--insurer-concurrency",
        &args.insurer_concurrencies,
        &insurers,
        |v| v.parse::<u32>().ok().filter(|n| *n > 0),
        &mut problems,
    );
    if let (Some(BusUrl::Kafka(_)), Some(StateUrl::Memory)) = (&bus, &state) {
        problems.push(
            "--state memory:// loses in-flight work on restart: use redis:// with a kafka bus"
                .to_owned(),
        );
    }
    match (bus, state) {
        (Some(bus), Some(state)) if problems.is_empty() => Ok(Checked {
            bus,
            state,
            insurers,
            socket_timeouts,
            concurrencies,
        }),
        _ => Err(problems),
    }
}

async fn build(
    args: &Args,
    checked: Checked,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<aggregator::Deps, String> {
    let mut insurers = Vec::new();
    for (id, url) in checked.insurers {
        let timeout = checked
            .socket_timeouts
            .get(&id)
            .copied()
            .unwrap_or(args.socket_timeout);
        let http = HttpInsurerConfig {
            connect_timeout: timeout,
            read_timeout: timeout,
            ..HttpInsurerConfig::default()
        };
        let client = HttpInsurerClient::new(id.clone(), url, http)
            .map_err(|e| format!("http client for {id}: {e}"))?;
        insurers.push(Insurer {
            id,
            client: Arc::new(client),
        });
    }
    let mut health: Vec<Arc<dyn HealthCheck>> = Vec::new();
    let mut policies: Option<Arc<dyn PolicyStore>> = None;
    let state: Arc<dyn StateStore> = match checked.state {
        StateUrl::Memory => Arc::new(MemoryStateStore::new()),
        StateUrl::Valkey(url) => {
            let store = retry_connect("valkey", args.connect_timeout, || {
                ValkeyStateStore::connect(&url, ValkeyConfig::default())
            })
            .await
            .map_err(|e| format!("state: {e}"))?;
            let store = Arc::new(store);
            health.push(store.clone());
            policies = Some(store.clone());
            store
        }
    };
    let (sink, requests): (Arc<dyn QuoteSink>, Arc<dyn RequestSource>) = match checked.bus {
        BusUrl::Memory => {
            let bus = MemoryBus::new();
            (Arc::new(bus.clone()), Arc::new(bus))
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
            (bus.clone(), bus)
        }
    };
    let mut policy = PolicyConfig::default();
    policy.concurrency.max_in_flight = args.concurrency as usize;
    policy.quota.rate.rate_per_sec = args.insurer_rate;
    policy.quota.rate.burst = args.insurer_burst;
    let policy_overrides = checked
        .concurrencies
        .iter()
        .map(|(id, cap)| {
            let mut own = policy.clone();
            own.concurrency.max_in_flight = *cap as usize;
            (id.to_string(), own)
        })
        .collect();
    let poll = match args.poll_interval {
        Some(interval) => PollConfig::fixed(interval),
        None => PollConfig::default(),
    };
    let mut engine = Engine::new(
        insurers,
        sink,
        state,
        Arc::new(SystemClock),
        EngineConfig {
            insurer_deadline: args.insurer_deadline,
            poll,
            state_ttl: args.state_ttl,
            policy,
            policy_overrides,
            ..EngineConfig::default()
        },
        EngineMetrics::register(registry),
    );
    if let Some(store) = policies {
        // Quota, concurrency cap and breaker shared by every pod.
        engine = engine.with_policy_store(store, SharedConfig::default());
    }
    Ok(aggregator::Deps {
        engine,
        requests,
        health,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    osago_transport::bootstrap::init_tracing();
    let args = Args::parse();
    let checked = match check(&args) {
        Ok(checked) => checked,
        Err(problems) => return osago_transport::bootstrap::bad_config("aggregator", &problems),
    };
    let listener = match osago_transport::bootstrap::bind("aggregator", args.listen).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let deps = tokio::select! {
        built = build(&args, checked, &mut registry) => match built {
            Ok(deps) => deps,
            Err(err) => {
                eprintln!("aggregator: {err}");
                return ExitCode::FAILURE;
            }
        },
        _ = shutdown_signal() => return ExitCode::SUCCESS,
    };
    let config = aggregator::Config {
        group: args.group.clone(),
        ..aggregator::Config::default()
    };
    match aggregator::run(listener, deps, config, registry, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("aggregator: {err}");
            ExitCode::FAILURE
        }
    }
}
