//! The live feed: a consumer outside any group, assigned every partition of
//! the quote and error topics at their current end, so each follower sees
//! every event published after `follow` returns. It commits nothing.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use osago_core::outbox::Stream;
use osago_core::ports::{PortError, PortErrorKind, Traced};
use osago_core::InsurerEvent;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::context::TracingContext;
use super::{kafka_error, KafkaConfig, OffloadDrop};
use crate::codec;

type LiveConsumer = StreamConsumer<TracingContext>;

/// Starts one follower: its own consumer, every partition assigned at the
/// end offset the broker reports now.
pub(crate) async fn follow(
    client: &rdkafka::ClientConfig,
    config: &KafkaConfig,
) -> Result<BoxStream<'static, Traced<InsurerEvent>>, PortError> {
    let mut client = client.clone();
    // librdkafka wants a group id for `assign`; this one is never joined
    // and nothing is committed under it.
    let group = format!(
        "{}-live-{}",
        config.client_id,
        uuid::Uuid::new_v4().simple()
    );
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "latest")
        .set(
            "fetch.wait.max.ms",
            config.fetch_wait.as_millis().to_string(),
        );
    let consumer: LiveConsumer = client
        .create_with_context(TracingContext::default())
        .map_err(|e| kafka_error("creating a live consumer failed", e))?;
    let consumer = Arc::new(OffloadDrop::new(consumer));

    let topics = [config.quotes.clone(), config.errors.clone()];
    let timeout = config.request_timeout;
    let assignment = {
        let consumer = consumer.clone();
        tokio::task::spawn_blocking(move || end_offsets(consumer.get(), &topics, timeout))
            .await
            .map_err(|_| PortError::new(PortErrorKind::Unavailable, "live feed setup panicked"))??
    };
    let partitions = assignment.count();
    consumer
        .get()
        .assign(&assignment)
        .map_err(|e| kafka_error("assigning partitions failed", e))?;
    tracing::info!(partitions, "live feed following");

    let quotes: Arc<str> = Arc::from(config.quotes.as_str());
    let stream = futures::stream::unfold(consumer, move |consumer| {
        let quotes = quotes.clone();
        async move {
            loop {
                let decoded = match consumer.get().recv().await {
                    Ok(message) => {
                        let stream = if message.topic() == &*quotes {
                            Stream::Quotes
                        } else {
                            Stream::Errors
                        };
                        let decoded = message
                            .payload()
                            .ok_or_else(|| {
                                PortError::new(PortErrorKind::Corrupt, "message without payload")
                            })
                            .and_then(|p| codec::decode_insurer_event(stream, p))
                            .map(|event| Traced {
                                event,
                                trace: super::group::trace_of(&message),
                            });
                        decoded.map_err(|err| {
                            tracing::warn!(
                                topic = message.topic(),
                                partition = message.partition(),
                                offset = message.offset(),
                                error = %err,
                                "live feed skipping undecodable message"
                            );
                        })
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "live feed receive failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Err(())
                    }
                };
                if let Ok(event) = decoded {
                    return Some((event, consumer));
                }
            }
        }
    });
    Ok(stream.boxed())
}

/// Every partition of `topics` at its current end offset (blocking).
fn end_offsets(
    consumer: &LiveConsumer,
    topics: &[String],
    timeout: Duration,
) -> Result<TopicPartitionList, PortError> {
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| kafka_error("fetching metadata failed", e))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions())
            .unwrap_or_default();
        if partitions.is_empty() {
            return Err(PortError::new(
                PortErrorKind::Unavailable,
                format!("topic {topic} has no partitions"),
            ));
        }
        for partition in partitions {
            let (_low, high) = consumer
                .fetch_watermarks(topic, partition.id(), timeout)
                .map_err(|e| kafka_error("fetching end offsets failed", e))?;
            tpl.add_partition_offset(topic, partition.id(), Offset::Offset(high))
                .map_err(|e| kafka_error("building the assignment failed", e))?;
        }
    }
    Ok(tpl)
}
