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

/// `insurer` and `verdict` labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// Insurer id.
    pub insurer: String,
    /// `below_minimum` or `above_maximum`.
    pub verdict: String,
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
    /// Requests taken over from a pod whose lease expired.
    pub takeovers: Counter,
    /// Request events seen again and skipped.
    pub duplicates: Counter,
    /// Final outcomes per insurer.
    pub outcomes: Family<OutcomeLabels, Counter>,
    /// Seconds from fan-out start to the insurer's final outcome.
    pub answer_seconds: Family<InsurerLabel, Histogram>,
    /// Polls sent per insurer.
    pub polls: Family<InsurerLabel, Counter>,
    /// Seconds each call that reached the insurer took (its slot held),
    /// per insurer: with the cap, the insurer's capacity (cap / mean call
    /// time calls per second).
    pub call_seconds: Family<InsurerLabel, Histogram>,
    /// Applications in flight per insurer.
    pub in_flight: Family<InsurerLabel, Gauge>,
    /// Events that could not be published after every attempt.
    pub publish_failures: Counter,
    /// Seconds from an event's creation (its `occurred_at`) to the sink's
    /// acknowledgement (the broker's ack, for Kafka): the first stage of the
    /// pipeline to the browser.
    pub publish_seconds: Histogram,
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
    /// Insurer calls by kind (`create`, `poll`) and outcome (`ok`, an error
    /// kind, refused here: `circuit_open`, `rate_limited`, `no_slot`, or
    /// never returned: `abandoned` when its task ended mid-call, at the
    /// request's deadline or on shutdown, `panicked` when its client
    /// panicked).
    pub calls: Family<CallLabels, Counter>,
    /// This pod's share of the insurer's concurrency cap (shared policies).
    pub slots_granted: Family<InsurerLabel, Gauge>,
    /// Round trips to the shared policy store, by operation and result.
    pub policy_store_calls: Family<StoreCallLabels, Counter>,
    /// Seconds from the insurer having the quote ready (its `ready_at`) to
    /// the poll that saw it.
    pub detection_lag_seconds: Family<InsurerLabel, Histogram>,
    /// Polls made per final answer.
    pub polls_per_answer: Family<InsurerLabel, Histogram>,
    /// Quotes whose premium is outside the request's lawful price range,
    /// per insurer and side.
    pub quotes_outside_range: Family<VerdictLabels, Counter>,
    /// Insurer free texts (decline reasons, notes) withheld because they
    /// looked like personal data, per insurer.
    pub insurer_texts_withheld: Family<InsurerLabel, Counter>,
    /// Panics while asking an insurer (mostly its client's; the insurer's
    /// answer became an error), per insurer.
    pub panics: Family<InsurerLabel, Counter>,
    /// Applications not sent, per insurer: the request lacked a field the
    /// insurer is known to refuse requests without (learned from its
    /// refusals; `EngineConfig::requirements`); its refusal was given at
    /// once.
    pub known_refusals: Family<InsurerLabel, Counter>,
}

/// Labels of [`EngineMetrics::calls`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CallLabels {
    /// The insurer.
    pub insurer: String,
    /// `create` or `poll`.
    pub call: String,
    /// How it ended.
    pub outcome: String,
}

/// Labels of [`EngineMetrics::policy_store_calls`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StoreCallLabels {
    /// `take_quota`, `claim_slots`, `put_breaker`, `get_breaker`.
    pub op: String,
    /// `ok` or `error`.
    pub result: String,
}

fn lag_histogram() -> Histogram {
    Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0])
}

fn call_histogram() -> Histogram {
    // 5 ms .. ~10 s
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

/// 0.25 ms .. ~4 s: the pipeline's stages, to the millisecond.
pub(crate) fn stage_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

fn polls_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 60.0])
}

impl Default for EngineMetrics {
    fn default() -> Self {
        Self {
            fanouts: Counter::default(),
            duplicates: Counter::default(),
            takeovers: Counter::default(),
            outcomes: Family::default(),
            answer_seconds: Family::new_with_constructor(answer_histogram),
            polls: Family::default(),
            call_seconds: Family::new_with_constructor(call_histogram),
            in_flight: Family::default(),
            publish_failures: Counter::default(),
            publish_seconds: stage_histogram(),
            retries: Family::default(),
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            quota_waits: Family::default(),
            quota_rejections: Family::default(),
            slots_in_use: Family::default(),
            calls: Family::default(),
            slots_granted: Family::default(),
            policy_store_calls: Family::default(),
            detection_lag_seconds: Family::new_with_constructor(lag_histogram),
            polls_per_answer: Family::new_with_constructor(polls_histogram),
            quotes_outside_range: Family::default(),
            insurer_texts_withheld: Family::default(),
            panics: Family::default(),
            known_refusals: Family::default(),
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
            "takeovers",
            "Requests resumed after their pod's lease expired",
            m.takeovers.clone(),
        );
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
            "insurer_texts_withheld",
            "Insurer free texts (decline reasons, notes) withheld because they looked like personal data, per insurer",
            m.insurer_texts_withheld.clone(),
        );
        r.register(
            "insurer_client_panics",
            "Panics while asking an insurer, mostly in its client (the insurer's answer became an unavailable error), per insurer",
            m.panics.clone(),
        );
        r.register(
            "known_refusals",
            "Applications not sent because the request lacked a field the insurer is known to refuse requests without (its refusal given at once), per insurer",
            m.known_refusals.clone(),
        );
        r.register(
            "quotes_outside_range",
            "Quotes whose premium is outside the request's lawful price range (below its minimum or above its maximum), per insurer",
            m.quotes_outside_range.clone(),
        );
        r.register(
            "call_seconds",
            "Seconds per insurer call that reached the insurer (slot held)",
            m.call_seconds.clone(),
        );
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
        r.register(
            "publish_seconds",
            "Seconds from an event's creation to the sink's acknowledgement",
            m.publish_seconds.clone(),
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
        r.register(
            "calls",
            "Insurer calls by kind and outcome",
            m.calls.clone(),
        );
        r.register(
            "slots_granted",
            "This pod's share of the insurer's concurrency cap",
            m.slots_granted.clone(),
        );
        r.register(
            "policy_store_calls",
            "Round trips to the shared policy store",
            m.policy_store_calls.clone(),
        );
        r.register(
            "detection_lag_seconds",
            "Seconds from the quote being ready at the insurer to the poll that saw it",
            m.detection_lag_seconds.clone(),
        );
        r.register(
            "polls_per_answer",
            "Polls per final answer",
            m.polls_per_answer.clone(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_metric_is_exposed_per_insurer() {
        let mut registry = Registry::default();
        let metrics = EngineMetrics::register(&mut registry);
        let insurer = InsurerLabel {
            insurer: "alfa".into(),
        };
        metrics
            .calls
            .get_or_create(&CallLabels {
                insurer: "alfa".into(),
                call: "poll".into(),
                outcome: "ok".into(),
            })
            .inc();
        metrics.retries.get_or_create(&insurer).inc();
        metrics.breaker_state.get_or_create(&insurer).set(2);
        metrics.quota_waits.get_or_create(&insurer).inc();
        metrics.quota_rejections.get_or_create(&insurer).inc();
        metrics.slots_in_use.get_or_create(&insurer).set(3);
        metrics.slots_granted.get_or_create(&insurer).set(10);
        metrics
            .detection_lag_seconds
            .get_or_create(&insurer)
            .observe(0.2);
        metrics
            .polls_per_answer
            .get_or_create(&insurer)
            .observe(4.0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "osago_aggregator_calls_total{insurer=\"alfa\",call=\"poll\",outcome=\"ok\"} 1",
            "osago_aggregator_retries_total{insurer=\"alfa\"} 1",
            "osago_aggregator_breaker_state{insurer=\"alfa\"} 2",
            "osago_aggregator_quota_waits_total{insurer=\"alfa\"} 1",
            "osago_aggregator_quota_rejections_total{insurer=\"alfa\"} 1",
            "osago_aggregator_slots_in_use{insurer=\"alfa\"} 3",
            "osago_aggregator_slots_granted{insurer=\"alfa\"} 10",
            "osago_aggregator_detection_lag_seconds_count{insurer=\"alfa\"} 1",
            "osago_aggregator_polls_per_answer_count{insurer=\"alfa\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
