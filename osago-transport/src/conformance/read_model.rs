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

/// One event of a generated history: which of three insurers, which
/// version (1 pending, 2 or 3 final), and whether it is an error.
pub type HistoryStep = (u8, u32, bool);

/// Applies the history `steps` of one new request to `model` in batches
/// cut at `cuts` (indices into `steps`; any order, duplicates and
/// out-of-range ones ignored), and checks that the batches changed exactly
/// what applying the events one by one changes, by the version guard alone:
/// an event changes its row when its version is newer than every earlier
/// one of its insurer, and the rows end at each insurer's newest event.
pub async fn batches_keep_the_version_guard<R: ReadModel + ?Sized>(
    model: &R,
    steps: &[HistoryStep],
    cuts: &[usize],
) {
    let request = RequestId::random();
    let insurers = ["alfa", "beta", "gamma"];
    let events: Vec<InsurerEvent> = steps
        .iter()
        .map(|&(insurer, version, error)| {
            let insurer = insurers[usize::from(insurer) % insurers.len()];
            match (version, error) {
                (1, _) => quote_event(request, insurer, 1, QuoteStatus::Pending),
                (v, true) => error_event(request, insurer, v),
                (v, false) => quote_event(request, insurer, v, QuoteStatus::Declined),
            }
        })
        .collect();
    // What the guard allows, one by one.
    let mut newest: std::collections::BTreeMap<&str, (u32, usize)> = Default::default();
    let mut expected = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let insurer = insurers
            .iter()
            .find(|name| **name == event.insurer_id().as_str())
            .expect("known insurer");
        let newer = newest
            .get(insurer)
            .is_none_or(|(version, _)| event.version() > *version);
        if newer {
            newest.insert(insurer, (event.version(), i));
        }
        expected.push(newer);
    }
    let mut bounds: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|c| *c > 0 && *c < events.len())
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    bounds.push(events.len());
    let mut changed = Vec::with_capacity(events.len());
    let mut start = 0;
    for end in bounds {
        changed.extend(
            model
                .apply_batch(&events[start..end])
                .await
                .expect("apply batch"),
        );
        start = end;
    }
    assert_eq!(
        changed, expected,
        "changed flags of {steps:?} cut at {cuts:?}"
    );
    let rows = model.rows(&request).await.expect("rows");
    let seen: Vec<(String, u32)> = rows
        .iter()
        .map(|r| (r.insurer_id.to_string(), r.version))
        .collect();
    let want: Vec<(String, u32)> = newest
        .iter()
        .map(|(insurer, (version, _))| ((*insurer).to_owned(), *version))
        .collect();
    assert_eq!(seen, want, "rows of {steps:?} cut at {cuts:?}");
    for row in &rows {
        let (_, i) = newest[row.insurer_id.as_str()];
        let status = osago_core::showcase::OfferRow::from_event(&events[i]).status;
        assert_eq!(row.status, status, "{row:?}");
    }
}
