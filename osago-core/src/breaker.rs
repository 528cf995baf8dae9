//! The circuit-breaker state that pods share through a
//! [`ResilienceStore`](crate::ports::ResilienceStore): plain data, with
//! wall-clock times in unix milliseconds (instants do not cross processes).
//! The breaker itself lives in `osago-aggregator-lib`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused.
    Open,
    /// A few probe calls go through.
    HalfOpen,
}

impl BreakerState {
    /// The snake_case name (for metric labels and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// A gauge value: 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The breaker's state in a compact, serialisable form, with wall-clock
/// times in unix milliseconds (instants do not cross processes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerSnapshot {
    /// The state.
    pub state: BreakerState,
    /// When it opened, if open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at_unix_ms: Option<u64>,
    /// Until when it stays open, if open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_until_unix_ms: Option<u64>,
}
