//! What an insurer's partner API answers, in domain terms.
//!
//! The wire contract lives in `docs/insurer-api.md` and in the HTTP adapter;
//! here are the outcomes the fan-out engine reasons about, and the error
//! kinds that retry and circuit-breaker policies read.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::money::Kopecks;
use crate::tariff::Coefficients;

/// An insurer's offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Quote {
    /// The OSAGO premium (matches the coefficients); mandatory add-ons are extra.
    pub premium_kopecks: Kopecks,
    /// The coefficient breakdown of the OSAGO part.
    pub coefficients: Coefficients,
    /// The legal cap lowered the premium.
    #[serde(default)]
    pub capped: bool,
    /// Until when the offer holds.
    pub valid_until: DateTime<Utc>,
    /// Add-ons offered with the policy.
    #[serde(default)]
    pub add_ons: Vec<AddOn>,
    /// A note from the insurer (no personal data).
    #[serde(default)]
    pub message: Option<String>,
    /// Where to buy or continue the draft.
    #[serde(default)]
    pub purchase_url: Option<String>,
    /// When the quote became ready at the insurer, if it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<DateTime<Utc>>,
    /// The premium checked against the request's lawful price range (set
    /// by the aggregator, never taken from the insurer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_check: Option<crate::tariff::PriceCheck>,
}

/// An add-on product sold with the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AddOn {
    /// Its name.
    pub name: String,
    /// Its price.
    pub price_kopecks: Kopecks,
    /// The price is only available with it.
    pub mandatory: bool,
}

/// An application created at an insurer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// The insurer's id for it (used to poll).
    pub id: String,
    /// Wait at least this long before the first poll, if the insurer says.
    pub retry_after: Option<Duration>,
}

/// One poll's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    /// Still calculating; poll again, not before `retry_after` if given.
    Pending {
        /// The insurer's hint for the next poll.
        retry_after: Option<Duration>,
    },
    /// The offer is ready.
    Quoted(Quote),
    /// The insurer will not offer a policy (an underwriting decision).
    Declined {
        /// The insurer's reason, without personal data.
        reason: String,
    },
}

/// Kinds of integration failure. Policies branch on these; the same names
/// appear in `osago.errors.v1` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ErrorKind {
    /// No answer in time (socket timeout or the request's deadline).
    Timeout,
    /// Connection refused or reset, 5xx, or a failed calculation.
    Unavailable,
    /// The circuit breaker is open for this insurer.
    CircuitOpen,
    /// 429, or our outbound quota is exhausted.
    RateLimited,
    /// An answer we cannot read: malformed JSON, wrong content type, unknown status.
    BadResponse,
    /// 4xx: the insurer refuses the request as sent (e.g. needs more data).
    Rejected,
    /// A kind a newer writer added that this reader does not know. Never
    /// produced by this version's engine; treated as a final failure that is not
    /// retried, and counted by core-app (`osago_core_unknown_values_total`).
    #[serde(other)]
    Unknown,
}

impl ErrorKind {
    /// The snake_case name (as in events and metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Unknown => "unknown",
        }
    }

    /// Whether trying again may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout | ErrorKind::Unavailable | ErrorKind::RateLimited
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call to an insurer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct InsurerError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// Lower-case detail without personal data (safe to log and publish).
    pub message: String,
    /// The insurer's Retry-After hint, if any.
    pub retry_after: Option<Duration>,
    /// The request's fields a refusal ([`ErrorKind::Rejected`]) named, as
    /// field paths (`owner.address.apartment`; checked by
    /// [`crate::insurer_text::is_field_path`], so no personal data): what
    /// the engine learns an insurer's requirements from.
    pub fields: Vec<String>,
    /// The insurer's final word on the application (`CALCULATION_ERROR`):
    /// asking again cannot change it, so it is not retried, whatever its
    /// kind.
    pub terminal: bool,
}

impl InsurerError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
            fields: Vec::new(),
            terminal: false,
        }
    }

    /// Marked as the insurer's final word on the application
    /// ([`InsurerError::terminal`]).
    pub fn terminal(mut self) -> Self {
        self.terminal = true;
        self
    }

    /// Whether trying again may succeed: a retryable kind, and not the
    /// insurer's final word.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable() && !self.terminal
    }

    /// A refusal naming the request's `fields` it needs (field paths; any
    /// that is not one is left out): `rejected: insurer needs more data:
    /// owner.address.apartment`.
    pub fn needs_more_data<S: AsRef<str>>(fields: impl IntoIterator<Item = S>) -> Self {
        let fields: Vec<String> = fields
            .into_iter()
            .filter(|f| crate::insurer_text::is_field_path(f.as_ref()))
            .take(10)
            .map(|f| f.as_ref().to_owned())
            .collect();
        let message = if fields.is_empty() {
            "insurer needs more data".to_owned()
        } else {
            format!("insurer needs more data: {}", fields.join(", "))
        };
        Self {
            fields,
            ..Self::new(ErrorKind::Rejected, message)
        }
    }

    /// With a Retry-After hint.
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }
}
