//! Consumer-group subscriptions with manual, contiguous offset commits.
//!
//! Each subscription is one `StreamConsumer` in group `group` with
//! auto-commit off. A delivered message is recorded in the subscription's
//! [`AckTracker`]; its [`Ack`] marks it applied. A task commits, every
//! `commit_interval`, each partition's highest contiguous applied offset
//! (plus one) with an explicit offset list, so out-of-order acks never skip
//! an unapplied message. An undecodable message is logged (topic, partition
//! and offset only), counted, and written to the dead-letter topic; it
//! counts as applied once the dead-letter topic has it (until then the
//! offsets committed stop before it, so a crash delivers it again).
//!
//! On revocation a partition's committable offset is committed, then its
//! state is dropped: its unapplied messages go to
//! the new owner (a duplicate at worst; consumers deduplicate). Dropping
//! the subscription stops the commit task, commits what it can and closes
//! the consumer (leaving the group) on a detached thread.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use osago_core::ports::{Ack, Delivery, PortError, PortErrorKind, Subscription};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::context::{forward_error, forward_log};
use super::tracker::AckTracker;
use super::{kafka_error, OffloadDrop};

/// Decodes one message's payload, given its topic.
pub(crate) type Decode<T> = Box<dyn Fn(&str, &[u8]) -> Result<T, PortError> + Send + Sync>;

type Tracker = Arc<Mutex<AckTracker>>;

fn lock(tracker: &Tracker) -> std::sync::MutexGuard<'_, AckTracker> {
    // The tracker is never left half-updated, so a poisoned lock is usable.
    tracker.lock().unwrap_or_else(|e| e.into_inner())
}

/// The consumer context of a group subscription: rebalance handling and
/// commit results.
pub(crate) struct GroupContext {
    group: String,
    tracker: Tracker,
    stats: Arc<super::ConsumerStats>,
}

impl std::fmt::Debug for GroupContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupContext")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(level, fac, log_message);
    }

    /// The group's lag per partition, for `osago_kafka_consumer_lag`
    /// (parsed loosely, not through rdkafka's strict `Statistics`).
    fn stats_raw(&self, statistics: &[u8]) {
        self.stats.record_statistics(&self.group, statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        forward_error(error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(revoked) => {
                let mut commit = TopicPartitionList::new();
                {
                    let mut tracker = lock(&self.tracker);
                    for elem in revoked.elements() {
                        if let Some(position) = tracker.revoke(elem.topic(), elem.partition()) {
                            let _ = commit.add_partition_offset(
                                elem.topic(),
                                elem.partition(),
                                Offset::Offset(position),
                            );
                        }
                    }
                }
                tracing::info!(
                    group = %self.group,
                    partitions = revoked.count(),
                    committing = commit.count(),
                    "partitions revoked"
                );
                if commit.count() > 0 && !consumer.assignment_lost() {
                    // Asynchronous: a synchronous commit waits for the
                    // coordinator without bound. librdkafka sends it before
                    // the rebalance goes on, and a closing consumer waits
                    // for its outstanding commits before leaving the group.
                    if let Err(err) = consumer.commit(&commit, CommitMode::Async) {
                        tracing::warn!(group = %self.group, error = %err, "commit on revocation failed");
                    }
                }
            }
            Rebalance::Assign(assigned) => {
                tracing::info!(group = %self.group, partitions = assigned.count(), "partitions assigned");
            }
            Rebalance::Error(err) => {
                tracing::warn!(group = %self.group, error = %err, "rebalance failed");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                for elem in offsets.elements() {
                    tracing::trace!(
                        group = %self.group,
                        topic = elem.topic(),
                        partition = elem.partition(),
                        offset = elem.offset().to_raw(),
                        "offset committed"
                    );
                }
            }
            // Nothing was pending (a commit of an empty list).
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(err) => {
                tracing::warn!(group = %self.group, error = %err, "offset commit failed");
                let mut tracker = lock(&self.tracker);
                for elem in offsets.elements() {
                    if let Some(offset) = elem.offset().to_raw() {
                        tracker.commit_failed(elem.topic(), elem.partition(), offset);
                    }
                }
            }
        }
    }
}

type GroupConsumer = StreamConsumer<GroupContext>;

/// Commits every committable position with `mode`.
fn commit_now<C: Consumer<GroupContext>>(
    consumer: &C,
    tracker: &Tracker,
    group: &str,
    mode: CommitMode,
) {
    let commits = lock(tracker).take_committable();
    if commits.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::with_capacity(commits.len());
    for (topic, partition, offset) in &commits {
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    if let Err(err) = consumer.commit(&tpl, mode) {
        tracing::warn!(group, error = %err, "offset commit failed");
        let mut tracker = lock(tracker);
        for (topic, partition, offset) in &commits {
            tracker.commit_failed(topic, *partition, *offset);
        }
    }
}

/// Commits every `interval` until stopped or the consumer is gone. Holds
/// the consumer weakly so that dropping the subscription closes it.
async fn commit_loop(
    consumer: Weak<OffloadDrop<GroupConsumer>>,
    tracker: Tracker,
    group: String,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some(consumer) = consumer.upgrade() else {
            return;
        };
        commit_now(consumer.get(), &tracker, &group, CommitMode::Async);
    }
}

/// Acknowledges one delivered message.
struct KafkaAck {
    tracker: Tracker,
    topic: Arc<str>,
    partition: i32,
    offset: i64,
}

impl std::fmt::Debug for KafkaAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaAck")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .finish()
    }
}

impl Ack for KafkaAck {
    fn ack(self: Box<Self>) {
        lock(&self.tracker).acked(&self.topic, self.partition, self.offset);
    }
}

/// A subscription of one consumer-group member.
pub(crate) struct GroupSubscription<T> {
    consumer: Option<Arc<OffloadDrop<GroupConsumer>>>,
    tracker: Tracker,
    group: String,
    decode: Decode<T>,
    stop: CancellationToken,
    /// Topic names shared by the acks, to avoid one allocation per message.
    topics: Vec<Arc<str>>,
    /// Counts skipped records.
    stats: Arc<super::ConsumerStats>,
    /// Writes the dead letters.
    bus: super::KafkaBus,
}

/// An undecodable record, as the dead-letter topic gets it.
pub(crate) struct DeadRecord {
    pub(crate) group: String,
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) headers: Option<OwnedHeaders>,
    /// Why it was refused (never quotes the payload).
    pub(crate) reason: String,
}

/// The `traceparent` header of a record, if it has a valid one.
pub(crate) fn trace_of<M: Message>(message: &M) -> Option<osago_core::trace::TraceContext> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == super::TRACEPARENT)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(osago_core::trace::TraceContext::parse)
}

impl<T> std::fmt::Debug for GroupSubscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSubscription")
            .field("group", &self.group)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// Consumer settings of a group member, on top of the common ones.
pub(crate) fn group_settings(
    config: &mut rdkafka::ClientConfig,
    group: &str,
    session: Duration,
    instance_id: Option<&str>,
    fetch_wait: Duration,
) {
    if let Some(instance) = instance_id {
        config.set("group.instance.id", instance);
    }
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", fetch_wait.as_millis().to_string())
        .set("session.timeout.ms", session.as_millis().to_string())
        .set(
            "heartbeat.interval.ms",
            (session.as_millis() / 3).max(100).to_string(),
        );
}

impl<T: Send + 'static> GroupSubscription<T> {
    /// Joins `group` on `topics` (the join completes in the background, on
    /// the first calls to `next`).
    pub(crate) fn start(
        client: &rdkafka::ClientConfig,
        group: &str,
        topics: &[&str],
        commit_interval: Duration,
        decode: Decode<T>,
        bus: super::KafkaBus,
    ) -> Result<Self, PortError> {
        let stats = bus.consumer_stats();
        let tracker = Tracker::default();
        let context = GroupContext {
            group: group.to_owned(),
            tracker: tracker.clone(),
            stats: stats.clone(),
        };
        let consumer: GroupConsumer = client
            .create_with_context(context)
            .map_err(|e| kafka_error("creating a consumer failed", e))?;
        consumer
            .subscribe(topics)
            .map_err(|e| kafka_error("subscribing failed", e))?;
        let consumer = Arc::new(OffloadDrop::new(consumer));
        let stop = CancellationToken::new();
        tokio::spawn(commit_loop(
            Arc::downgrade(&consumer),
            tracker.clone(),
            group.to_owned(),
            commit_interval,
            stop.clone(),
        ));
        tracing::info!(group, topics = ?topics, "subscribed");
        Ok(Self {
            consumer: Some(consumer),
            tracker,
            group: group.to_owned(),
            decode,
            stop,
            topics: topics.iter().map(|t| Arc::from(*t)).collect(),
            stats,
            bus,
        })
    }

    fn topic(&self, name: &str) -> Arc<str> {
        self.topics
            .iter()
            .find(|t| &***t == name)
            .cloned()
            .unwrap_or_else(|| Arc::from(name))
    }
}

#[async_trait]
impl<T: Send + 'static> Subscription<T> for GroupSubscription<T> {
    async fn next(&mut self) -> Option<Result<Delivery<T>, PortError>> {
        let consumer = self.consumer.clone()?;
        loop {
            // `recv` is cancellation safe, and nothing below awaits: a
            // dropped `next` loses no message.
            let message = match consumer.get().recv().await {
                Ok(message) => message,
                Err(err) => return Some(Err(kafka_error("receiving failed", err))),
            };
            let decoded = match message.payload() {
                Some(payload) => (self.decode)(message.topic(), payload),
                None => Err(PortError::new(
                    PortErrorKind::Corrupt,
                    "message without payload",
                )),
            };
            let topic = self.topic(message.topic());
            let (partition, offset) = (message.partition(), message.offset());
            lock(&self.tracker).delivered(&topic, partition, offset);
            match decoded {
                Ok(event) => {
                    return Some(Ok(Delivery {
                        event,
                        trace: trace_of(&message),
                        ack: Box::new(KafkaAck {
                            tracker: self.tracker.clone(),
                            topic,
                            partition,
                            offset,
                        }),
                    }));
                }
                Err(err) => {
                    self.stats.record_skip(&self.group, &topic);
                    tracing::warn!(
                        group = %self.group,
                        topic = %topic,
                        partition,
                        offset,
                        error = %err,
                        "undecodable message; writing it to the dead-letter topic"
                    );
                    let record = DeadRecord {
                        group: self.group.clone(),
                        topic,
                        partition,
                        offset,
                        key: message.key().map(<[u8]>::to_vec),
                        payload: message.payload().map(<[u8]>::to_vec),
                        headers: message.headers().map(|h| h.detach()),
                        reason: err.to_string(),
                    };
                    tokio::spawn(dead_letter(
                        self.bus.clone(),
                        record,
                        self.tracker.clone(),
                        self.stats.clone(),
                        self.stop.clone(),
                    ));
                }
            }
        }
    }
}

/// Writes `record` to the dead-letter topic, retrying with backoff until
/// it lands (or the subscription stops), then acknowledges it: offsets are
/// never committed past a poison record the dead-letter topic lacks.
async fn dead_letter(
    bus: super::KafkaBus,
    record: DeadRecord,
    tracker: Tracker,
    stats: Arc<super::ConsumerStats>,
    stop: CancellationToken,
) {
    let mut wait = Duration::from_millis(200);
    loop {
        match bus.dead_letter(&record).await {
            Ok(()) => {
                lock(&tracker).acked(&record.topic, record.partition, record.offset);
                stats.record_dead_letter(&record.group, &record.topic);
                tracing::info!(
                    group = %record.group,
                    topic = %record.topic,
                    partition = record.partition,
                    offset = record.offset,
                    "undecodable message written to the dead-letter topic"
                );
                return;
            }
            Err(err) => {
                tracing::warn!(
                    topic = %record.topic,
                    partition = record.partition,
                    offset = record.offset,
                    error = %err,
                    "writing a dead letter failed; retrying"
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return,
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

impl<T> Drop for GroupSubscription<T> {
    fn drop(&mut self) {
        self.stop.cancel();
        let Some(consumer) = self.consumer.take() else {
            return;
        };
        // Commit what is applied, then close: closing waits for the
        // outstanding commits, then leaves the group. It blocks on the
        // broker (for as long as the broker is gone), so it runs on a
        // detached thread that no runtime shutdown waits for.
        let tracker = self.tracker.clone();
        let group = std::mem::take(&mut self.group);
        let close = move || {
            commit_now(consumer.get(), &tracker, &group, CommitMode::Async);
            // The commit task may hold the consumer for a moment.
            let mut consumer = consumer;
            for _ in 0..200 {
                match Arc::try_unwrap(consumer) {
                    Ok(last) => {
                        last.close_here();
                        tracing::debug!(group, "consumer closed");
                        return;
                    }
                    Err(shared) => {
                        consumer = shared;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        };
        super::detach("kafka-close", close);
    }
}
