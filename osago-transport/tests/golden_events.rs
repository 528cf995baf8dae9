//! Event contracts that can evolve (issue 15): the v1 events as checked-in
//! JSON (`tests/fixtures/v1/`) decode, and encode back to the same JSON,
//! forever; a newer writer's events with fields this reader does not know
//! (at the top and nested) decode to the same events. The HTTP API stays
//! strict (`osago_core::request::decode` refuses unknown fields).
//!
//! `OSAGO_BLESS=1 cargo test -p osago-transport --test golden_events`
//! rewrites the fixtures from the current types: only for a new schema
//! version, never to make a failing test pass.

use osago_core::outbox::Stream;
use osago_core::{ErrorEvent, InsurerEvent, QuoteEvent, RequestEvent};
use osago_transport::codec;
use serde_json::{json, Value};

fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v1")
        .join(name)
}

/// The v1 events, built from the current types (for blessing only).
fn current() -> Vec<(&'static str, Value)> {
    let request_id = "0b7c2d8e-3f4a-4b5c-8d6e-7f8091a2b3c4";
    let occurred_at = "2026-11-30T09:00:00Z";
    let deadline_at = "2026-11-30T09:01:00Z";
    let mut request = serde_json::to_value(osago_core::request::sample()).unwrap();
    request["policy"]["start_date"] = json!("2026-12-01");
    request["consent"]["given_at"] = json!(occurred_at);
    let request_event: RequestEvent = serde_json::from_value(json!({
        "event_id": "5e1f0a2b-6c3d-4e4f-9a5b-6c7d8e9fa0b1",
        "request_id": request_id,
        "occurred_at": occurred_at,
        "deadline_at": deadline_at,
        "request": request,
    }))
    .unwrap();
    let premium = osago_core::tariff::premium(
        &request_event.request,
        osago_core::Kopecks(600_000),
        chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
    )
    .unwrap();
    let quote_event: QuoteEvent = serde_json::from_value(json!({
        "event_id": "6f2a1b3c-7d4e-4f5a-8b6c-7d8e9fa0b1c2",
        "request_id": request_id,
        "insurer_id": "swift",
        "occurred_at": "2026-11-30T09:00:02Z",
        "deadline_at": deadline_at,
        "version": 2,
        "insurers_total": 8,
        "status": "quoted",
        "quote": {
            "premium_kopecks": premium.premium_kopecks,
            "coefficients": premium.coefficients,
            "capped": premium.capped,
            "valid_until": "2026-12-01T09:00:00Z",
            "add_ons": [],
            "purchase_url": "https://swift.example/buy/app-1"
        }
    }))
    .unwrap();
    let error_event: ErrorEvent = serde_json::from_value(json!({
        "event_id": "7a3b2c4d-8e5f-4a6b-9c7d-8e9fa0b1c2d3",
        "request_id": request_id,
        "insurer_id": "legacy",
        "occurred_at": "2026-11-30T09:01:00Z",
        "deadline_at": deadline_at,
        "version": 2,
        "insurers_total": 8,
        "kind": "timeout",
        "message": "no answer before the deadline",
        "attempts": 7,
        "final": true
    }))
    .unwrap();
    vec![
        (
            "request_event.json",
            serde_json::to_value(&request_event).unwrap(),
        ),
        (
            "quote_event.json",
            serde_json::to_value(&quote_event).unwrap(),
        ),
        (
            "error_event.json",
            serde_json::to_value(&error_event).unwrap(),
        ),
    ]
}

fn golden(name: &str) -> Value {
    if std::env::var_os("OSAGO_BLESS").is_some() {
        for (file, value) in current() {
            let text = serde_json::to_string_pretty(&value).unwrap() + "\n";
            std::fs::write(fixture_path(file), text).unwrap();
        }
    }
    let text = std::fs::read_to_string(fixture_path(name))
        .unwrap_or_else(|e| panic!("{name}: {e} (bless with OSAGO_BLESS=1)"));
    serde_json::from_str(&text).unwrap()
}

/// `value` with fields no v1 reader knows, at the top and nested.
fn from_a_newer_writer(mut value: Value, nested: &[&str]) -> Value {
    value["schema_note"] = json!("added in v1.1");
    value["tracing"] =
        json!({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"});
    for pointer in nested {
        if let Some(Value::Object(map)) = value.pointer_mut(pointer) {
            map.insert("added_later".to_owned(), json!({"any": [1, 2, 3]}));
        }
    }
    value
}

#[test]
fn the_v1_request_event_decodes_and_encodes_back_unchanged() {
    let golden = golden("request_event.json");
    let bytes = serde_json::to_vec(&golden).unwrap();
    let event = codec::decode_request_event(&bytes).unwrap();
    let (_, encoded) = codec::encode_request_event(&event);
    assert_eq!(serde_json::from_slice::<Value>(&encoded).unwrap(), golden);

    let newer = from_a_newer_writer(
        golden.clone(),
        &[
            "/request",
            "/request/owner",
            "/request/owner/passport",
            "/request/vehicle",
            "/request/drivers/list/0",
            "/request/consent",
        ],
    );
    let tolerant = codec::decode_request_event(&serde_json::to_vec(&newer).unwrap())
        .expect("a reader ignores fields a newer writer added");
    assert_eq!(tolerant, event);

    // The HTTP API stays strict about the same request.
    let strict = osago_core::request::decode(&serde_json::to_vec(&newer["request"]).unwrap());
    match strict {
        Err(osago_core::request::DecodeError::Shape(error)) => {
            assert_eq!(error.path, "added_later");
            assert_eq!(error.message, "is not a known field");
        }
        other => panic!("the API accepted an unknown field: {other:?}"),
    }
    let nested = osago_core::request::decode(
        &serde_json::to_vec(&from_a_newer_writer(
            golden["request"].clone(),
            &["/drivers/list/0"],
        ))
        .unwrap(),
    );
    // The first unknown field in the document is named.
    assert!(
        matches!(&nested, Err(osago_core::request::DecodeError::Shape(e)) if e.path == "drivers.list[0].added_later"),
        "{nested:?}"
    );
    let mut only_nested = golden["request"].clone();
    only_nested["drivers"]["list"][0]["added_later"] = json!(1);
    match osago_core::request::decode(&serde_json::to_vec(&only_nested).unwrap()) {
        Err(osago_core::request::DecodeError::Shape(e)) => {
            assert_eq!(e.path, "drivers.list[0].added_later")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_v1_insurer_events_decode_and_encode_back_unchanged() {
    for (file, stream) in [
        ("quote_event.json", Stream::Quotes),
        ("error_event.json", Stream::Errors),
    ] {
        let golden = golden(file);
        let event = codec::decode_insurer_event(stream, &serde_json::to_vec(&golden).unwrap())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let (encoded_stream, key, encoded) = codec::encode_insurer_event(&event);
        assert_eq!(encoded_stream, stream);
        assert_eq!(key, event.key());
        assert_eq!(
            serde_json::from_slice::<Value>(&encoded).unwrap(),
            golden,
            "{file}"
        );
        let newer = from_a_newer_writer(golden, &["/quote", "/quote/coefficients"]);
        let tolerant = codec::decode_insurer_event(stream, &serde_json::to_vec(&newer).unwrap())
            .unwrap_or_else(|e| panic!("{file} from a newer writer: {e}"));
        assert_eq!(tolerant, event, "{file}");
        assert!(matches!(
            (&event, stream),
            (InsurerEvent::Quote(_), Stream::Quotes) | (InsurerEvent::Error(_), Stream::Errors)
        ));
    }
}
