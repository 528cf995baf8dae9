//! The read model ("quote showcase"): one row per (request, insurer), built
//! from quote and error events, and what the browser is shown.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::{ErrorKind, InsurerEvent, QuoteStatus};
use crate::ids::{InsurerId, RequestId};
use crate::insurer::Quote;

/// What the person sees for one insurer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferStatus {
    /// Waiting for the insurer.
    Pending,
    /// A price.
    Quoted,
    /// The insurer declined.
    Declined,
    /// The integration failed (see `error_kind`): unavailable, timed out, ...
    Failed,
}

impl OfferStatus {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            OfferStatus::Pending => "pending",
            OfferStatus::Quoted => "quoted",
            OfferStatus::Declined => "declined",
            OfferStatus::Failed => "failed",
        }
    }
}

/// One insurer's current state for a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferRow {
    /// The request.
    pub request_id: RequestId,
    /// The insurer.
    pub insurer_id: InsurerId,
    /// The version of the event this row reflects.
    pub version: u32,
    /// How many insurers the request went to.
    pub insurers_total: u16,
    /// The state shown.
    pub status: OfferStatus,
    /// The offer, when quoted.
    pub quote: Option<Quote>,
    /// Why declined or failed (no personal data).
    pub reason: Option<String>,
    /// The failure kind, when failed (or retrying while pending).
    pub error_kind: Option<ErrorKind>,
    /// When this state was reached.
    pub occurred_at: DateTime<Utc>,
    /// When the insurer was asked (its pending event), if that was seen.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
}

impl OfferRow {
    /// The row an event sets.
    pub fn from_event(event: &InsurerEvent) -> Self {
        match event {
            InsurerEvent::Quote(e) => OfferRow {
                request_id: e.request_id,
                insurer_id: e.insurer_id.clone(),
                version: e.version,
                insurers_total: e.insurers_total,
                status: match e.status {
                    QuoteStatus::Pending => OfferStatus::Pending,
                    QuoteStatus::Quoted => OfferStatus::Quoted,
                    QuoteStatus::Declined => OfferStatus::Declined,
                    // Not known to be final: the deadline closes it.
                    QuoteStatus::Unknown => OfferStatus::Pending,
                },
                quote: e.quote.clone(),
                reason: e.reason.clone(),
                error_kind: None,
                occurred_at: e.occurred_at,
                started_at: (e.status == QuoteStatus::Pending).then_some(e.occurred_at),
            },
            InsurerEvent::Error(e) => OfferRow {
                request_id: e.request_id,
                insurer_id: e.insurer_id.clone(),
                version: e.version,
                insurers_total: e.insurers_total,
                status: if e.is_final {
                    OfferStatus::Failed
                } else {
                    OfferStatus::Pending
                },
                quote: None,
                reason: Some(e.message.clone()),
                error_kind: Some(e.kind),
                occurred_at: e.occurred_at,
                started_at: None,
            },
        }
    }

    /// This row replacing `previous`: keeps when the insurer was asked.
    pub fn succeeding(mut self, previous: Option<&OfferRow>) -> Self {
        if self.started_at.is_none() {
            self.started_at = previous.and_then(|p| p.started_at);
        }
        self
    }

    /// The pending state (version 1) this insurer went through, for a
    /// client that sees it for the first time in a later state.
    pub fn pending_view(&self) -> OfferRow {
        let at = self.started_at.unwrap_or(self.occurred_at);
        OfferRow {
            request_id: self.request_id,
            insurer_id: self.insurer_id.clone(),
            version: 1,
            insurers_total: self.insurers_total,
            status: OfferStatus::Pending,
            quote: None,
            reason: None,
            error_kind: None,
            occurred_at: at,
            started_at: Some(at),
        }
    }

    /// Whether nothing more will change for this insurer.
    pub fn is_final(&self) -> bool {
        self.status != OfferStatus::Pending
    }
}

/// Counts of final outcomes, as sent with `done` and `timeout`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Insurers with a price.
    pub quoted: u16,
    /// Insurers that declined.
    pub declined: u16,
    /// Insurers that failed or timed out.
    pub failed: u16,
    /// Insurers still pending.
    pub pending: u16,
}

impl Tally {
    /// Counts rows by status.
    pub fn of<'a>(rows: impl IntoIterator<Item = &'a OfferRow>) -> Self {
        let mut t = Tally::default();
        for row in rows {
            match row.status {
                OfferStatus::Pending => t.pending += 1,
                OfferStatus::Quoted => t.quoted += 1,
                OfferStatus::Declined => t.declined += 1,
                OfferStatus::Failed => t.failed += 1,
            }
        }
        t
    }
}

/// Whether rows are the complete, final state of a fan-out: every insurer
/// the request went to is known and final. Takes any re-iterable view of
/// the rows (a slice, a map's values), one row per insurer.
pub fn is_complete<'a, I>(rows: I) -> bool
where
    I: IntoIterator<Item = &'a OfferRow> + Clone,
{
    let Some(total) = rows.clone().into_iter().map(|r| r.insurers_total).max() else {
        return false;
    };
    let mut known = 0usize;
    for row in rows {
        if !row.is_final() {
            return false;
        }
        known += 1;
    }
    known >= usize::from(total)
}
