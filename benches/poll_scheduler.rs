//! Poll scheduler benchmark: the real fan-out engine against a simulated
//! insurer, on tokio's paused clock (a discrete-event simulation: minutes of
//! virtual time in seconds, the same result every run for a seed).
//!
//! The insurer (one, as the engine sees each insurer on its own):
//! - answers every call (`POST /applications`, `GET /quotes`) after a
//!   uniform 50-200 ms;
//! - has a quote ready a log-normal time after the application: p50 4 s,
//!   p95 12 s (the "typical" archetype of docs/domain facts);
//! - is called at most 20 at a time (the engine's default concurrency cap;
//!   so at most 20 / 0.125 s = 160 calls per second); one extra run at 500
//!   in flight with a cap of 200 shows the schedule when the cap is not the
//!   bottleneck.
//!
//! A second table does the same for the "slow legacy" archetype (p50 20 s,
//! p95 55 s, and 6 % of applications never ready, so with the log-normal's
//! own tail about 10 % are not ready within the minute), at the loads the
//! real-stack bench puts on it.
//!
//! A closed loop keeps N applications in flight (a finished one is replaced
//! at once) for 60 s of warm-up and 300 s measured, once with the adaptive
//! schedule (the default) and once with fixed 1 s polling. Per quote it
//! records the detection lag (ready at the insurer -> the poll's answer
//! back at the aggregator) and the polls it took; calls per quote counts
//! every call begun in the measured window (POSTs, and polls of
//! applications that timed out too) over the quotes.
//!
//! Two more tables put the load bench's fleet (seven insurers that quote,
//! from fast to slow legacy: `FLEET`) behind one engine, cap 20 each, and
//! record each request's first quote as the sink sees it: the burst (2 500
//! requests in 10 s on an engine that has learned nothing) and the steady
//! peak (Poisson arrivals at 2 500 / 65 s a second, a minute of warm-up,
//! three measured). "Of possible" compares with an engine that applied at
//! once and saw each answer the moment it was ready.
//!
//! `cargo bench -p osago-benches --bench poll_scheduler` prints markdown
//! tables (docs/benchmarks.md holds the last ones). `-- 100 500` runs only
//! those N, for the typical archetype; `-- burst`, `-- steady` and
//! `-- start` (a pod's first minute at the steady peak, learned from
//! nothing and started from kept answer times) only those
//! tables, and `name=value` arguments set the schedule's settings for them
//! (`-- steady priced_price=8`, `-- steady racers=0`). `-- smoke` runs
//! each table's code on a few requests (the test suite's check that the
//! benchmark still runs; its figures mean nothing).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use osago_aggregator_lib::resilience::PollConfig;
use osago_aggregator_lib::{Engine, EngineConfig, Started};
use osago_core::events::InsurerEvent;
use osago_core::insurer::{Application, InsurerError, PollOutcome, Quote};
use osago_core::ports::{InsurerClient, PortError, QuoteSink};
use osago_core::request::sample;
use osago_core::{
    tariff, Clock, EventId, InsurerId, Kopecks, QuoteRequest, RequestEvent, RequestId,
};
use osago_transport::memory::MemoryStateStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use tokio::time::Instant;

const WARM_UP: Duration = Duration::from_secs(60);
const MEASURED: Duration = Duration::from_secs(300);

/// Wall-clock time that follows tokio's (paused) clock.
#[derive(Debug)]
struct SimClock {
    base: DateTime<Utc>,
    start: Instant,
}

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + chrono::TimeDelta::from_std(self.start.elapsed()).unwrap_or_default()
    }
}

#[derive(Debug, Default)]
struct Stats {
    /// (detection lag, polls) of every quote seen in the measured window.
    quotes: Vec<(Duration, u32)>,
    timeouts: u32,
    /// Calls begun in the measured window.
    calls: u64,
}

/// When the simulated insurer's quotes are ready.
#[derive(Debug, Clone, Copy)]
struct Archetype {
    name: &'static str,
    p50_secs: f64,
    p95_secs: f64,
    /// Share of applications never ready.
    never: f64,
}

const TYPICAL: Archetype = Archetype {
    name: "typical",
    p50_secs: 4.0,
    p95_secs: 12.0,
    never: 0.0,
};

const LEGACY: Archetype = Archetype {
    name: "legacy",
    p50_secs: 20.0,
    p95_secs: 55.0,
    never: 0.06,
};

#[derive(Debug)]
struct App {
    ready: Instant,
    polls: u32,
}

/// The simulated insurer.
#[derive(Debug)]
struct SimInsurer {
    clock: Arc<SimClock>,
    rng: Mutex<StdRng>,
    ready: LogNormal<f64>,
    never: f64,
    apps: Mutex<std::collections::HashMap<String, App>>,
    next_id: std::sync::atomic::AtomicU64,
    stats: Arc<Mutex<Stats>>,
    measure_from: Instant,
    measure_until: Instant,
    quote: Quote,
}

impl SimInsurer {
    fn count_call(&self) {
        let now = Instant::now();
        if now >= self.measure_from && now < self.measure_until {
            self.stats.lock().unwrap().calls += 1;
        }
    }

    async fn latency(&self) {
        let ms = self.rng.lock().unwrap().random_range(50..=200);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

#[async_trait]
impl InsurerClient for SimInsurer {
    async fn create_application(
        &self,
        _key: &str,
        _: &QuoteRequest,
    ) -> Result<Application, InsurerError> {
        self.count_call();
        self.latency().await;
        let secs = {
            let mut rng = self.rng.lock().unwrap();
            if rng.random::<f64>() < self.never {
                3600.0
            } else {
                self.ready.sample(&mut *rng)
            }
        };
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string();
        let ready = Instant::now() + Duration::from_secs_f64(secs.min(3600.0));
        self.apps
            .lock()
            .unwrap()
            .insert(id.clone(), App { ready, polls: 0 });
        Ok(Application {
            id,
            retry_after: None,
        })
    }

    async fn poll_quote(&self, id: &str) -> Result<PollOutcome, InsurerError> {
        self.count_call();
        let asked = Instant::now();
        // The insurer looks at the application when the request arrives
        // (half-way through the call), and the answer travels back.
        let latency = Duration::from_millis(self.rng.lock().unwrap().random_range(50..=200));
        tokio::time::sleep(latency / 2).await;
        let (ready, polls) = {
            let mut apps = self.apps.lock().unwrap();
            let app = apps.get_mut(id).expect("known application");
            app.polls += 1;
            (app.ready, app.polls)
        };
        let seen_ready = Instant::now() >= ready;
        tokio::time::sleep(latency - latency / 2).await;
        if !seen_ready {
            return Ok(PollOutcome::Pending { retry_after: None });
        }
        let back = Instant::now();
        self.apps.lock().unwrap().remove(id);
        if asked >= self.measure_from && back < self.measure_until {
            self.stats
                .lock()
                .unwrap()
                .quotes
                .push((back - ready, polls));
        }
        let ready_at =
            self.clock.now() - chrono::TimeDelta::from_std(back - ready).unwrap_or_default();
        Ok(PollOutcome::Quoted(Quote {
            ready_at: Some(ready_at),
            ..self.quote.clone()
        }))
    }
}

fn a_quote(clock: &SimClock) -> Quote {
    let today = clock.now().date_naive();
    let start = sample().policy.effective_start(today);
    let p = tariff::premium(&sample(), Kopecks::from_rub(7_000), start).expect("premium");
    Quote {
        premium_kopecks: p.premium_kopecks,
        coefficients: p.coefficients,
        capped: p.capped,
        valid_until: clock.now() + chrono::Duration::days(1),
        add_ons: vec![],
        message: None,
        purchase_url: None,
        ready_at: None,
        price_check: None,
    }
}

/// The engine's defaults with `poll`, and only the concurrency cap (`cap`)
/// limiting calls.
fn engine_config(cap: usize, poll: PollConfig) -> EngineConfig {
    let mut config = EngineConfig::default();
    config.poll = poll;
    config.resilience.quota.rate.rate_per_sec = 0.0;
    config.resilience.concurrency.max_in_flight = cap;
    config.resilience.breaker.slow_call = Duration::from_secs(3600);
    config
}

/// Request ids in the order requests are made: the engine derives each
/// application's stagger in the slot queue from its id, so random ids made
/// every run differ by a few tenths of a point.
static NEXT_REQUEST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A fresh request with a minute.
fn a_request(clock: &SimClock) -> RequestEvent {
    let now = clock.now();
    let n = NEXT_REQUEST.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    RequestEvent {
        event_id: EventId::random(),
        request_id: RequestId::from(uuid::Uuid::from_u64_pair(0x05a6_0000_0000_4000, n)),
        occurred_at: now,
        deadline_at: now + chrono::Duration::seconds(60),
        request: sample(),
    }
}

/// Drops every event.
#[derive(Debug)]
struct NullSink;

#[async_trait]
impl QuoteSink for NullSink {
    async fn publish(&self, _: &InsurerEvent) -> Result<(), PortError> {
        Ok(())
    }
}

struct Row {
    lag_p50: Duration,
    lag_p99: Duration,
    polls_mean: f64,
    calls_per_quote: f64,
    quotes: usize,
    timeouts: u32,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

impl Archetype {
    fn ready(&self) -> LogNormal<f64> {
        LogNormal::new(
            self.p50_secs.ln(),
            (self.p95_secs / self.p50_secs).ln() / 1.645,
        )
        .expect("log-normal")
    }

    /// The share of applications ready within `secs` of being made: what
    /// an engine that knew the moment would get if it applied at once.
    fn ready_within(&self, secs: f64) -> f64 {
        let mut rng = StdRng::seed_from_u64(7);
        let ready = self.ready();
        let n = 200_000;
        let within = (0..n)
            .filter(|_| rng.random::<f64>() >= self.never && ready.sample(&mut rng) <= secs)
            .count();
        within as f64 / n as f64
    }
}

/// A fresh engine (nothing learned) with one simulated insurer, counting
/// calls and quotes between `measure_from` and `measure_until`.
fn setup(
    archetype: Archetype,
    cap: usize,
    poll: PollConfig,
    measure_from: Instant,
    measure_until: Instant,
) -> (Engine, Arc<SimClock>, Arc<Mutex<Stats>>) {
    let start = Instant::now();
    let clock = Arc::new(SimClock {
        base: Utc::now(),
        start,
    });
    let stats = Arc::new(Mutex::new(Stats::default()));
    let insurer = Arc::new(SimInsurer {
        quote: a_quote(&clock),
        clock: clock.clone(),
        rng: Mutex::new(StdRng::seed_from_u64(42)),
        ready: archetype.ready(),
        never: archetype.never,
        apps: Mutex::default(),
        next_id: Default::default(),
        stats: stats.clone(),
        measure_from,
        measure_until,
    });
    let config = engine_config(cap, poll);
    let engine = Engine::builder()
        .insurer(InsurerId::new("sim").expect("id"), insurer.clone())
        .sink(Arc::new(NullSink))
        .state_store(Arc::new(MemoryStateStore::new()))
        .clock(clock.clone())
        .config(config)
        .build()
        .expect("valid engine");
    (engine, clock, stats)
}

/// A burst on a fresh engine: `users` requests arriving evenly over
/// `BURST`, each with a minute, as the load bench's burst puts on the
/// insurers.
const BURST: Duration = Duration::from_secs(10);

/// The load bench's fleet of simulated insurers that quote (its `picky`
/// declines everything, so it costs a POST per request and gives nothing).
const FLEET: [Archetype; 7] = [
    Archetype {
        name: "swift (fast)",
        p50_secs: 1.5,
        p95_secs: 4.0,
        never: 0.0,
    },
    Archetype {
        name: "flaky",
        p50_secs: 3.0,
        p95_secs: 10.0,
        never: 0.0,
    },
    TYPICAL,
    Archetype {
        name: "strict",
        p50_secs: 5.0,
        p95_secs: 15.0,
        never: 0.0,
    },
    Archetype {
        name: "addon",
        p50_secs: 6.0,
        p95_secs: 18.0,
        never: 0.0,
    },
    Archetype {
        name: "patient",
        p50_secs: 8.0,
        p95_secs: 25.0,
        never: 0.0,
    },
    LEGACY,
];

/// Records when each request's first quote was published.
#[derive(Debug)]
struct FirstQuote {
    start: Instant,
    first: Mutex<std::collections::HashMap<RequestId, Duration>>,
}

#[async_trait]
impl QuoteSink for FirstQuote {
    async fn publish(&self, event: &InsurerEvent) -> Result<(), PortError> {
        if let InsurerEvent::Quote(e) = event {
            if e.status == osago_core::events::QuoteStatus::Quoted {
                self.first
                    .lock()
                    .unwrap()
                    .entry(e.request_id)
                    .or_insert_with(|| self.start.elapsed());
            }
        }
        Ok(())
    }
}

struct FleetRow {
    /// Per insurer: name, quotes, possible, calls per quote.
    insurers: Vec<(&'static str, usize, f64, f64)>,
    /// Request -> its first quote, p50 and p99 (a request with none counts
    /// as the full minute), over the requests measured.
    first_p50: Duration,
    first_p99: Duration,
}

/// Requests arriving at `arrivals` (from the start) on a fresh engine
/// asking the whole fleet, each with a minute; calls, quotes and first
/// quotes counted for requests arriving in `measured` (from the start).
/// The engine uses `store`, starts from the answer times kept in it if
/// `restore`, and keeps its own there at the end (as a pod stopping does).
async fn fleet(
    arrivals: Vec<Duration>,
    measured: std::ops::Range<Duration>,
    cap: usize,
    poll: PollConfig,
    (store, restore): (Arc<MemoryStateStore>, bool),
) -> FleetRow {
    let start = Instant::now();
    let (from, until) = (start + measured.start, start + measured.end);
    let clock = Arc::new(SimClock {
        base: Utc::now(),
        start,
    });
    let sink = Arc::new(FirstQuote {
        start,
        first: Mutex::default(),
    });
    let config = engine_config(cap, poll);
    let mut builder = Engine::builder()
        .sink(sink.clone())
        .state_store(store)
        .clock(clock.clone())
        .config(config);
    let mut sims = Vec::new();
    for (i, archetype) in FLEET.iter().enumerate() {
        let stats = Arc::new(Mutex::new(Stats::default()));
        let insurer = Arc::new(SimInsurer {
            quote: a_quote(&clock),
            clock: clock.clone(),
            rng: Mutex::new(StdRng::seed_from_u64(42 + i as u64)),
            ready: archetype.ready(),
            never: archetype.never,
            apps: Mutex::default(),
            next_id: Default::default(),
            stats: stats.clone(),
            measure_from: from,
            measure_until: until,
        });
        builder = builder.insurer(InsurerId::new(format!("sim{i}")).expect("id"), insurer);
        sims.push((archetype, stats));
    }
    let engine = builder.build().expect("valid engine");
    if restore {
        assert_eq!(
            engine.restore_answer_times().await,
            FLEET.len(),
            "every insurer's answer times were kept"
        );
    }
    let mut requests = tokio::task::JoinSet::new();
    let mut measured_requests = 0usize;
    for at in arrivals {
        let at = start + at;
        if at >= until {
            break;
        }
        if at >= from {
            measured_requests += 1;
        }
        tokio::time::sleep_until(at).await;
        let engine = engine.clone();
        let clock = clock.clone();
        requests.spawn(async move {
            let event = a_request(&clock);
            let began = Instant::now();
            let Ok(Started::Running(fan_out)) = engine.start(event.clone()).await else {
                panic!("fresh request");
            };
            fan_out.wait().await;
            (event.request_id, began)
        });
    }
    let mut firsts = Vec::new();
    while let Some(done) = requests.join_next().await {
        let (id, began) = done.expect("request task");
        if began < from || began >= until {
            continue;
        }
        let first = sink.first.lock().unwrap().get(&id).copied();
        firsts.push(first.map_or(Duration::from_secs(60), |at| at - (began - start)));
    }
    engine.keep_answer_times().await;
    firsts.sort();
    let insurers = sims
        .iter()
        .map(|(archetype, stats)| {
            let stats = stats.lock().unwrap();
            (
                archetype.name,
                stats.quotes.len(),
                measured_requests as f64 * archetype.ready_within(60.0),
                stats.calls as f64 / stats.quotes.len().max(1) as f64,
            )
        })
        .collect();
    FleetRow {
        insurers,
        first_p50: percentile(&firsts, 0.5),
        first_p99: percentile(&firsts, 0.99),
    }
}

fn print_fleet(row: FleetRow) {
    println!(
        "first quote p50 {} ms, p99 {} ms",
        ms(row.first_p50),
        ms(row.first_p99)
    );
    println!();
    println!("| insurer | quotes | of possible | calls per quote |");
    println!("|---|---:|---:|---:|");
    let (mut quotes, mut possible, mut calls) = (0, 0.0, 0.0);
    for (name, q, p, cpq) in row.insurers {
        quotes += q;
        possible += p;
        calls += cpq * q as f64;
        println!(
            "| {name} | {q} | {:.0} % | {cpq:.1} |",
            100.0 * q as f64 / p
        );
    }
    println!(
        "| all | {quotes} | {:.1} % | {:.2} |",
        100.0 * quotes as f64 / possible,
        calls / quotes.max(1) as f64
    );
}

/// The steady peak's measured time, after `WARM_UP`.
const MEASURED_STEADY: Duration = Duration::from_secs(180);

async fn simulate(archetype: Archetype, in_flight: usize, cap: usize, poll: PollConfig) -> Row {
    let start = Instant::now();
    let (engine, clock, stats) = setup(
        archetype,
        cap,
        poll,
        start + WARM_UP,
        start + WARM_UP + MEASURED,
    );
    let end = start + WARM_UP + MEASURED;
    let mut users = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let engine = engine.clone();
        let clock = clock.clone();
        let stats = stats.clone();
        users.spawn(async move {
            while Instant::now() < end {
                let event = a_request(&clock);
                let began = Instant::now();
                let Ok(Started::Running(fan_out)) = engine.start(event).await else {
                    panic!("fresh request");
                };
                for outcome in fan_out.wait().await {
                    let measured = began >= start + WARM_UP && Instant::now() < end;
                    if outcome.outcome == "timeout" && measured {
                        stats.lock().unwrap().timeouts += 1;
                    }
                }
            }
        });
    }
    while users.join_next().await.is_some() {}
    let stats = stats.lock().unwrap();
    let mut lags: Vec<Duration> = stats.quotes.iter().map(|(lag, _)| *lag).collect();
    lags.sort();
    let polls: u64 = stats
        .quotes
        .iter()
        .map(|(_, polls)| u64::from(*polls))
        .sum();
    Row {
        lag_p50: percentile(&lags, 0.5),
        lag_p99: percentile(&lags, 0.99),
        polls_mean: polls as f64 / stats.quotes.len().max(1) as f64,
        calls_per_quote: stats.calls as f64 / stats.quotes.len().max(1) as f64,
        quotes: stats.quotes.len(),
        timeouts: stats.timeouts,
    }
}

fn ms(d: Duration) -> String {
    format!("{}", d.as_millis())
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

/// The burst table: the load bench's burst of 2 500 users on the fleet of
/// simulated insurers, on an engine that has learned nothing yet.
fn bursts(users: u32, poll: PollConfig) {
    let arrivals = (0..users)
        .map(|i| BURST.mul_f64(f64::from(i) / f64::from(users)))
        .collect();
    let everything = Duration::ZERO..Duration::from_secs(3600);
    println!("Burst: {users} users in 10 s, cap 20 per insurer");
    print_fleet(paused_runtime().block_on(fleet(
        arrivals,
        everything,
        20,
        poll,
        (Arc::new(MemoryStateStore::new()), false),
    )));
}

/// The steady peak's arrivals until `end`: Poisson at 2 500 / 65 s a
/// second (seeded).
fn steady_arrivals(end: Duration) -> Vec<Duration> {
    let mut rng = StdRng::seed_from_u64(9);
    let gaps = rand_distr::Exp::new(2500.0 / 65.0).expect("rate");
    let mut at = Duration::ZERO;
    std::iter::from_fn(|| {
        at += Duration::from_secs_f64(gaps.sample(&mut rng));
        (at < end).then_some(at)
    })
    .collect()
}

/// The steady peak on the fleet: one minute of warm-up, three measured.
fn fleet_steady(poll: PollConfig) {
    let end = WARM_UP + MEASURED_STEADY;
    println!("Steady peak: 38.5 requests a second, cap 20 per insurer");
    print_fleet(paused_runtime().block_on(fleet(
        steady_arrivals(end),
        WARM_UP..end,
        20,
        poll,
        (Arc::new(MemoryStateStore::new()), false),
    )));
}

/// A pod's first minute at the steady peak: on an engine that learned
/// nothing (a first start), then on one started from the answer times the
/// first kept in the state store as it stopped (a restart, a rollout). The
/// requests arriving in the minute, counted to their ends (every call and
/// quote until two minutes, when the last one's minute is over).
fn fleet_start(poll: PollConfig) {
    let store = Arc::new(MemoryStateStore::new());
    let minute = Duration::from_secs(60);
    for (name, restore) in [
        ("learned nothing", false),
        ("started from kept answer times", true),
    ] {
        println!("First minute at the steady peak, on an engine that {name}, cap 20 per insurer");
        print_fleet(paused_runtime().block_on(fleet(
            steady_arrivals(minute),
            Duration::ZERO..2 * minute,
            20,
            poll.clone(),
            (store.clone(), restore),
        )));
        println!();
    }
}

/// `-- smoke`: every table's code on a few requests, asserting only that
/// quotes come. The test suite runs it in the dev profile
/// (`cargo test -p osago-benches --bench poll_scheduler -- smoke`) so the
/// benchmark cannot rot unseen; its figures mean nothing.
fn smoke(poll: PollConfig) {
    for archetype in [TYPICAL, LEGACY] {
        let row = paused_runtime().block_on(simulate(archetype, 20, 20, poll.clone()));
        println!(
            "smoke: {} quotes, {:.1} calls per quote ({})",
            row.quotes, row.calls_per_quote, archetype.name
        );
        assert!(row.quotes > 0, "no quote from {}", archetype.name);
    }
    bursts(100, poll.clone());
    // A first start, then one from the answer times it kept.
    let store = Arc::new(MemoryStateStore::new());
    for restore in [false, true] {
        let row = paused_runtime().block_on(fleet(
            steady_arrivals(Duration::from_secs(10)),
            Duration::ZERO..Duration::from_secs(120),
            20,
            poll.clone(),
            (store.clone(), restore),
        ));
        assert!(
            row.insurers.iter().all(|(_, quotes, ..)| *quotes > 0),
            "an insurer of the fleet gave no quote"
        );
        print_fleet(row);
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // `name=value` arguments set the adaptive schedule's settings (in
    // seconds for durations), to weigh them: `-- steady spacing=0.3`;
    // every table runs with them.
    let mut tuned = PollConfig::default();
    for arg in &argv {
        let Some((name, value)) = arg.split_once('=') else {
            continue;
        };
        let v: f64 = value.parse().expect("a number");
        match name {
            "first_percentile" => tuned.first_percentile = v,
            "spacing" => tuned.spacing = v,
            "pressure_weight" => tuned.pressure_weight = v,
            "factor" => tuned.factor = v,
            "max" => tuned.max = Duration::from_secs_f64(v),
            "min_interval" => tuned.min_interval = Duration::from_secs_f64(v),
            "relative_after" => tuned.relative_after = Duration::from_secs_f64(v),
            "priced_price" => tuned.priced_price = v,
            "priced_ceiling" => tuned.priced_ceiling = v,
            "racers" => tuned.racers = v as usize,
            "racer_patience" => tuned.racer_patience = v,
            "racer_price" => tuned.racer_price = v,
            other => panic!("unknown setting {other}"),
        }
    }
    if argv.iter().any(|a| a == "smoke") {
        smoke(tuned);
        return;
    }
    if argv.iter().any(|a| a == "burst") {
        // `-- burst 10000`: that many users.
        let users = argv.iter().find_map(|a| a.parse().ok()).unwrap_or(2500);
        bursts(users, tuned);
        return;
    }
    if argv.iter().any(|a| a == "steady") {
        fleet_steady(tuned);
        return;
    }
    if argv.iter().any(|a| a == "start") {
        fleet_start(tuned);
        return;
    }
    let args: Vec<usize> = argv.iter().filter_map(|a| a.parse().ok()).collect();
    // (archetype, in flight, cap): the cap of 20, and one run where
    // the cap is not the bottleneck, to show the schedule on its own; then
    // the slow legacy archetype at about the load the real-stack bench's
    // steady peak puts on it (~39 applications a second, ~30 s each).
    let levels: Vec<(Archetype, usize, usize)> = if args.is_empty() {
        vec![
            (TYPICAL, 100, 20),
            (TYPICAL, 500, 20),
            (TYPICAL, 2000, 20),
            (TYPICAL, 500, 200),
            (LEGACY, 300, 20),
            (LEGACY, 1200, 20),
        ]
    } else {
        args.iter().map(|&n| (TYPICAL, n, 20)).collect()
    };
    println!("| archetype | in flight | cap | scheduler | detection lag p50 (ms) | p99 (ms) | polls per quote | calls per quote | quotes | timeouts |");
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    for (archetype, n, cap) in levels {
        let mut schedules = vec![("adaptive", tuned.clone())];
        if archetype.name == LEGACY.name {
            // The same schedule weighing lag the same all minute long.
            let absolute = PollConfig {
                relative_after: Duration::ZERO,
                ..tuned.clone()
            };
            schedules.push(("adaptive, lag weighed alike all minute", absolute));
        }
        schedules.push(("fixed 1 s", PollConfig::fixed(Duration::from_secs(1))));
        for (name, poll) in schedules {
            let row = paused_runtime().block_on(simulate(archetype, n, cap, poll));
            println!(
                "| {} | {n} | {cap} | {name} | {} | {} | {:.1} | {:.1} | {} | {} |",
                archetype.name,
                ms(row.lag_p50),
                ms(row.lag_p99),
                row.polls_mean,
                row.calls_per_quote,
                row.quotes,
                row.timeouts
            );
        }
    }
    if args.is_empty() {
        println!();
        bursts(2500, tuned.clone());
        println!();
        bursts(10_000, tuned.clone());
        println!();
        fleet_steady(tuned.clone());
        println!();
        fleet_start(tuned);
    }
}
