//! Valkey (or Redis 7) adapter: the aggregator's [`StateStore`], the shared
//! [`ResilienceStore`](osago_core::ports::ResilienceStore) of its resilience
//! policies, and the [`RateLimiter`](osago_core::ports::RateLimiter), over a
//! deadpool-redis connection pool.
//!
//! # Key layout
//!
//! A request's state (version 2) lives in one of [`SHARDS`] hash tags,
//! `{sNN}` (`NN` = the request id's last byte modulo 16), together with
//! that shard's in-flight index, so every multi-key script stays in one
//! cluster slot while the requests spread over 16 slots:
//!
//! | key                                 | type   | content                                   | written by                |
//! |-------------------------------------|--------|-------------------------------------------|---------------------------|
//! | `osago:v2:{sNN}:<request_id>:claim`     | string | `1`                                   | `SET … NX EX <ttl>`       |
//! | `osago:v2:{sNN}:<request_id>:progress`  | hash   | field = insurer id, value = [`InsurerProgress`] as JSON | `MULTI HSET … EXPIRE … EXEC` |
//! | `osago:v2:{sNN}:<request_id>:event`     | string | the request event (JSON, with the form's personal data) while in flight, for a pod resuming it | one script with the claim, `SET … EX` |
//! | `osago:v2:{sNN}:in-flight`          | zset   | the shard's request ids in flight, scored by lease expiry (unix ms) | scripts; `EXPIRE` = the claim TTL |
//! | `osago:v1:rl:{<client key>}`        | string | GCRA theoretical arrival time (unix ms)   | one script, `SET … PX` |
//! | `osago:v1:q:{<insurer>}`            | string | shared outbound quota TAT (unix µs)       | one script, `SET … PX` |
//! | `osago:v1:cc:{<insurer>}`           | hash   | field = pod, value = `held:want:expires_ms` (slot lease) | one script, `HSET` + `PEXPIRE` |
//! | `osago:v1:cb:{<insurer>}`           | string | circuit breaker state (JSON)              | `SET … PX` |
//!
//! The store runs on a single Valkey (`redis://`, `rediss://`) or a
//! cluster (`redis+cluster://host:port[,host:port…]`, `rediss+cluster://`):
//! every other key is a single-key operation.
//!
//! Every key is written together with its TTL, atomically (`SET … EX`, or
//! `HSET` and `EXPIRE` in one `MULTI`/`EXEC`), so no key ever exists without
//! one, not even for an instant. Saving a progress entry renews the TTL of
//! the request's whole hash, like the memory store. TTLs are whole seconds,
//! rounded up, at least 1.
//!
//! # Errors
//!
//! Every call (taking a connection included) is bounded by
//! [`ValkeyConfig::timeout`]: past it the call fails with
//! [`PortErrorKind::Timeout`]. Connection and server errors are
//! [`PortErrorKind::Unavailable`]; a stored value that is not valid progress
//! JSON is [`PortErrorKind::Corrupt`]. Messages name the operation, never a
//! value.

use std::fmt;
use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, AsyncConnectionConfig, RedisError};
use deadpool_redis::{Manager, Pool, PoolError, Runtime};
use osago_core::breaker::BreakerSnapshot;
use osago_core::ports::{
    AnswerSample, HealthCheck, InsurerProgress, PortError, PortErrorKind, StateStore,
};
use osago_core::{InsurerId, RequestEvent, RequestId};
use serde::{Deserialize, Serialize};

/// Prefix of every key this adapter writes.
const KEY_PREFIX: &str = "osago:v1:";

/// How the [`ValkeyStore`] connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ValkeyConfig {
    /// Most connections open at once.
    pub pool_size: usize,
    /// Bound on each call: taking or opening a connection plus the command.
    pub timeout: Duration,
    /// TLS settings for a `rediss://` URL (in-transit encryption).
    #[serde(default)]
    pub tls: ValkeyTls,
}

/// TLS to Valkey: with a `rediss://` URL the server is verified against the
/// system's roots, or against `ca_file` when given; `cert_file` and
/// `key_file` present a client certificate (mutual TLS).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValkeyTls {
    /// PEM file of the CA(s) to trust instead of the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM file of the client certificate.
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM file of the client certificate's private key.
    pub key_file: Option<std::path::PathBuf>,
}

impl Default for ValkeyConfig {
    fn default() -> Self {
        Self {
            pool_size: 32,
            timeout: Duration::from_secs(2),
            tls: ValkeyTls::default(),
        }
    }
}

/// The URL with the TLS files of `tls` applied (read here; a missing file
/// is named in the error, never its content).
fn connection_info(url: &str, tls: &ValkeyTls) -> Result<redis::ConnectionInfo, PortError> {
    use redis::IntoConnectionInfo;
    let invalid = |e: RedisError| {
        PortError::new(PortErrorKind::Misconfigured, "invalid valkey url").with_source(e)
    };
    if tls.ca_file.is_none() && tls.cert_file.is_none() && tls.key_file.is_none() {
        return url.into_connection_info().map_err(invalid);
    }
    if !url.starts_with("rediss://") {
        return Err(PortError::new(
            PortErrorKind::Misconfigured,
            "valkey TLS files are given but the url is not rediss://",
        ));
    }
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            PortError::new(
                PortErrorKind::Misconfigured,
                format!("cannot read {}", path.display()),
            )
            .with_source(e)
        })
    };
    let client_tls = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        (None, None) => None,
        _ => {
            return Err(PortError::new(
                PortErrorKind::Misconfigured,
                "a valkey client certificate needs both its certificate and its key",
            ))
        }
    };
    let root_cert = tls.ca_file.as_deref().map(read).transpose()?;
    let client = redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(invalid)?;
    Ok(client.get_connection_info().clone())
}

/// The aggregator's in-flight state in Valkey. Cheap to clone (the pool is
/// shared).
#[derive(Clone)]
pub struct ValkeyStore {
    pool: Pools,
    timeout: Duration,
}

/// One server, or a cluster.
#[derive(Clone)]
enum Pools {
    Single(Pool),
    Cluster(deadpool_redis::cluster::Pool),
}

/// A pooled connection to a server or to the cluster.
enum Conn {
    Single(deadpool_redis::Connection),
    Cluster(deadpool_redis::cluster::Connection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Pools {
    fn status(&self) -> deadpool_redis::Status {
        match self {
            Pools::Single(p) => p.status(),
            Pools::Cluster(p) => p.status(),
        }
    }

    async fn get(&self, op: &'static str) -> Result<Conn, PortError> {
        match self {
            Pools::Single(p) => p
                .get()
                .await
                .map(Conn::Single)
                .map_err(|e| pool_error(op, e)),
            Pools::Cluster(p) => p
                .get()
                .await
                .map(Conn::Cluster)
                .map_err(|e| pool_error(op, e)),
        }
    }
}

/// The node URLs of a cluster URL (`redis+cluster://a:1,b:2`), or `None`
/// for a single server's URL.
fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme {
        "redis+cluster" | "valkey+cluster" => "redis",
        "rediss+cluster" => "rediss",
        _ => return None,
    };
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), rest),
    };
    Some(
        hosts
            .trim_end_matches('/')
            .split(',')
            .map(|host| format!("{scheme}://{userinfo}{}", host.trim()))
            .collect(),
    )
}

impl fmt::Debug for ValkeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("ValkeyStore")
            .field("pool_size", &status.max_size)
            .field("connections", &status.size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ValkeyStore {
    /// A store for the server at `url` (`redis://host:port[/db]`): builds
    /// the pool and checks the server answers a `PING`, so a caller can
    /// retry at start-up. Later calls reconnect on their own.
    pub async fn connect(url: &str, config: ValkeyConfig) -> Result<Self, PortError> {
        let store = Self::new_lazy(url, config)?;
        store.ping().await?;
        Ok(store)
    }

    /// The store without contacting the server (connections are opened on
    /// first use). Fails only on an invalid URL.
    fn new_lazy(url: &str, config: ValkeyConfig) -> Result<Self, PortError> {
        if let Some(nodes) = cluster_nodes(url) {
            if config.tls != ValkeyTls::default() {
                return Err(PortError::new(
                    PortErrorKind::Misconfigured,
                    "a valkey cluster uses the system's trust store: CA and client certificate files are not supported for rediss+cluster:// yet",
                ));
            }
            let mut cluster = deadpool_redis::cluster::Config::from_urls(nodes);
            cluster.pool = Some(deadpool_redis::PoolConfig {
                max_size: config.pool_size.max(1),
                timeouts: deadpool_redis::Timeouts {
                    wait: Some(config.timeout),
                    create: Some(config.timeout),
                    recycle: Some(config.timeout),
                },
                ..deadpool_redis::PoolConfig::default()
            });
            let pool = cluster.create_pool(Some(Runtime::Tokio1)).map_err(|e| {
                PortError::new(PortErrorKind::Misconfigured, "invalid valkey cluster url")
                    .with_source(e)
            })?;
            return Ok(Self {
                pool: Pools::Cluster(pool),
                timeout: config.timeout,
            });
        }
        let connection = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout));
        // The URL may carry a password: never echo it.
        let info = connection_info(url, &config.tls)?;
        let manager = Manager::new_with_config(info, connection).map_err(|e| {
            PortError::new(PortErrorKind::Misconfigured, "invalid valkey url").with_source(e)
        })?;
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.timeout))
            .create_timeout(Some(config.timeout))
            .recycle_timeout(Some(config.timeout))
            .build()
            .map_err(|e| {
                PortError::new(PortErrorKind::Unavailable, "cannot build the valkey pool")
                    .with_source(e)
            })?;
        Ok(Self {
            pool: Pools::Single(pool),
            timeout: config.timeout,
        })
    }

    /// Checks that the server answers (`PING`), for health checks.
    pub async fn ping(&self) -> Result<(), PortError> {
        let pong: String = self.query("ping", &redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(PortError::new(
                PortErrorKind::Unavailable,
                "valkey ping got an unexpected answer",
            ))
        }
    }

    /// Runs one command on a pooled connection, within the timeout.
    async fn query<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, PortError> {
        self.bounded(op, async {
            let mut conn = self.pool.get(op).await?;
            cmd.query_async(&mut conn)
                .await
                .map_err(|e| redis_error(op, e))
        })
        .await
    }

    /// Runs one of the Lua scripts (`lua/*.lua`, hashed once) by its SHA
    /// (`EVALSHA`; the script is loaded on the server's first `NOSCRIPT`),
    /// within the timeout.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        script: &redis::ScriptInvocation<'_>,
    ) -> Result<T, PortError> {
        self.bounded(op, async {
            let mut conn = self.pool.get(op).await?;
            script
                .invoke_async(&mut conn)
                .await
                .map_err(|e| redis_error(op, e))
        })
        .await
    }

    /// Runs a pipeline on a pooled connection, within the timeout.
    async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T, PortError> {
        self.bounded(op, async {
            let mut conn = self.pool.get(op).await?;
            pipe.query_async(&mut conn)
                .await
                .map_err(|e| redis_error(op, e))
        })
        .await
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, PortError>>,
    ) -> Result<T, PortError> {
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(PortError::new(
                PortErrorKind::Timeout,
                format!("valkey {op} timed out after {:?}", self.timeout),
            )),
        };
        if let Err(e) = &result {
            tracing::debug!(op, kind = ?e.kind(), error = %e, "valkey call failed");
        }
        result
    }
}

#[async_trait]
impl HealthCheck for ValkeyStore {
    fn name(&self) -> &'static str {
        "valkey"
    }

    async fn check(&self) -> Result<(), PortError> {
        self.ping().await
    }
}

#[async_trait]
impl StateStore for ValkeyStore {
    async fn save_progress(
        &self,
        progress: &InsurerProgress,
        ttl: Duration,
    ) -> Result<(), PortError> {
        let value = serde_json::to_vec(progress).map_err(|e| {
            PortError::new(PortErrorKind::Corrupt, "cannot encode progress").with_source(e)
        })?;
        let key = progress_key(&progress.request_id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&key)
            .arg(progress.insurer_id.as_str())
            .arg(value)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(ttl_secs(ttl))
            .ignore();
        self.query_pipe::<()>("save progress", &pipe).await
    }

    async fn load_progress(
        &self,
        request_id: &RequestId,
    ) -> Result<Vec<InsurerProgress>, PortError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(progress_key(request_id));
        let fields: Vec<(String, Vec<u8>)> = self.query("load progress", &cmd).await?;
        let mut out = fields
            .into_iter()
            .map(|(field, value)| decode_progress(request_id, &field, &value))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.insurer_id.as_str().cmp(b.insurer_id.as_str()));
        Ok(out)
    }

    async fn begin_request(
        &self,
        event: &RequestEvent,
        lease: Duration,
        keep: Duration,
        ttl: Duration,
    ) -> Result<bool, PortError> {
        let json = serde_json::to_vec(event).map_err(|e| {
            PortError::new(PortErrorKind::Corrupt, "cannot encode the request event").with_source(e)
        })?;
        let mut cmd = BEGIN_SCRIPT.prepare_invoke();
        cmd.key(claim_key(&event.request_id))
            .key(event_key(&event.request_id))
            .key(in_flight_key(shard(&event.request_id)))
            .arg(event.request_id.to_string())
            .arg(json)
            .arg(millis(lease))
            .arg(ttl_secs(keep))
            .arg(ttl_secs(ttl));
        let began: i64 = self.invoke("begin request", &cmd).await?;
        Ok(began == 1)
    }

    async fn renew_leases(&self, ids: &[RequestId], lease: Duration) -> Result<(), PortError> {
        if ids.is_empty() {
            return Ok(());
        }
        // One script per shard the ids fall in (one cluster slot each).
        let mut by_shard: std::collections::BTreeMap<u8, Vec<String>> = Default::default();
        for id in ids {
            by_shard.entry(shard(id)).or_default().push(id.to_string());
        }
        for (shard, ids) in by_shard {
            let mut cmd = RENEW_SCRIPT.prepare_invoke();
            cmd.key(in_flight_key(shard)).arg(millis(lease));
            for id in ids {
                cmd.arg(id);
            }
            let _: i64 = self.invoke("renew leases", &cmd).await?;
        }
        Ok(())
    }

    async fn take_over(&self, lease: Duration, max: usize) -> Result<Vec<RequestEvent>, PortError> {
        // Every shard in turn, up to `max` in all; the shard to start from
        // rotates so no shard waits behind a busy one.
        let start = rand_shard();
        let mut events: Vec<Vec<u8>> = Vec::new();
        for step in 0..SHARDS {
            let left = max.max(1).saturating_sub(events.len());
            if left == 0 {
                break;
            }
            let shard = (start + step) % SHARDS;
            let mut cmd = TAKE_OVER_SCRIPT.prepare_invoke();
            cmd.key(in_flight_key(shard))
                .arg(millis(lease))
                .arg(left)
                .arg(shard_prefix(shard));
            let taken: Vec<Vec<u8>> = self.invoke("take over", &cmd).await?;
            events.extend(taken);
        }
        events
            .into_iter()
            .map(|json| {
                serde_json::from_slice(&json).map_err(|e| {
                    PortError::new(
                        PortErrorKind::Corrupt,
                        "undecodable request event in valkey",
                    )
                    .with_source(e)
                })
            })
            .collect()
    }

    async fn end_request(&self, request_id: &RequestId) -> Result<(), PortError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZREM")
            .arg(in_flight_key(shard(request_id)))
            .arg(request_id.to_string())
            .ignore()
            .cmd("DEL")
            .arg(event_key(request_id))
            .ignore();
        self.query_pipe::<()>("end request", &pipe).await
    }

    async fn save_answer_times(
        &self,
        insurer: &InsurerId,
        samples: &[AnswerSample],
        ttl: Duration,
    ) -> Result<(), PortError> {
        let value = serde_json::to_vec(samples).map_err(|e| {
            PortError::new(PortErrorKind::Corrupt, "cannot encode answer times").with_source(e)
        })?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(answers_key(insurer))
            .arg(value)
            .arg("EX")
            .arg(ttl_secs(ttl));
        self.query::<()>("save answer times", &cmd).await
    }

    async fn load_answer_times(&self, insurer: &InsurerId) -> Result<Vec<AnswerSample>, PortError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(answers_key(insurer));
        let value: Option<Vec<u8>> = self.query("load answer times", &cmd).await?;
        let Some(value) = value else {
            return Ok(Vec::new());
        };
        serde_json::from_slice(&value).map_err(|e| {
            PortError::new(PortErrorKind::Corrupt, "undecodable answer times in valkey")
                .with_source(e)
        })
    }
}

/// What was learned of an insurer's answer times:
/// `osago:v2:answers:<insurer_id>` (a JSON array of `{millis, quoted}`).
pub fn answers_key(insurer: &InsurerId) -> String {
    format!("{STATE_PREFIX}answers:{insurer}")
}

/// The hash-tag shards a request's state is spread over.
pub const SHARDS: u8 = 16;

/// Prefix of the request-state keys (version 2: sharded hash tags).
const STATE_PREFIX: &str = "osago:v2:";

/// The shard of a request: its id's last byte (random in a v4 UUID).
fn shard(request_id: &RequestId) -> u8 {
    request_id.as_uuid().as_bytes()[15] % SHARDS
}

/// A shard to start a round from.
fn rand_shard() -> u8 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        % u32::from(SHARDS)) as u8
}

/// `osago:v2:{sNN}:`.
fn shard_prefix(shard: u8) -> String {
    format!("{STATE_PREFIX}{{s{shard:02}}}:")
}

/// The requests of a shard in flight: a sorted set of request ids scored
/// by lease expiry (unix ms, the server's clock).
fn in_flight_key(shard: u8) -> String {
    format!("{}in-flight", shard_prefix(shard))
}

/// Every shard's in-flight index (`osago:v2:{sNN}:in-flight`).
pub fn in_flight_keys() -> Vec<String> {
    (0..SHARDS).map(in_flight_key).collect()
}

/// The key of one part (`claim`, `event`, `progress`) of a request's state:
/// `osago:v2:{sNN}:<request_id>:<part>`.
pub fn request_key(request_id: &RequestId, part: &str) -> String {
    format!("{}{request_id}:{part}", shard_prefix(shard(request_id)))
}

/// Claim, stored event and lease in one step (all or nothing).
static BEGIN_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/begin.lua")));

/// Extends existing leases only (`XX`: an ended request stays ended).
static RENEW_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/renew.lua")));

/// Expired leases, re-leased to the caller with their stored events; an
/// entry whose event is gone (past its keep time) is dropped.
static TAKE_OVER_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/take_over.lua")));

/// `osago:v1:{<request_id>}:event`.
fn event_key(request_id: &RequestId) -> String {
    request_key(request_id, "event")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// `osago:v1:{<request_id>}:claim`.
fn claim_key(request_id: &RequestId) -> String {
    request_key(request_id, "claim")
}

/// `osago:v1:{<request_id>}:progress`.
fn progress_key(request_id: &RequestId) -> String {
    request_key(request_id, "progress")
}

/// Whole seconds, rounded up, at least 1.
fn ttl_secs(ttl: Duration) -> u64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    secs.max(1)
}

/// One hash field back into progress; it must belong where it is stored.
fn decode_progress(
    request_id: &RequestId,
    field: &str,
    value: &[u8],
) -> Result<InsurerProgress, PortError> {
    let progress: InsurerProgress = serde_json::from_slice(value).map_err(|e| {
        PortError::new(PortErrorKind::Corrupt, "undecodable progress in valkey").with_source(e)
    })?;
    if progress.request_id != *request_id || progress.insurer_id.as_str() != field {
        return Err(PortError::new(
            PortErrorKind::Corrupt,
            "progress in valkey is stored under another request or insurer",
        ));
    }
    Ok(progress)
}

fn redis_error(op: &'static str, e: RedisError) -> PortError {
    let kind = if e.is_timeout() {
        PortErrorKind::Timeout
    } else {
        PortErrorKind::Unavailable
    };
    PortError::new(kind, format!("valkey {op} failed")).with_source(e)
}

fn pool_error(op: &'static str, e: PoolError) -> PortError {
    match e {
        PoolError::Backend(e) => redis_error(op, e),
        PoolError::Timeout(_) => PortError::new(
            PortErrorKind::Timeout,
            format!("valkey {op}: no connection in time"),
        ),
        PoolError::Closed => {
            PortError::new(PortErrorKind::Closed, format!("valkey {op}: pool closed"))
        }
        other => PortError::new(
            PortErrorKind::Unavailable,
            format!("valkey {op}: no connection"),
        )
        .with_source(other),
    }
}

/// GCRA in one atomic script, the arithmetic of
/// [`gcra_step`](osago_core::ratelimit::gcra_step) in microseconds on the
/// server's clock (`TIME`), so every instance shares one limit per key. The TAT key lives
/// exactly as long as it matters (`PX tat - now`).
static GCRA_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/gcra.lua")));

#[async_trait]
impl osago_core::ports::RateLimiter for ValkeyStore {
    async fn check(
        &self,
        key: &str,
        limit: &osago_core::ratelimit::RateLimit,
    ) -> Result<osago_core::ratelimit::Admission, PortError> {
        use osago_core::ratelimit::Admission;
        let interval = limit.emission_interval_us();
        if interval == 0 {
            return Ok(Admission::Allowed);
        }
        let mut cmd = GCRA_SCRIPT.prepare_invoke();
        cmd.key(format!("{KEY_PREFIX}rl:{{{key}}}"))
            .arg(interval)
            .arg(limit.burst);
        let (allowed, retry_after_us): (i64, i64) = self.invoke("rate limit", &cmd).await?;
        Ok(if allowed == 1 {
            Admission::Allowed
        } else {
            Admission::Limited {
                retry_after: Duration::from_micros(retry_after_us.max(1) as u64),
            }
        })
    }
}

/// [`gcra_take`](osago_core::ratelimit::gcra_take) in one atomic script,
/// on the server's clock in microseconds: a block of up to `want` calls of a
/// shared outbound quota. The TAT key lives as long as it matters.
static QUOTA_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/quota.lua")));

/// [`grant_slots`](osago_core::slots::grant_slots) in one atomic script, on
/// the server's clock: one hash per insurer, a field per holder
/// (`held:want:expires_ms`); expired leases are deleted first; the hash
/// lives as long as its longest lease.
static SLOTS_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/slots.lua")));

#[async_trait]
impl osago_core::ports::ResilienceStore for ValkeyStore {
    async fn take_quota(
        &self,
        key: &str,
        limit: &osago_core::ratelimit::RateLimit,
        want: u32,
    ) -> Result<osago_core::ports::QuotaGrant, PortError> {
        use osago_core::ports::QuotaGrant;
        let interval = limit.emission_interval_us();
        if interval == 0 || want == 0 {
            return Ok(QuotaGrant {
                granted: want,
                retry_after: Duration::ZERO,
            });
        }
        let mut cmd = QUOTA_SCRIPT.prepare_invoke();
        cmd.key(format!("{KEY_PREFIX}q:{{{key}}}"))
            .arg(interval)
            .arg(limit.burst)
            .arg(want);
        let (granted, retry_after_us): (i64, i64) = self.invoke("quota", &cmd).await?;
        Ok(QuotaGrant {
            granted: u32::try_from(granted.max(0)).unwrap_or(0).min(want),
            retry_after: Duration::from_micros(retry_after_us.max(0) as u64),
        })
    }

    async fn claim_slots(
        &self,
        key: &str,
        claim: &osago_core::ports::SlotClaim,
    ) -> Result<osago_core::slots::SlotGrant, PortError> {
        let mut cmd = SLOTS_SCRIPT.prepare_invoke();
        cmd.key(slots_key(key))
            .arg(&claim.holder)
            .arg(claim.cap)
            .arg(claim.want)
            .arg(claim.floor)
            .arg(
                u64::try_from(claim.ttl.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            );
        let (granted, held, contended): (i64, i64, i64) = self.invoke("claim slots", &cmd).await?;
        let count = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        Ok(osago_core::slots::SlotGrant {
            granted: count(granted),
            held: count(held),
            contended: contended == 1,
        })
    }

    async fn release_slots(&self, key: &str, holder: &str) -> Result<(), PortError> {
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(slots_key(key)).arg(holder);
        let _: i64 = self.query("release slots", &cmd).await?;
        Ok(())
    }

    async fn put_breaker(
        &self,
        key: &str,
        state: &BreakerSnapshot,
        ttl: Duration,
    ) -> Result<(), PortError> {
        let json = serde_json::to_string(state).map_err(|e| {
            PortError::new(
                PortErrorKind::Corrupt,
                format!("encoding the breaker state: {e}"),
            )
        })?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(breaker_key(key))
            .arg(json)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        let _: () = self.query("put breaker", &cmd).await?;
        Ok(())
    }

    async fn get_breaker(&self, key: &str) -> Result<Option<BreakerSnapshot>, PortError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(breaker_key(key));
        let json: Option<String> = self.query("get breaker", &cmd).await?;
        match json {
            None => Ok(None),
            // A value this version cannot read is no state at all.
            Some(json) => Ok(serde_json::from_str(&json).ok()),
        }
    }
}

fn slots_key(key: &str) -> String {
    format!("{KEY_PREFIX}cc:{{{key}}}")
}

fn breaker_key(key: &str) -> String {
    format!("{KEY_PREFIX}cb:{{{key}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::ZERO), 1);
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_secs(1)), 1);
        assert_eq!(ttl_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(ttl_secs(Duration::from_secs(90)), 90);
    }

    #[test]
    fn keys_share_the_request_hash_tag() {
        let id: RequestId = uuid::Uuid::nil().into();
        assert_eq!(
            claim_key(&id),
            "osago:v2:{s00}:00000000-0000-0000-0000-000000000000:claim"
        );
        assert_eq!(
            progress_key(&id),
            "osago:v2:{s00}:00000000-0000-0000-0000-000000000000:progress"
        );
        // A request's keys and its shard's in-flight index share one hash
        // tag (one cluster slot), and requests spread over every shard.
        let tag = |key: &str| key[key.find('{').unwrap()..=key.find('}').unwrap()].to_owned();
        let mut shards = std::collections::BTreeSet::new();
        for _ in 0..2_000 {
            let id = RequestId::random();
            let index = in_flight_key(shard(&id));
            for key in [claim_key(&id), event_key(&id), progress_key(&id)] {
                assert_eq!(tag(&key), tag(&index), "{key} and {index}");
            }
            shards.insert(tag(&index));
        }
        assert_eq!(shards.len(), usize::from(SHARDS));
        assert_eq!(in_flight_keys().len(), usize::from(SHARDS));
    }

    #[test]
    fn undecodable_progress_is_corrupt() {
        let id = RequestId::random();
        let err = decode_progress(&id, "alfa", b"{not json").unwrap_err();
        assert_eq!(err.kind(), PortErrorKind::Corrupt);
    }

    #[test]
    fn progress_recorded_before_quoted_was_kept_decodes_as_not_quoted() {
        // An entry a pod of the previous release wrote, during a rolling
        // upgrade: no `quoted` field.
        let id = RequestId::random();
        let json = format!(
            r#"{{"request_id":"{id}","insurer_id":"alfa","application_id":"a-1","attempts":2,"version":2,"deadline_at":"2026-12-07T00:00:00Z","finished":true}}"#
        );
        let progress = decode_progress(&id, "alfa", json.as_bytes()).expect("decodes");
        assert!(progress.finished && !progress.quoted);
    }

    #[test]
    fn invalid_url_is_rejected_without_echo() {
        let err =
            ValkeyStore::new_lazy("nonsense://secret@x", ValkeyConfig::default()).unwrap_err();
        assert_eq!(err.kind(), PortErrorKind::Misconfigured);
        assert!(!err.to_string().contains("secret"));
    }
}
