//! The in-process bus: the three streams with consumer groups (members of a
//! group share the events; every group gets every event) and a live feed
//! (every follower gets every quote and error event from now on).
//!
//! Payloads travel encoded, exactly as on Kafka, so the codec is exercised
//! on the embedded default too. Events published before any group joined a
//! stream are kept and handed to the first group that joins (as a Kafka
//! topic keeps them for a group starting from the earliest offset).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use osago_core::outbox::{OutboxMessage, Stream};
use osago_core::ports::{
    Ack, Delivery, EventPublisher, LiveFeed, OutcomeSource, PortError, QuoteSink, RequestSource,
    Subscription, Traced,
};
use osago_core::{InsurerEvent, RequestEvent};
use tokio::sync::{broadcast, mpsc};

use crate::codec;

/// How many live events a slow follower may fall behind before it skips.
const LIVE_CAPACITY: usize = 1 << 16;

#[derive(Debug, Clone)]
struct Record {
    stream: Stream,
    payload: Bytes,
    /// What a Kafka record's `traceparent` header would carry.
    trace: Option<osago_core::trace::TraceContext>,
}

type GroupReceiver = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Record>>>;

#[derive(Debug, Default)]
struct Topic {
    /// Events published while no group existed yet.
    retained: Vec<Record>,
    groups: HashMap<String, (mpsc::UnboundedSender<Record>, GroupReceiver)>,
}

#[derive(Debug)]
struct Inner {
    topics: Mutex<HashMap<TopicName, Topic>>,
    live: broadcast::Sender<Traced<InsurerEvent>>,
    stats: MemoryBusStats,
}

/// The bus's two topics: requests, and outcomes (quotes and errors share
/// one queue so a group sees one insurer's events in publish order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TopicName {
    Requests,
    Outcomes,
}

/// Counters for tests and metrics.
#[derive(Debug, Default)]
pub struct MemoryBusStats {
    /// Messages published.
    pub published: AtomicU64,
    /// Messages that could not be decoded and were skipped.
    pub undecodable: AtomicU64,
    /// Live events dropped for followers that fell behind.
    pub live_lagged: AtomicU64,
}

/// The in-process bus. Cloning shares it.
#[derive(Debug, Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> Self {
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                topics: Mutex::new(HashMap::new()),
                live,
                stats: MemoryBusStats::default(),
            }),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &MemoryBusStats {
        &self.inner.stats
    }

    fn send(&self, topic: TopicName, record: Record) {
        self.inner.stats.published.fetch_add(1, Ordering::Relaxed);
        let mut topics = self.inner.topics.lock().expect("bus lock");
        let topic = topics.entry(topic).or_default();
        if topic.groups.is_empty() {
            topic.retained.push(record);
            return;
        }
        for (tx, _) in topic.groups.values() {
            // A closed group has no members left; its events are dropped, as a
            // deleted consumer group's would be.
            let _ = tx.send(record.clone());
        }
    }

    fn join(&self, topic: TopicName, group: &str) -> GroupReceiver {
        let mut topics = self.inner.topics.lock().expect("bus lock");
        let topic = topics.entry(topic).or_default();
        if let Some((_, rx)) = topic.groups.get(group) {
            return rx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        for record in topic.retained.drain(..) {
            let _ = tx.send(record);
        }
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        topic.groups.insert(group.to_owned(), (tx, rx.clone()));
        rx
    }
}

#[derive(Debug)]
struct NoAck;

impl Ack for NoAck {
    fn ack(self: Box<Self>) {}
}

struct MemorySubscription<T> {
    rx: GroupReceiver,
    stats: Arc<Inner>,
    decode: fn(&Record) -> Result<T, PortError>,
}

#[async_trait]
impl<T: Send + 'static> Subscription<T> for MemorySubscription<T> {
    async fn next(&mut self) -> Option<Result<Delivery<T>, PortError>> {
        loop {
            let record = self.rx.lock().await.recv().await?;
            match (self.decode)(&record) {
                Ok(event) => {
                    return Some(Ok(Delivery {
                        event,
                        ack: Box::new(NoAck),
                        trace: record.trace,
                    }))
                }
                Err(err) => {
                    self.stats.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(stream = record.stream.as_str(), error = %err, "skipping undecodable event");
                }
            }
        }
    }
}

#[async_trait]
impl EventPublisher for MemoryBus {
    async fn publish(&self, message: &OutboxMessage) -> Result<(), PortError> {
        let record = Record {
            stream: message.stream,
            payload: Bytes::copy_from_slice(&message.payload),
            trace: message.trace,
        };
        match message.stream {
            Stream::Requests => self.send(TopicName::Requests, record),
            Stream::Quotes | Stream::Errors => {
                let event = codec::decode_insurer_event(message.stream, &message.payload)?;
                let _ = self.inner.live.send(Traced {
                    event,
                    trace: message.trace,
                });
                self.send(TopicName::Outcomes, record);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl QuoteSink for MemoryBus {
    async fn publish(&self, event: &InsurerEvent) -> Result<(), PortError> {
        let (stream, _key, payload) = codec::encode_insurer_event(event);
        self.send(
            TopicName::Outcomes,
            Record {
                stream,
                payload: payload.into(),
                trace: osago_core::trace::current(),
            },
        );
        // No follower is not an error: nobody is watching this pod's streams.
        let _ = self.inner.live.send(Traced {
            event: event.clone(),
            trace: osago_core::trace::current(),
        });
        Ok(())
    }
}

#[async_trait]
impl RequestSource for MemoryBus {
    async fn subscribe(
        &self,
        group: &str,
    ) -> Result<Box<dyn Subscription<RequestEvent>>, PortError> {
        Ok(Box::new(MemorySubscription {
            rx: self.join(TopicName::Requests, group),
            stats: self.inner.clone(),
            decode: |record| codec::decode_request_event(&record.payload),
        }))
    }
}

#[async_trait]
impl OutcomeSource for MemoryBus {
    async fn subscribe(
        &self,
        group: &str,
    ) -> Result<Box<dyn Subscription<InsurerEvent>>, PortError> {
        Ok(Box::new(MemorySubscription {
            rx: self.join(TopicName::Outcomes, group),
            stats: self.inner.clone(),
            decode: |record| codec::decode_insurer_event(record.stream, &record.payload),
        }))
    }
}

#[async_trait]
impl LiveFeed for MemoryBus {
    async fn follow(&self) -> Result<BoxStream<'static, Traced<InsurerEvent>>, PortError> {
        let rx = self.inner.live.subscribe();
        let inner = self.inner.clone();
        let stream = futures::stream::unfold((rx, inner), |(mut rx, inner)| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => return Some((event, (rx, inner))),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        inner.stats.live_lagged.fetch_add(n, Ordering::Relaxed);
                        tracing::warn!(skipped = n, "live feed follower fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(stream.boxed())
    }
}
