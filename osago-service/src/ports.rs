//! Adapters built from URLs (see `osago_transport::resolve`): each
//! builder connects with retries, registers the adapter's health check and
//! names the cause when it gives up. A URL whose adapter this build was
//! compiled without is refused while the configuration is checked.

use std::sync::Arc;

use osago_core::ports::{
    EventPublisher, HealthCheck, LiveFeed, OutboxStore, OutcomeSource, QuoteSink, RateLimiter,
    ReadModel, RequestSource, RequestStore, ResilienceStore, StateStore,
};
use osago_transport::memory::{
    MemoryBus, MemoryRateLimiter, MemoryReadModel, MemoryRequestStore, MemoryStateStore,
};
use osago_transport::resolve::{BusUrl, DatabaseUrl, StateUrl};

use crate::settings::{CommonArgs, KafkaSettings, Problems};

/// The event bus, every role of it.
#[derive(Clone)]
pub struct Bus {
    /// Where the aggregator publishes quote and error events.
    pub sink: Arc<dyn QuoteSink>,
    /// The request stream, read by the aggregator's intake.
    pub requests: Arc<dyn RequestSource>,
    /// Where core-app's relay publishes request events.
    pub publisher: Arc<dyn EventPublisher>,
    /// Quote and error events for the read model (consumer group).
    pub outcomes: Arc<dyn OutcomeSource>,
    /// Every quote and error event, for a pod's SSE streams.
    pub live: Arc<dyn LiveFeed>,
    /// Its health check, when it has one.
    pub health: Option<Arc<dyn HealthCheck>>,
    /// Its consumers' lag and skipped records, as metrics (a Kafka bus).
    pub metrics: Option<crate::admin::ConsumerMetrics>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").finish_non_exhaustive()
    }
}

impl Bus {
    /// The in-process bus (one process only).
    pub fn memory() -> Self {
        Self::of(Arc::new(MemoryBus::new()), None)
    }

    fn of<B>(bus: Arc<B>, health: Option<Arc<dyn HealthCheck>>) -> Self
    where
        B: QuoteSink + RequestSource + EventPublisher + OutcomeSource + LiveFeed + 'static,
    {
        Self {
            sink: bus.clone(),
            requests: bus.clone(),
            publisher: bus.clone(),
            outcomes: bus.clone(),
            live: bus,
            health,
            metrics: None,
        }
    }
}

/// Refuses, while the configuration is checked, a bus URL naming an adapter
/// this build does not have.
pub fn check_compiled(bus: &BusUrl, p: &mut Problems) {
    if matches!(bus, BusUrl::Kafka(_)) && !cfg!(feature = "kafka") {
        p.push("--bus: this build has no Kafka support (cargo feature `kafka`)");
    }
}

/// Refuses a state-store URL naming an adapter this build does not have.
pub fn check_state_compiled(flag: &str, state: &StateUrl, p: &mut Problems) {
    if matches!(state, StateUrl::Valkey(_)) && !cfg!(feature = "valkey") {
        p.push(format!(
            "{flag}: this build has no Valkey support (cargo feature `valkey`)"
        ));
    }
}

/// Refuses a database URL naming an adapter this build does not have.
pub fn check_database_compiled(database: &DatabaseUrl, p: &mut Problems) {
    if matches!(database, DatabaseUrl::Postgres(_)) && !cfg!(feature = "postgres") {
        p.push("--database: this build has no PostgreSQL support (cargo feature `postgres`)");
    }
}

/// The Kafka adapter's configuration from the checked flags.
#[cfg(feature = "kafka")]
pub fn kafka_config(
    servers: &str,
    kafka: &KafkaSettings,
    common: &CommonArgs,
) -> osago_transport::kafka::KafkaConfig {
    use osago_core::outbox::Stream;
    use osago_transport::kafka::{KafkaConfig, TopicMode};
    let mut config = KafkaConfig::new(servers);
    config.instance_id = common.instance_id.clone();
    config.fetch_wait = common.kafka_fetch_wait;
    config.delivery_timeout = common.kafka_delivery_timeout;
    config.topic_mode = kafka.topic_mode.parse().unwrap_or(TopicMode::Create);
    for (i, stream) in [Stream::Requests, Stream::Quotes, Stream::Errors]
        .into_iter()
        .enumerate()
    {
        let topic = config.topic_settings_mut(stream);
        topic.partitions = kafka.partitions[i];
        topic.replication = kafka.replication[i];
        topic.retention_ms = i64::try_from(kafka.retention[i].as_millis()).unwrap_or(i64::MAX);
    }
    for (key, value) in &kafka.properties {
        config.properties.set(key, value);
    }
    // Checked with the configuration: problems were reported there.
    let mut unused = Problems::default();
    crate::config::apply_sets(&config, "kafka", &kafka.sets, &mut unused).unwrap_or(config)
}

/// Connects the bus named by `url`, Kafka as `kafka` says.
pub async fn bus(url: &BusUrl, kafka: &KafkaSettings, common: &CommonArgs) -> Result<Bus, String> {
    match url {
        BusUrl::Memory => Ok(Bus::memory()),
        #[cfg(feature = "kafka")]
        BusUrl::Kafka(servers) => {
            use osago_transport::kafka::KafkaBus;
            let config = kafka_config(servers, kafka, common);
            let bus = crate::launch::retry_connect("kafka", common.connect_timeout, || {
                KafkaBus::connect(config.clone())
            })
            .await
            .map_err(|e| format!("bus: {e}"))?;
            let stats = bus.consumer_stats();
            let bus = Arc::new(bus);
            Ok(Bus {
                metrics: Some(crate::admin::ConsumerMetrics(stats)),
                ..Bus::of(bus.clone(), Some(bus))
            })
        }
        #[cfg(not(feature = "kafka"))]
        BusUrl::Kafka(_) => {
            let _ = (common, kafka);
            Err("bus: this build has no Kafka support".to_owned())
        }
    }
}

/// What lives in the key-value store: in-flight state, the resilience
/// policies shared between pods, inbound rate limits.
#[derive(Clone)]
pub struct KeyValue {
    /// The aggregator's state store.
    pub state: Arc<dyn StateStore>,
    /// The shared resilience store (none in memory: policies stay local).
    pub resilience: Option<Arc<dyn ResilienceStore>>,
    /// The inbound rate limiter.
    pub limiter: Arc<dyn RateLimiter>,
    /// Its health check, when it has one.
    pub health: Option<Arc<dyn HealthCheck>>,
}

impl std::fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyValue").finish_non_exhaustive()
    }
}

/// Connects the key-value store named by `url` (`memory://` or Valkey).
pub async fn key_value(url: &StateUrl, common: &CommonArgs) -> Result<KeyValue, String> {
    match url {
        StateUrl::Memory => Ok(KeyValue {
            state: Arc::new(MemoryStateStore::new()),
            resilience: None,
            limiter: Arc::new(MemoryRateLimiter::new()),
            health: None,
        }),
        #[cfg(feature = "valkey")]
        StateUrl::Valkey(url) => {
            use osago_transport::valkey::{ValkeyConfig, ValkeyStore, ValkeyTls};
            let config = ValkeyConfig {
                tls: ValkeyTls {
                    ca_file: common.valkey_ca_file.clone(),
                    cert_file: common.valkey_cert_file.clone(),
                    key_file: common.valkey_key_file.clone(),
                },
                ..ValkeyConfig::default()
            };
            // `--set valkey.…` (checked with the configuration).
            let mut unused = Problems::default();
            let config = crate::config::apply_sets(&config, "valkey", &common.sets, &mut unused)
                .unwrap_or(config);
            let store = crate::launch::retry_connect("valkey", common.connect_timeout, || {
                ValkeyStore::connect(url, config.clone())
            })
            .await
            .map_err(|e| format!("valkey: {e}"))?;
            let store = Arc::new(store);
            Ok(KeyValue {
                state: store.clone(),
                resilience: Some(store.clone()),
                limiter: store.clone(),
                health: Some(store),
            })
        }
        #[cfg(not(feature = "valkey"))]
        StateUrl::Valkey(_) => {
            let _ = common;
            Err("valkey: this build has no Valkey support".to_owned())
        }
    }
}

/// core-app's stores: requests with their outbox, and the read model.
#[derive(Clone)]
pub struct Database {
    /// Requests, written together with their outbox message.
    pub requests: Arc<dyn RequestStore>,
    /// The outbox, read by the relay.
    pub outbox: Arc<dyn OutboxStore>,
    /// The quote showcase.
    pub read_model: Arc<dyn ReadModel>,
    /// Its health check, when it has one.
    pub health: Option<Arc<dyn HealthCheck>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").finish_non_exhaustive()
    }
}

/// How the database is used.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseOptions {
    /// How long personal data (requests) and quotes are kept.
    pub retention: std::time::Duration,
    /// Record every quote and error event (PostgreSQL).
    pub audit: bool,
    /// Connections in the pool (PostgreSQL).
    pub pool_size: u32,
    /// How long a caller waits for a pooled connection (PostgreSQL).
    pub acquire_timeout: std::time::Duration,
}

/// Connects the database named by `url`.
pub async fn database(
    url: &DatabaseUrl,
    options: DatabaseOptions,
    common: &CommonArgs,
) -> Result<Database, String> {
    let DatabaseOptions { retention, .. } = options;
    match url {
        DatabaseUrl::Memory => {
            let store = MemoryRequestStore::new(retention);
            Ok(Database {
                requests: Arc::new(store.clone()),
                outbox: Arc::new(store),
                read_model: Arc::new(MemoryReadModel::new(retention)),
                health: None,
            })
        }
        #[cfg(feature = "postgres")]
        DatabaseUrl::Postgres(url) => {
            use osago_transport::postgres::{PostgresConfig, PostgresStore};
            let config = PostgresConfig {
                retention,
                audit: options.audit,
                max_connections: options.pool_size,
                acquire_timeout: options.acquire_timeout,
            };
            let store = crate::launch::retry_connect("postgres", common.connect_timeout, || {
                PostgresStore::connect(url, config.clone())
            })
            .await
            .map_err(|e| format!("database: {e}"))?;
            let store = Arc::new(store);
            Ok(Database {
                requests: store.clone(),
                outbox: store.clone(),
                read_model: store.clone(),
                health: Some(store),
            })
        }
        #[cfg(not(feature = "postgres"))]
        DatabaseUrl::Postgres(_) => {
            let _ = common;
            Err("database: this build has no PostgreSQL support".to_owned())
        }
    }
}
