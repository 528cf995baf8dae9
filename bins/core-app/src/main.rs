//! `core-app`: the thin binary. Its configuration (a file, the
//! environment, flags) is loaded here; checking it, connecting the adapters
//! it names and serving is [`core_app::cli`] and [`core_app::run`].

// The start-up future (configuration, every adapter, the servers) nests
// deeply enough to need more than the default query depth.
#![recursion_limit = "256"]

use core_app::cli::{self, Args};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match osago_service::launch::configure::<Args>("core-app", |a| a.common.print_config) {
        Ok(args) => {
            let _telemetry = osago_service::launch::init_telemetry(
                args.common.log_format,
                args.common.otlp_endpoint.as_deref(),
                "core-app",
            );
            cli::main(args).await
        }
        Err(exit) => exit,
    }
}
