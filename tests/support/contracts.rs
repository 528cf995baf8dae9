//! The published contracts, for tests to check real traffic against: the
//! OpenAPI document of core-app's HTTP API and the JSON Schemas of the
//! three topics.

use serde_json::{json, Value};

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `docs/openapi.json`.
pub fn openapi() -> Value {
    serde_json::from_str(include_str!("../../docs/openapi.json"))
        .expect("docs/openapi.json is JSON")
}

/// A validator of `schema` (a component name) within the OpenAPI document.
pub fn openapi_validator(doc: &Value, schema: &str) -> jsonschema::Validator {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{schema}"),
        "components": doc["components"],
    });
    jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{schema}: {e}"))
}

/// Panics with every error unless `value` is a valid `schema` of the
/// OpenAPI document.
pub fn assert_openapi_valid(doc: &Value, schema: &str, value: &Value) {
    let errors: Vec<String> = openapi_validator(doc, schema)
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{schema}: {errors:?}\n{value}");
}

/// The validator of a topic's events (`docs/schemas/<topic>.schema.json`).
pub fn topic_validator(topic: &str) -> jsonschema::Validator {
    let path = root()
        .join("docs/schemas")
        .join(format!("{topic}.schema.json"));
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("a schema is JSON");
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{topic}: {e}"))
}
