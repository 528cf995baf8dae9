//! A private PostgreSQL server.
//!
//! `initdb` (trust authentication, superuser `postgres`, UTF8, C locale)
//! creates a cluster in `{tempdir}/data`; `postgres` runs on
//! `127.0.0.1:{port}` with its unix socket in the temp dir, `fsync=off` and
//! `max_connections=200`.
//!
//! PostgreSQL refuses to run as root. When this process is root, `initdb`,
//! `postgres` and `pg_ctl` run as the `postgres` system user (switched with
//! the standard library's `CommandExt::uid`/`gid`, which is what `runuser`
//! does without a PAM session or an extra parent process) and the temp dir
//! is owned by that user. `psql` connects over TCP as any user.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{self, ServiceProcess, STOP_TIMEOUT};
use crate::{free_port, INSTALL_HINT};

/// A private PostgreSQL server on a free loopback port. Dropping it kills
/// the server and removes its files.
#[derive(Debug)]
pub struct Postgres {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    /// TLS required on TCP (see [`Postgres::start_tls`]).
    tls: bool,
    process: ServiceProcess,
    // Last: removed after the process is killed.
    dir: TempDir,
}

impl Postgres {
    /// The server process id while it runs (benchmarks watch its memory
    /// and CPU).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Creates a cluster and starts it; returns once it accepts connections.
    pub async fn start() -> Postgres {
        Self::start_inner(None).await
    }

    /// As [`start`](Self::start), with TLS required on TCP: the server
    /// presents the PKI's server certificate, and a connection without TLS
    /// is refused (`hostnossl … reject`). Connect with
    /// [`tls_url`](Self::tls_url).
    pub async fn start_tls(pki: &crate::TestPki) -> Postgres {
        Self::start_inner(Some(pki)).await
    }

    /// `postgres://postgres@localhost:{port}/{name}?sslmode=verify-full&sslrootcert={ca}`.
    pub fn tls_url(&self, name: &str, pki: &crate::TestPki) -> String {
        format!(
            "postgres://postgres@localhost:{}/{}?sslmode=verify-full&sslrootcert={}",
            self.port,
            percent_encode(name),
            pki.ca.display()
        )
    }

    async fn start_inner(pki: Option<&crate::TestPki>) -> Postgres {
        let bin = bin_dir();
        let run_as = if process::effective_uid() == 0 {
            Some(process::user_ids("postgres").unwrap_or_else(|| {
                panic!(
                    "running as root, but there is no postgres user to run PostgreSQL as: \
                     {INSTALL_HINT}"
                )
            }))
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("osago-pg-")
            .tempdir_in("/tmp")
            .expect("cannot create a temp dir under /tmp");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("cannot give the temp dir to the postgres user");
        }
        let port = free_port();
        let process = ServiceProcess::new("postgres", dir.path().join("postgres.log"));
        let mut pg = Postgres {
            port,
            bin,
            run_as,
            tls: pki.is_some(),
            process,
            dir,
        };
        let mut initdb = pg.command("initdb");
        initdb
            .arg("-D")
            .arg(pg.data_dir())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync"]);
        process::run("initdb", initdb).await;
        if let Some(pki) = pki {
            let data = pg.data_dir();
            for (from, to) in [
                (&pki.server_cert, "server.crt"),
                (&pki.server_key, "server.key"),
            ] {
                let path = data.join(to);
                std::fs::copy(from, &path).expect("cannot copy the server certificate");
                if let Some((uid, gid)) = pg.run_as {
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                        .expect("cannot give the certificate to the postgres user");
                }
            }
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust
                 hostssl all all 127.0.0.1/32 trust
                 hostnossl all all 127.0.0.1/32 reject
",
            )
            .expect("cannot write pg_hba.conf");
        }
        pg.launch().await;
        tracing::info!(service = "postgres", port, "started");
        pg
    }

    /// `postgres://postgres@127.0.0.1:{port}/postgres`.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// Creates database `name` (with psql) and returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        let mut psql = self.psql();
        psql.arg("-c").arg(sql);
        process::run("psql create database", psql).await;
        self.database_url(name)
    }

    /// Stops the server (`pg_ctl stop -m fast`); a no-op when not running.
    pub async fn stop(&mut self) {
        if !self.process.is_running() {
            return;
        }
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl
            .arg("stop")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "-t"])
            .arg(STOP_TIMEOUT.as_secs().to_string());
        let output = process::try_run("pg_ctl stop", pg_ctl).await;
        if !output.status.success() {
            tracing::warn!(
                service = "postgres",
                status = %output.status,
                "pg_ctl stop failed, killing the server"
            );
            self.kill().await;
            return;
        }
        if !self.process.wait_exit(STOP_TIMEOUT).await {
            self.kill().await;
        }
        tracing::info!(service = "postgres", port = self.port, "stopped");
    }

    /// SIGKILLs the postmaster and its backends, like a crash.
    pub async fn kill(&mut self) {
        self.kill_sync();
        tracing::info!(service = "postgres", port = self.port, "killed");
    }

    /// Starts the server again on the same data dir and port (after
    /// [`stop`](Self::stop) or [`kill`](Self::kill); stops it first if it is
    /// still running). Returns once it accepts connections.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
        tracing::info!(service = "postgres", port = self.port, "restarted");
    }

    fn kill_sync(&mut self) {
        let Some(pid) = self.process.pid() else {
            return;
        };
        // Backends detach into their own sessions: find them by parent
        // before the postmaster dies and they are reparented.
        let backends = process::children_of(pid);
        self.process.kill_now();
        process::send_signal("KILL", &backends);
        // A backend still attached to the shared memory would stop the
        // restart ("pre-existing shared memory block is still in use").
        process::wait_gone(&backends, Duration::from_secs(10));
    }

    async fn launch(&mut self) {
        let mut postgres = self.command("postgres");
        postgres
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off"])
            .args(["-c", "max_connections=200"])
            .args(["-c", "shared_buffers=32MB"]);
        if self.tls {
            postgres.args(["-c", "ssl=on"]);
        }
        self.process.spawn(postgres);
        let probe = self.probe_command();
        self.process
            .wait_ready(|| {
                let mut probe = probe.clone();
                async move {
                    let mut psql = Command::new(probe.remove(0));
                    psql.args(probe).env("PGCONNECT_TIMEOUT", "2");
                    process::try_run("psql probe", psql).await.status.success()
                }
            })
            .await;
    }

    fn database_url(&self, name: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.port,
            percent_encode(name)
        )
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A server program from the bin dir, as the postgres user when root.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.current_dir(self.dir.path());
        for var in ["PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGDATABASE"] {
            command.env_remove(var);
        }
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn psql_path(&self) -> PathBuf {
        let local = self.bin.join("psql");
        if local.is_file() {
            local
        } else {
            PathBuf::from("psql")
        }
    }

    /// psql connected to the `postgres` database, stopping at the first
    /// error.
    fn psql(&self) -> Command {
        let mut command = Command::new(self.psql_path());
        command.args(self.psql_args());
        command
    }

    fn psql_args(&self) -> Vec<String> {
        vec![
            "-X".into(),
            "-q".into(),
            "-v".into(),
            "ON_ERROR_STOP=1".into(),
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
            "-d".into(),
            "postgres".into(),
        ]
    }

    /// Program and arguments of the readiness probe (`select 1`).
    fn probe_command(&self) -> Vec<String> {
        let mut probe = vec![self.psql_path().to_string_lossy().into_owned()];
        probe.extend(self.psql_args());
        probe.extend(["-c".to_owned(), "select 1".to_owned()]);
        probe
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill_sync();
    }
}

/// Where `initdb`, `pg_ctl`, `postgres` (and `psql`) are.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OSAGO_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("initdb").is_file(),
            "OSAGO_PG_BIN={} has no initdb",
            dir.display()
        );
        return dir;
    }
    if let Some(dir) = highest_debian_bin(Path::new("/usr/lib/postgresql")) {
        return dir;
    }
    if let Some(initdb) = process::on_path("initdb") {
        let initdb = initdb.canonicalize().unwrap_or(initdb);
        if let Some(dir) = initdb.parent() {
            return dir.to_path_buf();
        }
    }
    panic!(
        "postgresql server binaries (initdb, pg_ctl, postgres) not found in $OSAGO_PG_BIN, \
         /usr/lib/postgresql/*/bin or PATH: {INSTALL_HINT}"
    )
}

/// The `bin` dir of the highest version under `root` that has `initdb`.
fn highest_debian_bin(root: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = version_key(e.file_name().to_str()?)?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

/// "15" -> [15], "9.6" -> [9, 6].
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(version_key("15") > version_key("9.6"));
        assert_eq!(version_key("main"), None);
    }

    #[test]
    fn database_names_are_encoded() {
        assert_eq!(percent_encode("app_1"), "app_1");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }
}
