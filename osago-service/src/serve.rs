//! The HTTP accept loop every listener of ours runs ([`bind`]: a listen
//! backlog of [`LISTEN_BACKLOG`]): HTTP/1.1 and HTTP/2
//! (auto-detected), TCP_NODELAY, per-connection buffers capped at
//! [`MAX_BUF`], accept errors (out of file descriptors)
//! backed off instead of ending the server, and a graceful drain on
//! shutdown, bounded by a timeout.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

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

/// Serves `handler` on `listener` until `shutdown` resolves; then stops
/// accepting, calls `draining` (for instance to end open event streams),
/// and waits up to `drain_timeout` for open connections to finish.
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
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(MAX_BUF);
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
        let _ = socket.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |req| handler(peer, req));
        let connection = builder.serve_connection(TokioIo::new(socket), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
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
