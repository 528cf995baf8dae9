//! Event contracts (issue 15): the JSON Schemas of the three topics are
//! generated from the Rust types (`osago-core`'s `schema` feature) and
//! checked in under `docs/schemas/`; the golden v1 events validate against
//! them; `docs/asyncapi.json` (AsyncAPI 3) names the three topics, their
//! keys, headers and those schemas.
//!
//! `OSAGO_BLESS=1 cargo test -p osago-tests --test event_schemas` rewrites
//! the schemas after a change to the types (review the diff: removing or
//! retyping a field breaks readers).

use osago_core::{ErrorEvent, QuoteEvent, RequestEvent};
use schemars::generate::SchemaSettings;
use serde_json::Value;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn generated() -> Vec<(&'static str, Value)> {
    let schema = |mut value: Value, topic: &str, title: &str| {
        value["$id"] = Value::String(format!("https://osago.example/schemas/{topic}.schema.json"));
        value["title"] = Value::String(title.to_owned());
        value
    };
    let generator = || SchemaSettings::draft2020_12().into_generator();
    vec![
        (
            "osago.requests.v1",
            schema(
                generator()
                    .into_root_schema_for::<RequestEvent>()
                    .to_value(),
                "osago.requests.v1",
                "A new quote request (personal data)",
            ),
        ),
        (
            "osago.quotes.v1",
            schema(
                generator().into_root_schema_for::<QuoteEvent>().to_value(),
                "osago.quotes.v1",
                "One insurer's state for a request",
            ),
        ),
        (
            "osago.errors.v1",
            schema(
                generator().into_root_schema_for::<ErrorEvent>().to_value(),
                "osago.errors.v1",
                "An integration failure with one insurer",
            ),
        ),
    ]
}

fn path(topic: &str) -> std::path::PathBuf {
    root().join(format!("docs/schemas/{topic}.schema.json"))
}

#[test]
fn the_checked_in_schemas_are_the_types() {
    for (topic, schema) in generated() {
        if std::env::var_os("OSAGO_BLESS").is_some() {
            std::fs::write(
                path(topic),
                serde_json::to_string_pretty(&schema).unwrap() + "\n",
            )
            .unwrap();
        }
        let checked_in: Value = serde_json::from_str(
            &std::fs::read_to_string(path(topic))
                .unwrap_or_else(|e| panic!("{topic}: {e} (bless with OSAGO_BLESS=1)")),
        )
        .unwrap();
        assert_eq!(
            checked_in, schema,
            "docs/schemas/{topic}.schema.json differs from the types: bless it and review the diff"
        );
    }
}

#[test]
fn the_golden_events_validate_against_the_schemas() {
    for (topic, fixture) in [
        ("osago.requests.v1", "request_event.json"),
        ("osago.quotes.v1", "quote_event.json"),
        ("osago.errors.v1", "error_event.json"),
    ] {
        let schema: Value =
            serde_json::from_str(&std::fs::read_to_string(path(topic)).unwrap()).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let event: Value = serde_json::from_str(
            &std::fs::read_to_string(
                root()
                    .join("osago-transport/tests/fixtures/v1")
                    .join(fixture),
            )
            .unwrap(),
        )
        .unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&event)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{fixture} against {topic}: {errors:?}");
        // A validator that takes anything proves nothing.
        assert!(
            !validator.is_valid(&serde_json::json!({"event_id": 1})),
            "{topic}"
        );
    }
}

#[test]
fn the_asyncapi_document_names_every_topic_with_its_schema_and_headers() {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("docs/asyncapi.json")).unwrap())
            .unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    let defaults = osago_transport::kafka::KafkaConfig::default();
    for (channel, topic) in [
        ("requests", defaults.requests.as_str()),
        ("quotes", defaults.quotes.as_str()),
        ("errors", defaults.errors.as_str()),
    ] {
        assert_eq!(doc["channels"][channel]["address"], topic, "{channel}");
        let messages = doc["channels"][channel]["messages"].as_object().unwrap();
        assert_eq!(messages.len(), 1, "{channel}");
        let reference = messages.values().next().unwrap()["$ref"].as_str().unwrap();
        let name = reference.rsplit('/').next().unwrap();
        let message = &doc["components"]["messages"][name];
        assert_eq!(
            message["payload"]["$ref"],
            format!("schemas/{topic}.schema.json"),
            "{channel}"
        );
        assert!(path(topic).exists());
        assert_eq!(message["contentType"], "application/json");
        let headers = &message["headers"]["properties"];
        assert_eq!(
            headers["content-type"]["const"],
            osago_transport::kafka::CONTENT_TYPE
        );
        assert_eq!(
            headers["osago-schema-version"]["const"],
            osago_transport::kafka::SCHEMA_VERSION
        );
    }
}
