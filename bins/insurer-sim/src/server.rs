//! The server: accepts connections, serves HTTP/1.1 and HTTP/2 (hyper), or
//! for the hang archetype holds sockets without a word (all but
//! `GET /stats`); stops gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::api::Simulator;
use crate::archetype::Archetype;
use crate::config::SimConfig;

/// How long open connections may take to finish after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Pause after a failed accept (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves the simulated insurer on `listener` until `shutdown` resolves,
/// then stops accepting, lets open connections finish for up to a second,
/// drops the rest and returns. Fails only on an invalid `config`.
pub async fn run(
    listener: TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    config.validate().map_err(|problems| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, problems.join("; "))
    })?;
    tracing::info!(
        addr = %listener.local_addr()?,
        insurer = %config.insurer_id,
        archetype = %config.archetype,
        speed = config.speed,
        seed = config.seed,
        "insurer simulator listening"
    );
    let simulator = Arc::new(Simulator::new(config));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    accept_until(&listener, &simulator, &graceful, &mut connections, shutdown).await;
    drop(listener);
    drain(graceful, connections).await;
    tracing::info!(insurer = %simulator.config().insurer_id, "insurer simulator stopped");
    Ok(())
}

/// Accepts connections until `shutdown` resolves.
async fn accept_until(
    listener: &TcpListener,
    simulator: &Arc<Simulator>,
    graceful: &GracefulShutdown,
    connections: &mut JoinSet<()>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        let event = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => Some(accepted),
            Some(_) = connections.join_next(), if !connections.is_empty() => None,
        };
        match event {
            Some(Ok((socket, _peer))) => serve(socket, simulator, &builder, graceful, connections),
            Some(Err(err)) => {
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            // A finished connection was reaped.
            None => {}
        }
    }
}

/// Serves one connection on its own task.
fn serve(
    socket: TcpStream,
    simulator: &Arc<Simulator>,
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    connections: &mut JoinSet<()>,
) {
    if simulator.config().archetype == Archetype::Hang {
        let simulator = simulator.clone();
        let builder = builder.clone();
        connections.spawn(async move {
            if asks_for_stats(&socket).await {
                // What the insurer saw stays readable (tests count its
                // applications: none); its partner API hangs.
                let service = service_fn(move |request| {
                    let simulator = simulator.clone();
                    async move { Ok::<_, Infallible>(simulator.handle(request).await) }
                });
                let _ = builder
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            } else {
                hold(socket).await;
            }
        });
        return;
    }
    let _ = socket.set_nodelay(true);
    let simulator = simulator.clone();
    let service = service_fn(move |request| {
        let simulator = simulator.clone();
        async move { Ok::<_, Infallible>(simulator.handle(request).await) }
    });
    let connection = builder.serve_connection(TokioIo::new(socket), service);
    let connection = graceful.watch(connection.into_owned());
    connections.spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "connection ended with an error");
        }
    });
}

/// Whether a connection's first request is `GET /stats`, looked at
/// without reading it (so a hanging insurer never parses its partner API).
async fn asks_for_stats(socket: &TcpStream) -> bool {
    const STATS: &[u8] = b"GET /stats ";
    let mut head = [0u8; STATS.len()];
    for _ in 0..200 {
        match socket.peek(&mut head).await {
            Ok(n) if n >= STATS.len() => return head == *STATS,
            Ok(n) if n == 0 || !STATS.starts_with(&head[..n]) => return false,
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(_) => return false,
        }
    }
    false
}

/// Holds a socket without answering; reads and discards what arrives (never
/// parsing it) only to notice when the peer gives up.
async fn hold(mut socket: TcpStream) {
    let mut sink = [0u8; 4096];
    while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
}

/// Lets watched connections finish for up to [`DRAIN_TIMEOUT`], then drops
/// every connection still open (held and hung ones included).
async fn drain(graceful: GracefulShutdown, mut connections: JoinSet<()>) {
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!(open = connections.len(), "connections still open after the drain timeout");
        }
    }
    connections.shutdown().await;
}
