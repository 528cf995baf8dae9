//! The load generator: N virtual users, each POSTs the sample quote request
//! and holds its SSE stream until `done` or `timeout`, as a browser does.
//!
//! Per user it records the time to the first quote, the time to the end of
//! the stream, the events received and any error. Per quote row it records,
//! on this machine's one clock:
//!
//! - **end-to-end lag**: the quote ready at the insurer (`quote.ready_at`,
//!   stamped by the simulated insurer) -> the SSE event received here;
//! - **pipeline latency**: the aggregator saw it (the event's
//!   `occurred_at`) -> received here, for rows that happened while the
//!   stream was open (a row from the snapshot a stream starts with waited
//!   for the client, not in the pipeline);
//! - **detection lag**: ready at the insurer -> seen by the aggregator.
//!
//! Users start at `ramp_per_sec` (a burst: every user once), or, with
//! [`Arrivals`], as open Poisson arrivals at a steady rate for a while, the
//! sessions of a warm-up not counted (the steady peak: with sessions of
//! about the deadline, `rate x deadline` users hold a stream at any time);
//! they connect from the `source_ips` in turn
//! (several 127.0.0.x addresses spread connections past one address's
//! ephemeral ports) to the `targets` in turn (several core-apps).

pub mod fanout;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// core-app base URLs (`http://127.0.0.1:8080`), used in turn.
    pub targets: Vec<String>,
    /// Virtual users.
    pub users: usize,
    /// Users started per second.
    pub ramp_per_sec: f64,
    /// Local addresses to connect from, in turn (empty: the default).
    pub source_ips: Vec<IpAddr>,
    /// How long one user waits for its stream to end.
    pub timeout: Duration,
    /// The request body (the sample request).
    pub request: serde_json::Value,
    /// Open arrivals instead of the burst of `users`.
    pub arrivals: Option<Arrivals>,
}

/// Open (Poisson) arrivals: sessions start at exponentially distributed
/// gaps of mean `1 / rate`, for `duration`; those started in the first
/// `warm_up` run but are not reported.
#[derive(Debug, Clone, Copy)]
pub struct Arrivals {
    /// Sessions started per second, on average.
    pub rate: f64,
    /// How long sessions keep arriving.
    pub duration: Duration,
    /// Sessions started before this are not counted.
    pub warm_up: Duration,
}

/// What one user saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserRecord {
    /// POST to the first quote row, if any.
    pub first_quote: Option<Duration>,
    /// POST to the end of the stream (`done` or `timeout`), if it ended.
    pub done: Option<Duration>,
    /// SSE events received (heartbeats excluded).
    pub events: u32,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// End-to-end lags of its quotes.
    pub end_to_end: Vec<Duration>,
    /// Pipeline latencies of its rows.
    pub pipeline: Vec<Duration>,
    /// Detection lags of its quotes.
    pub detection: Vec<Duration>,
    /// POST sent -> the aggregator started the fan-out (the earliest
    /// `occurred_at` of its rows): the request path through the outbox,
    /// the broker and the aggregator's consumer.
    #[serde(default)]
    pub request_path: Option<Duration>,
    /// POST sent -> refused with 503 or 429 and `Retry-After` (admission
    /// control turning the user away at once: not an error).
    #[serde(default)]
    pub refused: Option<Duration>,
    /// The earliest `occurred_at` seen so far.
    #[serde(skip)]
    first_occurred: Option<DateTime<Utc>>,
}

/// The run, summarised.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Users started.
    pub users: usize,
    /// Users with an error (POST failed or refused without `Retry-After`,
    /// stream refused or broken, no end in time): admitted users dropped.
    pub errors: usize,
    /// Streams that ended with `done`/`timeout`.
    pub completed: usize,
    /// Quote rows received.
    pub quotes: usize,
    /// SSE events received.
    pub events: u64,
    /// Percentiles, milliseconds: (p50, p99).
    pub first_quote_ms: (f64, f64),
    /// POST to end of stream.
    pub done_ms: (f64, f64),
    /// Ready at the insurer -> received here.
    pub end_to_end_ms: (f64, f64),
    /// Aggregator saw it -> received here.
    pub pipeline_ms: (f64, f64),
    /// Ready at the insurer -> aggregator saw it.
    pub detection_ms: (f64, f64),
    /// POST sent -> fan-out started.
    #[serde(default)]
    pub request_path_ms: (f64, f64),
    /// Users refused at once with 503/429 and `Retry-After`.
    #[serde(default)]
    pub refused: usize,
    /// POST sent -> refusal received.
    #[serde(default)]
    pub refusal_ms: (f64, f64),
    /// Wall time of the run.
    pub seconds: f64,
    /// The first few distinct errors.
    pub sample_errors: Vec<String>,
    /// Server processes watched over the run.
    #[serde(default)]
    pub processes: Vec<ProcessUsage>,
}

/// What one watched server process used over a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessUsage {
    /// Its role (`core-app-0`, `tansu`, ...).
    pub name: String,
    /// Peak resident set (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// CPU time (user + system) spent during the run, seconds.
    pub cpu_seconds: f64,
}

/// Peak RSS (KiB) and CPU seconds so far of a process, from /proc.
pub fn proc_usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((hwm, proc_cpu(pid)?))
}

/// CPU seconds (user + system) so far of a process, from /proc.
pub fn proc_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), 12 and 13 after ')'.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn percentiles(mut values: Vec<Duration>) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    values.sort();
    let at = |p: f64| {
        let i = ((values.len() - 1) as f64 * p).round() as usize;
        values[i].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.99))
}

impl Report {
    /// Summarises user records.
    pub fn of(records: &[UserRecord], seconds: f64) -> Report {
        let flat = |f: fn(&UserRecord) -> &Vec<Duration>| {
            records
                .iter()
                .flat_map(|r| f(r).iter().copied())
                .collect::<Vec<_>>()
        };
        let mut sample_errors: Vec<String> = Vec::new();
        for error in records.iter().filter_map(|r| r.error.clone()) {
            if sample_errors.len() < 5 && !sample_errors.contains(&error) {
                sample_errors.push(error);
            }
        }
        Report {
            users: records.len(),
            errors: records.iter().filter(|r| r.error.is_some()).count(),
            completed: records.iter().filter(|r| r.done.is_some()).count(),
            quotes: records.iter().map(|r| r.end_to_end.len()).sum(),
            events: records.iter().map(|r| u64::from(r.events)).sum(),
            first_quote_ms: percentiles(records.iter().filter_map(|r| r.first_quote).collect()),
            done_ms: percentiles(records.iter().filter_map(|r| r.done).collect()),
            end_to_end_ms: percentiles(flat(|r| &r.end_to_end)),
            pipeline_ms: percentiles(flat(|r| &r.pipeline)),
            detection_ms: percentiles(flat(|r| &r.detection)),
            request_path_ms: percentiles(records.iter().filter_map(|r| r.request_path).collect()),
            refused: records.iter().filter(|r| r.refused.is_some()).count(),
            refusal_ms: percentiles(records.iter().filter_map(|r| r.refused).collect()),
            seconds,
            sample_errors,
            processes: Vec::new(),
        }
    }

    /// Merges the reports of several generator processes (percentiles are
    /// taken as the worst of the parts: an upper bound).
    pub fn merge(parts: &[Report]) -> Report {
        let worst = |f: fn(&Report) -> (f64, f64)| {
            parts
                .iter()
                .map(f)
                .fold((0.0f64, 0.0f64), |a, b| (a.0.max(b.0), a.1.max(b.1)))
        };
        Report {
            users: parts.iter().map(|p| p.users).sum(),
            errors: parts.iter().map(|p| p.errors).sum(),
            completed: parts.iter().map(|p| p.completed).sum(),
            quotes: parts.iter().map(|p| p.quotes).sum(),
            events: parts.iter().map(|p| p.events).sum(),
            first_quote_ms: worst(|p| p.first_quote_ms),
            done_ms: worst(|p| p.done_ms),
            end_to_end_ms: worst(|p| p.end_to_end_ms),
            pipeline_ms: worst(|p| p.pipeline_ms),
            detection_ms: worst(|p| p.detection_ms),
            request_path_ms: worst(|p| p.request_path_ms),
            refused: parts.iter().map(|p| p.refused).sum(),
            refusal_ms: worst(|p| p.refusal_ms),
            seconds: parts.iter().map(|p| p.seconds).fold(0.0, f64::max),
            sample_errors: parts.iter().flat_map(|p| p.sample_errors.iter()).fold(
                Vec::new(),
                |mut seen: Vec<String>, error| {
                    if seen.len() < 5 && !seen.contains(error) {
                        seen.push(error.clone());
                    }
                    seen
                },
            ),
            processes: Vec::new(),
        }
    }
}

/// Runs the load; returns every (counted) user's record.
pub async fn run(config: LoadConfig) -> Vec<UserRecord> {
    if let Some(arrivals) = config.arrivals {
        return run_open(&config, arrivals).await;
    }
    let clients = clients(&config.source_ips);
    let interval = Duration::from_secs_f64(1.0 / config.ramp_per_sec.max(0.001));
    let started = tokio::time::Instant::now();
    let mut users = Vec::with_capacity(config.users);
    for i in 0..config.users {
        tokio::time::sleep_until(started + interval.mul_f64(i as f64)).await;
        let http = clients[i % clients.len()].clone();
        let base = config.targets[i % config.targets.len()].clone();
        let body = config.request.clone();
        let timeout = config.timeout;
        users.push(tokio::spawn(async move {
            user(http, base, body, timeout).await
        }));
    }
    let mut records = Vec::with_capacity(users.len());
    for user in users {
        records.push(user.await.unwrap_or_else(|e| UserRecord {
            error: Some(format!("user task failed: {e}")),
            ..UserRecord::default()
        }));
    }
    records
}

/// Open arrivals: a session starts after every exponential gap until
/// `duration`; the sessions started after the warm-up are reported.
async fn run_open(config: &LoadConfig, arrivals: Arrivals) -> Vec<UserRecord> {
    use rand::Rng;
    let clients = clients(&config.source_ips);
    let started = tokio::time::Instant::now();
    let end = started + arrivals.duration;
    let mut rng = rand::rng();
    let mut at = started;
    let mut sessions = Vec::new();
    let mut i = 0usize;
    loop {
        let unit: f64 = rng.random();
        at += Duration::from_secs_f64(-(1.0 - unit).ln() / arrivals.rate.max(0.001));
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at).await;
        let counted = at >= started + arrivals.warm_up;
        let http = clients[i % clients.len()].clone();
        let base = config.targets[i % config.targets.len()].clone();
        let body = config.request.clone();
        let timeout = config.timeout;
        i += 1;
        sessions.push((
            counted,
            tokio::spawn(async move { user(http, base, body, timeout).await }),
        ));
    }
    let mut records = Vec::new();
    for (counted, session) in sessions {
        let record = session.await.unwrap_or_else(|e| UserRecord {
            error: Some(format!("user task failed: {e}")),
            ..UserRecord::default()
        });
        if counted {
            records.push(record);
        }
    }
    records
}

/// One HTTP client per source address (one on the default address when
/// none is given); users take them in turn.
fn clients(source_ips: &[IpAddr]) -> Vec<reqwest::Client> {
    if source_ips.is_empty() {
        vec![client(None)]
    } else {
        source_ips.iter().map(|ip| client(Some(*ip))).collect()
    }
}

fn client(source: Option<IpAddr>) -> reqwest::Client {
    client_builder(source).build().expect("http client")
}

fn client_builder(source: Option<IpAddr>) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .local_address(source)
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
}

/// A client that speaks HTTP/2 without TLS from its first byte (h2c with
/// prior knowledge, as an ingress or mesh proxy talks to a pod): one
/// connection, every request of the client a stream on it.
fn h2_client(source: Option<IpAddr>) -> reqwest::Client {
    client_builder(source)
        .http2_prior_knowledge()
        .build()
        .expect("http/2 client")
}

/// One virtual user.
async fn user(
    http: reqwest::Client,
    base: String,
    body: serde_json::Value,
    timeout: Duration,
) -> UserRecord {
    let mut record = UserRecord::default();
    let posted = Instant::now();
    let posted_at = Utc::now();
    let outcome = tokio::time::timeout(timeout, async {
        let response = http
            .post(format!("{base}/api/osago/requests"))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("post: {}", kind_of(&e)))?;
        let status = response.status().as_u16();
        if matches!(status, 429 | 503) && response.headers().contains_key("retry-after") {
            return Ok(Some(posted.elapsed()));
        }
        if status != 202 {
            return Err(format!("post: HTTP {status}"));
        }
        let created: serde_json::Value = response
            .json()
            .await
            .map_err(|e| format!("post body: {}", kind_of(&e)))?;
        let stream_url = created["stream_url"]
            .as_str()
            .ok_or_else(|| "post body: no stream_url".to_owned())?;
        let token = created["access_token"]
            .as_str()
            .ok_or_else(|| "post body: no access_token".to_owned())?;
        let stream = http
            .get(format!("{base}{stream_url}"))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| format!("stream: {}", kind_of(&e)))?;
        if stream.status() != 200 {
            return Err(format!("stream: HTTP {}", stream.status().as_u16()));
        }
        let opened = Utc::now();
        read_stream(stream, posted, opened, &mut record).await?;
        Ok(None)
    })
    .await;
    record.request_path = record
        .first_occurred
        .take()
        .and_then(|first| since(first, posted_at));
    match outcome {
        Ok(Ok(refused)) => record.refused = refused,
        Ok(Err(error)) => record.error = Some(error),
        Err(_) => record.error = Some("no end of stream in time".to_owned()),
    }
    record
}

fn kind_of(error: &reqwest::Error) -> &'static str {
    if error.is_connect() {
        "connect"
    } else if error.is_timeout() {
        "timeout"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "request"
    }
}

async fn read_stream(
    response: reqwest::Response,
    posted: Instant,
    opened: DateTime<Utc>,
    record: &mut UserRecord,
) -> Result<(), String> {
    let mut chunks = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| format!("stream: {}", kind_of(&e)))?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let received = Utc::now();
            let (event, data) = parse_block(&block);
            match event.as_deref() {
                Some("insurer") => {
                    record.events += 1;
                    observe_row(&data, received, opened, posted, record);
                }
                Some("done") | Some("timeout") => {
                    record.events += 1;
                    record.done = Some(posted.elapsed());
                    return Ok(());
                }
                Some("heartbeat") | None => {}
                Some(_) => record.events += 1,
            }
        }
    }
    Err("stream: ended before done".to_owned())
}

fn parse_block(block: &str) -> (Option<String>, String) {
    let mut event = None;
    let mut data = Vec::new();
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            event = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    (event, data.join("\n"))
}

fn since(later: DateTime<Utc>, earlier: DateTime<Utc>) -> Option<Duration> {
    (later - earlier).to_std().ok()
}

fn observe_row(
    data: &str,
    received: DateTime<Utc>,
    opened: DateTime<Utc>,
    posted: Instant,
    record: &mut UserRecord,
) {
    let Ok(row) = serde_json::from_str::<serde_json::Value>(data) else {
        return;
    };
    let occurred = row["occurred_at"]
        .as_str()
        .and_then(|s| s.parse::<DateTime<Utc>>().ok());
    if let Some(occurred) = occurred {
        record.first_occurred = Some(record.first_occurred.map_or(occurred, |f| f.min(occurred)));
    }
    if let Some(occurred) = occurred.filter(|occurred| *occurred >= opened) {
        record.pipeline.extend(since(received, occurred));
    }
    if row["status"] != "quoted" {
        return;
    }
    if record.first_quote.is_none() {
        record.first_quote = Some(posted.elapsed());
    }
    let ready = row["quote"]["ready_at"]
        .as_str()
        .and_then(|s| s.parse::<DateTime<Utc>>().ok());
    if let Some(ready) = ready {
        record.end_to_end.extend(since(received, ready));
        if let Some(occurred) = occurred {
            record.detection.extend(since(occurred, ready));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_give_the_three_lags_on_one_clock() {
        let mut record = UserRecord::default();
        let received: DateTime<Utc> = "2026-11-26T12:00:01.000Z".parse().unwrap();
        let data = r#"{"status":"quoted","occurred_at":"2026-11-26T12:00:00.990Z","quote":{"ready_at":"2026-11-26T12:00:00.700Z"}}"#;
        let opened: DateTime<Utc> = "2026-11-26T12:00:00.500Z".parse().unwrap();
        observe_row(data, received, opened, Instant::now(), &mut record);
        assert_eq!(record.end_to_end, [Duration::from_millis(300)]);
        assert_eq!(record.pipeline, [Duration::from_millis(10)]);
        assert_eq!(record.detection, [Duration::from_millis(290)]);
        assert!(record.first_quote.is_some());
    }

    #[test]
    fn a_snapshot_row_has_no_pipeline_latency() {
        let mut record = UserRecord::default();
        let received: DateTime<Utc> = "2026-11-26T12:00:01.000Z".parse().unwrap();
        let opened: DateTime<Utc> = "2026-11-26T12:00:00.995Z".parse().unwrap();
        let data = r#"{"status":"quoted","occurred_at":"2026-11-26T12:00:00.990Z","quote":{"ready_at":"2026-11-26T12:00:00.700Z"}}"#;
        observe_row(data, received, opened, Instant::now(), &mut record);
        assert!(record.pipeline.is_empty());
        assert_eq!(record.end_to_end, [Duration::from_millis(300)]);
        assert_eq!(record.detection, [Duration::from_millis(290)]);
    }

    #[test]
    fn percentiles_and_merge() {
        let records: Vec<UserRecord> = (1..=100)
            .map(|ms| UserRecord {
                done: Some(Duration::from_millis(ms)),
                ..UserRecord::default()
            })
            .collect();
        let report = Report::of(&records, 1.0);
        assert_eq!(report.done_ms, (51.0, 99.0));
        let merged = Report::merge(&[report.clone(), report]);
        assert_eq!(merged.users, 200);
        assert_eq!(merged.done_ms, (51.0, 99.0));
    }
}
