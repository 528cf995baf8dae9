//! The simulator over real HTTP: reqwest and our own partner API client
//! against `run` on 127.0.0.1:0, at 50x speed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use insurer_sim::{Archetype, SimConfig};
use osago_core::insurer::{ErrorKind, PollOutcome};
use osago_core::ports::InsurerClient;
use osago_core::request::sample;
use osago_core::tariff;
use osago_core::{InsurerId, Kopecks, QuoteRequest};
use osago_transport::http::wire::{ApplicationCreated, FieldProblems, QuoteState, QuoteStatusWire};
use osago_transport::http::{HttpInsurerClient, HttpInsurerConfig};
use reqwest::StatusCode;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SPEED: f64 = 50.0;

/// A running simulator.
struct Sim {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Sim {
    async fn start(config: SimConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(insurer_sim::run(listener, config, shutdown));
        Self {
            base,
            stop: Some(stop),
            task,
        }
    }

    async fn of(archetype: Archetype) -> Self {
        Self::start(config(archetype, 42)).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn client(&self) -> HttpInsurerClient {
        HttpInsurerClient::new(
            InsurerId::new("sim").unwrap(),
            reqwest::Url::parse(&self.base).unwrap(),
            HttpInsurerConfig::default(),
        )
        .unwrap()
    }

    /// Stops the server; it must return within `within`.
    async fn stop_within(mut self, within: Duration) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(within, self.task)
            .await
            .expect("run returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

fn config(archetype: Archetype, seed: u64) -> SimConfig {
    let mut c = SimConfig::new(InsurerId::new("sim").unwrap(), archetype);
    c.seed = seed;
    c.speed = SPEED;
    c
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn post(sim: &Sim, key: &str, request: &QuoteRequest) -> reqwest::Response {
    http()
        .post(sim.url("/applications"))
        .header("Idempotency-Key", key)
        .json(request)
        .send()
        .await
        .unwrap()
}

/// Creates an application, retrying injected 5xx; returns its id.
async fn create(sim: &Sim, key: &str, request: &QuoteRequest) -> String {
    for _ in 0..5 {
        let response = post(sim, key, request).await;
        if response.status().is_server_error() {
            continue;
        }
        assert!(response.status().is_success(), "{}", response.status());
        return response
            .json::<ApplicationCreated>()
            .await
            .unwrap()
            .application_id;
    }
    panic!("five 5xx in a row");
}

/// Polls until the status is final (or 2 s pass).
async fn settle(sim: &Sim, id: &str) -> QuoteState {
    let started = Instant::now();
    loop {
        let response = http()
            .get(sim.url(&format!("/quotes/{id}")))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            let state: QuoteState = response.json().await.unwrap();
            if state.status != QuoteStatusWire::InProgress {
                return state;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "not ready in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn tomorrow() -> NaiveDate {
    Utc::now().date_naive() + chrono::Duration::days(1)
}

#[tokio::test]
async fn fast_quote_matches_the_tariff() {
    let sim = Sim::of(Archetype::Fast).await;
    let before = Utc::now();
    let id = create(&sim, "fast-1", &sample()).await;
    let state = settle(&sim, &id).await;
    assert_eq!(state.status, QuoteStatusWire::Ready);
    let quote = state.quote.unwrap();
    assert!(quote.premium_kopecks > Kopecks(0));
    let tb = quote.coefficients.tb_kopecks;
    assert!((Kopecks::from_rub(5_500)..=Kopecks::from_rub(8_665)).contains(&tb));
    assert_eq!(tb.get() % 100, 0, "whole roubles");
    let start = sample().policy.effective_start(Utc::now().date_naive());
    let expected = tariff::premium(&sample(), tb, start).unwrap();
    assert_eq!(quote.premium_kopecks, expected.premium_kopecks);
    let mut coefficients = tariff::coefficients(&sample(), start).unwrap();
    coefficients.tb_kopecks = tb;
    assert_eq!(quote.coefficients, coefficients);
    let ready_at = quote.ready_at.expect("ready_at is set");
    assert!(before <= ready_at && ready_at <= Utc::now());
    assert_eq!(quote.valid_until, ready_at + chrono::Duration::hours(24));
    assert!(quote.add_ons.is_empty());
    assert_eq!(quote.purchase_url, None);
    sim.stop_within(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn the_same_key_returns_the_same_application() {
    let sim = Sim::of(Archetype::Typical).await;
    let first = post(&sim, "same", &sample()).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: ApplicationCreated = first.json().await.unwrap();
    assert_eq!(first.status, QuoteStatusWire::InProgress);
    let second = post(&sim, "same", &sample()).await;
    assert_eq!(second.status(), StatusCode::OK);
    let second: ApplicationCreated = second.json().await.unwrap();
    assert_eq!(first.application_id, second.application_id);
    let other = create(&sim, "other", &sample()).await;
    assert_ne!(other, first.application_id);
}

#[tokio::test]
async fn missing_idempotency_key_is_a_bad_request() {
    let sim = Sim::of(Archetype::Typical).await;
    let response = http()
        .post(sim.url("/applications"))
        .json(&sample())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let problems: FieldProblems = response.json().await.unwrap();
    assert!(problems.message.contains("idempotency-key"));
}

#[tokio::test]
async fn undecodable_body_names_the_field_only() {
    let sim = Sim::of(Archetype::Typical).await;
    let body = serde_json::to_string(&sample())
        .unwrap()
        .replace("\"year\":2021", "\"year\":\"SECRET\"");
    let response = http()
        .post(sim.url("/applications"))
        .header("Idempotency-Key", "k")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let text = response.text().await.unwrap();
    assert!(!text.contains("SECRET"));
    let problems: FieldProblems = serde_json::from_str(&text).unwrap();
    assert_eq!(problems.properties[0].property, "vehicle.year");
}

#[tokio::test]
async fn needs_more_data_asks_for_the_apartment() {
    let sim = Sim::of(Archetype::NeedsMoreData).await;
    let response = post(&sim, "nmd", &sample()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let problems: FieldProblems = response.json().await.unwrap();
    assert_eq!(problems.properties.len(), 1);
    assert_eq!(problems.properties[0].property, "owner.address.apartment");
    assert_eq!(
        problems.properties[0].message,
        "a valid residential address is required"
    );

    let mut complete = sample();
    complete.owner.address.apartment = Some("12".into());
    assert_eq!(
        post(&sim, "nmd", &complete).await.status(),
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn strict_underwriter_declines_a_driver_aged_20() {
    let sim = Sim::of(Archetype::StrictUnderwriter).await;
    let start = tomorrow();
    let mut young = sample();
    let birth = start.with_year(start.year() - 20).unwrap() - chrono::Duration::days(10);
    young.drivers.list[0].birth_date = birth;
    young.drivers.list[0].experience_start = birth.with_year(birth.year() + 17).unwrap();
    let id = create(&sim, "young", &young).await;
    let state = settle(&sim, &id).await;
    assert_eq!(state.status, QuoteStatusWire::Declined);
    assert_eq!(
        state.reason.as_deref(),
        Some("drivers under 22 are not insured")
    );

    let id = create(&sim, "adult", &sample()).await;
    assert_eq!(settle(&sim, &id).await.status, QuoteStatusWire::Ready);
}

#[tokio::test]
async fn mandatory_add_on_comes_with_the_price() {
    let mut c = config(Archetype::MandatoryAddOn, 42);
    c.purchase_base_url = Some("https://shop.example".into());
    let sim = Sim::start(c).await;
    let id = create(&sim, "addon", &sample()).await;
    let quote = settle(&sim, &id).await.quote.unwrap();
    assert_eq!(quote.add_ons.len(), 1);
    assert_eq!(quote.add_ons[0].name, "Страхование от несчастного случая");
    assert_eq!(quote.add_ons[0].price_kopecks, Kopecks(150_000));
    assert!(quote.add_ons[0].mandatory);
    assert!(quote.message.is_some());
    assert_eq!(
        quote.purchase_url,
        Some(format!("https://shop.example/buy/{id}"))
    );
}

#[tokio::test]
async fn calculate_then_poll_hints_scaled_by_speed() {
    let sim = Sim::of(Archetype::CalculateThenPoll).await;
    let response = post(&sim, "ctp", &sample()).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["retry-after"], "1");
    let created: ApplicationCreated = response.json().await.unwrap();
    assert_eq!(created.retry_after_ms, Some(40));
    let response = http()
        .get(sim.url(&format!("/quotes/{}", created.application_id)))
        .send()
        .await
        .unwrap();
    let state: QuoteState = response.json().await.unwrap();
    if state.status == QuoteStatusWire::InProgress {
        assert_eq!(state.retry_after_ms, Some(40));
    }
}

/// Ready times of `keys`, in order of creation.
async fn ready_times(sim: &Sim, ids: &[String]) -> Vec<(DateTime<Utc>, Kopecks)> {
    let mut out = Vec::new();
    for id in ids {
        let quote = settle(sim, id).await.quote.expect("fast always quotes");
        out.push((quote.ready_at.unwrap(), quote.premium_kopecks));
    }
    out
}

#[tokio::test]
async fn the_same_seed_repeats_the_run() {
    let a = Sim::start(config(Archetype::Fast, 7)).await;
    let b = Sim::start(config(Archetype::Fast, 7)).await;
    let keys: Vec<String> = (0..6).map(|i| format!("det-{i}")).collect();
    let (mut ids_a, mut ids_b, mut windows) = (Vec::new(), Vec::new(), Vec::new());
    for key in &keys {
        let opened = Utc::now();
        ids_a.push(create(&a, key, &sample()).await);
        ids_b.push(create(&b, key, &sample()).await);
        // Both sims created this key's application inside this window.
        windows.push(Utc::now() - opened);
    }
    assert_eq!(ids_a, ids_b);
    let (times_a, times_b) = (ready_times(&a, &ids_a).await, ready_times(&b, &ids_b).await);
    let premiums = |t: &[(DateTime<Utc>, Kopecks)]| t.iter().map(|(_, p)| *p).collect::<Vec<_>>();
    assert_eq!(premiums(&times_a), premiums(&times_b));
    for k in 0..keys.len() {
        // The same ready delay: the ready times differ only by the creation skew.
        let skew = (times_b[k].0 - times_a[k].0).abs();
        assert!(skew <= windows[k], "{}: {skew} > {}", keys[k], windows[k]);
    }
    for i in 0..keys.len() {
        for j in 0..keys.len() {
            if times_a[i].0 - times_a[j].0 > windows[i] + windows[j] {
                assert!(
                    times_b[i].0 > times_b[j].0,
                    "{} and {} swapped",
                    keys[i],
                    keys[j]
                );
            }
        }
    }
    let c = Sim::start(config(Archetype::Fast, 8)).await;
    assert_ne!(create(&c, "det-0", &sample()).await, ids_a[0]);
}

#[tokio::test]
async fn hang_never_answers_but_its_stats() {
    let sim = Sim::of(Archetype::Hang).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client.get(sim.url("/health")).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let err = client
        .post(sim.url("/applications"))
        .json(&sample())
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // Only `/stats` answers, so a test can count its applications: none.
    let stats: serde_json::Value = client
        .get(sim.url("/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["applications"], 0);
    // A held connection does not hold up the shutdown for long.
    let _held = tokio::net::TcpStream::connect(sim.base.trim_start_matches("http://"))
        .await
        .unwrap();
    sim.stop_within(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn garbage_answers_malformed_json() {
    let sim = Sim::of(Archetype::Garbage).await;
    let id = create(&sim, "g", &sample()).await;
    let response = http()
        .get(sim.url(&format!("/quotes/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.bytes().await.unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_err());
}

#[tokio::test]
async fn broken_answers_500_to_everything() {
    let sim = Sim::of(Archetype::Broken).await;
    assert_eq!(
        post(&sim, "b", &sample()).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    for path in ["/health", "/quotes/x", "/nowhere"] {
        let response = http().get(sim.url(path)).send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{path}"
        );
    }
}

#[tokio::test]
async fn unknown_ids_and_paths_are_not_found() {
    let sim = Sim::of(Archetype::Typical).await;
    for path in [
        "/quotes/no-such-id",
        "/quotes/",
        "/nowhere",
        "/applications",
    ] {
        let response = http().get(sim.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let health = http().get(sim.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn flaky_fails_some_calls_with_retry_after() {
    let sim = Sim::of(Archetype::Flaky).await;
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for i in 0..60 {
        let response = post(&sim, &format!("flaky-{i}"), &sample()).await;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(response.headers()["retry-after"], "1");
        }
        *statuses.entry(response.status().as_u16()).or_default() += 1;
    }
    assert!(statuses.get(&503).copied().unwrap_or(0) > 0, "{statuses:?}");
    assert!(
        statuses.get(&202).copied().unwrap_or(0) > 30,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn our_client_reads_every_answer() {
    let fast = Sim::of(Archetype::Fast).await;
    let client = fast.client();
    let app = client
        .create_application("client-1", &sample())
        .await
        .unwrap();
    let started = Instant::now();
    let quote = loop {
        match client.poll_quote(&app.id).await.unwrap() {
            PollOutcome::Quoted(quote) => break quote,
            PollOutcome::Pending { .. } => tokio::time::sleep(Duration::from_millis(5)).await,
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2));
    };
    assert!(quote.premium_kopecks > Kopecks(0));

    let ctp = Sim::of(Archetype::CalculateThenPoll).await;
    let app = ctp
        .client()
        .create_application("client-2", &sample())
        .await
        .unwrap();
    assert_eq!(app.retry_after, Some(Duration::from_millis(40)));

    let err = Sim::of(Archetype::NeedsMoreData)
        .await
        .client()
        .create_application("client-3", &sample())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Rejected);
    assert_eq!(
        err.message,
        "insurer needs more data: owner.address.apartment"
    );

    let broken = Sim::of(Archetype::Broken).await.client();
    let err = broken
        .create_application("client-4", &sample())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);

    let garbage = Sim::of(Archetype::Garbage).await;
    let app = garbage
        .client()
        .create_application("client-5", &sample())
        .await
        .unwrap();
    let err = garbage.client().poll_quote(&app.id).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadResponse);

    let err = client.poll_quote("no-such-id").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadResponse);
}
