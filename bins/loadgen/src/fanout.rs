//! SSE delivery, one publisher to many subscribers: N subscribers hold one
//! stream URL each (the same URL or not), and every event whose `data` is
//! JSON with an `occurred_at` stamp gives one delivery lag (stamp ->
//! received here, on this machine's one clock). Works against any SSE
//! server: core-app's request stream, or nginx + nchan's EventSource
//! subscriber, for a comparison in the same run.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::parse_block;

/// What to run.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// The stream URL every subscriber opens.
    pub url: String,
    /// The stream's access token (`Authorization: Bearer`), if it needs one.
    pub token: Option<String>,
    /// Subscribers.
    pub subscribers: usize,
    /// Subscribers connected per second.
    pub connect_per_sec: f64,
    /// Local addresses to connect from, in turn (empty: the default).
    pub source_ips: Vec<IpAddr>,
    /// Stamped events each subscriber waits for before it hangs up.
    pub events: usize,
    /// How long a subscriber waits for them, from its start.
    pub timeout: Duration,
    /// A URL each subscriber gets (and reads to its end) before it opens
    /// its stream, so that the stream is asked for on a kept-alive
    /// connection, as behind a proxy that pools its connections.
    pub first: Option<String>,
    /// When not 0: streams over HTTP/2 (h2c, prior knowledge), this many
    /// on each connection.
    pub h2_streams_per_connection: usize,
}

/// What the subscribers saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FanoutReport {
    /// Subscribers started.
    pub subscribers: usize,
    /// Subscribers whose stream opened (status 200).
    pub connected: usize,
    /// Subscribers that got every event.
    pub complete: usize,
    /// Subscribers that failed (refused, broken, or short of events in time).
    pub errors: usize,
    /// Every delivery lag, microseconds ([`MISSED`] for an event never got).
    pub lags_us: Vec<u64>,
    /// The first few distinct errors.
    pub sample_errors: Vec<String>,
}

impl FanoutReport {
    /// Merges the reports of several subscriber processes.
    pub fn merge(parts: Vec<FanoutReport>) -> FanoutReport {
        let mut merged = FanoutReport::default();
        for part in parts {
            merged.subscribers += part.subscribers;
            merged.connected += part.connected;
            merged.complete += part.complete;
            merged.errors += part.errors;
            merged.lags_us.extend(part.lags_us);
            for error in part.sample_errors {
                if merged.sample_errors.len() < 5 && !merged.sample_errors.contains(&error) {
                    merged.sample_errors.push(error);
                }
            }
        }
        merged
    }

    /// Delivery lag percentile `p` (0..=1), milliseconds: infinite where
    /// the rank falls on an event a subscriber never got ([`MISSED`]), NaN
    /// when there is no sample at all, so a run that lost events never
    /// reads better than one that delivered them late.
    pub fn lag_ms(&self, p: f64) -> f64 {
        if self.lags_us.is_empty() {
            return f64::NAN;
        }
        let mut lags = self.lags_us.clone();
        lags.sort_unstable();
        match nearest_rank(&lags, p) {
            MISSED => f64::INFINITY,
            lag => lag as f64 / 1000.0,
        }
    }
}

/// The lag kept for an event a subscriber never got (it failed or timed
/// out first): later than any delivery.
pub const MISSED: u64 = u64::MAX;

/// The value at quantile `p` (0..=1) of `sorted`, which is not empty.
fn nearest_rank(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Opens every subscriber's stream; calls `connected` with the number of
/// open streams once every subscriber has either opened its stream or
/// failed; returns when each has its events, failed, or timed out.
pub async fn subscribe(config: FanoutConfig, connected: impl FnOnce(usize)) -> FanoutReport {
    let per_connection = config.h2_streams_per_connection;
    let clients = if per_connection == 0 {
        crate::clients(&config.source_ips)
    } else {
        // One client per connection: a client multiplexes all its
        // requests on one, and past the server's stream limit it would
        // queue them instead of opening another.
        let sources: Vec<Option<IpAddr>> = if config.source_ips.is_empty() {
            vec![None]
        } else {
            config.source_ips.iter().copied().map(Some).collect()
        };
        (0..config.subscribers.div_ceil(per_connection))
            .map(|c| crate::h2_client(sources[c % sources.len()]))
            .collect()
    };
    let settled = Arc::new(AtomicUsize::new(0));
    let opened = Arc::new(AtomicUsize::new(0));
    let wake = Arc::new(Notify::new());
    let interval = Duration::from_secs_f64(1.0 / config.connect_per_sec.max(0.001));
    let started = tokio::time::Instant::now();
    // Streams stay open until every subscriber here is done, and a while
    // after: a subscriber hanging up the moment it has its last event
    // made the server tear connections down while it was still writing
    // that event to the others, and the last event's tail (and with it
    // the run's p99) measured the teardown.
    let (all_done, done_rx) = tokio::sync::watch::channel(false);
    let all_done = Arc::new(all_done);
    let finished = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(config.subscribers);
    for i in 0..config.subscribers {
        tokio::time::sleep_until(started + interval.mul_f64(i as f64)).await;
        // HTTP/1.1: the clients in turn; HTTP/2: `per_connection` in a row.
        let http = match i.checked_div(per_connection) {
            None => clients[i % clients.len()].clone(),
            Some(c) => clients[c].clone(),
        };
        let (url, events, timeout) = (config.url.clone(), config.events, config.timeout);
        let first = config.first.clone();
        let token = config.token.clone();
        let (settled, opened, wake) = (settled.clone(), opened.clone(), wake.clone());
        let (all_done, mut done_rx, finished) =
            (all_done.clone(), done_rx.clone(), finished.clone());
        let subscribers = config.subscribers;
        tasks.push(tokio::spawn(async move {
            let mut lags = Vec::with_capacity(events);
            let mut settle = Some(move |open: bool| {
                if open {
                    opened.fetch_add(1, Ordering::SeqCst);
                }
                settled.fetch_add(1, Ordering::SeqCst);
                wake.notify_one();
            });
            let outcome = tokio::time::timeout(
                timeout,
                one_subscriber(
                    &http,
                    first.as_deref(),
                    &url,
                    token.as_deref(),
                    events,
                    &mut lags,
                    &mut settle,
                ),
            )
            .await
            .unwrap_or_else(|_| Err("short of events in time".to_owned()));
            if let Some(settle) = settle.take() {
                settle(false);
            }
            if finished.fetch_add(1, Ordering::SeqCst) + 1 == subscribers {
                let _ = all_done.send(true);
            }
            let outcome = match outcome {
                Ok(stream) => {
                    let _ = done_rx.wait_for(|done| *done).await;
                    tokio::time::sleep(LINGER).await;
                    drop(stream);
                    Ok(())
                }
                Err(error) => Err(error),
            };
            (lags, outcome)
        }));
    }
    while settled.load(Ordering::SeqCst) < config.subscribers {
        wake.notified().await;
    }
    connected(opened.load(Ordering::SeqCst));

    let mut report = FanoutReport {
        subscribers: config.subscribers,
        connected: opened.load(Ordering::SeqCst),
        ..FanoutReport::default()
    };
    // Each subscriber's lags are in the order of its events.
    let mut by_event: Vec<Vec<u64>> = vec![Vec::new(); config.events];
    for task in tasks {
        let (mut lags, outcome) = task
            .await
            .unwrap_or_else(|e| (Vec::new(), Err(format!("subscriber failed: {e}"))));
        // Events it never got count as missed, not as absent: latest of all.
        lags.resize(lags.len().max(config.events), MISSED);
        for (lag, of_event) in lags.iter().zip(by_event.iter_mut()) {
            of_event.push(*lag);
        }
        report.lags_us.extend(lags);
        match outcome {
            Ok(()) => report.complete += 1,
            Err(error) => {
                report.errors += 1;
                if report.sample_errors.len() < 5 && !report.sample_errors.contains(&error) {
                    report.sample_errors.push(error);
                }
            }
        }
    }
    // A p99 that grows from event to event is a backlog (the server, or
    // this generator, slower than the events), one that stays is latency.
    let p99s: Vec<String> = by_event
        .iter_mut()
        .filter(|lags| !lags.is_empty())
        .map(|lags| {
            lags.sort_unstable();
            match nearest_rank(lags, 0.99) {
                MISSED => "missed".to_owned(),
                lag => (lag / 1000).to_string(),
            }
        })
        .collect();
    if !p99s.is_empty() {
        eprintln!(
            "loadgen subscribe: delivery p99 by event, ms: {}",
            p99s.join(" ")
        );
    }
    report
}

/// How long streams stay open after every subscriber of this process has
/// its events: long enough for another generator process's subscribers to
/// get the last event before these hang up.
const LINGER: Duration = Duration::from_secs(2);

/// An open stream, held until it may be dropped.
type Held = Box<dyn Send>;

async fn one_subscriber(
    http: &reqwest::Client,
    first: Option<&str>,
    url: &str,
    token: Option<&str>,
    events: usize,
    lags: &mut Vec<u64>,
    settle: &mut Option<impl FnOnce(bool)>,
) -> Result<Held, String> {
    if let Some(first) = first {
        // Read to its end, the connection goes back to the client's pool,
        // where the stream's request finds it.
        http.get(first)
            .send()
            .await
            .and_then(|response| response.error_for_status())
            .map_err(|e| format!("first request: {}", crate::kind_of(&e)))?
            .bytes()
            .await
            .map_err(|e| format!("first request: {}", crate::kind_of(&e)))?;
    }
    let mut request = http.get(url).header("accept", "text/event-stream");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("stream: {}", crate::kind_of(&e)))?;
    if response.status() != 200 {
        return Err(format!("stream: HTTP {}", response.status().as_u16()));
    }
    if let Some(settle) = settle.take() {
        settle(true);
    }
    let mut chunks = response.bytes_stream();
    let mut buffer = String::new();
    while lags.len() < events {
        let Some(chunk) = chunks.next().await else {
            return Err("stream: ended early".to_owned());
        };
        let chunk = chunk.map_err(|e| format!("stream: {}", crate::kind_of(&e)))?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let received = Utc::now();
            let (_, data) = parse_block(&block);
            if let Some(lag) = stamp_lag(&data, received) {
                lags.push(lag);
            }
        }
    }
    Ok(Box::new(chunks))
}

/// The lag of an event whose data is JSON with an `occurred_at` stamp.
fn stamp_lag(data: &str, received: DateTime<Utc>) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_str(data).ok()?;
    let occurred: DateTime<Utc> = value["occurred_at"].as_str()?.parse().ok()?;
    let lag = (received - occurred).to_std().unwrap_or(Duration::ZERO);
    Some(
        u64::try_from(lag.as_micros())
            .unwrap_or(MISSED)
            .min(MISSED - 1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stamped_events_count() {
        let received: DateTime<Utc> = "2026-11-26T12:00:01.000Z".parse().unwrap();
        assert_eq!(
            stamp_lag(r#"{"occurred_at":"2026-11-26T12:00:00.998Z"}"#, received),
            Some(2_000)
        );
        assert_eq!(
            stamp_lag(r#"{"at":"2026-11-26T12:00:00Z"}"#, received),
            None
        );
        assert_eq!(stamp_lag("not json", received), None);
    }

    #[test]
    fn merged_percentiles_are_over_every_sample() {
        let a = FanoutReport {
            subscribers: 2,
            lags_us: vec![1_000, 2_000],
            ..FanoutReport::default()
        };
        let b = FanoutReport {
            subscribers: 2,
            lags_us: vec![3_000, 100_000],
            ..FanoutReport::default()
        };
        let merged = FanoutReport::merge(vec![a, b]);
        assert_eq!(merged.subscribers, 4);
        assert_eq!(merged.lag_ms(0.0), 1.0);
        assert_eq!(merged.lag_ms(1.0), 100.0);
    }

    #[test]
    fn missed_events_rank_after_every_delivery() {
        let report = FanoutReport {
            subscribers: 1,
            lags_us: vec![1_000, 2_000, MISSED],
            ..FanoutReport::default()
        };
        assert_eq!(report.lag_ms(0.5), 2.0);
        assert_eq!(report.lag_ms(1.0), f64::INFINITY);
        assert!(FanoutReport::default().lag_ms(0.99).is_nan());
    }
}
