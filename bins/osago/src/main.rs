//! `osago`: the whole system in one process on the embedded default.
//! Serves the page at http://127.0.0.1:8080 unless told otherwise; the
//! flags are [`osago::cli::Args`].

use osago::cli::{self, Args};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match osago_service::launch::configure::<Args>("osago", |a| a.print_config) {
        Ok(args) => {
            osago_service::launch::init_tracing(args.log_format);
            cli::main(args).await
        }
        Err(exit) => exit,
    }
}
