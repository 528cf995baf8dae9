//! librdkafka's log lines and global errors, forwarded to `tracing`.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

/// Forwards librdkafka's logs to `tracing` (target `librdkafka`). Its lines
/// name brokers, topics and partitions, never message contents. Clones
/// share the last connection failure and client error, so a failed start
/// can say why the brokers did not answer (a TLS listener spoken to in
/// plaintext, a refused connection, failed authentication) rather than
/// only that a call timed out.
#[derive(Debug, Clone, Default)]
pub(crate) struct TracingContext {
    last: std::sync::Arc<std::sync::Mutex<Last>>,
}

#[derive(Debug, Default)]
struct Last {
    /// librdkafka's last connection failure (facility `FAIL`), such as
    /// "Disconnected: connection reset by peer (after 8ms in state
    /// APIVERSION_QUERY)".
    failure: Option<String>,
    /// Its last client error, such as "1/1 brokers are down".
    error: Option<String>,
}

impl TracingContext {
    /// What the client last saw go wrong, for an error message: the last
    /// connection failure, else the last client error.
    pub(crate) fn diagnosis(&self) -> Option<String> {
        let last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (&last.failure, &last.error) {
            (Some(failure), _) => Some(format!("the client's last connection failure: {failure}")),
            (None, Some(error)) => Some(format!("the client's last error: {error}")),
            (None, None) => None,
        }
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Last> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if fac == "FAIL" {
            self.last().failure = Some(log_message.to_owned());
        }
        forward_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.last().error = Some(reason.to_owned());
        forward_error(error, reason);
    }
}

/// A group-less consumer (the live feed) needs no rebalance handling.
impl ConsumerContext for TracingContext {}

/// Logs one librdkafka log line.
pub(crate) fn forward_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", facility = fac, message)
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility = fac, message),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", facility = fac, message)
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility = fac, message),
    }
}

/// Logs one librdkafka global error (most are transient: a broker down, a
/// connection reset; librdkafka retries on its own).
pub(crate) fn forward_error(error: KafkaError, reason: &str) {
    tracing::warn!(target: "librdkafka", error = %error, reason, "kafka client error");
}
