//! Settings every service shares, and how problems are reported.

use std::fmt;
use std::time::Duration;

use osago_aggregator_lib::ConfigError;
use osago_transport::resolve::{self, BusUrl};

/// The exit status for bad configuration (EX_USAGE).
pub const EXIT_BAD_CONFIG: u8 = 64;

/// Configuration problems, one line each, collected before anything binds
/// or connects.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Problems(Vec<String>);

impl Problems {
    /// Adds a problem.
    pub fn push(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    /// Adds `problem` when `bad`.
    pub fn check(&mut self, bad: bool, problem: impl Into<String>) {
        if bad {
            self.push(problem);
        }
    }

    /// Keeps the value of `result`, or records its error after `flag`.
    pub fn take<T, E: fmt::Display>(&mut self, flag: &str, result: Result<T, E>) -> Option<T> {
        result
            .map_err(|err| self.push(format!("{flag}: {err}")))
            .ok()
    }

    /// Adds the problems of a library configuration, each named by the flag
    /// that sets it (`name(field)`), or by its field when no flag does.
    pub fn config(&mut self, err: ConfigError, name: impl Fn(&str) -> Option<String>) {
        for problem in err.problems {
            let at = name(&problem.field).unwrap_or(problem.field);
            self.push(format!("{at}: {}", problem.message));
        }
    }

    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems.
    pub fn lines(&self) -> &[String] {
        &self.0
    }

    /// `Ok(value)` when nothing is wrong.
    pub fn into_result<T>(self, value: impl FnOnce() -> T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(self)
        }
    }
}

/// Parses a duration like `60s`, `250ms` or `1m` (for flags).
pub fn duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text)
}

/// Flags every service has.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// A TOML file of settings (keys are the flags without dashes; a
    /// `[core-app]` or `[aggregator]` table for one binary). Flags and the
    /// environment win over it.
    #[arg(long, env = "OSAGO_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Print the effective configuration (each value with where it came
    /// from, secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Log lines as `text` or `json` (one object per line, with the
    /// request id, route and insurer of the span it was written in).
    #[arg(long, env = "OSAGO_LOG_FORMAT", value_enum, default_value_t = crate::launch::LogFormat::Text)]
    pub log_format: crate::launch::LogFormat,
    /// Export spans over OTLP/HTTP to this collector (`http://host:4318`;
    /// spans go to `{url}/v1/traces`), joined to each request's W3C trace.
    /// Default: no export (trace ids are still in the logs and headers).
    #[arg(long, env = "OSAGO_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The event bus: `memory://` or `kafka://host:port[,host:port]`
    #[arg(long, env = "OSAGO_BUS_URL", default_value = "memory://")]
    pub bus: String,
    /// This pod's stable name (for example the StatefulSet pod name): its
    /// static membership in the consumer groups (`group.instance.id`:
    /// restarted under the same name, it takes back its partitions at once)
    /// and its name in shared slot leases (it takes its own back).
    #[arg(long, env = "OSAGO_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// How long the broker may hold a fetch that has no new records
    /// (`fetch.wait.max.ms`, 0..=1s). Kafka answers as soon as a record
    /// arrives; tansu 0.6.0 holds every fetch this long, so on tansu a
    /// shorter wait means lower latency for more idle fetches.
    #[arg(long, env = "OSAGO_KAFKA_FETCH_WAIT", default_value = "10ms", value_parser = duration)]
    pub kafka_fetch_wait: Duration,
    /// How long the producer keeps trying to deliver one message before
    /// the publish fails (`message.timeout.ms`); core-app's relay then
    /// retries it until its request's deadline.
    #[arg(long, env = "OSAGO_KAFKA_DELIVERY_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub kafka_delivery_timeout: Duration,
    /// What to do about the topics at start: `create` the missing ones
    /// (existing ones are left alone, differences logged), `verify` (create
    /// nothing; any difference fails the start, one line each), `alter`
    /// (create, and set an existing topic's retention and cleanup policy)
    /// or `off` (no admin call at all).
    #[arg(long, env = "OSAGO_KAFKA_TOPICS", default_value = "create")]
    pub kafka_topics: String,
    /// Partitions of the topics: `N` for all, `requests=N`, `quotes=N`,
    /// `errors=N` for one (repeat, or comma-separate in the env var).
    #[arg(
        long,
        env = "OSAGO_KAFKA_PARTITIONS",
        value_delimiter = ',',
        default_value = "12"
    )]
    pub kafka_partitions: Vec<String>,
    /// Replication factor of the topics: `N` for all, `topic=N` for one;
    /// -1: the broker's default.replication.factor (not verified).
    #[arg(
        long,
        env = "OSAGO_KAFKA_REPLICATION",
        value_delimiter = ',',
        default_value = "1",
        allow_hyphen_values = true
    )]
    pub kafka_replication: Vec<String>,
    /// Retention (`retention.ms`) of the topics: a duration for all,
    /// `topic=duration` for one. Default: requests as core-app's
    /// `--retention` (3 days; it carries personal data and may not keep it
    /// longer), quotes 3 days, errors 7 days.
    #[arg(long, env = "OSAGO_KAFKA_RETENTION", value_delimiter = ',')]
    pub kafka_retention: Vec<String>,
    /// A librdkafka property for every client, `key=value`, as `kcat -X`
    /// takes (security.protocol, sasl.mechanisms, sasl.username,
    /// sasl.password, ssl.ca.location, ...); repeat, or comma-separate in
    /// the env var. Secret values are never printed.
    #[arg(
        long = "kafka-property",
        env = "OSAGO_KAFKA_PROPERTIES",
        value_delimiter = ','
    )]
    pub kafka_properties: Vec<String>,
    /// A file of librdkafka properties, `key=value` per line (`#`
    /// comments), read at start: the place for secrets such as
    /// sasl.password (a mounted Kubernetes secret). `--kafka-property`
    /// wins over it.
    #[arg(long, env = "OSAGO_KAFKA_PROPERTIES_FILE")]
    pub kafka_properties_file: Option<std::path::PathBuf>,
    /// With a `rediss://` Valkey URL: a PEM file of the CA to trust instead
    /// of the system's roots.
    #[arg(long, env = "OSAGO_VALKEY_CA_FILE")]
    pub valkey_ca_file: Option<std::path::PathBuf>,
    /// With `rediss://`: a PEM client certificate (mutual TLS); needs
    /// `--valkey-key-file`.
    #[arg(long, env = "OSAGO_VALKEY_CERT_FILE")]
    pub valkey_cert_file: Option<std::path::PathBuf>,
    /// The client certificate's PEM private key.
    #[arg(long, env = "OSAGO_VALKEY_KEY_FILE")]
    pub valkey_key_file: Option<std::path::PathBuf>,
    /// How long to keep retrying the dependencies at start-up.
    #[arg(long, env = "OSAGO_CONNECT_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// Any field of a library configuration, `root.path=value`
    /// (`engine.resilience.breaker.failure_rate=0.3`,
    /// `kafka.session_timeout=30s`); roots: core-app `core`, `kafka`,
    /// `valkey`; the aggregator `engine`, `intake`, `http`, `kafka`,
    /// `valkey`. Wins over the dedicated flags. Repeat, or separate with
    /// newlines in the env var.
    #[arg(long = "set", env = "OSAGO_SET", value_delimiter = '\n')]
    pub sets: Vec<String>,
}

/// The topics, in the order of [`KafkaSettings`]' arrays.
pub const TOPICS: [&str; 3] = ["requests", "quotes", "errors"];

/// The Kafka flags, checked (plain data: the client is built from it by
/// `ports::bus`).
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `create`, `verify`, `alter` or `off`.
    pub topic_mode: String,
    /// Partitions of requests, quotes, errors.
    pub partitions: [i32; 3],
    /// Replication factor of requests, quotes, errors.
    pub replication: [i16; 3],
    /// Retention of requests, quotes, errors.
    pub retention: [Duration; 3],
    /// librdkafka properties (the file's, then the flags').
    pub properties: Vec<(String, String)>,
    /// The `--set` entries (those under `kafka.` apply to its config).
    pub sets: Vec<String>,
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let shown = if osago_transport::resolve::is_secret_property(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaSettings")
            .field("topic_mode", &self.topic_mode)
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("retention", &self.retention)
            .field("properties", &properties)
            .finish()
    }
}

/// `N` for every topic or `topic=N` for one, later specs winning.
fn per_topic<T: Copy>(
    flag: &str,
    specs: &[String],
    mut values: [T; 3],
    parse: impl Fn(&str) -> Option<T>,
    p: &mut Problems,
) -> [T; 3] {
    for spec in specs {
        let (topic, value) = match spec.split_once('=') {
            Some((topic, value)) => (Some(topic.trim()), value.trim()),
            None => (None, spec.trim()),
        };
        let Some(value) = parse(value) else {
            p.push(format!("{flag} {spec:?}: invalid value"));
            continue;
        };
        match topic {
            None => values = [value; 3],
            Some(topic) => match TOPICS.iter().position(|t| *t == topic) {
                Some(i) => values[i] = value,
                None => p.push(format!(
                    "{flag} {topic:?}: no such topic (requests, quotes, errors)"
                )),
            },
        }
    }
    values
}

/// `key=value` lines; a problem names the line, never its value.
fn properties(
    source: &str,
    lines: impl Iterator<Item = String>,
    p: &mut Problems,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                out.push((key.trim().to_owned(), value.trim().to_owned()))
            }
            _ => p.push(format!("{source} (entry {}): expected key=value", n + 1)),
        }
    }
    out
}

impl CommonArgs {
    /// Checks the Kafka flags. `personal_data_retention`: core-app's
    /// `--retention`, the request topic's default retention and its upper
    /// bound (the topic carries personal data).
    pub fn kafka(
        &self,
        personal_data_retention: Option<Duration>,
        p: &mut Problems,
    ) -> KafkaSettings {
        p.check(
            !matches!(
                self.kafka_topics.as_str(),
                "create" | "verify" | "alter" | "off"
            ),
            format!(
                "--kafka-topics {:?}: expected create, verify, alter or off",
                self.kafka_topics
            ),
        );
        let partitions = per_topic(
            "--kafka-partitions",
            &self.kafka_partitions,
            [12; 3],
            |v| v.parse::<i32>().ok().filter(|n| *n > 0),
            p,
        );
        let replication = per_topic(
            "--kafka-replication",
            &self.kafka_replication,
            [1; 3],
            |v| v.parse::<i16>().ok().filter(|n| *n > 0 || *n == -1),
            p,
        );
        let day = Duration::from_secs(24 * 3600);
        let defaults = [personal_data_retention.unwrap_or(3 * day), 3 * day, 7 * day];
        let retention = per_topic(
            "--kafka-retention",
            &self.kafka_retention,
            defaults,
            |v| duration(v).ok().filter(|d| *d >= Duration::from_secs(60)),
            p,
        );
        if let Some(limit) = personal_data_retention {
            p.check(
                retention[0] > limit,
                format!(
                    "--kafka-retention requests: {} exceeds --retention {} (the request topic carries personal data)",
                    humantime::format_duration(retention[0]),
                    humantime::format_duration(limit)
                ),
            );
        }
        let mut props = Vec::new();
        if let Some(path) = &self.kafka_properties_file {
            match std::fs::read_to_string(path) {
                Ok(text) => props.extend(properties(
                    &format!("--kafka-properties-file {}", path.display()),
                    text.lines().map(str::to_owned),
                    p,
                )),
                Err(err) => p.push(format!("--kafka-properties-file {}: {err}", path.display())),
            }
        }
        props.extend(properties(
            "--kafka-property",
            self.kafka_properties.iter().cloned(),
            p,
        ));
        #[cfg(feature = "kafka")]
        {
            crate::config::apply_sets(
                &osago_transport::kafka::KafkaConfig::default(),
                "kafka",
                &self.sets,
                p,
            );
        }
        #[cfg(feature = "valkey")]
        {
            crate::config::apply_sets(
                &osago_transport::valkey::ValkeyConfig::default(),
                "valkey",
                &self.sets,
                p,
            );
        }
        KafkaSettings {
            topic_mode: self.kafka_topics.clone(),
            partitions,
            replication,
            retention,
            properties: props,
            sets: self.sets.clone(),
        }
    }

    /// Checks the shared flags; the bus, when its URL is valid.
    pub fn check(&self, p: &mut Problems) -> Option<BusUrl> {
        if let Some(endpoint) = &self.otlp_endpoint {
            let url = url::Url::parse(endpoint).ok();
            p.check(
                !url.is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some()),
                format!("--otlp-endpoint {endpoint:?}: expected an http(s) URL such as http://collector:4318"),
            );
            p.check(
                !cfg!(feature = "otlp"),
                "--otlp-endpoint: this build has no OTLP exporter (osago-service feature otlp)",
            );
        }
        p.check(
            self.instance_id
                .as_deref()
                .is_some_and(|id| id.trim().is_empty()),
            "--instance-id must not be empty",
        );
        p.check(
            self.kafka_fetch_wait > Duration::from_secs(1),
            "--kafka-fetch-wait must be at most 1s",
        );
        p.check(
            self.kafka_delivery_timeout < Duration::from_secs(1),
            "--kafka-delivery-timeout must be at least 1s",
        );
        p.check(
            self.valkey_cert_file.is_some() != self.valkey_key_file.is_some(),
            "--valkey-cert-file and --valkey-key-file go together",
        );
        for (flag, path) in [
            ("--valkey-ca-file", &self.valkey_ca_file),
            ("--valkey-cert-file", &self.valkey_cert_file),
            ("--valkey-key-file", &self.valkey_key_file),
        ] {
            if let Some(path) = path {
                p.check(
                    !path.is_file(),
                    format!("{flag} {}: no such file", path.display()),
                );
            }
        }
        p.check(
            self.connect_timeout.is_zero(),
            "--connect-timeout must be positive",
        );
        let bus = p.take("--bus", resolve::bus(&self.bus))?;
        crate::ports::check_compiled(&bus, p);
        Some(bus)
    }
}
