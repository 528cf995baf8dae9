//! The engine on tokio's paused clock with scripted insurers.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use osago_core::insurer::{Application, Quote};
use osago_core::ports::StateStore;
use osago_core::request::sample;
use osago_core::tariff;
use osago_core::{Kopecks, ManualClock};
use osago_transport::memory::MemoryStateStore;

use super::*;

/// What a scripted insurer does on each call.
#[derive(Debug, Clone)]
enum Step {
    Answer(Result<PollOutcome, InsurerError>),
    Hang,
}

#[derive(Debug)]
struct Scripted {
    create: Mutex<VecDeque<Result<Application, InsurerError>>>,
    create_hangs: bool,
    polls: Mutex<VecDeque<Step>>,
    /// tokio instants of every call: ("create" | "poll", at).
    calls: Mutex<Vec<(&'static str, Instant)>>,
    keys: Mutex<Vec<String>>,
}

impl Scripted {
    fn new(polls: Vec<Step>) -> Arc<Self> {
        Arc::new(Self {
            create: Mutex::new(VecDeque::new()),
            create_hangs: false,
            polls: Mutex::new(polls.into()),
            calls: Mutex::default(),
            keys: Mutex::default(),
        })
    }

    fn hanging() -> Arc<Self> {
        Arc::new(Self {
            create: Mutex::new(VecDeque::new()),
            create_hangs: true,
            polls: Mutex::default(),
            calls: Mutex::default(),
            keys: Mutex::default(),
        })
    }

    fn with_create(self: Arc<Self>, results: Vec<Result<Application, InsurerError>>) -> Arc<Self> {
        *self.create.lock().unwrap() = results.into();
        self
    }

    fn calls(&self, kind: &str) -> Vec<Instant> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, at)| *at)
            .collect()
    }
}

#[async_trait]
impl InsurerClient for Scripted {
    async fn create_application(
        &self,
        key: &str,
        _: &QuoteRequest,
    ) -> Result<Application, InsurerError> {
        self.calls.lock().unwrap().push(("create", Instant::now()));
        self.keys.lock().unwrap().push(key.to_owned());
        if self.create_hangs {
            std::future::pending::<()>().await;
        }
        let next = self.create.lock().unwrap().pop_front();
        next.unwrap_or_else(|| {
            Ok(Application {
                id: "app".into(),
                retry_after: None,
            })
        })
    }

    async fn poll_quote(&self, _: &str) -> Result<PollOutcome, InsurerError> {
        self.calls.lock().unwrap().push(("poll", Instant::now()));
        let step = self.polls.lock().unwrap().pop_front();
        match step {
            Some(Step::Answer(answer)) => answer,
            Some(Step::Hang) => std::future::pending().await,
            None => Ok(PollOutcome::Pending { retry_after: None }),
        }
    }
}

/// Records every published event with the tokio instant it arrived.
#[derive(Debug, Default)]
struct Recorder {
    events: Mutex<Vec<(Instant, InsurerEvent)>>,
    failures_left: Mutex<u32>,
    /// Publishes refused so far.
    refused: Mutex<u32>,
}

#[async_trait]
impl QuoteSink for Recorder {
    async fn publish(&self, event: &InsurerEvent) -> Result<(), PortError> {
        let mut failures = self.failures_left.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            *self.refused.lock().unwrap() += 1;
            return Err(PortError::new(
                osago_core::ports::PortErrorKind::Unavailable,
                "broker down",
            ));
        }
        self.events
            .lock()
            .unwrap()
            .push((Instant::now(), event.clone()));
        Ok(())
    }
}

impl Recorder {
    fn events(&self) -> Vec<(Instant, InsurerEvent)> {
        self.events.lock().unwrap().clone()
    }

    fn final_of(&self, insurer: &str) -> (Instant, InsurerEvent) {
        let finals: Vec<_> = self
            .events()
            .into_iter()
            .filter(|(_, e)| e.insurer_id().as_str() == insurer && e.is_final())
            .collect();
        assert_eq!(
            finals.len(),
            1,
            "exactly one final event for {insurer}: {finals:?}"
        );
        finals.into_iter().next().unwrap()
    }
}

fn quote() -> Quote {
    let start = sample().policy.effective_start(now().date_naive());
    let p = tariff::premium(&sample(), Kopecks::from_rub(7_000), start).unwrap();
    Quote {
        premium_kopecks: p.premium_kopecks,
        coefficients: p.coefficients,
        capped: p.capped,
        valid_until: now(),
        add_ons: vec![],
        message: None,
        purchase_url: None,
        ready_at: None,
        price_check: None,
    }
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
}

struct Harness {
    engine: Engine,
    sink: Arc<Recorder>,
    state: Arc<MemoryStateStore>,
    t0: Instant,
}

fn harness(insurers: Vec<(&str, Arc<Scripted>)>) -> Harness {
    harness_with(insurers, EngineConfig::default())
}

fn harness_with(insurers: Vec<(&str, Arc<Scripted>)>, config: EngineConfig) -> Harness {
    let sink = Arc::new(Recorder::default());
    let state = Arc::new(MemoryStateStore::new());
    let insurers = insurers
        .into_iter()
        .map(|(id, client)| Insurer {
            id: InsurerId::new(id).unwrap(),
            client,
        })
        .collect();
    let engine = Engine::assemble(
        insurers,
        sink.clone(),
        state.clone(),
        Arc::new(ManualClock::new(now())),
        config,
        EngineMetrics::default(),
    );
    Harness {
        engine,
        sink,
        state,
        t0: Instant::now(),
    }
}

/// A harness asking one insurer of any kind.
fn harness_one(id: &str, client: Arc<dyn InsurerClient>, config: EngineConfig) -> Harness {
    let mut h = harness_with(vec![], config.clone());
    h.engine = Engine::assemble(
        vec![Insurer {
            id: InsurerId::new(id).unwrap(),
            client,
        }],
        h.sink.clone(),
        h.state.clone(),
        Arc::new(ManualClock::new(now())),
        config,
        EngineMetrics::default(),
    );
    h
}

fn request_event(deadline_in: chrono::Duration) -> RequestEvent {
    RequestEvent {
        event_id: EventId::random(),
        request_id: RequestId::random(),
        occurred_at: now(),
        deadline_at: now() + deadline_in,
        request: sample(),
    }
}

async fn run(h: &Harness, event: RequestEvent) -> Vec<InsurerOutcome> {
    match h.engine.start(event).await.unwrap() {
        Started::Running(fan_out) => fan_out.wait().await,
        Started::Duplicate => panic!("not a duplicate"),
    }
}

/// Pending first for every insurer, then exactly one final per insurer.
fn assert_protocol(h: &Harness, insurers: &[&str]) {
    let events = h.sink.events();
    let (pending, rest) = events.split_at(insurers.len());
    for (_, e) in pending {
        assert!(
            matches!(e, InsurerEvent::Quote(q) if q.status == QuoteStatus::Pending && q.version == 1)
        );
        assert_eq!(e.insurers_total() as usize, insurers.len());
    }
    assert_eq!(rest.len(), insurers.len(), "one final each: {rest:?}");
    for insurer in insurers {
        let (_, e) = h.sink.final_of(insurer);
        assert_eq!(e.version(), 2);
    }
}

fn ok(outcome: PollOutcome) -> Step {
    Step::Answer(Ok(outcome))
}

fn pending() -> Step {
    ok(PollOutcome::Pending { retry_after: None })
}

#[tokio::test(start_paused = true)]
async fn never_ready_ends_as_timeout_exactly_at_its_deadline() {
    let silent = Scripted::new(vec![]);
    let h = harness(vec![("silent", silent.clone())]);
    let outcomes = run(&h, request_event(chrono::Duration::seconds(60))).await;
    assert_eq!(outcomes[0].outcome, "timeout");
    assert_protocol(&h, &["silent"]);
    let (at, event) = h.sink.final_of("silent");
    assert_eq!(at - h.t0, Duration::from_secs(60));
    match event {
        InsurerEvent::Error(e) => {
            assert_eq!((e.kind, e.is_final), (ErrorKind::Timeout, true));
            assert_eq!(
                e.attempts as usize,
                silent.calls("create").len() + silent.calls("poll").len()
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn deadline_is_the_earlier_of_config_and_the_events_deadline_at() {
    let silent = Scripted::new(vec![]);
    let h = harness(vec![("silent", silent)]);
    run(&h, request_event(chrono::Duration::seconds(20))).await;
    let (at, _) = h.sink.final_of("silent");
    assert_eq!(at - h.t0, Duration::from_secs(20));
}

#[tokio::test(start_paused = true)]
async fn retry_after_429_is_honoured_before_the_next_poll() {
    let limited = InsurerError::new(ErrorKind::RateLimited, "insurer answered 429")
        .with_retry_after(Some(Duration::from_secs(3)));
    let flaky = Scripted::new(vec![
        pending(),
        Step::Answer(Err(limited)),
        pending(),
        ok(PollOutcome::Quoted(quote())),
    ]);
    let h = harness(vec![("flaky", flaky.clone())]);
    run(&h, request_event(chrono::Duration::seconds(60))).await;
    let polls = flaky.calls("poll");
    assert_eq!(polls.len(), 4);
    // The poll after the 429 (the second) comes no sooner than 3 s later.
    assert!(
        polls[2] - polls[1] >= Duration::from_secs(3),
        "{:?}",
        polls[2] - polls[1]
    );
    assert_eq!(
        polls[1] - polls[0],
        Duration::from_millis(250),
        "the schedule's first interval otherwise"
    );
    assert_protocol(&h, &["flaky"]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_create_and_pending_is_honoured() {
    let slow = Scripted::new(vec![
        ok(PollOutcome::Pending {
            retry_after: Some(Duration::from_secs(5)),
        }),
        ok(PollOutcome::Declined {
            reason: "taxi not insured".into(),
        }),
    ])
    .with_create(vec![
        Err(InsurerError::new(ErrorKind::RateLimited, "busy")
            .with_retry_after(Some(Duration::from_secs(2)))),
        Ok(Application {
            id: "a-1".into(),
            retry_after: Some(Duration::from_secs(4)),
        }),
    ]);
    let h = harness(vec![("slow", slow.clone())]);
    let outcomes = run(&h, request_event(chrono::Duration::seconds(60))).await;
    assert_eq!(outcomes[0].outcome, "declined");
    let creates: Vec<_> = slow.calls("create").iter().map(|t| *t - h.t0).collect();
    let polls: Vec<_> = slow.calls("poll").iter().map(|t| *t - h.t0).collect();
    assert_eq!(creates, [Duration::ZERO, Duration::from_secs(2)]);
    assert_eq!(polls, [Duration::from_secs(6), Duration::from_secs(11)]);
    let keys = slow.keys.lock().unwrap().clone();
    assert_eq!(
        keys[0], keys[1],
        "one idempotency key per (request, insurer)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_insurer_never_delays_another() {
    let hang = Scripted::hanging();
    let stuck_poll = Scripted::new(vec![Step::Hang]);
    let fast = Scripted::new(vec![ok(PollOutcome::Quoted(quote()))]);
    let h = harness(vec![("hang", hang), ("stuck", stuck_poll), ("fast", fast)]);
    run(&h, request_event(chrono::Duration::seconds(60))).await;
    let (fast_at, fast_event) = h.sink.final_of("fast");
    assert_eq!(
        fast_at - h.t0,
        Duration::from_millis(250),
        "at the first poll (nothing learned yet)"
    );
    assert!(
        matches!(fast_event, InsurerEvent::Quote(q) if q.status == QuoteStatus::Quoted && q.quote.is_some())
    );
    let (hang_at, _) = h.sink.final_of("hang");
    assert_eq!(hang_at - h.t0, Duration::from_secs(60));
    let (stuck_at, _) = h.sink.final_of("stuck");
    assert_eq!(stuck_at - h.t0, Duration::from_secs(60));
    assert_protocol(&h, &["hang", "stuck", "fast"]);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_errors_end_at_once_with_their_kind() {
    let rejecting = Scripted::new(vec![]).with_create(vec![Err(InsurerError::new(
        ErrorKind::Rejected,
        "insurer needs more data: owner.address.apartment",
    ))]);
    let broken = Scripted::new(vec![Step::Answer(Err(InsurerError::new(
        ErrorKind::BadResponse,
        "malformed answer body",
    )))]);
    let h = harness(vec![("rejecting", rejecting), ("broken", broken)]);
    let outcomes = run(&h, request_event(chrono::Duration::seconds(60))).await;
    let mut kinds: Vec<_> = outcomes.iter().map(|o| o.outcome).collect();
    kinds.sort();
    assert_eq!(kinds, ["bad_response", "rejected"]);
    let (at, _) = h.sink.final_of("rejecting");
    assert_eq!(at, h.t0);
    assert_protocol(&h, &["rejecting", "broken"]);
}

#[tokio::test(start_paused = true)]
async fn a_replayed_request_event_starts_nothing() {
    let insurer = Scripted::new(vec![ok(PollOutcome::Quoted(quote()))]);
    let h = harness(vec![("one", insurer.clone())]);
    let event = request_event(chrono::Duration::seconds(60));
    run(&h, event.clone()).await;
    assert!(matches!(
        h.engine.start(event).await.unwrap(),
        Started::Duplicate
    ));
    assert_eq!(insurer.calls("create").len(), 1);
    assert_eq!(h.sink.events().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_event_past_its_deadline_asks_nobody() {
    let insurer = Scripted::new(vec![]);
    let h = harness(vec![("a", insurer.clone()), ("b", Scripted::new(vec![]))]);
    let outcomes = run(&h, request_event(chrono::Duration::seconds(-1))).await;
    assert!(outcomes
        .iter()
        .all(|o| o.outcome == "timeout" && o.published));
    assert!(insurer.calls("create").is_empty());
    let events = h.sink.events();
    assert_eq!(events.len(), 2);
    assert!(events
        .iter()
        .all(|(at, e)| *at == h.t0 && e.is_final() && e.version() == 1));
}

#[tokio::test(start_paused = true)]
async fn progress_is_recorded_for_resuming() {
    let insurer = Scripted::new(vec![pending(), ok(PollOutcome::Quoted(quote()))]).with_create(
        vec![Ok(Application {
            id: "app-42".into(),
            retry_after: None,
        })],
    );
    let h = harness(vec![("one", insurer)]);
    let event = request_event(chrono::Duration::seconds(60));
    let request_id = event.request_id;
    run(&h, event).await;
    let progress = h.state.load_progress(&request_id).await.unwrap();
    assert_eq!(progress.len(), 1);
    assert_eq!(progress[0].application_id.as_deref(), Some("app-42"));
    assert_eq!(
        (
            progress[0].attempts,
            progress[0].version,
            progress[0].finished
        ),
        (3, 2, true)
    );
    let ttls = h.state.ttls();
    assert!(!ttls.is_empty() && ttls.iter().all(|t| *t <= EngineConfig::default().state_ttl));
}

#[tokio::test(start_paused = true)]
async fn a_failing_sink_is_retried() {
    let insurer = Scripted::new(vec![ok(PollOutcome::Quoted(quote()))]);
    let h = harness(vec![("one", insurer)]);
    let event = request_event(chrono::Duration::seconds(60));
    // The pending event goes through; the final one fails twice first.
    let fan_out = match h.engine.start(event).await.unwrap() {
        Started::Running(f) => f,
        Started::Duplicate => unreachable!(),
    };
    *h.sink.failures_left.lock().unwrap() = 2;
    let outcomes = fan_out.wait().await;
    // Both injected failures were met by the final event's publishes, and
    // its third attempt went through.
    assert_eq!(*h.sink.failures_left.lock().unwrap(), 0);
    assert_eq!(*h.sink.refused.lock().unwrap(), 2);
    assert!(outcomes[0].published);
    assert_protocol(&h, &["one"]);
}

fn unavailable() -> InsurerError {
    InsurerError::new(ErrorKind::Unavailable, "insurer answered 503")
}

fn app() -> Result<Application, InsurerError> {
    Ok(Application {
        id: "app".into(),
        retry_after: None,
    })
}

#[tokio::test(start_paused = true)]
async fn post_is_retried_with_jittered_backoff_and_one_idempotency_key() {
    let insurer = Scripted::new(vec![ok(PollOutcome::Quoted(quote()))]).with_create(vec![
        Err(unavailable()),
        Err(InsurerError::new(ErrorKind::Timeout, "timed out")),
        app(),
    ]);
    let h = harness(vec![("retry", insurer.clone())]);
    let outcomes = run(&h, request_event(chrono::Duration::seconds(60))).await;
    assert_eq!(outcomes[0].outcome, "quoted");
    let creates = insurer.calls("create");
    assert_eq!(creates.len(), 3);
    // Full jitter: retry n waits uniformly in [0, min(cap, base * 2^n)].
    let base = EngineConfig::default().resilience.backoff.base;
    assert!(
        creates[1] - creates[0] <= base,
        "{:?}",
        creates[1] - creates[0]
    );
    assert!(
        creates[2] - creates[1] <= base * 2,
        "{:?}",
        creates[2] - creates[1]
    );
    let keys = insurer.keys.lock().unwrap().clone();
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "one Idempotency-Key: {keys:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_never_go_past_the_deadline() {
    let mut config = EngineConfig::default();
    config.resilience.backoff.base = Duration::from_millis(300);
    config.resilience.backoff.max_attempts = 1_000;
    let insurer = Scripted::new(vec![]).with_create(vec![Err(unavailable()); 1_000]);
    let h = harness_with(vec![("down", insurer.clone())], config);
    let outcomes = run(&h, request_event(chrono::Duration::seconds(2))).await;
    assert_eq!(
        outcomes[0].outcome, "unavailable",
        "ends with the failure's kind, not a timeout"
    );
    let creates = insurer.calls("create");
    assert!(creates.len() > 2, "retried: {}", creates.len());
    let deadline = h.t0 + Duration::from_secs(2);
    assert!(creates.iter().all(|at| *at < deadline));
    let (final_at, _) = h.sink.final_of("down");
    assert!(final_at < deadline);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_answers_are_not_retried() {
    let insurer =
        Scripted::new(vec![]).with_create(vec![Err(InsurerError::new(ErrorKind::Rejected, "400"))]);
    let h = harness(vec![("strict", insurer.clone())]);
    run(&h, request_event(chrono::Duration::seconds(60))).await;
    assert_eq!(insurer.calls("create").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_ends_new_work_at_once_as_circuit_open() {
    let mut config = EngineConfig::default();
    config.resilience.backoff.max_attempts = 1;
    let insurer = Scripted::new(vec![]).with_create(vec![Err(unavailable()); 100]);
    let h = harness_with(vec![("broken", insurer.clone())], config);
    let min_calls = EngineConfig::default().resilience.breaker.min_calls as usize;
    for _ in 0..min_calls {
        let outcomes = run(&h, request_event(chrono::Duration::seconds(60))).await;
        assert_eq!(outcomes[0].outcome, "unavailable");
    }
    let started = Instant::now();
    let outcomes = run(&h, request_event(chrono::Duration::seconds(60))).await;
    assert_eq!(outcomes[0].outcome, "circuit_open");
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "the user sees it at once"
    );
    assert_eq!(
        insurer.calls("create").len(),
        min_calls,
        "no call while open"
    );
}

#[tokio::test(start_paused = true)]
async fn a_burst_over_the_quota_is_delayed_not_failed() {
    let mut config = EngineConfig::default();
    config.resilience.quota.rate = crate::resilience::GcraConfig {
        rate_per_sec: 1.0,
        burst: 1,
    };
    let insurer = Scripted::new(vec![
        ok(PollOutcome::Quoted(quote())),
        ok(PollOutcome::Quoted(quote())),
    ]);
    let h = harness_with(vec![("slowquota", insurer.clone())], config);
    let (a, b) = tokio::join!(
        run(&h, request_event(chrono::Duration::seconds(60))),
        run(&h, request_event(chrono::Duration::seconds(60)))
    );
    assert_eq!((a[0].outcome, b[0].outcome), ("quoted", "quoted"));
    let calls: Vec<Instant> = insurer
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|(_, at)| *at)
        .collect();
    for pair in calls.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(999),
            "1 call per second: {calls:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn over_the_deadline_the_quota_ends_work_as_rate_limited() {
    let mut config = EngineConfig::default();
    config.resilience.quota.rate = crate::resilience::GcraConfig {
        rate_per_sec: 0.1,
        burst: 1,
    };
    let first = Scripted::new(vec![]);
    let h = harness_with(vec![("tight", first.clone())], config);
    // One call fits the burst; the second would wait 10 s past a 5 s deadline.
    let outcomes = run(&h, request_event(chrono::Duration::seconds(5))).await;
    assert_eq!(outcomes[0].outcome, "rate_limited");
    assert_eq!(first.calls("create").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn failed_polls_are_retried_a_bounded_number_of_times() {
    let recovers = Scripted::new(vec![
        Step::Answer(Err(unavailable())),
        Step::Answer(Err(unavailable())),
        ok(PollOutcome::Quoted(quote())),
    ]);
    let gives_up = Scripted::new(vec![Step::Answer(Err(unavailable())); 10]);
    let h = harness(vec![("recovers", recovers), ("givesup", gives_up.clone())]);
    let outcomes = run(&h, request_event(chrono::Duration::seconds(60))).await;
    let by: std::collections::HashMap<_, _> = outcomes
        .iter()
        .map(|o| (o.insurer_id.as_str().to_owned(), o.outcome))
        .collect();
    assert_eq!(by["recovers"], "quoted");
    assert_eq!(by["givesup"], "unavailable");
    let retries = EngineConfig::default().resilience.poll_retries as usize;
    assert_eq!(gives_up.calls("poll").len(), retries + 1);
}

#[tokio::test(start_paused = true)]
async fn the_insurers_final_word_on_an_application_is_not_polled_again() {
    // `CALCULATION_ERROR`: the application's final status. Polling it again
    // would get the same answer `poll_retries` more times.
    let failed = Scripted::new(vec![
        Step::Answer(Err(InsurerError::new(
            ErrorKind::Unavailable,
            "insurer calculation error",
        )
        .terminal())),
        ok(PollOutcome::Quoted(quote())),
    ]);
    let h = harness(vec![("failed", failed.clone())]);
    let outcomes = run(&h, request_event(chrono::Duration::seconds(60))).await;
    assert_eq!(outcomes[0].outcome, "unavailable");
    assert_eq!(failed.calls("poll").len(), 1);
    assert_eq!(failed.calls("create").len(), 1);
}

mod properties {
    //! For random insurer behaviour: every (request, insurer) ends in
    //! exactly one final event, no later than its deadline, and the insurer
    //! sees one Idempotency-Key however many retries happen.

    use proptest::prelude::*;

    use super::*;

    fn error(kind: ErrorKind, retry_ms: Option<u64>) -> InsurerError {
        InsurerError::new(kind, "scripted").with_retry_after(retry_ms.map(Duration::from_millis))
    }

    fn arb_error() -> impl Strategy<Value = InsurerError> {
        (
            prop::sample::select(vec![
                ErrorKind::Timeout,
                ErrorKind::Unavailable,
                ErrorKind::RateLimited,
                ErrorKind::BadResponse,
                ErrorKind::Rejected,
            ]),
            prop::option::of(0u64..5_000),
        )
            .prop_map(|(kind, retry)| error(kind, retry))
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => prop::option::of(0u64..3_000)
                .prop_map(|r| ok(PollOutcome::Pending { retry_after: r.map(Duration::from_millis) })),
            1 => Just(ok(PollOutcome::Quoted(quote()))),
            1 => Just(ok(PollOutcome::Declined { reason: "no".into() })),
            2 => arb_error().prop_map(|e| Step::Answer(Err(e))),
            1 => Just(Step::Hang),
        ]
    }

    fn arb_create() -> impl Strategy<Value = Vec<Result<Application, InsurerError>>> {
        prop::collection::vec(
            prop_oneof![3 => Just(app()), 2 => arb_error().prop_map(Err)],
            0..6,
        )
    }

    fn arb_insurer(
    ) -> impl Strategy<Value = (Vec<Result<Application, InsurerError>>, Vec<Step>, bool)> {
        (
            arb_create(),
            prop::collection::vec(arb_step(), 0..10),
            prop::bool::weighted(0.1),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn every_insurer_ends_once_by_its_deadline(
            insurers in prop::collection::vec(arb_insurer(), 1..5),
            deadline_secs in 1i64..40,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async move {
                let names: Vec<String> = (0..insurers.len()).map(|i| format!("i{i}")).collect();
                let scripted: Vec<Arc<Scripted>> = insurers
                    .into_iter()
                    .map(|(create, polls, hangs)| {
                        if hangs { Scripted::hanging() } else { Scripted::new(polls).with_create(create) }
                    })
                    .collect();
                let h = harness(names.iter().map(String::as_str).zip(scripted.iter().cloned()).collect());
                let outcomes = run(&h, request_event(chrono::Duration::seconds(deadline_secs))).await;
                assert_eq!(outcomes.len(), names.len());
                let deadline = h.t0 + Duration::from_secs(deadline_secs as u64);
                for (name, insurer) in names.iter().zip(&scripted) {
                    let (at, event) = h.sink.final_of(name);
                    assert!(at <= deadline, "{name}: final at {:?} after the deadline", at - h.t0);
                    assert_eq!(event.version(), 2);
                    let keys = insurer.keys.lock().unwrap().clone();
                    assert!(keys.iter().all(|k| *k == keys[0]), "{name}: one Idempotency-Key");
                    assert!(insurer.calls.lock().unwrap().iter().all(|(_, at)| *at <= deadline));
                }
                assert_eq!(h.sink.events().len(), 2 * names.len(), "a pending and a final each");
            });
        }
    }
}

/// An insurer whose quote is ready a fixed time after its application.
#[derive(Debug)]
struct ReadyAfter {
    after: Duration,
    created: Mutex<Option<Instant>>,
    polls: Mutex<Vec<Instant>>,
}

impl ReadyAfter {
    fn new(after: Duration) -> Arc<Self> {
        Arc::new(Self {
            after,
            created: Mutex::default(),
            polls: Mutex::default(),
        })
    }
}

#[async_trait]
impl InsurerClient for ReadyAfter {
    async fn create_application(
        &self,
        _: &str,
        _: &QuoteRequest,
    ) -> Result<Application, InsurerError> {
        *self.created.lock().unwrap() = Some(Instant::now());
        self.polls.lock().unwrap().clear();
        Ok(Application {
            id: "app".into(),
            retry_after: None,
        })
    }

    async fn poll_quote(&self, _: &str) -> Result<PollOutcome, InsurerError> {
        let now = Instant::now();
        self.polls.lock().unwrap().push(now);
        let created = self.created.lock().unwrap().expect("created first");
        if now - created >= self.after {
            Ok(PollOutcome::Quoted(quote()))
        } else {
            Ok(PollOutcome::Pending { retry_after: None })
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_poll_moves_to_the_insurers_learned_answer_time() {
    let insurer = ReadyAfter::new(Duration::from_secs(3));
    let h = harness_one("learner", insurer.clone(), EngineConfig::default());
    // Nothing learned: polls from 250 ms on, growing.
    run(&h, request_event(chrono::Duration::seconds(60))).await;
    let first_polls = insurer.polls.lock().unwrap().len();
    assert!(
        first_polls >= 5,
        "{first_polls} polls before anything was learned"
    );
    for _ in 0..9 {
        run(&h, request_event(chrono::Duration::seconds(60))).await;
    }
    // Learned: the first poll comes at about 3 s and finds the quote.
    let created = Instant::now();
    run(&h, request_event(chrono::Duration::seconds(60))).await;
    let polls = insurer.polls.lock().unwrap().clone();
    assert_eq!(polls.len(), 1, "one poll once the answer time is learned");
    let first = polls[0] - created;
    assert!(
        first >= Duration::from_secs(3) && first < Duration::from_millis(3_700),
        "{first:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_last_poll_lands_just_before_the_deadline() {
    let never = Scripted::new(vec![]);
    let h = harness(vec![("never", never.clone())]);
    run(&h, request_event(chrono::Duration::seconds(60))).await;
    let polls = never.calls("poll");
    let last = *polls.last().unwrap() - h.t0;
    assert_eq!(last, Duration::from_millis(59_750), "{polls:?}");
    // Intervals grew to the 1 s maximum, and late in the minute to
    // 1 s x sqrt(t / 8 s) (the time waited weighs the lag); a poll that
    // would have left less than its interval before the last look became
    // it, so the last interval is less than two.
    for (i, pair) in polls.windows(2).enumerate() {
        let t = (pair[0] - h.t0).as_secs_f64();
        let ceiling = Duration::from_secs_f64((t / 8.0).max(1.0).sqrt()) + Duration::from_millis(1);
        let ceiling = if i + 2 == polls.len() {
            2 * ceiling
        } else {
            ceiling
        };
        assert!(
            pair[1] - pair[0] <= ceiling,
            "{:?} at {t} s",
            pair[1] - pair[0]
        );
    }
    let late = polls
        .iter()
        .filter(|at| **at - h.t0 > Duration::from_secs(30));
    // Half the 30 a 1 s interval would make in the last half minute.
    assert!(late.count() <= 15, "{polls:?}");
    assert!(polls.len() <= 40, "{} polls", polls.len());
}

/// An insurer whose every call takes 100 ms; quotes are ready at the first
/// poll while `ready`, never otherwise. Records when each poll began.
#[derive(Debug, Default)]
struct Busy {
    ready: std::sync::atomic::AtomicBool,
    polls: Mutex<Vec<Instant>>,
}

#[async_trait]
impl InsurerClient for Busy {
    async fn create_application(
        &self,
        key: &str,
        _: &QuoteRequest,
    ) -> Result<Application, InsurerError> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(Application {
            id: key.to_owned(),
            retry_after: None,
        })
    }

    async fn poll_quote(&self, _: &str) -> Result<PollOutcome, InsurerError> {
        self.polls.lock().unwrap().push(Instant::now());
        tokio::time::sleep(Duration::from_millis(100)).await;
        if self.ready.load(Ordering::SeqCst) {
            Ok(PollOutcome::Quoted(quote()))
        } else {
            Ok(PollOutcome::Pending { retry_after: None })
        }
    }
}

#[tokio::test(start_paused = true)]
async fn under_a_binding_cap_no_application_is_polled_past_its_deadline() {
    let busy = Arc::new(Busy::default());
    let mut config = EngineConfig::default();
    config.resilience.concurrency.max_in_flight = 2;
    let h = harness_one("busy", busy.clone(), config);
    // The schedule learns the insurer's answer times first.
    busy.ready.store(true, Ordering::SeqCst);
    for _ in 0..10 {
        run(&h, request_event(chrono::Duration::seconds(60))).await;
    }
    // Then 40 requests at once, never answered, against 2 slots of 100 ms
    // calls (20 calls/s): calls queue, polls are dear, deadlines bind.
    busy.ready.store(false, Ordering::SeqCst);
    busy.polls.lock().unwrap().clear();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(5);
    let fan_outs = futures::future::join_all((0..40).map(|_| async {
        match h
            .engine
            .start(request_event(chrono::Duration::seconds(5)))
            .await
            .unwrap()
        {
            Started::Running(fan_out) => fan_out,
            Started::Duplicate => unreachable!(),
        }
    }))
    .await;
    for fan_out in fan_outs {
        let outcomes = fan_out.wait().await;
        assert_eq!(outcomes[0].outcome, "timeout");
    }
    let polls = busy.polls.lock().unwrap().clone();
    assert!(!polls.is_empty());
    assert!(
        polls.iter().all(|at| *at < deadline),
        "a poll began {:?} after the deadline",
        polls.iter().max().map(|at| *at - deadline)
    );
    assert!(Instant::now() >= deadline);
}

#[tokio::test(start_paused = true)]
async fn fixed_polling_keeps_its_interval() {
    let never = Scripted::new(vec![]);
    let config = EngineConfig {
        poll: crate::resilience::PollConfig::fixed(Duration::from_secs(1)),
        ..EngineConfig::default()
    };
    let h = harness_with(vec![("never", never.clone())], config);
    run(&h, request_event(chrono::Duration::seconds(10))).await;
    let polls: Vec<Duration> = never.calls("poll").iter().map(|t| *t - h.t0).collect();
    let mut expected: Vec<Duration> = (1..=9).map(Duration::from_secs).collect();
    // And a last look just before the deadline.
    expected.push(Duration::from_millis(9_750));
    assert_eq!(polls, expected);
}

mod shared_policies {
    //! Two engines sharing their policies through one in-memory store, on
    //! the paused clock (the real-Valkey versions are in `tests/`).

    use osago_transport::memory::MemoryResilienceStore;

    use super::*;
    use crate::shared::SharedConfig;

    fn shared_harness(
        insurer: Arc<dyn InsurerClient>,
        store: &MemoryResilienceStore,
        policy: crate::guard::ResilienceConfig,
    ) -> Harness {
        let config = EngineConfig {
            resilience: policy,
            ..EngineConfig::default()
        };
        let mut h = harness_one("shared", insurer, config);
        h.engine = h
            .engine
            .with_resilience_store(Arc::new(store.clone()), SharedConfig::default());
        h
    }

    #[tokio::test(start_paused = true)]
    async fn a_breaker_opened_by_one_engine_short_circuits_the_other() {
        let store = MemoryResilienceStore::new();
        let failing = Scripted::new(vec![]).with_create(
            (0..20)
                .map(|_| Err(InsurerError::new(ErrorKind::Unavailable, "503")))
                .collect(),
        );
        let mut policy = crate::guard::ResilienceConfig::default();
        policy.backoff.max_attempts = 1;
        policy.breaker.min_calls = 10;
        let a = shared_harness(failing.clone(), &store, policy.clone());
        let b = shared_harness(failing.clone(), &store, policy);
        // Let both keepers take their first slot leases.
        tokio::time::sleep(Duration::from_millis(10)).await;
        for _ in 0..10 {
            run(&a, request_event(chrono::Duration::seconds(60))).await;
        }
        let creates_before = failing.calls("create").len();
        // b has seen no failure itself; after one sync it refuses at once.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let outcomes = run(&b, request_event(chrono::Duration::seconds(60))).await;
        assert_eq!(outcomes[0].outcome, "circuit_open");
        assert_eq!(
            failing.calls("create").len(),
            creates_before,
            "b never called"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn two_engines_never_exceed_the_shared_cap() {
        let store = MemoryResilienceStore::new();
        let counter = Arc::new(InFlight::default());
        let mut policy = crate::guard::ResilienceConfig::default();
        policy.concurrency.max_in_flight = 4;
        let a = shared_harness(counter.clone(), &store, policy.clone());
        let b = shared_harness(counter.clone(), &store, policy);
        let mut fan_outs = Vec::new();
        for i in 0..40 {
            let h = if i % 2 == 0 { &a } else { &b };
            let Started::Running(f) = h
                .engine
                .start(request_event(chrono::Duration::seconds(60)))
                .await
                .unwrap()
            else {
                panic!("fresh request")
            };
            fan_outs.push(f);
        }
        for f in fan_outs {
            for outcome in f.wait().await {
                assert_eq!(outcome.outcome, "quoted");
            }
        }
        let max = counter.max.load(Ordering::SeqCst);
        assert!(max <= 4, "{max} calls in flight over a cap of 4");
        assert!(max >= 3, "the cap was used: {max}");
    }

    /// Counts calls in flight; each call takes 100 ms.
    #[derive(Debug, Default)]
    struct InFlight {
        now: std::sync::atomic::AtomicU32,
        max: std::sync::atomic::AtomicU32,
    }

    impl InFlight {
        async fn call(&self) {
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.max.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[async_trait]
    impl InsurerClient for InFlight {
        async fn create_application(
            &self,
            _: &str,
            _: &QuoteRequest,
        ) -> Result<Application, InsurerError> {
            self.call().await;
            Ok(Application {
                id: "app".into(),
                retry_after: None,
            })
        }

        async fn poll_quote(&self, _: &str) -> Result<PollOutcome, InsurerError> {
            self.call().await;
            Ok(PollOutcome::Quoted(quote()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_store_falls_back_to_local_policies() {
        let down = Arc::new(DownStore);
        let fast = Scripted::new(vec![ok(PollOutcome::Quoted(quote()))]);
        let h = harness_one("fast", fast, EngineConfig::default());
        let engine = h
            .engine
            .with_resilience_store(down, SharedConfig::default());
        let Started::Running(f) = engine
            .start(request_event(chrono::Duration::seconds(60)))
            .await
            .unwrap()
        else {
            panic!("fresh request")
        };
        let outcomes = f.wait().await;
        assert_eq!(outcomes[0].outcome, "quoted");
    }

    /// A policy store that is always unreachable.
    #[derive(Debug)]
    struct DownStore;

    fn down() -> PortError {
        PortError::new(osago_core::ports::PortErrorKind::Unavailable, "down")
    }

    #[async_trait]
    impl ResilienceStore for DownStore {
        async fn take_quota(
            &self,
            _: &str,
            _: &osago_core::ratelimit::RateLimit,
            _: u32,
        ) -> Result<osago_core::ports::QuotaGrant, PortError> {
            Err(down())
        }
        async fn claim_slots(
            &self,
            _: &str,
            _: &osago_core::ports::SlotClaim,
        ) -> Result<osago_core::slots::SlotGrant, PortError> {
            Err(down())
        }
        async fn release_slots(&self, _: &str, _: &str) -> Result<(), PortError> {
            Err(down())
        }
        async fn put_breaker(
            &self,
            _: &str,
            _: &osago_core::breaker::BreakerSnapshot,
            _: Duration,
        ) -> Result<(), PortError> {
            Err(down())
        }
        async fn get_breaker(
            &self,
            _: &str,
        ) -> Result<Option<osago_core::breaker::BreakerSnapshot>, PortError> {
            Err(down())
        }
    }
}

mod resume {
    //! A pod dies mid-fan-out; another takes the request over from the
    //! state store when its lease expires.

    use super::*;

    /// Wall-clock time following tokio's paused clock, as real time would.
    #[derive(Debug)]
    struct FollowingClock {
        start: Instant,
    }

    impl Clock for FollowingClock {
        fn now(&self) -> chrono::DateTime<Utc> {
            now() + chrono::TimeDelta::from_std(self.start.elapsed()).unwrap()
        }
    }

    /// Two engines (pods) on one state store and sink.
    fn pods(insurer: Arc<Scripted>) -> (Harness, Engine) {
        let mut h = harness(vec![]);
        let clock = Arc::new(FollowingClock {
            start: Instant::now(),
        });
        let pod = |client: Arc<Scripted>| {
            Engine::assemble(
                vec![Insurer {
                    id: InsurerId::new("one").unwrap(),
                    client,
                }],
                h.sink.clone(),
                h.state.clone(),
                clock.clone(),
                EngineConfig::default(),
                EngineMetrics::default(),
            )
        };
        let other = pod(insurer.clone());
        h.engine = pod(insurer);
        (h, other)
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_pods_request_is_polled_on_by_another_without_a_second_post() {
        // Pending for 20 polls (over 20 s), then quoted.
        let mut steps: Vec<Step> = (0..20).map(|_| pending()).collect();
        steps.push(ok(PollOutcome::Quoted(quote())));
        let insurer = Scripted::new(steps).with_create(vec![Ok(Application {
            id: "app-7".into(),
            retry_after: None,
        })]);
        let (a, b) = pods(insurer.clone());
        let keeper_b = b.spawn_lease_keeper();
        let event = request_event(chrono::Duration::seconds(60));
        let Started::Running(fan_out) = a.engine.start(event.clone()).await.unwrap() else {
            panic!("fresh request")
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Pod a dies: its tasks stop, nobody renews its lease.
        drop(fan_out);
        drop(a.engine);
        assert_eq!(insurer.calls("create").len(), 1);
        let polls_before = insurer.calls("poll").len();
        tokio::time::sleep(Duration::from_secs(55)).await;
        keeper_b.abort();
        assert_eq!(insurer.calls("create").len(), 1, "no second POST");
        assert!(insurer.calls("poll").len() > polls_before, "b polled on");
        let (at, last) = a.sink.final_of("one");
        assert!(
            matches!(&last, InsurerEvent::Quote(q) if q.status == QuoteStatus::Quoted && q.version == 2),
            "{last:?}"
        );
        // Taken over after the 10 s lease, within a 2 s look.
        let taken = at - a.t0;
        assert!(taken > Duration::from_secs(10), "{taken:?}");
        let finals = a.sink.events().iter().filter(|(_, e)| e.is_final()).count();
        assert_eq!(finals, 1, "exactly one final event");
    }

    #[tokio::test(start_paused = true)]
    async fn a_resumed_request_keeps_its_original_deadline() {
        let insurer = Scripted::new(vec![]); // never ready
        let (a, b) = pods(insurer.clone());
        let keeper_b = b.spawn_lease_keeper();
        let event = request_event(chrono::Duration::seconds(30));
        let Started::Running(fan_out) = a.engine.start(event).await.unwrap() else {
            panic!("fresh request")
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(fan_out);
        drop(a.engine);
        tokio::time::sleep(Duration::from_secs(60)).await;
        keeper_b.abort();
        let (at, last) = a.sink.final_of("one");
        assert!(
            matches!(&last, InsurerEvent::Error(e) if e.kind == ErrorKind::Timeout && e.version == 2)
        );
        assert_eq!(at - a.t0, Duration::from_secs(30), "the original deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn an_insurer_without_an_application_is_asked_again_under_the_same_key() {
        // a dies while its POST hangs.
        let insurer = Scripted::hanging();
        let (a, _) = pods(insurer.clone());
        let event = request_event(chrono::Duration::seconds(60));
        let Started::Running(fan_out) = a.engine.start(event.clone()).await.unwrap() else {
            panic!("fresh request")
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(fan_out);
        // b resumes it (explicitly here) against a working insurer.
        let working = Scripted::new(vec![ok(PollOutcome::Quoted(quote()))]);
        let b = Engine::assemble(
            vec![Insurer {
                id: InsurerId::new("one").unwrap(),
                client: working.clone(),
            }],
            a.sink.clone(),
            a.state.clone(),
            Arc::new(ManualClock::new(now())),
            EngineConfig::default(),
            EngineMetrics::default(),
        );
        let outcomes = b.resume(event.clone()).await.unwrap().wait().await;
        assert_eq!(outcomes[0].outcome, "quoted");
        let key = idempotency_key(&event.request_id, &InsurerId::new("one").unwrap());
        assert_eq!(*insurer.keys.lock().unwrap(), vec![key.clone()]);
        assert_eq!(working.keys.lock().unwrap().clone(), [key]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_request_is_never_taken_over() {
        let insurer = Scripted::new(vec![ok(PollOutcome::Quoted(quote()))]);
        let (a, b) = pods(insurer.clone());
        let keeper_b = b.spawn_lease_keeper();
        run(&a, request_event(chrono::Duration::seconds(60))).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        keeper_b.abort();
        assert_eq!(insurer.calls("create").len(), 1);
        assert_eq!(insurer.calls("poll").len(), 1);
        assert_eq!(
            a.sink.events().iter().filter(|(_, e)| e.is_final()).count(),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_live_pod_keeps_its_requests() {
        let mut steps: Vec<Step> = (0..60).map(|_| pending()).collect();
        steps.push(ok(PollOutcome::Quoted(quote())));
        let insurer = Scripted::new(steps);
        let (a, b) = pods(insurer.clone());
        let keeper_a = a.engine.spawn_lease_keeper();
        let keeper_b = b.spawn_lease_keeper();
        run(&a, request_event(chrono::Duration::seconds(60))).await;
        keeper_a.abort();
        keeper_b.abort();
        assert_eq!(insurer.calls("create").len(), 1);
        assert_eq!(
            a.sink.events().iter().filter(|(_, e)| e.is_final()).count(),
            1,
            "b never resumed a's live request"
        );
    }
}

/// An insurer's free text reaches the events only when it holds no personal
/// data: a decline reason naming the owner is withheld, a plain one kept;
/// a quote's note echoing the plate is dropped, and the quote carries the
/// aggregator's own price check, never the insurer's.
#[tokio::test(start_paused = true)]
async fn insurer_texts_with_personal_data_never_reach_the_events() {
    let owner = osago_core::request::sample().owner.full_name;
    let surname = owner.split_whitespace().next().unwrap().to_owned();
    let echo = Scripted::new(vec![ok(PollOutcome::Declined {
        reason: format!("{surname} is on our stop list"),
    })]);
    let plain = Scripted::new(vec![ok(PollOutcome::Declined {
        reason: "region not served".into(),
    })]);
    let mut noted = quote();
    noted.message = Some("valid for the car А123ВС777 only".into());
    let noting = Scripted::new(vec![ok(PollOutcome::Quoted(noted))]);
    let h = harness(vec![("echo", echo), ("plain", plain), ("noting", noting)]);
    run(&h, request_event(chrono::Duration::seconds(60))).await;
    let reason = |insurer: &str| match h.sink.final_of(insurer).1 {
        InsurerEvent::Quote(q) => q.reason,
        other => panic!("{other:?}"),
    };
    assert_eq!(reason("echo"), None);
    assert_eq!(reason("plain").as_deref(), Some("region not served"));
    let InsurerEvent::Quote(quoted) = h.sink.final_of("noting").1 else {
        panic!("not a quote");
    };
    let quote = quoted.quote.unwrap();
    assert_eq!(quote.message, None);
    assert_eq!(
        quote.price_check.map(|c| c.verdict),
        Some(osago_core::tariff::PriceVerdict::Within)
    );
}

/// A harness asking several insurers of any kind.
fn harness_many(insurers: Vec<(&str, Arc<dyn InsurerClient>)>, config: EngineConfig) -> Harness {
    let mut h = harness_with(vec![], config.clone());
    h.engine = Engine::assemble(
        insurers
            .into_iter()
            .map(|(id, client)| Insurer {
                id: InsurerId::new(id).unwrap(),
                client,
            })
            .collect(),
        h.sink.clone(),
        h.state.clone(),
        Arc::new(ManualClock::new(now())),
        config,
        EngineMetrics::default(),
    );
    h
}

/// An insurer whose n-th application is ready `times[n % len]` after it is
/// made; declines instead while `declining`. Records every poll.
/// Another engine (a pod) with one insurer, on `state`, publishing
/// nowhere that is looked at.
fn pod(
    state: Arc<MemoryStateStore>,
    insurer: &str,
    client: Arc<dyn InsurerClient>,
    config: EngineConfig,
) -> Engine {
    Engine::assemble(
        vec![Insurer {
            id: InsurerId::new(insurer).unwrap(),
            client,
        }],
        Arc::new(Recorder::default()),
        state,
        Arc::new(ManualClock::new(now())),
        config,
        EngineMetrics::default(),
    )
}

/// Starts a new request of a minute on `engine` and waits for its outcomes.
async fn run_on(engine: &Engine) -> Vec<InsurerOutcome> {
    match engine
        .start(request_event(chrono::Duration::seconds(60)))
        .await
        .unwrap()
    {
        Started::Running(fan_out) => fan_out.wait().await,
        Started::Duplicate => panic!("not a duplicate"),
    }
}

#[derive(Debug)]
struct Cycling {
    times: Vec<Duration>,
    made: AtomicUsize,
    declining: AtomicBool,
    /// Refuses every application (`rejected`) this long after it is sent.
    refusing: Mutex<Option<Duration>>,
    apps: Mutex<std::collections::HashMap<String, Instant>>,
    polls: Mutex<Vec<Instant>>,
}

impl Cycling {
    fn new(times: Vec<Duration>) -> Arc<Self> {
        Arc::new(Self {
            times,
            made: AtomicUsize::new(0),
            declining: AtomicBool::new(false),
            refusing: Mutex::default(),
            apps: Mutex::default(),
            polls: Mutex::default(),
        })
    }
}

#[async_trait]
impl InsurerClient for Cycling {
    async fn create_application(
        &self,
        key: &str,
        _: &QuoteRequest,
    ) -> Result<Application, InsurerError> {
        let refusing = *self.refusing.lock().unwrap();
        if let Some(after) = refusing {
            tokio::time::sleep(after).await;
            return Err(InsurerError::new(ErrorKind::Rejected, "more data needed"));
        }
        let n = self.made.fetch_add(1, Ordering::SeqCst);
        let ready = Instant::now() + self.times[n % self.times.len()];
        self.apps.lock().unwrap().insert(key.to_owned(), ready);
        Ok(Application {
            id: key.to_owned(),
            retry_after: None,
        })
    }

    async fn poll_quote(&self, id: &str) -> Result<PollOutcome, InsurerError> {
        self.polls.lock().unwrap().push(Instant::now());
        if self.declining.load(Ordering::SeqCst) {
            return Ok(PollOutcome::Declined {
                reason: "no".into(),
            });
        }
        if Instant::now() >= self.apps.lock().unwrap()[id] {
            Ok(PollOutcome::Quoted(quote()))
        } else {
            Ok(PollOutcome::Pending { retry_after: None })
        }
    }
}

#[tokio::test(start_paused = true)]
async fn once_the_buyer_has_a_price_the_other_insurers_poll_where_their_answers_are_likely() {
    let fast = Cycling::new(vec![Duration::from_millis(500)]);
    // Answers spread over 2..11 s: the 5th percentile is 2 s, the 80th 9 s.
    let slow = Cycling::new((2..12).map(Duration::from_secs).collect());
    let h = harness_many(
        vec![("fast", fast.clone()), ("slow", slow.clone())],
        EngineConfig::default(),
    );
    for _ in 0..20 {
        run(&h, request_event(chrono::Duration::seconds(60))).await;
    }
    // `slow` answers this one 2 s after its application.
    let polls_of = |start: Instant| -> Vec<Duration> {
        slow.polls
            .lock()
            .unwrap()
            .iter()
            .filter(|at| **at > start)
            .map(|at| *at - start)
            .collect()
    };
    let start = Instant::now();
    let outcomes = run(&h, request_event(chrono::Duration::seconds(60))).await;
    assert!(
        outcomes.iter().all(|o| o.outcome == "quoted"),
        "{outcomes:?}"
    );
    // The buyer had `fast`'s price at about 0.5 s: `slow` waits for where
    // most of its answers come (the 90th percentile), then one poll finds
    // its quote.
    let priced = polls_of(start);
    assert_eq!(priced.len(), 1, "{priced:?}");
    // (Learned from when each quote was seen: a little past 9 s.)
    assert!(priced[0] >= Duration::from_secs(8), "{priced:?}");

    // With no price from `fast`, `slow` races for the first price: it polls
    // from its 5th percentile on and finds the quote at about 2 s.
    fast.declining.store(true, Ordering::SeqCst);
    slow.made.store(20, Ordering::SeqCst);
    let start = Instant::now();
    run(&h, request_event(chrono::Duration::seconds(60))).await;
    let racing = polls_of(start);
    assert!(
        *racing.last().unwrap() < Duration::from_secs(3),
        "{racing:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn only_the_quickest_insurer_races_while_it_waits_and_the_others_take_over_when_it_fails() {
    // `fast` answers in 0.5 s, but the 21st application takes 6 s.
    let mut fast_times = vec![Duration::from_millis(500); 20];
    fast_times.push(Duration::from_secs(6));
    // `slow`'s answers spread over 2..11 s; the 21st comes at 2 s.
    let slow_times: Vec<Duration> = (2..12).map(Duration::from_secs).collect();
    // Polls `slow` makes for one request after 20 that taught both
    // insurers, with `racers`, `racer_patience` and `fast` declining or not.
    let first_poll = |racers: usize, patience: f64, fast_declines: bool| {
        let fast_times = fast_times.clone();
        let slow_times = slow_times.clone();
        async move {
            let fast = Cycling::new(fast_times);
            let slow = Cycling::new(slow_times);
            let mut config = EngineConfig::default();
            config.poll.racers = racers;
            config.poll.racer_patience = patience;
            let h = harness_many(vec![("fast", fast.clone()), ("slow", slow.clone())], config);
            for _ in 0..20 {
                run(&h, request_event(chrono::Duration::seconds(60))).await;
            }
            fast.declining.store(fast_declines, Ordering::SeqCst);
            let start = Instant::now();
            let outcomes = run(&h, request_event(chrono::Duration::seconds(60))).await;
            let slow_outcome = outcomes
                .iter()
                .find(|o| o.insurer_id.as_str() == "slow")
                .unwrap();
            assert_eq!(slow_outcome.outcome, "quoted", "{outcomes:?}");
            let polls: Vec<Duration> = slow
                .polls
                .lock()
                .unwrap()
                .iter()
                .filter(|at| **at > start)
                .map(|at| *at - start)
                .collect();
            polls[0]
        }
    };
    // Everyone races: `slow` polls from its 5th percentile, 2 s, while
    // the buyer has no price.
    let all_race = first_poll(0, 1.0, false).await;
    assert!(all_race < Duration::from_secs(3), "{all_race:?}");
    // Only `fast` races, and the others wait for its answer (patience 1):
    // while it takes 6 s this time, `slow` polls as if the buyer had a
    // price, where most of its answers are (the 90th percentile, past
    // 8 s), and one poll finds the quote.
    let one_races = first_poll(1, 1.0, false).await;
    assert!(one_races >= Duration::from_secs(8), "{one_races:?}");
    // `fast` declines at once: `slow` is woken and races from then on.
    let taken_over = first_poll(1, 1.0, true).await;
    assert!(taken_over < Duration::from_secs(3), "{taken_over:?}");
}

#[tokio::test(start_paused = true)]
async fn a_racer_with_others_standing_by_polls_later_than_a_lone_insurer() {
    // `fast` answers in 0.5, 1, .. 5 s in turn; `slow` in 20 s.
    let fast_times: Vec<Duration> = (1..=10).map(|i| Duration::from_millis(500 * i)).collect();
    // `fast`'s first poll for the 21st request (answered at 0.5 s), after
    // 20 that taught the engine, with `slow` asked too or not.
    let first_poll = |with_slow: bool, slow_declines: bool, racer_price: f64| {
        let fast_times = fast_times.clone();
        async move {
            let fast = Cycling::new(fast_times);
            let slow = Cycling::new(vec![Duration::from_secs(20)]);
            slow.declining.store(slow_declines, Ordering::SeqCst);
            let mut config = EngineConfig::default();
            config.poll.racer_price = racer_price;
            let mut insurers: Vec<(&str, Arc<dyn InsurerClient>)> = vec![("fast", fast.clone())];
            if with_slow {
                insurers.push(("slow", slow));
            }
            let h = harness_many(insurers, config);
            for _ in 0..20 {
                run(&h, request_event(chrono::Duration::seconds(60))).await;
            }
            let start = Instant::now();
            let outcomes = run(&h, request_event(chrono::Duration::seconds(60))).await;
            let fast_outcome = outcomes
                .iter()
                .find(|o| o.insurer_id.as_str() == "fast")
                .unwrap();
            assert_eq!(fast_outcome.outcome, "quoted", "{outcomes:?}");
            let polls = fast.polls.lock().unwrap();
            *polls.iter().find(|at| **at > start).unwrap() - start
        }
    };
    // Alone, `fast`'s lag is the buyer's wait for a price: it polls from
    // the 5th percentile of its answer times (0.5 s).
    let price = PollConfig::default().racer_price;
    let lone = first_poll(false, false, price).await;
    assert!(lone < Duration::from_millis(1_500), "{lone:?}");
    // With `slow` standing by, its polls cost `racer_price` (50): from the
    // median (3 s) on.
    let backed = first_poll(true, false, price).await;
    assert!(backed >= Duration::from_millis(2_500), "{backed:?}");
    // At 1, as alone.
    let at_one = first_poll(true, false, 1.0).await;
    assert!(at_one < Duration::from_millis(1_500), "{at_one:?}");
    // `slow` declines every application: it seldom quotes, so it backs
    // nobody, and `fast` polls as if alone.
    let unbacked = first_poll(true, true, price).await;
    assert!(unbacked < Duration::from_millis(1_500), "{unbacked:?}");
}

#[tokio::test(start_paused = true)]
async fn a_new_engine_polls_on_the_answer_times_an_engine_before_it_kept() {
    // `fast` always answers 3 s after the application. One engine (a pod)
    // learns that from 20 requests and keeps it in the state store.
    let fast = Cycling::new(vec![Duration::from_secs(3)]);
    let h = harness_many(vec![("fast", fast.clone())], EngineConfig::default());
    for _ in 0..20 {
        run(&h, request_event(chrono::Duration::seconds(60))).await;
    }
    // Learned from nothing: kept only once a whole deadline has passed
    // since the engine started (the answers before it are only the quick
    // ones).
    let fresh = pod(
        h.state.clone(),
        "fast",
        fast.clone(),
        EngineConfig::default(),
    );
    // Made long before its first request (an intake waiting for its
    // broker): the deadline counts from that request.
    tokio::time::sleep(Duration::from_secs(120)).await;
    for _ in 0..10 {
        run_on(&fresh).await;
    }
    fresh.keep_answer_times().await;
    assert!(
        h.state
            .load_answer_times(&InsurerId::new("fast").unwrap())
            .await
            .unwrap()
            .is_empty(),
        "answers learned from nothing kept before a whole deadline passed"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    h.engine.keep_answer_times().await;
    // The polls a new engine on the same store makes for its first
    // request, having restored what was kept or not.
    let first_request = |restore: bool, config: EngineConfig| {
        let state = h.state.clone();
        let fast = fast.clone();
        async move {
            let engine = pod(state, "fast", fast.clone(), config);
            let restored = if restore {
                engine.restore_answer_times().await
            } else {
                0
            };
            let start = Instant::now();
            let outcomes = run_on(&engine).await;
            assert_eq!(outcomes[0].outcome, "quoted", "{outcomes:?}");
            let polls = fast.polls.lock().unwrap();
            let polls: Vec<Duration> = polls
                .iter()
                .filter(|at| **at > start)
                .map(|at| *at - start)
                .collect();
            (restored, polls)
        }
    };
    // Restored: it polls where the answers come (from the learned 5th
    // percentile, 3 s), and one poll finds the quote.
    let (restored, polls) = first_request(true, EngineConfig::default()).await;
    assert_eq!(restored, 1);
    assert_eq!(polls.len(), 1, "{polls:?}");
    assert!(polls[0] >= Duration::from_secs(3), "{polls:?}");
    // Learning from nothing (not restored, or keeping turned off): it
    // polls from 250 ms on, several times before the quote.
    let (_, polls) = first_request(false, EngineConfig::default()).await;
    assert!(polls.len() >= 4, "{polls:?}");
    let mut off = EngineConfig::default();
    off.poll.learned_keep_every = Duration::ZERO;
    let (restored, polls) = first_request(true, off).await;
    assert_eq!(restored, 0);
    assert!(polls.len() >= 4, "{polls:?}");
}

/// Makes applications, and panics on its first poll.
#[derive(Debug)]
struct Panicking;

#[async_trait]
impl InsurerClient for Panicking {
    async fn create_application(
        &self,
        key: &str,
        _: &QuoteRequest,
    ) -> Result<Application, InsurerError> {
        Ok(Application {
            id: key.to_owned(),
            retry_after: None,
        })
    }

    async fn poll_quote(&self, _: &str) -> Result<PollOutcome, InsurerError> {
        panic!("an adapter bug");
    }
}

#[tokio::test(start_paused = true)]
async fn an_insurer_client_that_panics_ends_as_an_error_and_the_request_still_finishes() {
    let fast = Cycling::new(vec![Duration::from_secs(2)]);
    let h = harness_many(
        vec![("broken", Arc::new(Panicking)), ("fast", fast.clone())],
        EngineConfig::default(),
    );
    let outcomes = run(&h, request_event(chrono::Duration::seconds(60))).await;
    let outcome = |id: &str| {
        outcomes
            .iter()
            .find(|o| o.insurer_id.as_str() == id)
            .unwrap_or_else(|| panic!("no outcome for {id}: {outcomes:?}"))
            .outcome
    };
    assert_eq!(outcome("broken"), "unavailable", "{outcomes:?}");
    assert_eq!(outcome("fast"), "quoted", "{outcomes:?}");
    // Each has its final event; the panic's message is not in it.
    let (_, broken) = h.sink.final_of("broken");
    assert!(!format!("{broken:?}").contains("adapter bug"), "{broken:?}");
    h.sink.final_of("fast");
    let label = InsurerLabel {
        insurer: "broken".into(),
    };
    assert_eq!(h.engine.inner.metrics.panics.get_or_create(&label).get(), 1);
}

#[tokio::test(start_paused = true)]
async fn kept_answer_times_expire_unless_new_answers_refresh_them() {
    // One engine learns `fast`'s answers (3 s) and keeps them.
    let fast = Cycling::new(vec![Duration::from_secs(3)]);
    let h = harness_many(vec![("fast", fast.clone())], EngineConfig::default());
    for _ in 0..20 {
        run(&h, request_event(chrono::Duration::seconds(60))).await;
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    h.engine.keep_answer_times().await;
    let id = InsurerId::new("fast").unwrap();
    assert_eq!(h.state.load_answer_times(&id).await.unwrap().len(), 20);
    // A second engine (a pod) starts from them, and sees no request.
    let idle = pod(
        h.state.clone(),
        "fast",
        fast.clone(),
        EngineConfig::default(),
    );
    assert_eq!(idle.restore_answer_times().await, 1);
    let ttl = PollConfig::default().learned_ttl;
    // Keeping with nothing new, by either pod, does not renew them: they
    // expire an hour (`learned_ttl`) after the last answer kept.
    tokio::time::sleep(ttl - Duration::from_secs(60)).await;
    idle.keep_answer_times().await;
    h.engine.keep_answer_times().await;
    assert_eq!(h.state.load_answer_times(&id).await.unwrap().len(), 20);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(
        h.state.load_answer_times(&id).await.unwrap().is_empty(),
        "answer times nothing refreshed renewed past their TTL"
    );
    // A new answer is kept (the restored window with it), and the keep
    // after it, with nothing new again, keeps nothing more.
    run_on(&idle).await;
    // Two keeps at once (the lease keeper's and the shutdown's) keep it
    // once, and leave nothing new to keep.
    tokio::join!(idle.keep_answer_times(), idle.keep_answer_times());
    assert_eq!(h.state.load_answer_times(&id).await.unwrap().len(), 21);
    tokio::time::sleep(ttl - Duration::from_secs(60)).await;
    idle.keep_answer_times().await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(h.state.load_answer_times(&id).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_backed_racer_polls_as_if_alone_once_every_insurer_standing_by_has_answered() {
    // As above: `fast` answers in 0.5, 1, .. 5 s in turn, `slow` in 20 s,
    // and 20 requests teach the engine both (`slow` mostly quotes: it
    // stands by for `fast`).
    let fast_times: Vec<Duration> = (1..=10).map(|i| Duration::from_millis(500 * i)).collect();
    let fast = Cycling::new(fast_times);
    let slow = Cycling::new(vec![Duration::from_secs(20)]);
    let h = harness_many(
        vec![("fast", fast.clone()), ("slow", slow.clone())],
        EngineConfig::default(),
    );
    for _ in 0..20 {
        run(&h, request_event(chrono::Duration::seconds(60))).await;
    }
    // The 21st: `slow` refuses its application after 1 s. `fast` planned
    // its first poll at its median (3 s), as a backed racer; from then on
    // it is alone, and polls as a lone insurer would have (from its 5th
    // percentile, 0.5 s, long past): at once.
    *slow.refusing.lock().unwrap() = Some(Duration::from_secs(1));
    let start = Instant::now();
    let outcomes = run(&h, request_event(chrono::Duration::seconds(60))).await;
    let outcome = |id: &str| {
        outcomes
            .iter()
            .find(|o| o.insurer_id.as_str() == id)
            .unwrap()
            .outcome
    };
    assert_eq!(outcome("fast"), "quoted", "{outcomes:?}");
    assert_eq!(outcome("slow"), "rejected", "{outcomes:?}");
    let polls = fast.polls.lock().unwrap();
    let first = *polls.iter().find(|at| **at > start).unwrap() - start;
    assert!(
        first >= Duration::from_secs(1) && first < Duration::from_millis(1_500),
        "{first:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_backed_racer_whose_last_insurer_standing_by_quotes_does_not_poll_sooner() {
    // `fast` answers in 0.5, 1, .. 5 s in turn, but the 21st application
    // hangs (30 s); `slow` quotes in 20 s, and stands by for `fast`. When
    // `slow`'s quote for the 21st comes, `fast` is woken, alone now, but
    // the buyer has a price: its polls are dearer still, and its next
    // comes no sooner than planned.
    let fast_polls = |slow_last: Duration| async move {
        let mut fast_times: Vec<Duration> =
            (1..=10).map(|i| Duration::from_millis(500 * i)).collect();
        fast_times.extend(fast_times.clone());
        fast_times.push(Duration::from_secs(30));
        let fast = Cycling::new(fast_times);
        let mut slow_times = vec![Duration::from_secs(20); 20];
        slow_times.push(slow_last);
        let slow = Cycling::new(slow_times);
        let h = harness_many(
            vec![("fast", fast.clone()), ("slow", slow.clone())],
            EngineConfig::default(),
        );
        for _ in 0..20 {
            run(&h, request_event(chrono::Duration::seconds(60))).await;
        }
        let start = Instant::now();
        run(&h, request_event(chrono::Duration::seconds(60))).await;
        let slow_quoted = h
            .sink
            .events()
            .iter()
            .rev()
            .find(|(_, e)| e.insurer_id().as_str() == "slow" && e.is_final())
            .unwrap()
            .0
            - start;
        let polls: Vec<Duration> = fast
            .polls
            .lock()
            .unwrap()
            .iter()
            .filter(|at| **at > start)
            .map(|at| *at - start)
            .collect();
        (slow_quoted, polls)
    };
    // `slow` quotes at 20 s, and, for comparison, after `fast`'s answer.
    let (quoted, woken) = fast_polls(Duration::from_secs(20)).await;
    let (_, backed) = fast_polls(Duration::from_secs(50)).await;
    let after = |polls: &[Duration]| -> Vec<Duration> {
        polls.iter().copied().filter(|at| *at >= quoted).collect()
    };
    let (woken, backed) = (after(&woken), after(&backed));
    assert!(
        !woken.is_empty() && !backed.is_empty(),
        "{woken:?} {backed:?}"
    );
    // Its next poll is the one it had planned (not one at once), and it
    // polls no more often from then on.
    assert_eq!(woken[0], backed[0], "{woken:?} {backed:?}");
    assert!(woken[0] > quoted, "{woken:?} {quoted:?}");
    assert!(woken.len() <= backed.len(), "{woken:?} {backed:?}");
}

#[tokio::test(start_paused = true)]
async fn the_others_race_once_the_racer_is_past_its_patience_percentile_without_a_price() {
    // `fast` quoted in 0.5 s, 1 s and 1.5 s, but the 22nd application
    // hangs (it answers at 30 s); `slow`'s answers spread over 2..11 s.
    let mut fast_times: Vec<Duration> = [500, 1_000, 1_500]
        .iter()
        .cycle()
        .take(21)
        .map(|ms| Duration::from_millis(*ms))
        .collect();
    fast_times.push(Duration::from_secs(30));
    let slow_times: Vec<Duration> = (2..12).map(Duration::from_secs).collect();
    // `slow`'s polls for the 22nd request, from its start.
    let polls = |patience: f64| {
        let fast_times = fast_times.clone();
        let slow_times = slow_times.clone();
        async move {
            let fast = Cycling::new(fast_times);
            let slow = Cycling::new(slow_times);
            let mut config = EngineConfig::default();
            config.poll.racer_patience = patience;
            let h = harness_many(vec![("fast", fast.clone()), ("slow", slow.clone())], config);
            for _ in 0..21 {
                run(&h, request_event(chrono::Duration::seconds(60))).await;
            }
            let start = Instant::now();
            let outcomes = run(&h, request_event(chrono::Duration::seconds(60))).await;
            assert!(
                outcomes.iter().all(|o| o.outcome == "quoted"),
                "{outcomes:?}"
            );
            let polls: Vec<Duration> = slow
                .polls
                .lock()
                .unwrap()
                .iter()
                .filter(|at| **at > start)
                .map(|at| *at - start)
                .collect();
            polls
        }
    };
    // Patience at the median (1 s): once `fast` is past it with no price,
    // `slow` races, its first poll at its own 5th percentile (2 s), as if
    // `fast` had declined.
    let patient_to_the_median = polls(0.5).await;
    assert!(
        patient_to_the_median[0] < Duration::from_secs(3),
        "{patient_to_the_median:?}"
    );
    // At the default, the 95th percentile (1.5 s): the same, from 1.5 s.
    let by_default = polls(PollConfig::default().racer_patience).await;
    assert!(
        by_default[0] >= Duration::from_millis(1_500) && by_default[0] < Duration::from_secs(3),
        "{by_default:?}"
    );
    // Waiting for `fast`'s answer (patience 1): `slow` polls only where
    // its answers are likely with a price in hand, past 8 s.
    let waits = polls(1.0).await;
    assert!(waits[0] >= Duration::from_secs(8), "{waits:?}");
}

#[tokio::test(start_paused = true)]
async fn a_resumed_request_counts_the_time_it_has_waited_on_the_racer_already() {
    // `fast` quoted in 1 s, 1.5 s and 4 s (its 95th percentile 4 s), but
    // the 22nd application hangs; `slow`'s answers spread over 2..11 s.
    let mut fast_times: Vec<Duration> = [1_000, 1_500, 4_000]
        .iter()
        .cycle()
        .take(21)
        .map(|ms| Duration::from_millis(*ms))
        .collect();
    fast_times.push(Duration::from_secs(30));
    let slow_times: Vec<Duration> = (2..12).map(Duration::from_secs).collect();
    // `slow`'s first poll for the 22nd request, accepted `accepted_ago`
    // seconds before its fan-out, begun here or resumed from another pod.
    let first_poll = |accepted_ago: i64, resumed: bool| {
        let fast_times = fast_times.clone();
        let slow_times = slow_times.clone();
        async move {
            let fast = Cycling::new(fast_times);
            let slow = Cycling::new(slow_times);
            let h = harness_many(
                vec![("fast", fast.clone()), ("slow", slow.clone())],
                EngineConfig::default(),
            );
            for _ in 0..21 {
                run(&h, request_event(chrono::Duration::seconds(60))).await;
            }
            let mut event = request_event(chrono::Duration::seconds(50));
            event.occurred_at = now() - chrono::Duration::seconds(accepted_ago);
            let start = Instant::now();
            let fan_out = if resumed {
                h.engine.resume(event).await.unwrap()
            } else {
                match h.engine.start(event).await.unwrap() {
                    Started::Running(fan_out) => fan_out,
                    Started::Duplicate => panic!("not a duplicate"),
                }
            };
            let outcomes = fan_out.wait().await;
            assert!(
                outcomes.iter().all(|o| o.outcome == "quoted"),
                "{outcomes:?}"
            );
            let first = *slow
                .polls
                .lock()
                .unwrap()
                .iter()
                .find(|at| **at > start)
                .expect("slow polled");
            first - start
        }
    };
    // Begun here: `slow` waits out `fast`'s 95th percentile, 4 s.
    let fresh = first_poll(10, false).await;
    assert!(fresh >= Duration::from_secs(4), "{fresh:?}");
    // Resumed 10 s after the request was accepted: `fast` is long past
    // its patience, so `slow` races at once, polling at its 5th
    // percentile (2 s) rather than after 4 s more.
    let resumed_late = first_poll(10, true).await;
    assert!(resumed_late < Duration::from_secs(3), "{resumed_late:?}");
    // Resumed as soon as it was accepted: the whole patience is left.
    let resumed_at_once = first_poll(0, true).await;
    assert!(
        resumed_at_once >= Duration::from_secs(4),
        "{resumed_at_once:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_resumed_request_whose_buyer_has_a_price_is_not_raced_for_a_first_one() {
    // `fast` quotes in 0.5 s and is the racer; `slow`'s answers spread
    // over 2..11 s (5th percentile 2 s, 90th past 9 s).
    // `slow`'s first poll for a request resumed from a pod that recorded
    // `fast` finished, with a price (`quoted`) or without.
    let first_poll = |quoted: bool| async move {
        let fast = Cycling::new(vec![Duration::from_millis(500)]);
        let slow = Cycling::new((2..12).map(Duration::from_secs).collect());
        let h = harness_many(
            vec![("fast", fast.clone()), ("slow", slow.clone())],
            EngineConfig::default(),
        );
        for _ in 0..20 {
            run(&h, request_event(chrono::Duration::seconds(60))).await;
        }
        let event = request_event(chrono::Duration::seconds(60));
        h.state
            .save_progress(
                &InsurerProgress {
                    request_id: event.request_id,
                    insurer_id: InsurerId::new("fast").unwrap(),
                    application_id: Some("left-behind".to_owned()),
                    attempts: 2,
                    version: 2,
                    deadline_at: event.deadline_at,
                    finished: true,
                    quoted,
                },
                Duration::from_secs(300),
            )
            .await
            .unwrap();
        let start = Instant::now();
        let outcomes = h.engine.resume(event).await.unwrap().wait().await;
        // Only `slow` was left to run.
        assert_eq!(outcomes.len(), 1, "{outcomes:?}");
        assert_eq!(outcomes[0].outcome, "quoted");
        let first = *slow
            .polls
            .lock()
            .unwrap()
            .iter()
            .find(|at| **at > start)
            .expect("slow polled");
        first - start
    };
    // The buyer has `fast`'s price: `slow` polls where its answers are
    // likely, as on the pod that began the request.
    let priced = first_poll(true).await;
    assert!(priced >= Duration::from_secs(8), "{priced:?}");
    // `fast` answered without a price: `slow` races at once.
    let unpriced = first_poll(false).await;
    assert!(unpriced < Duration::from_secs(3), "{unpriced:?}");
}

/// Every call takes 1 s; quotes never come. Records (call, idempotency key).
#[derive(Debug, Default)]
struct SlowPartner {
    calls: Mutex<Vec<(&'static str, String)>>,
}

#[async_trait]
impl InsurerClient for SlowPartner {
    async fn create_application(
        &self,
        key: &str,
        _: &QuoteRequest,
    ) -> Result<Application, InsurerError> {
        self.calls.lock().unwrap().push(("create", key.to_owned()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(Application {
            id: key.to_owned(),
            retry_after: None,
        })
    }

    async fn poll_quote(&self, id: &str) -> Result<PollOutcome, InsurerError> {
        self.calls.lock().unwrap().push(("poll", id.to_owned()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(PollOutcome::Pending { retry_after: None })
    }
}

#[tokio::test(start_paused = true)]
async fn a_new_application_goes_ahead_of_polls_for_a_buyer_who_has_a_price() {
    // `quick` prices only the first request; `partner` serves one call at
    // a time, each taking a second.
    let quick = Cycling::new(vec![Duration::ZERO]);
    let partner = Arc::new(SlowPartner::default());
    let mut config = EngineConfig::default();
    config.resilience.concurrency.max_in_flight = 1;
    config.resilience.breaker.slow_call = Duration::from_secs(3600);
    let h = harness_many(
        vec![("quick", quick.clone()), ("partner", partner.clone())],
        config,
    );
    let start = Instant::now();
    let engine = h.engine.clone();
    let at = |secs: f64| start + Duration::from_secs_f64(secs);
    let key = |event: &RequestEvent| {
        idempotency_key(&event.request_id, &InsurerId::new("partner").unwrap())
    };
    let events: Vec<RequestEvent> = (0..3)
        .map(|_| request_event(chrono::Duration::seconds(60)))
        .collect();
    let keys: Vec<String> = events.iter().map(key).collect();
    let mut fan_outs = Vec::new();
    // R1 at 0 s (priced by `quick` at 0.25 s), R2 at 0.5 s, R3 at 1.5 s.
    for (event, secs) in events.into_iter().zip([0.0, 0.5, 1.5]) {
        tokio::time::sleep_until(at(secs)).await;
        if secs > 0.0 {
            quick.declining.store(true, Ordering::SeqCst);
        }
        match engine.start(event).await.unwrap() {
            Started::Running(fan_out) => fan_outs.push(fan_out),
            Started::Duplicate => unreachable!(),
        }
    }
    tokio::time::sleep_until(at(10.0)).await;
    let calls = partner.calls.lock().unwrap().clone();
    let position = |call: (&'static str, &String)| {
        calls
            .iter()
            .position(|(kind, k)| (*kind, k) == call)
            .unwrap_or_else(|| panic!("{call:?} not made: {calls:?}"))
    };
    // R1's first poll waited from 1.25 s for the slot R2's application held
    // until 2 s; R3's application, waiting from 1.5 s, went first, and so
    // did the polls of R2 and R3, whose buyers have no price yet (while
    // they keep the partner busy, R1's buyer, who has a price, waits).
    let r1_poll = calls
        .iter()
        .position(|(kind, k)| *kind == "poll" && *k == keys[0])
        .unwrap_or(calls.len());
    assert!(position(("create", &keys[2])) < r1_poll, "{calls:?}");
    assert!(position(("poll", &keys[1])) < r1_poll, "{calls:?}");
    assert!(position(("poll", &keys[2])) < r1_poll, "{calls:?}");
    drop(fan_outs);
}

/// Fields an insurer is known to require (`EngineConfig::requirements`).
mod requirements {
    use super::*;

    /// Refuses every request without an apartment with a 400 naming it
    /// (the needs-more-data archetype), or naming `names` instead; quotes
    /// the others at their first poll. `relaxed`: accepts them all.
    #[derive(Debug)]
    struct Picky {
        names: &'static str,
        creates: AtomicUsize,
        relaxed: AtomicBool,
    }

    impl Picky {
        fn naming(names: &'static str) -> Arc<Self> {
            Arc::new(Self {
                names,
                creates: AtomicUsize::new(0),
                relaxed: AtomicBool::new(false),
            })
        }

        fn new() -> Arc<Self> {
            Self::naming("owner.address.apartment")
        }

        fn creates(&self) -> usize {
            self.creates.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl InsurerClient for Picky {
        async fn create_application(
            &self,
            key: &str,
            request: &QuoteRequest,
        ) -> Result<Application, InsurerError> {
            self.creates.fetch_add(1, Ordering::SeqCst);
            if request.owner.address.apartment.is_none() && !self.relaxed.load(Ordering::SeqCst) {
                return Err(InsurerError::needs_more_data([self.names]));
            }
            Ok(Application {
                id: key.to_owned(),
                retry_after: None,
            })
        }

        async fn poll_quote(&self, _: &str) -> Result<PollOutcome, InsurerError> {
            Ok(PollOutcome::Quoted(quote()))
        }
    }

    fn with_apartment() -> RequestEvent {
        let mut event = request_event(chrono::Duration::seconds(60));
        event.request.owner.address.apartment = Some("12".into());
        event
    }

    async fn outcome(h: &Harness, event: RequestEvent) -> &'static str {
        run(h, event).await[0].outcome
    }

    fn last_event(h: &Harness) -> (Instant, InsurerEvent) {
        h.sink.events().pop().expect("an event")
    }

    fn known_refusals(h: &Harness) -> u64 {
        let label = InsurerLabel {
            insurer: "picky".into(),
        };
        h.engine
            .inner
            .metrics
            .known_refusals
            .get_or_create(&label)
            .get()
    }

    fn lacking() -> RequestEvent {
        request_event(chrono::Duration::seconds(60))
    }

    #[tokio::test(start_paused = true)]
    async fn an_insurer_that_refused_three_requests_lacking_a_field_is_not_asked_again_until_its_probe(
    ) {
        let picky = Picky::new();
        let h = harness_one("picky", picky.clone(), EngineConfig::default());
        for _ in 0..3 {
            assert_eq!(outcome(&h, lacking()).await, "rejected");
        }
        assert_eq!(picky.creates(), 3);
        // Learned: the next request lacking it gets the same refusal at
        // once, without a call.
        let start = Instant::now();
        assert_eq!(outcome(&h, lacking()).await, "rejected");
        assert_eq!(picky.creates(), 3);
        let (at, event) = last_event(&h);
        assert_eq!(at, start);
        match event {
            InsurerEvent::Error(e) => {
                assert_eq!(
                    (e.kind, e.is_final, e.attempts),
                    (ErrorKind::Rejected, true, 0)
                );
                assert_eq!(
                    e.message,
                    "insurer needs more data: owner.address.apartment"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(known_refusals(&h), 1);
        // A request that has the field is sent, and quoted.
        assert_eq!(outcome(&h, with_apartment()).await, "quoted");
        assert_eq!(picky.creates(), 4);
        // Once `probe_every` (from the third refusal) has passed, one
        // request lacking it is sent to see whether the insurer still
        // requires it; the next is not.
        let probe_at = start + Duration::from_secs(30);
        tokio::time::sleep_until(probe_at - Duration::from_millis(1)).await;
        assert_eq!(outcome(&h, lacking()).await, "rejected");
        assert_eq!(picky.creates(), 4, "no probe before probe_every");
        tokio::time::sleep_until(probe_at).await;
        assert_eq!(outcome(&h, lacking()).await, "rejected");
        assert_eq!(picky.creates(), 5, "the probe");
        assert_eq!(outcome(&h, lacking()).await, "rejected");
        assert_eq!(picky.creates(), 5);
        assert_eq!(known_refusals(&h), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_to_a_request_lacking_the_field_forgets_the_rule() {
        let picky = Picky::new();
        let h = harness_one("picky", picky.clone(), EngineConfig::default());
        for _ in 0..3 {
            outcome(&h, lacking()).await;
        }
        assert_eq!(outcome(&h, lacking()).await, "rejected");
        assert_eq!(picky.creates(), 3);
        // The partner stops requiring it: the probe is quoted, and every
        // request after it is sent again.
        picky.relaxed.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(outcome(&h, lacking()).await, "quoted");
        assert_eq!(outcome(&h, lacking()).await, "quoted");
        assert_eq!(picky.creates(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_between_refusals_starts_the_count_again() {
        let picky = Picky::new();
        let h = harness_one("picky", picky.clone(), EngineConfig::default());
        for _ in 0..2 {
            outcome(&h, lacking()).await;
        }
        // The insurer quotes one request lacking the field (its rule is
        // not that simple): two more refusals are not yet three in a row.
        picky.relaxed.store(true, Ordering::SeqCst);
        outcome(&h, lacking()).await;
        picky.relaxed.store(false, Ordering::SeqCst);
        for _ in 0..2 {
            outcome(&h, lacking()).await;
        }
        assert_eq!(outcome(&h, lacking()).await, "rejected");
        assert_eq!(picky.creates(), 6, "every one sent");
        assert_eq!(outcome(&h, lacking()).await, "rejected");
        assert_eq!(picky.creates(), 6, "the third in a row taught it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_naming_a_field_the_request_has_teaches_nothing() {
        // The insurer objects to a value, not to a missing field.
        let picky = Picky::naming("owner.address.house");
        let h = harness_one("picky", picky.clone(), EngineConfig::default());
        for _ in 0..5 {
            assert_eq!(outcome(&h, lacking()).await, "rejected");
        }
        assert_eq!(picky.creates(), 5);
        assert_eq!(known_refusals(&h), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn learn_after_zero_sends_every_request() {
        let picky = Picky::new();
        let mut config = EngineConfig::default();
        config.requirements.learn_after = 0;
        let h = harness_one("picky", picky.clone(), config);
        for _ in 0..5 {
            assert_eq!(outcome(&h, lacking()).await, "rejected");
        }
        assert_eq!(picky.creates(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_naming_a_field_the_request_format_lacks_teaches_nothing() {
        // Every request lacks `owner.address.flat`: not ours to send.
        let picky = Picky::naming("owner.address.flat");
        let h = harness_one("picky", picky.clone(), EngineConfig::default());
        for _ in 0..5 {
            assert_eq!(outcome(&h, lacking()).await, "rejected");
        }
        assert_eq!(picky.creates(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_a_pod_left_after_calling_the_insurer_is_asked_again() {
        let picky = Picky::new();
        let h = harness_one("picky", picky.clone(), EngineConfig::default());
        for _ in 0..3 {
            outcome(&h, lacking()).await;
        }
        // A pod called the insurer for this one (no application id came
        // back) and left it: the pod taking it over asks again under the
        // same Idempotency-Key rather than answer for the insurer.
        let event = lacking();
        h.state
            .save_progress(
                &InsurerProgress {
                    request_id: event.request_id,
                    insurer_id: InsurerId::new("picky").unwrap(),
                    application_id: None,
                    attempts: 1,
                    version: 1,
                    deadline_at: event.deadline_at,
                    finished: false,
                    quoted: false,
                },
                Duration::from_secs(3600),
            )
            .await
            .unwrap();
        let outcomes = h.engine.resume(event).await.unwrap().wait().await;
        assert_eq!(outcomes[0].outcome, "rejected");
        assert_eq!(picky.creates(), 4);
    }
}
