//! Conformance of [`RequestStore`] + [`OutboxStore`] (one store implements
//! both: the request and its outbox message are written atomically).

use std::time::Duration;

use chrono::Utc;
use osago_core::outbox::{OutboxMessage, Stream};
use osago_core::ports::{OutboxStore, RequestStore, RequestSummary};
use osago_core::request::sample;
use osago_core::{EventId, RequestEvent, RequestId};
use uuid::Uuid;

/// A request event as core-app writes it, with the summary and the outbox
/// message every store derives from it.
pub fn request_event() -> (RequestEvent, RequestSummary, OutboxMessage) {
    let now = Utc::now();
    let event = RequestEvent {
        event_id: EventId::random(),
        request_id: RequestId::random(),
        occurred_at: now,
        deadline_at: now + chrono::Duration::seconds(60),
        request: sample(),
    };
    let summary = RequestSummary::of(&event);
    let message = crate::codec::request_outbox_message(&event);
    (event, summary, message)
}

async fn create<S: RequestStore + ?Sized>(store: &S) -> (RequestSummary, OutboxMessage) {
    let (event, summary, message) = request_event();
    store
        .create(
            &event,
            &osago_core::request::ConsentRecord::received(&event, [127, 0, 0, 1].into()),
        )
        .await
        .expect("create");
    assert_eq!(message.stream, Stream::Requests);
    assert_eq!(message.key, summary.request_id.to_string());
    (summary, message)
}

/// A created request can be read back; an unknown one is absent.
pub async fn created_requests_are_found<S: RequestStore + ?Sized>(store: &S) {
    let (summary, _) = create(store).await;
    let found = store.summary(&summary.request_id).await.expect("summary");
    let found = found.expect("the request exists");
    assert_eq!(found.request_id, summary.request_id);
    // Databases may round timestamps to microseconds.
    assert!(
        (found.deadline_at - summary.deadline_at)
            .num_milliseconds()
            .abs()
            <= 1
    );
    assert!(store
        .summary(&RequestId::random())
        .await
        .expect("summary")
        .is_none());
}

/// Claims return created messages oldest first, each once per lease.
pub async fn claims_are_ordered_and_leased<S: RequestStore + OutboxStore + ?Sized>(store: &S) {
    let (_, first) = create(store).await;
    let (_, second) = create(store).await;
    let claimed = store
        .claim(10, Duration::from_secs(60))
        .await
        .expect("claim");
    let ids: Vec<Uuid> = claimed.iter().map(|m| m.id).collect();
    assert_eq!(ids, [first.id, second.id], "oldest first");
    assert_eq!(claimed[0].payload, first.payload);
    assert_eq!(claimed[0].stream, Stream::Requests);
    assert_eq!(claimed[0].key, first.key);
    assert!(
        store
            .claim(10, Duration::from_secs(60))
            .await
            .expect("claim")
            .is_empty(),
        "a leased message is not claimed again"
    );
}

/// A lease that runs out makes the message claimable again.
pub async fn expired_leases_are_claimed_again<S: RequestStore + OutboxStore + ?Sized>(store: &S) {
    let (_, message) = create(store).await;
    let claimed = store
        .claim(10, Duration::from_millis(300))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = store
        .claim(10, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(again.iter().map(|m| m.id).collect::<Vec<_>>(), [message.id]);
}

/// Published messages are removed.
pub async fn published_messages_are_removed<S: RequestStore + OutboxStore + ?Sized>(store: &S) {
    let (_, message) = create(store).await;
    let claimed = store
        .claim(10, Duration::from_millis(200))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    store.mark_published(&[message.id]).await.expect("mark");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store
        .claim(10, Duration::from_secs(60))
        .await
        .expect("claim")
        .is_empty());
}

/// Failures count attempts and dead-letter the message after `dead_after`.
pub async fn failures_dead_letter<S: RequestStore + OutboxStore + ?Sized>(store: &S) {
    let (_, message) = create(store).await;
    for attempt in 1..=3u32 {
        let claimed = store
            .claim(10, Duration::from_secs(60))
            .await
            .expect("claim");
        assert_eq!(
            claimed.len(),
            1,
            "attempt {attempt}: claimable again after a failure"
        );
        assert_eq!(claimed[0].attempts, attempt - 1);
        store.mark_failed(message.id, 3).await.expect("mark failed");
    }
    assert!(store
        .claim(10, Duration::from_secs(60))
        .await
        .expect("claim")
        .is_empty());
    assert_eq!(store.dead_count().await.expect("dead count"), 1);
}

/// A waiting relay wakes when a request is created, well before its timeout.
pub async fn creating_wakes_the_waiting_relay<S: RequestStore + OutboxStore + ?Sized>(store: &S) {
    // Let a first wait set up whatever it listens with.
    store.wait_for_work(Duration::from_millis(50)).await;
    let started = tokio::time::Instant::now();
    let wait = store.wait_for_work(Duration::from_secs(20));
    let create = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        create(store).await
    };
    tokio::join!(wait, create);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken by the notification, not by the 20 s timeout"
    );
}

/// Dead-lettered messages go back in line on request, attempts reset.
pub async fn dead_messages_are_requeued<S: RequestStore + OutboxStore + ?Sized>(store: &S) {
    let (_, message) = create(store).await;
    let claimed = store
        .claim(10, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    store.mark_failed(message.id, 1).await.expect("mark failed");
    assert_eq!(store.dead_count().await.expect("dead count"), 1);
    assert_eq!(store.requeue_dead().await.expect("requeue"), 1);
    assert_eq!(store.dead_count().await.expect("dead count"), 0);
    let again = store
        .claim(10, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(again.iter().map(|m| m.id).collect::<Vec<_>>(), [message.id]);
    assert_eq!(again[0].attempts, 0);
    assert_eq!(store.requeue_dead().await.expect("requeue"), 0);
}

/// A message carries its request's deadline as `publish_by`; marked
/// expired, it is neither claimed again nor counted dead.
pub async fn expired_messages_are_set_aside<S: RequestStore + OutboxStore + ?Sized>(store: &S) {
    let (summary, message) = create(store).await;
    let claimed = store
        .claim(10, Duration::from_millis(200))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let publish_by = claimed[0]
        .publish_by
        .expect("a request event has a deadline");
    // Databases may round timestamps to microseconds.
    assert!((publish_by - summary.deadline_at).num_milliseconds().abs() <= 1);
    store
        .mark_expired(&[message.id])
        .await
        .expect("mark expired");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store
        .claim(10, Duration::from_secs(60))
        .await
        .expect("claim")
        .is_empty());
    assert_eq!(store.dead_count().await.expect("dead count"), 0);
}

/// The backlog counts messages waiting (claimed or not) and dates the
/// oldest; published, dead and expired ones are not waiting.
pub async fn the_backlog_counts_what_waits<S: RequestStore + OutboxStore + ?Sized>(store: &S) {
    assert_eq!(store.backlog().await.expect("backlog"), (0, None));
    let (first, first_message) = create(store).await;
    let (_, second_message) = create(store).await;
    let (_, third_message) = create(store).await;
    let (waiting, oldest) = store.backlog().await.expect("backlog");
    assert_eq!(waiting, 3);
    let oldest = oldest.expect("an oldest message");
    // Databases may round timestamps to microseconds.
    assert!((oldest - first.created_at).num_milliseconds().abs() <= 1);
    let claimed = store
        .claim(10, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 3);
    assert_eq!(
        store.backlog().await.expect("backlog").0,
        3,
        "claimed still waits"
    );
    store
        .mark_published(&[first_message.id])
        .await
        .expect("published");
    store.mark_failed(second_message.id, 1).await.expect("dead");
    assert_eq!(store.backlog().await.expect("backlog").0, 1);
    store
        .mark_expired(&[third_message.id])
        .await
        .expect("expired");
    assert_eq!(store.backlog().await.expect("backlog"), (0, None));
}

/// Every outbox row (it holds the request: personal data), pending, dead or
/// expired, is deleted once `retention` has passed. `store` keeps data for
/// `retention`.
pub async fn outbox_rows_do_not_outlive_the_retention<S: RequestStore + OutboxStore + ?Sized>(
    store: &S,
    retention: Duration,
) {
    let (_, dead) = create(store).await;
    let (_, expired) = create(store).await;
    let (_, _pending) = create(store).await;
    let claimed = store
        .claim(2, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    store.mark_failed(dead.id, 1).await.expect("mark failed");
    store
        .mark_expired(&[expired.id])
        .await
        .expect("mark expired");
    tokio::time::sleep(retention + Duration::from_millis(500)).await;
    let removed = store.purge_expired().await.expect("purge");
    assert!(removed >= 3, "removed {removed}");
    assert_eq!(store.dead_count().await.expect("dead count"), 0);
    assert_eq!(store.requeue_dead().await.expect("requeue"), 0);
    assert!(store
        .claim(10, Duration::from_secs(60))
        .await
        .expect("claim")
        .is_empty());
}
