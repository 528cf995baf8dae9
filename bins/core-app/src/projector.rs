//! The read-model projector: a consumer group on the quote and error
//! streams that applies the events to the read model (UPSERT guarded by
//! version) in batches, one transaction each (whatever has arrived, up to
//! `projector_batch`), and acknowledges them only once applied.

use std::sync::Arc;

use futures::FutureExt;
use std::time::Duration;

use osago_core::ports::{OutcomeSource, ReadModel};
use osago_core::showcase::OfferRow;
use osago_core::{ErrorKind, InsurerEvent, QuoteStatus};
use tokio_util::sync::CancellationToken;

use crate::metrics::{InsurerLabel, Metrics, OutcomeLabels, ReasonLabel};

/// Counts a value a newer writer added that this reader does not know (a
/// quote status, an error kind): the event was read, tolerantly, and the
/// operator learns a reader is behind its writers.
fn count_unknown(event: &InsurerEvent, metrics: &Metrics) {
    let field = match event {
        InsurerEvent::Quote(e) if e.status == QuoteStatus::Unknown => "quote_status",
        InsurerEvent::Error(e) if e.kind == ErrorKind::Unknown => "error_kind",
        _ => return,
    };
    tracing::warn!(field, "an event carries a value this version does not know");
    metrics
        .unknown_values
        .get_or_create(&crate::metrics::FieldLabel { field })
        .inc();
}

/// Runs the projector until shutdown.
pub async fn run(
    source: Arc<dyn OutcomeSource>,
    read_model: Arc<dyn ReadModel>,
    group: String,
    request_deadline: Duration,
    batch_size: usize,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut subscription = loop {
        match source.subscribe(&group).await {
            Ok(s) => break s,
            Err(err) => {
                tracing::warn!(error = %err, "subscribing to outcomes failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    };
    loop {
        let first = tokio::select! {
            next = subscription.next() => next,
            _ = shutdown.cancelled() => return,
        };
        let first = match first {
            Some(Ok(d)) => d,
            Some(Err(err)) => {
                tracing::warn!(error = %err, "outcome stream error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            None => return,
        };
        // Whatever else has arrived joins the batch, without waiting for
        // more (`next` is cancellation safe: an unready call loses nothing).
        let mut batch = vec![first];
        while batch.len() < batch_size.max(1) {
            match subscription.next().now_or_never() {
                Some(Some(Ok(d))) => batch.push(d),
                Some(Some(Err(err))) => {
                    tracing::warn!(error = %err, "outcome stream error");
                    break;
                }
                Some(None) | None => break,
            }
        }
        let events: Vec<InsurerEvent> = batch.iter().map(|d| d.event.clone()).collect();
        let Some(changed) = apply_until_done(&*read_model, &events, &metrics, &shutdown).await
        else {
            return;
        };
        metrics.projector_batch.observe(events.len() as f64);
        for (event, changed) in events.iter().zip(changed) {
            record(event, changed, request_deadline, &metrics);
        }
        // Acknowledged only once applied: a crash before this replays the
        // batch, which the version guard makes harmless.
        for delivery in batch {
            delivery.ack.ack();
        }
    }
}

/// Applies a batch in one transaction, retrying while the read model is
/// unavailable; `None` when shut down first.
async fn apply_until_done(
    read_model: &dyn ReadModel,
    events: &[InsurerEvent],
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Option<Vec<bool>> {
    let backoff = osago_service::retry_forever(Duration::from_millis(50), Duration::from_secs(5));
    let mut failures = 0;
    loop {
        match read_model.apply_batch(events).await {
            Ok(changed) => return Some(changed),
            Err(err) => {
                metrics.projector_retries.inc();
                tracing::warn!(events = events.len(), error = %err, "applying a batch failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.jittered(failures)) => {}
                    _ = shutdown.cancelled() => return None,
                }
                failures += 1;
            }
        }
    }
}

fn record(event: &InsurerEvent, changed: bool, request_deadline: Duration, metrics: &Metrics) {
    count_unknown(event, metrics);
    let reason = if changed { "applied" } else { "stale" };
    metrics
        .read_model_events
        .get_or_create(&ReasonLabel { reason })
        .inc();
    if !changed || !event.is_final() {
        return;
    }
    let row = OfferRow::from_event(event);
    let outcome = match row.error_kind {
        Some(kind) => kind.as_str(),
        None => row.status.as_str(),
    };
    let insurer = event.insurer_id().to_string();
    metrics
        .insurer_outcomes
        .get_or_create(&OutcomeLabels {
            insurer: insurer.clone(),
            outcome: outcome.to_owned(),
        })
        .inc();
    // deadline_at = accepted_at + request_deadline, so this is the time since acceptance.
    let accepted_at =
        event.deadline_at() - chrono::Duration::from_std(request_deadline).unwrap_or_default();
    if let Ok(elapsed) = (event.occurred_at() - accepted_at).to_std() {
        metrics
            .insurer_answer_seconds
            .get_or_create(&InsurerLabel { insurer })
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod unknown_tests {
    use super::*;

    #[test]
    fn values_a_newer_writer_added_are_counted() {
        let metrics = Metrics::default();
        let quote: osago_core::QuoteEvent = serde_json::from_value(serde_json::json!({
            "event_id": "6f2a1b3c-7d4e-4f5a-8b6c-7d8e9fa0b1c2",
            "request_id": "0b7c2d8e-3f4a-4b5c-8d6e-7f8091a2b3c4",
            "insurer_id": "swift",
            "occurred_at": "2026-11-30T09:00:02Z",
            "deadline_at": "2026-11-30T09:01:00Z",
            "version": 2,
            "insurers_total": 8,
            "status": "withdrawn"
        }))
        .unwrap();
        assert_eq!(quote.status, QuoteStatus::Unknown);
        count_unknown(&InsurerEvent::Quote(quote.clone()), &metrics);
        let row = OfferRow::from_event(&InsurerEvent::Quote(quote));
        assert_eq!(row.status, osago_core::showcase::OfferStatus::Pending);
        let error: osago_core::ErrorEvent = serde_json::from_value(serde_json::json!({
            "event_id": "7a3b2c4d-8e5f-4a6b-9c7d-8e9fa0b1c2d3",
            "request_id": "0b7c2d8e-3f4a-4b5c-8d6e-7f8091a2b3c4",
            "insurer_id": "legacy",
            "occurred_at": "2026-11-30T09:01:00Z",
            "deadline_at": "2026-11-30T09:01:00Z",
            "version": 2,
            "insurers_total": 8,
            "kind": "quota_exhausted",
            "message": "a new kind",
            "attempts": 1,
            "final": true
        }))
        .unwrap();
        assert_eq!(error.kind, ErrorKind::Unknown);
        count_unknown(&InsurerEvent::Error(error), &metrics);
        for field in ["quote_status", "error_kind"] {
            assert_eq!(
                metrics
                    .unknown_values
                    .get_or_create(&crate::metrics::FieldLabel { field })
                    .get(),
                1,
                "{field}"
            );
        }
    }
}
