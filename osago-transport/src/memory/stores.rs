//! In-memory stores: the aggregator's state store, core-app's request store
//! with its outbox, and the read model. Every entry has a TTL.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use osago_core::outbox::OutboxMessage;
use osago_core::ports::{
    AnswerSample, InsurerProgress, OutboxStore, PortError, ReadModel, RequestStore, RequestSummary,
    StateStore,
};
use osago_core::request::ConsentRecord;
use osago_core::showcase::OfferRow;
use osago_core::{InsurerEvent, InsurerId, QuoteRequest, RequestEvent, RequestId};
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use super::TtlMap;

/// The aggregator's in-flight state, in memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryStateStore {
    inner: Arc<Mutex<StateInner>>,
}

#[derive(Debug, Default)]
struct StateInner {
    claims: TtlMap<RequestId, ()>,
    progress: TtlMap<RequestId, BTreeMap<InsurerId, InsurerProgress>>,
    /// Requests in flight: their event and lease expiry.
    in_flight: TtlMap<RequestId, (RequestEvent, Instant)>,
    /// What was learned of each insurer's answer times.
    answers: TtlMap<InsurerId, Vec<AnswerSample>>,
}

impl MemoryStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remaining TTL of every live entry (for the "everything expires" checks).
    pub fn ttls(&self) -> Vec<Duration> {
        let inner = self.inner.lock().expect("state lock");
        let mut out = inner.claims.ttls();
        out.extend(inner.progress.ttls());
        out.extend(inner.in_flight.ttls());
        out.extend(inner.answers.ttls());
        out
    }
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn save_progress(
        &self,
        progress: &InsurerProgress,
        ttl: Duration,
    ) -> Result<(), PortError> {
        let mut inner = self.inner.lock().expect("state lock");
        if let Some(map) = inner.progress.get_mut(&progress.request_id) {
            map.insert(progress.insurer_id.clone(), progress.clone());
            inner.progress.touch(&progress.request_id, ttl);
        } else {
            let map = BTreeMap::from([(progress.insurer_id.clone(), progress.clone())]);
            inner.progress.insert(progress.request_id, map, ttl);
        }
        Ok(())
    }

    async fn load_progress(
        &self,
        request_id: &RequestId,
    ) -> Result<Vec<InsurerProgress>, PortError> {
        let inner = self.inner.lock().expect("state lock");
        Ok(inner
            .progress
            .get(request_id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn begin_request(
        &self,
        event: &RequestEvent,
        lease: Duration,
        keep: Duration,
        ttl: Duration,
    ) -> Result<bool, PortError> {
        let mut inner = self.inner.lock().expect("state lock");
        if inner.claims.get(&event.request_id).is_some() {
            return Ok(false);
        }
        inner.claims.insert(event.request_id, (), ttl);
        let expiry = Instant::now() + lease;
        inner
            .in_flight
            .insert(event.request_id, (event.clone(), expiry), keep);
        Ok(true)
    }

    async fn renew_leases(&self, ids: &[RequestId], lease: Duration) -> Result<(), PortError> {
        let mut inner = self.inner.lock().expect("state lock");
        let expiry = Instant::now() + lease;
        for id in ids {
            if let Some((_, until)) = inner.in_flight.get_mut(id) {
                *until = expiry;
            }
        }
        Ok(())
    }

    async fn take_over(&self, lease: Duration, max: usize) -> Result<Vec<RequestEvent>, PortError> {
        let mut inner = self.inner.lock().expect("state lock");
        let now = Instant::now();
        let expired: Vec<RequestId> = inner
            .in_flight
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(id, _)| *id)
            .take(max)
            .collect();
        let mut out = Vec::with_capacity(expired.len());
        for id in expired {
            if let Some((event, until)) = inner.in_flight.get_mut(&id) {
                *until = now + lease;
                out.push(event.clone());
            }
        }
        Ok(out)
    }

    async fn end_request(&self, request_id: &RequestId) -> Result<(), PortError> {
        self.inner
            .lock()
            .expect("state lock")
            .in_flight
            .remove(request_id);
        Ok(())
    }

    async fn save_answer_times(
        &self,
        insurer: &InsurerId,
        samples: &[AnswerSample],
        ttl: Duration,
    ) -> Result<(), PortError> {
        self.inner.lock().expect("state lock").answers.insert(
            insurer.clone(),
            samples.to_vec(),
            ttl,
        );
        Ok(())
    }

    async fn load_answer_times(&self, insurer: &InsurerId) -> Result<Vec<AnswerSample>, PortError> {
        Ok(self
            .inner
            .lock()
            .expect("state lock")
            .answers
            .get(insurer)
            .cloned()
            .unwrap_or_default())
    }
}

#[derive(Debug)]
struct OutboxEntry {
    message: OutboxMessage,
    /// When it was enqueued: it is deleted `retention` later, whatever its
    /// state (it holds personal data).
    enqueued: Instant,
    expired: bool,
    claimed_until: Option<Instant>,
    dead: bool,
}

#[derive(Debug)]
struct RequestsInner {
    requests: TtlMap<RequestId, (RequestSummary, QuoteRequest, ConsentRecord)>,
    outbox: BTreeMap<(chrono::DateTime<chrono::Utc>, Uuid), OutboxEntry>,
    index: HashMap<Uuid, (chrono::DateTime<chrono::Utc>, Uuid)>,
}

/// core-app's requests and outbox, in memory. One lock guards both, so a
/// request and its outbox message are written atomically.
#[derive(Debug, Clone)]
pub struct MemoryRequestStore {
    inner: Arc<Mutex<RequestsInner>>,
    notify: Arc<Notify>,
    retention: Duration,
}

impl MemoryRequestStore {
    /// A store keeping requests for `retention`.
    pub fn new(retention: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(RequestsInner {
                requests: TtlMap::default(),
                outbox: BTreeMap::new(),
                index: HashMap::new(),
            })),
            notify: Arc::new(Notify::new()),
            retention,
        }
    }

    /// Messages still in the outbox (pending, claimed or dead).
    pub fn outbox_len(&self) -> usize {
        self.inner.lock().expect("requests lock").outbox.len()
    }
}

#[async_trait]
impl RequestStore for MemoryRequestStore {
    async fn create(&self, event: &RequestEvent, consent: &ConsentRecord) -> Result<(), PortError> {
        let summary = &RequestSummary::of(event);
        let request = &event.request;
        let message = &crate::codec::request_outbox_message(event);
        {
            let mut inner = self.inner.lock().expect("requests lock");
            inner.requests.insert(
                summary.request_id,
                (summary.clone(), request.clone(), consent.clone()),
                self.retention,
            );
            let key = (message.created_at, message.id);
            inner.index.insert(message.id, key);
            inner.outbox.insert(
                key,
                OutboxEntry {
                    message: message.clone(),
                    enqueued: Instant::now(),
                    expired: false,
                    claimed_until: None,
                    dead: false,
                },
            );
        }
        self.notify.notify_waiters();
        self.notify.notify_one();
        Ok(())
    }

    async fn summary(&self, request_id: &RequestId) -> Result<Option<RequestSummary>, PortError> {
        let inner = self.inner.lock().expect("requests lock");
        Ok(inner.requests.get(request_id).map(|(s, _, _)| s.clone()))
    }

    /// Requests expire by themselves; outbox messages (personal data) past
    /// retention are deleted here, whatever their state.
    async fn purge_expired(&self) -> Result<u64, PortError> {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("requests lock");
        let old: Vec<_> = inner
            .outbox
            .iter()
            .filter(|(_, e)| e.enqueued + self.retention <= now)
            .map(|(key, e)| (*key, e.message.id))
            .collect();
        for (key, id) in &old {
            inner.outbox.remove(key);
            inner.index.remove(id);
        }
        Ok(old.len() as u64)
    }
}

#[async_trait]
impl OutboxStore for MemoryRequestStore {
    async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<OutboxMessage>, PortError> {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("requests lock");
        let mut out = Vec::new();
        for entry in inner.outbox.values_mut() {
            if out.len() >= limit {
                break;
            }
            if entry.dead || entry.expired || entry.claimed_until.is_some_and(|until| until > now) {
                continue;
            }
            entry.claimed_until = Some(now + lease);
            out.push(entry.message.clone());
        }
        Ok(out)
    }

    async fn mark_published(&self, ids: &[Uuid]) -> Result<(), PortError> {
        let mut inner = self.inner.lock().expect("requests lock");
        for id in ids {
            if let Some(key) = inner.index.remove(id) {
                inner.outbox.remove(&key);
            }
        }
        Ok(())
    }

    async fn mark_failed(&self, id: Uuid, dead_after: u32) -> Result<(), PortError> {
        let mut inner = self.inner.lock().expect("requests lock");
        let Some(key) = inner.index.get(&id).copied() else {
            return Ok(());
        };
        if let Some(entry) = inner.outbox.get_mut(&key) {
            entry.message.attempts += 1;
            entry.claimed_until = None;
            entry.dead = entry.message.attempts >= dead_after;
        }
        Ok(())
    }

    async fn mark_expired(&self, ids: &[Uuid]) -> Result<(), PortError> {
        let mut inner = self.inner.lock().expect("requests lock");
        for id in ids {
            let Some(key) = inner.index.get(id).copied() else {
                continue;
            };
            if let Some(entry) = inner.outbox.get_mut(&key) {
                entry.expired = true;
                entry.claimed_until = None;
            }
        }
        Ok(())
    }

    async fn requeue_dead(&self) -> Result<u64, PortError> {
        let requeued = {
            let mut inner = self.inner.lock().expect("requests lock");
            let mut requeued = 0;
            for entry in inner.outbox.values_mut().filter(|e| e.dead) {
                entry.dead = false;
                entry.message.attempts = 0;
                entry.claimed_until = None;
                requeued += 1;
            }
            requeued
        };
        if requeued > 0 {
            self.notify.notify_one();
        }
        Ok(requeued)
    }

    async fn wait_for_work(&self, max_wait: Duration) {
        let _ = tokio::time::timeout(max_wait, self.notify.notified()).await;
    }

    async fn dead_count(&self) -> Result<u64, PortError> {
        let inner = self.inner.lock().expect("requests lock");
        Ok(inner.outbox.values().filter(|e| e.dead).count() as u64)
    }

    async fn backlog(&self) -> Result<(u64, Option<chrono::DateTime<chrono::Utc>>), PortError> {
        let inner = self.inner.lock().expect("requests lock");
        let mut waiting = inner
            .outbox
            .iter()
            .filter(|(_, e)| !e.dead && !e.expired)
            .map(|((created_at, _), _)| *created_at);
        let oldest = waiting.next();
        Ok((oldest.map_or(0, |_| 1 + waiting.count() as u64), oldest))
    }
}

/// The quote showcase, in memory.
#[derive(Debug, Clone)]
pub struct MemoryReadModel {
    inner: Arc<Mutex<TtlMap<RequestId, BTreeMap<InsurerId, OfferRow>>>>,
    retention: Duration,
}

impl MemoryReadModel {
    /// A read model keeping each request's rows for `retention`.
    pub fn new(retention: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(TtlMap::default())),
            retention,
        }
    }
}

#[async_trait]
impl ReadModel for MemoryReadModel {
    async fn apply(&self, event: &InsurerEvent) -> Result<bool, PortError> {
        let row = OfferRow::from_event(event);
        let mut inner = self.inner.lock().expect("read model lock");
        let request_id = event.request_id();
        if inner.get(&request_id).is_none() {
            inner.insert(request_id, BTreeMap::new(), self.retention);
        }
        let rows = inner.get_mut(&request_id).expect("just inserted");
        match rows.get(&row.insurer_id) {
            Some(existing) if existing.version >= row.version => Ok(false),
            previous => {
                let row = row.succeeding(previous);
                rows.insert(row.insurer_id.clone(), row);
                Ok(true)
            }
        }
    }

    async fn rows(&self, request_id: &RequestId) -> Result<Vec<OfferRow>, PortError> {
        let inner = self.inner.lock().expect("read model lock");
        Ok(inner
            .get(request_id)
            .map(|rows| rows.values().cloned().collect())
            .unwrap_or_default())
    }
}
