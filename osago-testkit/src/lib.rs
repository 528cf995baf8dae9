//! Private instances of the services the real adapters talk to, for tests
//! and benchmarks: PostgreSQL ([`Postgres`]), Valkey or Redis ([`Valkey`])
//! and the Kafka-protocol broker tansu ([`Tansu`]).
//!
//! Each instance runs as a child process on a free loopback port, with its
//! files (data, configuration, a log of the process's output) in a
//! temporary folder under `/tmp`. A test may stop, kill and restart it
//! without touching the machine's own services (a PostgreSQL on 5432 or a
//! Redis on 6379 is never used). Dropping an instance kills its process and
//! removes the folder.
//!
//! Binaries are found as follows; when one is missing the start panics
//! naming `scripts/install-test-services.sh`, which installs all of them:
//!
//! - PostgreSQL: `$OSAGO_PG_BIN`, else the highest
//!   `/usr/lib/postgresql/*/bin`, else `initdb` on `PATH`.
//! - Valkey: `$OSAGO_VALKEY_BIN`, else `valkey-server`, else `redis-server`
//!   on `PATH`.
//! - tansu: [`tansu_binary`].
//!
//! Every start, stop and readiness wait is bounded; on failure the call
//! panics with the last lines of the process's log, like any failed test
//! assertion. Tests against these services run on tokio's real clock.
//!
//! When this process is root (as in CI), PostgreSQL, which refuses to run as
//! root, runs as the `postgres` system user; see [`Postgres`].

mod port;
mod postgres;
mod process;
mod stunnel;
mod tansu;
mod tls;
mod valkey;

pub use port::free_port;
pub use postgres::Postgres;
pub use stunnel::Stunnel;
pub use tansu::{tansu_binary, Tansu};
pub use tls::TestPki;
pub use valkey::{Valkey, ValkeyCluster, ValkeyOptions};

/// What to run when a service binary is missing.
const INSTALL_HINT: &str = "run scripts/install-test-services.sh";
