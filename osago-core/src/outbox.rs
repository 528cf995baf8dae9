//! The transactional outbox message: written in the same transaction as the
//! request, published by the relay, then removed.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Which logical stream a message goes to (the transport maps it to a topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// New quote requests.
    Requests,
    /// Per-insurer quote states.
    Quotes,
    /// Per-insurer integration errors.
    Errors,
}

impl Stream {
    /// A stable name for logs and metrics (not a topic name).
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Requests => "requests",
            Stream::Quotes => "quotes",
            Stream::Errors => "errors",
        }
    }
}

/// One message waiting in the outbox.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Unique id.
    pub id: Uuid,
    /// Destination stream.
    pub stream: Stream,
    /// Partition key.
    pub key: String,
    /// The encoded event (JSON; may hold personal data, never log it).
    pub payload: Vec<u8>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// Failed publish attempts so far.
    pub attempts: u32,
    /// When the message stops being worth publishing (a request event: its
    /// request's deadline, after which no insurer may answer): the relay
    /// marks it expired instead. `None`: never.
    pub publish_by: Option<DateTime<Utc>>,
    /// The trace the message belongs to (the request's POST), sent on as
    /// the record's `traceparent` header.
    pub trace: Option<crate::trace::TraceContext>,
}

impl std::fmt::Debug for OutboxMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxMessage")
            .field("id", &self.id)
            .field("stream", &self.stream)
            .field("key", &self.key)
            .field("payload_len", &self.payload.len())
            .field("attempts", &self.attempts)
            .field("publish_by", &self.publish_by)
            .field("trace", &self.trace)
            .finish()
    }
}
