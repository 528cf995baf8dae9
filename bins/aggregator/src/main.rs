//! `aggregator`: the thin binary. Its configuration (a file, the
//! environment, flags) is loaded here; checking it, connecting the adapters
//! it names and running the intake with its admin server is
//! `osago_service::aggregator`.
//!
//! Adapters: `--bus memory://` or `kafka://host:port[,host:port]`;
//! `--state memory://` or `redis://host:port` (Valkey). Insurers are named
//! with `--insurer id=url`.

// The start-up future (configuration, every adapter, the intake) nests
// deeply enough to need more than the default query depth.
#![recursion_limit = "256"]

use osago_service::aggregator::{self, Args};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match osago_service::launch::configure::<Args>("aggregator", |a| a.common.print_config) {
        Ok(args) => {
            let _telemetry = osago_service::launch::init_telemetry(
                args.common.log_format,
                args.common.otlp_endpoint.as_deref(),
                "aggregator",
            );
            aggregator::main(args).await
        }
        Err(exit) => exit,
    }
}
