//! The read-model projector: a consumer group on the quote and error
//! streams that applies each event to the read model (UPSERT guarded by
//! version) and acknowledges it only once applied.

use std::sync::Arc;
use std::time::Duration;

use osago_core::ports::{OutcomeSource, ReadModel};
use osago_core::showcase::OfferRow;
use osago_core::InsurerEvent;
use tokio_util::sync::CancellationToken;

use crate::metrics::{InsurerLabel, Metrics, OutcomeLabels, ReasonLabel};

/// Runs the projector until shutdown.
pub async fn run(
    source: Arc<dyn OutcomeSource>,
    read_model: Arc<dyn ReadModel>,
    group: String,
    request_deadline: Duration,
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
        let delivery = tokio::select! {
            next = subscription.next() => next,
            _ = shutdown.cancelled() => return,
        };
        let delivery = match delivery {
            Some(Ok(d)) => d,
            Some(Err(err)) => {
                tracing::warn!(error = %err, "outcome stream error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            None => return,
        };
        if !apply_until_done(
            &*read_model,
            &delivery.event,
            request_deadline,
            &metrics,
            &shutdown,
        )
        .await
        {
            return;
        }
        delivery.ack.ack();
    }
}

/// Applies one event, retrying while the read model is unavailable.
/// `false` when shut down first.
async fn apply_until_done(
    read_model: &dyn ReadModel,
    event: &InsurerEvent,
    request_deadline: Duration,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> bool {
    let backoff = osago_service::retry_forever(Duration::from_millis(50), Duration::from_secs(5));
    let mut failures = 0;
    loop {
        match read_model.apply(event).await {
            Ok(changed) => {
                record(event, changed, request_deadline, metrics);
                return true;
            }
            Err(err) => {
                tracing::warn!(request_id = %event.request_id(), error = %err, "applying an event failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.jittered(failures)) => {}
                    _ = shutdown.cancelled() => return false,
                }
                failures += 1;
            }
        }
    }
}

fn record(event: &InsurerEvent, changed: bool, request_deadline: Duration, metrics: &Metrics) {
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
