//! The SSE stream of one request: the current state of every insurer, then
//! each change as it happens, heartbeats, and a final `done` (every insurer
//! final) or `timeout` (the deadline passed first); then the stream ends.
//!
//! Each `insurer` event's `id:` is a cursor: the version of every insurer
//! the client has seen (`swift:2,steady:1`). A reconnecting EventSource
//! sends it back as `Last-Event-ID`, and the new stream (on any pod) skips
//! what the client already has, so nothing is shown twice.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use osago_core::ports::ReadModel;
use osago_core::showcase::{is_complete, OfferRow, OfferStatus, Tally};
use osago_core::{Clock, InsurerId, RequestId};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::hub::{HubSubscription, Live};
use crate::metrics::{EventLabel, Metrics};
use prometheus_client::metrics::counter::Counter;

/// The versions a client has seen, per insurer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor(BTreeMap<InsurerId, u32>);

impl Cursor {
    /// Parses a `Last-Event-ID`; anything unreadable counts as nothing seen.
    pub fn parse(text: &str) -> Self {
        let mut seen = BTreeMap::new();
        for pair in text.split(',') {
            let Some((insurer, version)) = pair.split_once(':') else {
                continue;
            };
            if let (Ok(insurer), Ok(version)) =
                (InsurerId::new(insurer.trim()), version.trim().parse())
            {
                seen.insert(insurer, version);
            }
        }
        Self(seen)
    }

    /// The version seen for an insurer (0 if none).
    pub fn seen(&self, insurer: &InsurerId) -> u32 {
        self.0.get(insurer).copied().unwrap_or(0)
    }

    fn advance(&mut self, insurer: &InsurerId, version: u32) {
        match self.0.get_mut(insurer) {
            Some(seen) => *seen = version,
            None => {
                self.0.insert(insurer.clone(), version);
            }
        }
    }

    #[cfg(test)]
    fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out);
        out
    }

    /// Appends the cursor's text to `out`.
    fn render_into(&self, out: &mut String) {
        for (i, (insurer, version)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{insurer}:{version}");
        }
    }
}

/// The closing event's body.
#[derive(Debug, Serialize)]
struct Closing {
    request_id: RequestId,
    #[serde(flatten)]
    tally: Tally,
}

/// Everything a stream needs.
pub struct StreamState {
    request_id: RequestId,
    read_model: Arc<dyn ReadModel>,
    subscription: HubSubscription,
    metrics: Metrics,
    /// `events_sent{event="insurer"}`, looked up once.
    insurer_sent: Counter,
    /// The last `id:` sent (kept for its buffer).
    id: String,
    clock: Arc<dyn Clock>,
    /// Fires at shutdown. Kept, like `timer`, for the stream's
    /// life: made on every wait, the two were registered and withdrawn
    /// under shared locks (the token's, the timer wheel's) by every
    /// stream at every event.
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Latest row per insurer (snapshot, then live): a live event's row
    /// is the one its `Live` holds for every stream, not a copy.
    rows: BTreeMap<InsurerId, Arc<OfferRow>>,
    /// What the client has been sent.
    cursor: Cursor,
    /// Rows the client lacks, in order, each with the live event behind
    /// it (none for rows from the read model).
    queue: std::collections::VecDeque<Queued>,
    /// Between heartbeats.
    heartbeat_every: Duration,
    /// When the next heartbeat is due (a late one puts the next a whole
    /// interval after it).
    next_heartbeat: Instant,
    /// The deadline with its grace (pushed an hour on when rows are still
    /// to be sent at it).
    deadline: Instant,
    /// One timer for both, at the earlier: every wake-up of the stream
    /// polls its timers, and one is half the timer work of two (an
    /// `Interval` and a `Sleep`) at every event.
    timer: Pin<Box<Sleep>>,
    retry: Duration,
    phase: Phase,
    /// When the request was accepted.
    created_at: chrono::DateTime<chrono::Utc>,
    /// Whether a price reached this stream's client (from the snapshot, or
    /// live): only the first live one is the buyer's first price.
    priced: bool,
}

/// A row the client lacks.
struct Queued {
    row: Arc<OfferRow>,
    /// The live event behind it (none for rows from the read model).
    live: Option<Arc<Live>>,
    /// The row is the live event's own (`started_at` perhaps filled in
    /// from the row held): its JSON is shared with the other streams.
    shared: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Live,
    Ended,
}

impl std::fmt::Debug for StreamState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamState")
            .field("request_id", &self.request_id)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl Drop for StreamState {
    fn drop(&mut self) {
        self.metrics.open_streams.dec();
    }
}

/// How a stream is set up.
#[derive(Debug)]
pub struct StreamParams {
    /// The request.
    pub request_id: RequestId,
    /// When the request was accepted.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The request's deadline.
    pub deadline_at: chrono::DateTime<chrono::Utc>,
    /// Extra wait past the deadline for final events.
    pub grace: Duration,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Suggested reconnection delay.
    pub retry: Duration,
    /// What the client already saw.
    pub cursor: Cursor,
}

impl StreamState {
    /// A stream that subscribed to the hub (before reading the snapshot).
    pub async fn open(
        params: StreamParams,
        read_model: Arc<dyn ReadModel>,
        subscription: HubSubscription,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Result<Self, osago_core::ports::PortError> {
        let snapshot = read_model.rows(&params.request_id).await?;
        let until_deadline = (params.deadline_at - clock.now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        let deadline = Instant::now() + until_deadline + params.grace;
        let next_heartbeat = Instant::now() + params.heartbeat;
        metrics.open_streams.inc();
        let insurer_sent = metrics
            .events_sent
            .get_or_create(&EventLabel { event: "insurer" })
            .clone();
        let mut state = Self {
            request_id: params.request_id,
            read_model,
            subscription,
            metrics,
            insurer_sent,
            id: String::new(),
            clock,
            cancelled: Box::pin(shutdown.cancelled_owned()),
            rows: BTreeMap::new(),
            cursor: params.cursor,
            queue: Default::default(),
            heartbeat_every: params.heartbeat,
            next_heartbeat,
            deadline,
            timer: Box::pin(tokio::time::sleep_until(next_heartbeat.min(deadline))),
            retry: params.retry,
            phase: Phase::Start,
            created_at: params.created_at,
            priced: snapshot.iter().any(|r| r.status == OfferStatus::Quoted),
        };
        for row in snapshot {
            state.absorb_stored(row);
        }
        Ok(state)
    }

    /// Takes a row from the read model if newer than what we hold; queues
    /// it if the client lacks it. A client meeting an insurer for the first time in a later state
    /// is shown its pending state first, so every insurer's row appears
    /// before its outcome whenever the stream was opened.
    fn absorb_stored(&mut self, row: OfferRow) {
        let held = self.rows.get(&row.insurer_id);
        if held.is_some_and(|held| held.version >= row.version) {
            return;
        }
        let row = Arc::new(row.succeeding(held.map(|held| &**held)));
        self.take(row, None);
    }

    /// As [`Self::absorb_stored`], for a live event: its row is shared
    /// with every other stream that holds it as it is.
    fn absorb_live(&mut self, live: Arc<Live>) {
        let event = live.row();
        let held = self.rows.get(&event.insurer_id);
        if held.is_some_and(|held| held.version >= event.version) {
            return;
        }
        let row = live.row_after(held.map(|held| &**held));
        self.take(row, Some(live));
    }

    /// Holds a row newer than the one held, queued if the client lacks it.
    fn take(&mut self, row: Arc<OfferRow>, live: Option<Arc<Live>>) {
        let held = self.rows.get(&row.insurer_id);
        let seen = self.cursor.seen(&row.insurer_id);
        if held.is_none() && seen == 0 && row.version > 1 {
            self.queue.push_back(Queued {
                row: Arc::new(row.pending_view()),
                live: live.clone(),
                shared: false,
            });
        }
        if row.version > seen {
            self.queue.push_back(Queued {
                row: row.clone(),
                live,
                shared: true,
            });
        }
        match self.rows.get_mut(&row.insurer_id) {
            Some(held) => *held = row,
            None => {
                self.rows.insert(row.insurer_id.clone(), row);
            }
        }
    }

    /// Whether a client holding this stream's cursor has everything there
    /// will be: every row it lacks is none, and every insurer is final or
    /// the deadline (with its grace) has passed. Such a reconnect is
    /// answered 204, which stops an EventSource for good.
    pub fn nothing_left(&self) -> bool {
        self.queue.is_empty() && (self.complete() || Instant::now() >= self.deadline)
    }

    /// Sets the timer to the next heartbeat or the deadline, the earlier.
    fn rearm(&mut self) {
        let at = self.next_heartbeat.min(self.deadline);
        self.timer.as_mut().reset(at);
    }

    fn complete(&self) -> bool {
        is_complete(self.rows.values().map(|row| &**row))
    }

    fn closing(&mut self, name: &'static str) -> Bytes {
        self.phase = Phase::Ended;
        let body = Closing {
            request_id: self.request_id,
            tally: Tally::of(self.rows.values().map(|row| &**row)),
        };
        self.frame(name, &body)
    }

    fn frame(&self, event: &'static str, data: &impl Serialize) -> Bytes {
        self.metrics
            .events_sent
            .get_or_create(&EventLabel { event })
            .inc();
        let json = serde_json::to_string(data).expect("serializable");
        frame_bytes(event, None, &json)
    }

    /// The next chunk of the stream, or `None` when it is over.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            match self.phase {
                Phase::Ended => return None,
                Phase::Start => {
                    self.phase = Phase::Live;
                    return Some(Bytes::from(format!(
                        "retry: {}\n: stream of request {}\n\n",
                        self.retry.as_millis(),
                        self.request_id
                    )));
                }
                Phase::Live => {}
            }
            if let Some(Queued { row, live, shared }) = self.queue.pop_front() {
                self.cursor.advance(&row.insurer_id, row.version);
                self.id.clear();
                self.cursor.render_into(&mut self.id);
                let id = self.id.as_str();
                let frame = match &live {
                    Some(live) if shared => {
                        let json = live.json_as(&row);
                        live.frame(id, &json, || frame_bytes("insurer", Some(id), &json))
                    }
                    _ => frame_bytes(
                        "insurer",
                        Some(id),
                        &serde_json::to_string(&*row).expect("serializable"),
                    ),
                };
                self.insurer_sent.inc();
                if let Some(live) = live {
                    self.metrics
                        .sse_delivery_seconds
                        .observe(live.arrived.elapsed().as_secs_f64());
                    if row.status == OfferStatus::Quoted && !self.priced {
                        self.priced = true;
                        let waited = (self.clock.now() - self.created_at)
                            .to_std()
                            .unwrap_or_default();
                        self.metrics
                            .first_price_seconds
                            .observe(waited.as_secs_f64());
                    }
                    // The end of the request's trace: its event on the wire.
                    tracing::debug!(
                        request_id = %self.request_id,
                        insurer = %row.insurer_id,
                        version = row.version,
                        trace_id = live.trace.map(|t| t.trace_id()).as_deref(),
                        "row delivered"
                    );
                }
                return Some(frame);
            }
            if self.complete() {
                return Some(self.closing("done"));
            }
            // In this order, the first ready wins (`biased`): a wake-up
            // for an event polls the receiver alone. Unbiased, `select!`
            // starts at a random branch, so two wake-ups in three also
            // polled the timer and the shutdown token; polling the
            // token's registered waiter takes its waiter-list lock, one
            // lock every stream on the pod shares. Shutdown and the
            // timer are still seen as soon as no event is waiting.
            tokio::select! {
                biased;
                received = self.subscription.receiver.recv() => match received {
                    Ok(live) => self.absorb_live(live),
                    Err(RecvError::Lagged(_)) => {
                        // Fell behind: take the read model's state instead.
                        if let Ok(rows) = self.read_model.rows(&self.request_id).await {
                            for row in rows {
                                self.absorb_stored(row);
                            }
                        }
                    }
                    Err(RecvError::Closed) => {
                        self.phase = Phase::Ended;
                        return None;
                    }
                },
                () = self.timer.as_mut() => {
                    let now = Instant::now();
                    if now < self.deadline {
                        // A heartbeat is due.
                        self.next_heartbeat = now + self.heartbeat_every;
                        self.rearm();
                        let at = self.clock.now();
                        return Some(self.frame("heartbeat", &serde_json::json!({ "at": at })));
                    }
                    // Last look at the read model: an event may have been
                    // applied while this pod's live feed lagged.
                    if let Ok(rows) = self.read_model.rows(&self.request_id).await {
                        for row in rows {
                            self.absorb_stored(row);
                        }
                    }
                    if !self.queue.is_empty() || self.complete() {
                        self.deadline = Instant::now() + Duration::from_secs(3600);
                        self.rearm();
                        continue;
                    }
                    return Some(self.closing("timeout"));
                }
                _ = self.cancelled.as_mut() => {
                    // The client reconnects (to another pod) with Last-Event-ID.
                    self.phase = Phase::Ended;
                    return Some(Bytes::from(format!("retry: {}\n\n", self.retry.as_millis())));
                }
            }
        }
    }
}

/// An SSE frame around data already serialised.
fn frame_bytes(event: &str, id: Option<&str>, json: &str) -> Bytes {
    let id_len = id.map_or(0, |id| id.len() + 5);
    let mut out = String::with_capacity(id_len + event.len() + json.len() + 16);
    if let Some(id) = id {
        let _ = writeln!(out, "id: {id}");
    }
    let _ = writeln!(out, "event: {event}");
    out.push_str("data: ");
    out.push_str(json);
    out.push_str("\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;
    use osago_core::ManualClock;
    use osago_transport::memory::MemoryReadModel;

    /// Opens a stream of a request nobody answers: heartbeats every
    /// second, deadline `deadline_in` (with 0.5 s grace) from now.
    async fn unanswered(deadline_in: Duration) -> StreamState {
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let request_id = RequestId::random();
        let now = clock.now();
        StreamState::open(
            StreamParams {
                request_id,
                created_at: now,
                deadline_at: now + chrono::Duration::from_std(deadline_in).unwrap(),
                grace: Duration::from_millis(500),
                heartbeat: Duration::from_secs(1),
                retry: Duration::from_secs(2),
                cursor: Cursor::default(),
            },
            Arc::new(MemoryReadModel::new(Duration::from_secs(3600))),
            Arc::new(Hub::default()).subscribe(request_id),
            clock,
            Metrics::default(),
            CancellationToken::new(),
        )
        .await
        .expect("opens")
    }

    /// The stream's frames with when each came (ms after `start`), the
    /// preamble left out, until it ends.
    async fn frames(mut stream: StreamState, start: Instant) -> Vec<(u128, String)> {
        let mut seen = Vec::new();
        while let Some(chunk) = stream.next_chunk().await {
            let text = String::from_utf8(chunk.to_vec()).unwrap();
            if let Some(event) = text.lines().find_map(|l| l.strip_prefix("event: ")) {
                seen.push((start.elapsed().as_millis(), event.to_owned()));
            }
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_keep_their_interval_and_the_deadline_ends_the_stream() {
        let start = Instant::now();
        let stream = unanswered(Duration::from_secs(3)).await;
        assert!(!stream.nothing_left());
        let seen = frames(stream, start).await;
        let expected: Vec<(u128, String)> = [
            (1000, "heartbeat"),
            (2000, "heartbeat"),
            (3000, "heartbeat"),
            (3500, "timeout"),
        ]
        .into_iter()
        .map(|(at, event)| (at, event.to_owned()))
        .collect();
        assert_eq!(seen, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_heartbeat_puts_the_next_a_whole_interval_after_it() {
        let start = Instant::now();
        let mut stream = unanswered(Duration::from_secs(60)).await;
        assert!(stream.next_chunk().await.is_some(), "the preamble");
        // Nobody reads the stream for 2.5 s: one heartbeat is due, late.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let late = stream.next_chunk().await.unwrap();
        assert!(std::str::from_utf8(&late)
            .unwrap()
            .contains("event: heartbeat"));
        assert_eq!(start.elapsed().as_millis(), 2500, "at once");
        let next = stream.next_chunk().await.unwrap();
        assert!(std::str::from_utf8(&next)
            .unwrap()
            .contains("event: heartbeat"));
        assert_eq!(start.elapsed().as_millis(), 3500);
        // The deadline has not passed: more is to come.
        assert!(!stream.nothing_left());
    }

    #[tokio::test(start_paused = true)]
    async fn events_already_received_go_out_before_a_shutdown_ends_the_stream() {
        use osago_core::events::{InsurerEvent, QuoteEvent, QuoteStatus};
        use osago_core::ports::Traced;
        use osago_core::EventId;
        // Unbiased, the wait would pick the shutdown over a waiting event
        // two times in three; 16 streams of three events each.
        for _ in 0..16 {
            let hub = Arc::new(Hub::default());
            let shutdown = CancellationToken::new();
            let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
            let request_id = RequestId::random();
            let now = clock.now();
            let mut stream = StreamState::open(
                StreamParams {
                    request_id,
                    created_at: now,
                    deadline_at: now + chrono::Duration::seconds(60),
                    grace: Duration::from_millis(500),
                    heartbeat: Duration::from_secs(1),
                    retry: Duration::from_secs(2),
                    cursor: Cursor::default(),
                },
                Arc::new(MemoryReadModel::new(Duration::from_secs(3600))),
                hub.subscribe(request_id),
                clock,
                Metrics::default(),
                shutdown.clone(),
            )
            .await
            .expect("opens");
            assert!(stream.next_chunk().await.is_some(), "the preamble");
            for insurer in ["alfa", "beta", "gamma"] {
                let event = InsurerEvent::Quote(QuoteEvent {
                    event_id: EventId::random(),
                    request_id,
                    insurer_id: InsurerId::new(insurer).unwrap(),
                    version: 2,
                    insurers_total: 8,
                    status: QuoteStatus::Declined,
                    quote: None,
                    reason: Some("declined".into()),
                    occurred_at: now,
                    deadline_at: now + chrono::Duration::seconds(60),
                });
                hub.dispatch(Traced { event, trace: None });
            }
            shutdown.cancel();
            let mut seen = Vec::new();
            while let Some(chunk) = stream.next_chunk().await {
                seen.push(String::from_utf8(chunk.to_vec()).unwrap());
            }
            // Every insurer's decline, then the shutdown's `retry:`.
            let (last, rows) = seen.split_last().unwrap();
            assert_eq!(last.trim(), "retry: 2000", "{seen:?}");
            for insurer in ["alfa", "beta", "gamma"] {
                assert!(
                    rows.iter().any(|frame| frame.contains("event: insurer")
                        && frame.contains(&format!("\"insurer_id\":\"{insurer}\""))
                        && frame.contains("\"declined\"")),
                    "{insurer}: {seen:?}"
                );
            }
        }
    }

    #[test]
    fn cursor_round_trips_and_ignores_garbage() {
        let c = Cursor::parse("swift:2,steady:1, bad, X:1, legacy:x");
        assert_eq!(c.seen(&InsurerId::new("swift").unwrap()), 2);
        assert_eq!(c.seen(&InsurerId::new("steady").unwrap()), 1);
        assert_eq!(c.seen(&InsurerId::new("legacy").unwrap()), 0);
        assert_eq!(c.render(), "steady:1,swift:2");
        assert_eq!(Cursor::parse(""), Cursor::default());
    }
}
