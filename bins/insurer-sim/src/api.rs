//! The partner API's routes and handlers (`docs/insurer-api.md`):
//! `POST /applications`, `GET /quotes/{id}`, `GET /health`; and, for
//! tests, `GET /stats` (what the simulator has seen, no personal data).
//!
//! The request body is personal data: it is decoded and priced, never
//! logged, and only its field names appear in answers.

use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use chrono::Utc;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body;
use osago_core::request::{decode, DecodeError};
use osago_core::{FieldError, QuoteRequest};
use osago_transport::http::wire::{
    ApplicationCreated, PropertyProblem, QuoteState, QuoteStatusWire,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tracing::Instrument;

use crate::archetype::Archetype;
use crate::config::SimConfig;
use crate::plan::{self, Outcome};
use crate::reply::{self, Reply};
use crate::seed;
use crate::store::{Application, Store};

/// The largest request body accepted (the client's answer limit, too).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The longest idempotency key accepted.
const MAX_KEY_LEN: usize = 255;

/// One simulated insurer: its settings and its memory.
#[derive(Debug)]
pub(crate) struct Simulator {
    config: SimConfig,
    store: Mutex<Store>,
    stats: Mutex<Stats>,
    /// Draws of the response time (seeded).
    timing: Mutex<StdRng>,
}

/// Counters served at `GET /stats`.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub(crate) struct Stats {
    /// `POST /applications` received (with a valid key and body).
    pub(crate) posts: u64,
    /// Applications created: one per idempotency key.
    pub(crate) applications: u64,
    /// POSTs answered with the application their key already had.
    pub(crate) replays: u64,
    /// `GET /quotes/{id}` received.
    pub(crate) polls: u64,
}

impl Simulator {
    /// A simulator with an empty memory.
    pub(crate) fn new(config: SimConfig) -> Self {
        let timing = StdRng::seed_from_u64(config.seed ^ 0x7265_7370_6f6e_7365);
        Self {
            config,
            store: Mutex::new(Store::new(Instant::now())),
            stats: Mutex::default(),
            timing: Mutex::new(timing),
        }
    }

    /// The settings.
    pub(crate) fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Answers one HTTP request, in the caller's trace (its W3C
    /// `traceparent`): every line logged for the call carries the trace id.
    pub(crate) async fn handle<B>(&self, request: Request<B>) -> Reply
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let trace = request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(osago_core::trace::TraceContext::parse);
        let span = tracing::info_span!("call", trace_id = trace.map(|t| t.trace_id()).as_deref());
        self.answer(request).instrument(span).await
    }

    async fn answer<B>(&self, request: Request<B>) -> Reply
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        if self.config.archetype == Archetype::Broken {
            return reply::internal_error();
        }
        let path = request.uri().path();
        if let Some((name, value)) = &self.config.required_header {
            let carried = request
                .headers()
                .get(name.as_str())
                .is_some_and(|v| v.as_bytes() == value.as_bytes());
            if !carried && path != "/health" {
                return reply::error(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong credentials",
                    None,
                );
            }
        }
        match *request.method() {
            Method::GET if path == "/health" => reply::health(),
            Method::GET if path == "/stats" => {
                let stats = *self.stats.lock().unwrap_or_else(PoisonError::into_inner);
                reply::json(StatusCode::OK, &stats)
            }
            Method::POST if path == "/applications" => {
                self.respond_in_time().await;
                self.create(request).await
            }
            Method::GET => match quote_id(path) {
                Some(id) => {
                    self.respond_in_time().await;
                    self.poll(id)
                }
                None => reply::not_found(),
            },
            _ => reply::not_found(),
        }
    }

    /// Waits the configured response time (a uniform draw, sped up).
    async fn respond_in_time(&self) {
        let (fastest, slowest) = self.config.response_time;
        if slowest.is_zero() {
            return;
        }
        let wait = {
            let mut rng = self.timing.lock().unwrap_or_else(PoisonError::into_inner);
            rng.random_range(fastest..=slowest)
        };
        tokio::time::sleep(wait.div_f64(self.config.speed)).await;
    }

    /// `POST /applications`.
    async fn create<B>(&self, request: Request<B>) -> Reply
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let key = match idempotency_key(request.headers()) {
            Ok(key) => key,
            Err(refusal) => return refusal.reply(),
        };
        match read_request(request.into_body()).await {
            Ok(quote_request) => self.create_application(key, &quote_request),
            Err(refusal) => refusal.reply(),
        }
    }

    /// Creates (or finds) the application for `key`.
    fn create_application(&self, key: String, request: &QuoteRequest) -> Reply {
        let now = Instant::now();
        self.count(|stats| stats.posts += 1);
        let mut store = self.lock();
        let attempt = store.count_post(&key, now);
        if let Some(fault) = plan::post_fault(&self.config, &key, attempt) {
            tracing::debug!(insurer = %self.config.insurer_id, ?fault, attempt, "fault injected on create");
            return reply::fault(fault, self.config.speed);
        }
        if let Some(existing) = store.by_key(&key) {
            self.count(|stats| stats.replays += 1);
            let status = wire_status(existing.outcome_at(now));
            return self.created(StatusCode::OK, &existing.id, status);
        }
        if let Some(problem) = plan::missing_data(self.config.archetype, request) {
            return reply::problems(
                StatusCode::BAD_REQUEST,
                "more data is needed",
                vec![problem],
            );
        }
        let id = seed::application_id(&self.config, &key);
        let plan = match plan::plan(&self.config, &key, &id, request, Utc::now()) {
            Ok(plan) => plan,
            Err(problem) => {
                return reply::problems(
                    StatusCode::BAD_REQUEST,
                    "the request cannot be priced",
                    vec![problem],
                )
            }
        };
        tracing::info!(
            insurer = %self.config.insurer_id,
            application_id = %id,
            outcome = outcome_label(&plan.outcome),
            ready_in_ms = plan.delay.as_millis() as u64,
            "application created"
        );
        self.count(|stats| stats.applications += 1);
        store.insert(Application {
            id: id.clone(),
            key,
            created: now,
            plan,
            polls: 0,
        });
        self.created(StatusCode::ACCEPTED, &id, QuoteStatusWire::InProgress)
    }

    /// 202 (new) or 200 (replayed) `{application_id, status, retry_after_ms?}`.
    fn created(&self, status: StatusCode, id: &str, state: QuoteStatusWire) -> Reply {
        let hint = match state {
            QuoteStatusWire::InProgress => plan::progress_hint(&self.config),
            _ => None,
        };
        let body = ApplicationCreated {
            application_id: id.to_owned(),
            status: state,
            retry_after_ms: hint.map(|h| h.ms),
        };
        reply::with_hint(reply::json(status, &body), hint)
    }

    /// `GET /quotes/{id}`.
    fn poll(&self, id: &str) -> Reply {
        let now = Instant::now();
        self.count(|stats| stats.polls += 1);
        let mut store = self.lock();
        let Some(application) = store.poll(id) else {
            return reply::not_found();
        };
        let polls = application.polls;
        if let Some(fault) = plan::poll_fault(&self.config, &application.key, polls) {
            tracing::debug!(insurer = %self.config.insurer_id, application_id = %id, ?fault, polls, "fault injected on poll");
            return reply::fault(fault, self.config.speed);
        }
        if self.config.archetype == Archetype::Garbage {
            return reply::garbage(id);
        }
        let state = self.quote_state(id, application.outcome_at(now));
        drop(store);
        tracing::debug!(insurer = %self.config.insurer_id, application_id = %id, status = ?state.status, polls, "quote polled");
        let hint = match state.status {
            QuoteStatusWire::InProgress => plan::progress_hint(&self.config),
            _ => None,
        };
        reply::with_hint(reply::json(StatusCode::OK, &state), hint)
    }

    /// The poll answer for an application with `outcome` (`None`: not ready).
    fn quote_state(&self, id: &str, outcome: Option<&Outcome>) -> QuoteState {
        let mut state = QuoteState {
            application_id: id.to_owned(),
            status: wire_status(outcome),
            quote: None,
            reason: None,
            retry_after_ms: None,
        };
        match outcome {
            None | Some(Outcome::NeverReady) => {
                state.retry_after_ms = plan::progress_hint(&self.config).map(|h| h.ms);
            }
            Some(Outcome::Quoted(quote)) => state.quote = Some(quote.as_ref().clone()),
            Some(Outcome::Declined(reason)) | Some(Outcome::NoCalculation(reason)) => {
                state.reason = Some((*reason).to_owned());
            }
            Some(Outcome::CalculationError) => {
                state.reason = Some("the rating engine failed".to_owned());
            }
        }
        state
    }

    fn count(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The id in `/quotes/{id}`, if the path is one.
fn quote_id(path: &str) -> Option<&str> {
    path.strip_prefix("/quotes/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// A request refused before it reaches the simulation (a 4xx).
#[derive(Debug)]
struct Refusal {
    /// The status.
    status: StatusCode,
    /// What is wrong overall.
    message: &'static str,
    /// The fields at fault (names only, never values).
    properties: Vec<PropertyProblem>,
}

impl Refusal {
    /// A 400.
    fn bad_request(message: &'static str, properties: Vec<PropertyProblem>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message,
            properties,
        }
    }

    /// The answer `{message, properties}`.
    fn reply(self) -> Reply {
        reply::problems(self.status, self.message, self.properties)
    }
}

/// The `Idempotency-Key` header, or why it is unusable.
fn idempotency_key(headers: &HeaderMap) -> Result<String, Refusal> {
    let value = headers
        .get("idempotency-key")
        .ok_or_else(|| Refusal::bad_request("the idempotency-key header is required", vec![]))?;
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_LEN => Ok(key.to_owned()),
        _ => Err(Refusal::bad_request(
            "the idempotency-key header must be 1 to 255 visible ascii characters",
            vec![],
        )),
    }
}

/// Reads, decodes and validates the quote request.
async fn read_request<B>(body: B) -> Result<QuoteRequest, Refusal>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(Refusal {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: "request body too large",
                properties: vec![],
            });
        }
        Err(_) => {
            return Err(Refusal::bad_request(
                "request body could not be read",
                vec![],
            ))
        }
    };
    let request = decode(&bytes).map_err(decode_refusal)?;
    request
        .validate(osago_core::Clock::today(&osago_core::SystemClock))
        .map_err(|errors| {
            let properties = errors.into_iter().map(problem).collect();
            Refusal::bad_request("the request is invalid", properties)
        })?;
    Ok(request)
}

/// Why a body does not decode (field names only, never values).
fn decode_refusal(err: DecodeError) -> Refusal {
    match err {
        DecodeError::Syntax => Refusal::bad_request("body is not valid json", vec![]),
        DecodeError::Shape(field) => {
            Refusal::bad_request("request does not match the schema", vec![problem(field)])
        }
    }
}

/// A field error as a wire property problem.
fn problem(field: FieldError) -> PropertyProblem {
    PropertyProblem {
        property: field.path,
        message: field.message,
    }
}

/// The wire status for an outcome (`None`: not ready yet).
fn wire_status(outcome: Option<&Outcome>) -> QuoteStatusWire {
    match outcome {
        None | Some(Outcome::NeverReady) => QuoteStatusWire::InProgress,
        Some(Outcome::Quoted(_)) => QuoteStatusWire::Ready,
        Some(Outcome::Declined(_)) => QuoteStatusWire::Declined,
        Some(Outcome::NoCalculation(_)) => QuoteStatusWire::NoCalculationAvailable,
        Some(Outcome::CalculationError) => QuoteStatusWire::CalculationError,
    }
}

/// A short name of an outcome, for logs.
fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Quoted(_) => "quoted",
        Outcome::Declined(_) => "declined",
        Outcome::NoCalculation(_) => "no_calculation",
        Outcome::CalculationError => "calculation_error",
        Outcome::NeverReady => "never_ready",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::Full;
    use osago_core::request::sample;
    use osago_core::InsurerId;

    use super::*;

    fn simulator(archetype: Archetype) -> Simulator {
        let mut config = SimConfig::new(InsurerId::new("sim").unwrap(), archetype);
        config.speed = 1.0;
        Simulator::new(config)
    }

    fn post(key: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
        Request::post("/applications")
            .header("idempotency-key", key)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }

    fn get(path: &str) -> Request<Full<Bytes>> {
        Request::get(path).body(Full::new(Bytes::new())).unwrap()
    }

    async fn body_of(reply: Reply) -> Bytes {
        reply.into_body().collect().await.unwrap().to_bytes()
    }

    async fn create(sim: &Simulator, key: &str) -> ApplicationCreated {
        let reply = sim
            .handle(post(key, serde_json::to_vec(&sample()).unwrap()))
            .await;
        assert_eq!(reply.status(), StatusCode::ACCEPTED);
        serde_json::from_slice(&body_of(reply).await).unwrap()
    }

    async fn state(sim: &Simulator, id: &str) -> QuoteState {
        let reply = sim.handle(get(&format!("/quotes/{id}"))).await;
        assert_eq!(reply.status(), StatusCode::OK);
        serde_json::from_slice(&body_of(reply).await).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn answers_take_the_configured_response_time() {
        let mut config = SimConfig::new(InsurerId::new("sim").unwrap(), Archetype::Typical);
        config.speed = 2.0;
        config.response_time = (Duration::from_millis(100), Duration::from_millis(300));
        let sim = Simulator::new(config);
        for _ in 0..20 {
            let started = Instant::now();
            let created = create(&sim, &uuid::Uuid::new_v4().to_string()).await;
            let took = started.elapsed();
            // 100..=300 ms at twice the speed.
            assert!(
                (Duration::from_millis(50)..=Duration::from_millis(150)).contains(&took),
                "{took:?}"
            );
            let started = Instant::now();
            state(&sim, &created.application_id).await;
            assert!(started.elapsed() >= Duration::from_millis(50));
        }
        // Health and stats answer at once.
        let started = Instant::now();
        sim.handle(get("/health")).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_required_header_is_checked_on_every_partner_call() {
        let mut config = SimConfig::new(InsurerId::new("sim").unwrap(), Archetype::Fast);
        config.required_header = Some(("authorization".into(), "Bearer s3cret".into()));
        let sim = Simulator::new(config);
        let reply = sim.handle(get("/quotes/x")).await;
        assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
        let mut with = get("/quotes/x");
        with.headers_mut()
            .insert("authorization", "Bearer s3cret".parse().unwrap());
        assert_eq!(sim.handle(with).await.status(), StatusCode::NOT_FOUND);
        assert_eq!(sim.handle(get("/health")).await.status(), StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn ready_exactly_after_the_planned_delay() {
        let sim = simulator(Archetype::Fast);
        let created = create(&sim, "k").await;
        let delay = sim.lock().by_key("k").unwrap().plan.delay;
        tokio::time::advance(delay - Duration::from_millis(1)).await;
        assert_eq!(
            state(&sim, &created.application_id).await.status,
            QuoteStatusWire::InProgress
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        let ready = state(&sim, &created.application_id).await;
        assert_eq!(ready.status, QuoteStatusWire::Ready);
        assert!(ready.quote.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn stats_count_applications_once_per_key() {
        let sim = simulator(Archetype::Typical);
        let first = create(&sim, "k1").await;
        let body = serde_json::to_vec(&sample()).unwrap();
        let replay = sim.handle(post("k1", body)).await;
        assert_eq!(replay.status(), StatusCode::OK);
        create(&sim, "k2").await;
        let _ = sim
            .handle(get(&format!("/quotes/{}", first.application_id)))
            .await;
        let stats: serde_json::Value =
            serde_json::from_slice(&body_of(sim.handle(get("/stats")).await).await).unwrap();
        assert_eq!(
            stats,
            serde_json::json!({"posts": 3, "applications": 2, "replays": 1, "polls": 1})
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_replay_reports_the_current_status() {
        let sim = simulator(Archetype::Fast);
        let first = create(&sim, "k").await;
        tokio::time::advance(Duration::from_secs(3_000)).await;
        let body = serde_json::to_vec(&sample()).unwrap();
        let reply = sim.handle(post("k", body)).await;
        assert_eq!(reply.status(), StatusCode::OK);
        let replay: ApplicationCreated = serde_json::from_slice(&body_of(reply).await).unwrap();
        assert_eq!(replay.application_id, first.application_id);
        assert_eq!(replay.status, QuoteStatusWire::Ready);
    }

    #[tokio::test(start_paused = true)]
    async fn calculate_then_poll_hints_on_every_pending_answer() {
        let sim = simulator(Archetype::CalculateThenPoll);
        let created = create(&sim, "k").await;
        assert_eq!(created.retry_after_ms, Some(2_000));
        let reply = sim
            .handle(get(&format!("/quotes/{}", created.application_id)))
            .await;
        assert_eq!(reply.headers()["retry-after"], "2");
        let pending: QuoteState = serde_json::from_slice(&body_of(reply).await).unwrap();
        assert_eq!(pending.retry_after_ms, Some(2_000));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_legacy_may_never_be_ready() {
        let sim = simulator(Archetype::SlowLegacy);
        let never = (0..100)
            .map(|i| format!("k{i}"))
            .find(|key| seed_never_ready(&sim, key))
            .expect("about one key in ten never readies");
        let created = create(&sim, &never).await;
        tokio::time::advance(Duration::from_secs(3_000)).await;
        assert_eq!(
            state(&sim, &created.application_id).await.status,
            QuoteStatusWire::InProgress
        );
    }

    fn seed_never_ready(sim: &Simulator, key: &str) -> bool {
        let plan = plan::plan(sim.config(), key, "x", &sample(), Utc::now()).unwrap();
        plan.outcome == Outcome::NeverReady
    }

    #[tokio::test(start_paused = true)]
    async fn flaky_polls_fail_deterministically_with_hints() {
        let sim = simulator(Archetype::Flaky);
        let mut created = None;
        for attempt in 0..10 {
            let reply = sim
                .handle(post("k", serde_json::to_vec(&sample()).unwrap()))
                .await;
            if reply.status().is_success() {
                created = Some(
                    serde_json::from_slice::<ApplicationCreated>(&body_of(reply).await).unwrap(),
                );
                break;
            }
            assert_eq!(
                reply.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "attempt {attempt}"
            );
        }
        let path = format!("/quotes/{}", created.unwrap().application_id);
        let mut statuses = Vec::new();
        for _ in 0..100 {
            let reply = sim.handle(get(&path)).await;
            if !reply.status().is_success() {
                assert_eq!(reply.headers()["retry-after"], "1");
            }
            statuses.push(reply.status().as_u16());
        }
        let count = |s: u16| statuses.iter().filter(|x| **x == s).count();
        assert!(count(503) > 5 && count(429) > 2, "{statuses:?}");
        let expected: Vec<u16> = (1..=100)
            .map(|n| match plan::poll_fault(sim.config(), "k", n) {
                Some(plan::Fault::Unavailable) => 503,
                Some(plan::Fault::RateLimited) => 429,
                _ => 200,
            })
            .collect();
        assert_eq!(statuses, expected);
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let sim = simulator(Archetype::Typical);
        let reply = sim.handle(post("k", vec![b' '; MAX_BODY_BYTES + 1])).await;
        assert_eq!(reply.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn invalid_requests_name_every_field() {
        let sim = simulator(Archetype::Typical);
        let mut request = sample();
        request.policy.usage_period_months = 2;
        request.contact.phone = "123".into();
        let reply = sim
            .handle(post("k", serde_json::to_vec(&request).unwrap()))
            .await;
        assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
        let problems: osago_transport::http::wire::FieldProblems =
            serde_json::from_slice(&body_of(reply).await).unwrap();
        let fields: Vec<&str> = problems
            .properties
            .iter()
            .map(|p| p.property.as_str())
            .collect();
        assert_eq!(fields, ["policy.usage_period_months", "contact.phone"]);
    }
}
