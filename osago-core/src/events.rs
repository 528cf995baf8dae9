//! The v1 events of the three streams (JSON). Documented with examples in
//! `docs/events.md`.
//!
//! - request events: a new quote request (key: request id);
//! - quote events: one insurer's state for a request (key: request:insurer);
//! - error events: one insurer's integration failure (same key).
//!
//! Every event carries `event_id`, `request_id`, `occurred_at` and the
//! request's `deadline_at`. Quote and error events share one version counter
//! per (request, insurer): consumers keep the highest version they saw, so a
//! duplicate or stale event changes nothing. They also carry
//! `insurers_total`, the size of the fan-out, so a consumer knows when every
//! insurer is final whatever order the partitions deliver in.
//! Quote and error events carry no personal data.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{EventId, InsurerId, RequestId};
pub use crate::insurer::ErrorKind;
use crate::insurer::Quote;
use crate::request::QuoteRequest;

/// The schema version of every event in this module.
pub const SCHEMA_VERSION: u16 = 1;

/// A new quote request (stream: requests). Carries the request itself,
/// which insurers need; this stream is the only one with personal data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RequestEvent {
    /// Unique per event.
    pub event_id: EventId,
    /// The request.
    pub request_id: RequestId,
    /// When the request was accepted.
    pub occurred_at: DateTime<Utc>,
    /// When the request's quoting window closes for every insurer.
    pub deadline_at: DateTime<Utc>,
    /// The validated request, with `policy.start_date` filled in.
    pub request: QuoteRequest,
}

/// Where an insurer stands in a quote event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum QuoteStatus {
    /// Asked, no answer yet.
    Pending,
    /// An offer (final).
    Quoted,
    /// No offer by the insurer's decision (final).
    Declined,
    /// A status a newer writer added that this reader does not know. Never
    /// produced by this version's engine; shown as still pending (the deadline ends
    /// it), and counted by core-app (`osago_core_unknown_values_total`).
    #[serde(other)]
    Unknown,
}

/// One insurer's state for a request (stream: quotes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct QuoteEvent {
    /// Unique per event.
    pub event_id: EventId,
    /// The request.
    pub request_id: RequestId,
    /// The insurer.
    pub insurer_id: InsurerId,
    /// When this state was reached.
    pub occurred_at: DateTime<Utc>,
    /// The request's deadline.
    pub deadline_at: DateTime<Utc>,
    /// Monotonic per (request, insurer), shared with error events; starts at 1.
    pub version: u32,
    /// How many insurers this request was sent to.
    pub insurers_total: u16,
    /// The state.
    pub status: QuoteStatus,
    /// The offer, when quoted.
    #[serde(default)]
    pub quote: Option<Quote>,
    /// The insurer's reason, when declined.
    #[serde(default)]
    pub reason: Option<String>,
}

/// One insurer's integration failure (stream: errors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorEvent {
    /// Unique per event.
    pub event_id: EventId,
    /// The request.
    pub request_id: RequestId,
    /// The insurer.
    pub insurer_id: InsurerId,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The request's deadline.
    pub deadline_at: DateTime<Utc>,
    /// Monotonic per (request, insurer), shared with quote events.
    pub version: u32,
    /// How many insurers this request was sent to.
    pub insurers_total: u16,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// Lower-case detail with no personal data.
    pub message: String,
    /// Calls made to this insurer for this request so far.
    pub attempts: u32,
    /// No more attempts will follow: this is the insurer's final state.
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// Anything the aggregator publishes about one (request, insurer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsurerEvent {
    /// A quote event.
    Quote(QuoteEvent),
    /// An error event.
    Error(ErrorEvent),
}

impl InsurerEvent {
    /// The request.
    pub fn request_id(&self) -> RequestId {
        match self {
            InsurerEvent::Quote(e) => e.request_id,
            InsurerEvent::Error(e) => e.request_id,
        }
    }

    /// The insurer.
    pub fn insurer_id(&self) -> &InsurerId {
        match self {
            InsurerEvent::Quote(e) => &e.insurer_id,
            InsurerEvent::Error(e) => &e.insurer_id,
        }
    }

    /// The per (request, insurer) version.
    pub fn version(&self) -> u32 {
        match self {
            InsurerEvent::Quote(e) => e.version,
            InsurerEvent::Error(e) => e.version,
        }
    }

    /// Whether this is the insurer's final state.
    pub fn is_final(&self) -> bool {
        match self {
            InsurerEvent::Quote(e) => e.status != QuoteStatus::Pending,
            InsurerEvent::Error(e) => e.is_final,
        }
    }

    /// The request's deadline.
    pub fn deadline_at(&self) -> DateTime<Utc> {
        match self {
            InsurerEvent::Quote(e) => e.deadline_at,
            InsurerEvent::Error(e) => e.deadline_at,
        }
    }

    /// When it happened.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            InsurerEvent::Quote(e) => e.occurred_at,
            InsurerEvent::Error(e) => e.occurred_at,
        }
    }

    /// The fan-out size.
    pub fn insurers_total(&self) -> u16 {
        match self {
            InsurerEvent::Quote(e) => e.insurers_total,
            InsurerEvent::Error(e) => e.insurers_total,
        }
    }

    /// The partition key: `request_id:insurer_id`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.request_id(), self.insurer_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_event_uses_final_on_the_wire() {
        let event = ErrorEvent {
            event_id: EventId::random(),
            request_id: RequestId::random(),
            insurer_id: InsurerId::new("swift").unwrap(),
            occurred_at: Utc::now(),
            deadline_at: Utc::now(),
            version: 2,
            insurers_total: 8,
            kind: ErrorKind::CircuitOpen,
            message: "circuit open".into(),
            attempts: 0,
            is_final: true,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["final"], true);
        assert_eq!(json["kind"], "circuit_open");
        let back: ErrorEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
