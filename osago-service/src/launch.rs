//! The start-up sequence every binary runs.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use osago_core::ports::PortError;
use tokio::net::TcpListener;

use crate::settings::{Problems, EXIT_BAD_CONFIG};

/// Logs and, with an OTLP endpoint, exported spans: [`init_tracing`]'s
/// logs, plus every span sent to `{endpoint}/v1/traces` (OTLP over HTTP,
/// protobuf, batched) as `service`, joined to the W3C trace each request
/// carries ([`osago_core::trace::start`]). Keep the guard until exit:
/// dropping it flushes the spans still buffered.
///
/// An endpoint in a build without the `otlp` feature is refused (the
/// settings check says so before this runs).
pub fn init_telemetry(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
    service: &'static str,
) -> Telemetry {
    #[cfg(feature = "otlp")]
    if let Some(endpoint) = otlp_endpoint {
        return otlp::init(format, endpoint, service);
    }
    let _ = (otlp_endpoint, service);
    init_tracing(format);
    Telemetry { _provider: None }
}

/// Flushes exported spans when dropped (see [`init_telemetry`]).
#[must_use = "dropping it stops span export"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    _provider: Option<otlp::Flush>,
    #[cfg(not(feature = "otlp"))]
    _provider: Option<()>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self._provider.is_some())
            .finish()
    }
}

/// The `RUST_LOG` filter of every binary (default `info`), applied to
/// every layer: logs and exported spans alike.
fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())
}

/// Lines to stderr in `format`.
fn log_lines<S>(format: LogFormat) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
    };
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use osago_core::trace::TraceContext;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    use super::{log_filter, log_lines, LogFormat, Telemetry};

    /// Shuts the provider down (flushing) when dropped.
    pub(super) struct Flush(SdkTracerProvider);

    impl Drop for Flush {
        fn drop(&mut self) {
            if let Err(err) = self.0.shutdown() {
                eprintln!("flushing spans to the OTLP endpoint failed: {err}");
            }
        }
    }

    pub(super) fn init(format: LogFormat, endpoint: &str, service: &'static str) -> Telemetry {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        // The blocking HTTP client may not be built on a runtime thread.
        let built = std::thread::spawn(move || {
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url)
                .with_timeout(std::time::Duration::from_secs(10))
                .build()
        })
        .join();
        let exporter = match built {
            Ok(Ok(exporter)) => exporter,
            Ok(Err(err)) => {
                super::init_tracing(format);
                tracing::error!(error = %err, "the OTLP exporter cannot be built; spans are not exported");
                return Telemetry { _provider: None };
            }
            Err(_) => {
                super::init_tracing(format);
                tracing::error!("building the OTLP exporter panicked; spans are not exported");
                return Telemetry { _provider: None };
            }
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build();
        let tracer = provider.tracer(service);
        tracing_subscriber::registry()
            .with(log_filter())
            .with(log_lines(format))
            .with(tracing_opentelemetry::layer().with_tracer(tracer))
            .init();
        super::log_panics();
        osago_core::trace::set_span_adopter(adopt);
        tracing::info!(endpoint, "exporting spans over OTLP");
        Telemetry {
            _provider: Some(Flush(provider)),
        }
    }

    /// Joins `span` to the W3C trace of `parent` and returns the span's own
    /// context (what the next service sees as its parent).
    fn adopt(span: &tracing::Span, parent: Option<&TraceContext>) -> Option<TraceContext> {
        if let Some(parent) = parent {
            let flags = if parent.sampled() {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            };
            let remote = SpanContext::new(
                TraceId::from_bytes(parent.trace_id_bytes()),
                SpanId::from_bytes(parent.span_id_bytes()),
                flags,
                true,
                TraceState::default(),
            );
            // Fails only for a span already started or not recorded.
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
        let context = span.context();
        let own = context.span().span_context().clone();
        TraceContext::from_parts(
            own.trace_id().to_bytes(),
            own.span_id().to_bytes(),
            own.is_sampled(),
        )
    }
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `info`;
/// levels per module, `info,osago_transport=debug`). JSON lines carry the
/// current span's fields (`request_id`, `route`, `insurer`, `trace_id`) on
/// every line.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(log_filter())
        .with(log_lines(format))
        .init();
    log_panics();
}

/// Replaces the panic hook with one that logs a panic as an error line:
/// its thread, its location, and its message only when that is a literal
/// (`panic!("...")`, `expect("...")`). A formatted message may hold the
/// values it was formatted from (a request's name or VIN, in an insurer
/// adapter), so it is withheld, as personal data never goes into logs.
/// `RUST_BACKTRACE` still adds a backtrace (code locations only).
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let location = info
            .location()
            .map(|at| format!("{}:{}:{}", at.file(), at.line(), at.column()));
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
            .then(|| backtrace.to_string());
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            location = location.as_deref(),
            message = panic_message(info.payload()),
            backtrace = backtrace.as_deref(),
            "panicked"
        );
    }));
}

/// A panic's message as it may be logged: a literal as written, anything
/// formatted withheld.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &'static str {
    match payload.downcast_ref::<&'static str>() {
        Some(literal) => literal,
        None => "(formatted message withheld: it may hold personal data)",
    }
}

#[cfg(test)]
mod panic_tests {
    use super::panic_message;

    #[test]
    fn a_literal_panic_message_is_logged_and_a_formatted_one_withheld() {
        let vin = "XTA210990Y2765432";
        let literal = std::panic::catch_unwind(|| panic!("owned lock")).unwrap_err();
        let formatted = std::panic::catch_unwind(|| panic!("bad VIN {vin}")).unwrap_err();
        assert_eq!(panic_message(literal.as_ref()), "owned lock");
        let shown = panic_message(formatted.as_ref());
        assert!(!shown.contains(vin), "{shown}");
        assert!(shown.contains("withheld"), "{shown}");
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
