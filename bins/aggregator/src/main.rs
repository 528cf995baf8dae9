//! `aggregator`: the thin binary. Flags and environment are parsed here;
//! checking them, connecting the adapters they name and running the intake
//! with its admin server is `osago_service::aggregator`.
//!
//! Adapters: `--bus memory://` or `kafka://host:port[,host:port]`;
//! `--state memory://` or `redis://host:port` (Valkey). Insurers are named
//! with `--insurer id=url`.

use clap::Parser;
use osago_service::aggregator::{self, Args};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    osago_service::launch::init_tracing();
    aggregator::main(Args::parse()).await
}
