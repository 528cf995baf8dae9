//! The `core-app` binary's flags: checked all at once before anything binds,
//! then the adapters they name connected (`osago_service::ports`).
//!
//! Adapters: `--database memory://` or `postgres://…`; `--bus memory://` or
//! `kafka://host:port[,host:port]`. Several core-app processes share one
//! PostgreSQL and one broker: each relays the outbox (claims never overlap),
//! the projector group shares the quote streams, and every process follows
//! the streams live for the SSE connections it holds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use osago_core::ratelimit::RateLimit;
use osago_core::SystemClock;
use osago_service::settings::{duration, CommonArgs, KafkaSettings};
use osago_service::Problems;
use osago_transport::resolve::{self, BusUrl, DatabaseUrl, StateUrl};
use prometheus_client::registry::Registry;

use crate::access::AccessKeys;
use crate::config::LimiterFailure;
use crate::{Config, Deps, RelayConfig};

/// A web origin: `http(s)://host[:port]`, nothing after it.
fn origin(value: &str) -> Result<String, String> {
    let value = value.trim().trim_end_matches('/');
    let bad = || format!("{value:?} is not an origin like https://partner.example");
    let url = url::Url::parse(value).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(bad());
    }
    Ok(url.origin().ascii_serialization())
}

/// An address (one host) or a network in CIDR form.
fn network(value: &str) -> Result<ipnet::IpNet, String> {
    let value = value.trim();
    if let Ok(ip) = value.parse::<std::net::IpAddr>() {
        return Ok(ipnet::IpNet::from(ip));
    }
    value
        .parse::<ipnet::IpNet>()
        .map_err(|_| format!("{value:?} is not an address or a network like 10.0.0.0/8"))
}

/// core-app: quote requests in, quotes streamed out over SSE.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "core-app", version, about)]
pub struct Args {
    /// Address for the API and the page.
    #[arg(long, env = "OSAGO_CORE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The admin listener: /health/live, /health/ready and /metrics (keep
    /// it off the public network).
    #[arg(
        long,
        env = "OSAGO_CORE_ADMIN_LISTEN",
        default_value = "127.0.0.1:9080"
    )]
    pub admin_listen: SocketAddr,
    /// Flags every service has.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The database: memory:// or postgres://user@host:port/db
    #[arg(long, env = "OSAGO_DATABASE_URL", default_value = "memory://")]
    pub database: String,
    /// How long insurers get per request.
    #[arg(long, env = "OSAGO_REQUEST_DEADLINE", default_value = "60s", value_parser = duration)]
    pub request_deadline: Duration,
    /// SSE heartbeat interval.
    #[arg(long, env = "OSAGO_HEARTBEAT", default_value = "15s", value_parser = duration)]
    pub heartbeat: Duration,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "OSAGO_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,
    /// How long requests (personal data) and quotes are kept.
    #[arg(long, env = "OSAGO_RETENTION", default_value = "3days", value_parser = duration)]
    pub retention: Duration,
    /// Record every quote and error event in the audit log (PostgreSQL).
    #[arg(long, env = "OSAGO_AUDIT", default_value_t = false)]
    pub audit: bool,
    /// Consumer group of the read-model projector.
    #[arg(
        long,
        env = "OSAGO_PROJECTOR_GROUP",
        default_value = "core-app-read-model"
    )]
    pub projector_group: String,
    /// Where inbound rate limits are kept: memory:// (this process) or
    /// redis://host:port (Valkey, shared by every core-app).
    #[arg(long, env = "OSAGO_RATE_LIMIT_URL", default_value = "memory://")]
    pub rate_limit_store: String,
    /// Quote requests per minute per client (0: no limit).
    #[arg(long, env = "OSAGO_RATE_LIMIT_PER_MINUTE", default_value_t = 12.0)]
    pub rate_limit_per_minute: f64,
    /// Quote requests a client may send at once.
    #[arg(long, env = "OSAGO_RATE_LIMIT_BURST", default_value_t = 5)]
    pub rate_limit_burst: u32,
    /// The most events the read-model projector applies in one transaction
    /// (it takes whatever has arrived, up to this).
    #[arg(long, env = "OSAGO_PROJECTOR_BATCH", default_value_t = 256)]
    pub projector_batch: usize,
    /// Quote requests accepted per second across every core-app sharing
    /// the rate-limit store (the stack's capacity); beyond it requests are
    /// refused at once with 503 and Retry-After. 0: no limit.
    #[arg(long, env = "OSAGO_ADMISSION_RATE", default_value_t = 0.0)]
    pub admission_rate: f64,
    /// Quote requests admitted at once above that rate.
    #[arg(long, env = "OSAGO_ADMISSION_BURST", default_value_t = 50)]
    pub admission_burst: u32,
    /// Connections in the PostgreSQL pool (a stream open uses one for its
    /// snapshot only; the projector one per batch).
    #[arg(long, env = "OSAGO_DATABASE_POOL_SIZE", default_value_t = 20)]
    pub database_pool_size: u32,
    /// How long a request waits for a pooled PostgreSQL connection before
    /// it is answered 503.
    #[arg(long, env = "OSAGO_DATABASE_ACQUIRE_TIMEOUT", default_value = "3s", value_parser = duration)]
    pub database_acquire_timeout: Duration,
    /// The header trusted proxies name the client in, each appending the
    /// address it saw (default x-forwarded-for); read only on requests
    /// from --trusted-proxy.
    #[arg(long, env = "OSAGO_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,
    /// A proxy in front of core-app (load balancer, ingress), as an
    /// address or network (10.0.0.0/8); repeatable or comma-separated. A
    /// request from one is counted against the right-most forwarded address
    /// that is not a trusted proxy. None: the header is ignored.
    #[arg(long = "trusted-proxy", env = "OSAGO_TRUSTED_PROXIES", value_delimiter = ',', value_parser = network)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long a client has to send a request's head (and a POST its body).
    #[arg(long, env = "OSAGO_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub header_read_timeout: Duration,
    /// A connection that moves no byte either way this long is closed.
    #[arg(long, env = "OSAGO_IDLE_TIMEOUT", default_value = "120s", value_parser = duration)]
    pub idle_timeout: Duration,
    /// Keep HTTP/1 connections open for the client's next request (an
    /// event stream asked for on one still takes the lean stream path,
    /// unless a request before it had a chunked body). false: every answer
    /// closes its connection,
    /// so every event stream comes on a new one and takes the lean path
    /// (about 4 KiB per idle stream instead of 13), at a connection per
    /// request.
    #[arg(long, env = "OSAGO_HTTP_KEEP_ALIVE", default_value_t = true, action = clap::ArgAction::Set)]
    pub http_keep_alive: bool,
    /// Connections open at once; beyond it 503 with Retry-After. 0: no cap.
    #[arg(long, env = "OSAGO_MAX_CONNECTIONS", default_value_t = 16_384)]
    pub max_connections: usize,
    /// Connections open at once from one client address (IPv6: /64;
    /// trusted proxies exempt); beyond it 429. 0: no cap.
    #[arg(long, env = "OSAGO_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 256)]
    pub max_connections_per_client: usize,
    /// Requests one HTTP/2 connection may have open at once (advertised in
    /// its SETTINGS; a proxy multiplexing more event streams opens another
    /// connection).
    #[arg(
        long = "http2-max-concurrent-streams",
        env = "OSAGO_HTTP2_MAX_CONCURRENT_STREAMS",
        default_value_t = 200
    )]
    pub http2_max_concurrent_streams: u32,
    /// Event streams one client may hold open on this instance; beyond it
    /// 429. 0: no cap.
    #[arg(long, env = "OSAGO_MAX_STREAMS_PER_CLIENT", default_value_t = 16)]
    pub max_streams_per_client: usize,
    /// Stream and quotes reads per second per client (0: no limit).
    #[arg(long, env = "OSAGO_READ_LIMIT_PER_SECOND", default_value_t = 2.0)]
    pub read_limit_per_second: f64,
    /// Stream and quotes reads a client may make at once.
    #[arg(long, env = "OSAGO_READ_LIMIT_BURST", default_value_t = 20)]
    pub read_limit_burst: u32,
    /// What a limit does when --rate-limit-store cannot be reached: open
    /// (let through) or closed (503); counted either way.
    #[arg(long, env = "OSAGO_LIMITER_FAILURE", value_enum, default_value_t = LimiterFailure::Open)]
    pub limiter_failure: LimiterFailure,
    /// Stream access keys, `id:base64-secret` (32+ bytes), comma-separated,
    /// the signing key first; every core-app needs the same. Prefer
    /// --access-keys-file. Unset: a random key of this process's own
    /// (tokens die with it and work on this pod only).
    #[arg(long, env = "OSAGO_ACCESS_KEYS", hide_env_values = true)]
    pub access_keys: Option<String>,
    /// An origin (`https://partner.example`) whose pages may call the API
    /// from the browser (CORS); repeatable or comma-separated. None: the
    /// page is same-origin and no CORS header is sent.
    #[arg(long = "cors-origin", env = "OSAGO_CORS_ORIGINS", value_delimiter = ',', value_parser = origin)]
    pub cors_origins: Vec<String>,
    /// A file holding the access keys, one `id:base64-secret` per line (a
    /// mounted secret).
    #[arg(long, env = "OSAGO_ACCESS_KEYS_FILE")]
    pub access_keys_file: Option<std::path::PathBuf>,
    /// Outbox messages the relay claims and publishes at once.
    #[arg(long, env = "OSAGO_OUTBOX_BATCH", default_value_t = 256)]
    pub outbox_batch: usize,
    /// How long a relay's claim holds before another relay may take the
    /// message (a relay that died mid-batch).
    #[arg(long, env = "OSAGO_OUTBOX_LEASE", default_value = "30s", value_parser = duration)]
    pub outbox_lease: Duration,
    /// Attempts before a message the broker refuses (corrupt, oversized) is
    /// dead-lettered. A broker outage never dead-letters: messages are
    /// retried until their request's deadline, then marked expired.
    #[arg(long, env = "OSAGO_OUTBOX_DEAD_AFTER", default_value_t = 10)]
    pub outbox_dead_after: u32,
    /// A one-off task instead of serving.
    #[command(subcommand)]
    pub task: Option<Task>,
}

/// One-off tasks on core-app's database.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Task {
    /// The outbox.
    Outbox {
        /// What to do.
        #[command(subcommand)]
        action: OutboxAction,
    },
}

/// What to do with the outbox.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum OutboxAction {
    /// Puts every dead-lettered message back in line (attempts reset) and
    /// prints how many; the running relays publish them.
    RequeueDead,
}

/// A checked core-app configuration, ready to connect.
#[derive(Debug, Clone)]
pub struct Plan {
    bus: BusUrl,
    database: DatabaseUrl,
    limits: StateUrl,
    config: Config,
    audit: bool,
    pool: (u32, Duration),
    keys_configured: bool,
    kafka: KafkaSettings,
    common: CommonArgs,
}

impl Args {
    /// Checks every flag at once; the plan, or every problem.
    pub fn check(&self) -> Result<Plan, Problems> {
        let mut p = Problems::default();
        let bus = self.common.check(&mut p);
        let kafka = self.common.kafka(Some(self.retention), &mut p);
        let database = p.take("--database", resolve::database(&self.database));
        if let Some(database) = &database {
            osago_service::ports::check_database_compiled(database, &mut p);
        }
        let limits = p.take("--rate-limit-store", resolve::state(&self.rate_limit_store));
        if let Some(limits) = &limits {
            osago_service::ports::check_state_compiled("--rate-limit-store", limits, &mut p);
        }
        p.check(
            self.request_deadline.is_zero() || self.request_deadline > Duration::from_secs(600),
            "--request-deadline must be between 1ms and 10m",
        );
        p.check(
            self.admin_listen == self.listen,
            "--admin-listen must differ from --listen",
        );
        p.check(self.heartbeat.is_zero(), "--heartbeat must be positive");
        p.check(self.body_limit < 1024, "--body-limit must be at least 1024");
        p.check(
            self.retention < Duration::from_secs(60),
            "--retention must be at least 1m",
        );
        p.check(
            !self.rate_limit_per_minute.is_finite() || self.rate_limit_per_minute < 0.0,
            "--rate-limit-per-minute must be zero or positive",
        );
        p.check(
            self.rate_limit_burst == 0,
            "--rate-limit-burst must be at least 1",
        );
        p.check(
            self.projector_batch == 0,
            "--projector-batch must be at least 1",
        );
        p.check(self.outbox_batch == 0, "--outbox-batch must be at least 1");
        p.check(
            self.outbox_lease < Duration::from_secs(1),
            "--outbox-lease must be at least 1s",
        );
        p.check(
            self.outbox_dead_after == 0,
            "--outbox-dead-after must be at least 1",
        );
        p.check(
            !self.admission_rate.is_finite() || self.admission_rate < 0.0,
            "--admission-rate must be zero or positive",
        );
        p.check(
            self.admission_burst == 0,
            "--admission-burst must be at least 1",
        );
        p.check(
            self.database_pool_size == 0,
            "--database-pool-size must be at least 1",
        );
        p.check(
            self.database_acquire_timeout.is_zero(),
            "--database-acquire-timeout must be positive",
        );
        p.check(
            self.projector_group.trim().is_empty(),
            "--projector-group must not be empty",
        );
        if let (Some(BusUrl::Kafka(_)), Some(DatabaseUrl::Memory)) = (&bus, &database) {
            p.push(
                "--database memory:// cannot share a kafka bus between processes: use postgres://",
            );
        }
        osago_service::config::check_set_roots(
            &self.common.sets,
            &["core", "kafka", "valkey"],
            &mut p,
        );
        p.check(
            self.header_read_timeout < Duration::from_millis(100),
            "--header-read-timeout must be at least 100ms",
        );
        p.check(
            self.idle_timeout < Duration::from_secs(1),
            "--idle-timeout must be at least 1s",
        );
        p.check(
            self.http2_max_concurrent_streams == 0,
            "--http2-max-concurrent-streams must be at least 1",
        );
        p.check(
            !self.read_limit_per_second.is_finite() || self.read_limit_per_second < 0.0,
            "--read-limit-per-second must be zero or positive",
        );
        p.check(
            self.read_limit_burst == 0,
            "--read-limit-burst must be at least 1",
        );
        if let Some(name) = &self.client_ip_header {
            p.check(
                http::HeaderName::try_from(name.as_str()).is_err(),
                "--client-ip-header must be a header name",
            );
        }
        let access_keys = match (&self.access_keys, &self.access_keys_file) {
            (Some(_), Some(_)) => {
                p.push("--access-keys and --access-keys-file: give one");
                None
            }
            (Some(spec), None) => p.take("--access-keys", AccessKeys::parse(spec)),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(spec) => p.take("--access-keys-file", AccessKeys::parse(&spec)),
                Err(err) => {
                    p.push(format!(
                        "--access-keys-file {}: cannot be read: {err}",
                        path.display()
                    ));
                    None
                }
            },
            (None, None) => Some(AccessKeys::default()),
        };
        let config = Config {
            access_keys: access_keys.unwrap_or_default(),
            trusted_proxies: self.trusted_proxies.clone(),
            cors_origins: self.cors_origins.clone(),
            connections: osago_service::serve::ConnectionLimits {
                header_read_timeout: self.header_read_timeout,
                idle_timeout: self.idle_timeout,
                max_connections: self.max_connections,
                max_connections_per_client: self.max_connections_per_client,
                keep_alive: self.http_keep_alive,
                http2_max_concurrent_streams: self.http2_max_concurrent_streams,
                ..Default::default()
            },
            max_streams_per_client: self.max_streams_per_client,
            read_limit: RateLimit {
                per_second: self.read_limit_per_second,
                burst: self.read_limit_burst,
            },
            limiter_failure: self.limiter_failure,
            request_deadline: self.request_deadline,
            heartbeat_interval: self.heartbeat,
            body_limit: self.body_limit,
            retention: self.retention,
            projector_group: self.projector_group.clone(),
            projector_batch: self.projector_batch,
            rate_limit: RateLimit {
                per_second: self.rate_limit_per_minute / 60.0,
                burst: self.rate_limit_burst,
            },
            client_ip_header: self.client_ip_header.clone(),
            admission: RateLimit {
                per_second: self.admission_rate,
                burst: self.admission_burst,
            },
            relay: RelayConfig {
                batch_size: self.outbox_batch,
                lease: self.outbox_lease,
                dead_after: self.outbox_dead_after,
                ..RelayConfig::default()
            },
            ..Config::default()
        };
        let config = osago_service::config::apply_sets(&config, "core", &self.common.sets, &mut p)
            .map(|set| Config {
                // never serialised, so not settable: kept as the flags made it
                access_keys: config.access_keys.clone(),
                ..set
            })
            .unwrap_or(config);
        // What `--set core.…` may have changed, checked as the flags are.
        if self
            .common
            .sets
            .iter()
            .any(|s| s.trim_start().starts_with("core."))
        {
            for (bad, what) in [
                (
                    config.heartbeat_interval.is_zero(),
                    "core.heartbeat_interval must be positive",
                ),
                (
                    config.sse_retry.is_zero(),
                    "core.sse_retry must be positive",
                ),
                (
                    config.body_limit < 1024,
                    "core.body_limit must be at least 1024",
                ),
                (
                    config.retention < Duration::from_secs(60),
                    "core.retention must be at least 1m",
                ),
                (
                    config.request_deadline.is_zero()
                        || config.request_deadline > Duration::from_secs(600),
                    "core.request_deadline must be between 1ms and 10m",
                ),
                (
                    config.projector_batch == 0,
                    "core.projector_batch must be at least 1",
                ),
                (
                    config.relay.batch_size == 0,
                    "core.relay.batch_size must be at least 1",
                ),
                (
                    config.relay.fallback_poll.is_zero(),
                    "core.relay.fallback_poll must be positive",
                ),
                (
                    config.relay.dead_after == 0,
                    "core.relay.dead_after must be at least 1",
                ),
                (
                    config.connections.header_read_timeout < Duration::from_millis(100),
                    "core.connections.header_read_timeout must be at least 100ms",
                ),
                (
                    config.connections.idle_timeout < Duration::from_secs(1),
                    "core.connections.idle_timeout must be at least 1s",
                ),
                (
                    config.connections.max_headers == 0,
                    "core.connections.max_headers must be at least 1",
                ),
                (
                    config.connections.http2_max_concurrent_streams == 0,
                    "core.connections.http2_max_concurrent_streams must be at least 1",
                ),
            ] {
                p.check(bad, format!("--set {what}"));
            }
        }
        match (bus, database, limits) {
            (Some(bus), Some(database), Some(limits)) => p.into_result(|| Plan {
                bus,
                database,
                limits,
                config,
                audit: self.audit,
                pool: (self.database_pool_size, self.database_acquire_timeout),
                keys_configured: self.access_keys.is_some() || self.access_keys_file.is_some(),
                kafka,
                common: self.common.clone(),
            }),
            _ => Err(p),
        }
    }
}

/// Connects the adapters of `plan`; with them, a registry holding the
/// metrics they report themselves (a Kafka bus's consumer lag).
pub async fn connect(plan: Plan) -> Result<(Deps, Config, Registry), String> {
    if !plan.keys_configured {
        tracing::warn!(
            "no --access-keys: stream tokens use a random key of this process, \
             lost on restart and unknown to other instances"
        );
    }
    let mut health = Vec::new();
    let kv = osago_service::ports::key_value(&plan.limits, &plan.common).await?;
    health.extend(kv.health);
    let db = osago_service::ports::database(
        &plan.database,
        osago_service::ports::DatabaseOptions {
            retention: plan.config.retention,
            audit: plan.audit,
            pool_size: plan.pool.0,
            acquire_timeout: plan.pool.1,
        },
        &plan.common,
    )
    .await?;
    health.extend(db.health);
    let bus = osago_service::ports::bus(&plan.bus, &plan.kafka, &plan.common).await?;
    health.extend(bus.health);
    let mut registry = Registry::default();
    if let Some(metrics) = bus.metrics {
        metrics.register(&mut registry);
    }
    let deps = Deps {
        requests: db.requests,
        outbox: db.outbox,
        publisher: bus.publisher,
        outcomes: bus.outcomes,
        live: bus.live,
        read_model: db.read_model,
        clock: Arc::new(SystemClock),
        health,
        limiter: kv.limiter,
    };
    Ok((deps, plan.config, registry))
}

/// Runs a one-off task: connects the database only, does it, prints the
/// result.
async fn run_task(task: Task, plan: Plan) -> std::process::ExitCode {
    let Task::Outbox {
        action: OutboxAction::RequeueDead,
    } = task;
    let db = match osago_service::ports::database(
        &plan.database,
        osago_service::ports::DatabaseOptions {
            retention: plan.config.retention,
            audit: plan.audit,
            pool_size: 1,
            acquire_timeout: plan.pool.1,
        },
        &plan.common,
    )
    .await
    {
        Ok(db) => db,
        Err(err) => {
            eprintln!("core-app: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match db.outbox.requeue_dead().await {
        Ok(requeued) => {
            println!("requeued {requeued} dead-lettered outbox messages");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("core-app: requeueing dead outbox messages: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The `core-app` binary: checks `args`, connects, runs until SIGTERM; or
/// runs a one-off task.
pub async fn main(args: Args) -> std::process::ExitCode {
    if let Some(task) = args.task.clone() {
        return match args.check() {
            Ok(plan) => run_task(task, plan).await,
            Err(problems) => osago_service::launch::bad_config("core-app", &problems),
        };
    }
    osago_service::launch::launch(
        "core-app",
        &[args.listen, args.admin_listen],
        args.check(),
        connect,
        |listeners, (deps, config, registry)| {
            let mut listeners = listeners.into_iter();
            let (listener, admin) = (listeners.next(), listeners.next());
            let listener = listener.expect("the API listener");
            crate::run(
                listener,
                admin,
                deps,
                config,
                registry,
                osago_service::launch::shutdown_signal(),
            )
        },
    )
    .await
}
