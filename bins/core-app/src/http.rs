//! The HTTP API: routing, handlers and problem+json errors (RFC 9457).
//!
//! - `POST /api/osago/requests`: validate, store with the outbox, 202.
//! - `GET /api/osago/requests/{id}/stream`: SSE ([`crate::sse`]).
//! - `GET /api/osago/requests/{id}/quotes`: the same state as JSON.
//! - `GET /`: the page.
//! - `GET /health/live`, `/health/ready` (and `/health`), `/metrics`: the
//!   admin endpoints ([`osago_service::admin`]), here only when core-app runs
//!   without an admin listener of its own (embedded in one process); the
//!   `core-app` binary serves them on `--admin-listen` and answers 404 here.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Frame;
use osago_core::events::RequestEvent;
use osago_core::ports::RequestSummary;
use osago_core::ratelimit::Admission;
use osago_core::request::{self, DecodeError};
use osago_core::showcase::is_complete;
use osago_core::{EventId, FieldError, RequestId};
use serde::Serialize;

use crate::sse::{Cursor, StreamParams, StreamState};
use crate::App;

/// The response body type.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

const INDEX_HTML: &str = include_str!("web/index.html");

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("serializable");
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .header(CACHE_CONTROL, "no-store")
        .body(full(body))
        .expect("valid response")
}

/// An RFC 9457 problem.
#[derive(Debug, Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
}

fn problem(
    status: StatusCode,
    kind: &str,
    title: &str,
    detail: impl Into<String>,
    errors: Vec<FieldError>,
) -> Response<Body> {
    let body = Problem {
        kind,
        title,
        status: status.as_u16(),
        detail: detail.into(),
        errors,
    };
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/problem+json")
        .header(CACHE_CONTROL, "no-store")
        .body(full(serde_json::to_vec(&body).expect("serializable")))
        .expect("valid response")
}

fn not_found() -> Response<Body> {
    problem(
        StatusCode::NOT_FOUND,
        "about:blank",
        "Not Found",
        "no such resource",
        vec![],
    )
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "about:blank",
        "Method Not Allowed",
        format!("allowed: {allow}"),
        vec![],
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

fn unavailable(detail: &str) -> Response<Body> {
    let mut response = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "about:blank",
        "Service Unavailable",
        detail,
        vec![],
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A request body core-app can read: hyper's `Incoming`, or any other
/// `http_body::Body` of bytes (an embedder's server framework's).
pub trait RequestBody:
    hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static
{
}

impl<B> RequestBody for B where
    B: hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

/// Routes one request from `peer`.
pub async fn handle<B: RequestBody>(
    app: Arc<App>,
    peer: std::net::SocketAddr,
    req: Request<B>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let response = match (req.method(), segments.as_slice()) {
        (&Method::GET, [""]) => page(),
        (_, [""]) => method_not_allowed("GET"),
        (&Method::GET, ["favicon.ico"]) => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(full(Bytes::new()))
            .expect("valid response"),
        // Each handler's future is boxed: hyper keeps room for this
        // function's future for the whole life of every connection, SSE
        // streams included, so it must stay small.
        (&Method::GET, ["health" | "metrics", ..]) if app.admin_on_api => {
            Box::pin(app.admin.handle(&req))
                .await
                .map(BodyExt::boxed_unsync)
        }
        (&Method::POST, ["api", "osago", "requests"]) => {
            match Box::pin(limit(&app, peer, &req)).await {
                Some(refused) => refused,
                None => Box::pin(create(&app, req)).await,
            }
        }
        (_, ["api", "osago", "requests"]) => method_not_allowed("POST"),
        (&Method::GET, ["api", "osago", "requests", id, "stream"]) => {
            let last_event_id = req
                .headers()
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match id.parse::<RequestId>() {
                Ok(id) => Box::pin(stream(&app, id, last_event_id)).await,
                Err(_) => not_found(),
            }
        }
        (&Method::GET, ["api", "osago", "requests", id, "quotes"]) => match id.parse::<RequestId>()
        {
            Ok(id) => Box::pin(quotes(&app, id)).await,
            Err(_) => not_found(),
        },
        (_, ["api", "osago", "requests", _, "stream" | "quotes"]) => method_not_allowed("GET"),
        _ => not_found(),
    };
    Ok(response)
}

fn page() -> Response<Body> {
    Response::builder()
        .header(CONTENT_TYPE, "text/html; charset=utf-8")
        .header(CACHE_CONTROL, "no-cache")
        .body(full(INDEX_HTML))
        .expect("valid response")
}

/// The client a request counts against: the configured proxy header's first
/// address, else the peer address.
fn client_key<B>(app: &App, peer: std::net::SocketAddr, req: &Request<B>) -> String {
    app.config
        .client_ip_header
        .as_deref()
        .and_then(|name| req.headers().get(name))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| peer.ip().to_string())
}

/// The inbound B2C limit: `Some(429)` when the client is over it. A limiter
/// that cannot be reached lets the request through (availability first) and
/// says so in the log.
async fn limit(
    app: &App,
    peer: std::net::SocketAddr,
    req: &Request<impl Sized>,
) -> Option<Response<Body>> {
    if let Some(refused) = client_limit(app, peer, req).await {
        return Some(refused);
    }
    admission(app).await
}

/// The admission limit: quote requests accepted per second across every
/// core-app sharing the limiter (the stack's capacity, set by the
/// operator); beyond it a request is refused at once with 503 and
/// Retry-After, before its body is read, so nobody is admitted who cannot
/// be served, and nobody admitted is dropped for someone new. A limiter
/// that cannot be reached lets the request through.
async fn admission(app: &App) -> Option<Response<Body>> {
    if app.config.admission.emission_interval_us() == 0 {
        return None;
    }
    let refusal = Refusal {
        reason: "overloaded",
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "/problems/overloaded",
        title: "Service Unavailable",
        detail: "the service is at capacity",
    };
    limited(app, ADMISSION_KEY, &app.config.admission, refusal).await
}

/// The admission limiter's key: no client key (an address) looks like it.
const ADMISSION_KEY: &str = "admission:quote-requests";

/// The per-client limit: `Some(429)` when the client is over it.
async fn client_limit(
    app: &App,
    peer: std::net::SocketAddr,
    req: &Request<impl Sized>,
) -> Option<Response<Body>> {
    let key = client_key(app, peer, req);
    let refusal = Refusal {
        reason: "rate_limited",
        status: StatusCode::TOO_MANY_REQUESTS,
        kind: "/problems/rate-limited",
        title: "Too Many Requests",
        detail: "too many quote requests from this client",
    };
    limited(app, &key, &app.config.rate_limit, refusal).await
}

/// How a limit refuses.
struct Refusal {
    reason: &'static str,
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: &'static str,
}

/// `Some(refusal)`, with Retry-After in whole seconds, when `key` is over
/// `limit`; a limiter that cannot be reached lets the request through
/// (availability first) and says so in the log.
async fn limited(
    app: &App,
    key: &str,
    limit: &osago_core::ratelimit::RateLimit,
    refusal: Refusal,
) -> Option<Response<Body>> {
    match app.deps.limiter.check(key, limit).await {
        Ok(Admission::Allowed) => None,
        Ok(Admission::Limited { retry_after }) => {
            reject(app, refusal.reason);
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            let mut response = problem(
                refusal.status,
                refusal.kind,
                refusal.title,
                format!("{}; try again in {seconds} s", refusal.detail),
                vec![],
            );
            response.headers_mut().insert(
                RETRY_AFTER,
                HeaderValue::from_str(&seconds.to_string()).expect("digits"),
            );
            Some(response)
        }
        Err(err) => {
            tracing::warn!(limit = refusal.reason, error = %err, "limiter unavailable; request let through");
            None
        }
    }
}

fn reject(app: &App, reason: &'static str) {
    app.metrics
        .requests_rejected
        .get_or_create(&crate::metrics::ReasonLabel { reason })
        .inc();
}

/// The API's answer to a created request.
#[derive(Debug, Serialize)]
struct Created {
    request_id: RequestId,
    stream_url: String,
    quotes_url: String,
    deadline_at: chrono::DateTime<chrono::Utc>,
}

async fn create<B: RequestBody>(app: &App, req: Request<B>) -> Response<Body> {
    let limit = app.config.body_limit;
    let too_large = || {
        problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "about:blank",
            "Payload Too Large",
            format!("the body must be at most {limit} bytes"),
            vec![],
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        reject(app, "too_large");
        return too_large();
    }
    // `application/json` is required, not assumed: a body without a type
    // (or a form's text/plain) is what another site can make its visitors'
    // browsers send without a CORS preflight.
    let mime = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        reject(app, "media_type");
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "about:blank",
            "Unsupported Media Type",
            "send application/json",
            vec![],
        );
    }
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            reject(app, "too_large");
            return too_large();
        }
        Err(_) => {
            reject(app, "malformed");
            return problem(
                StatusCode::BAD_REQUEST,
                "about:blank",
                "Bad Request",
                "the body could not be read",
                vec![],
            );
        }
    };
    let mut request = match request::decode(&body) {
        Ok(request) => request,
        Err(DecodeError::Syntax) => {
            reject(app, "malformed");
            return problem(
                StatusCode::BAD_REQUEST,
                "/problems/malformed-json",
                "Malformed JSON",
                "the body is not valid JSON",
                vec![],
            );
        }
        Err(DecodeError::Shape(error)) => {
            reject(app, "invalid");
            return invalid(vec![error]);
        }
    };
    let today = app.deps.clock.today();
    if let Err(errors) = request.validate(today) {
        reject(app, "invalid");
        return invalid(errors);
    }
    // Every insurer prices the same start date.
    request.policy.start_date = Some(request.policy.effective_start(today));

    let request_id = RequestId::random();
    let created_at = app.deps.clock.now();
    let deadline_at = created_at
        + chrono::Duration::from_std(app.config.request_deadline).expect("deadline fits");
    let event = RequestEvent {
        event_id: EventId::random(),
        request_id,
        occurred_at: created_at,
        deadline_at,
        request,
    };
    // The store encodes the event for the outbox (osago-transport's codec).
    if let Err(err) = app.deps.requests.create(&event).await {
        tracing::error!(error = %err, "storing a request failed");
        return unavailable("the request could not be stored; try again");
    }
    app.metrics.requests_created.inc();
    tracing::info!(%request_id, "quote request accepted");
    let base = format!("/api/osago/requests/{request_id}");
    let mut response = json_response(
        StatusCode::ACCEPTED,
        &Created {
            request_id,
            stream_url: format!("{base}/stream"),
            quotes_url: format!("{base}/quotes"),
            deadline_at,
        },
    );
    response.headers_mut().insert(
        LOCATION,
        HeaderValue::from_str(&format!("{base}/quotes")).expect("ascii"),
    );
    response
}

fn invalid(errors: Vec<FieldError>) -> Response<Body> {
    let detail = format!("{} field(s) failed validation", errors.len());
    problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        "/problems/validation-error",
        "Invalid quote request",
        detail,
        errors,
    )
}

/// The quotes endpoint's body.
#[derive(Debug, Serialize)]
struct QuotesView {
    request_id: RequestId,
    deadline_at: chrono::DateTime<chrono::Utc>,
    complete: bool,
    insurers: Vec<osago_core::showcase::OfferRow>,
}

async fn summary_or_404(app: &App, id: RequestId) -> Result<RequestSummary, Response<Body>> {
    match app.deps.requests.summary(&id).await {
        Ok(Some(summary)) => Ok(summary),
        Ok(None) => Err(not_found()),
        Err(err) => {
            tracing::error!(error = %err, "reading a request failed");
            Err(unavailable("the request could not be read; try again"))
        }
    }
}

async fn quotes(app: &App, id: RequestId) -> Response<Body> {
    let summary = match summary_or_404(app, id).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    match app.deps.read_model.rows(&id).await {
        Ok(rows) => json_response(
            StatusCode::OK,
            &QuotesView {
                request_id: id,
                deadline_at: summary.deadline_at,
                complete: is_complete(&rows),
                insurers: rows,
            },
        ),
        Err(err) => {
            tracing::error!(error = %err, "reading quotes failed");
            unavailable("quotes could not be read; try again")
        }
    }
}

async fn stream(app: &Arc<App>, id: RequestId, last_event_id: Option<String>) -> Response<Body> {
    let summary = match summary_or_404(app, id).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let subscription = app.hub.subscribe(id);
    let params = StreamParams {
        request_id: id,
        deadline_at: summary.deadline_at,
        grace: app.config.stream_grace,
        heartbeat: app.config.heartbeat_interval,
        retry: app.config.sse_retry,
        cursor: last_event_id
            .as_deref()
            .map(Cursor::parse)
            .unwrap_or_default(),
    };
    let state = match StreamState::open(
        params,
        app.deps.read_model.clone(),
        subscription,
        app.deps.clock.clone(),
        app.metrics.clone(),
        app.shutdown.clone(),
    )
    .await
    {
        Ok(state) => state,
        Err(err) => {
            tracing::error!(error = %err, "opening a stream failed");
            return unavailable("the stream could not be opened; try again");
        }
    };
    let chunks = futures::stream::unfold(state, |mut state| async move {
        state.next_chunk().await.map(|chunk| (chunk, state))
    })
    .map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
    Response::builder()
        .header(CONTENT_TYPE, "text/event-stream")
        .header(CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(StreamBody::new(chunks).boxed_unsync())
        .expect("valid response")
}
