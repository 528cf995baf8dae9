//! Settings of the Kafka adapter. This is the only place the topic names
//! live.

use std::time::Duration;

use osago_core::outbox::Stream;
use serde::{Deserialize, Serialize};

/// Three days in milliseconds: the least retention of the request and quote
/// topics.
pub const THREE_DAYS_MS: i64 = 3 * 24 * 60 * 60 * 1000;

/// Seven days in milliseconds: the least retention of the error topic.
pub const SEVEN_DAYS_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// Settings of [`KafkaBus`](super::KafkaBus).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub bootstrap: String,
    /// The client id the brokers see (logs, quotas).
    pub client_id: String,
    /// The request topic (key: request id).
    pub requests: String,
    /// The quote topic (key: `request_id:insurer_id`).
    pub quotes: String,
    /// The error topic (key: `request_id:insurer_id`).
    pub errors: String,
    /// Partitions of each topic when this adapter creates it.
    pub partitions: i32,
    /// Replication factor of each topic when this adapter creates it.
    pub replication: i16,
    /// Least `retention.ms` of the request topic.
    pub requests_retention_ms: i64,
    /// Least `retention.ms` of the quote topic.
    pub quotes_retention_ms: i64,
    /// Least `retention.ms` of the error topic.
    pub errors_retention_ms: i64,
    /// Bound of one admin or metadata call, and of waiting for room in the
    /// producer queue.
    #[serde(with = "millis")]
    pub request_timeout: Duration,
    /// How long the producer keeps trying to deliver one message
    /// (`message.timeout.ms`) before the publish fails.
    #[serde(with = "millis")]
    pub delivery_timeout: Duration,
    /// How often a subscription commits the offsets it may commit.
    #[serde(with = "millis")]
    pub commit_interval: Duration,
    /// The consumer group session timeout (`session.timeout.ms`).
    #[serde(with = "millis")]
    pub session_timeout: Duration,
    /// A stable name of this process in its consumer groups
    /// (`group.instance.id`, static membership), such as a StatefulSet pod
    /// name. A process restarted under the same name takes back its
    /// partitions at once, without waiting for the broker to notice the old
    /// one died. `None`: dynamic membership.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// How long the broker may hold a fetch with no new records
    /// (`fetch.wait.max.ms`) on every consumer. Kafka answers as soon as a
    /// record arrives, so this only sets how often an idle consumer asks.
    /// tansu 0.6.0 holds every fetch for the whole wait, records or not, so
    /// there it is added to every event's latency (docs/benchmarks.md).
    #[serde(with = "millis")]
    pub fetch_wait: Duration,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap: "127.0.0.1:9092".into(),
            client_id: "osago".into(),
            requests: "osago.requests.v1".into(),
            quotes: "osago.quotes.v1".into(),
            errors: "osago.errors.v1".into(),
            partitions: 12,
            replication: 1,
            requests_retention_ms: THREE_DAYS_MS,
            quotes_retention_ms: THREE_DAYS_MS,
            errors_retention_ms: SEVEN_DAYS_MS,
            request_timeout: Duration::from_secs(10),
            delivery_timeout: Duration::from_secs(30),
            commit_interval: Duration::from_millis(100),
            session_timeout: Duration::from_secs(10),
            instance_id: None,
            fetch_wait: Duration::from_millis(10),
        }
    }
}

impl KafkaConfig {
    /// A default configuration for the given bootstrap brokers.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            ..Self::default()
        }
    }

    /// The topic of a stream.
    pub fn topic(&self, stream: Stream) -> &str {
        match stream {
            Stream::Requests => &self.requests,
            Stream::Quotes => &self.quotes,
            Stream::Errors => &self.errors,
        }
    }

    /// The stream a topic carries, if it is one of ours.
    pub fn stream_of(&self, topic: &str) -> Option<Stream> {
        [Stream::Requests, Stream::Quotes, Stream::Errors]
            .into_iter()
            .find(|s| self.topic(*s) == topic)
    }

    /// The least retention of a stream's topic, in milliseconds.
    pub fn retention_ms(&self, stream: Stream) -> i64 {
        match stream {
            Stream::Requests => self.requests_retention_ms,
            Stream::Quotes => self.quotes_retention_ms,
            Stream::Errors => self.errors_retention_ms,
        }
    }
}

/// Serde for durations as milliseconds (config files).
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let c = KafkaConfig::default();
        assert_eq!(c.topic(Stream::Requests), "osago.requests.v1");
        assert_eq!(c.topic(Stream::Quotes), "osago.quotes.v1");
        assert_eq!(c.topic(Stream::Errors), "osago.errors.v1");
        assert_eq!(c.retention_ms(Stream::Requests), 259_200_000);
        assert_eq!(c.retention_ms(Stream::Quotes), 259_200_000);
        assert_eq!(c.retention_ms(Stream::Errors), 604_800_000);
        assert_eq!(c.partitions, 12);
        assert_eq!(c.commit_interval, Duration::from_millis(100));
        assert_eq!(c.stream_of("osago.errors.v1"), Some(Stream::Errors));
        assert_eq!(c.stream_of("other"), None);
    }

    #[test]
    fn partial_config_keeps_defaults() {
        let c: KafkaConfig =
            serde_json::from_str(r#"{"bootstrap":"k:9092","commit_interval":250}"#).unwrap();
        assert_eq!(c.bootstrap, "k:9092");
        assert_eq!(c.commit_interval, Duration::from_millis(250));
        assert_eq!(c.quotes, "osago.quotes.v1");
    }
}
