//! The answers: JSON bodies of the wire contract (`osago_transport::http::wire`),
//! error bodies and the `Retry-After` header.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use osago_transport::http::wire::{FieldProblems, PropertyProblem};
use serde::Serialize;

use crate::plan::{Fault, Hint};

/// An answer of the simulator.
pub(crate) type Reply = Response<Full<Bytes>>;

/// The body of an error answer other than 400.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    /// What went wrong, lower case.
    message: &'a str,
    /// The sub-second form of `Retry-After`, when sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

/// `status` with `body` as JSON.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Reply {
    match serde_json::to_vec(body) {
        Ok(bytes) => raw_json(status, bytes),
        Err(err) => {
            tracing::error!(error = %err, "answer body does not serialize");
            raw_json(
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"message":"internal error"}"#.to_vec(),
            )
        }
    }
}

/// `status` with bytes labelled `application/json`, whatever they hold.
fn raw_json(status: StatusCode, bytes: Vec<u8>) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(bytes)));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

/// Adds `Retry-After` when there is a hint.
pub(crate) fn with_hint(mut reply: Reply, hint: Option<Hint>) -> Reply {
    if let Some(hint) = hint {
        reply
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(hint.header_secs));
    }
    reply
}

/// An error answer `{message, retry_after_ms?}` with `Retry-After` when hinted.
pub(crate) fn error(status: StatusCode, message: &str, hint: Option<Hint>) -> Reply {
    let body = ErrorBody {
        message,
        retry_after_ms: hint.map(|h| h.ms),
    };
    with_hint(json(status, &body), hint)
}

/// 400 (or another 4xx) `{message, properties: [{property, message}]}`.
pub(crate) fn problems(
    status: StatusCode,
    message: &str,
    properties: Vec<PropertyProblem>,
) -> Reply {
    let body = FieldProblems {
        message: message.to_owned(),
        properties,
        retry_after_ms: None,
    };
    json(status, &body)
}

/// The answer of an injected fault; hints are scaled by `speed`.
pub(crate) fn fault(fault: Fault, speed: f64) -> Reply {
    let hint = Some(Hint::scaled(1.0, speed));
    match fault {
        Fault::Internal => internal_error(),
        Fault::Unavailable => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service temporarily unavailable",
            hint,
        ),
        Fault::RateLimited => error(StatusCode::TOO_MANY_REQUESTS, "too many requests", hint),
    }
}

/// 500.
pub(crate) fn internal_error() -> Reply {
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal error", None)
}

/// 404.
pub(crate) fn not_found() -> Reply {
    error(StatusCode::NOT_FOUND, "not found", None)
}

/// 200 `{"status":"ok"}`.
pub(crate) fn health() -> Reply {
    raw_json(StatusCode::OK, br#"{"status":"ok"}"#.to_vec())
}

/// 200 labelled JSON, holding a truncated JSON document.
pub(crate) fn garbage(application_id: &str) -> Reply {
    let body = format!(
        r#"{{"application_id":"{application_id}","status":"READY","quote":{{"premium_kopecks":"#
    );
    raw_json(StatusCode::OK, body.into_bytes())
}
