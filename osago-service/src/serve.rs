//! The HTTP accept loop every listener of ours runs: HTTP/1.1 and HTTP/2
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
