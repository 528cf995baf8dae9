//! Engine settings.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::guard::PolicyConfig;

/// How the engine treats every insurer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// The most an insurer gets, from the request's acceptance (also capped
    /// by the event's `deadline_at`). 60 s by design.
    pub insurer_deadline: Duration,
    /// Wait between polls when the insurer gives no Retry-After.
    pub poll_interval: Duration,
    /// How long in-flight state and dedup marks live in the state store.
    pub state_ttl: Duration,
    /// Attempts to publish one event before giving up on it.
    pub publish_attempts: u32,
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
            poll_interval: Duration::from_secs(1),
            state_ttl: Duration::from_secs(4 * 3600),
            publish_attempts: 5,
            policy: PolicyConfig::default(),
            policy_overrides: BTreeMap::new(),
        }
    }
}
