//! The Kafka adapter against a private tansu broker: the bus conformance
//! suite, the topic configs as the broker reports them, manual commits of
//! contiguous acknowledgements only, and the stream keys.
//!
//! Each test starts its own broker (in-memory storage), so tests run at
//! once without sharing topics or groups.

#![cfg(feature = "kafka")]

use std::time::Duration;

use futures::StreamExt;
use osago_core::outbox::Stream;
use osago_core::ports::{EventPublisher, QuoteSink, RequestSource, Subscription};
use osago_core::{QuoteStatus, RequestEvent, RequestId};
use osago_testkit::Tansu;
use osago_transport::conformance::bus;
use osago_transport::kafka::{KafkaBus, KafkaConfig, TopicMode};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A broker and a bus connected to it (the topics created).
async fn broker() -> (Tansu, KafkaBus) {
    let tansu = Tansu::start().await;
    let bus = KafkaBus::connect(config(&tansu)).await.expect("connect");
    (tansu, bus)
}

fn config(tansu: &Tansu) -> KafkaConfig {
    let mut config = KafkaConfig {
        client_id: "osago-transport-tests".into(),
        ..KafkaConfig::new(tansu.bootstrap())
    };
    for stream in [Stream::Requests, Stream::Quotes, Stream::Errors] {
        config.topic_settings_mut(stream).partitions = 3;
    }
    config
}

/// Creates `topic` as an operator would, outside the bus.
async fn create_topic(tansu: &Tansu, topic: &str, partitions: i32, retention_ms: &str) {
    let admin: rdkafka::admin::AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .create()
        .expect("admin client");
    let new = rdkafka::admin::NewTopic::new(
        topic,
        partitions,
        rdkafka::admin::TopicReplication::Fixed(1),
    )
    .set("retention.ms", retention_ms);
    let created = admin
        .create_topics([&new], &rdkafka::admin::AdminOptions::new())
        .await
        .expect("create topic");
    assert!(created[0].is_ok(), "{created:?}");
}

/// Topic names on the broker (metadata for all topics: asking for one by
/// name could auto-create it).
fn topics_on(tansu: &Tansu) -> Vec<String> {
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .create()
        .expect("client");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .collect()
}

// Conformance

#[tokio::test]
async fn kafka_published_requests_reach_every_group() {
    let (_tansu, bus) = broker().await;
    bus::published_requests_reach_every_group(&bus, &bus).await;
}

#[tokio::test]
async fn kafka_group_members_share_the_events() {
    let (_tansu, bus) = broker().await;
    bus::group_members_share_the_events(&bus, &bus).await;
}

#[tokio::test]
async fn kafka_undecodable_requests_are_skipped() {
    let (_tansu, bus) = broker().await;
    bus::undecodable_requests_are_skipped(&bus, &bus).await;
}

#[tokio::test]
async fn kafka_acked_requests_are_not_redelivered_to_the_group() {
    let (_tansu, bus) = broker().await;
    bus::acked_requests_are_not_redelivered_to_the_group(&bus, &bus).await;
}

#[tokio::test]
async fn kafka_insurer_events_reach_outcome_subscribers_in_order_per_key() {
    let (_tansu, bus) = broker().await;
    bus::insurer_events_reach_outcome_subscribers_in_order_per_key(&bus, &bus).await;
}

#[tokio::test]
async fn kafka_live_feed_sees_events_published_after_follow() {
    let (_tansu, bus) = broker().await;
    bus::live_feed_sees_events_published_after_follow(&bus, &bus).await;
}

#[tokio::test]
async fn kafka_every_live_follower_sees_every_event() {
    let (_tansu, bus) = broker().await;
    bus::every_live_follower_sees_every_event(&bus, &bus).await;
}

#[tokio::test]
async fn kafka_traces_travel_with_records() {
    let (_tansu, bus) = broker().await;
    bus::traces_travel_with_records(&bus, &bus, &bus, &bus, &bus).await;
}

// Kafka specifics

#[tokio::test]
async fn topics_exist_with_delete_policy_and_required_retention() {
    let (_tansu, bus) = broker().await;
    bus.ping().await.expect("ping");
    let configs = bus.topic_configs().await.expect("topic configs");
    for (topic, least) in [
        ("osago.requests.v1", 259_200_000_i64),
        ("osago.quotes.v1", 259_200_000),
        ("osago.errors.v1", 604_800_000),
    ] {
        let entries = configs
            .get(topic)
            .unwrap_or_else(|| panic!("no config of {topic}: {configs:?}"));
        assert_eq!(
            entries.get("cleanup.policy").map(String::as_str),
            Some("delete"),
            "{topic}: {entries:?}"
        );
        let retention: i64 = entries
            .get("retention.ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{topic} has no retention.ms: {entries:?}"));
        assert!(
            retention >= least,
            "{topic}: retention.ms {retention} < {least}"
        );
    }
}

/// `create` creates each topic with the configured partitions, replication
/// factor and retention.
#[tokio::test]
async fn create_mode_creates_topics_with_their_settings() {
    let tansu = Tansu::start().await;
    let mut config = config(&tansu);
    config.requests_topic.partitions = 5;
    config.requests_topic.retention_ms = 86_400_000;
    let bus = KafkaBus::connect(config).await.expect("connect");
    let configs = bus.topic_configs().await.expect("topic configs");
    assert_eq!(configs["osago.requests.v1"]["retention.ms"], "86400000");
    assert_eq!(configs["osago.errors.v1"]["retention.ms"], "604800000");
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .create()
        .expect("client");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    let layout = |name: &str| {
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .unwrap_or_else(|| panic!("{name} created"));
        (
            topic.partitions().len(),
            topic.partitions()[0].replicas().len(),
        )
    };
    assert_eq!(layout("osago.requests.v1"), (5, 1));
    assert_eq!(layout("osago.quotes.v1"), (3, 1));
}

/// `create` never alters an existing topic: an operator's shorter
/// retention stays.
#[tokio::test]
async fn create_mode_leaves_an_existing_topic_alone() {
    let tansu = Tansu::start().await;
    create_topic(&tansu, "osago.errors.v1", 3, "3600000").await;
    let bus = KafkaBus::connect(config(&tansu)).await.expect("connect");
    let configs = bus.topic_configs().await.expect("topic configs");
    assert_eq!(configs["osago.errors.v1"]["retention.ms"], "3600000");
}

/// `alter` sets an existing topic's retention to the configured one.
#[tokio::test]
async fn alter_mode_sets_the_retention_of_an_existing_topic() {
    let tansu = Tansu::start().await;
    create_topic(&tansu, "osago.errors.v1", 3, "3600000").await;
    let mut config = config(&tansu);
    config.topic_mode = TopicMode::Alter;
    let bus = KafkaBus::connect(config).await.expect("connect");
    let configs = bus.topic_configs().await.expect("topic configs");
    assert_eq!(configs["osago.errors.v1"]["retention.ms"], "604800000");
}

/// `verify` against a topic with a one-day retention fails, one line per
/// difference naming topic, setting, expected and actual, and creates
/// nothing.
#[tokio::test]
async fn verify_mode_names_every_difference() {
    let tansu = Tansu::start().await;
    create_topic(&tansu, "osago.requests.v1", 3, "259200000").await;
    create_topic(&tansu, "osago.quotes.v1", 3, "86400000").await;
    let mut config = config(&tansu);
    config.topic_mode = TopicMode::Verify;
    let err = KafkaBus::connect(config)
        .await
        .expect_err("verify fails")
        .to_string();
    let lines: Vec<&str> = err.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "topic osago.dead-letter.v1: existence expected a topic (the dead-letter topic), actual missing",
            "topic osago.quotes.v1: retention.ms expected 259200000, actual 86400000",
            "topic osago.errors.v1: existence expected a topic, actual missing",
        ],
        "{err}"
    );
    assert!(!topics_on(&tansu).contains(&"osago.errors.v1".to_owned()));
}

/// `off` makes no admin call: it starts where the topics exist (here with
/// settings of their own, left alone) and creates none where they do not.
#[tokio::test]
async fn off_mode_neither_creates_nor_checks() {
    let tansu = Tansu::start().await;
    let mut config = config(&tansu);
    config.topic_mode = TopicMode::Off;
    let _bus = KafkaBus::connect(config.clone()).await.expect("connect");
    let topics = topics_on(&tansu);
    assert!(
        !topics.iter().any(|t| t.starts_with("osago.")),
        "nothing created: {topics:?}"
    );
    for topic in ["osago.requests.v1", "osago.quotes.v1", "osago.errors.v1"] {
        create_topic(&tansu, topic, 2, "3600000").await;
    }
    let bus = KafkaBus::connect(config).await.expect("connect");
    let configs = bus.topic_configs().await.expect("topic configs");
    assert_eq!(configs["osago.quotes.v1"]["retention.ms"], "3600000");
}

/// Properties given reach every client, after ours.
#[test]
fn properties_reach_the_client_config() {
    let mut config = KafkaConfig::new("broker:9093");
    config.properties.set("security.protocol", "SASL_SSL");
    config.properties.set("sasl.mechanisms", "SCRAM-SHA-512");
    config.properties.set("sasl.username", "osago");
    config.properties.set("sasl.password", "hunter2");
    config.properties.set("socket.timeout.ms", "2500");
    let client = osago_transport::kafka::client_config(&config);
    assert_eq!(client.get("security.protocol"), Some("SASL_SSL"));
    assert_eq!(client.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
    assert_eq!(client.get("sasl.username"), Some("osago"));
    assert_eq!(client.get("sasl.password"), Some("hunter2"));
    assert_eq!(client.get("socket.timeout.ms"), Some("2500"), "theirs win");
    assert_eq!(client.get("bootstrap.servers"), Some("broker:9093"));
    assert!(!format!("{config:?}").contains("hunter2"));
    // This librdkafka has TLS and SCRAM: a SASL_SSL client is built (it
    // connects lazily, so no broker is needed).
    let _producer: rdkafka::producer::BaseProducer = client
        .create()
        .expect("librdkafka built with SSL and SASL/SCRAM");
}

/// Acks out of order: only the contiguous prefix is committed, so after a
/// re-join the unacknowledged message and everything after it come again.
#[tokio::test]
async fn only_contiguous_acks_are_committed() {
    let (_tansu, bus) = broker().await;
    let key = RequestId::random().to_string();
    let events: Vec<RequestEvent> = (0..3).map(|_| bus::request_event()).collect();
    for event in &events {
        let mut message = bus::request_message(event);
        // One key: one partition, in this order.
        message.key = key.clone();
        EventPublisher::publish(&bus, &message)
            .await
            .expect("publish");
    }
    let ours = |e: &RequestEvent| events.iter().any(|x| x.event_id == e.event_id);

    let group = format!("contiguous-{}", uuid::Uuid::new_v4().simple());
    let mut subscription = bus.subscribe(&group).await.expect("subscribe");
    let mut deliveries = Vec::new();
    while deliveries.len() < 3 {
        deliveries.push(next_of(&mut *subscription, &ours).await);
    }
    let ids: Vec<_> = deliveries.iter().map(|d| d.event.event_id).collect();
    assert_eq!(ids, events.iter().map(|e| e.event_id).collect::<Vec<_>>());
    let mut deliveries = deliveries.into_iter();
    let first = deliveries.next().unwrap();
    let second = deliveries.next().unwrap();
    let third = deliveries.next().unwrap();
    third.ack.ack();
    first.ack.ack();
    // Several commit intervals pass: whatever may be committed is.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(second);
    drop(subscription);

    let mut subscription = bus.subscribe(&group).await.expect("subscribe again");
    let again = next_of(&mut *subscription, &ours).await;
    assert_eq!(
        again.event.event_id, events[1].event_id,
        "the unacknowledged second event comes first (the first is committed)"
    );
    let after = next_of(&mut *subscription, &ours).await;
    assert_eq!(after.event.event_id, events[2].event_id);
    again.ack.ack();
    after.ack.ack();
}

/// An undecodable message goes to the dead-letter topic, then counts as
/// acknowledged: it never holds back the commit of the events after it on
/// its partition.
#[tokio::test]
async fn undecodable_messages_do_not_block_commits() {
    let (_tansu, bus) = broker().await;
    let first = bus::request_event();
    let mut second = bus::request_event();
    second.request_id = first.request_id;
    let mut garbage = bus::request_message(&first);
    garbage.payload = b"not json".to_vec();
    EventPublisher::publish(&bus, &garbage)
        .await
        .expect("publish garbage");
    EventPublisher::publish(&bus, &bus::request_message(&first))
        .await
        .expect("publish");
    let ours = |e: &RequestEvent| e.request_id == first.request_id;

    let group = format!("undecodable-{}", uuid::Uuid::new_v4().simple());
    let mut subscription = bus.subscribe(&group).await.expect("subscribe");
    let delivery = next_of(&mut *subscription, &ours).await;
    assert_eq!(delivery.event.event_id, first.event_id);
    delivery.ack.ack();
    // The bad message counts as applied once the dead-letter topic has it.
    let landed = tokio::time::timeout(bus::WAIT, async {
        while bus.consumer_stats().dead_letters().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        landed.is_ok(),
        "the bad message never reached the dead-letter topic"
    );
    assert_eq!(
        bus.consumer_stats().dead_letters(),
        [(group.clone(), "osago.requests.v1".to_owned(), 1)]
    );
    drop(subscription);

    let mut subscription = bus.subscribe(&group).await.expect("subscribe again");
    EventPublisher::publish(&bus, &bus::request_message(&second))
        .await
        .expect("publish");
    let delivery = next_of(&mut *subscription, &ours).await;
    assert_eq!(
        delivery.event.event_id, second.event_id,
        "the bad message and the acknowledged event after it are committed"
    );
}

async fn next_of(
    subscription: &mut dyn Subscription<RequestEvent>,
    wanted: &impl Fn(&RequestEvent) -> bool,
) -> osago_core::ports::Delivery<RequestEvent> {
    tokio::time::timeout(bus::WAIT, async {
        loop {
            match subscription.next().await {
                Some(Ok(d)) if wanted(&d.event) => return d,
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    eprintln!("subscription error: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None => panic!("subscription closed"),
            }
        }
    })
    .await
    .expect("a delivery in time")
}

/// Quote and error events are keyed `request_id:insurer_id` on the wire.
#[tokio::test]
async fn insurer_events_are_keyed_by_request_and_insurer_and_carry_their_content_type() {
    let (tansu, bus) = broker().await;
    let request = RequestId::random();
    let quote = bus::quote_event(request, "swift", 1, QuoteStatus::Pending);
    let error = bus::error_event(request, "legacy", 2, true);
    QuoteSink::publish(&bus, &quote)
        .await
        .expect("publish quote");
    QuoteSink::publish(&bus, &error)
        .await
        .expect("publish error");

    for (topic_stream, insurer) in [(Stream::Quotes, "swift"), (Stream::Errors, "legacy")] {
        let topic = bus.config().topic(topic_stream).to_owned();
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", tansu.bootstrap())
            .set(
                "group.id",
                format!("keys-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .create()
            .expect("plain consumer");
        let mut assignment = TopicPartitionList::new();
        for partition in 0..bus.config().topic_settings(topic_stream).partitions {
            assignment
                .add_partition_offset(&topic, partition, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).expect("assign");
        let key = tokio::time::timeout(bus::WAIT, async {
            let mut messages = consumer.stream();
            loop {
                let message = messages.next().await.expect("stream").expect("message");
                let payload: serde_json::Value =
                    serde_json::from_slice(message.payload().unwrap()).unwrap();
                if payload["request_id"] == request.to_string() {
                    let headers: Vec<(String, String)> = message
                        .headers()
                        .map(|headers| {
                            headers
                                .iter()
                                .map(|h| {
                                    let value =
                                        h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                                    (h.key.to_owned(), value.unwrap_or_default())
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    return (
                        String::from_utf8(message.key().unwrap().to_vec()).unwrap(),
                        headers,
                    );
                }
            }
        })
        .await
        .expect("the event in time");
        let (key, headers) = key;
        assert_eq!(key, format!("{request}:{insurer}"), "key on {topic}");
        // Every record says what it holds before anyone parses it.
        assert_eq!(
            headers,
            [
                ("content-type".to_owned(), "application/json".to_owned()),
                ("osago-schema-version".to_owned(), "1".to_owned()),
            ],
            "headers on {topic}"
        );
    }
}

/// With the broker gone, ping fails (bounded by the request timeout).
#[tokio::test]
async fn ping_fails_when_the_broker_is_gone() {
    let mut tansu = Tansu::start().await;
    let bus = KafkaBus::connect(KafkaConfig {
        request_timeout: Duration::from_secs(2),
        ..config(&tansu)
    })
    .await
    .expect("connect");
    bus.ping().await.expect("ping");
    tansu.kill().await;
    let started = std::time::Instant::now();
    assert!(bus.ping().await.is_err(), "ping must fail without a broker");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A durable broker stopped and started again keeps its topics and
/// records: publishing and consuming go on once it is back.
#[tokio::test]
async fn a_durable_broker_restart_loses_nothing() {
    let mut tansu = Tansu::start_durable().await;
    let bus = KafkaBus::connect(config(&tansu)).await.expect("connect");
    let before = bus::request_event();
    EventPublisher::publish(&bus, &bus::request_message(&before))
        .await
        .expect("publish before");
    tansu.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    tansu.restart().await;
    let after = bus::request_event();
    let mut published = false;
    for _ in 0..30 {
        if EventPublisher::publish(&bus, &bus::request_message(&after))
            .await
            .is_ok()
        {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        published,
        "publishing after the restart failed:\n{}",
        tansu.log()
    );
    let group = format!("restart-{}", uuid::Uuid::new_v4().simple());
    let mut subscription = bus.subscribe(&group).await.expect("subscribe");
    let ours = |e: &RequestEvent| e.event_id == before.event_id || e.event_id == after.event_id;
    let first = tokio::time::timeout(Duration::from_secs(30), next_of(&mut *subscription, &ours))
        .await
        .unwrap_or_else(|_| panic!("nothing consumed after the restart:\n{}", tansu.log()));
    let second = next_of(&mut *subscription, &ours).await;
    let seen = [first.event.event_id, second.event.event_id];
    assert!(seen.contains(&before.event_id) && seen.contains(&after.event_id));
}

/// A group's lag per partition (committed offset to the partition's end)
/// and the records it skipped are reported for metrics.
#[tokio::test]
async fn consumer_lag_and_skipped_records_are_reported() {
    let tansu = Tansu::start().await;
    let bus = KafkaBus::connect(KafkaConfig {
        statistics_interval: Duration::from_millis(200),
        ..config(&tansu)
    })
    .await
    .expect("connect");
    let stats = bus.consumer_stats();
    let group = format!("lag-{}", uuid::Uuid::new_v4().simple());
    let requests = bus.config().requests.clone();
    // One key, so one partition: the garbage record comes first.
    let first = bus::request_event();
    let mut garbage = bus::request_message(&first);
    garbage.id = uuid::Uuid::new_v4();
    garbage.payload = b"{\"not\": \"a request event\"".to_vec();
    EventPublisher::publish(&bus, &garbage)
        .await
        .expect("garbage");
    EventPublisher::publish(&bus, &bus::request_message(&first))
        .await
        .expect("publish");
    let mut subscription = RequestSource::subscribe(&bus, &group)
        .await
        .expect("subscribe");
    let delivery = tokio::time::timeout(bus::WAIT, subscription.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("delivered");
    assert_eq!(delivery.event, first);
    delivery.ack.ack();
    assert_eq!(stats.skipped(), [(group.clone(), requests.clone(), 1)]);

    // Three more on the same partition, not consumed: the group is three
    // behind once its commit of the first two is reported.
    for _ in 0..3 {
        let mut more = bus::request_event();
        more.request_id = first.request_id;
        EventPublisher::publish(&bus, &bus::request_message(&more))
            .await
            .expect("publish");
    }
    // The consumer goes on polling (statistics arrive with polls) and
    // receives them, but acknowledges none: its commit stays put.
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(Ok(delivery)) = subscription.next().await {
            held.push(delivery);
        }
        held
    });
    let behind = || {
        stats
            .lag()
            .into_iter()
            .filter(|(g, t, _, _)| *g == group && *t == requests)
            .map(|(_, _, _, lag)| lag)
            .sum::<i64>()
    };
    let deadline = tokio::time::Instant::now() + bus::WAIT;
    while behind() != 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag never reached 3: {:?}",
            stats.lag()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    held.abort();
}
