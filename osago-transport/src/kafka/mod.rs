//! Kafka adapter (rdkafka): the three topics behind the bus ports.
//!
//! - [`KafkaBus::connect`] manages the topics as [`TopicMode`] says
//!   (create the missing ones, verify, alter only when asked, or nothing),
//!   and builds one shared idempotent producer tuned for latency
//!   (`linger.ms=0`, Nagle off, `acks=all`). Every client starts from
//!   [`client_config`], which carries any librdkafka property given
//!   (TLS, SASL).
//! - [`EventPublisher`] and [`QuoteSink`] publish and wait for the delivery
//!   report: a message is on the broker when `publish` returns.
//! - [`RequestSource`] and [`OutcomeSource`] are consumer-group
//!   subscriptions with manual commits of contiguous acknowledged offsets
//!   (see the `group` module); the outcome subscription reads the quote and
//!   error topics with one consumer.
//! - [`LiveFeed`] assigns every quote and error partition at its end to a
//!   group-less consumer per follower.
//!
//! Topic names live in [`KafkaConfig`] only. Request payloads hold personal
//! data: logs carry topics, partitions, offsets and keys, never payloads.

mod admin;
mod config;
mod context;
mod group;
mod live;
mod stats;
mod tracker;
mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use osago_core::outbox::{OutboxMessage, Stream};
use osago_core::ports::{
    EventPublisher, LiveFeed, OutcomeSource, PortError, PortErrorKind, QuoteSink, RequestSource,
    Subscription, Traced,
};
use osago_core::{InsurerEvent, RequestEvent};
use rdkafka::admin::AdminClient;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;

pub use config::{
    is_secret_property, KafkaConfig, Properties, TopicMode, TopicSettings, SEVEN_DAYS_MS,
    THREE_DAYS_MS,
};
pub use stats::ConsumerStats;

use crate::codec;
use context::TracingContext;
use group::{group_settings, Decode, GroupSubscription};
use osago_core::trace::TraceContext;

/// The bus on Kafka: publisher, sink, sources and live feed of the three
/// topics. Cloning shares the producer.
#[derive(Clone)]
pub struct KafkaBus {
    inner: Arc<Inner>,
}

struct Inner {
    config: KafkaConfig,
    /// What the consumers saw (lag, skipped records), for metrics.
    stats: Arc<ConsumerStats>,
    /// Settings every client shares (brokers, client id, sockets).
    client: ClientConfig,
    /// The producer's settings, to build a new one after a fatal error.
    producer_config: ClientConfig,
    /// Dropping them joins their threads and flushes: off the runtime.
    clients: OffloadDrop<Clients>,
}

struct Clients {
    /// Replaced when it hits a fatal error (see [`Inner::renew_producer`]).
    producer: std::sync::RwLock<FutureProducer<TracingContext>>,
    admin: AdminClient<TracingContext>,
}

impl Inner {
    /// The current producer (a clone shares it).
    fn producer(&self) -> FutureProducer<TracingContext> {
        self.clients
            .get()
            .producer
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn admin(&self) -> &AdminClient<TracingContext> {
        &self.clients.get().admin
    }

    /// A producer that is fenced or in a fatal state fails every later
    /// publish, and librdkafka cannot leave that state by itself: an
    /// idempotent producer whose messages timed out (a broker outage longer
    /// than `delivery_timeout`) bumps its epoch, and tansu 0.6.0 answers
    /// every later batch with `ProducerFenced`. Such a producer is replaced
    /// by a new one (a new producer id), once, by whoever sees it first;
    /// the old one is closed off the runtime.
    fn renew_producer(&self, failed: &FutureProducer<TracingContext>, err: &KafkaError) {
        let fenced = matches!(
            error_code(err),
            Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
        );
        let Some((code, reason)) = failed
            .client()
            .fatal_error()
            .or_else(|| fenced.then(|| (error_code(err).expect("fenced"), err.to_string())))
        else {
            return;
        };
        let mut current = self
            .clients
            .get()
            .producer
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.client().native_ptr() != failed.client().native_ptr() {
            return; // someone renewed it already
        }
        match self
            .producer_config
            .create_with_context::<_, FutureProducer<TracingContext>>(TracingContext::default())
        {
            Ok(fresh) => {
                tracing::error!(
                    ?code,
                    reason,
                    "the producer is fenced or failed fatally; replaced by a new one"
                );
                let old = std::mem::replace(&mut *current, fresh);
                drop(current);
                detach("kafka-close", move || drop(old));
            }
            Err(err) => {
                tracing::error!(?code, reason, error = %err, "the producer is fenced or failed fatally, and a new one cannot be built");
            }
        }
    }
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("bootstrap", &self.inner.config.bootstrap)
            .field("requests", &self.inner.config.requests)
            .field("quotes", &self.inner.config.quotes)
            .field("errors", &self.inner.config.errors)
            .finish_non_exhaustive()
    }
}

impl KafkaBus {
    /// Connects: makes sure the three topics exist with the required
    /// cleanup policy and retention (see the module docs; an unreachable
    /// broker fails within `request_timeout`), and builds the shared
    /// producer.
    pub async fn connect(config: KafkaConfig) -> Result<KafkaBus, PortError> {
        let client = client_config(&config);

        let context = TracingContext::default();
        let admin: AdminClient<TracingContext> = client
            .create_with_context(context.clone())
            .map_err(|e| kafka_error("creating the admin client failed", e))?;

        let mut producer_config = client.clone();
        producer_config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .set("queue.buffering.max.ms", "0")
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().max(1).to_string(),
            )
            .set(
                "request.timeout.ms",
                config.request_timeout.as_millis().max(1).to_string(),
            );
        for (key, value) in config.properties.iter() {
            producer_config.set(key, value);
        }
        let producer: FutureProducer<TracingContext> = producer_config
            .create_with_context(context.clone())
            .map_err(|e| kafka_error("creating the producer failed", e))?;

        let bus = KafkaBus {
            inner: Arc::new(Inner {
                config,
                stats: Arc::default(),
                client,
                producer_config,
                clients: OffloadDrop::new(Clients {
                    producer: std::sync::RwLock::new(producer),
                    admin,
                }),
            }),
        };
        // Topics first: a metadata request for a missing topic may have the
        // broker auto-create it with its defaults (one partition).
        admin::ensure_topics(bus.inner.admin(), &bus.inner.producer(), &bus.inner.config)
            .await
            .map_err(|err| match context.diagnosis() {
                Some(diagnosis) => err.with_note(diagnosis),
                None => err,
            })?;
        tracing::info!(bootstrap = %bus.inner.config.bootstrap, "kafka bus connected");
        Ok(bus)
    }

    /// The configuration in use.
    pub fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    /// The configs of the three topics as the broker reports them: topic,
    /// then config name to value.
    pub async fn topic_configs(
        &self,
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, PortError> {
        admin::topic_configs(self.inner.admin(), &self.inner.config).await
    }

    /// Health: a metadata round trip to the brokers, bounded by
    /// `request_timeout`.
    pub async fn ping(&self) -> Result<(), PortError> {
        let producer = self.inner.producer();
        let timeout = self.inner.config.request_timeout;
        let topic = self.inner.config.requests.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map(|_| ())
                .map_err(|e| kafka_error("kafka metadata request failed", e))
        })
        .await
        .map_err(|_| PortError::new(PortErrorKind::Unavailable, "kafka ping panicked"))?
    }

    /// Produces one message (with [`record_headers`]) and waits for its
    /// delivery report.
    async fn send(
        &self,
        stream: Stream,
        key: &str,
        payload: &[u8],
        trace: Option<TraceContext>,
    ) -> Result<(), PortError> {
        let topic = self.inner.config.topic(stream);
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(record_headers(trace.as_ref()));
        self.produce(topic, key, record).await
    }

    /// Writes an undecodable record to the dead-letter topic: its key,
    /// payload and headers as they were, plus where it came from and why
    /// it was refused (`osago-dead-letter-topic`, `-partition`, `-offset`,
    /// `-group`, `-reason`; the reason never quotes the payload).
    pub(crate) async fn dead_letter(&self, record: &group::DeadRecord) -> Result<(), PortError> {
        use rdkafka::message::Header;
        let topic = &self.inner.config.dead_letter;
        let partition = record.partition.to_string();
        let offset = record.offset.to_string();
        let mut headers = record.headers.clone().unwrap_or_default();
        for (key, value) in [
            ("osago-dead-letter-topic", record.topic.as_ref()),
            ("osago-dead-letter-partition", partition.as_str()),
            ("osago-dead-letter-offset", offset.as_str()),
            ("osago-dead-letter-group", record.group.as_str()),
            ("osago-dead-letter-reason", record.reason.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let key = record.key.as_deref().unwrap_or_default();
        let mut out = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
        if record.key.is_some() {
            out = out.key(key);
        }
        if let Some(payload) = &record.payload {
            out = out.payload(payload);
        }
        self.produce(topic, "(dead letter)", out).await
    }

    async fn produce<K, P>(
        &self,
        topic: &str,
        key: &str,
        record: FutureRecord<'_, K, P>,
    ) -> Result<(), PortError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        let producer = self.inner.producer();
        match producer
            .send(record, Timeout::After(self.inner.config.request_timeout))
            .await
        {
            Ok(delivery) => {
                tracing::debug!(
                    topic,
                    partition = delivery.partition,
                    offset = delivery.offset,
                    key,
                    "published"
                );
                Ok(())
            }
            Err((err, _message)) => {
                tracing::warn!(topic, key, error = %err, "publish failed");
                self.inner.renew_producer(&producer, &err);
                Err(kafka_error("publishing failed", err))
            }
        }
    }

    fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut client = self.inner.client.clone();
        group_settings(
            &mut client,
            group,
            self.inner.config.session_timeout,
            self.inner.config.instance_id.as_deref(),
            self.inner.config.fetch_wait,
        );
        client.set(
            "statistics.interval.ms",
            self.inner
                .config
                .statistics_interval
                .as_millis()
                .to_string(),
        );
        client
    }

    /// What the bus's consumer groups saw: lag per partition, records
    /// skipped as undecodable.
    pub fn consumer_stats(&self) -> Arc<ConsumerStats> {
        self.inner.stats.clone()
    }
}

/// Maps a client error to a port error: timeouts to `Timeout`, everything
/// else to `Unavailable`.
/// The settings every client of the bus starts from: brokers, client id,
/// sockets, then [`KafkaConfig::properties`] (TLS, SASL, any librdkafka
/// property), which win over ours. Consumers and the producer add their own
/// on top.
pub fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap)
        .set("client.id", &config.client_id)
        .set("socket.nagle.disable", "true")
        .set(
            "socket.timeout.ms",
            config.request_timeout.as_millis().max(10).to_string(),
        );
    for (key, value) in config.properties.iter() {
        client.set(key, value);
    }
    // librdkafka hands over connection failures ("FAIL") at info level;
    // they explain a failed start, so they always reach the context (which
    // `tracing` then filters), whatever the global log level.
    if matches!(
        client.log_level,
        RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning
            | RDKafkaLogLevel::Notice
    ) {
        client.set_log_level(RDKafkaLogLevel::Info);
    }
    client
}

pub(crate) fn kafka_error(context: &str, err: KafkaError) -> PortError {
    let kind = match error_code(&err) {
        Some(
            RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::TimedOutQueue,
        ) => PortErrorKind::Timeout,
        _ => PortErrorKind::Unavailable,
    };
    PortError::new(kind, format!("{context}: {err}")).with_source(err)
}

/// The librdkafka error code of an error, admin operations included
/// (`rdkafka_error_code` leaves those out).
pub(crate) fn error_code(err: &KafkaError) -> Option<RDKafkaErrorCode> {
    match err {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    }
}

/// Runs `work` on a detached thread: closing a client blocks on the
/// brokers, for as long as they are gone, and neither a runtime worker nor
/// a runtime shutdown (which waits for `spawn_blocking` tasks) should wait
/// for that. If no thread can be started, `work` is dropped here, which
/// drops (closes) what it holds on this thread.
pub(crate) fn detach(name: &str, work: impl FnOnce() + Send + 'static) {
    if let Err(err) = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(work)
    {
        tracing::warn!(error = %err, "cannot start a thread to close a kafka client; closing inline");
    }
}

/// Owns a client whose drop blocks (a consumer's close, a producer's
/// flush): dropping this drops the client on a detached thread.
pub(crate) struct OffloadDrop<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> std::fmt::Debug for OffloadDrop<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OffloadDrop")
    }
}

impl<T: Send + 'static> OffloadDrop<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(Some(value))
    }

    pub(crate) fn get(&self) -> &T {
        self.0.as_ref().expect("present until dropped")
    }

    /// Drops the value on this thread.
    pub(crate) fn close_here(mut self) {
        drop(self.0.take());
    }
}

impl<T: Send + 'static> Drop for OffloadDrop<T> {
    fn drop(&mut self) {
        if let Some(value) = self.0.take() {
            detach("kafka-close", move || drop(value));
        }
    }
}

#[async_trait]
impl EventPublisher for KafkaBus {
    async fn publish(&self, message: &OutboxMessage) -> Result<(), PortError> {
        self.send(
            message.stream,
            &message.key,
            &message.payload,
            message.trace,
        )
        .await
    }
}

#[async_trait]
impl QuoteSink for KafkaBus {
    async fn publish(&self, event: &InsurerEvent) -> Result<(), PortError> {
        let (stream, key, payload) = codec::encode_insurer_event(event);
        self.send(stream, &key, &payload, osago_core::trace::current())
            .await
    }
}

#[async_trait]
impl RequestSource for KafkaBus {
    async fn subscribe(
        &self,
        group: &str,
    ) -> Result<Box<dyn Subscription<RequestEvent>>, PortError> {
        let decode: Decode<RequestEvent> =
            Box::new(|_topic, payload| codec::decode_request_event(payload));
        let subscription = GroupSubscription::start(
            &self.consumer_config(group),
            group,
            &[&self.inner.config.requests],
            self.inner.config.commit_interval,
            decode,
            self.clone(),
        )?;
        Ok(Box::new(subscription))
    }
}

#[async_trait]
impl OutcomeSource for KafkaBus {
    async fn subscribe(
        &self,
        group: &str,
    ) -> Result<Box<dyn Subscription<InsurerEvent>>, PortError> {
        let config = self.inner.config.clone();
        let decode: Decode<InsurerEvent> =
            Box::new(move |topic, payload| match config.stream_of(topic) {
                Some(stream @ (Stream::Quotes | Stream::Errors)) => {
                    codec::decode_insurer_event(stream, payload)
                }
                _ => Err(PortError::new(
                    PortErrorKind::Corrupt,
                    format!("message from unexpected topic {topic}"),
                )),
            });
        let subscription = GroupSubscription::start(
            &self.consumer_config(group),
            group,
            &[&self.inner.config.quotes, &self.inner.config.errors],
            self.inner.config.commit_interval,
            decode,
            self.clone(),
        )?;
        Ok(Box::new(subscription))
    }
}

#[async_trait]
impl LiveFeed for KafkaBus {
    async fn follow(&self) -> Result<BoxStream<'static, Traced<InsurerEvent>>, PortError> {
        live::follow(&self.inner.client, &self.inner.config).await
    }
}

#[async_trait]
impl osago_core::ports::HealthCheck for KafkaBus {
    fn name(&self) -> &'static str {
        "broker"
    }

    async fn check(&self) -> Result<(), PortError> {
        self.ping().await
    }
}

/// The content type of every record's payload (a Kafka header).
pub const CONTENT_TYPE: &str = "application/json";

/// The schema version of every record's payload (a Kafka header): readers
/// ignore fields they do not know, so a minor change (a new optional field)
/// keeps version 1; a reader may refuse a major version it does not know.
pub const SCHEMA_VERSION: &str = "1";

/// The header of the W3C trace context a record belongs to.
pub const TRACEPARENT: &str = "traceparent";

/// `content-type` and `osago-schema-version`, on every record we produce,
/// so a consumer (ours, a data platform's) knows what it reads before it
/// parses; and `traceparent` when the record belongs to a trace.
pub fn record_headers(trace: Option<&TraceContext>) -> rdkafka::message::OwnedHeaders {
    use rdkafka::message::{Header, OwnedHeaders};
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "content-type",
            value: Some(CONTENT_TYPE),
        })
        .insert(Header {
            key: "osago-schema-version",
            value: Some(SCHEMA_VERSION),
        });
    match trace {
        Some(trace) => headers.insert(Header {
            key: TRACEPARENT,
            value: Some(&trace.header()),
        }),
        None => headers,
    }
}
