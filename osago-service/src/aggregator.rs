//! The aggregator service: its flags, the engine and intake they configure,
//! and the admin server beside the intake (core never calls the aggregator
//! over HTTP).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use osago_aggregator_lib::{
    Engine, EngineConfig, EngineMetrics, Insurer, Intake, IntakeConfig, PollConfig,
};
use osago_core::InsurerId;
use osago_transport::http::{Credentials, HttpInsurerClient, HttpInsurerConfig};
use osago_transport::resolve::{self, BusUrl, StateUrl};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{Admin, Health};
use crate::settings::{duration, CommonArgs, KafkaSettings, Problems};

/// osago-aggregator: fans quote requests out to insurers.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "aggregator", version, about)]
pub struct Args {
    /// The admin listener: /health/live, /health/ready and /metrics.
    #[arg(
        long,
        env = "OSAGO_AGGREGATOR_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub listen: SocketAddr,
    /// Flags every service has.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The state store: memory:// or redis://host:port (Valkey)
    #[arg(long, env = "OSAGO_STATE_URL", default_value = "memory://")]
    pub state: String,
    /// An insurer as `id=base-url` (repeat, or comma-separate in the env var).
    #[arg(long = "insurer", env = "OSAGO_INSURERS", value_delimiter = ',')]
    pub insurers: Vec<String>,
    /// The most each insurer gets per request.
    #[arg(long, env = "OSAGO_INSURER_DEADLINE", default_value = "60s", value_parser = duration)]
    pub insurer_deadline: Duration,
    /// Poll at this fixed interval instead of the adaptive schedule (first
    /// poll near the insurer's learned answer time, then intervals short
    /// where its answers are dense, up to 1 s). Default: adaptive.
    #[arg(long, env = "OSAGO_POLL_INTERVAL", value_parser = duration)]
    pub poll_interval: Option<Duration>,
    /// Socket (connect and read) timeout for insurer calls.
    #[arg(long, env = "OSAGO_INSURER_SOCKET_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub socket_timeout: Duration,
    /// The socket timeout of one insurer, as `id=duration` (repeat, or
    /// comma-separate in the env var).
    #[arg(
        long = "insurer-socket-timeout",
        env = "OSAGO_INSURER_SOCKET_TIMEOUTS",
        value_delimiter = ','
    )]
    pub insurer_socket_timeouts: Vec<String>,
    /// The most calls in flight to one insurer, across all aggregator pods
    /// when the state store is Valkey.
    #[arg(long, env = "OSAGO_INSURER_CONCURRENCY", default_value_t = 20)]
    pub concurrency: u32,
    /// The concurrency cap of one insurer, as `id=calls` (repeat, or
    /// comma-separate in the env var).
    #[arg(
        long = "insurer-concurrency",
        env = "OSAGO_INSURER_CONCURRENCIES",
        value_delimiter = ','
    )]
    pub insurer_concurrencies: Vec<String>,
    /// How far new applications are shuffled in an insurer's slot queue
    /// (deadline plus up to this, drawn per request and insurer), so each
    /// insurer serves a burst in its own order; 0s: deadline order.
    #[arg(long, env = "OSAGO_INSURER_STAGGER", default_value = "30s", value_parser = duration)]
    pub insurer_stagger: Duration,
    /// Outbound calls per second to one insurer (across all pods when the
    /// state store is Valkey); 0 for no limit.
    #[arg(long, env = "OSAGO_INSURER_RATE", default_value_t = 500.0)]
    pub insurer_rate: f64,
    /// Calls admitted at once from idle under the outbound rate.
    #[arg(long, env = "OSAGO_INSURER_BURST", default_value_t = 200)]
    pub insurer_burst: u32,
    /// Allow insurers at plain `http://` URLs (simulators, a sidecar that
    /// terminates TLS). Without it only `https://` is accepted.
    #[arg(long, env = "OSAGO_ALLOW_PLAIN_HTTP", default_value_t = false)]
    pub allow_plain_http: bool,
    /// A PEM file of CA certificates trusted for insurers' https beside the
    /// built-in roots (an insurer's private CA).
    #[arg(long, env = "OSAGO_INSURER_CA_FILE")]
    pub insurer_ca_file: Option<std::path::PathBuf>,
    /// One insurer's client certificate (mutual TLS), as `id=cert.pem`
    /// (repeat, or comma-separate in the env var); needs
    /// `--insurer-client-key`.
    #[arg(
        long = "insurer-client-cert",
        env = "OSAGO_INSURER_CLIENT_CERTS",
        value_delimiter = ','
    )]
    pub insurer_client_certs: Vec<String>,
    /// Its private key, as `id=key.pem`.
    #[arg(
        long = "insurer-client-key",
        env = "OSAGO_INSURER_CLIENT_KEYS",
        value_delimiter = ','
    )]
    pub insurer_client_keys: Vec<String>,
    /// A header sent on every call to one insurer, as `id=Name: value`
    /// (repeat; in the env var, separate with newlines): credentials such as
    /// `Authorization`. Values are never printed.
    #[arg(
        long = "insurer-header",
        env = "OSAGO_INSURER_HEADERS",
        value_delimiter = '\n'
    )]
    pub insurer_headers: Vec<String>,
    /// How long in-flight state lives in the state store (2 to 6 hours),
    /// capped by --retention.
    #[arg(long, env = "OSAGO_STATE_TTL", default_value = "4h", value_parser = duration)]
    pub state_ttl: Duration,
    /// How long personal data may be kept: the same setting as core-app's
    /// (one `OSAGO_RETENTION`, or one top-level `retention` in the file).
    /// Caps the TTL of every state-store key (they hold the request) and
    /// sets the request topic's retention.
    #[arg(long, env = "OSAGO_RETENTION", default_value = "3days", value_parser = duration)]
    pub retention: Duration,
    /// Consumer group on the request stream.
    #[arg(
        long,
        env = "OSAGO_AGGREGATOR_GROUP",
        default_value = "osago-aggregator"
    )]
    pub group: String,
}

/// A checked aggregator configuration, ready to connect.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The bus.
    pub bus: BusUrl,
    /// The state store.
    pub state: StateUrl,
    /// The insurers and their HTTP client settings.
    pub insurers: Vec<(InsurerId, url::Url, HttpInsurerConfig)>,
    /// The engine's configuration (checked).
    pub engine: EngineConfig,
    /// The intake's configuration (checked).
    pub intake: IntakeConfig,
    /// The Kafka settings (checked).
    pub kafka: KafkaSettings,
    /// The shared flags.
    pub common: CommonArgs,
}

/// The flag that sets an engine or intake setting, for problem lines.
fn flag_of(field: &str) -> Option<String> {
    let flag = match field {
        "insurer_deadline" => "--insurer-deadline",
        "poll.fixed" => "--poll-interval",
        "state_ttl" => "--state-ttl",
        "resilience.concurrency.max_in_flight" => "--concurrency",
        "resilience.quota.rate.rate_per_sec" => "--insurer-rate",
        "resilience.quota.rate.burst" => "--insurer-burst",
        "sharing.holder" => "--instance-id",
        "intake.group" => "--group",
        _ => {
            let (id, rest) = field
                .strip_prefix("resilience_overrides.")?
                .split_once('.')?;
            return (rest == "concurrency.max_in_flight")
                .then(|| format!("--insurer-concurrency {id}"));
        }
    };
    Some(flag.to_owned())
}

impl Args {
    /// Checks every flag at once; the plan, or every problem.
    pub fn check(&self) -> Result<Plan, Problems> {
        let mut p = Problems::default();
        let bus = self.common.check(&mut p);
        let kafka = self.common.kafka(Some(self.retention), &mut p);
        let state = p.take("--state", resolve::state(&self.state));
        if let Some(state) = &state {
            crate::ports::check_state_compiled("--state", state, &mut p);
        }
        p.check(
            self.socket_timeout.is_zero(),
            "--socket-timeout must be positive",
        );
        p.check(
            !(Duration::from_secs(2 * 3600)..=Duration::from_secs(6 * 3600))
                .contains(&self.state_ttl),
            "--state-ttl must be between 2h and 6h",
        );
        let insurers = parse_insurers(&self.insurers, self.allow_plain_http, &mut p);
        let read = |flag: &str, path: &std::path::Path, p: &mut Problems| {
            std::fs::read(path)
                .map_err(|e| p.push(format!("{flag} {}: {e}", path.display())))
                .ok()
        };
        let ca_pem = self
            .insurer_ca_file
            .as_ref()
            .and_then(|path| read("--insurer-ca-file", path, &mut p));
        let certs = parse_per_insurer(
            "--insurer-client-cert",
            &self.insurer_client_certs,
            &insurers,
            |v| Some(std::path::PathBuf::from(v)),
            &mut p,
        );
        let keys = parse_per_insurer(
            "--insurer-client-key",
            &self.insurer_client_keys,
            &insurers,
            |v| Some(std::path::PathBuf::from(v)),
            &mut p,
        );
        let mut identities = BTreeMap::new();
        for id in certs.keys().chain(keys.keys()) {
            match (certs.get(id), keys.get(id)) {
                (Some(cert), Some(key)) => {
                    let cert = read("--insurer-client-cert", cert, &mut p);
                    let key = read("--insurer-client-key", key, &mut p);
                    if let (Some(mut pem), Some(key)) = (cert, key) {
                        pem.push(b'\n');
                        pem.extend(key);
                        identities.insert(id.clone(), pem);
                    }
                }
                _ => p.push(format!(
                    "--insurer-client-cert {id}: needs both --insurer-client-cert and --insurer-client-key"
                )),
            }
        }
        let mut headers: BTreeMap<InsurerId, Vec<(String, String)>> = BTreeMap::new();
        for spec in &self.insurer_headers {
            let parsed = spec.split_once('=').and_then(|(id, header)| {
                let (name, value) = header.split_once(':')?;
                Some((id.trim(), name.trim(), value.trim()))
            });
            let Some((id, name, value)) = parsed else {
                p.push("--insurer-header: expected id=Name: value".to_owned());
                continue;
            };
            let Some(known) = insurers.iter().find(|(known, _)| known.as_str() == id) else {
                p.push(format!("--insurer-header {id:?}: no such --insurer"));
                continue;
            };
            if http::HeaderName::try_from(name).is_err()
                || http::HeaderValue::try_from(value).is_err()
            {
                // The value may be a secret: name the header only.
                p.push(format!(
                    "--insurer-header {id}: {name:?} is not a valid header"
                ));
                continue;
            }
            headers
                .entry(known.0.clone())
                .or_default()
                .push((name.to_owned(), value.to_owned()));
        }
        let socket_timeouts = parse_per_insurer(
            "--insurer-socket-timeout",
            &self.insurer_socket_timeouts,
            &insurers,
            |v| humantime::parse_duration(v).ok().filter(|d| !d.is_zero()),
            &mut p,
        );
        let concurrencies = parse_per_insurer(
            "--insurer-concurrency",
            &self.insurer_concurrencies,
            &insurers,
            |v| v.parse::<u32>().ok().filter(|n| *n > 0),
            &mut p,
        );
        if let (Some(BusUrl::Kafka(_)), Some(StateUrl::Memory)) = (&bus, &state) {
            p.push(
                "--state memory:// loses in-flight work on restart: use redis:// with a kafka bus",
            );
        }
        let mut engine = EngineConfig::default();
        engine.insurer_deadline = self.insurer_deadline;
        engine.poll = self
            .poll_interval
            .map_or_else(PollConfig::default, PollConfig::fixed);
        // State-store keys hold the request (personal data): none outlives
        // the retention, and in-flight work must outlive its deadline.
        engine.state_ttl = self.state_ttl.min(self.retention);
        p.check(
            engine.state_ttl < 2 * self.insurer_deadline,
            "--retention must be at least twice --insurer-deadline: in-flight state lives that long",
        );
        engine.resilience.concurrency.max_in_flight = self.concurrency as usize;
        engine.resilience.quota.rate.rate_per_sec = self.insurer_rate;
        engine.resilience.quota.rate.burst = self.insurer_burst;
        engine.resilience.concurrency.stagger = self.insurer_stagger;
        for (id, cap) in &concurrencies {
            let mut own = engine.resilience.clone();
            own.concurrency.max_in_flight = *cap as usize;
            engine.resilience_overrides.insert(id.to_string(), own);
        }
        // A restarted pod takes its own slot leases back.
        if let Some(instance) = &self.common.instance_id {
            engine.sharing.holder = instance.clone();
        }
        crate::config::check_set_roots(
            &self.common.sets,
            &["engine", "intake", "http", "kafka", "valkey"],
            &mut p,
        );
        if let Some(set) = crate::config::apply_sets(&engine, "engine", &self.common.sets, &mut p) {
            engine = set;
        }
        if let Err(err) = engine.validate() {
            p.config(err, flag_of);
        }
        let mut intake = IntakeConfig::default();
        intake.group = self.group.clone();
        if let Some(set) = crate::config::apply_sets(&intake, "intake", &self.common.sets, &mut p) {
            intake = set;
        }
        if let Err(err) = intake.validate() {
            p.config(err, flag_of);
        }
        // `--set http.…`: checked once here, applied to every insurer below.
        if let Some(http) = crate::config::apply_sets(
            &HttpInsurerConfig::default(),
            "http",
            &self.common.sets,
            &mut p,
        ) {
            p.check(
                http.connect_timeout.is_zero()
                    || http.read_timeout.is_zero()
                    || http.call_timeout.is_zero(),
                "--set http: timeouts must be positive",
            );
            p.check(
                http.max_body_bytes < 1024,
                "--set http.max_body_bytes must be at least 1024",
            );
        }
        let sets = &self.common.sets;
        let insurers = insurers
            .into_iter()
            .map(|(id, url)| {
                let timeout = socket_timeouts
                    .get(&id)
                    .copied()
                    .unwrap_or(self.socket_timeout);
                let http = HttpInsurerConfig {
                    connect_timeout: timeout,
                    read_timeout: timeout,
                    ..HttpInsurerConfig::default()
                };
                let mut unused = Problems::default();
                let mut http =
                    crate::config::apply_sets(&http, "http", sets, &mut unused).unwrap_or(http);
                http.credentials = Credentials {
                    ca_pem: ca_pem.clone(),
                    identity_pem: identities.get(&id).cloned(),
                    headers: headers.get(&id).cloned().unwrap_or_default(),
                };
                (id, url, http)
            })
            .collect();
        match (bus, state) {
            (Some(bus), Some(state)) => p.into_result(|| Plan {
                bus,
                state,
                insurers,
                engine,
                intake,
                kafka,
                common: self.common.clone(),
            }),
            _ => Err(p),
        }
    }
}

/// Parses every `id=url`, collecting problems; `http://` only when allowed.
fn parse_insurers(
    specs: &[String],
    allow_plain_http: bool,
    p: &mut Problems,
) -> Vec<(InsurerId, url::Url)> {
    let mut out: Vec<(InsurerId, url::Url)> = Vec::new();
    for spec in specs {
        let Some((id, url)) = spec.split_once('=') else {
            p.push(format!("--insurer {spec:?}: expected id=url"));
            continue;
        };
        match (InsurerId::new(id), url::Url::parse(url)) {
            (Ok(id), _) if out.iter().any(|(seen, _)| *seen == id) => {
                p.push(format!("--insurer {id}: named twice"));
            }
            (Ok(id), Ok(url)) if url.scheme() == "https" => out.push((id, url)),
            (Ok(id), Ok(url)) if url.scheme() == "http" && allow_plain_http => out.push((id, url)),
            (Ok(id), Ok(url)) if url.scheme() == "http" => p.push(format!(
                "--insurer {id}: plain http:// carries personal data unencrypted; use https:// or set --allow-plain-http"
            )),
            (Err(err), _) => p.push(format!("--insurer {id:?}: {err}")),
            (Ok(id), _) => p.push(format!("--insurer {id}: not an http(s) url")),
        }
    }
    p.check(
        specs.is_empty(),
        "at least one --insurer id=url is required",
    );
    out
}

/// Parses every `id=value` of `flag` for a known insurer, collecting problems.
fn parse_per_insurer<T>(
    flag: &str,
    specs: &[String],
    insurers: &[(InsurerId, url::Url)],
    parse: impl Fn(&str) -> Option<T>,
    p: &mut Problems,
) -> BTreeMap<InsurerId, T> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let Some((id, value)) = spec.split_once('=') else {
            p.push(format!("{flag} {spec:?}: expected id=value"));
            continue;
        };
        let Ok(id) = InsurerId::new(id) else {
            p.push(format!("{flag} {id:?}: not an insurer id"));
            continue;
        };
        if !insurers.iter().any(|(known, _)| *known == id) {
            p.push(format!("{flag} {id}: no such --insurer"));
            continue;
        }
        match parse(value) {
            Some(value) => {
                out.insert(id, value);
            }
            None => p.push(format!("{flag} {id}: invalid value {value:?}")),
        }
    }
    out
}

/// A connected aggregator, ready to run.
#[derive(Debug)]
pub struct Aggregator {
    /// The intake (with its engine).
    pub intake: Intake,
    /// The admin endpoints.
    pub admin: Admin,
}

/// Connects the adapters of `plan` and builds the engine and the intake.
pub async fn connect(plan: Plan) -> Result<Aggregator, String> {
    let mut registry = Registry::default();
    crate::admin::register_build_info(&mut registry, "aggregator");
    let mut health = Health::default();
    let mut builder = Engine::builder();
    for (id, url, http) in plan.insurers {
        let client = HttpInsurerClient::new(id.clone(), url, http)
            .map_err(|e| format!("http client for {id}: {e}"))?;
        builder = builder.insurers([Insurer {
            id,
            client: Arc::new(client),
        }]);
    }
    let kv = crate::ports::key_value(&plan.state, &plan.common).await?;
    health.checks.extend(kv.health);
    let bus = crate::ports::bus(&plan.bus, &plan.kafka, &plan.common).await?;
    if let Some(metrics) = bus.metrics.clone() {
        metrics.register(&mut registry);
    }
    health.checks.extend(bus.health);
    builder = builder
        .sink(bus.sink)
        .state_store(kv.state)
        .config(plan.engine)
        .metrics(EngineMetrics::register(&mut registry));
    if let Some(store) = kv.resilience {
        // Quota, concurrency cap and breaker shared by every pod.
        builder = builder.shared_resilience(store);
    }
    let engine = builder.build().map_err(|e| e.to_string())?;
    let intake = Intake::new(engine, bus.requests, plan.intake).map_err(|e| e.to_string())?;
    health.readiness = Some(intake.readiness());
    Ok(Aggregator {
        intake,
        admin: Admin {
            health,
            registry: Arc::new(registry),
        },
    })
}

impl Aggregator {
    /// Runs the intake and the admin server on `listener` until `shutdown`;
    /// then drains the intake (see [`Intake::run`]) while the admin server
    /// answers readiness `draining`, and stops it last.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let token = CancellationToken::new();
        let intake = tokio::spawn(self.intake.run(token.clone()));
        tracing::info!(addr = %listener.local_addr()?, "aggregator admin listening");
        let draining = self.admin.health.draining.clone();
        let drained = CancellationToken::new();
        let admin_stop = drained.clone();
        let drain = async move {
            shutdown.await;
            // Readiness turns false; the intake stops taking events at once
            // and drains meanwhile.
            draining.start();
            token.cancel();
            let _ = intake.await;
            drained.cancel();
        };
        tokio::join!(
            self.admin.serve(listener, admin_stop.cancelled_owned()),
            drain
        );
        tracing::info!("aggregator stopped");
        Ok(())
    }
}

/// The `aggregator` binary: parses `args`, checks, connects, runs until
/// SIGTERM.
pub async fn main(args: Args) -> std::process::ExitCode {
    crate::launch::launch(
        "aggregator",
        &[args.listen],
        args.check(),
        connect,
        |listeners, aggregator: Aggregator| {
            let listener = listeners.into_iter().next().expect("one listener");
            aggregator.run(listener, crate::launch::shutdown_signal())
        },
    )
    .await
}
