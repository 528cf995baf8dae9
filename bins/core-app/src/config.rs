//! core-app settings (plain data; the binary fills them from flags and env).

use std::time::Duration;

use osago_core::ratelimit::RateLimit;
use osago_service::serve::ConnectionLimits;
use serde::{Deserialize, Serialize};

use crate::access::AccessKeys;

/// core-app settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// How long insurers get for a request; sets the request's `deadline_at`.
    pub request_deadline: Duration,
    /// How long a stream waits past the deadline for final events before it
    /// ends with `timeout`.
    pub stream_grace: Duration,
    /// Interval of SSE heartbeats.
    pub heartbeat_interval: Duration,
    /// The reconnection delay suggested to EventSource clients (`retry:`).
    pub sse_retry: Duration,
    /// The largest request body accepted (413 above).
    pub body_limit: usize,
    /// How long requests and their quotes are kept.
    pub retention: Duration,
    /// The outbox relay.
    pub relay: RelayConfig,
    /// Consumer group of the read-model projector.
    pub projector_group: String,
    /// The most events the projector applies in one transaction (it takes
    /// whatever has arrived, up to this). Default 256.
    pub projector_batch: usize,
    /// How long shutdown waits for open connections to finish.
    pub drain_timeout: Duration,
    /// The inbound limit on `POST /api/osago/requests` per client (B2C
    /// abuse protection), shared by every instance through the limiter.
    pub rate_limit: RateLimit,
    /// The admission limit on `POST /api/osago/requests` across every
    /// instance sharing the limiter: what the stack (in the end, the
    /// insurers' capacity) can serve; beyond it requests are refused at
    /// once with 503 and Retry-After. Zero rate: none (the default).
    pub admission: RateLimit,
    /// The header trusted proxies name the client in (each appending the
    /// address it saw); `x-forwarded-for` when unset. Read only on
    /// requests from [`Config::trusted_proxies`].
    pub client_ip_header: Option<String>,
    /// The proxies (load balancers, ingress) in front of core-app, as
    /// networks: a request from one of them is counted against the
    /// right-most forwarded address that is not one of them. None (the
    /// default): every client is its peer address and the header is
    /// ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Timeouts and connection caps of the API listener.
    pub connections: ConnectionLimits,
    /// Event streams one client (address, IPv6 /64) may hold open on this
    /// instance; beyond it 429. 0: no cap. Default 16.
    pub max_streams_per_client: usize,
    /// Stream and quotes reads per client, shared through the limiter;
    /// beyond it 429 with Retry-After. Zero rate: none. Default 2/s,
    /// 20 at once.
    pub read_limit: RateLimit,
    /// What a limit does when its store cannot be reached.
    pub limiter_failure: LimiterFailure,
    /// Origins (`https://partner.example`) whose pages may call the API
    /// from the browser (CORS); none by default: the page is same-origin.
    pub cors_origins: Vec<String>,
    /// The keys of stream access tokens (never printed or serialised). A
    /// random key of this process's own by default.
    #[serde(skip)]
    pub access_keys: AccessKeys,
}

/// What a limit does when its store (Valkey) cannot be reached; either way
/// `osago_core_limiter_unavailable_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LimiterFailure {
    /// Let the request through (availability first). The default.
    #[default]
    Open,
    /// Refuse it with 503 and Retry-After (protection first).
    Closed,
}

impl Config {
    /// These settings without any per-client limit or connection cap: the
    /// quote-request rate, reads, streams, connections. For load tests,
    /// whose thousands of users come from a few addresses.
    pub fn without_client_limits(mut self) -> Self {
        self.rate_limit.per_second = 0.0;
        self.read_limit.per_second = 0.0;
        self.max_streams_per_client = 0;
        self.connections.max_connections = 0;
        self.connections.max_connections_per_client = 0;
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            request_deadline: Duration::from_secs(60),
            stream_grace: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(15),
            sse_retry: Duration::from_secs(2),
            body_limit: 64 * 1024,
            retention: Duration::from_secs(3 * 24 * 3600),
            relay: RelayConfig::default(),
            projector_group: "core-app-read-model".to_owned(),
            projector_batch: 256,
            drain_timeout: Duration::from_secs(10),
            rate_limit: RateLimit {
                per_second: 0.2,
                burst: 5,
            },
            client_ip_header: None,
            trusted_proxies: Vec::new(),
            connections: ConnectionLimits::default(),
            max_streams_per_client: 16,
            read_limit: RateLimit {
                per_second: 2.0,
                burst: 20,
            },
            limiter_failure: LimiterFailure::Open,
            access_keys: AccessKeys::default(),
            cors_origins: Vec::new(),
            admission: RateLimit {
                per_second: 0.0,
                burst: 1,
            },
        }
    }
}

/// The outbox relay's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RelayConfig {
    /// Messages claimed at once.
    pub batch_size: usize,
    /// How long a claim holds before another relay may take the message.
    pub lease: Duration,
    /// Poll interval when no notification arrives.
    pub fallback_poll: Duration,
    /// Failed attempts before a message the broker refuses (a corrupt or
    /// oversized record) is dead-lettered. A failure worth retrying (the
    /// broker unreachable, a timeout) never dead-letters: the message is
    /// retried with capped backoff until its request's deadline, then marked
    /// expired. Default 10.
    pub dead_after: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            lease: Duration::from_secs(30),
            fallback_poll: Duration::from_secs(1),
            dead_after: 10,
        }
    }
}
