//! Conformance of [`ReadModel`]: UPSERT guarded by version.

use osago_core::events::{ErrorKind, InsurerEvent, QuoteStatus};
use osago_core::ports::ReadModel;
use osago_core::showcase::OfferStatus;
use osago_core::RequestId;

pub use super::bus::quote_event;

/// A final error event for (request, insurer) at `version`.
pub fn error_event(request_id: RequestId, insurer: &str, version: u32) -> InsurerEvent {
    super::bus::error_event(request_id, insurer, version, true)
}

/// Newer versions replace older ones; rows come back ordered by insurer.
pub async fn newer_versions_apply<R: ReadModel + ?Sized>(model: &R) {
    let request = RequestId::random();
    assert!(model
        .apply(&quote_event(request, "zeta", 1, QuoteStatus::Pending))
        .await
        .expect("apply"));
    assert!(model
        .apply(&quote_event(request, "alpha", 1, QuoteStatus::Pending))
        .await
        .expect("apply"));
    assert!(model
        .apply(&error_event(request, "zeta", 2))
        .await
        .expect("apply"));
    let rows = model.rows(&request).await.expect("rows");
    let seen: Vec<(&str, u32, OfferStatus)> = rows
        .iter()
        .map(|r| (r.insurer_id.as_str(), r.version, r.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("alpha", 1, OfferStatus::Pending),
            ("zeta", 2, OfferStatus::Failed)
        ]
    );
    assert_eq!(rows[1].error_kind, Some(ErrorKind::Unavailable));
}

/// A duplicate or a stale event changes nothing.
pub async fn duplicates_and_stale_events_change_nothing<R: ReadModel + ?Sized>(model: &R) {
    let request = RequestId::random();
    let pending = quote_event(request, "one", 1, QuoteStatus::Pending);
    let declined = quote_event(request, "one", 2, QuoteStatus::Declined);
    assert!(model.apply(&pending).await.expect("apply"));
    assert!(model.apply(&declined).await.expect("apply"));
    let before = model.rows(&request).await.expect("rows");
    assert!(!model.apply(&declined).await.expect("apply"), "duplicate");
    assert!(!model.apply(&pending).await.expect("apply"), "stale");
    let stale_other_kind = error_event(request, "one", 2);
    assert!(
        !model.apply(&stale_other_kind).await.expect("apply"),
        "same version, other event"
    );
    assert_eq!(model.rows(&request).await.expect("rows"), before);
    assert_eq!(before[0].status, OfferStatus::Declined);
}

/// The final row keeps when the insurer was asked (from its pending event).
pub async fn final_rows_keep_their_start<R: ReadModel + ?Sized>(model: &R) {
    let request = RequestId::random();
    let pending = quote_event(request, "one", 1, QuoteStatus::Pending);
    model.apply(&pending).await.expect("apply");
    model
        .apply(&error_event(request, "one", 2))
        .await
        .expect("apply");
    let rows = model.rows(&request).await.expect("rows");
    let started = rows[0].started_at.expect("started_at kept");
    assert!((started - pending.occurred_at()).num_milliseconds().abs() <= 1);
}

/// An unknown request has no rows.
pub async fn unknown_requests_have_no_rows<R: ReadModel + ?Sized>(model: &R) {
    assert!(model
        .rows(&RequestId::random())
        .await
        .expect("rows")
        .is_empty());
}
