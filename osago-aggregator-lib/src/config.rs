//! The engine's one configuration tree, and its validation.
//!
//! ```text
//! EngineConfig
//! ├── insurer_deadline, state_ttl, publish_attempts, lease, take_over_*
//! ├── poll: PollConfig                       when to poll for quotes
//! ├── requirements: RequirementsConfig       fields insurers are known to require
//! ├── resilience: ResilienceConfig           every insurer's guard
//! │   ├── quota: QuotaConfig (GcraConfig)    outbound calls per second
//! │   ├── breaker: BreakerConfig             circuit breaker
//! │   ├── concurrency: ConcurrencyConfig     calls in flight
//! │   ├── backoff: BackoffConfig             retries
//! │   └── poll_retries
//! ├── resilience_overrides: id -> ResilienceConfig
//! └── sharing: SharedConfig                  across pods (with a ResilienceStore)
//! ```
//!
//! Each part documents its own defaults once, on its fields.
//! [`EngineConfig::validate`] checks the whole tree and returns every
//! problem at once in one [`ConfigError`]; [`crate::EngineBuilder::build`]
//! calls it, so an engine never runs on a value that would panic or be
//! silently clamped later.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::guard::ResilienceConfig;
use crate::resilience::PollConfig;
use crate::shared::SharedConfig;

/// The longest deadline an insurer may be given.
pub const MAX_INSURER_DEADLINE: Duration = Duration::from_secs(600);

/// How the engine treats every insurer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct EngineConfig {
    /// The most an insurer gets, from the request's acceptance (also capped
    /// by the event's `deadline_at`). Default 60 s (the design's), at most
    /// 10 min.
    pub insurer_deadline: Duration,
    /// When to poll for quotes (adaptive by default; see [`PollConfig`]).
    pub poll: PollConfig,
    /// What the engine learns from an insurer's refusals naming missing
    /// fields (see [`RequirementsConfig`]).
    pub requirements: RequirementsConfig,
    /// How long in-flight state and dedup marks live in the state store.
    /// Default 4 h.
    pub state_ttl: Duration,
    /// Attempts to publish one event before giving up on it. Default 5.
    pub publish_attempts: u32,
    /// How long a request stays leased to this pod without renewal; after
    /// that another pod takes it over. Renewed every third of it. Default
    /// 10 s.
    pub lease: Duration,
    /// How often a pod looks for requests whose lease expired. Default 2 s.
    pub take_over_every: Duration,
    /// The most requests taken over at one look. Default 100.
    pub take_over_batch: usize,
    /// Resilience policies of every insurer (quota, breaker, concurrency,
    /// retries).
    pub resilience: ResilienceConfig,
    /// Policies of particular insurers, by insurer id, replacing
    /// `resilience`.
    pub resilience_overrides: BTreeMap<String, ResilienceConfig>,
    /// How the policies are shared between pods, when the engine is given a
    /// [`ResilienceStore`](osago_core::ports::ResilienceStore).
    pub sharing: SharedConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            insurer_deadline: Duration::from_secs(60),
            poll: PollConfig::default(),
            requirements: RequirementsConfig::default(),
            state_ttl: Duration::from_secs(4 * 3600),
            publish_attempts: 5,
            lease: Duration::from_secs(10),
            take_over_every: Duration::from_secs(2),
            take_over_batch: 100,
            resilience: ResilienceConfig::default(),
            resilience_overrides: BTreeMap::new(),
            sharing: SharedConfig::default(),
        }
    }
}

/// Fields an insurer is known to require, learned from its refusals.
///
/// An insurer that refused `learn_after` applications in a row (a 4xx
/// naming a field each of them lacked, `owner.address.apartment`, say; no
/// quote or decline of a request lacking it in between) is not sent
/// another request lacking it: the engine answers for it
/// at once with the same refusal (`rejected: insurer needs more data:
/// owner.address.apartment`) and spends the partner's capacity on
/// applications it can quote. One request lacking the field still goes
/// every `probe_every` (per pod), and an answer (a quote or a decline) to
/// a request lacking it forgets the rule, so a partner that stops
/// requiring it is seen within that time. Requests that have the field are
/// always sent. Counted in `osago_aggregator_known_refusals_total`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RequirementsConfig {
    /// Refusals in a row naming a missing field before requests lacking it
    /// are answered without a call; 0: never (every request is sent).
    /// Default 3.
    pub learn_after: u32,
    /// How often one request lacking a learned field is still sent, to see
    /// whether the insurer still requires it (1 ms..=1 day). The probe's
    /// turn is taken when it is sent: should it fail here (the breaker
    /// open, say), the next comes a `probe_every` later. Default 30 s.
    pub probe_every: Duration,
}

impl Default for RequirementsConfig {
    fn default() -> Self {
        Self {
            learn_after: 3,
            probe_every: Duration::from_secs(30),
        }
    }
}

impl EngineConfig {
    /// The policies of `insurer`: its override, or the common ones.
    pub fn resilience_for(&self, insurer: &osago_core::InsurerId) -> &ResilienceConfig {
        self.resilience_overrides
            .get(insurer.as_str())
            .unwrap_or(&self.resilience)
    }

    /// Checks every field; returns all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        self.check(&mut p);
        p.into_result()
    }

    pub(crate) fn check(&self, p: &mut Problems) {
        p.duration_in(
            "insurer_deadline",
            self.insurer_deadline,
            Duration::from_millis(1),
            MAX_INSURER_DEADLINE,
        );
        check_poll(p, "poll", &self.poll);
        if self.requirements.learn_after > 0 {
            p.duration_in(
                "requirements.probe_every",
                self.requirements.probe_every,
                Duration::from_millis(1),
                Duration::from_secs(86_400),
            );
        }
        p.positive("state_ttl", self.state_ttl);
        p.at_least("publish_attempts", u64::from(self.publish_attempts), 1);
        p.positive("lease", self.lease);
        p.positive("take_over_every", self.take_over_every);
        p.at_least("take_over_batch", self.take_over_batch as u64, 1);
        check_resilience(p, "resilience", &self.resilience);
        for (id, own) in &self.resilience_overrides {
            check_resilience(p, &format!("resilience_overrides.{id}"), own);
        }
        let s = &self.sharing;
        if s.holder.trim().is_empty() {
            p.push("sharing.holder", "must not be empty");
        }
        p.positive("sharing.quota_window", s.quota_window);
        p.positive("sharing.lease_ttl", s.lease_ttl);
        p.positive("sharing.renew_every", s.renew_every);
        p.positive("sharing.contended_every", s.contended_every);
        p.positive("sharing.breaker_sync", s.breaker_sync);
        if s.renew_every >= s.lease_ttl && !s.lease_ttl.is_zero() {
            p.push(
                "sharing.renew_every",
                "must be shorter than sharing.lease_ttl",
            );
        }
    }
}

fn check_poll(p: &mut Problems, at: &str, poll: &PollConfig) {
    if poll.fixed.is_some_and(|d| d.is_zero()) {
        p.push(&format!("{at}.fixed"), "must be positive");
    }
    p.positive(&format!("{at}.initial"), poll.initial);
    p.positive(&format!("{at}.max"), poll.max);
    p.positive(&format!("{at}.min_interval"), poll.min_interval);
    if !(poll.factor.is_finite() && poll.factor >= 1.0) {
        p.push(&format!("{at}.factor"), "must be a number of at least 1");
    }
    p.unit(&format!("{at}.first_percentile"), poll.first_percentile);
    p.at_least(&format!("{at}.history"), poll.history as u64, 1);
    if !(poll.spacing.is_finite() && poll.spacing > 0.0) {
        p.push(&format!("{at}.spacing"), "must be a positive number");
    }
    if !(poll.pressure_weight.is_finite() && poll.pressure_weight >= 0.0) {
        p.push(&format!("{at}.pressure_weight"), "must be 0 or positive");
    }
    if !(poll.priced_price.is_finite() && poll.priced_price >= 1.0) {
        p.push(
            &format!("{at}.priced_price"),
            "must be a number of at least 1",
        );
    }
    if !(0.5..=1.0).contains(&poll.priced_ceiling) {
        p.push(
            &format!("{at}.priced_ceiling"),
            "must be between 0.5 and 1 (a percentile, at least the median)",
        );
    }
    p.unit(&format!("{at}.racer_patience"), poll.racer_patience);
    if !poll.learned_keep_every.is_zero() && poll.learned_ttl <= poll.learned_keep_every {
        p.push(
            &format!("{at}.learned_ttl"),
            "must be longer than learned_keep_every (kept answer times that answers still refresh would expire between keeps)",
        );
    }
    if !(poll.racer_price.is_finite() && poll.racer_price >= 1.0) {
        p.push(
            &format!("{at}.racer_price"),
            "must be a number of at least 1",
        );
    }
}

fn check_resilience(p: &mut Problems, at: &str, r: &ResilienceConfig) {
    let rate = r.quota.rate.rate_per_sec;
    if !(rate.is_finite() && rate >= 0.0) {
        p.push(
            &format!("{at}.quota.rate.rate_per_sec"),
            "must be 0 (no limit) or a positive number",
        );
    }
    p.at_least(
        &format!("{at}.quota.rate.burst"),
        u64::from(r.quota.rate.burst),
        1,
    );
    p.at_least(
        &format!("{at}.concurrency.max_in_flight"),
        r.concurrency.max_in_flight as u64,
        1,
    );
    let b = &r.breaker;
    p.at_least(&format!("{at}.breaker.window"), u64::from(b.window), 1);
    p.at_least(
        &format!("{at}.breaker.min_calls"),
        u64::from(b.min_calls),
        1,
    );
    p.rate(&format!("{at}.breaker.failure_rate"), b.failure_rate);
    p.rate(&format!("{at}.breaker.slow_rate"), b.slow_rate);
    p.positive(&format!("{at}.breaker.slow_call"), b.slow_call);
    p.positive(&format!("{at}.breaker.open_for"), b.open_for);
    p.at_least(
        &format!("{at}.breaker.half_open_probes"),
        u64::from(b.half_open_probes),
        1,
    );
    p.positive(&format!("{at}.backoff.base"), r.backoff.base);
    if r.backoff.cap < r.backoff.base {
        p.push(
            &format!("{at}.backoff.cap"),
            "must be at least backoff.base",
        );
    }
    p.at_least(
        &format!("{at}.backoff.max_attempts"),
        u64::from(r.backoff.max_attempts),
        1,
    );
}

/// One bad setting: where it is in the tree and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The setting's path, like `resilience.concurrency.max_in_flight`.
    pub field: String,
    /// What is wrong, like `must be at least 1`.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem of a configuration, found at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {}", join(.problems))]
pub struct ConfigError {
    /// The problems, in the order of the tree.
    pub problems: Vec<ConfigProblem>,
}

fn join(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ConfigError {
    /// Whether a problem names `field`.
    pub fn names(&self, field: &str) -> bool {
        self.problems.iter().any(|p| p.field == field)
    }
}

/// Collects problems while a tree is checked.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<ConfigProblem>);

impl Problems {
    pub(crate) fn push(&mut self, field: &str, message: &str) {
        self.0.push(ConfigProblem {
            field: field.to_owned(),
            message: message.to_owned(),
        });
    }

    pub(crate) fn positive(&mut self, field: &str, value: Duration) {
        if value.is_zero() {
            self.push(field, "must be positive");
        }
    }

    fn duration_in(&mut self, field: &str, value: Duration, min: Duration, max: Duration) {
        if value < min || value > max {
            self.push(
                field,
                &format!("must be between {} and {}", humanize(min), humanize(max)),
            );
        }
    }

    pub(crate) fn at_least(&mut self, field: &str, value: u64, min: u64) {
        if value < min {
            self.push(field, &format!("must be at least {min}"));
        }
    }

    fn unit(&mut self, field: &str, value: f64) {
        if !(0.0..=1.0).contains(&value) {
            self.push(field, "must be between 0 and 1");
        }
    }

    /// A rate a breaker trips at: 0 would trip on no failure at all.
    fn rate(&mut self, field: &str, value: f64) {
        if !(value > 0.0 && value <= 1.0) {
            self.push(field, "must be above 0 and at most 1");
        }
    }

    pub(crate) fn into_result(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: self.0 })
        }
    }
}

fn humanize(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else if d.as_secs().is_multiple_of(60) {
        format!("{}m", d.as_secs() / 60)
    } else {
        format!("{}s", d.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        EngineConfig::default().validate().unwrap();
    }

    #[test]
    fn learned_requirements_are_probed_at_a_positive_interval() {
        let mut config = EngineConfig::default();
        config.requirements.probe_every = Duration::ZERO;
        let err = config.validate().unwrap_err();
        assert!(err.names("requirements.probe_every"), "{err}");
        // Nothing learned: no probes either.
        config.requirements.learn_after = 0;
        config.validate().unwrap();
    }

    #[test]
    fn kept_answer_times_must_outlive_the_interval_they_are_kept_at() {
        let mut config = EngineConfig::default();
        config.poll.learned_ttl = config.poll.learned_keep_every;
        let err = config.validate().unwrap_err();
        assert!(err.names("poll.learned_ttl"), "{err}");
        // Not kept at all: any TTL will do.
        config.poll.learned_keep_every = Duration::ZERO;
        config.validate().unwrap();
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let mut config = EngineConfig {
            lease: Duration::ZERO,
            insurer_deadline: Duration::from_secs(3600),
            ..EngineConfig::default()
        };
        config.resilience.concurrency.max_in_flight = 0;
        let err = config.validate().unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        assert!(err.names("lease"));
        assert!(err.names("resilience.concurrency.max_in_flight"));
        assert!(err.names("insurer_deadline"));
        let text = err.to_string();
        assert!(
            text.contains("insurer_deadline: must be between 1ms and 10m"),
            "{text}"
        );
    }
}
