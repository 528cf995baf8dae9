//! Plumbing shared by the thin binaries: logging set-up, reporting
//! configuration problems, connecting adapters with retries at start-up,
//! and waiting for a shutdown signal.

use std::future::Future;
use std::time::Duration;

use osago_core::ports::PortError;

/// The exit status for bad configuration (EX_USAGE).
pub const EXIT_BAD_CONFIG: u8 = 64;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Prints one line per configuration problem, prefixed with the binary's
/// name, and returns the bad-configuration exit status.
pub fn bad_config(binary: &str, problems: &[String]) -> std::process::ExitCode {
    for problem in problems {
        eprintln!("{binary}: {problem}");
    }
    std::process::ExitCode::from(EXIT_BAD_CONFIG)
}

/// Binds `addr`, or reports why not with the bad-configuration status.
pub async fn bind(
    binary: &str,
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, std::process::ExitCode> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|err| bad_config(binary, &[format!("cannot listen on {addr}: {err}")]))
}

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
