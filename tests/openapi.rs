//! The HTTP contract (issue 15): core-app serves its OpenAPI 3.1 document
//! at `/openapi.json` (`docs/openapi.json`), it names every route, and real
//! answers (created, quotes, every problem) validate against its schemas;
//! the sample request validates against the request schema, and the schema
//! is as strict as the API (an unknown field is refused by both).

use osago::EmbeddedConfig;
use osago_tests::sample_json;
use serde_json::{json, Value};

use osago_tests::contracts::{
    assert_openapi_valid as assert_valid, openapi as document, openapi_validator as validator,
};

#[tokio::test]
async fn the_document_is_served_and_real_answers_match_it() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/osago/requests",
        "/api/osago/requests/{id}/stream",
        "/api/osago/requests/{id}/quotes",
        "/openapi.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} undocumented");
    }

    let mut config = EmbeddedConfig {
        sim_speed: 50.0,
        ..EmbeddedConfig::default()
    };
    config.core = config.core.without_client_limits();
    config.core.request_deadline = std::time::Duration::from_secs(5);
    config.engine.insurer_deadline = std::time::Duration::from_secs(5);
    let system = osago_tests::start_embedded(config).await;
    let base = format!("http://{}", system.addr);
    let http = reqwest::Client::new();

    let served: Value = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, doc, "the served document is docs/openapi.json");

    // The sample request is valid; the schema is as strict as the API.
    assert_valid(&doc, "QuoteRequest", &sample_json());
    let mut unknown = sample_json();
    unknown["vehicle"]["colour"] = json!("red");
    assert!(!validator(&doc, "QuoteRequest").is_valid(&unknown));

    let created = http
        .post(format!("{base}/api/osago/requests"))
        .json(&sample_json())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let created: Value = created.json().await.unwrap();
    assert_valid(&doc, "Created", &created);
    // (A validator that passes everything would prove nothing.)
    assert!(!validator(&doc, "Created").is_valid(&json!({"request_id": created["request_id"]})));

    // Every problem the API answers with.
    let mut problems = Vec::new();
    let post = |body: String, content_type: &'static str| {
        http.post(format!("{base}/api/osago/requests"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    problems.push(post("{".into(), "application/json").await.unwrap());
    problems.push(post(unknown.to_string(), "application/json").await.unwrap());
    let mut invalid = sample_json();
    invalid["contact"]["phone"] = json!("123");
    problems.push(post(invalid.to_string(), "application/json").await.unwrap());
    problems.push(post(sample_json().to_string(), "text/plain").await.unwrap());
    problems.push(
        post(" ".repeat(70 * 1024), "application/json")
            .await
            .unwrap(),
    );
    problems.push(
        http.get(format!("{base}{}", created["quotes_url"].as_str().unwrap()))
            .send()
            .await
            .unwrap(),
    );
    problems.push(
        http.delete(format!("{base}/api/osago/requests"))
            .send()
            .await
            .unwrap(),
    );
    let mut statuses = Vec::new();
    for answer in problems {
        let status = answer.status().as_u16();
        statuses.push(status);
        assert_eq!(
            answer.headers()["content-type"],
            "application/problem+json",
            "{status}"
        );
        let body: Value = answer.json().await.unwrap();
        assert_valid(&doc, "Problem", &body);
        // Every answer's status is documented for its operation, or is 405.
        assert_eq!(body["status"], status);
    }
    assert_eq!(statuses, [400, 422, 422, 415, 413, 404, 405]);

    // The quotes once every insurer answered.
    let quotes = osago_tests::complete_quotes(
        &http,
        &format!("{base}{}", created["quotes_url"].as_str().unwrap()),
        created["access_token"].as_str().unwrap(),
        std::time::Duration::from_secs(30),
    )
    .await;
    assert_valid(&doc, "QuotesView", &quotes);
    let statuses: Vec<&str> = quotes["insurers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["status"].as_str().unwrap())
        .collect();
    assert!(statuses.contains(&"quoted"), "{statuses:?}");
    system.stop().await;
}
