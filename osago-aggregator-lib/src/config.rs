//! Engine settings.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::guard::PolicyConfig;
use crate::policy::PollConfig;

/// How the engine treats every insurer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// The most an insurer gets, from the request's acceptance (also capped
    /// by the event's `deadline_at`). 60 s by design.
    pub insurer_deadline: Duration,
    /// When to poll for quotes (adaptive by default; see
    /// [`PollConfig`]).
    pub poll: PollConfig,
    /// How long in-flight state and dedup marks live in the state store.
    pub state_ttl: Duration,
    /// Attempts to publish one event before giving up on it.
    pub publish_attempts: u32,
    /// How long a request stays leased to this pod without renewal; after
    /// that another pod takes it over. Renewed every third of it.
    pub lease: Duration,
    /// How often a pod looks for requests whose lease expired.
    pub take_over_every: Duration,
    /// The most requests taken over at one look.
    pub take_over_batch: usize,
    /// Resilience policies of every insurer (quota, breaker, concurrency,
    /// retries).
    pub policy: PolicyConfig,
    /// Policies of particular insurers, by insurer id, replacing `policy`.
    pub policy_overrides: BTreeMap<String, PolicyConfig>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            insurer_deadline: Duration::from_secs(60),
            poll: PollConfig::default(),
            state_ttl: Duration::from_secs(4 * 3600),
            publish_attempts: 5,
            lease: Duration::from_secs(10),
            take_over_every: Duration::from_secs(2),
            take_over_batch: 100,
            policy: PolicyConfig::default(),
            policy_overrides: BTreeMap::new(),
        }
    }
}

impl EngineConfig {
    /// The policies of `insurer`: its override, or the common ones.
    pub fn policy_for(&self, insurer: &osago_core::InsurerId) -> &PolicyConfig {
        self.policy_overrides
            .get(insurer.as_str())
            .unwrap_or(&self.policy)
    }
}
