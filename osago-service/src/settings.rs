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
    /// The event bus: memory:// or kafka://host:port[,host:port]
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
    /// How long to keep retrying the dependencies at start-up.
    #[arg(long, env = "OSAGO_CONNECT_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub connect_timeout: Duration,
}

impl CommonArgs {
    /// Checks the shared flags; the bus, when its URL is valid.
    pub fn check(&self, p: &mut Problems) -> Option<BusUrl> {
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
            self.connect_timeout.is_zero(),
            "--connect-timeout must be positive",
        );
        let bus = p.take("--bus", resolve::bus(&self.bus))?;
        crate::ports::check_compiled(&bus, p);
        Some(bus)
    }
}
