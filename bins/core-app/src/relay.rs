//! The outbox relay: claims outbox messages, publishes them, removes them.
//! Woken by the store's notification (LISTEN/NOTIFY in PostgreSQL) with a
//! fallback poll; generic over the [`OutboxStore`] and [`EventPublisher`] ports.
//!
//! A broker outage never dead-letters a request: failures worth retrying
//! (unreachable, timeout) are retried with capped full-jitter backoff for
//! as long as the request's deadline allows (`publish_by`); a message still
//! unpublished then is marked expired (counted in `outbox_expired`; its
//! user's stream times out at the deadline as it would anyway). Only a
//! message the broker refuses (`Corrupt`) is dead-lettered after
//! [`RelayConfig::dead_after`] attempts; `core-app outbox requeue-dead`
//! puts those back in line. Every row is deleted with the retention.

use std::sync::Arc;
use std::time::Duration;

use osago_core::ports::{EventPublisher, OutboxStore, PortErrorKind};
use osago_core::Clock;
use tokio_util::sync::CancellationToken;

use crate::config::RelayConfig;
use crate::metrics::Metrics;

/// Runs the relay until shutdown.
pub async fn run(
    outbox: Arc<dyn OutboxStore>,
    publisher: Arc<dyn EventPublisher>,
    clock: Arc<dyn Clock>,
    config: RelayConfig,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let backoff = osago_service::retry_forever(Duration::from_millis(100), Duration::from_secs(5));
    let mut failures = 0;
    let mut observed: Option<tokio::time::Instant> = None;
    while !shutdown.is_cancelled() {
        // The backlog and its oldest message's age, once a second at most,
        // busy or idle (a stuck relay shows as a growing age).
        if observed.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            observed = Some(tokio::time::Instant::now());
            observe_backlog(&*outbox, &*clock, &metrics).await;
        }
        match relay_once(&*outbox, &*publisher, &*clock, &config, &metrics).await {
            Ok(0) => {
                failures = 0;
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

/// Sets the backlog, oldest-age and dead-letter gauges from the store.
async fn observe_backlog(outbox: &dyn OutboxStore, clock: &dyn Clock, metrics: &Metrics) {
    if let Ok((waiting, oldest)) = outbox.backlog().await {
        metrics.outbox_backlog.set(waiting as i64);
        let age = oldest.map_or(0.0, |at| {
            (clock.now() - at).num_milliseconds().max(0) as f64 / 1000.0
        });
        metrics.outbox_oldest_age_seconds.set(age);
    }
    if let Ok(dead) = outbox.dead_count().await {
        metrics.outbox_dead.set(dead as i64);
    }
}

/// One claim-publish-mark round; the number of messages claimed.
pub async fn relay_once(
    outbox: &dyn OutboxStore,
    publisher: &dyn EventPublisher,
    clock: &dyn Clock,
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
    let now = clock.now();
    let (overdue, batch): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .partition(|m| m.publish_by.is_some_and(|by| by <= now));
    if !overdue.is_empty() {
        let ids: Vec<_> = overdue.iter().map(|m| m.id).collect();
        outbox.mark_expired(&ids).await.map_err(
            |err| tracing::warn!(error = %err, "marking outbox messages expired failed"),
        )?;
        metrics.outbox_expired.inc_by(ids.len() as u64);
        for message in &overdue {
            tracing::warn!(outbox_id = %message.id, stream = message.stream.as_str(), attempts = message.attempts, "outbox message expired unpublished: its request's deadline passed");
        }
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
                // Only a record the broker refuses is dead-lettered; an
                // outage is waited out until the deadline.
                let dead_after = match err.kind() {
                    PortErrorKind::Corrupt => config.dead_after,
                    _ => u32::MAX,
                };
                if let Err(err) = outbox.mark_failed(message.id, dead_after).await {
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
        Ok(overdue.len() + batch.len())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use async_trait::async_trait;
    use chrono::Utc;
    use osago_core::outbox::OutboxMessage;
    use osago_core::ports::{PortError, RequestStore};
    use osago_core::{EventId, ManualClock, RequestEvent, RequestId};
    use osago_transport::memory::MemoryRequestStore;

    use super::*;

    /// Fails every publish with `kind` while `down` is set.
    #[derive(Debug)]
    struct Broker {
        down: Mutex<Option<PortErrorKind>>,
        published: AtomicUsize,
    }

    impl Broker {
        fn down(kind: PortErrorKind) -> Self {
            Self {
                down: Mutex::new(Some(kind)),
                published: AtomicUsize::new(0),
            }
        }

        fn up(&self) {
            *self.down.lock().unwrap() = None;
        }
    }

    #[async_trait]
    impl EventPublisher for Broker {
        async fn publish(&self, _: &OutboxMessage) -> Result<(), PortError> {
            match *self.down.lock().unwrap() {
                Some(kind) => Err(PortError::new(kind, "broker down")),
                None => {
                    self.published.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
            }
        }
    }

    async fn request(store: &MemoryRequestStore, clock: &ManualClock, deadline_secs: i64) {
        let now = clock.now();
        let event = RequestEvent {
            event_id: EventId::random(),
            request_id: RequestId::random(),
            occurred_at: now,
            deadline_at: now + chrono::Duration::seconds(deadline_secs),
            request: osago_core::request::sample(),
        };
        let consent = osago_core::request::ConsentRecord::of(
            &event.request,
            now,
            std::net::Ipv4Addr::LOCALHOST.into(),
        );
        store.create(&event, &consent).await.unwrap();
    }

    fn config() -> RelayConfig {
        RelayConfig {
            lease: Duration::ZERO,
            dead_after: 3,
            ..RelayConfig::default()
        }
    }

    /// An outage far longer than `dead_after` attempts dead-letters nothing:
    /// what is still within its deadline is published once the broker is
    /// back, what is past it is marked expired.
    #[tokio::test]
    async fn the_backlog_and_its_age_are_observed() {
        let store = MemoryRequestStore::new(Duration::from_secs(3600));
        let clock = ManualClock::new(Utc::now());
        let metrics = Metrics::default();
        observe_backlog(&store, &clock, &metrics).await;
        assert_eq!(metrics.outbox_backlog.get(), 0);
        assert_eq!(metrics.outbox_oldest_age_seconds.get(), 0.0);
        request(&store, &clock, 60).await;
        clock.advance(chrono::Duration::seconds(30));
        request(&store, &clock, 60).await;
        clock.advance(chrono::Duration::milliseconds(1_500));
        observe_backlog(&store, &clock, &metrics).await;
        assert_eq!(metrics.outbox_backlog.get(), 2);
        assert_eq!(metrics.outbox_oldest_age_seconds.get(), 31.5);
    }

    #[tokio::test]
    async fn a_long_outage_dead_letters_nothing_and_expires_what_is_overdue() {
        let store = MemoryRequestStore::new(Duration::from_secs(3600));
        let clock = ManualClock::new(Utc::now());
        request(&store, &clock, 60).await;
        request(&store, &clock, 600).await;
        let broker = Broker::down(PortErrorKind::Unavailable);
        let metrics = Metrics::default();
        for _ in 0..50 {
            assert_eq!(
                relay_once(&store, &broker, &clock, &config(), &metrics).await,
                Err(())
            );
        }
        assert_eq!(
            store.dead_count().await.unwrap(),
            0,
            "an outage is waited out"
        );
        assert_eq!(metrics.outbox_failures.get(), 100);
        // Past the first request's deadline, not the second's.
        clock.advance(chrono::Duration::seconds(61));
        broker.up();
        assert_eq!(
            relay_once(&store, &broker, &clock, &config(), &metrics).await,
            Ok(2)
        );
        assert_eq!(broker.published.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.outbox_expired.get(), 1);
        assert_eq!(metrics.outbox_published.get(), 1);
        assert_eq!(store.dead_count().await.unwrap(), 0);
        assert_eq!(
            relay_once(&store, &broker, &clock, &config(), &metrics).await,
            Ok(0),
            "nothing left in line"
        );
    }

    /// A record the broker refuses is dead-lettered after `dead_after`
    /// attempts, and can be put back in line.
    #[tokio::test]
    async fn a_refused_record_is_dead_lettered_and_can_be_requeued() {
        let store = MemoryRequestStore::new(Duration::from_secs(3600));
        let clock = ManualClock::new(Utc::now());
        request(&store, &clock, 60).await;
        let broker = Broker::down(PortErrorKind::Corrupt);
        let metrics = Metrics::default();
        for _ in 0..3 {
            assert_eq!(
                relay_once(&store, &broker, &clock, &config(), &metrics).await,
                Err(())
            );
        }
        assert_eq!(store.dead_count().await.unwrap(), 1);
        assert_eq!(
            relay_once(&store, &broker, &clock, &config(), &metrics).await,
            Ok(0)
        );
        broker.up();
        assert_eq!(store.requeue_dead().await.unwrap(), 1);
        assert_eq!(
            relay_once(&store, &broker, &clock, &config(), &metrics).await,
            Ok(1)
        );
        assert_eq!(broker.published.load(Ordering::Relaxed), 1);
    }
}
