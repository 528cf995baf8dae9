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

/// `insurer` and `to` (breaker state) labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// Insurer id.
    pub insurer: String,
    /// The state entered.
    pub to: String,
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
    /// Retries of calls per insurer (after a retryable failure).
    pub retries: Family<InsurerLabel, Counter>,
    /// Circuit breaker state per insurer: 0 closed, 1 half-open, 2 open.
    pub breaker_state: Family<InsurerLabel, Gauge>,
    /// Circuit breaker transitions per insurer and state entered.
    pub breaker_transitions: Family<TransitionLabels, Counter>,
    /// Calls that waited in the burst buffer for the outbound quota.
    pub quota_waits: Family<InsurerLabel, Counter>,
    /// Work refused by the outbound quota (no slot before the deadline).
    pub quota_rejections: Family<InsurerLabel, Counter>,
    /// Calls in flight per insurer (concurrency slots in use).
    pub slots_in_use: Family<InsurerLabel, Gauge>,
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
            retries: Family::default(),
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            quota_waits: Family::default(),
            quota_rejections: Family::default(),
            slots_in_use: Family::default(),
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
        r.register("retries", "Retries of insurer calls", m.retries.clone());
        r.register(
            "breaker_state",
            "Circuit breaker state per insurer (0 closed, 1 half-open, 2 open)",
            m.breaker_state.clone(),
        );
        r.register(
            "breaker_transitions",
            "Circuit breaker transitions per insurer",
            m.breaker_transitions.clone(),
        );
        r.register(
            "quota_waits",
            "Calls that waited for the outbound quota",
            m.quota_waits.clone(),
        );
        r.register(
            "quota_rejections",
            "Work refused by the outbound quota",
            m.quota_rejections.clone(),
        );
        r.register(
            "slots_in_use",
            "Insurer calls in flight",
            m.slots_in_use.clone(),
        );
        m
    }
}
