//! The outbox relay: claims outbox messages, publishes them, removes them.
//! Woken by the store's notification (LISTEN/NOTIFY in PostgreSQL) with a
//! fallback poll; generic over the [`OutboxStore`] and [`EventPublisher`] ports.

use std::sync::Arc;
use std::time::Duration;

use osago_core::ports::{EventPublisher, OutboxStore};
use tokio_util::sync::CancellationToken;

use crate::config::RelayConfig;
use crate::metrics::Metrics;

/// Runs the relay until shutdown.
pub async fn run(
    outbox: Arc<dyn OutboxStore>,
    publisher: Arc<dyn EventPublisher>,
    config: RelayConfig,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let backoff = osago_service::retry_forever(Duration::from_millis(100), Duration::from_secs(5));
    let mut failures = 0;
    while !shutdown.is_cancelled() {
        match relay_once(&*outbox, &*publisher, &config, &metrics).await {
            Ok(0) => {
                failures = 0;
                if let Ok(dead) = outbox.dead_count().await {
                    metrics.outbox_dead.set(dead as i64);
                }
                tokio::select! {
                    _ = outbox.wait_for_work(config.fallback_poll) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            Ok(_) => failures = 0,
            Err(()) => {
                tokio::select! {
                    _ = tokio::time::sleep(backoff.jittered(failures)) => {}
                    _ = shutdown.cancelled() => return,
                }
                failures += 1;
            }
        }
    }
}

/// One claim-publish-mark round; the number of messages claimed.
pub async fn relay_once(
    outbox: &dyn OutboxStore,
    publisher: &dyn EventPublisher,
    config: &RelayConfig,
    metrics: &Metrics,
) -> Result<usize, ()> {
    let batch = outbox
        .claim(config.batch_size, config.lease)
        .await
        .map_err(|err| tracing::warn!(error = %err, "claiming outbox messages failed"))?;
    if batch.is_empty() {
        return Ok(0);
    }
    let results = futures::future::join_all(batch.iter().map(|m| publisher.publish(m))).await;
    let mut published = Vec::with_capacity(batch.len());
    let mut failed = false;
    for (message, result) in batch.iter().zip(results) {
        match result {
            Ok(()) => published.push(message.id),
            Err(err) => {
                failed = true;
                metrics.outbox_failures.inc();
                tracing::warn!(outbox_id = %message.id, stream = message.stream.as_str(), error = %err, "publishing an outbox message failed");
                if let Err(err) = outbox.mark_failed(message.id, config.dead_after).await {
                    tracing::warn!(error = %err, "recording an outbox failure failed");
                }
            }
        }
    }
    if !published.is_empty() {
        // If this fails the messages are published again after the lease: consumers dedupe.
        outbox.mark_published(&published).await.map_err(
            |err| tracing::warn!(error = %err, "marking outbox messages published failed"),
        )?;
        metrics.outbox_published.inc_by(published.len() as u64);
    }
    if failed {
        Err(())
    } else {
        Ok(batch.len())
    }
}
