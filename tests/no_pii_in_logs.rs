//! Personal data never reaches the logs: a whole flow (valid and invalid
//! requests, insurers answering) at TRACE level leaves none of the sample's
//! personal values in the captured output.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osago::EmbeddedConfig;
use osago_tests::{read_stream, sample_json};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_flow_logs_no_personal_data() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let mut config = EmbeddedConfig {
        sim_speed: 50.0,
        ..EmbeddedConfig::default()
    };
    config.engine.insurer_deadline = Duration::from_secs(2);
    config.engine.poll =
        osago_aggregator_lib::resilience::PollConfig::fixed(Duration::from_millis(100));
    config.core.request_deadline = Duration::from_secs(2);
    config.core.stream_grace = Duration::from_secs(1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let system = osago::start(listener, config).await.unwrap();
    let base = format!("http://{}/api/osago/requests", system.addr);
    let http = reqwest::Client::new();

    let created: serde_json::Value = http
        .post(&base)
        .json(&sample_json())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stream = http
        .get(format!(
            "http://{}{}",
            system.addr,
            created["stream_url"].as_str().unwrap()
        ))
        .bearer_auth(created["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let events = read_stream(stream, Duration::from_secs(20)).await;
    assert!(events
        .iter()
        .any(|e| e.event == "done" || e.event == "timeout"));

    let mut invalid = sample_json();
    invalid["vehicle"]["vin"] = "XTAGFL110MY12345O".into();
    invalid["contact"]["phone"] = "89161234567".into();
    invalid["vehicle"]["year"] = "Иванов".into();
    let response = http.post(&base).json(&invalid).send().await.unwrap();
    let problem = response.text().await.unwrap();
    system.stop().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("quote request accepted"),
        "logging was captured"
    );
    for secret in [
        "Иванов",
        "XTAGFL110MY123456",
        "XTAGFL110MY12345O",
        "А123ВС777",
        "4510",
        "79161234567",
        "89161234567",
        "ivanov@example.ru",
        "Тверская",
        "1985-03-14",
        "99АА",
    ] {
        let at = find_token(&logs, secret).map(|i| {
            let start = logs[..i].char_indices().rev().nth(80).map_or(0, |(j, _)| j);
            let end = logs[i..]
                .char_indices()
                .nth(80)
                .map_or(logs.len(), |(j, _)| i + j);
            &logs[start..end]
        });
        assert!(at.is_none(), "personal data {secret:?} in the logs: {at:?}");
        assert!(
            find_token(&problem, secret).is_none(),
            "personal data {secret:?} in an error answer: {problem}"
        );
    }
}

/// Where `secret` occurs in `text` not inside a longer run of letters or
/// digits (a short number such as a passport series also occurs inside
/// UUIDs, ports and timestamps by chance).
fn find_token(text: &str, secret: &str) -> Option<usize> {
    text.match_indices(secret).map(|(i, _)| i).find(|&i| {
        let before = text[..i].chars().next_back();
        let after = text[i + secret.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}
