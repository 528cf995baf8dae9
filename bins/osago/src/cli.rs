//! The `osago` binary's flags, checked all at once.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use osago_aggregator_lib::PollConfig;
use osago_service::settings::duration;
use osago_service::Problems;

use crate::EmbeddedConfig;

/// Runs core-app, the aggregator and eight simulated insurers in one process.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "osago", version, about)]
pub struct Args {
    /// Address for the page and the API.
    #[arg(long, env = "OSAGO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The admin listener: /health/live, /health/ready and /metrics (kept
    /// off the public listener).
    #[arg(long, env = "OSAGO_ADMIN_LISTEN", default_value = "127.0.0.1:9080")]
    pub admin_listen: SocketAddr,
    /// Simulated insurer speed-up (1 = realistic timings, up to a minute).
    #[arg(long, env = "OSAGO_SIM_SPEED", default_value_t = 1.0)]
    pub sim_speed: f64,
    /// Simulator seed.
    #[arg(long, env = "OSAGO_SIM_SEED", default_value_t = 42)]
    pub sim_seed: u64,
    /// How long each simulated insurer's API answer takes: `50ms..200ms`
    /// (uniform) or `100ms`, divided by --sim-speed. Default: at once.
    #[arg(long, env = "OSAGO_SIM_RESPONSE_TIME", default_value = "0ms", value_parser = parse_response_time)]
    pub sim_response_time: (Duration, Duration),
    /// The most each insurer gets per request.
    #[arg(long, env = "OSAGO_INSURER_DEADLINE", default_value = "60s", value_parser = duration)]
    pub insurer_deadline: Duration,
    /// Poll at this fixed interval instead of the adaptive schedule.
    /// Default: adaptive.
    #[arg(long, env = "OSAGO_POLL_INTERVAL", value_parser = duration)]
    pub poll_interval: Option<Duration>,
    /// SSE heartbeat interval.
    #[arg(long, env = "OSAGO_HEARTBEAT", default_value = "15s", value_parser = duration)]
    pub heartbeat: Duration,
    /// Socket (connect and read) timeout for insurer calls.
    #[arg(long, env = "OSAGO_INSURER_SOCKET_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub socket_timeout: Duration,
    /// Quote requests per minute per client address (0: no limit; load
    /// tests from one machine need 0).
    #[arg(long, env = "OSAGO_RATE_LIMIT_PER_MINUTE", default_value_t = 12.0)]
    pub rate_limit_per_minute: f64,
    /// Log lines as `text` or `json` (one object per line).
    #[arg(long, env = "OSAGO_LOG_FORMAT", value_enum, default_value_t = osago_service::launch::LogFormat::Text)]
    pub log_format: osago_service::launch::LogFormat,
    /// Turn off every per-client limit and connection cap (quote requests,
    /// reads, streams, connections): load tests, whose thousands of users
    /// come from a few addresses.
    #[arg(long, env = "OSAGO_NO_CLIENT_LIMITS")]
    pub no_client_limits: bool,
    /// A TOML file of settings (keys are the flags without dashes; an
    /// `[osago]` table for this binary). Flags and the environment win.
    #[arg(long, env = "OSAGO_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    pub print_config: bool,
}

fn parse_response_time(text: &str) -> Result<(Duration, Duration), String> {
    let (fastest, slowest) = insurer_sim::parse_response_time(text).map_err(|e| e.to_string())?;
    if fastest > slowest || slowest > Duration::from_secs(10) {
        return Err("an ordered range of at most 10s, like 50ms..200ms".to_owned());
    }
    Ok((fastest, slowest))
}

impl Args {
    /// Checks every flag at once; the embedded configuration, or every problem.
    pub fn check(&self) -> Result<EmbeddedConfig, Problems> {
        let mut p = Problems::default();
        p.check(
            !(self.sim_speed.is_finite() && self.sim_speed > 0.0),
            "--sim-speed must be a positive number",
        );
        p.check(
            !(self.rate_limit_per_minute.is_finite() && self.rate_limit_per_minute >= 0.0),
            "--rate-limit-per-minute must be 0 (no limit) or positive",
        );
        p.check(self.heartbeat.is_zero(), "--heartbeat must be positive");
        p.check(
            self.admin_listen == self.listen,
            "--admin-listen must differ from --listen",
        );
        p.check(
            self.socket_timeout.is_zero(),
            "--socket-timeout must be positive",
        );
        let mut config = EmbeddedConfig {
            sim_speed: self.sim_speed,
            sim_seed: self.sim_seed,
            sim_response_time: self.sim_response_time,
            ..EmbeddedConfig::default()
        };
        config.engine.insurer_deadline = self.insurer_deadline;
        if let Some(interval) = self.poll_interval {
            config.engine.poll = PollConfig::fixed(interval);
        }
        if let Err(err) = config.engine.validate() {
            p.config(err, |field| match field {
                "insurer_deadline" => Some("--insurer-deadline".to_owned()),
                "poll.fixed" => Some("--poll-interval".to_owned()),
                _ => None,
            });
        }
        config.core.request_deadline = self.insurer_deadline;
        config.core.heartbeat_interval = self.heartbeat;
        config.core.rate_limit.per_second = self.rate_limit_per_minute / 60.0;
        if self.no_client_limits {
            config.core = config.core.without_client_limits();
        }
        config.http.connect_timeout = self.socket_timeout;
        config.http.read_timeout = self.socket_timeout;
        p.into_result(|| config)
    }
}

/// The `osago` binary: checks `args`, starts everything, runs until SIGTERM.
pub async fn main(args: Args) -> ExitCode {
    osago_service::launch::launch(
        "osago",
        &[args.listen, args.admin_listen],
        args.check(),
        |config| async move { Ok(config) },
        |listeners, config| async move {
            let mut listeners = listeners.into_iter();
            let listener = listeners.next().expect("the API listener");
            let system = crate::start_with_admin(listener, listeners.next(), config).await?;
            println!("OSAGO quotes: open http://{}/", system.addr);
            for (id, addr) in &system.insurers {
                tracing::info!(insurer = %id, %addr, "simulated insurer");
            }
            osago_service::launch::shutdown_signal().await;
            tracing::info!("shutting down");
            system.stop().await;
            Ok(())
        },
    )
    .await
}
