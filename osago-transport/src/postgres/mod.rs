//! PostgreSQL adapter (sqlx): core-app's requests with the transactional
//! outbox, the read model ("quote showcase") and the audit log.
//!
//! Tables (migrations in `migrations/postgres/`, SQL in `sql/`):
//!
//! - `osago_requests`: one row per request; `request` holds the submitted
//!   request (personal data) and is deleted at `expires_at` (retention);
//! - `osago_outbox`: messages written in the same transaction as their
//!   request; an `AFTER INSERT` trigger sends `NOTIFY osago_outbox` on
//!   commit, which wakes the relay (`LISTEN`); the relay claims batches with
//!   `FOR UPDATE SKIP LOCKED` and a lease, deletes what it published, and
//!   dead-letters a message after N failed attempts;
//! - `osago_offers`: the read model, UPSERT guarded by `version`;
//! - `osago_audit`: every quote and error event received, when enabled.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use osago_core::outbox::{OutboxMessage, Stream};
use osago_core::ports::{
    HealthCheck, OutboxStore, PortError, PortErrorKind, ReadModel, RequestStore, RequestSummary,
};
use osago_core::showcase::OfferRow;
use osago_core::{InsurerEvent, RequestEvent, RequestId};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::Row;
use tokio::sync::Mutex;
use uuid::Uuid;

/// The NOTIFY channel of new outbox messages.
const OUTBOX_CHANNEL: &str = "osago_outbox";

/// PostgreSQL settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PostgresConfig {
    /// Pool size.
    pub max_connections: u32,
    /// How long to wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// How long requests, quotes and audit rows are kept.
    pub retention: Duration,
    /// Record every quote and error event in `osago_audit`.
    pub audit: bool,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            max_connections: 20,
            acquire_timeout: Duration::from_secs(3),
            retention: Duration::from_secs(3 * 24 * 3600),
            audit: false,
        }
    }
}

/// core-app's store on PostgreSQL: [`RequestStore`], [`OutboxStore`] and
/// [`ReadModel`] on one pool.
#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    listener: Mutex<Option<PgListener>>,
    config: PostgresConfig,
}

fn unavailable(what: &str) -> impl FnOnce(sqlx::Error) -> PortError + '_ {
    move |err| {
        let kind = match &err {
            sqlx::Error::PoolTimedOut => PortErrorKind::Timeout,
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => PortErrorKind::Corrupt,
            _ => PortErrorKind::Unavailable,
        };
        PortError::new(kind, format!("postgres: {what} failed")).with_source(err)
    }
}

fn stream_name(stream: Stream) -> &'static str {
    stream.as_str()
}

fn stream_from(name: &str) -> Result<Stream, PortError> {
    match name {
        "requests" => Ok(Stream::Requests),
        "quotes" => Ok(Stream::Quotes),
        "errors" => Ok(Stream::Errors),
        _ => Err(PortError::new(
            PortErrorKind::Corrupt,
            "postgres: unknown outbox stream",
        )),
    }
}

impl PostgresStore {
    /// Connects and runs the migrations.
    pub async fn connect(url: &str, config: PostgresConfig) -> Result<Self, PortError> {
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect(url)
            .await
            .map_err(unavailable("connect"))?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| {
                PortError::new(PortErrorKind::Unavailable, "postgres: migrations failed")
                    .with_source(e)
            })?;
        Ok(Self {
            pool,
            listener: Mutex::new(None),
            config,
        })
    }

    /// The pool (tests and health checks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), PortError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable("ping"))
    }

    fn expires_at(&self, from: DateTime<Utc>) -> DateTime<Utc> {
        from + chrono::Duration::from_std(self.config.retention)
            .unwrap_or(chrono::Duration::days(3))
    }

    async fn audit(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        event: &InsurerEvent,
        applied: bool,
    ) -> Result<(), PortError> {
        let (stream, event_id, json) = match event {
            InsurerEvent::Quote(e) => ("quotes", e.event_id, serde_json::to_value(e)),
            InsurerEvent::Error(e) => ("errors", e.event_id, serde_json::to_value(e)),
        };
        let json = json
            .map_err(|e| PortError::new(PortErrorKind::Corrupt, "audit encode").with_source(e))?;
        sqlx::query(include_str!("sql/insert_audit.sql"))
            .bind(event_id.as_uuid())
            .bind(event.request_id().as_uuid())
            .bind(event.insurer_id().as_str())
            .bind(stream)
            .bind(event.version() as i32)
            .bind(applied)
            .bind(json)
            .bind(self.expires_at(Utc::now()))
            .execute(&mut **tx)
            .await
            .map(|_| ())
            .map_err(unavailable("audit insert"))
    }
}

#[async_trait]
impl HealthCheck for PostgresStore {
    fn name(&self) -> &'static str {
        "database"
    }

    async fn check(&self) -> Result<(), PortError> {
        self.ping().await
    }
}

#[async_trait]
impl RequestStore for PostgresStore {
    async fn create(
        &self,
        event: &RequestEvent,
        consent: &osago_core::request::ConsentRecord,
    ) -> Result<(), PortError> {
        let summary = &RequestSummary::of(event);
        let request = &event.request;
        let message = &crate::codec::request_outbox_message(event);
        let request_json = serde_json::to_value(request)
            .map_err(|e| PortError::new(PortErrorKind::Corrupt, "request encode").with_source(e))?;
        let consent_json = serde_json::to_value(consent)
            .map_err(|e| PortError::new(PortErrorKind::Corrupt, "consent encode").with_source(e))?;
        let mut tx = self.pool.begin().await.map_err(unavailable("begin"))?;
        sqlx::query(include_str!("sql/insert_request.sql"))
            .bind(summary.request_id.as_uuid())
            .bind(summary.created_at)
            .bind(summary.deadline_at)
            .bind(request_json)
            .bind(self.expires_at(summary.created_at))
            .bind(consent_json)
            .execute(&mut *tx)
            .await
            .map_err(unavailable("request insert"))?;
        sqlx::query(include_str!("sql/insert_outbox.sql"))
            .bind(message.id)
            .bind(stream_name(message.stream))
            .bind(&message.key)
            .bind(&message.payload)
            .bind(message.created_at)
            .bind(message.publish_by)
            .bind(message.trace.map(|t| t.header()))
            .execute(&mut *tx)
            .await
            .map_err(unavailable("outbox insert"))?;
        tx.commit().await.map_err(unavailable("commit"))
    }

    async fn summary(&self, request_id: &RequestId) -> Result<Option<RequestSummary>, PortError> {
        let row = sqlx::query(include_str!("sql/request_summary.sql"))
            .bind(request_id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable("request select"))?;
        row.map(|row| {
            Ok(RequestSummary {
                request_id: RequestId::from(
                    row.try_get::<Uuid, _>("request_id")
                        .map_err(unavailable("decode"))?,
                ),
                created_at: row.try_get("created_at").map_err(unavailable("decode"))?,
                deadline_at: row.try_get("deadline_at").map_err(unavailable("decode"))?,
            })
        })
        .transpose()
    }

    async fn purge_expired(&self) -> Result<u64, PortError> {
        let removed: i64 = sqlx::query_scalar(include_str!("sql/purge_expired.sql"))
            .bind(self.config.retention.as_secs_f64())
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable("purge"))?;
        Ok(removed as u64)
    }
}

#[async_trait]
impl OutboxStore for PostgresStore {
    async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<OutboxMessage>, PortError> {
        let rows = sqlx::query(include_str!("sql/claim_outbox.sql"))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(lease.as_secs_f64())
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable("outbox claim"))?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: i64 = row.try_get("seq").map_err(unavailable("decode"))?;
            let stream: String = row.try_get("stream").map_err(unavailable("decode"))?;
            let attempts: i32 = row.try_get("attempts").map_err(unavailable("decode"))?;
            claimed.push((
                seq,
                OutboxMessage {
                    id: row.try_get("id").map_err(unavailable("decode"))?,
                    stream: stream_from(&stream)?,
                    key: row.try_get("key").map_err(unavailable("decode"))?,
                    payload: row.try_get("payload").map_err(unavailable("decode"))?,
                    created_at: row.try_get("created_at").map_err(unavailable("decode"))?,
                    attempts: attempts.max(0) as u32,
                    publish_by: row.try_get("publish_by").map_err(unavailable("decode"))?,
                    trace: row
                        .try_get::<Option<String>, _>("traceparent")
                        .map_err(unavailable("decode"))?
                        .as_deref()
                        .and_then(osago_core::trace::TraceContext::parse),
                },
            ));
        }
        claimed.sort_by_key(|(seq, _)| *seq);
        Ok(claimed.into_iter().map(|(_, m)| m).collect())
    }

    async fn mark_published(&self, ids: &[Uuid]) -> Result<(), PortError> {
        sqlx::query(include_str!("sql/delete_outbox.sql"))
            .bind(ids)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable("outbox delete"))
    }

    async fn mark_failed(&self, id: Uuid, dead_after: u32) -> Result<(), PortError> {
        sqlx::query(include_str!("sql/fail_outbox.sql"))
            .bind(id)
            .bind(i32::try_from(dead_after).unwrap_or(i32::MAX))
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable("outbox failure update"))
    }

    async fn mark_expired(&self, ids: &[Uuid]) -> Result<(), PortError> {
        sqlx::query(include_str!("sql/expire_outbox.sql"))
            .bind(ids)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable("outbox expiry update"))
    }

    async fn requeue_dead(&self) -> Result<u64, PortError> {
        let requeued: i64 = sqlx::query_scalar(include_str!("sql/requeue_dead.sql"))
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable("outbox requeue"))?;
        Ok(requeued.max(0) as u64)
    }

    async fn wait_for_work(&self, max_wait: Duration) {
        let mut guard = self.listener.lock().await;
        if guard.is_none() {
            match PgListener::connect_with(&self.pool).await {
                Ok(mut listener) => match listener.listen(OUTBOX_CHANNEL).await {
                    Ok(()) => *guard = Some(listener),
                    Err(err) => tracing::warn!(error = %err, "postgres listen failed; polling"),
                },
                Err(err) => {
                    tracing::warn!(error = %err, "postgres listener connect failed; polling")
                }
            }
        }
        let Some(listener) = guard.as_mut() else {
            drop(guard);
            tokio::time::sleep(max_wait).await;
            return;
        };
        match tokio::time::timeout(max_wait, listener.try_recv()).await {
            Ok(Ok(Some(_))) | Err(_) => {
                // Drain what else is queued so one wake-up serves many notifications.
                while listener.next_buffered().is_some() {}
            }
            Ok(Ok(None)) => {
                // The connection dropped and will reconnect; messages may have
                // been committed meanwhile, so the relay looks now.
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "postgres listener failed; reconnecting");
                *guard = None;
            }
        }
    }

    async fn dead_count(&self) -> Result<u64, PortError> {
        let count: i64 = sqlx::query_scalar(include_str!("sql/dead_count.sql"))
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable("dead count"))?;
        Ok(count as u64)
    }

    async fn backlog(&self) -> Result<(u64, Option<chrono::DateTime<chrono::Utc>>), PortError> {
        let (count, oldest): (i64, Option<chrono::DateTime<chrono::Utc>>) =
            sqlx::query_as(include_str!("sql/outbox_backlog.sql"))
                .fetch_one(&self.pool)
                .await
                .map_err(unavailable("outbox backlog"))?;
        Ok((count as u64, oldest))
    }
}

#[async_trait]
impl ReadModel for PostgresStore {
    async fn apply(&self, event: &InsurerEvent) -> Result<bool, PortError> {
        let mut changed = self.apply_batch(std::slice::from_ref(event)).await?;
        Ok(changed.pop().unwrap_or(false))
    }

    async fn apply_batch(&self, events: &[InsurerEvent]) -> Result<Vec<bool>, PortError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await.map_err(unavailable("begin"))?;
        let mut changed = Vec::with_capacity(events.len());
        for event in events {
            let row = OfferRow::from_event(event);
            let json = serde_json::to_value(&row)
                .map_err(|e| PortError::new(PortErrorKind::Corrupt, "row encode").with_source(e))?;
            let applied = sqlx::query(include_str!("sql/upsert_offer.sql"))
                .bind(row.request_id.as_uuid())
                .bind(row.insurer_id.as_str())
                .bind(row.version as i32)
                .bind(row.status.as_str())
                .bind(row.quote.as_ref().map(|q| q.premium_kopecks.get()))
                .bind(row.started_at)
                .bind(json)
                .bind(self.expires_at(row.occurred_at))
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable("offer upsert"))?
                .is_some();
            if self.config.audit {
                self.audit(&mut tx, event, applied).await?;
            }
            changed.push(applied);
        }
        tx.commit().await.map_err(unavailable("commit"))?;
        Ok(changed)
    }

    async fn rows(&self, request_id: &RequestId) -> Result<Vec<OfferRow>, PortError> {
        let rows = sqlx::query(include_str!("sql/offers.sql"))
            .bind(request_id.as_uuid())
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable("offers select"))?;
        rows.into_iter()
            .map(|row| {
                let json: serde_json::Value = row.try_get("row").map_err(unavailable("decode"))?;
                let mut offer: OfferRow = serde_json::from_value(json).map_err(|e| {
                    PortError::new(PortErrorKind::Corrupt, "postgres: undecodable offer row")
                        .with_source(e)
                })?;
                offer.started_at = row.try_get("started_at").map_err(unavailable("decode"))?;
                Ok(offer)
            })
            .collect()
    }
}
