//! The start-up sequence every binary runs.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use osago_core::ports::PortError;
use tokio::net::TcpListener;

use crate::settings::{Problems, EXIT_BAD_CONFIG};

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `info`;
/// levels per module, `info,osago_transport=debug`). JSON lines carry the
/// current span's fields (`request_id`, `route`, `insurer`) on every line.
pub fn init_tracing(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for a log pipeline.
    Json,
}

/// Loads the configuration of `binary` (file, environment, flags: see
/// [`crate::config`]). With `--print-config` (`print_config` says whether it
/// was given) it prints the effective configuration and the binary exits
/// 0; on problems it prints them all and exits 64.
pub fn configure<A>(binary: &'static str, print_config: impl Fn(&A) -> bool) -> Result<A, ExitCode>
where
    A: clap::CommandFactory + clap::FromArgMatches,
{
    match crate::config::load::<A>(binary) {
        Ok(loaded) if print_config(&loaded.args) => {
            print!("{}", loaded.effective);
            Err(ExitCode::SUCCESS)
        }
        Ok(loaded) => Ok(loaded.args),
        Err(problems) => Err(bad_config(binary, &problems)),
    }
}

/// Prints one line per configuration problem, prefixed with the binary's
/// name, and returns the bad-configuration exit status.
pub fn bad_config(binary: &str, problems: &Problems) -> ExitCode {
    for problem in problems.lines() {
        eprintln!("{binary}: {problem}");
    }
    ExitCode::from(EXIT_BAD_CONFIG)
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

/// Calls `connect` until it succeeds or `give_up_after` passes, with
/// full-jitter backoff from 250 ms up to 5 s, logging each failure with its
/// cause.
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
    let backoff = crate::retry_forever(Duration::from_millis(250), Duration::from_secs(5));
    let mut attempt = 0;
    loop {
        match connect().await {
            Ok(adapter) => return Ok(adapter),
            Err(err) if err.kind() == osago_core::ports::PortErrorKind::Misconfigured => {
                return Err(err)
            }
            Err(err) => match backoff.delay(attempt, deadline) {
                Some(wait) => {
                    tracing::warn!(adapter = what, error = %err, retry_in_ms = wait.as_millis() as u64, "connecting failed");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                None => return Err(err),
            },
        }
    }
}

/// Runs a binary: checks its configuration (`checked`: exit 64 with one
/// line per problem), binds every address of `listen` (exit 64 naming each
/// it can't), connects its adapters with `connect` (abandoned on SIGTERM;
/// exit 1 with the cause if it fails), then `run`s it on the listeners, in
/// the order given, until SIGTERM or Ctrl-C.
pub async fn launch<C, D, CF, RF>(
    binary: &'static str,
    listen: &[SocketAddr],
    checked: Result<C, Problems>,
    connect: impl FnOnce(C) -> CF,
    run: impl FnOnce(Vec<TcpListener>, D) -> RF,
) -> ExitCode
where
    CF: Future<Output = Result<D, String>>,
    RF: Future<Output = std::io::Result<()>>,
{
    let checked = match checked {
        Ok(checked) => checked,
        Err(problems) => return bad_config(binary, &problems),
    };
    let mut listeners = Vec::with_capacity(listen.len());
    let mut p = Problems::default();
    for addr in listen {
        match crate::serve::bind(*addr) {
            Ok(listener) => listeners.push(listener),
            Err(err) => p.push(format!("cannot listen on {addr}: {err}")),
        }
    }
    if !p.is_empty() {
        return bad_config(binary, &p);
    }
    let deps = tokio::select! {
        built = connect(checked) => match built {
            Ok(deps) => deps,
            Err(err) => {
                eprintln!("{binary}: {err}");
                return ExitCode::FAILURE;
            }
        },
        _ = shutdown_signal() => return ExitCode::SUCCESS,
    };
    match run(listeners, deps).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{binary}: {err}");
            ExitCode::FAILURE
        }
    }
}
