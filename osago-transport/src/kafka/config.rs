//! Settings of the Kafka adapter. This is the only place the topic names
//! live.

use std::collections::BTreeMap;
use std::time::Duration;

use osago_core::outbox::Stream;
use serde::{Deserialize, Serialize};

/// Three days in milliseconds: the default retention of the request and
/// quote topics.
pub const THREE_DAYS_MS: i64 = 3 * 24 * 60 * 60 * 1000;

/// Seven days in milliseconds: the default retention of the error topic.
pub const SEVEN_DAYS_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// What the adapter does about its topics when it connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopicMode {
    /// Creates a missing topic with its [`TopicSettings`]; an existing topic
    /// is left as it is, each difference logged as a warning. Needs the
    /// Create (and Describe) right. The default.
    #[default]
    Create,
    /// Creates nothing and alters nothing: every topic must exist with its
    /// settings, and each difference fails the start with one line
    /// (topic, setting, expected, actual). Needs Describe rights only.
    Verify,
    /// As `create`, and an existing topic whose cleanup policy or retention
    /// differs is altered to match (needs the Alter right). Partitions and
    /// replication are never changed.
    Alter,
    /// No admin call at all: the topics are someone else's business.
    Off,
}

impl std::str::FromStr for TopicMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "create" => Ok(Self::Create),
            "verify" => Ok(Self::Verify),
            "alter" => Ok(Self::Alter),
            "off" => Ok(Self::Off),
            other => Err(format!(
                "{other:?} is not a topic mode: create, verify, alter or off"
            )),
        }
    }
}

pub use crate::resolve::is_secret_property;

/// librdkafka properties passed through to every client. Its `Debug`
/// redacts the value of every secret ([`is_secret_property`]).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Properties(pub BTreeMap<String, String>);

impl Properties {
    /// Each property, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    /// Sets a property.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    /// Key and value as shown to people: secrets as `<redacted>`.
    pub fn redacted(&self) -> BTreeMap<&str, &str> {
        self.0
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_property(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect()
    }
}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}

/// How one topic is to be: created so, verified against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSettings {
    /// Partitions.
    pub partitions: i32,
    /// Replication factor; -1: the broker's `default.replication.factor`
    /// (Kafka 2.4 and later), and not verified.
    pub replication: i16,
    /// `retention.ms` (positive: "forever" is refused, the topics carry
    /// personal data or data linked to it).
    pub retention_ms: i64,
}

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
    /// The dead-letter topic: where a consumer writes a record it cannot
    /// decode (key, payload and headers as they were, plus
    /// `osago-dead-letter-*` headers naming its source and the reason),
    /// before it moves past it. Created with the request topic's retention
    /// and replication (a poison record may hold personal data), one
    /// partition; not verified.
    #[serde(default = "default_dead_letter")]
    pub dead_letter: String,
    /// What to do about the topics at connect.
    pub topic_mode: TopicMode,
    /// The request topic's settings (it carries personal data: its
    /// retention is core-app's personal-data retention).
    pub requests_topic: TopicSettings,
    /// The quote topic's settings.
    pub quotes_topic: TopicSettings,
    /// The error topic's settings.
    pub errors_topic: TopicSettings,
    /// librdkafka properties set on every client after ours (TLS, SASL,
    /// anything `kcat -X` takes): `security.protocol`, `sasl.mechanisms`,
    /// `sasl.username`, `sasl.password`, `ssl.ca.location`, ...
    #[serde(default)]
    pub properties: Properties,
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
    /// How often each consumer group reports its lag per partition
    /// (`statistics.interval.ms`; [`super::ConsumerStats`]). Default 15 s.
    #[serde(with = "millis", default = "default_statistics_interval")]
    pub statistics_interval: Duration,
}

fn default_dead_letter() -> String {
    "osago.dead-letter.v1".into()
}

fn default_statistics_interval() -> Duration {
    Duration::from_secs(15)
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap: "127.0.0.1:9092".into(),
            client_id: "osago".into(),
            requests: "osago.requests.v1".into(),
            quotes: "osago.quotes.v1".into(),
            errors: "osago.errors.v1".into(),
            dead_letter: default_dead_letter(),
            topic_mode: TopicMode::Create,
            requests_topic: TopicSettings {
                partitions: 12,
                replication: 1,
                retention_ms: THREE_DAYS_MS,
            },
            quotes_topic: TopicSettings {
                partitions: 12,
                replication: 1,
                retention_ms: THREE_DAYS_MS,
            },
            errors_topic: TopicSettings {
                partitions: 12,
                replication: 1,
                retention_ms: SEVEN_DAYS_MS,
            },
            properties: Properties::default(),
            request_timeout: Duration::from_secs(10),
            delivery_timeout: Duration::from_secs(30),
            commit_interval: Duration::from_millis(100),
            session_timeout: Duration::from_secs(10),
            instance_id: None,
            fetch_wait: Duration::from_millis(10),
            statistics_interval: default_statistics_interval(),
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

    /// The settings of a stream's topic.
    pub fn topic_settings(&self, stream: Stream) -> &TopicSettings {
        match stream {
            Stream::Requests => &self.requests_topic,
            Stream::Quotes => &self.quotes_topic,
            Stream::Errors => &self.errors_topic,
        }
    }

    /// The settings of a stream's topic, to change.
    pub fn topic_settings_mut(&mut self, stream: Stream) -> &mut TopicSettings {
        match stream {
            Stream::Requests => &mut self.requests_topic,
            Stream::Quotes => &mut self.quotes_topic,
            Stream::Errors => &mut self.errors_topic,
        }
    }

    /// The retention of a stream's topic, in milliseconds.
    pub fn retention_ms(&self, stream: Stream) -> i64 {
        self.topic_settings(stream).retention_ms
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
        assert_eq!(c.requests_topic.partitions, 12);
        assert_eq!(c.topic_mode, TopicMode::Create);
        assert_eq!(c.commit_interval, Duration::from_millis(100));
        assert_eq!(c.stream_of("osago.errors.v1"), Some(Stream::Errors));
        assert_eq!(c.stream_of("other"), None);
    }

    #[test]
    fn secrets_in_properties_are_never_printed() {
        let mut c = KafkaConfig::default();
        c.properties.set("security.protocol", "SASL_SSL");
        c.properties.set("sasl.mechanisms", "SCRAM-SHA-512");
        c.properties.set("sasl.username", "osago");
        c.properties.set("sasl.password", "hunter2");
        c.properties.set("ssl.key.password", "k3y-pass");
        c.properties
            .set("ssl.key.pem", "-----BEGIN PRIVATE KEY-----");
        c.properties.set("ssl.ca.location", "/etc/ca.pem");
        let shown = format!("{c:?}");
        for secret in ["hunter2", "k3y-pass", "BEGIN PRIVATE KEY"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        for kept in ["SASL_SSL", "SCRAM-SHA-512", "osago", "/etc/ca.pem"] {
            assert!(shown.contains(kept), "{kept} not in {shown}");
        }
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
