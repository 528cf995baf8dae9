//! Helpers for the end-to-end tests: start the embedded system on port 0,
//! read an SSE stream with a real HTTP client.

use std::time::Duration;

use futures::StreamExt;

pub mod contracts;
pub mod processes;
pub mod proxy;
pub mod stack;

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:` if any.
    pub id: Option<String>,
    /// `event:` (default `message`).
    pub event: String,
    /// `data:` lines joined by newlines.
    pub data: String,
}

impl SseEvent {
    /// The data as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

/// Parses a complete SSE body into events (comments and `retry:` skipped).
pub fn parse_sse(body: &str) -> Vec<SseEvent> {
    let mut events = Vec::new();
    for block in body.split("\n\n") {
        let mut id = None;
        let mut event = None;
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => id = Some(value.to_owned()),
                "event" => event = Some(value.to_owned()),
                "data" => data.push(value),
                _ => {}
            }
        }
        if event.is_some() || !data.is_empty() {
            events.push(SseEvent {
                id,
                event: event.unwrap_or_else(|| "message".to_owned()),
                data: data.join("\n"),
            });
        }
    }
    events
}

/// The `insurer` events' rows, grouped by insurer id, in arrival order.
pub fn rows_by_insurer(
    events: &[SseEvent],
) -> std::collections::BTreeMap<String, Vec<serde_json::Value>> {
    let mut by_insurer: std::collections::BTreeMap<String, Vec<serde_json::Value>> =
        Default::default();
    for event in events.iter().filter(|e| e.event == "insurer") {
        let row = event.json();
        let insurer = row["insurer_id"].as_str().expect("insurer_id").to_owned();
        by_insurer.entry(insurer).or_default().push(row);
    }
    by_insurer
}

/// Polls a quotes URL until the read model is complete (it follows the
/// streams on its own consumer group, so it may trail the SSE stream by a
/// moment), or panics after `limit`.
pub async fn complete_quotes(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    limit: Duration,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let quotes: serde_json::Value = http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("quotes answer")
            .json()
            .await
            .expect("quotes JSON");
        if quotes["complete"] == true {
            return quotes;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "read model not complete: {quotes}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A read-model row without `started_at`, which a stream that met the
/// insurer only in its final state cannot know.
pub fn without_started_at(row: &serde_json::Value) -> serde_json::Value {
    let mut row = row.clone();
    if let Some(map) = row.as_object_mut() {
        map.remove("started_at");
    }
    row
}

/// Reads a stream to its end (or `limit`), returning its events.
pub async fn read_stream(response: reqwest::Response, limit: Duration) -> Vec<SseEvent> {
    let mut body = String::new();
    let mut chunks = response.bytes_stream();
    let read = async {
        while let Some(chunk) = chunks.next().await {
            body.push_str(std::str::from_utf8(&chunk.expect("stream chunk")).expect("utf-8"));
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .expect("the stream ends on its own");
    parse_sse(&body)
}

/// The sample request (`docs/examples/request.json`).
/// POSTs the sample request to `url` (`.../api/osago/requests`); the
/// created body (`request_id`, `stream_url`, ...).
pub async fn post_sample(http: &reqwest::Client, url: &str) -> serde_json::Value {
    http.post(url)
        .json(&sample_json())
        .send()
        .await
        .expect("POST the sample request")
        .json()
        .await
        .expect("a created body")
}

pub fn sample_json() -> serde_json::Value {
    serde_json::from_str(include_str!("../../docs/examples/request.json")).expect("sample is JSON")
}

/// Starts the embedded system with `config` on a free loopback port.
pub async fn start_embedded(config: osago::EmbeddedConfig) -> osago::Embedded {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    osago::start(listener, config)
        .await
        .expect("the embedded system starts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_events_and_multiline_data() {
        let events = parse_sse("retry: 2000\n: hi\n\nid: a:1\nevent: insurer\ndata: {\"x\":1}\n\nevent: done\ndata: a\ndata: b\n\n");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id.as_deref(), Some("a:1"));
        assert_eq!(events[1].data, "a\nb");
    }
}
