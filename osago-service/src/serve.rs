//! The HTTP accept loop every listener of ours runs ([`bind`]: a listen
//! backlog of [`LISTEN_BACKLOG`]): HTTP/1.1 and HTTP/2
//! (auto-detected), TCP_NODELAY, per-connection buffers capped at
//! [`MAX_BUF`], accept errors (out of file descriptors)
//! backed off instead of ending the server, and a graceful drain on
//! shutdown, bounded by a timeout.
//!
//! The edge a public listener needs ([`ConnectionLimits`], [`Edge`]):
//!
//! - a header-read timeout: a client has that long from connecting (or
//!   from its previous response) to send a whole request head, however
//!   slowly it trickles bytes (slowloris), HTTP/2's preface included;
//! - an idle timeout: a connection that moves no byte either way that long
//!   is closed (an event stream's heartbeats keep it moving);
//! - a total connection cap, answered at once with `503` and `Retry-After`
//!   beyond it, and a cap per client address (IPv6 by /64; trusted proxies
//!   exempt), answered with `429`, so idle sockets from one address cannot
//!   take every slot;
//! - caps on the request line and headers ([`MAX_BUF`], `max_headers`).
//!
//! A listener may name paths whose requests are long-lived streams
//! ([`LeanStreams`], [`serve_edge_lean`]): a connection's first request
//! for one of them is answered on a lean HTTP/1 path that keeps none of
//! hyper's per-connection buffers for the stream's life (see `lean`), and
//! so is one asked for on a kept-alive connection, which hyper hands back
//! once it is done with every request before it (see `handback`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::client::{client_key, TrustedProxies};

mod handback;
mod lean;

/// The most an HTTP/1 connection buffers (hyper's minimum): the request
/// line and headers must fit (431 above), and an idle event stream's read
/// buffer stays at 8 KiB instead of growing to 16 KiB after its request.
pub const MAX_BUF: usize = 8 * 1024;

/// The accept queue a listener asks the kernel for, which caps it at
/// `net.core.somaxconn` (4096 on current Linux): connections arriving
/// faster than the server accepts them wait here instead of being refused.
/// The standard library's `bind` asks for 128, which a burst of a couple of
/// thousand new users a second on a busy pod overflows (the embedded
/// benchmark's connection errors at 19 000 users); nginx asks for 511,
/// Go for somaxconn.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (address reuse on, as every server does, so a restarted
/// process binds at once) with a listen backlog of [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What a listener allows each connection (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionLimits {
    /// How long a client has to send a request's head: from connecting,
    /// and from the end of its previous response on a kept-alive
    /// connection. Default 10 s.
    pub header_read_timeout: Duration,
    /// A connection that moves no byte either way this long is closed.
    /// Default 120 s.
    pub idle_timeout: Duration,
    /// Connections open at once; beyond it a new one is answered `503`
    /// with `Retry-After` and closed. 0: no cap. Default 16 384 (a
    /// process may hold 20 000 files here).
    pub max_connections: usize,
    /// Connections open at once from one client address (IPv6: one /64;
    /// trusted proxies are exempt); beyond it `429` and closed. 0: no cap.
    /// Default 256.
    pub max_connections_per_client: usize,
    /// Headers a request may carry (431 beyond). Default 64.
    pub max_headers: usize,
    /// Whether an HTTP/1 connection stays open for the client's next
    /// request. Off: every answer carries `connection: close`, so every
    /// request comes on a new connection; each request then costs a
    /// connection. On, an event stream asked for on a kept-alive
    /// connection still takes a listener's lean path ([`LeanStreams`])
    /// once hyper is done with the requests before it. Default on.
    pub keep_alive: bool,
    /// Requests one HTTP/2 connection may have open at once, advertised to
    /// the client (`SETTINGS_MAX_CONCURRENT_STREAMS`); a client or proxy
    /// wanting more opens another connection (which `max_connections`
    /// and `max_connections_per_client` count). An event stream holds its
    /// request open, so a proxy multiplexing many users' streams on one
    /// connection meets this first. Default 200 (hyper's).
    pub http2_max_concurrent_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 16_384,
            max_connections_per_client: 256,
            max_headers: 64,
            keep_alive: true,
            http2_max_concurrent_streams: 200,
        }
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// Called with the reason (`connections`, `client_connections`) when a
/// connection is refused at the door.
pub type OnRefused = Arc<dyn Fn(&'static str) + Send + Sync>;

/// Called, on a listener with [`LeanStreams`], with the path each stream
/// request takes: `first` (the lean path, first on its connection),
/// `handed_back` (the lean path, handed back by hyper on a kept-alive
/// connection) or `hyper` (hyper's, with its per-connection buffers).
pub type OnStream = Arc<dyn Fn(&'static str) + Send + Sync>;

/// A listener's edge: its limits, the proxies it trusts, and what to tell
/// when it refuses.
#[derive(Clone, Default)]
pub struct Edge {
    /// The limits.
    pub limits: ConnectionLimits,
    /// Proxies exempt from the per-client connection cap (they carry many
    /// clients).
    pub trusted: TrustedProxies,
    /// Counts refusals (a metric).
    pub on_refused: Option<OnRefused>,
    /// Counts stream requests by the path that answers them (a metric).
    pub on_stream: Option<OnStream>,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("limits", &self.limits)
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

/// Open connections per client key.
#[derive(Debug, Default)]
struct ClientSlots {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's hold on its client's slots; released on drop.
#[derive(Debug)]
struct ClientSlot {
    slots: Arc<ClientSlots>,
    key: IpAddr,
}

impl ClientSlots {
    fn take(self: &Arc<Self>, key: IpAddr, cap: usize) -> Option<ClientSlot> {
        let mut open = self.open.lock().expect("not poisoned");
        let count = open.entry(key).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            slots: self.clone(),
            key,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("not poisoned");
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// When a connection last moved a byte, in milliseconds since it opened.
#[derive(Debug)]
struct Activity {
    opened: tokio::time::Instant,
    last_ms: AtomicU64,
    /// Writes that moved bytes (tests count them).
    #[cfg(test)]
    writes: std::sync::atomic::AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            #[cfg(test)]
            writes: Default::default(),
        }
    }

    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> tokio::time::Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A socket that records when it last read or wrote a byte.
#[derive(Debug)]
struct Watched {
    socket: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.socket).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.socket).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
            #[cfg(test)]
            self.activity.writes.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.socket).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
            #[cfg(test)]
            self.activity.writes.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

/// What a connection's task, its hyper service and its socket share.
#[derive(Debug, Default)]
struct Shared {
    /// A request head has arrived (the first head's timeout is met).
    requested: AtomicBool,
    /// Responses hyper is done with (their bodies dropped).
    answered: AtomicUsize,
    /// A stream request hyper's socket took for the lean path, with the
    /// socket, once hyper let go of it (`handback`).
    handed: Mutex<Option<Handed>>,
}

/// A socket hyper let go of, with the stream request it never saw.
type Handed = (Watched, Box<Request<Empty<Bytes>>>);

pin_project_lite::pin_project! {
    /// A response body that counts its response answered when hyper drops
    /// it (its last frame written, or the connection gone).
    struct Answered<B> {
        #[pin]
        body: B,
        done: Done,
    }
}

/// Counts a response answered when dropped.
struct Done(Arc<Shared>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.answered.fetch_add(1, Ordering::Release);
    }
}

impl<B: hyper::body::Body> hyper::body::Body for Answered<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Answers a connection refused at the door and closes it, without
/// reading its request (it may never come).
fn refuse(mut socket: TcpStream, status: &'static str) {
    tokio::spawn(async move {
        let response = format!(
            "HTTP/1.1 {status}\r\nretry-after: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            socket.write_all(response.as_bytes()).await?;
            socket.shutdown().await
        })
        .await;
    });
}

/// Serves `handler` on `listener` until `shutdown` resolves, with the
/// default [`Edge`]: see [`serve_edge`].
pub async fn serve<H, F, B>(
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
    draining: impl FnOnce(),
    drain_timeout: Duration,
) where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    serve_edge(
        listener,
        Edge::default(),
        handler,
        shutdown,
        draining,
        drain_timeout,
    )
    .await
}

/// Serves `handler` on `listener`, held to `edge`, until `shutdown`
/// resolves; then stops accepting, calls `draining` (for instance to end
/// open event streams), and waits up to `drain_timeout` for open
/// connections to finish.
pub async fn serve_edge<H, F, B>(
    listener: TcpListener,
    edge: Edge,
    handler: H,
    shutdown: impl Future<Output = ()>,
    draining: impl FnOnce(),
    drain_timeout: Duration,
) where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    serve_inner::<H, F, NoLean<B>, _, B>(
        listener,
        edge,
        handler,
        None,
        shutdown,
        draining,
        drain_timeout,
    )
    .await
}

/// The paths of a listener whose requests are long-lived streams (an SSE
/// endpoint's), and the handler that answers them on the lean HTTP/1 path.
///
/// A connection's first request that is a plain `GET` for such a path
/// (HTTP/1.1, no body, no upgrade, nothing pipelined behind it) is read
/// and answered without hyper: `handler` gets it with an empty body, its
/// response's head is written with `connection: close`, the body streamed
/// (chunked unless its length is known), and the connection closed once
/// the body ends or the client goes. Per open stream that keeps about
/// 9 KiB of hyper's connection state (two 8 KiB buffers, their first pages
/// touched, and the dispatcher) out of memory: core-app's idle stream
/// measured 3.4 KiB this way and 13.1-14.9 through hyper
/// (docs/benchmarks.md).
///
/// A stream asked for on a kept-alive connection, after requests hyper
/// answered (an ingress pooling its upstream connections sends most of
/// them so), takes the same path once hyper is done with every request
/// before it: its head is read before hyper sees it, and when it is a
/// stream's, hyper sees the client's end instead, frees its buffers, and
/// hands the socket back. Where the requests before it end is followed
/// byte by byte (`Content-Length` bodies); after anything else (a chunked
/// body, an upgrade, HTTP/1.0) the connection stays hyper's.
/// Every other request goes through hyper as before; both handlers should
/// answer the same way.
#[derive(Clone)]
pub struct LeanStreams<L> {
    /// Whether a path is a stream's.
    pub route: fn(&str) -> bool,
    /// Answers the requests the route names.
    pub handler: L,
}

impl<L> std::fmt::Debug for LeanStreams<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanStreams").finish_non_exhaustive()
    }
}

/// The handler type of a listener without a lean path.
type NoLean<B> =
    fn(SocketAddr, Request<Empty<Bytes>>) -> std::future::Ready<Result<Response<B>, Infallible>>;

/// [`serve_edge`], with the requests `lean` names answered on the lean
/// HTTP/1 path ([`LeanStreams`]).
pub async fn serve_edge_lean<H, F, L, G, B>(
    listener: TcpListener,
    edge: Edge,
    handler: H,
    lean: LeanStreams<L>,
    shutdown: impl Future<Output = ()>,
    draining: impl FnOnce(),
    drain_timeout: Duration,
) where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    L: Fn(SocketAddr, Request<Empty<Bytes>>) -> G + Clone + Send + Sync + 'static,
    G: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    serve_inner(
        listener,
        edge,
        handler,
        Some(lean),
        shutdown,
        draining,
        drain_timeout,
    )
    .await
}

async fn serve_inner<H, F, L, G, B>(
    listener: TcpListener,
    edge: Edge,
    handler: H,
    lean: Option<LeanStreams<L>>,
    shutdown: impl Future<Output = ()>,
    draining: impl FnOnce(),
    drain_timeout: Duration,
) where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    L: Fn(SocketAddr, Request<Empty<Bytes>>) -> G + Clone + Send + Sync + 'static,
    G: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let limits = edge.limits.clone();
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(MAX_BUF)
        .max_headers(limits.max_headers.max(1))
        .keep_alive(limits.keep_alive)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_BUF as u32)
        .max_concurrent_streams(limits.http2_max_concurrent_streams.max(1));
    let builder = Arc::new(builder);
    let total =
        (limits.max_connections > 0).then(|| Arc::new(Semaphore::new(limits.max_connections)));
    let per_client = Arc::new(ClientSlots::default());
    let refused = |reason: &'static str| {
        if let Some(count) = &edge.on_refused {
            count(reason);
        }
    };
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let permit = match &total {
            Some(total) => match total.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    refused("connections");
                    refuse(socket, "503 Service Unavailable");
                    continue;
                }
            },
            None => None,
        };
        let slot = if limits.max_connections_per_client > 0 && !edge.trusted.is_trusted(peer.ip()) {
            match per_client.take(client_key(peer.ip()), limits.max_connections_per_client) {
                Some(slot) => Some(slot),
                None => {
                    refused("client_connections");
                    refuse(socket, "429 Too Many Requests");
                    continue;
                }
            }
        } else {
            None
        };
        let _ = socket.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let shared = Arc::new(Shared::default());
        let handler = handler.clone();
        let seen = shared.clone();
        let stream_route = lean.as_ref().map(|lean| lean.route);
        let on_stream = edge.on_stream.clone();
        let counted = on_stream.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            seen.requested.store(true, Ordering::Relaxed);
            if let (Some(route), Some(count)) = (stream_route, &counted) {
                if req.method() == http::Method::GET && route(req.uri().path()) {
                    count("hyper");
                }
            }
            let done = Done(seen.clone());
            let response = handler(peer, req);
            // Boxed: hyper keeps the box it holds a request's future in for
            // the connection's life, sized to that future (2.6 KiB of
            // routing and handler state per open event stream); a pointer
            // keeps it to 8 bytes and frees the future with its response.
            Box::pin(async move {
                let response = response.await;
                response.map(|response| response.map(|body| Answered { body, done }))
            })
        });
        let mut io = Watched {
            socket,
            activity: activity.clone(),
        };
        // Every connection holds a watcher: the drain waits for it, on
        // either path.
        let watcher = graceful.watcher();
        // Boxed before the task takes it: pinned inside, it took a second
        // slot of the task's state beside the one it was moved in by
        // (3.9 KiB per connection, now 1.7 KiB and a small task).
        let mut connection: Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> = match &lean
        {
            None => Box::pin(
                watcher.watch(
                    builder
                        .serve_connection(TokioIo::new(io), service)
                        .into_owned(),
                ),
            ),
            Some(lean) => {
                let lean = lean.clone();
                let builder = builder.clone();
                let shared = shared.clone();
                let max_headers = limits.max_headers;
                let hand_back = limits.keep_alive;
                let graceful_spare = graceful.watcher();
                Box::pin(async move {
                    match lean::sniff(&mut io, lean.route, max_headers).await {
                        lean::Sniffed::Lean(request) => {
                            shared.requested.store(true, Ordering::Relaxed);
                            if let Some(count) = &on_stream {
                                count("first");
                            }
                            let _watching = watcher;
                            lean::answer(&mut io, peer, request, &lean.handler).await
                        }
                        lean::Sniffed::Other(read) if hand_back => {
                            // The drain waits for the stream too, if hyper
                            // hands one back.
                            let _watching = graceful_spare;
                            let io = handback::Handback::new(
                                lean::Prefixed::new(read, io),
                                shared.clone(),
                                lean.route,
                                max_headers,
                            );
                            // Boxed on its own, as below.
                            let ended = Box::pin(
                                watcher.watch(
                                    builder
                                        .serve_connection(TokioIo::new(io), service)
                                        .into_owned(),
                                ),
                            )
                            .await;
                            let handed = shared.handed.lock().expect("not poisoned").take();
                            match (ended, handed) {
                                (Ok(()), Some((mut io, request))) => {
                                    if let Some(count) = &on_stream {
                                        count("handed_back");
                                    }
                                    lean::answer(&mut io, peer, *request, &lean.handler).await
                                }
                                // Ended with an error: closed, whatever
                                // it had read.
                                (ended, _) => ended,
                            }
                        }
                        lean::Sniffed::Other(read) => {
                            let io = lean::Prefixed::new(read, io);
                            // Boxed on its own: inline, hyper's connection
                            // sized this future for every connection, a
                            // lean stream's too (2 408 bytes in core-app,
                            // 1 464 so).
                            Box::pin(
                                watcher.watch(
                                    builder
                                        .serve_connection(TokioIo::new(io), service)
                                        .into_owned(),
                                ),
                            )
                            .await
                        }
                        lean::Sniffed::Closed => Ok(()),
                    }
                })
            }
        };
        let (header_read_timeout, idle_timeout) = (limits.header_read_timeout, limits.idle_timeout);
        let task = async move {
            let _held = (permit, slot);
            // The first request's head must arrive within the header-read
            // timeout: hyper's own timer starts only once it knows the
            // protocol, which waits for the client's first bytes.
            let first_head = tokio::time::sleep(header_read_timeout);
            tokio::pin!(first_head);
            let mut first_seen = false;
            loop {
                let idle_at = activity.last() + idle_timeout;
                tokio::select! {
                    ended = &mut connection => {
                        if let Err(err) = ended {
                            tracing::debug!(error = %err, "connection ended with an error");
                        }
                        return;
                    }
                    _ = &mut first_head, if !first_seen => {
                        if shared.requested.load(Ordering::Relaxed) {
                            first_seen = true;
                        } else {
                            tracing::debug!(%peer, "no request head within the header-read timeout; closed");
                            return;
                        }
                    }
                    _ = tokio::time::sleep_until(idle_at) => {
                        if activity.last() + idle_timeout <= tokio::time::Instant::now() {
                            tracing::debug!(%peer, "connection idle past the idle timeout; closed");
                            return;
                        }
                    }
                }
            }
        };
        tokio::spawn(task);
    }
    drop(listener);
    draining();
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(drain_timeout) => {
            tracing::warn!("connections still open after the drain timeout");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::combinators::UnsyncBoxBody;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::Frame;
    use tokio::io::AsyncReadExt;

    type TestBody = UnsyncBoxBody<Bytes, Infallible>;

    /// Drops: tells the test the stream's body is gone.
    struct DropFlag(Option<tokio::sync::oneshot::Sender<()>>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }

    /// A server whose lean handler streams `event N` frames (`count` of
    /// them, or one and then nothing, as an idle stream) and whose hyper handler answers `hyper`; returns
    /// its address and, per lean stream, a receiver told when its body is
    /// dropped.
    async fn lean_server(
        count: Option<usize>,
        edge: Edge,
    ) -> (
        SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Receiver<()>>,
    ) {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (bodies_tx, bodies) = tokio::sync::mpsc::unbounded_channel();
        let lean = LeanStreams {
            route: |path: &str| path.starts_with("/s/"),
            handler: move |_: SocketAddr, req: Request<Empty<Bytes>>| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let _ = bodies_tx.send(rx);
                let flag = DropFlag(Some(tx));
                let last = req
                    .headers()
                    .get("last-event-id")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                async move {
                    let frames =
                        futures::stream::unfold((0usize, flag), move |(n, flag)| async move {
                            match count {
                                Some(count) if n >= count => return None,
                                // An idle stream: nothing more to send.
                                None if n >= 1 => std::future::pending::<()>().await,
                                _ => {}
                            }
                            if n > 0 {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            let frame = Frame::data(Bytes::from(format!("event {n}\n")));
                            Some((Ok::<_, Infallible>(frame), (n + 1, flag)))
                        });
                    let body: TestBody = StreamBody::new(frames).boxed_unsync();
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "text/event-stream")
                            .header("x-last", last)
                            .body(body)
                            .unwrap(),
                    )
                }
            },
        };
        let handler = |_: SocketAddr, req: Request<Incoming>| async move {
            let path = req.uri().path().to_owned();
            if path == "/early" {
                // Answered without reading the request's body.
                let text = "hyper /early unread";
                return Ok(Response::new(Full::new(Bytes::from(text)).boxed_unsync()));
            }
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let text = format!("hyper {path} {}", body.len());
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text)).boxed_unsync()))
        };
        tokio::spawn(serve_edge_lean(
            listener,
            edge,
            handler,
            lean,
            std::future::pending(),
            || {},
            Duration::from_secs(1),
        ));
        (addr, bodies)
    }

    /// Reads until the server closes (or 10 s pass).
    async fn read_to_close(socket: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut buf)).await;
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[tokio::test]
    async fn a_streams_first_request_is_answered_on_the_lean_path_and_closed() {
        let (addr, _bodies) = lean_server(Some(3), Edge::default()).await;
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"GET /s/1 HTTP/1.1\r\nHost: a\r\nLast-Event-ID: 41\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut socket).await;
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        let head = head.to_ascii_lowercase();
        for line in [
            "content-type: text/event-stream",
            "x-last: 41",
            "transfer-encoding: chunked",
            "connection: close",
            "date: ",
        ] {
            assert!(head.contains(line), "{line} missing from {head}");
        }
        assert_eq!(
            body,
            "8\r\nevent 0\n\r\n8\r\nevent 1\n\r\n8\r\nevent 2\n\r\n0\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn other_requests_and_a_kept_alive_connection_stay_with_hyper() {
        let (addr, _bodies) = lean_server(Some(1), Edge::default()).await;
        // Not a stream path; a body; then a stream asked for on the same,
        // kept-alive connection: all hyper's (no `connection: close`).
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(
                b"POST /s/1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
                  GET /s/2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let answer = read_to_close(&mut socket).await;
        assert!(answer.contains("hyper /s/1 3"), "{answer}");
        assert!(answer.contains("hyper /s/2 0"), "{answer}");
        assert!(!answer.contains("event 0"), "{answer}");
        // HTTP/1.0 and a head sent in pieces to a path that is not a
        // stream's: hyper's, every byte of it.
        for request in [
            &b"GET /s/3 HTTP/1.0\r\n\r\n"[..],
            &b"GET /other HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"[..],
        ] {
            let mut socket = TcpStream::connect(addr).await.unwrap();
            let (first, rest) = request.split_at(5);
            socket.write_all(first).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            socket.write_all(rest).await.unwrap();
            let answer = read_to_close(&mut socket).await;
            assert!(answer.starts_with("HTTP/1."), "{answer}");
            assert!(answer.contains("hyper /"), "{answer}");
        }
        // A head over the cap: hyper's 431.
        let mut socket = TcpStream::connect(addr).await.unwrap();
        let mut long = b"GET /s/1 HTTP/1.1\r\nX-Long: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_BUF + 100));
        long.extend_from_slice(b"\r\n\r\n");
        let _ = socket.write_all(&long).await;
        let answer = read_to_close(&mut socket).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }

    /// Reads one response with a length (head and body) from a kept-alive
    /// connection.
    async fn read_response(socket: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        loop {
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .expect("a length")
                    .parse::<usize>()
                    .unwrap();
                if body.len() >= length {
                    return text;
                }
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut chunk))
                .await
                .expect("an answer in time")
                .unwrap();
            assert!(n > 0, "closed before a whole answer: {text}");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    #[tokio::test]
    async fn a_stream_asked_for_on_a_kept_alive_connection_is_handed_to_the_lean_path() {
        let (addr, mut bodies) = lean_server(Some(2), Edge::default()).await;
        let mut socket = TcpStream::connect(addr).await.unwrap();
        // Two requests hyper answers, one with a body, as an ingress's
        // pooled connection carries them...
        for request in [
            &b"POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"GET /page HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            socket.write_all(request).await.unwrap();
            let answer = read_response(&mut socket).await;
            assert!(answer.contains("hyper /"), "{answer}");
            assert!(
                !answer.to_ascii_lowercase().contains("connection: close"),
                "{answer}"
            );
        }
        // ...then a stream: the lean path's (its handler, `connection:
        // close`), on the same connection.
        socket
            .write_all(b"GET /s/1 HTTP/1.1\r\nHost: a\r\nLast-Event-ID: 9\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut socket).await;
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
        let head = head.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
        for line in [
            "x-last: 9",
            "transfer-encoding: chunked",
            "connection: close",
        ] {
            assert!(head.contains(line), "{line} missing from {head}");
        }
        assert_eq!(body, "8\r\nevent 0\n\r\n8\r\nevent 1\n\r\n0\r\n\r\n");
        assert!(bodies.try_recv().is_ok(), "the lean handler answered it");
        // A stream whose head arrives in pieces: held back from hyper until
        // whole, then the lean path's too; so after empty lines (an old
        // client's CRLF after a request), read by hyper or held here.
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"GET /page HTTP/1.1\r\nHost: a\r\n\r\n\r\n")
            .await
            .unwrap();
        let answer = read_response(&mut socket).await;
        assert!(answer.contains("hyper /page 0"), "{answer}");
        for piece in [
            &b"\r\n"[..],
            b"GE",
            b"T /s/2 HTTP/1.1\r\nHo",
            b"st: a\r\n\r\n",
        ] {
            socket.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let answer = read_to_close(&mut socket).await;
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        assert!(answer.ends_with("8\r\nevent 1\n\r\n0\r\n\r\n"), "{answer}");
        assert!(bodies.try_recv().is_ok(), "the lean handler answered it");
    }

    #[tokio::test]
    async fn requests_held_back_and_found_not_streams_reach_hyper_whole() {
        let (addr, mut bodies) = lean_server(Some(1), Edge::default()).await;
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"GET /page HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        read_response(&mut socket).await;
        // A path that turns out not to be a stream's, and a POST: each sent
        // in pieces, each hyper's, every byte of it.
        for (pieces, expected) in [
            (
                vec![&b"GET /s"[..], b"x/1 HTTP/1.1\r\nHo", b"st: a\r\n\r\n"],
                "hyper /sx/1 0",
            ),
            (
                vec![
                    &b"POST /api HTTP/1.1\r\nContent-Le"[..],
                    b"ngth: 3\r\n\r\na",
                    b"bc",
                ],
                "hyper /api 3",
            ),
        ] {
            for piece in pieces {
                socket.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            let answer = read_response(&mut socket).await;
            assert!(answer.contains(expected), "{answer}");
        }
        assert!(bodies.try_recv().is_err(), "no stream was answered");
    }

    #[tokio::test]
    async fn every_stream_request_is_counted_by_the_path_that_answers_it() {
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = paths.clone();
        let edge = Edge {
            on_stream: Some(Arc::new(move |path| seen.lock().unwrap().push(path))),
            ..Edge::default()
        };
        let (addr, _bodies) = lean_server(Some(1), edge).await;
        let stream = "GET /s/1 HTTP/1.1\r\nHost: a\r\n\r\n";
        for before in [
            "",
            "GET /page HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /page HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ] {
            let mut socket = TcpStream::connect(addr).await.unwrap();
            if !before.is_empty() {
                socket.write_all(before.as_bytes()).await.unwrap();
                read_response(&mut socket).await;
            }
            socket.write_all(stream.as_bytes()).await.unwrap();
            let mut head = [0u8; 256];
            let n = socket.read(&mut head).await.unwrap();
            assert!(head[..n].starts_with(b"HTTP/1.1 200"));
        }
        // Other requests are not counted.
        assert_eq!(*paths.lock().unwrap(), ["first", "handed_back", "hyper"]);
    }

    #[tokio::test]
    async fn an_http2_connection_is_told_the_stream_cap() {
        // The advertised cap (SETTINGS_MAX_CONCURRENT_STREAMS), as an
        // HTTP/2 client (h2c, prior knowledge) reads it.
        async fn advertised(edge: Edge) -> usize {
            let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(serve_edge(
                listener,
                edge,
                |_: SocketAddr, _: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                },
                std::future::pending::<()>(),
                || {},
                Duration::from_secs(1),
            ));
            let socket = TcpStream::connect(addr).await.unwrap();
            let (mut client, mut connection) = h2::client::handshake(socket).await.unwrap();
            let request = Request::get(format!("http://{addr}/")).body(()).unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            // Answered: the server's SETTINGS came before its answer.
            let response = tokio::select! {
                response = response => response.unwrap(),
                done = &mut connection => panic!("connection ended: {done:?}"),
            };
            assert_eq!(response.status(), 200);
            connection.max_concurrent_send_streams()
        }
        assert_eq!(advertised(Edge::default()).await, 200);
        let mut edge = Edge::default();
        edge.limits.http2_max_concurrent_streams = 7;
        assert_eq!(advertised(edge).await, 7);
    }

    #[tokio::test]
    async fn a_stream_head_too_long_for_hyper_gets_hyper_s_431() {
        let (addr, mut bodies) = lean_server(Some(1), Edge::default()).await;
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"GET /page HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        read_response(&mut socket).await;
        // Over the cap by less than one read: never taken for a stream.
        let mut long = b"GET /s/1 HTTP/1.1\r\nX-Long: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_BUF + 500));
        long.extend_from_slice(b"\r\n\r\n");
        let _ = socket.write_all(&long).await;
        let answer = read_to_close(&mut socket).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        assert!(bodies.try_recv().is_err(), "no stream was answered");
    }

    #[tokio::test]
    async fn a_head_held_back_too_long_closes_its_connection() {
        let mut edge = Edge::default();
        edge.limits.header_read_timeout = Duration::from_millis(300);
        let (addr, mut bodies) = lean_server(Some(1), edge).await;
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"GET /page HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        read_response(&mut socket).await;
        // A stream's head trickled a byte at a time (a slowloris): held
        // back from hyper, and cut at the header-read timeout all the same
        // (hyper's timer runs while it waits for a head).
        socket
            .write_all(b"GET /s/1 HTTP/1.1\r\nX-Slow: ")
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let cut = loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if socket.write_all(b"a").await.is_err() {
                break started.elapsed();
            }
            let mut probe = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(10), socket.read(&mut probe)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
                Ok(Ok(_)) => panic!("an answer to a head never finished"),
                Err(_) => {}
            }
            assert!(started.elapsed() < Duration::from_secs(10), "still open");
        };
        assert!(cut >= Duration::from_millis(300), "cut at {cut:?}");
        assert!(bodies.try_recv().is_err(), "no stream was answered");
    }

    #[tokio::test]
    async fn a_body_that_holds_a_stream_request_is_never_taken_for_one() {
        let (addr, mut bodies) = lean_server(Some(1), Edge::default()).await;
        let stream_head = b"GET /s/1 HTTP/1.1\r\nHost: a\r\n\r\n";
        // Answered before its body is read; the body, sent after the
        // answer, is a stream request's head (what a proxy that framed it
        // as a body would never take for a request).
        let mut socket = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            stream_head.len()
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        let answer = read_response(&mut socket).await;
        assert!(answer.contains("hyper /early unread"), "{answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        socket.write_all(stream_head).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = socket
            .write_all(b"GET /page HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await;
        let rest = read_to_close(&mut socket).await;
        assert!(!rest.contains("event 0"), "{rest}");
        assert!(bodies.try_recv().is_err(), "no stream was answered");
        // A chunked body: not followed, so nothing after it is handed back.
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"POST /api HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            .await
            .unwrap();
        let answer = read_response(&mut socket).await;
        assert!(answer.contains("hyper /api 3"), "{answer}");
        socket
            .write_all(b"GET /s/1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let rest = read_to_close(&mut socket).await;
        assert!(rest.contains("hyper /s/1 0"), "hyper's: {rest}");
        assert!(bodies.try_recv().is_err(), "no stream was answered");
    }

    #[tokio::test]
    async fn the_rest_of_a_head_is_never_taken_for_a_new_request() {
        let (addr, mut bodies) = lean_server(Some(1), Edge::default()).await;
        // A request, and the start of a second one behind it; the rest of
        // the second, read on its own, looks like a whole stream request
        // (a header's value ends where it starts).
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"GET /page HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nX-Pad: ")
            .await
            .unwrap();
        let answer = read_response(&mut socket).await;
        assert!(answer.contains("hyper /page 0"), "{answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        socket
            .write_all(b"GET /s/1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let rest = read_to_close(&mut socket).await;
        assert!(
            rest.contains("hyper /x 0"),
            "the second request, hyper's: {rest}"
        );
        assert!(bodies.try_recv().is_err(), "no stream was answered");
    }

    #[tokio::test]
    async fn without_keep_alive_every_answer_closes_its_connection() {
        for keep_alive in [true, false] {
            let mut edge = Edge::default();
            edge.limits.keep_alive = keep_alive;
            let (addr, _bodies) = lean_server(Some(1), edge).await;
            let mut socket = TcpStream::connect(addr).await.unwrap();
            socket
                .write_all(b"GET /page HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 1024];
            let n = socket.read(&mut buf).await.unwrap();
            let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
            assert!(head.contains("hyper /page"), "{head}");
            // Off: the next request (a stream's) has to come on a new
            // connection, so it takes the lean path.
            assert_eq!(head.contains("connection: close"), !keep_alive, "{head}");
            let next = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buf)).await;
            match keep_alive {
                true => assert!(next.is_err(), "kept open for the next request"),
                false => assert_eq!(next.unwrap().unwrap(), 0, "closed after the answer"),
            }
        }
    }

    #[tokio::test]
    async fn the_drain_waits_for_an_open_lean_stream() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (end_tx, end_rx) = tokio::sync::oneshot::channel::<()>();
        let end_rx = Arc::new(Mutex::new(Some(end_rx)));
        let lean = LeanStreams {
            route: |path: &str| path.starts_with("/s/"),
            handler: move |_: SocketAddr, _: Request<Empty<Bytes>>| {
                let end = end_rx.lock().unwrap().take().expect("one stream");
                async move {
                    // One frame, then open until the test ends it.
                    let first = futures::stream::once(async {
                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"event 0\n")))
                    });
                    let rest = futures::stream::once(async move {
                        let _ = end.await;
                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"last\n")))
                    });
                    let body: TestBody =
                        StreamBody::new(futures::StreamExt::chain(first, rest)).boxed_unsync();
                    Ok::<_, Infallible>(Response::new(body))
                }
            },
        };
        let handler = |_: SocketAddr, _: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(
                Full::new(Bytes::from_static(b"hyper")).boxed_unsync(),
            ))
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut served = tokio::spawn(serve_edge_lean(
            listener,
            Edge::default(),
            handler,
            lean,
            async move {
                let _ = stop_rx.await;
            },
            || {},
            Duration::from_secs(60),
        ));
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"GET /s/1 HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = socket.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        stop_tx.send(()).unwrap();
        // Shut down, but the stream is open: the server waits for it (a
        // connection the drain did not watch would let it return at once).
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut served)
                .await
                .is_err(),
            "returned with a stream still open"
        );
        end_tx.send(()).unwrap();
        let rest = read_to_close(&mut socket).await;
        assert!(
            rest.contains("last\n") && rest.ends_with("0\r\n\r\n"),
            "{rest}"
        );
        tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("returns once the stream has ended")
            .unwrap();
    }

    #[tokio::test]
    async fn a_lean_stream_ends_when_its_client_goes() {
        let (addr, mut bodies) = lean_server(None, Edge::default()).await;
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"GET /s/1 HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 64];
        let n = socket.read(&mut first).await.unwrap();
        assert!(first[..n].starts_with(b"HTTP/1.1 200"));
        let dropped = bodies.recv().await.expect("the lean handler ran");
        drop(socket);
        // The body is idle: nothing is written that could fail, so only
        // watching the client's end frees it.
        tokio::time::timeout(Duration::from_secs(10), dropped)
            .await
            .expect("the body is dropped once the client has gone")
            .expect("dropped, not leaked");
    }

    /// A burst of connections to a server that has not accepted yet is
    /// queued by the kernel up to the backlog: with the standard library's
    /// 128, connections past that wait for SYN retries (a second and more)
    /// and fail under a client's connect timeout.
    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_accept_queue() {
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(LISTEN_BACKLOG);
        let burst = somaxconn.min(LISTEN_BACKLOG).saturating_sub(16) as usize;
        assert!(
            burst >= 500,
            "net.core.somaxconn is {somaxconn}: too small to tell a backlog of 4096 from 128"
        );
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connects = (0..burst).map(|_| async move {
            tokio::time::timeout(
                Duration::from_millis(900),
                tokio::net::TcpStream::connect(addr),
            )
            .await
        });
        let results = futures::future::join_all(connects).await;
        let connected = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(connected, burst, "connected before anything was accepted");
        drop(listener);
    }
}
