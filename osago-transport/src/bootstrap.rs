//! Plumbing shared by the thin binaries: connecting adapters with retries
//! at start-up, and waiting for a shutdown signal.

use std::future::Future;
use std::time::Duration;

use osago_core::ports::PortError;

/// Calls `connect` until it succeeds or `give_up_after` passes, backing off
/// from 250 ms to 5 s and logging each failure.
pub async fn retry_connect<T, F, Fut>(
    what: &'static str,
    give_up_after: Duration,
    mut connect: F,
) -> Result<T, PortError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PortError>>,
{
    let deadline = tokio::time::Instant::now() + give_up_after;
    let mut backoff = Duration::from_millis(250);
    loop {
        match connect().await {
            Ok(adapter) => return Ok(adapter),
            Err(err) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::warn!(adapter = what, error = %err, retry_in_ms = backoff.as_millis() as u64, "connecting failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err),
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
