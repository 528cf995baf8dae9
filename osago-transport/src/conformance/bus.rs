//! The bus conformance suite: [`EventPublisher`], [`QuoteSink`],
//! [`RequestSource`], [`OutcomeSource`] and [`LiveFeed`].
//!
//! Each function checks one property. Group names and request ids are
//! random, so the functions may share one bus (one broker) and run in any
//! order or at once: a subscriber skips (and acknowledges) events of other
//! requests. Every wait is bounded by [`WAIT`], long enough for a Kafka
//! consumer group join, so a failure is a clean panic.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use osago_core::outbox::{OutboxMessage, Stream};
use osago_core::ports::{
    Delivery, EventPublisher, LiveFeed, OutcomeSource, QuoteSink, RequestSource, Subscription,
};
use osago_core::{
    ErrorEvent, ErrorKind, EventId, InsurerEvent, InsurerId, QuoteEvent, QuoteStatus, RequestEvent,
    RequestId,
};
use uuid::Uuid;

use crate::codec;

/// The longest wait for one event (a consumer group join included).
pub const WAIT: Duration = Duration::from_secs(20);

/// A group name no other run uses.
fn group(name: &str) -> String {
    format!("conformance-{name}-{}", Uuid::new_v4().simple())
}

/// A request event for a fresh request id, with the sample request.
pub fn request_event() -> RequestEvent {
    let now = Utc::now();
    RequestEvent {
        event_id: EventId::random(),
        request_id: RequestId::random(),
        occurred_at: now,
        deadline_at: now + chrono::Duration::seconds(60),
        request: osago_core::request::sample(),
    }
}

/// The outbox message that carries `event` on the request stream.
pub fn request_message(event: &RequestEvent) -> OutboxMessage {
    let (key, payload) = codec::encode_request_event(event);
    OutboxMessage {
        id: Uuid::new_v4(),
        stream: Stream::Requests,
        key,
        payload,
        created_at: Utc::now(),
        attempts: 0,
        publish_by: Some(event.deadline_at),
        trace: None,
    }
}

fn insurer(id: &str) -> InsurerId {
    InsurerId::new(id).expect("valid insurer id")
}

/// A quote event of `request` for `insurer`.
pub fn quote_event(
    request: RequestId,
    insurer_id: &str,
    version: u32,
    status: QuoteStatus,
) -> InsurerEvent {
    let now = Utc::now();
    InsurerEvent::Quote(QuoteEvent {
        event_id: EventId::random(),
        request_id: request,
        insurer_id: insurer(insurer_id),
        occurred_at: now,
        deadline_at: now + chrono::Duration::seconds(60),
        version,
        insurers_total: 2,
        status,
        quote: None,
        reason: (status == QuoteStatus::Declined).then(|| "no offer for this vehicle".into()),
    })
}

/// An error event of `request` for `insurer`.
pub fn error_event(request: RequestId, insurer_id: &str, version: u32, last: bool) -> InsurerEvent {
    let now = Utc::now();
    InsurerEvent::Error(ErrorEvent {
        event_id: EventId::random(),
        request_id: request,
        insurer_id: insurer(insurer_id),
        occurred_at: now,
        deadline_at: now + chrono::Duration::seconds(60),
        version,
        insurers_total: 2,
        kind: ErrorKind::Unavailable,
        message: "insurer unavailable".into(),
        attempts: version,
        is_final: last,
    })
}

/// The next delivery that `wanted` accepts; others are acknowledged and
/// skipped. Panics after [`WAIT`].
async fn next_matching<T: std::fmt::Debug>(
    subscription: &mut dyn Subscription<T>,
    what: &str,
    wanted: impl Fn(&T) -> bool,
) -> Delivery<T> {
    let search = async {
        loop {
            match subscription.next().await {
                Some(Ok(delivery)) if wanted(&delivery.event) => return delivery,
                Some(Ok(other)) => other.ack.ack(),
                // A transient backend error (a group still forming): retry.
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "subscription error while waiting");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None => panic!("subscription closed while waiting for {what}"),
            }
        }
    };
    tokio::time::timeout(WAIT, search)
        .await
        .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
}

/// A request event published through the outbox reaches a subscriber of
/// every group, equal to what was published.
pub async fn published_requests_reach_every_group(
    publisher: &dyn EventPublisher,
    source: &dyn RequestSource,
) {
    let mut first = source.subscribe(&group("first")).await.expect("subscribe");
    let mut second = source.subscribe(&group("second")).await.expect("subscribe");
    let event = request_event();
    publisher
        .publish(&request_message(&event))
        .await
        .expect("publish");
    for (name, subscription) in [("first", &mut first), ("second", &mut second)] {
        let delivery = next_matching(&mut **subscription, "the request event", |e| {
            e.request_id == event.request_id
        })
        .await;
        assert_eq!(
            delivery.event, event,
            "group {name} must get the event as published"
        );
        delivery.ack.ack();
    }
}

/// Two members of one group share the events: together they get every
/// event (at least once; a rebalance may hand one to both), and each
/// member's events are acknowledged as it goes.
pub async fn group_members_share_the_events(
    publisher: &dyn EventPublisher,
    source: &dyn RequestSource,
) {
    let group = group("shared");
    let mut first = source.subscribe(&group).await.expect("subscribe");
    let mut second = source.subscribe(&group).await.expect("subscribe");
    let events: Vec<RequestEvent> = (0..8).map(|_| request_event()).collect();
    for event in &events {
        publisher
            .publish(&request_message(event))
            .await
            .expect("publish");
    }
    let mut missing: HashSet<RequestId> = events.iter().map(|e| e.request_id).collect();
    let wanted: HashSet<RequestId> = missing.clone();
    let collect = async {
        while !missing.is_empty() {
            let next = tokio::select! {
                next = first.next() => next,
                next = second.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    if wanted.contains(&delivery.event.request_id) {
                        missing.remove(&delivery.event.request_id);
                    }
                    delivery.ack.ack();
                }
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "subscription error while waiting");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None => panic!("a member's subscription closed"),
            }
        }
    };
    tokio::time::timeout(WAIT, collect)
        .await
        .unwrap_or_else(|_| panic!("the group did not get every event within {WAIT:?}"));
}

/// A message on the request stream that does not decode is skipped: the
/// next event on the same key still arrives, and no error is returned for
/// the bad one.
pub async fn undecodable_requests_are_skipped(
    publisher: &dyn EventPublisher,
    source: &dyn RequestSource,
) {
    let mut subscription = source
        .subscribe(&group("undecodable"))
        .await
        .expect("subscribe");
    let event = request_event();
    let mut garbage = request_message(&event);
    garbage.id = Uuid::new_v4();
    garbage.payload = b"{\"not\": \"a request event\"".to_vec();
    publisher.publish(&garbage).await.expect("publish garbage");
    publisher
        .publish(&request_message(&event))
        .await
        .expect("publish");
    let delivery = next_matching(&mut *subscription, "the event after the bad one", |e| {
        e.request_id == event.request_id
    })
    .await;
    assert_eq!(delivery.event, event);
    delivery.ack.ack();
}

/// An acknowledged event is not delivered again to its group: a member that
/// joins after the first left gets the next event, not the acknowledged one.
pub async fn acked_requests_are_not_redelivered_to_the_group(
    publisher: &dyn EventPublisher,
    source: &dyn RequestSource,
) {
    let group = group("acked");
    let first = request_event();
    let mut second = request_event();
    // One key, so one partition: the second event comes after the first.
    second.request_id = first.request_id;
    let mut subscription = source.subscribe(&group).await.expect("subscribe");
    publisher
        .publish(&request_message(&first))
        .await
        .expect("publish");
    let delivery = next_matching(&mut *subscription, "the first event", |e| {
        e.request_id == first.request_id
    })
    .await;
    assert_eq!(delivery.event, first);
    delivery.ack.ack();
    drop(subscription);

    let mut subscription = source.subscribe(&group).await.expect("subscribe again");
    publisher
        .publish(&request_message(&second))
        .await
        .expect("publish");
    let delivery = next_matching(&mut *subscription, "the second event", |e| {
        e.request_id == first.request_id
    })
    .await;
    assert_eq!(
        delivery.event.event_id, second.event_id,
        "the acknowledged event must not come again"
    );
    delivery.ack.ack();
}

/// Quote and error events reach a subscriber of the outcome source, each
/// insurer's events in publish order (pending, then final), decoded equal.
pub async fn insurer_events_reach_outcome_subscribers_in_order_per_key(
    sink: &dyn QuoteSink,
    source: &dyn OutcomeSource,
) {
    let mut subscription = source
        .subscribe(&group("outcomes"))
        .await
        .expect("subscribe");
    let request = RequestId::random();
    let published = vec![
        quote_event(request, "swift", 1, QuoteStatus::Pending),
        error_event(request, "legacy", 1, false),
        quote_event(request, "swift", 2, QuoteStatus::Quoted),
        error_event(request, "legacy", 2, true),
    ];
    for event in &published {
        sink.publish(event).await.expect("publish");
    }
    let mut received = Vec::new();
    while received.len() < published.len() {
        let delivery = next_matching(&mut *subscription, "the insurer events", |e| {
            e.request_id() == request
        })
        .await;
        received.push(delivery.event);
        delivery.ack.ack();
    }
    for insurer in ["swift", "legacy"] {
        let mine = |events: &[InsurerEvent]| -> Vec<InsurerEvent> {
            events
                .iter()
                .filter(|e| e.insurer_id().as_str() == insurer)
                .cloned()
                .collect()
        };
        assert_eq!(
            mine(&received),
            mine(&published),
            "{insurer}'s events must arrive once each, in publish order"
        );
    }
}

/// A live follower sees every quote and error event published after
/// `follow` returned, and none published before.
pub async fn live_feed_sees_events_published_after_follow(
    sink: &dyn QuoteSink,
    feed: &dyn LiveFeed,
) {
    let request = RequestId::random();
    let before = quote_event(request, "swift", 1, QuoteStatus::Pending);
    sink.publish(&before).await.expect("publish before");
    let mut events = feed.follow().await.expect("follow");
    let after = vec![
        quote_event(request, "swift", 2, QuoteStatus::Declined),
        error_event(request, "legacy", 1, true),
    ];
    for event in &after {
        sink.publish(event).await.expect("publish after");
    }
    let mut received = Vec::new();
    let collect = async {
        while received.len() < after.len() {
            match events.next().await {
                Some(event) if event.event.request_id() == request => received.push(event.event),
                Some(_) => {}
                None => panic!("the live feed ended"),
            }
        }
    };
    tokio::time::timeout(WAIT, collect)
        .await
        .unwrap_or_else(|_| panic!("the live feed did not deliver the events within {WAIT:?}"));
    assert!(
        !received.contains(&before),
        "an event published before follow must not be delivered"
    );
    for event in &after {
        assert!(received.contains(event), "missing {event:?}");
    }
}

/// Two followers each see every event: the live feed is a broadcast, not a
/// group.
pub async fn every_live_follower_sees_every_event(sink: &dyn QuoteSink, feed: &dyn LiveFeed) {
    let mut first = feed.follow().await.expect("follow");
    let mut second = feed.follow().await.expect("follow");
    let request = RequestId::random();
    let event = quote_event(request, "swift", 1, QuoteStatus::Pending);
    sink.publish(&event).await.expect("publish");
    for events in [&mut first, &mut second] {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                match events.next().await {
                    Some(e) if e.event.request_id() == request => return e.event,
                    Some(_) => {}
                    None => panic!("the live feed ended"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("a follower did not see the event within {WAIT:?}"));
        assert_eq!(found, event);
    }
}

/// Records carry their trace: an outbox message's trace reaches the request
/// subscriber, and an insurer event published in a trace reaches the
/// outcome subscriber and the live feed with it; one published outside any
/// trace arrives with none.
pub async fn traces_travel_with_records(
    publisher: &dyn EventPublisher,
    requests: &dyn RequestSource,
    sink: &dyn QuoteSink,
    outcomes: &dyn OutcomeSource,
    feed: &dyn LiveFeed,
) {
    use osago_core::trace::{TraceContext, WithTrace};

    let mut request_subscription = requests
        .subscribe(&group("traced-requests"))
        .await
        .expect("subscribe");
    let mut outcome_subscription = outcomes
        .subscribe(&group("traced-outcomes"))
        .await
        .expect("subscribe");
    let mut live = feed.follow().await.expect("follow");

    let request_trace = TraceContext::new_root();
    let event = request_event();
    let mut message = request_message(&event);
    message.trace = Some(request_trace);
    publisher.publish(&message).await.expect("publish");
    let delivery = next_matching(&mut *request_subscription, "the traced request", |e| {
        e.request_id == event.request_id
    })
    .await;
    assert_eq!(delivery.trace, Some(request_trace));
    delivery.ack.ack();

    let insurer_trace = request_trace.child();
    let request = RequestId::random();
    let traced = quote_event(request, "swift", 1, QuoteStatus::Pending);
    let untraced = quote_event(request, "swift", 2, QuoteStatus::Quoted);
    sink.publish(&traced)
        .in_trace(insurer_trace)
        .await
        .expect("publish traced");
    sink.publish(&untraced).await.expect("publish untraced");
    for (expected, trace) in [(&traced, Some(insurer_trace)), (&untraced, None)] {
        let delivery = next_matching(&mut *outcome_subscription, "the insurer event", |e| {
            e == expected
        })
        .await;
        assert_eq!(delivery.trace, trace, "{expected:?}");
        delivery.ack.ack();
        let followed = tokio::time::timeout(WAIT, async {
            loop {
                match live.next().await {
                    Some(item) if &item.event == expected => return item,
                    Some(_) => {}
                    None => panic!("the live feed ended"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the live feed did not deliver {expected:?}"));
        assert_eq!(followed.trace, trace, "{expected:?}");
    }
}
