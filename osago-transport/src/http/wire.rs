//! The insurer partner API's bodies (`docs/insurer-api.md`), shared by the
//! client and the simulator.

use osago_core::insurer::Quote;
use serde::{Deserialize, Serialize};

/// `POST /applications` answer (201 or 202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationCreated {
    /// The insurer's id for the application.
    pub application_id: String,
    /// Usually `IN_PROGRESS`.
    pub status: QuoteStatusWire,
    /// A sub-second hint for the first poll (optional; `Retry-After` is whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Calculation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QuoteStatusWire {
    /// Still calculating.
    InProgress,
    /// The quote is ready.
    Ready,
    /// The insurer declines.
    Declined,
    /// No offer for this request.
    NoCalculationAvailable,
    /// The insurer failed to calculate.
    CalculationError,
    /// Anything this client does not know.
    #[serde(other)]
    Unknown,
}

/// `GET /quotes/{id}` answer (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteState {
    /// The application.
    pub application_id: String,
    /// Where the calculation stands.
    pub status: QuoteStatusWire,
    /// The quote, when `READY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<Quote>,
    /// Why, when declined or unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A sub-second hint for the next poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// A 4xx body: `{message, properties: [{property, message}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FieldProblems {
    /// What is wrong overall.
    #[serde(default)]
    pub message: String,
    /// Per-field problems.
    #[serde(default)]
    pub properties: Vec<PropertyProblem>,
    /// A sub-second hint before trying again (429, 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// One field problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropertyProblem {
    /// The field's dotted path in our request schema.
    pub property: String,
    /// What is wrong.
    pub message: String,
}
