//! The insurer-sim binary: one simulated insurer on one port.
//!
//! Flags take their defaults from `OSAGO_SIM_*` variables. An invalid
//! setting prints one line per problem and exits with 64 (EX_USAGE);
//! ctrl-c or SIGTERM stops the server gracefully.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use insurer_sim::{Archetype, SimConfig};
use osago_core::InsurerId;
use tracing_subscriber::EnvFilter;

/// Exit code of an invalid configuration (EX_USAGE).
const EXIT_USAGE: u8 = 64;

/// A simulated OSAGO insurer partner API.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "OSAGO_SIM_LISTEN", default_value = "127.0.0.1:9001")]
    listen: String,
    /// The insurer's id (a slug of a-z, 0-9 and '-').
    #[arg(long, env = "OSAGO_SIM_INSURER_ID")]
    insurer_id: Option<String>,
    /// Behaviour: fast, typical, calculate-then-poll, slow-legacy, flaky,
    /// strict-underwriter, mandatory-add-on, needs-more-data, hang, broken, garbage, bait-price.
    #[arg(long, env = "OSAGO_SIM_ARCHETYPE", default_value = "typical")]
    archetype: String,
    /// Seed of every random draw.
    #[arg(
        long,
        env = "OSAGO_SIM_SEED",
        default_value = "42",
        allow_negative_numbers = true
    )]
    seed: String,
    /// Time factor: 1 is real time, 20 is twenty times faster.
    #[arg(
        long,
        env = "OSAGO_SIM_SPEED",
        default_value = "1",
        allow_negative_numbers = true
    )]
    speed: String,
    /// Base of purchase links (`{base}/buy/{application_id}`).
    #[arg(long, env = "OSAGO_SIM_PURCHASE_BASE_URL")]
    purchase_base_url: Option<String>,
    /// How long each partner-API answer takes, `50ms..200ms` (uniform) or
    /// `100ms`; divided by --speed. Default: at once.
    #[arg(long, env = "OSAGO_SIM_RESPONSE_TIME", default_value = "0ms")]
    response_time: String,
    /// A header every partner-API call must carry, `Name: value` (a
    /// partner's credentials); calls without it are answered 401.
    #[arg(long, env = "OSAGO_SIM_REQUIRE_HEADER")]
    require_header: Option<String>,
    /// Log lines as `text` or `json` (one object per line, with the
    /// caller's trace id on the lines of its calls).
    #[arg(long, env = "OSAGO_SIM_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// The validated settings.
#[derive(Debug)]
struct Settings {
    /// Where to listen.
    listen: SocketAddr,
    /// The simulator's settings.
    config: SimConfig,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => {
            let text = err.to_string();
            eprintln!("{}", text.lines().next().unwrap_or("invalid arguments"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let log_format = cli.log_format;
    let settings = match settings(cli) {
        Ok(settings) => settings,
        Err(problems) => {
            for problem in problems {
                eprintln!("{problem}");
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_tracing(log_format);
    match serve(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "insurer simulator failed");
            ExitCode::FAILURE
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Checks every flag; returns all problems at once.
fn settings(cli: Cli) -> Result<Settings, Vec<String>> {
    let mut problems = Vec::new();
    let listen = parsed(
        cli.listen.parse::<SocketAddr>(),
        "listen must be an address like 127.0.0.1:9001",
        &mut problems,
    );
    let insurer_id = match cli.insurer_id {
        Some(id) => parsed(
            InsurerId::new(id),
            "insurer id must be 1-32 characters of a-z, 0-9 and '-'",
            &mut problems,
        ),
        None => parsed(
            Err(()),
            "insurer id is required (--insurer-id or OSAGO_SIM_INSURER_ID)",
            &mut problems,
        ),
    };
    let archetype = cli.archetype.parse::<Archetype>();
    if let Err(err) = &archetype {
        problems.push(err.to_string());
    }
    let seed = parsed(
        cli.seed.parse::<u64>(),
        "seed must be a whole number from 0 to 2^64-1",
        &mut problems,
    );
    let speed = parsed(
        cli.speed.parse::<f64>(),
        "speed must be a positive number",
        &mut problems,
    );
    let placeholder = || InsurerId::new("sim").expect("a slug");
    let mut config = SimConfig::new(
        insurer_id.clone().unwrap_or_else(placeholder),
        archetype.clone().unwrap_or(Archetype::Typical),
    );
    config.seed = seed.unwrap_or(config.seed);
    config.speed = speed.unwrap_or(config.speed);
    config.purchase_base_url = cli.purchase_base_url;
    let response_time = parsed(
        insurer_sim::parse_response_time(&cli.response_time),
        "response time must be a duration like 100ms or a range like 50ms..200ms",
        &mut problems,
    );
    config.response_time = response_time.unwrap_or(config.response_time);
    if let Some(header) = &cli.require_header {
        match header.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => {
                config.required_header =
                    Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
            _ => problems.push("require-header must be `Name: value`".to_owned()),
        }
    }
    // An unparsable speed was reported above and left at its default here.
    problems.extend(config.validate().err().unwrap_or_default());
    match (listen, insurer_id, archetype) {
        (Some(listen), Some(_), Ok(_)) if problems.is_empty() => Ok(Settings { listen, config }),
        _ => Err(problems),
    }
}

/// The value, or `None` after recording `problem`.
fn parsed<T, E>(result: Result<T, E>, problem: &str, problems: &mut Vec<String>) -> Option<T> {
    result.map_err(|_| problems.push(problem.to_owned())).ok()
}

/// The same log lines as the services' (`osago-service` is not a
/// dependency, so that this crate stays publishable on its own).
fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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

/// Runs the server until ctrl-c or SIGTERM.
#[tokio::main]
async fn serve(settings: Settings) -> anyhow::Result<()> {
    use anyhow::Context as _;

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    insurer_sim::run(listener, settings.config, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on ctrl-c or (on unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
