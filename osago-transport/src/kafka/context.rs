//! librdkafka's log lines and global errors, forwarded to `tracing`.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

/// Forwards librdkafka's logs to `tracing` (target `librdkafka`). Its lines
/// name brokers, topics and partitions, never message contents.
#[derive(Debug, Clone, Default)]
pub(crate) struct TracingContext;

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
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
