//! The pod-local live hub: fans events from the live feed out to the SSE
//! streams this pod holds, by request id. Streams subscribe before they read
//! their snapshot, so nothing falls between the two.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use osago_core::ports::{LiveFeed, Traced};
use osago_core::showcase::OfferRow;
use osago_core::{Clock, InsurerEvent, RequestId};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// An event from the live feed, with when it arrived here.
#[derive(Debug)]
pub struct Live {
    /// The event.
    pub event: InsurerEvent,
    /// When the hub took it from the feed.
    pub arrived: Instant,
    /// The trace it belongs to (its record's `traceparent`).
    pub trace: Option<osago_core::trace::TraceContext>,
    /// The event as a stream row, and that row's JSON: made once, by the
    /// first stream that shows it, for every stream that shows it as it is
    /// (the streams hold the row itself, not copies of it).
    view: OnceLock<(Arc<OfferRow>, Arc<str>)>,
    /// The row as streams that held the insurer's pending row hold it
    /// (with when the insurer was asked filled in): made once for all.
    succeeded_row: OnceLock<Arc<OfferRow>>,
    /// The row as streams that held the insurer's pending row show it
    /// (with when the insurer was asked filled in), and its JSON: made
    /// once for all of them.
    succeeded: OnceLock<(Option<DateTime<Utc>>, Arc<str>)>,
    /// A whole `insurer` frame of this event (its `id:` cursor and its
    /// JSON): made by the first stream that sends it, and sent as it is by
    /// every stream whose frame is the same bytes (streams of one request
    /// that have seen the same rows): one buffer for all of them.
    frame: OnceLock<(Box<str>, Arc<str>, Bytes)>,
}

impl Live {
    /// An event taken from the feed now.
    pub fn new(event: InsurerEvent, trace: Option<osago_core::trace::TraceContext>) -> Self {
        Self {
            event,
            arrived: Instant::now(),
            trace,
            view: OnceLock::new(),
            succeeded_row: OnceLock::new(),
            succeeded: OnceLock::new(),
            frame: OnceLock::new(),
        }
    }

    fn view(&self) -> &(Arc<OfferRow>, Arc<str>) {
        self.view.get_or_init(|| {
            let row = OfferRow::from_event(&self.event);
            let json = serde_json::to_string(&row).expect("serializable");
            (Arc::new(row), json.into())
        })
    }

    /// The event as a stream row.
    pub fn row(&self) -> &Arc<OfferRow> {
        &self.view().0
    }

    /// The event's row as a stream that holds `previous` for the insurer
    /// keeps it ([`OfferRow::succeeding`]: when the insurer was asked
    /// filled in from it): the event's own row, or the one made once for
    /// every stream that fills in the same; a copy only for a stream that
    /// fills in another.
    pub fn row_after(&self, previous: Option<&OfferRow>) -> Arc<OfferRow> {
        let canonical = self.row();
        let started_at = canonical
            .started_at
            .or_else(|| previous.and_then(|p| p.started_at));
        if started_at == canonical.started_at {
            return canonical.clone();
        }
        let made = || {
            Arc::new(OfferRow {
                started_at,
                ..OfferRow::clone(canonical)
            })
        };
        let shared = self.succeeded_row.get_or_init(made);
        if shared.started_at == started_at {
            shared.clone()
        } else {
            made()
        }
    }

    /// The JSON of `row`, which is [`Live::row`] as one stream shows it
    /// (only `started_at` may differ, filled in from the insurer's earlier
    /// row): serialised once for all the streams that show the same.
    pub fn json_as(&self, row: &OfferRow) -> Arc<str> {
        let (canonical, json) = self.view();
        debug_assert_eq!(
            &OfferRow {
                started_at: canonical.started_at,
                ..row.clone()
            },
            &**canonical
        );
        if row.started_at == canonical.started_at {
            return json.clone();
        }
        let serialise = || -> Arc<str> { serde_json::to_string(row).expect("serializable").into() };
        let (started_at, json) = self.succeeded.get_or_init(|| (row.started_at, serialise()));
        if *started_at == row.started_at {
            json.clone()
        } else {
            serialise()
        }
    }
}

impl Live {
    /// The frame for `id` and `json` (which [`Live::json_as`] returned):
    /// the shared one when it is the same, else `make`'s.
    pub fn frame(&self, id: &str, json: &Arc<str>, make: impl FnOnce() -> Bytes) -> Bytes {
        let mut make = Some(make);
        let (shared_id, shared_json, frame) = self.frame.get_or_init(|| {
            let make = make.take().expect("not called yet");
            (id.into(), json.clone(), make())
        });
        if &**shared_id == id && Arc::ptr_eq(shared_json, json) {
            return frame.clone();
        }
        let make = make
            .take()
            .expect("not called: the shared frame is another");
        make()
    }
}

/// Events one stream may fall behind before it resynchronises from the read
/// model. A request has two events per insurer (pending, final), so with up
/// to 16 insurers a stream can never fall behind; the channel's slots are
/// allocated and written when it is made (about 40 bytes each), which is
/// memory every open stream holds (64 slots were 1.3 KiB more per stream).
const PER_REQUEST_CAPACITY: usize = 32;

/// Routes live events to subscribed streams.
#[derive(Debug, Default)]
pub struct Hub {
    channels: Mutex<HashMap<RequestId, broadcast::Sender<Arc<Live>>>>,
}

/// A stream's subscription; unsubscribes when dropped.
#[derive(Debug)]
pub struct HubSubscription {
    hub: Arc<Hub>,
    request_id: RequestId,
    /// Events for the request.
    pub receiver: broadcast::Receiver<Arc<Live>>,
}

impl Drop for HubSubscription {
    fn drop(&mut self) {
        let mut channels = self.hub.channels.lock().expect("hub lock");
        if let Some(tx) = channels.get(&self.request_id) {
            // This subscription's receiver is still alive here: 1 means it is the last.
            if tx.receiver_count() <= 1 {
                channels.remove(&self.request_id);
            }
        }
    }
}

impl Hub {
    /// Subscribes to a request's events.
    pub fn subscribe(self: &Arc<Self>, request_id: RequestId) -> HubSubscription {
        let mut channels = self.channels.lock().expect("hub lock");
        let receiver = channels
            .entry(request_id)
            .or_insert_with(|| broadcast::channel(PER_REQUEST_CAPACITY).0)
            .subscribe();
        HubSubscription {
            hub: self.clone(),
            request_id,
            receiver,
        }
    }

    /// Delivers an event to the request's subscribers, if any.
    pub fn dispatch(&self, event: Traced<InsurerEvent>) {
        let channels = self.channels.lock().expect("hub lock");
        if let Some(tx) = channels.get(&event.event.request_id()) {
            let _ = tx.send(Arc::new(Live::new(event.event, event.trace)));
        }
    }

    /// Requests with at least one subscriber.
    pub fn requests_watched(&self) -> usize {
        self.channels.lock().expect("hub lock").len()
    }

    /// Pumps the live feed into the hub until shutdown, re-following after
    /// a feed error; observes each event's delay since its creation.
    pub async fn pump(
        self: Arc<Self>,
        feed: Arc<dyn LiveFeed>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) {
        loop {
            let mut events = match feed.follow().await {
                Ok(events) => events,
                Err(err) => {
                    tracing::warn!(error = %err, "live feed unavailable; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                        _ = shutdown.cancelled() => return,
                    }
                }
            };
            loop {
                tokio::select! {
                    next = events.next() => match next {
                        Some(event) => {
                            let delay = (clock.now() - event.event.occurred_at()).to_std().unwrap_or_default();
                            metrics.live_feed_delay_seconds.observe(delay.as_secs_f64());
                            self.dispatch(event);
                        }
                        None => break,
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
            tracing::warn!("live feed ended; following again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osago_core::events::{QuoteEvent, QuoteStatus};
    use osago_core::{EventId, InsurerId, RequestId};

    fn final_event() -> InsurerEvent {
        InsurerEvent::Quote(QuoteEvent {
            event_id: EventId::random(),
            request_id: RequestId::random(),
            insurer_id: InsurerId::new("swift").unwrap(),
            version: 2,
            insurers_total: 8,
            status: QuoteStatus::Declined,
            quote: None,
            reason: Some("declined".into()),
            occurred_at: Utc::now(),
            deadline_at: Utc::now() + chrono::Duration::seconds(60),
        })
    }

    #[test]
    fn an_event_is_serialised_once_for_the_streams_that_show_it_alike() {
        let live = Live::new(final_event(), None);
        let asked = Some(Utc::now() - chrono::Duration::seconds(3));
        // A stream that never saw the pending row, and two that did.
        let fresh = OfferRow::clone(live.row());
        let held = OfferRow {
            started_at: asked,
            ..OfferRow::clone(live.row())
        };
        let other = OfferRow {
            started_at: Some(Utc::now() - chrono::Duration::seconds(9)),
            ..OfferRow::clone(live.row())
        };
        let a = live.json_as(&fresh);
        assert!(Arc::ptr_eq(&a, &live.json_as(&fresh.clone())));
        let b = live.json_as(&held);
        assert!(Arc::ptr_eq(&b, &live.json_as(&held.clone())), "shared");
        let c = live.json_as(&other);
        // Every stream gets exactly its own row's JSON.
        for (json, row) in [(a, &fresh), (b, &held), (c, &other)] {
            assert_eq!(&*json, serde_json::to_string(row).unwrap());
        }
    }

    #[test]
    fn streams_hold_the_event_s_own_row_not_copies() {
        let live = Live::new(final_event(), None);
        // A stream that held no pending row keeps the event's row itself.
        assert!(Arc::ptr_eq(&live.row_after(None), live.row()));
        // Streams that held the pending row share one row with when the
        // insurer was asked filled in; another time gets its own.
        let asked = Some(Utc::now() - chrono::Duration::seconds(3));
        let pending = OfferRow {
            started_at: asked,
            ..OfferRow::clone(live.row()).pending_view()
        };
        let a = live.row_after(Some(&pending));
        let b = live.row_after(Some(&pending));
        assert!(Arc::ptr_eq(&a, &b), "one row for both");
        assert_eq!(*a, OfferRow::clone(live.row()).succeeding(Some(&pending)));
        let other = OfferRow {
            started_at: Some(Utc::now() - chrono::Duration::seconds(9)),
            ..pending.clone()
        };
        let c = live.row_after(Some(&other));
        assert_eq!(*c, OfferRow::clone(live.row()).succeeding(Some(&other)));
        // What a stream shows is exactly the row's own JSON.
        for row in [&a, &c] {
            assert_eq!(&*live.json_as(row), serde_json::to_string(&**row).unwrap());
        }
    }

    #[tokio::test]
    async fn an_event_and_its_frame_are_freed_once_every_stream_has_taken_it() {
        // The request's channel keeps its slots while streams watch it; an
        // event (its row, JSON and frame) must not live on in a slot after
        // every subscriber has received it, or each watched request would
        // hold all its events' frames for its streams' lives.
        let hub = Arc::new(Hub::default());
        let event = final_event();
        let request_id = event.request_id();
        let mut a = hub.subscribe(request_id);
        let mut b = hub.subscribe(request_id);
        hub.dispatch(Traced { event, trace: None });
        let taken = a.receiver.recv().await.expect("delivered");
        let json = taken.json_as(taken.row());
        let _ = taken.frame("swift:2", &json, || Bytes::from_static(b"frame"));
        let freed = Arc::downgrade(&taken);
        drop((taken, json));
        assert!(freed.upgrade().is_some(), "b has not taken it yet");
        drop(b.receiver.recv().await.expect("delivered"));
        assert!(
            freed.upgrade().is_none(),
            "the channel still holds an event both streams took"
        );
        // Both streams are still subscribed: the channel itself lives on.
        assert_eq!(hub.requests_watched(), 1);
    }

    #[test]
    fn a_frame_is_shared_by_the_streams_that_send_the_same_bytes() {
        let live = Live::new(final_event(), None);
        let json = live.json_as(&OfferRow::clone(live.row()));
        let made = |id: &str| Bytes::from(format!("id: {id}\ndata: {json}\n\n"));
        let a = live.frame("swift:2", &json, || made("swift:2"));
        let b = live.frame("swift:2", &json, || unreachable!("shared"));
        assert_eq!(a.as_ptr(), b.as_ptr(), "one buffer for both");
        // Another cursor, or another JSON, gets its own frame.
        let c = live.frame("steady:1,swift:2", &json, || made("steady:1,swift:2"));
        assert_eq!(c, made("steady:1,swift:2"));
        let held = OfferRow {
            started_at: Some(Utc::now() - chrono::Duration::seconds(3)),
            ..OfferRow::clone(live.row())
        };
        let other = live.json_as(&held);
        let d = live.frame("swift:2", &other, || Bytes::from_static(b"own"));
        assert_eq!(&d[..], b"own");
    }
}
