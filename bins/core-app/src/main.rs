//! `core-app`: the thin binary. Flags and environment are parsed here;
//! checking them, connecting the adapters they name and serving is
//! [`core_app::cli`] and [`core_app::run`].

use clap::Parser;
use core_app::cli::{self, Args};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    osago_service::launch::init_tracing();
    cli::main(Args::parse()).await
}
