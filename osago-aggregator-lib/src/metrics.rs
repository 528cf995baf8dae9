//! Prometheus metrics of the engine (prometheus-client). Labels carry
//! insurer ids and outcome kinds only, never personal data.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `insurer` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InsurerLabel {
    /// Insurer id.
    pub insurer: String,
}

/// `insurer` and `outcome` labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Insurer id.
    pub insurer: String,
    /// quoted, declined, or an error kind.
    pub outcome: String,
}

fn answer_histogram() -> Histogram {
    // 50 ms .. ~100 s
    Histogram::new(exponential_buckets(0.05, 2.0, 12))
}

/// The engine's metrics.
#[derive(Debug, Clone)]
pub struct EngineMetrics {
    /// Fan-outs started.
    pub fanouts: Counter,
    /// Request events seen again and skipped.
    pub duplicates: Counter,
    /// Final outcomes per insurer.
    pub outcomes: Family<OutcomeLabels, Counter>,
    /// Seconds from fan-out start to the insurer's final outcome.
    pub answer_seconds: Family<InsurerLabel, Histogram>,
    /// Polls sent per insurer.
    pub polls: Family<InsurerLabel, Counter>,
    /// Applications in flight per insurer.
    pub in_flight: Family<InsurerLabel, Gauge>,
    /// Events that could not be published after every attempt.
    pub publish_failures: Counter,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        Self {
            fanouts: Counter::default(),
            duplicates: Counter::default(),
            outcomes: Family::default(),
            answer_seconds: Family::new_with_constructor(answer_histogram),
            polls: Family::default(),
            in_flight: Family::default(),
            publish_failures: Counter::default(),
        }
    }
}

impl EngineMetrics {
    /// Metrics registered in `registry` under `osago_aggregator_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("osago_aggregator");
        r.register("fanouts", "Fan-outs started", m.fanouts.clone());
        r.register(
            "duplicate_requests",
            "Request events seen again and skipped",
            m.duplicates.clone(),
        );
        r.register("outcomes", "Final outcomes per insurer", m.outcomes.clone());
        r.register(
            "answer_seconds",
            "Seconds from fan-out start to the insurer's final outcome",
            m.answer_seconds.clone(),
        );
        r.register("polls", "Quote polls sent per insurer", m.polls.clone());
        r.register(
            "in_flight",
            "Applications in flight per insurer",
            m.in_flight.clone(),
        );
        r.register(
            "publish_failures",
            "Events not published after every attempt",
            m.publish_failures.clone(),
        );
        m
    }
}
