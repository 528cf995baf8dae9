//! The whole system in one process on its embedded default: core-app, the
//! aggregator and simulated insurers, on the in-memory adapters (an
//! in-process bus instead of Kafka, memory stores instead of PostgreSQL and
//! Valkey). The same library code paths as production; insurers are called
//! over real HTTP on loopback.

pub mod cli;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use insurer_sim::{Archetype, SimConfig};
use osago_aggregator_lib::{Engine, EngineConfig, EngineMetrics, Insurer, Intake, IntakeConfig};
use osago_core::{Clock, InsurerId, SystemClock};
use osago_transport::http::{HttpInsurerClient, HttpInsurerConfig};
use osago_transport::memory::{MemoryBus, MemoryReadModel, MemoryRequestStore, MemoryStateStore};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Settings of the embedded system.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// core-app settings.
    pub core: core_app::Config,
    /// Fan-out engine settings.
    pub engine: EngineConfig,
    /// The aggregator's intake settings.
    pub intake: IntakeConfig,
    /// The simulated insurers: id and archetype.
    pub insurers: Vec<(InsurerId, Archetype)>,
    /// Simulator speed-up (1.0 = real insurer timings).
    pub sim_speed: f64,
    /// Simulator seed (runs repeat for the same seed).
    pub sim_seed: u64,
    /// How long each simulated insurer's API answer takes (uniform range,
    /// divided by `sim_speed`); zero: at once.
    pub sim_response_time: (Duration, Duration),
    /// The insurer HTTP client settings.
    pub http: HttpInsurerConfig,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            core: core_app::Config::default(),
            engine: EngineConfig::default(),
            intake: IntakeConfig::default(),
            insurers: insurer_sim::default_lineup(),
            sim_speed: 1.0,
            sim_seed: 42,
            sim_response_time: (Duration::ZERO, Duration::ZERO),
            http: HttpInsurerConfig::default(),
        }
    }
}

/// A running embedded system.
#[derive(Debug)]
pub struct Embedded {
    /// Where core-app (the page and the API) listens.
    pub addr: SocketAddr,
    /// Where each simulated insurer listens.
    pub insurers: Vec<(InsurerId, SocketAddr)>,
    /// The request store (tests look at the outbox).
    pub requests: MemoryRequestStore,
    /// The state store (tests check TTLs).
    pub state: MemoryStateStore,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Embedded {
    /// Stops everything and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts the system, core-app on `listener`, which also answers the admin
/// endpoints (`/health/…`, `/metrics`).
pub async fn start(listener: TcpListener, config: EmbeddedConfig) -> std::io::Result<Embedded> {
    start_with_admin(listener, None, config).await
}

/// Starts the system, core-app on `listener`, with the admin endpoints on
/// `admin` when given (then the public listener answers them 404), as the
/// `osago` binary runs it.
pub async fn start_with_admin(
    listener: TcpListener,
    admin: Option<TcpListener>,
    config: EmbeddedConfig,
) -> std::io::Result<Embedded> {
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    let mut insurers = Vec::new();
    let mut insurer_addrs = Vec::new();
    for (id, archetype) in &config.insurers {
        let sim_listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = sim_listener.local_addr()?;
        let mut sim = SimConfig::new(id.clone(), *archetype);
        sim.seed = config.sim_seed;
        sim.speed = config.sim_speed;
        sim.response_time = config.sim_response_time;
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(err) = insurer_sim::run(sim_listener, sim, token.cancelled_owned()).await {
                tracing::error!(error = %err, "simulated insurer failed");
            }
        }));
        let base = url::Url::parse(&format!("http://{addr}/")).expect("valid url");
        let client = HttpInsurerClient::new(id.clone(), base, config.http.clone())
            .map_err(std::io::Error::other)?;
        insurers.push(Insurer {
            id: id.clone(),
            client: Arc::new(client),
        });
        insurer_addrs.push((id.clone(), addr));
    }

    let bus = MemoryBus::new();
    let state = MemoryStateStore::new();
    let requests = MemoryRequestStore::new(config.core.retention);
    let read_model = MemoryReadModel::new(config.core.retention);
    let mut registry = Registry::default();
    // No insurer, no aggregator (tests of core-app's input alone): requests
    // are stored and published, and nobody fans them out.
    if !insurers.is_empty() {
        let engine = Engine::builder()
            .insurers(insurers)
            .sink(Arc::new(bus.clone()))
            .state_store(Arc::new(state.clone()))
            .clock(clock.clone())
            .config(config.engine.clone())
            .metrics(EngineMetrics::register(&mut registry))
            .build()
            .map_err(std::io::Error::other)?;
        let intake = Intake::new(engine, Arc::new(bus.clone()), config.intake.clone())
            .map_err(std::io::Error::other)?;
        tasks.push(tokio::spawn(intake.run(shutdown.clone())));
    }

    let deps = core_app::Deps {
        requests: Arc::new(requests.clone()),
        outbox: Arc::new(requests.clone()),
        publisher: Arc::new(bus.clone()),
        outcomes: Arc::new(bus.clone()),
        live: Arc::new(bus.clone()),
        read_model: Arc::new(read_model),
        clock,
        health: Vec::new(),
        limiter: Arc::new(osago_transport::memory::MemoryRateLimiter::new()),
    };
    let addr = listener.local_addr()?;
    let token = shutdown.clone();
    let core_config = config.core.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(err) = core_app::run(
            listener,
            admin,
            deps,
            core_config,
            registry,
            token.cancelled_owned(),
        )
        .await
        {
            tracing::error!(error = %err, "core-app failed");
        }
    }));
    Ok(Embedded {
        addr,
        insurers: insurer_addrs,
        requests,
        state,
        shutdown,
        tasks,
    })
}
