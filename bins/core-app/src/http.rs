//! The HTTP API: routing, handlers and problem+json errors (RFC 9457).
//!
//! - `POST /api/osago/requests`: validate, store with the outbox, 202.
//! - `GET /api/osago/requests/{id}/stream`: SSE ([`crate::sse`]).
//! - `GET /api/osago/requests/{id}/quotes`: the same state as JSON.
//! - `GET /`, `/app.js`, `/app.css`: the page, under a Content-Security-Policy
//!   without inline code (`script-src 'self'`, `frame-ancestors 'none'`).
//! - `GET /consent/processing`, `/consent/transfer`: the consent texts.
//! - `GET /openapi.json`: the API's OpenAPI 3.1 document.
//!
//! Every answer carries `X-Content-Type-Options: nosniff` and
//! `Referrer-Policy: no-referrer`. The stream and quotes require the
//! request's access token ([`crate::access`]); without it they answer as
//! for an unknown id. Reads are limited per client ([`Config::read_limit`],
//! [`Config::max_streams_per_client`]); the client is the peer, or the
//! right-most untrusted forwarded address behind a trusted proxy.
//!
//! [`Config::read_limit`]: crate::Config::read_limit
//! [`Config::max_streams_per_client`]: crate::Config::max_streams_per_client
//! - `GET /health/live`, `/health/ready` (and `/health`), `/metrics`: the
//!   admin endpoints ([`osago_service::admin`]), here only when core-app runs
//!   without an admin listener of its own (embedded in one process); the
//!   `core-app` binary serves them on `--admin-listen` and answers 404 here.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ALLOW, CACHE_CONTROL, CONTENT_LENGTH,
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, ORIGIN, REFERRER_POLICY, RETRY_AFTER,
    SET_COOKIE, VARY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Frame;
use osago_core::events::RequestEvent;
use osago_core::ports::RequestSummary;
use osago_core::ratelimit::Admission;
use osago_core::request::{self, ConsentRecord, DecodeError};
use osago_core::showcase::is_complete;
use osago_core::trace::{TraceContext, WithTrace};
use osago_core::{EventId, FieldError, RequestId};
use serde::Serialize;
use tracing::Instrument;

use crate::config::LimiterFailure;
use crate::sse::{Cursor, StreamParams, StreamState};
use crate::App;

/// The response body type.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");

/// What `app.js` holds in place of the territory table.
const TERRITORIES_SLOT: &str = "/*TERRITORIES*/[]";

/// `app.js` with the territory table filled in: `[code, name, [named
/// settlements]]` per region, from the one data file the tariff prices by.
static APP_JS_SERVED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let table: Vec<(&str, &str, Vec<&str>)> = osago_core::tariff::territories()
        .iter()
        .map(|t| {
            (
                t.code,
                t.name,
                t.settlements.iter().map(|(name, _)| *name).collect(),
            )
        })
        .collect();
    let json = serde_json::to_string(&table).expect("the territory table serialises");
    assert!(
        APP_JS.contains(TERRITORIES_SLOT),
        "app.js has the territory slot"
    );
    APP_JS.replacen(TERRITORIES_SLOT, &json, 1)
});
const APP_CSS: &str = include_str!("web/app.css");
const CONSENT_PROCESSING: &str = include_str!("web/consent-processing.html");
const CONSENT_TRANSFER: &str = include_str!("web/consent-transfer.html");
/// The API's OpenAPI 3.1 document (`docs/openapi.json`; `tests/openapi.rs`
/// checks real answers against it).
const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// The request id header, honoured and returned.
const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The page's policy: its own script and style files only (no inline code,
/// no `eval`), requests to its own origin only, never framed.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// Event streams open per client on this instance.
#[derive(Debug, Default)]
pub struct ClientStreams {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One stream's hold on its client's count; released when the stream ends.
#[derive(Debug)]
pub struct StreamSlot {
    streams: Arc<ClientStreams>,
    client: IpAddr,
}

impl ClientStreams {
    fn take(self: &Arc<Self>, client: IpAddr, cap: usize) -> Option<StreamSlot> {
        let mut open = self.open.lock().expect("not poisoned");
        let count = open.entry(client).or_insert(0);
        if cap > 0 && *count >= cap {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            streams: self.clone(),
            client,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().expect("not poisoned");
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

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
    let started = tokio::time::Instant::now();
    let request_id = request_id(req.headers());
    let route = route_of(req.uri().path());
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let origin = req
        .headers()
        .get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|origin| app.config.cors_origins.iter().any(|o| o == origin))
        .map(str::to_owned);
    let mut response = if req.method() == Method::OPTIONS {
        preflight(route, origin.is_some())
    } else {
        // The caller's trace (W3C `traceparent`) goes on, or a new one
        // starts: the request's outbox row, its Kafka record, the insurer
        // calls and the quote events all carry it.
        let parent = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse);
        let span = tracing::info_span!(
            "http",
            %request_id,
            route,
            method,
            trace_id = tracing::field::Empty
        );
        let trace = osago_core::trace::start(&span, parent.as_ref());
        span.record("trace_id", trace.trace_id());
        // Boxed: hyper keeps room for this future for the life of every
        // connection, SSE streams included, so it must stay small.
        Box::pin(
            route_request(app.clone(), peer, req)
                .instrument(span)
                .in_trace(trace),
        )
        .await
    };
    let headers = response.headers_mut();
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(X_REQUEST_ID, value);
    }
    if let Some(origin) = origin.filter(|_| route.starts_with("/api/")) {
        headers.insert(
            ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_str(&origin).expect("checked when configured"),
        );
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("location, retry-after, x-request-id"),
        );
        headers.append(VARY, HeaderValue::from_static("origin"));
    }
    let status = response.status().as_u16();
    app.metrics
        .http_requests
        .get_or_create(&crate::metrics::HttpLabels {
            route,
            method,
            status,
        })
        .inc();
    app.metrics
        .http_request_seconds
        .get_or_create(&crate::metrics::RouteLabel { route })
        .observe(started.elapsed().as_secs_f64());
    Ok(response)
}

/// The request's `X-Request-Id` when it is a sane token (1-128 of
/// `A-Z a-z 0-9 . _ : -`), else a new one: returned on the answer and on
/// every log line of the request.
fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The route pattern of `path`, for labels and logs (never an id).
pub fn route_of(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] => "/",
        ["app.js"] => "/app.js",
        ["app.css"] => "/app.css",
        ["favicon.ico"] => "/favicon.ico",
        ["openapi.json"] => "/openapi.json",
        ["consent", _] => "/consent/{text}",
        ["health", ..] => "/health",
        ["metrics"] => "/metrics",
        ["api", "osago", "requests"] => "/api/osago/requests",
        ["api", "osago", "requests", _, "stream"] => "/api/osago/requests/{id}/stream",
        ["api", "osago", "requests", _, "quotes"] => "/api/osago/requests/{id}/quotes",
        _ => "other",
    }
}

/// Whether `path` is a request's event stream: such a request, first on its
/// connection or handed back by hyper on a kept-alive one, is answered on
/// the listener's lean HTTP/1 path
/// ([`osago_service::serve::LeanStreams`]), which keeps hyper's
/// per-connection buffers out of memory for the stream's life.
pub fn is_stream_path(path: &str) -> bool {
    route_of(path) == "/api/osago/requests/{id}/stream"
}

/// An `OPTIONS` answer: what the route allows, and, for an API route asked
/// from a configured origin, the CORS preflight grant.
fn preflight(route: &'static str, allowed_origin: bool) -> Response<Body> {
    let mut response = Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(ALLOW, "GET, POST, OPTIONS")
        .body(full(Bytes::new()))
        .expect("valid response");
    if allowed_origin && route.starts_with("/api/") {
        let headers = response.headers_mut();
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        headers.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, last-event-id, x-request-id"),
        );
        headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    response
}

async fn route_request<B: RequestBody>(
    app: Arc<App>,
    peer: std::net::SocketAddr,
    req: Request<B>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let client = osago_service::client::client_key(app.trusted.client(peer.ip(), req.headers()));
    match (req.method(), segments.as_slice()) {
        (&Method::GET, [""]) => page(),
        (&Method::GET, ["app.js"]) => {
            asset("text/javascript; charset=utf-8", APP_JS_SERVED.as_str())
        }
        (&Method::GET, ["app.css"]) => asset("text/css; charset=utf-8", APP_CSS),
        (&Method::GET, ["consent", "processing"]) => document(CONSENT_PROCESSING),
        (&Method::GET, ["consent", "transfer"]) => document(CONSENT_TRANSFER),
        (&Method::GET, ["openapi.json"]) => asset("application/json", OPENAPI),
        (_, [""] | ["app.js" | "app.css" | "openapi.json"] | ["consent", _]) => {
            method_not_allowed("GET")
        }
        (&Method::GET, ["favicon.ico"]) => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(full(Bytes::new()))
            .expect("valid response"),
        // Each handler's future is boxed, as this one is: see `handle`.
        (&Method::GET, ["health" | "metrics", ..]) if app.admin_on_api => {
            Box::pin(app.admin.handle(&req))
                .await
                .map(BodyExt::boxed_unsync)
        }
        (&Method::POST, ["api", "osago", "requests"]) => {
            match Box::pin(limit(&app, client)).await {
                Some(refused) => refused,
                None => Box::pin(create(&app, client, req)).await,
            }
        }
        (_, ["api", "osago", "requests"]) => method_not_allowed("POST"),
        (&Method::GET, ["api", "osago", "requests", id, "stream"]) => {
            let last_event_id = req
                .headers()
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match authorised(&app, id, &req) {
                Some(id) => match Box::pin(read_limit(&app, client)).await {
                    Some(refused) => refused,
                    None => Box::pin(stream(&app, client, id, last_event_id)).await,
                },
                None => not_found(),
            }
        }
        (&Method::GET, ["api", "osago", "requests", id, "quotes"]) => {
            match authorised(&app, id, &req) {
                Some(id) => match Box::pin(read_limit(&app, client)).await {
                    Some(refused) => refused,
                    None => Box::pin(quotes(&app, id)).await,
                },
                None => not_found(),
            }
        }
        (_, ["api", "osago", "requests", _, "stream" | "quotes"]) => method_not_allowed("GET"),
        _ => not_found(),
    }
}

/// The request id in the path, when the request carries its access token.
fn authorised<B>(app: &App, id: &str, req: &Request<B>) -> Option<RequestId> {
    let id = id.parse::<RequestId>().ok()?;
    app.config
        .access_keys
        .allows(&id, req.headers())
        .then_some(id)
}

fn page() -> Response<Body> {
    let mut response = document(INDEX_HTML);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// An HTML document under [`PAGE_CSP`].
fn document(html: &'static str) -> Response<Body> {
    Response::builder()
        .header(CONTENT_TYPE, "text/html; charset=utf-8")
        .header(CACHE_CONTROL, "public, max-age=300")
        .header(CONTENT_SECURITY_POLICY, PAGE_CSP)
        .header(X_FRAME_OPTIONS, "DENY")
        .body(full(html))
        .expect("valid response")
}

/// One of the page's files.
fn asset(content_type: &'static str, text: &'static str) -> Response<Body> {
    Response::builder()
        .header(CONTENT_TYPE, content_type)
        .header(CACHE_CONTROL, "no-cache")
        .body(full(text))
        .expect("valid response")
}

/// The inbound B2C limit: `Some(429)` when the client is over it, then the
/// admission limit.
async fn limit(app: &App, client: IpAddr) -> Option<Response<Body>> {
    if let Some(refused) = client_limit(app, client).await {
        return Some(refused);
    }
    admission(app).await
}

/// The per-client limit on stream and quotes reads.
async fn read_limit(app: &App, client: IpAddr) -> Option<Response<Body>> {
    if app.config.read_limit.emission_interval_us() == 0 {
        return None;
    }
    let refusal = Refusal {
        reason: "read_rate",
        status: StatusCode::TOO_MANY_REQUESTS,
        kind: "/problems/rate-limited",
        title: "Too Many Requests",
        detail: "too many reads from this client",
    };
    let key = format!("read:{client}");
    limited(app, &key, &app.config.read_limit, refusal).await
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
async fn client_limit(app: &App, client: IpAddr) -> Option<Response<Body>> {
    if app.config.rate_limit.emission_interval_us() == 0 {
        return None;
    }
    let key = client.to_string();
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
/// `limit`; a limiter that cannot be reached lets the request through or
/// refuses it with 503 ([`Config::limiter_failure`]), counts it and says so
/// in the log.
///
/// [`Config::limiter_failure`]: crate::Config::limiter_failure
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
            let decision = match app.config.limiter_failure {
                LimiterFailure::Open => "open",
                LimiterFailure::Closed => "closed",
            };
            app.metrics
                .limiter_unavailable
                .get_or_create(&crate::metrics::LimiterLabels {
                    limit: refusal.reason,
                    decision,
                })
                .inc();
            match app.config.limiter_failure {
                LimiterFailure::Open => {
                    tracing::warn!(limit = refusal.reason, error = %err, "limiter unavailable; request let through");
                    None
                }
                LimiterFailure::Closed => {
                    tracing::warn!(limit = refusal.reason, error = %err, "limiter unavailable; request refused");
                    reject(app, "limiter_unavailable");
                    Some(unavailable(
                        "the service cannot check its limits now; try again",
                    ))
                }
            }
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
    /// Opens the stream and quotes (`Authorization: Bearer`); the page gets
    /// it as a cookie.
    access_token: String,
    stream_url: String,
    quotes_url: String,
    deadline_at: chrono::DateTime<chrono::Utc>,
    /// The lawful price range of this request (before any insurer answers):
    /// every insurer's premium must lie in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    lawful_range: Option<osago_core::tariff::PriceRange>,
}

async fn create<B: RequestBody>(app: &App, client: IpAddr, req: Request<B>) -> Response<Body> {
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
    // The body, like the head, must arrive within the header-read timeout:
    // a body trickled a byte at a time holds a connection and a task.
    let read = tokio::time::timeout(
        app.config.connections.header_read_timeout,
        Limited::new(req.into_body(), limit).collect(),
    )
    .await;
    let Ok(read) = read else {
        reject(app, "slow_body");
        return problem(
            StatusCode::REQUEST_TIMEOUT,
            "about:blank",
            "Request Timeout",
            "the body did not arrive in time",
            vec![],
        );
    };
    let body = match read {
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
    // What a person types (a lower-case VIN, a plate in Latin letters,
    // spaces) is made canonical before the rules see it.
    request.normalize();
    if let Err(errors) = request.validate(today) {
        reject(app, "invalid");
        return invalid(errors);
    }
    // Every insurer prices the same start date.
    let start = request.policy.effective_start(today);
    request.policy.start_date = Some(start);
    // A request the tariff cannot price (a category it does not model)
    // still goes to the insurers; it has no range to show.
    let lawful_range = osago_core::tariff::lawful_range(&request, start).ok();

    let request_id = RequestId::random();
    let created_at = app.deps.clock.now();
    // The consent time is the server's, never the browser's.
    request.consent.given_at = Some(created_at);
    let consent = ConsentRecord::of(&request, created_at, client);
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
    if let Err(err) = app.deps.requests.create(&event, &consent).await {
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
            access_token: app.config.access_keys.issue(&request_id),
            stream_url: format!("{base}/stream"),
            quotes_url: format!("{base}/quotes"),
            deadline_at,
            lawful_range,
        },
    );
    response.headers_mut().insert(
        LOCATION,
        HeaderValue::from_str(&format!("{base}/quotes")).expect("ascii"),
    );
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_str(
            &app.config
                .access_keys
                .cookie(&request_id, app.config.retention),
        )
        .expect("ascii"),
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

async fn stream(
    app: &Arc<App>,
    client: IpAddr,
    id: RequestId,
    last_event_id: Option<String>,
) -> Response<Body> {
    let Some(slot) = app.streams.take(client, app.config.max_streams_per_client) else {
        reject(app, "client_streams");
        let mut response = problem(
            StatusCode::TOO_MANY_REQUESTS,
            "/problems/rate-limited",
            "Too Many Requests",
            "too many open streams from this client",
            vec![],
        );
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("5"));
        return response;
    };
    let summary = match summary_or_404(app, id).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let subscription = app.hub.subscribe(id);
    let params = StreamParams {
        request_id: id,
        created_at: summary.created_at,
        deadline_at: summary.deadline_at,
        grace: app.config.stream_grace,
        heartbeat: app.config.heartbeat_interval,
        retry: app.config.sse_retry,
        cursor: last_event_id
            .as_deref()
            .map(Cursor::parse)
            .unwrap_or_default(),
    };
    let reconnect = last_event_id.is_some();
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
    if reconnect && state.nothing_left() {
        // The client saw the end already: 204 tells EventSource to stop
        // reconnecting (a 200 would replay the end every `retry`).
        return Response::builder()
            .status(StatusCode::NO_CONTENT)
            .header(CACHE_CONTROL, "no-store")
            .body(full(Bytes::new()))
            .expect("valid response");
    }
    // The slot lives as long as the stream's state: released when the
    // stream ends or the client goes away.
    let chunks = futures::stream::unfold((state, slot), |(mut state, slot)| async move {
        state.next_chunk().await.map(|chunk| (chunk, (state, slot)))
    })
    .map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
    Response::builder()
        .header(CONTENT_TYPE, "text/event-stream")
        .header(CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(StreamBody::new(chunks).boxed_unsync())
        .expect("valid response")
}
