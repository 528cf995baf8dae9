//! The ports: every trait an adapter implements. Each has an in-memory
//! implementation and a real one in `osago-transport`, and one conformance
//! suite that runs against both.
//!
//! All are `Send + Sync + 'static` and held as `Arc<dyn Port>`; one boxed
//! future per call is nothing next to a network round trip.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::breaker::BreakerSnapshot;
use crate::events::{InsurerEvent, RequestEvent};
use crate::ids::{InsurerId, RequestId};
use crate::insurer::{Application, InsurerError, PollOutcome};
use crate::outbox::OutboxMessage;
use crate::request::QuoteRequest;
use crate::showcase::OfferRow;

/// Kinds of port failure; callers branch on [`PortError::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortErrorKind {
    /// The backend cannot be reached or refused the operation; retry later.
    Unavailable,
    /// The backend did not answer in time.
    Timeout,
    /// Stored or received data cannot be decoded.
    Corrupt,
    /// The subscription or store was closed (shutdown).
    Closed,
    /// The backend answers but is not as configured (a topic's settings
    /// differ, a right is missing): retrying does not help.
    Misconfigured,
}

/// A failed port call. The message never carries personal data.
///
/// Its `Display` names the whole cause chain ("Unavailable: postgres:
/// connect failed: password authentication failed for user \"osago\""), so
/// whoever logs or prints it sees why, not only what; each cause is
/// written once even when a wrapper repeats its source's text.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?}: {message}{}", causes(message, source.as_deref()))]
pub struct PortError {
    kind: PortErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl PortError {
    /// An error of `kind`.
    pub fn new(kind: PortErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// With the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What kind of failure.
    pub fn kind(&self) -> PortErrorKind {
        self.kind
    }

    /// With a note after the message (what else is known of the cause).
    pub fn with_note(mut self, note: impl AsRef<str>) -> Self {
        self.message.push_str("; ");
        self.message.push_str(note.as_ref());
        self
    }
}

/// `": cause: its cause…"` for an error's source chain, leaving out a cause
/// whose text the message or an earlier cause already holds.
fn causes(
    message: &str,
    source: Option<&(dyn std::error::Error + Send + Sync + 'static)>,
) -> String {
    let mut written = String::new();
    let mut next = source.map(|s| s as &(dyn std::error::Error + 'static));
    while let Some(err) = next {
        let text = err.to_string();
        if !text.is_empty() && !message.contains(&text) && !written.contains(&text) {
            written.push_str(": ");
            written.push_str(&text);
        }
        next = err.source();
    }
    written
}

/// One insurer's partner API.
#[async_trait]
pub trait InsurerClient: Send + Sync + fmt::Debug + 'static {
    /// Creates an application (`POST /applications`). The same
    /// `idempotency_key` for every attempt of one (request, insurer). Both
    /// calls run in the request's [current](crate::trace::current) trace,
    /// which an HTTP client passes on as `traceparent`.
    async fn create_application(
        &self,
        idempotency_key: &str,
        request: &QuoteRequest,
    ) -> Result<Application, InsurerError>;

    /// Polls the application's quote (`GET /quotes/{id}`).
    async fn poll_quote(&self, application_id: &str) -> Result<PollOutcome, InsurerError>;
}

/// Where the aggregator publishes quote and error events. Publishing the
/// same event twice is harmless: consumers deduplicate by version.
#[async_trait]
pub trait QuoteSink: Send + Sync + 'static {
    /// Publishes one event; returns once the backend has it. The event
    /// belongs to the [current](crate::trace::current) trace, if any.
    async fn publish(&self, event: &InsurerEvent) -> Result<(), PortError>;
}

/// Where one (request, insurer) stands, as recorded for resuming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsurerProgress {
    /// The request.
    pub request_id: RequestId,
    /// The insurer.
    pub insurer_id: InsurerId,
    /// The insurer's application id, once created.
    pub application_id: Option<String>,
    /// Calls made so far.
    pub attempts: u32,
    /// The last version published.
    pub version: u32,
    /// The request's deadline.
    pub deadline_at: DateTime<Utc>,
    /// Nothing more will be published.
    pub finished: bool,
    /// The insurer's final answer was a price: the buyer has one, so a pod
    /// that resumes the request does not race the others for a first price
    /// (absent in entries recorded before it was kept: `false`).
    #[serde(default)]
    pub quoted: bool,
}

/// One final answer an insurer gave, as the engine learns from it: how long
/// after its application it came, and whether it was a price. No request,
/// nobody's data: only the insurer's pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerSample {
    /// From the application to the answer, in milliseconds.
    pub millis: u32,
    /// The answer was a quote (not a decline or another final answer).
    pub quoted: bool,
}

/// The aggregator's in-flight state (Valkey in production). Every entry
/// expires after its TTL.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Saves one (request, insurer)'s progress, replacing what was there.
    async fn save_progress(
        &self,
        progress: &InsurerProgress,
        ttl: Duration,
    ) -> Result<(), PortError>;

    /// Every insurer's progress for a request.
    async fn load_progress(
        &self,
        request_id: &RequestId,
    ) -> Result<Vec<InsurerProgress>, PortError>;

    /// Takes a request event and puts it in flight, atomically: the claim
    /// (for `ttl`: a second begin finds it and changes nothing), the event itself (so
    /// another pod can resume it; kept until `keep`), and a lease expiring
    /// `lease` from now. `false` if the request was claimed before: then
    /// nothing changes.
    async fn begin_request(
        &self,
        event: &RequestEvent,
        lease: Duration,
        keep: Duration,
        ttl: Duration,
    ) -> Result<bool, PortError>;

    /// Extends the leases of requests in flight here to `lease` from now;
    /// a request already ended stays ended.
    async fn renew_leases(&self, ids: &[RequestId], lease: Duration) -> Result<(), PortError>;

    /// Takes over at most `max` requests whose lease expired (their pod died
    /// or stalled), leasing each anew for `lease`; returns their events. A
    /// request is taken by one caller only.
    async fn take_over(&self, lease: Duration, max: usize) -> Result<Vec<RequestEvent>, PortError>;

    /// Ends a request: its lease and stored event go (the claim and the
    /// progress stay until their TTL).
    async fn end_request(&self, request_id: &RequestId) -> Result<(), PortError>;

    /// Keeps what a pod learned of an insurer's answer times (its recent
    /// final answers, oldest first) for `ttl`, replacing what any pod kept
    /// before: a pod starting later begins from it, not from nothing.
    async fn save_answer_times(
        &self,
        insurer: &InsurerId,
        samples: &[AnswerSample],
        ttl: Duration,
    ) -> Result<(), PortError>;

    /// The answer times last kept for an insurer (oldest first); empty if
    /// none, or they expired.
    async fn load_answer_times(&self, insurer: &InsurerId) -> Result<Vec<AnswerSample>, PortError>;
}

/// A stored request, without its personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSummary {
    /// The request.
    pub request_id: RequestId,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When quoting closes.
    pub deadline_at: DateTime<Utc>,
}

impl RequestSummary {
    /// The summary of a request event's request.
    pub fn of(event: &RequestEvent) -> Self {
        Self {
            request_id: event.request_id,
            created_at: event.occurred_at,
            deadline_at: event.deadline_at,
        }
    }
}

/// core-app's request table.
#[async_trait]
pub trait RequestStore: Send + Sync + 'static {
    /// Stores the event's request, with the consents as the server recorded
    /// them, and enqueues the event on the outbox atomically (one
    /// transaction in SQL): all are written or none. The store encodes the
    /// outbox message itself (its id is the event id); the consent record
    /// stays in the store and is deleted with the request.
    async fn create(
        &self,
        event: &RequestEvent,
        consent: &crate::request::ConsentRecord,
    ) -> Result<(), PortError>;

    /// The request's summary, if it exists.
    async fn summary(&self, request_id: &RequestId) -> Result<Option<RequestSummary>, PortError>;

    /// Deletes requests (personal data included), their quotes and their
    /// outbox messages (pending, dead or expired) past retention; the number
    /// of rows removed. Stores that expire entries by themselves do nothing.
    async fn purge_expired(&self) -> Result<u64, PortError> {
        Ok(0)
    }
}

/// The outbox, read by the relay.
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// Claims up to `limit` messages, oldest first, for `lease`; a message
    /// claimed by one relay is not returned to another until the lease ends.
    async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<OutboxMessage>, PortError>;

    /// Removes published messages.
    async fn mark_published(&self, ids: &[Uuid]) -> Result<(), PortError>;

    /// Records a failed attempt; after `dead_after` attempts the message is
    /// dead-lettered and no longer claimed (the relay passes `u32::MAX` for
    /// failures worth retrying, such as a broker outage, so only a message
    /// the broker refuses is ever dead-lettered).
    async fn mark_failed(&self, id: Uuid, dead_after: u32) -> Result<(), PortError>;

    /// Marks messages expired (past their `publish_by`): no longer claimed,
    /// not dead-lettered, deleted with the retention like every row.
    async fn mark_expired(&self, ids: &[Uuid]) -> Result<(), PortError>;

    /// Puts every dead-lettered message back in line, attempts reset; how
    /// many.
    async fn requeue_dead(&self) -> Result<u64, PortError>;

    /// Waits until new messages may be there (a notification), or `max_wait`.
    async fn wait_for_work(&self, max_wait: Duration);

    /// How many messages are dead-lettered.
    async fn dead_count(&self) -> Result<u64, PortError>;

    /// Messages waiting to be published (neither dead nor expired), and
    /// when the oldest of them was written: the relay's backlog.
    async fn backlog(&self) -> Result<(u64, Option<chrono::DateTime<chrono::Utc>>), PortError>;
}

/// Where the outbox relay publishes.
#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    /// Publishes one message to its stream (with its trace, if any);
    /// returns once the backend has it.
    async fn publish(&self, message: &OutboxMessage) -> Result<(), PortError>;
}

/// Confirms that a delivered event was applied (a Kafka offset commit).
pub trait Ack: Send + fmt::Debug {
    /// The event is applied; it need not be delivered again.
    fn ack(self: Box<Self>);
}

/// An event with its acknowledgement.
#[derive(Debug)]
pub struct Delivery<T> {
    /// The event.
    pub event: T,
    /// Call once the event is applied.
    pub ack: Box<dyn Ack>,
    /// The trace the event belongs to (its record's `traceparent`), if any.
    pub trace: Option<crate::trace::TraceContext>,
}

/// An event with the trace it belongs to (its record's `traceparent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traced<T> {
    /// The event.
    pub event: T,
    /// Its trace, if it has one.
    pub trace: Option<crate::trace::TraceContext>,
}

/// A consumer-group subscription. Undecodable messages are skipped (and
/// counted) by the adapter, never returned.
#[async_trait]
pub trait Subscription<T>: Send {
    /// The next event, or `None` once closed.
    async fn next(&mut self) -> Option<Result<Delivery<T>, PortError>>;
}

/// The request stream, consumed by the aggregator.
#[async_trait]
pub trait RequestSource: Send + Sync + 'static {
    /// Joins consumer group `group`: members share the events.
    async fn subscribe(
        &self,
        group: &str,
    ) -> Result<Box<dyn Subscription<RequestEvent>>, PortError>;
}

/// The quote and error streams, consumed by core-app's read model.
#[async_trait]
pub trait OutcomeSource: Send + Sync + 'static {
    /// Joins consumer group `group`: members share the events.
    async fn subscribe(
        &self,
        group: &str,
    ) -> Result<Box<dyn Subscription<InsurerEvent>>, PortError>;
}

/// Every quote and error event from now on, to every subscriber: what each
/// core-app pod pushes to the SSE connections it holds.
#[async_trait]
pub trait LiveFeed: Send + Sync + 'static {
    /// Follows both streams from their end.
    async fn follow(&self) -> Result<BoxStream<'static, Traced<InsurerEvent>>, PortError>;
}

/// The quote showcase: one row per (request, insurer).
#[async_trait]
pub trait ReadModel: Send + Sync + 'static {
    /// Applies an event if its version is newer than the row's; returns
    /// whether anything changed (a duplicate or stale event changes nothing).
    async fn apply(&self, event: &InsurerEvent) -> Result<bool, PortError>;

    /// Applies `events` in order, as [`ReadModel::apply`] would one by one
    /// (each guarded by its version against the row as the earlier events
    /// of the batch left it), all or none: one transaction in SQL, so a
    /// batch costs one connection and one commit. Whether each changed
    /// anything, in order.
    async fn apply_batch(&self, events: &[InsurerEvent]) -> Result<Vec<bool>, PortError> {
        let mut changed = Vec::with_capacity(events.len());
        for event in events {
            changed.push(self.apply(event).await?);
        }
        Ok(changed)
    }

    /// The request's rows, ordered by insurer id.
    async fn rows(&self, request_id: &RequestId) -> Result<Vec<OfferRow>, PortError>;
}

/// A dependency a service reports on at `/health` (database, broker, cache).
#[async_trait]
pub trait HealthCheck: Send + Sync + 'static {
    /// What is checked: `database`, `broker`, `valkey`, ...
    fn name(&self) -> &'static str;

    /// `Ok` when the dependency answers.
    async fn check(&self) -> Result<(), PortError>;
}

/// A rate limiter shared by every instance (Valkey in production): GCRA per
/// key, every key expiring when idle.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Admits one call for `key` under `limit`, or says how long to wait.
    async fn check(
        &self,
        key: &str,
        limit: &crate::ratelimit::RateLimit,
    ) -> Result<crate::ratelimit::Admission, PortError>;
}

/// A block of outbound quota taken at once from a [`ResilienceStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaGrant {
    /// Calls granted now (0: none).
    pub granted: u32,
    /// When none was granted, how long until one would be.
    pub retry_after: Duration,
}

/// One pod's claim on an insurer's shared concurrency cap (see
/// [`crate::slots`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotClaim {
    /// The claiming pod, unique per process.
    pub holder: String,
    /// The cap across all pods.
    pub cap: u32,
    /// Slots it would like.
    pub want: u32,
    /// Slots it may still have in flight: the store never records less.
    pub floor: u32,
    /// How long the lease lives unless claimed again.
    pub ttl: Duration,
}

/// The state the aggregator's resilience policies share between pods
/// (Valkey in production), built so that no insurer call costs a round trip:
///
/// - the outbound quota is taken in blocks ([`crate::ratelimit::gcra_take`]);
/// - concurrency slots are leased per pod, renewed periodically
///   ([`crate::slots::grant_slots`]);
/// - a circuit breaker's state is a small value each pod publishes on a
///   transition and reads periodically.
#[async_trait]
pub trait ResilienceStore: Send + Sync + fmt::Debug + 'static {
    /// Takes up to `want` calls of `key`'s quota under `limit` at once.
    async fn take_quota(
        &self,
        key: &str,
        limit: &crate::ratelimit::RateLimit,
        want: u32,
    ) -> Result<QuotaGrant, PortError>;

    /// Claims slots of `key`'s concurrency cap; expired leases of other
    /// holders are dropped first.
    async fn claim_slots(
        &self,
        key: &str,
        claim: &SlotClaim,
    ) -> Result<crate::slots::SlotGrant, PortError>;

    /// Gives back every slot `holder` holds (on shutdown).
    async fn release_slots(&self, key: &str, holder: &str) -> Result<(), PortError>;

    /// Publishes a breaker's state for `ttl`.
    async fn put_breaker(
        &self,
        key: &str,
        state: &BreakerSnapshot,
        ttl: Duration,
    ) -> Result<(), PortError>;

    /// The breaker state last published for `key`, if still live.
    async fn get_breaker(&self, key: &str) -> Result<Option<BreakerSnapshot>, PortError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Cause {
        text: &'static str,
        #[source]
        inner: Option<Box<Cause>>,
    }

    #[test]
    fn the_display_names_every_cause_once() {
        let root = Cause {
            text: "password authentication failed for user \"osago\"",
            inner: None,
        };
        // A wrapper that repeats its source's text, as many clients do.
        let wrapper = Cause {
            text: "error returned from database: password authentication failed for user \"osago\"",
            inner: Some(Box::new(root)),
        };
        let err = PortError::new(PortErrorKind::Unavailable, "postgres: connect failed")
            .with_source(wrapper);
        assert_eq!(
            err.to_string(),
            "Unavailable: postgres: connect failed: error returned from database: \
             password authentication failed for user \"osago\""
        );
        let plain = PortError::new(PortErrorKind::Timeout, "valkey: ping");
        assert_eq!(plain.to_string(), "Timeout: valkey: ping");
        // A message that already quotes its source does not repeat it.
        let quoted = PortError::new(
            PortErrorKind::Timeout,
            "creating topics failed: Local: Timed out",
        )
        .with_source(Cause {
            text: "Local: Timed out",
            inner: None,
        });
        assert_eq!(
            quoted.to_string(),
            "Timeout: creating topics failed: Local: Timed out"
        );
    }
}
