//! The insurer partner API client (reqwest), the contract of
//! `docs/insurer-api.md`.
//!
//! Every call has a connect timeout and a read (socket) timeout, 5 s by
//! default, plus a whole-call limit, and reads at most `max_body_bytes`.
//! Answers map to [`PollOutcome`]s or to [`InsurerError`]s of a kind the
//! engine's policies read. Error messages never quote the insurer's body
//! beyond field names and its own short reason, so no personal data leaks.

pub mod wire;

use std::time::Duration;

use async_trait::async_trait;
use osago_core::insurer::{Application, ErrorKind, InsurerError, PollOutcome, Quote};
use osago_core::ports::InsurerClient;
use osago_core::{InsurerId, QuoteRequest};
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use wire::{ApplicationCreated, FieldProblems, QuoteState, QuoteStatusWire};

/// Settings of one insurer's client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpInsurerConfig {
    /// Connect timeout.
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// Socket read timeout: the longest silence while waiting for bytes.
    #[serde(with = "humantime_serde_compat")]
    pub read_timeout: Duration,
    /// The longest one call may take, whatever the socket does.
    #[serde(with = "humantime_serde_compat")]
    pub call_timeout: Duration,
    /// The largest answer body read.
    pub max_body_bytes: usize,
    /// Idle connections kept per insurer.
    pub pool_max_idle: usize,
    /// TLS and credentials (not serialised: they come from files and env).
    #[serde(skip)]
    pub credentials: Credentials,
}

impl Default for HttpInsurerConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
            max_body_bytes: 256 * 1024,
            pool_max_idle: 64,
            credentials: Credentials::default(),
        }
    }
}

/// How the client proves itself to an insurer and whom it trusts. `Debug`
/// shows header names and whether a client certificate is set, never a
/// value or a key.
#[derive(Clone, Default)]
pub struct Credentials {
    /// PEM CA certificate(s) trusted for https beside the built-in roots
    /// (an insurer's private CA).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate followed by its private key (mutual TLS).
    pub identity_pem: Option<Vec<u8>>,
    /// Headers sent on every call, such as `Authorization` (values are
    /// marked sensitive).
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Credentials")
            .field("ca_pem", &self.ca_pem.is_some())
            .field("identity_pem", &self.identity_pem.is_some())
            .field("headers", &names)
            .finish()
    }
}

/// Serde for durations as milliseconds (config files).
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// A client for one insurer's partner API.
#[derive(Debug, Clone)]
pub struct HttpInsurerClient {
    insurer_id: InsurerId,
    base: Url,
    http: reqwest::Client,
    config: HttpInsurerConfig,
}

impl HttpInsurerClient {
    /// A client for the API at `base` (e.g. `https://partner.example/api/`).
    pub fn new(
        insurer_id: InsurerId,
        base: Url,
        config: HttpInsurerConfig,
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .timeout(config.call_timeout)
            .pool_max_idle_per_host(config.pool_max_idle)
            .tcp_nodelay(true)
            .user_agent(concat!("osago-aggregator/", env!("CARGO_PKG_VERSION")));
        let credentials = &config.credentials;
        if let Some(ca) = &credentials.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(ca)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(identity) = &credentials.identity_pem {
            builder = builder.identity(reqwest::Identity::from_pem(identity)?);
        }
        if !credentials.headers.is_empty() {
            let mut headers = reqwest::header::HeaderMap::new();
            for (name, value) in &credentials.headers {
                // Checked by the configuration; a bad one is left out
                // rather than echoed.
                let (Ok(name), Ok(mut value)) = (
                    reqwest::header::HeaderName::try_from(name.as_str()),
                    reqwest::header::HeaderValue::try_from(value.as_str()),
                ) else {
                    continue;
                };
                value.set_sensitive(true);
                headers.insert(name, value);
            }
            builder = builder.default_headers(headers);
        }
        let http = builder.build()?;
        let base = if base.path().ends_with('/') {
            base
        } else {
            let mut b = base;
            let path = format!("{}/", b.path());
            b.set_path(&path);
            b
        };
        Ok(Self {
            insurer_id,
            base,
            http,
            config,
        })
    }

    /// The insurer this client calls.
    pub fn insurer_id(&self) -> &InsurerId {
        &self.insurer_id
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("relative path joins")
    }

    async fn body<T: DeserializeOwned>(&self, response: Response) -> Result<T, InsurerError> {
        let body = self.read_body(response).await?;
        decode(&body)
    }

    /// A JSON answer's bytes, within the size limit.
    async fn read_body(&self, mut response: Response) -> Result<Vec<u8>, InsurerError> {
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let mime = v.split(';').next().unwrap_or("").trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            });
        if !is_json {
            return Err(InsurerError::new(
                ErrorKind::BadResponse,
                "answer is not application/json",
            ));
        }
        if response
            .content_length()
            .is_some_and(|len| len > self.config.max_body_bytes as u64)
        {
            return Err(InsurerError::new(
                ErrorKind::BadResponse,
                "answer body too large",
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > self.config.max_body_bytes {
                return Err(InsurerError::new(
                    ErrorKind::BadResponse,
                    "answer body too large",
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn error_from(&self, response: Response) -> InsurerError {
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let kind = match status {
            StatusCode::TOO_MANY_REQUESTS => ErrorKind::RateLimited,
            StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => ErrorKind::Timeout,
            s if s.is_server_error() => ErrorKind::Unavailable,
            StatusCode::NOT_FOUND => ErrorKind::BadResponse,
            s if s.is_client_error() => ErrorKind::Rejected,
            _ => ErrorKind::BadResponse,
        };
        // Best effort: an error body may name fields and carry a sub-second hint.
        let problems = self
            .body::<FieldProblems>(response)
            .await
            .unwrap_or_default();
        let retry_after = hint(retry_after, problems.retry_after_ms);
        // Field paths only (`needs_more_data` keeps those): an insurer's
        // free text is not passed on here.
        let named = InsurerError::needs_more_data(problems.properties.iter().map(|p| &p.property));
        let err = if kind == ErrorKind::Rejected && !named.fields.is_empty() {
            named
        } else {
            InsurerError::new(kind, format!("insurer answered {}", status.as_u16()))
        };
        err.with_retry_after(retry_after)
    }
}

/// Parses `Retry-After` (delta-seconds; an HTTP date is ignored).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn transport_error(err: reqwest::Error) -> InsurerError {
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else if err.is_decode() || err.is_body() {
        ErrorKind::BadResponse
    } else {
        ErrorKind::Unavailable
    };
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_body() || err.is_decode() {
        "answer body broken"
    } else {
        "request failed"
    };
    InsurerError::new(kind, what)
}

fn hint(header: Option<Duration>, body_ms: Option<u64>) -> Option<Duration> {
    body_ms.map(Duration::from_millis).or(header)
}

/// `traceparent` for a call made in the current trace (W3C Trace Context):
/// the calling span's context is the insurer's parent.
fn trace_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(trace) = osago_core::trace::current() {
        if let Ok(value) = trace.header().parse() {
            headers.insert("traceparent", value);
        }
    }
    headers
}

#[async_trait]
impl InsurerClient for HttpInsurerClient {
    async fn create_application(
        &self,
        idempotency_key: &str,
        request: &QuoteRequest,
    ) -> Result<Application, InsurerError> {
        let response = self
            .http
            .post(self.url("applications"))
            .header("Idempotency-Key", idempotency_key)
            .headers(trace_headers())
            .json(request)
            .send()
            .await
            .map_err(transport_error)?;
        if !response.status().is_success() {
            return Err(self.error_from(response).await);
        }
        let header_hint = retry_after(response.headers());
        let body = self.read_body(response).await?;
        decode_created(&body, header_hint)
    }

    async fn poll_quote(&self, application_id: &str) -> Result<PollOutcome, InsurerError> {
        let mut url = self.url("quotes/");
        url.path_segments_mut()
            .expect("http url has segments")
            .pop_if_empty()
            .push(application_id);
        let response = self
            .http
            .get(url)
            .headers(trace_headers())
            .send()
            .await
            .map_err(transport_error)?;
        if !response.status().is_success() {
            return Err(self.error_from(response).await);
        }
        let header_hint = retry_after(response.headers());
        let body = self.read_body(response).await?;
        decode_quote(&body, header_hint)
    }
}

/// Decodes a JSON body; a malformed one is a bad response, named by the
/// kind of error only (never the body: it may echo personal data).
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, InsurerError> {
    serde_json::from_slice(body).map_err(|e| {
        InsurerError::new(
            ErrorKind::BadResponse,
            format!("malformed answer body ({:?} error)", e.classify()),
        )
    })
}

/// What a `POST /applications` answer's body means (`header_hint`: its
/// `Retry-After`). Whatever the bytes, an answer or an error, never a
/// panic (fuzzed in `tests/hostile_input.rs`).
pub fn decode_created(
    body: &[u8],
    header_hint: Option<Duration>,
) -> Result<Application, InsurerError> {
    let created: ApplicationCreated = decode(body)?;
    if created.application_id.is_empty() || created.application_id.len() > 128 {
        return Err(InsurerError::new(
            ErrorKind::BadResponse,
            "invalid application id",
        ));
    }
    Ok(Application {
        id: created.application_id,
        retry_after: hint(header_hint, created.retry_after_ms),
    })
}

/// What a `GET /quotes/{id}` answer's body means (`header_hint`: its
/// `Retry-After`). Whatever the bytes, an outcome or an error, never a
/// panic (fuzzed in `tests/hostile_input.rs`).
pub fn decode_quote(
    body: &[u8],
    header_hint: Option<Duration>,
) -> Result<PollOutcome, InsurerError> {
    let state: QuoteState = decode(body)?;
    let reason = |r: Option<String>, default: &str| {
        let r = r.unwrap_or_else(|| default.to_owned());
        r.chars().take(200).collect::<String>()
    };
    match state.status {
        QuoteStatusWire::InProgress => Ok(PollOutcome::Pending {
            retry_after: hint(header_hint, state.retry_after_ms),
        }),
        QuoteStatusWire::Ready => match state.quote {
            Some(quote) if quote.premium_kopecks.get() > 0 => Ok(PollOutcome::Quoted(Quote {
                // Ours to judge, never the insurer's to claim.
                price_check: None,
                ..quote
            })),
            _ => Err(InsurerError::new(
                ErrorKind::BadResponse,
                "ready answer without a valid quote",
            )),
        },
        QuoteStatusWire::Declined => Ok(PollOutcome::Declined {
            reason: reason(state.reason, "declined by the insurer"),
        }),
        QuoteStatusWire::NoCalculationAvailable => Ok(PollOutcome::Declined {
            reason: reason(state.reason, "no calculation available"),
        }),
        // The application's final status: polling it again gets the same.
        QuoteStatusWire::CalculationError => {
            Err(InsurerError::new(ErrorKind::Unavailable, "insurer calculation error").terminal())
        }
        QuoteStatusWire::Unknown => Err(InsurerError::new(
            ErrorKind::BadResponse,
            "unknown quote status",
        )),
    }
}

#[cfg(test)]
mod tests;
