//! The whole system as separate processes for fault tests: private
//! PostgreSQL, Valkey (with persistence) and the Kafka-protocol broker
//! (reached through a proxy, so a test can cut it off),
//! simulated insurers (optionally behind a [`Proxy`] the test controls),
//! two aggregators and two core-apps, each killable and restartable on the
//! same port with the same arguments, as an orchestrator would.
//!
//! [`Load`] drives it like browsers do: requests at a steady pace, each with
//! an SSE client that reconnects with `Last-Event-ID` to another core-app
//! when its stream breaks. [`Stack::verdict`] then checks the invariant.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use osago_testkit::{free_port, Postgres, Tansu, Valkey, ValkeyOptions};
use serde_json::Value;

use crate::processes::{wait_healthy, Service};
use insurer_sim::Archetype;

use crate::proxy::Proxy;
use crate::{parse_sse, sample_json};

/// A service process that can be killed and started again identically.
#[derive(Debug)]
pub struct Restartable {
    name: String,
    binary: &'static str,
    args: Vec<String>,
    /// Its main port (core-app's API; the aggregator's admin listener).
    pub port: u16,
    /// Its admin port (`/health/ready`, `/metrics`).
    pub admin_port: u16,
    service: Option<Service>,
    logs: std::path::PathBuf,
    restarts: u32,
}

impl Restartable {
    fn start(
        name: &str,
        binary: &'static str,
        (port, admin_port): (u16, u16),
        args: Vec<String>,
        logs: &Path,
    ) -> Self {
        let mut me = Self {
            name: name.to_owned(),
            binary,
            args,
            port,
            admin_port,
            service: None,
            logs: logs.to_owned(),
            restarts: 0,
        };
        me.spawn();
        me
    }

    fn spawn(&mut self) {
        let name = if self.restarts == 0 {
            self.name.clone()
        } else {
            format!("{}-{}", self.name, self.restarts)
        };
        self.service = Some(Service::start(&name, self.binary, &self.args, &self.logs));
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut service) = self.service.take() {
            service.kill();
        }
    }

    /// Starts it again (after a kill), as an orchestrator would.
    pub async fn restart(&mut self) {
        self.kill();
        self.restarts += 1;
        self.spawn();
        self.healthy().await;
    }

    /// SIGTERM; the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        let mut service = self.service.take()?;
        service.terminate(Duration::from_secs(90)).await
    }

    /// Waits for `/health/ready` to answer 200.
    pub async fn healthy(&self) {
        let service = self.service.as_ref().expect("running");
        wait_healthy(
            service,
            &format!("http://127.0.0.1:{}/health/ready", self.admin_port),
            Duration::from_secs(90),
        )
        .await;
    }

    /// Waits until its consumer group gave it partitions (by its log).
    pub async fn assigned(&self) {
        let service = self.service.as_ref().expect("running");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::read_to_string(&service.log).unwrap_or_default();
            let last = log
                .lines()
                .rfind(|l| l.contains("partitions assigned") || l.contains("partitions revoked"))
                .unwrap_or("");
            if last.contains("partitions assigned") && !last.contains("partitions=0") {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} got no partitions:\n{}",
                self.name,
                service.tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Its log so far, all runs.
    pub fn tail(&self) -> String {
        self.service.as_ref().map(Service::tail).unwrap_or_default()
    }

    /// Its process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.service.as_ref().map(Service::pid)
    }

    /// Base URL.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Base URL of its admin listener.
    pub fn admin(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }
}

/// One simulated insurer.
#[derive(Debug, Clone)]
pub struct InsurerSpec {
    /// Its id.
    pub id: String,
    /// Its archetype.
    pub archetype: Archetype,
    /// Put a controllable proxy in front of it.
    pub proxied: bool,
}

impl InsurerSpec {
    /// An insurer reached directly (not through a proxy).
    pub fn new(id: &str, archetype: Archetype) -> Self {
        Self {
            id: id.to_owned(),
            archetype,
            proxied: false,
        }
    }

    /// The simulator's eight realistic insurers (`insurer_sim::default_lineup`).
    pub fn lineup() -> Vec<Self> {
        insurer_sim::default_lineup()
            .into_iter()
            .map(|(id, archetype)| Self::new(id.as_str(), archetype))
            .collect()
    }
}

/// The stack's settings.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The insurers.
    pub insurers: Vec<InsurerSpec>,
    /// Deadline per request (core-app) and per insurer (aggregator).
    pub deadline: Duration,
    /// Simulator speed factor.
    pub sim_speed: f64,
    /// Give each service a stable `--instance-id` (static group membership):
    /// a restarted process takes back its partitions at once. tansu 0.6.0
    /// needs it after a kill -9 (it never evicts the dead member), but does
    /// not give static members their partitions back after a broker outage
    /// longer than the session timeout.
    pub static_membership: bool,
    /// How many core-apps (each with its own `/health` port).
    pub cores: usize,
    /// core-app's SSE heartbeat interval.
    pub heartbeat: Duration,
    /// Put the broker behind a proxy the test controls (fault tests); off,
    /// clients reach tansu directly (benchmarks).
    pub broker_proxy: bool,
    /// Extra flags for every core-app and aggregator.
    pub extra_args: Vec<String>,
    /// Extra flags for every core-app only.
    pub core_app_args: Vec<String>,
    /// Extra flags for every aggregator only.
    pub aggregator_args: Vec<String>,
    /// Keep the aggregators' state and the shared limits on a three-node
    /// Valkey cluster (`redis+cluster://`) instead of one server.
    pub valkey_cluster: bool,
    /// tansu's storage engine (`memory://tansu/` or `sqlite://tansu.db`).
    pub broker_storage: &'static str,
    /// The simulated insurers' response time (`--response-time`).
    pub sim_response_time: String,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            insurers: vec![
                InsurerSpec::new("swift", Archetype::Fast),
                InsurerSpec::new("steady", Archetype::Typical),
                InsurerSpec::new("patient", Archetype::CalculateThenPoll),
                InsurerSpec::new("flaky", Archetype::Flaky),
            ],
            deadline: Duration::from_secs(20),
            sim_speed: 4.0,
            static_membership: true,
            cores: 2,
            heartbeat: Duration::from_secs(1),
            broker_proxy: true,
            extra_args: Vec::new(),
            core_app_args: Vec::new(),
            aggregator_args: Vec::new(),
            valkey_cluster: false,
            broker_storage: "memory://tansu/",
            sim_response_time: "0ms".to_owned(),
        }
    }
}

/// The running system.
#[derive(Debug)]
pub struct Stack {
    /// Logs of every process.
    pub logs: tempfile::TempDir,
    /// PostgreSQL (core-app's database).
    pub postgres: Postgres,
    /// Valkey (aggregator state), with append-only persistence.
    pub valkey: Valkey,
    /// The cluster, with [`StackOptions::valkey_cluster`].
    pub valkey_cluster: Option<osago_testkit::ValkeyCluster>,
    /// The broker.
    pub tansu: Tansu,
    /// The proxy every client reaches the broker through (its advertised
    /// listener).
    pub broker_proxy: Proxy,
    /// core-app's database URL.
    pub database: String,
    /// Simulated insurers, by id.
    pub sims: BTreeMap<String, (Service, u16)>,
    /// Proxies in front of insurers, by id.
    pub proxies: BTreeMap<String, Proxy>,
    /// The aggregators.
    pub aggregators: Vec<Restartable>,
    /// The core-apps.
    pub cores: Vec<Restartable>,
    /// The settings.
    pub options: StackOptions,
}

impl Stack {
    /// Starts everything and waits until every service is healthy.
    pub async fn start(options: StackOptions) -> Stack {
        // OSAGO_KEEP_LOGS=1 keeps every process's log for a post-mortem.
        let logs = tempfile::Builder::new()
            .prefix("osago-stack-")
            .disable_cleanup(std::env::var_os("OSAGO_KEEP_LOGS").is_some())
            .tempdir()
            .expect("log dir");
        println!("stack logs in {}", logs.path().display());
        let postgres = Postgres::start().await;
        let valkey = Valkey::start_with(ValkeyOptions {
            appendonly: true,
            ..ValkeyOptions::default()
        })
        .await;
        let valkey_cluster = if options.valkey_cluster {
            Some(osago_testkit::ValkeyCluster::start().await)
        } else {
            None
        };
        let state_url = valkey_cluster
            .as_ref()
            .map_or_else(|| valkey.url(), |c| c.url());
        // Clients reach the broker through a proxy (its advertised address),
        // so a test can cut them off while the broker keeps its data.
        let broker_port = free_port();
        let broker_proxy = Proxy::start(broker_port).await;
        let advertised = if options.broker_proxy {
            broker_proxy.port()
        } else {
            broker_port
        };
        let tansu = Tansu::start_behind_on(options.broker_storage, broker_port, advertised).await;
        let database = postgres.create_database("osago").await;

        let mut sims = BTreeMap::new();
        let mut proxies = BTreeMap::new();
        let mut specs = Vec::new();
        for insurer in &options.insurers {
            let port = free_port();
            let sim = Service::start(
                &format!("sim-{}", insurer.id),
                "insurer-sim",
                &[
                    "--listen".to_owned(),
                    format!("127.0.0.1:{port}"),
                    "--insurer-id".to_owned(),
                    insurer.id.to_owned(),
                    "--archetype".to_owned(),
                    insurer.archetype.as_str().to_owned(),
                    "--speed".to_owned(),
                    options.sim_speed.to_string(),
                    "--response-time".to_owned(),
                    options.sim_response_time.clone(),
                ],
                logs.path(),
            );
            let mut target = port;
            if insurer.proxied {
                let proxy = Proxy::start(port).await;
                target = proxy.port();
                proxies.insert(insurer.id.clone(), proxy);
            }
            specs.push(format!("{}=http://127.0.0.1:{target}/", insurer.id));
            sims.insert(insurer.id.clone(), (sim, port));
        }
        let deadline = format!("{}ms", options.deadline.as_millis());
        let bus = format!("kafka://{}", tansu.bootstrap());
        let mut aggregators = Vec::new();
        let instance = |name: String| {
            if options.static_membership {
                vec!["--instance-id".to_owned(), name]
            } else {
                Vec::new()
            }
        };
        for n in 0..2 {
            let port = free_port();
            aggregators.push(Restartable::start(
                &format!("aggregator-{n}"),
                "aggregator",
                (port, port),
                [
                    instance(format!("aggregator-{n}")),
                    vec![
                        "--listen".to_owned(),
                        format!("127.0.0.1:{port}"),
                        "--bus".to_owned(),
                        bus.clone(),
                        "--state".to_owned(),
                        state_url.clone(),
                        "--allow-plain-http".to_owned(),
                        "--insurer".to_owned(),
                        specs.join(","),
                        "--insurer-deadline".to_owned(),
                        deadline.clone(),
                        "--socket-timeout".to_owned(),
                        "2s".to_owned(),
                    ],
                    options.extra_args.clone(),
                    options.aggregator_args.clone(),
                ]
                .concat(),
                logs.path(),
            ));
        }
        let mut cores = Vec::new();
        for n in 0..options.cores {
            let port = free_port();
            let admin_port = free_port();
            cores.push(Restartable::start(
                &format!("core-app-{n}"),
                "core-app",
                (port, admin_port),
                [
                    instance(format!("core-app-{n}")),
                    vec![
                        "--listen".to_owned(),
                        format!("127.0.0.1:{port}"),
                        "--admin-listen".to_owned(),
                        format!("127.0.0.1:{admin_port}"),
                        "--bus".to_owned(),
                        bus.clone(),
                        "--database".to_owned(),
                        database.clone(),
                        "--request-deadline".to_owned(),
                        deadline.clone(),
                        "--heartbeat".to_owned(),
                        format!("{}ms", options.heartbeat.as_millis()),
                        "--rate-limit-per-minute".to_owned(),
                        "0".to_owned(),
                        // One access key for every core-app, as pods share
                        // it: a stream reconnecting to another core-app
                        // keeps its token.
                        "--access-keys".to_owned(),
                        "stack:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_owned(),
                        // Every test user comes from 127.0.0.1.
                        "--read-limit-per-second".to_owned(),
                        "0".to_owned(),
                        "--max-streams-per-client".to_owned(),
                        "0".to_owned(),
                        "--max-connections-per-client".to_owned(),
                        "0".to_owned(),
                        // One limiter for every core-app: admission (when
                        // set) counts the stack's requests, not a pod's.
                        "--rate-limit-store".to_owned(),
                        state_url.clone(),
                    ],
                    options.extra_args.clone(),
                    options.core_app_args.clone(),
                ]
                .concat(),
                logs.path(),
            ));
        }
        for service in aggregators.iter().chain(cores.iter()) {
            service.healthy().await;
        }
        // The broker forms the consumer groups in a few seconds: start the
        // load once every member has its partitions, so faults hit work in
        // flight rather than a group still forming.
        for service in aggregators.iter().chain(cores.iter()) {
            service.assigned().await;
        }
        Stack {
            logs,
            postgres,
            valkey,
            valkey_cluster,
            tansu,
            broker_proxy,
            database,
            sims,
            proxies,
            aggregators,
            cores,
            options,
        }
    }

    /// The insurer ids.
    pub fn insurer_ids(&self) -> Vec<&str> {
        self.options
            .insurers
            .iter()
            .map(|i| i.id.as_str())
            .collect()
    }

    /// Every service's log tail, for failure messages.
    pub fn tails(&self) -> String {
        let mut out = String::new();
        let broker = self.tansu.log();
        let lines: Vec<&str> = broker.lines().collect();
        out.push_str(&format!(
            "--- tansu\n{}\n",
            lines[lines.len().saturating_sub(40)..].join("\n")
        ));
        for service in self.aggregators.iter().chain(self.cores.iter()) {
            out.push_str(&format!("--- {}\n{}\n", service.name, service.tail()));
        }
        out
    }

    /// Checks the invariant once the load is over, and prints the summary:
    /// every request's every insurer reached exactly one final state in the
    /// read model; every SSE client saw each insurer's final state exactly
    /// once; no insurer got two applications for one (request, insurer).
    pub async fn verdict(&self, fault: &str, load: Load) -> Verdict {
        let records = load
            .finish(self.options.deadline + Duration::from_secs(50))
            .await;
        let insurers = self.insurer_ids();
        let pool = sqlx::PgPool::connect(&self.database)
            .await
            .expect("database");
        // The read model follows the streams on its own: give it a moment.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let finals_in_read_model = loop {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT request_id::text, insurer_id FROM osago_offers WHERE status <> 'pending'",
            )
            .fetch_all(&pool)
            .await
            .expect("read model");
            let by_request: BTreeMap<String, usize> =
                rows.iter().fold(BTreeMap::new(), |mut map, (id, _)| {
                    *map.entry(id.clone()).or_default() += 1;
                    map
                });
            let finals = records
                .iter()
                .map(|r| by_request.get(&r.request_id).copied().unwrap_or(0))
                .sum::<usize>();
            if finals == records.len() * insurers.len() || tokio::time::Instant::now() > deadline {
                for record in &records {
                    let seen = by_request.get(&record.request_id).copied().unwrap_or(0);
                    if seen < insurers.len() {
                        println!(
                            "incomplete in the read model: {} ({seen}/{}), client saw {:?}",
                            record.request_id,
                            insurers.len(),
                            record.finals
                        );
                    }
                }
                break finals;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let expected = records.len() * insurers.len();
        let shown_twice = records
            .iter()
            .flat_map(|r| r.finals.values())
            .filter(|n| **n > 1)
            .count();
        let not_shown = records
            .iter()
            .map(|r| {
                insurers
                    .iter()
                    .filter(|i| r.finals.get(**i).copied().unwrap_or(0) == 0)
                    .count()
            })
            .sum::<usize>();
        // A hanging insurer hangs its `/stats` too: bounded.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let mut second_applications = 0u64;
        let mut re_posts = 0u64;
        let mut stats_unread = Vec::new();
        for (id, (_, port)) in &self.sims {
            let read = async {
                let response = http
                    .get(format!("http://127.0.0.1:{port}/stats"))
                    .send()
                    .await
                    .ok()?;
                let stats = response.json::<Value>().await.ok()?;
                Some((stats["applications"].as_u64()?, stats["replays"].as_u64()?))
            };
            match read.await {
                Some((applications, replays)) => {
                    second_applications += applications.saturating_sub(records.len() as u64);
                    re_posts += replays;
                }
                // Every insurer must account for its applications (the
                // hang archetype answers `/stats` too).
                None => stats_unread.push(id.clone()),
            }
        }
        let _ = std::fs::write(self.logs.path().join("tansu.log"), self.tansu.log());
        let verdict = Verdict {
            fault: fault.to_owned(),
            requests: records.len(),
            expected,
            delivered: finals_in_read_model,
            lost: expected.saturating_sub(finals_in_read_model),
            not_shown,
            shown_twice,
            second_applications,
            stats_unread,
            re_posts,
            reconnects: records.iter().map(|r| r.reconnects).sum(),
        };
        println!("{verdict}");
        verdict
    }
}

/// What one fault did, against the invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The fault.
    pub fault: String,
    /// Requests sent.
    pub requests: usize,
    /// Final states expected (requests x insurers).
    pub expected: usize,
    /// Final states in the read model.
    pub delivered: usize,
    /// Expected but missing from the read model (must be 0).
    pub lost: usize,
    /// Final states an SSE client never saw (must be 0).
    pub not_shown: usize,
    /// (request, insurer) final states a client saw more than once (must be 0).
    pub shown_twice: usize,
    /// Applications beyond one per (request, insurer) (must be 0).
    pub second_applications: u64,
    /// Insurers whose application counts could not be read (must be none:
    /// an unread count would hide second applications).
    pub stats_unread: Vec<String>,
    /// POSTs answered with an existing application (same Idempotency-Key).
    pub re_posts: u64,
    /// SSE reconnections made by the clients.
    pub reconnects: u32,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FAULT {:<28} requests {:>3}  final states {:>4}/{:<4} lost {}  not shown {}  shown twice {}  second applications {}  stats unread {:?}  (re-POSTs {}, SSE reconnects {})",
            self.fault,
            self.requests,
            self.delivered,
            self.expected,
            self.lost,
            self.not_shown,
            self.shown_twice,
            self.second_applications,
            self.stats_unread,
            self.re_posts,
            self.reconnects
        )
    }
}

impl Verdict {
    /// Panics unless nothing was lost, shown twice or applied for twice.
    pub fn assert_clean(&self, context: impl FnOnce() -> String) {
        let clean = self.lost == 0
            && self.not_shown == 0
            && self.shown_twice == 0
            && self.second_applications == 0
            && self.stats_unread.is_empty();
        assert!(clean, "{self}\n{}", context());
    }
}

/// What one client saw of one request.
#[derive(Debug, Clone, Default)]
pub struct RequestRecord {
    /// The request.
    pub request_id: String,
    /// Final events seen per insurer.
    pub finals: BTreeMap<String, u32>,
    /// The stream ended with `done` or `timeout`.
    pub ended: bool,
    /// Reconnections.
    pub reconnects: u32,
}

/// Requests sent at a steady pace, each followed by an SSE client.
#[derive(Debug)]
pub struct Load {
    clients: Vec<tokio::task::JoinHandle<RequestRecord>>,
    sender: tokio::task::JoinHandle<()>,
    spawned: Arc<Mutex<Vec<tokio::task::JoinHandle<RequestRecord>>>>,
}

impl Load {
    /// Sends `n` requests, one every `every`, alternating between the
    /// core-apps at `bases` (all of them are tried when one is down).
    pub fn start(bases: Vec<String>, n: usize, every: Duration, give_up: Duration) -> Load {
        let spawned: Arc<Mutex<Vec<tokio::task::JoinHandle<RequestRecord>>>> = Arc::default();
        let out = spawned.clone();
        let sender = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client");
            let mut tick = tokio::time::interval(every);
            for i in 0..n {
                tick.tick().await;
                let created = post_anywhere(&http, &bases, i).await;
                let bases = bases.clone();
                out.lock()
                    .unwrap()
                    .push(tokio::spawn(follow(bases, i, created, give_up)));
            }
        });
        Load {
            clients: Vec::new(),
            sender,
            spawned,
        }
    }

    /// Waits for every client (each at most `limit`).
    pub async fn finish(mut self, limit: Duration) -> Vec<RequestRecord> {
        (&mut self.sender).await.expect("sender");
        self.clients
            .extend(std::mem::take(&mut *self.spawned.lock().unwrap()));
        let mut records = Vec::new();
        for client in self.clients {
            match tokio::time::timeout(limit, client).await {
                Ok(Ok(record)) => records.push(record),
                Ok(Err(err)) => panic!("client failed: {err}"),
                Err(_) => panic!("a client did not end within {limit:?}"),
            }
        }
        records
    }
}

/// POSTs the sample request to the `i`-th core-app, falling over to the
/// others; returns (request id, stream path, access token).
async fn post_anywhere(
    http: &reqwest::Client,
    bases: &[String],
    i: usize,
) -> (String, String, String) {
    for attempt in 0..40 {
        let base = &bases[(i + attempt) % bases.len()];
        if let Ok(response) = http
            .post(format!("{base}/api/osago/requests"))
            .json(&sample_json())
            .send()
            .await
        {
            if response.status() == 202 {
                let created: Value = response.json().await.expect("created");
                return (
                    created["request_id"].as_str().expect("id").to_owned(),
                    created["stream_url"].as_str().expect("stream").to_owned(),
                    created["access_token"].as_str().expect("token").to_owned(),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("no core-app accepted a request");
}

/// Follows one request's stream like EventSource: on a broken stream it
/// reconnects (to the next core-app) with `Last-Event-ID`.
async fn follow(
    bases: Vec<String>,
    i: usize,
    (request_id, path, token): (String, String, String),
    give_up: Duration,
) -> RequestRecord {
    let http = reqwest::Client::new();
    let mut record = RequestRecord {
        request_id,
        ..RequestRecord::default()
    };
    let mut last_id: Option<String> = None;
    let mut attempt = 0usize;
    let give_up = tokio::time::Instant::now() + give_up;
    while !record.ended && tokio::time::Instant::now() < give_up {
        let base = &bases[(i + attempt) % bases.len()];
        let mut request = http.get(format!("{base}{path}")).bearer_auth(&token);
        if let Some(id) = &last_id {
            request = request.header("Last-Event-ID", id);
        }
        let left = give_up.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, request.send()).await {
            Ok(Ok(response)) if response.status() == 200 => {
                let mut buffer = String::new();
                let mut chunks = response.bytes_stream();
                while let Ok(Some(chunk)) = tokio::time::timeout(
                    give_up.saturating_duration_since(tokio::time::Instant::now()),
                    chunks.next(),
                )
                .await
                {
                    let Ok(chunk) = chunk else { break };
                    buffer.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = buffer.find("\n\n") {
                        let block: String = buffer.drain(..end + 2).collect();
                        for event in parse_sse(&block) {
                            if let Some(id) = &event.id {
                                last_id = Some(id.clone());
                            }
                            match event.event.as_str() {
                                "insurer" => {
                                    let row = event.json();
                                    if row["status"] != "pending" {
                                        let insurer = row["insurer_id"].as_str().unwrap_or("?");
                                        *record.finals.entry(insurer.to_owned()).or_default() += 1;
                                    }
                                }
                                "done" | "timeout" => record.ended = true,
                                _ => {}
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        if !record.ended {
            attempt += 1;
            record.reconnects += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    record
}
