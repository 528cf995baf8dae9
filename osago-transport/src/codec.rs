//! Event encoding on the streams (JSON, schema v1) and the stream keys.

use osago_core::outbox::Stream;
use osago_core::ports::{PortError, PortErrorKind};
use osago_core::{ErrorEvent, InsurerEvent, QuoteEvent, RequestEvent};

/// The stream an insurer event goes to, its key and its JSON payload.
pub fn encode_insurer_event(event: &InsurerEvent) -> (Stream, String, Vec<u8>) {
    let payload = match event {
        InsurerEvent::Quote(e) => serde_json::to_vec(e),
        InsurerEvent::Error(e) => serde_json::to_vec(e),
    }
    .expect("events serialize");
    let stream = match event {
        InsurerEvent::Quote(_) => Stream::Quotes,
        InsurerEvent::Error(_) => Stream::Errors,
    };
    (stream, event.key(), payload)
}

/// Decodes a quote or error event from its stream.
pub fn decode_insurer_event(stream: Stream, payload: &[u8]) -> Result<InsurerEvent, PortError> {
    // serde's message may quote the payload: keep only the position (the
    // reason goes to logs and to the dead-letter record's headers).
    let corrupt = |e: serde_json::Error| {
        PortError::new(
            PortErrorKind::Corrupt,
            format!(
                "undecodable {} event ({:?} error at line {} column {})",
                stream.as_str(),
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    };
    match stream {
        Stream::Quotes => serde_json::from_slice::<QuoteEvent>(payload)
            .map(InsurerEvent::Quote)
            .map_err(corrupt),
        Stream::Errors => serde_json::from_slice::<ErrorEvent>(payload)
            .map(InsurerEvent::Error)
            .map_err(corrupt),
        Stream::Requests => Err(PortError::new(
            PortErrorKind::Corrupt,
            "not an insurer stream",
        )),
    }
}

/// Encodes a request event (key: the request id).
pub fn encode_request_event(event: &RequestEvent) -> (String, Vec<u8>) {
    (
        event.request_id.to_string(),
        serde_json::to_vec(event).expect("events serialize"),
    )
}

/// The outbox message of a request event, as every [`RequestStore`]
/// writes it: id = the event id (so one event is enqueued once), key = the
/// request id, payload = the encoded event, trace = the current one (the
/// POST's, in core-app).
///
/// [`RequestStore`]: osago_core::ports::RequestStore
pub fn request_outbox_message(event: &RequestEvent) -> osago_core::outbox::OutboxMessage {
    let (key, payload) = encode_request_event(event);
    osago_core::outbox::OutboxMessage {
        id: event.event_id.as_uuid(),
        stream: Stream::Requests,
        key,
        payload,
        created_at: event.occurred_at,
        attempts: 0,
        publish_by: Some(event.deadline_at),
        trace: osago_core::trace::current(),
    }
}

/// Decodes a request event.
pub fn decode_request_event(payload: &[u8]) -> Result<RequestEvent, PortError> {
    serde_json::from_slice(payload).map_err(|e| {
        // serde's message may quote personal data from the payload: keep only the position.
        PortError::new(
            PortErrorKind::Corrupt,
            format!(
                "undecodable request event at line {} column {}",
                e.line(),
                e.column()
            ),
        )
    })
}
