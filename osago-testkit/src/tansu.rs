//! A private tansu broker (Kafka protocol), version 0.6.0, built with the
//! `dynostore` and `libsql` features: [`Tansu::start`] keeps topics and
//! records in memory (`memory://tansu/`, lost on restart);
//! [`Tansu::start_durable`] in an SQLite file in its folder
//! (`sqlite://tansu.db`), so they survive a stop and start.
//!
//! Readiness is a Kafka `ApiVersions` (v0) round trip on the listener.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::ServiceProcess;
use crate::{free_port, INSTALL_HINT};

/// The pinned tansu version.
const VERSION: &str = "0.6.0";

/// Where tansu is: `$OSAGO_TANSU_BIN`, else
/// `$HOME/.cache/osago/tansu-0.6.0-libsql/bin/tansu` (what
/// scripts/install-test-services.sh builds). Panics if it is missing.
pub fn tansu_binary() -> PathBuf {
    let path = match std::env::var_os("OSAGO_TANSU_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(format!(".cache/osago/tansu-{VERSION}-libsql/bin/tansu"))
        }
    };
    if !path.is_file() {
        panic!(
            "tansu {VERSION} not found at {}: {INSTALL_HINT}",
            path.display()
        );
    }
    path
}

/// A private tansu broker on a free loopback port. Dropping it kills the
/// broker and removes its folder.
#[derive(Debug)]
pub struct Tansu {
    /// The TCP port on 127.0.0.1 (listener and advertised listener).
    pub port: u16,
    binary: PathBuf,
    storage: &'static str,
    /// The port advertised to clients (a proxy in front), if not `port`.
    advertised: Option<u16>,
    process: ServiceProcess,
    // Last: removed after the process is killed.
    dir: TempDir,
}

impl Tansu {
    /// The server process id while it runs (benchmarks watch its memory
    /// and CPU).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Starts a broker with in-memory storage; returns once it answers an
    /// `ApiVersions` request.
    pub async fn start() -> Tansu {
        Self::start_with("memory://tansu/").await
    }

    /// Starts a broker whose topics and records are kept in an SQLite file
    /// in its folder, so they survive [`stop`](Self::stop) and
    /// [`restart`](Self::restart).
    pub async fn start_durable() -> Tansu {
        Self::start_with("sqlite://tansu.db").await
    }

    /// Starts a broker (in-memory storage) on `port` that tells clients to
    /// reach it at `127.0.0.1:{advertised}`: a proxy the test controls, so
    /// the test can cut every client connection while the broker runs on.
    pub async fn start_behind(port: u16, advertised: u16) -> Tansu {
        Self::start_on("memory://tansu/", port, Some(advertised)).await
    }

    /// [`start_behind`](Self::start_behind) on a given storage engine
    /// (`memory://tansu/`, or `sqlite://tansu.db` in its folder).
    pub async fn start_behind_on(storage: &'static str, port: u16, advertised: u16) -> Tansu {
        Self::start_on(storage, port, Some(advertised)).await
    }

    async fn start_with(storage: &'static str) -> Tansu {
        Self::start_on(storage, free_port(), None).await
    }

    async fn start_on(storage: &'static str, port: u16, advertised: Option<u16>) -> Tansu {
        let binary = tansu_binary();
        let dir = tempfile::Builder::new()
            .prefix("osago-tansu-")
            .tempdir_in("/tmp")
            .expect("cannot create a temp dir under /tmp");
        let process = ServiceProcess::new("tansu", dir.path().join("tansu.log"));
        let mut tansu = Tansu {
            port,
            binary,
            storage,
            advertised,
            process,
            dir,
        };
        tansu.launch().await;
        tracing::info!(service = "tansu", port, "started");
        tansu
    }

    /// The broker's own log (all its runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// `127.0.0.1:{port}` (the advertised port when behind a proxy), for
    /// `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.advertised.unwrap_or(self.port))
    }

    /// SIGKILLs the broker.
    pub async fn kill(&mut self) {
        self.process.kill_now();
        tracing::info!(service = "tansu", port = self.port, "killed");
    }

    /// Stops the broker with SIGTERM; a no-op when not running.
    pub async fn stop(&mut self) {
        if !self.process.is_running() {
            return;
        }
        self.process.terminate("TERM").await;
        tracing::info!(service = "tansu", port = self.port, "stopped");
    }

    /// Starts the broker again on the same port (after [`stop`](Self::stop)
    /// or [`kill`](Self::kill); stops it first if it is still running).
    /// With in-memory storage it starts empty; a durable one keeps its
    /// topics and records.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
        tracing::info!(service = "tansu", port = self.port, "restarted");
    }

    async fn launch(&mut self) {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised.unwrap_or(self.port));
        let mut broker = Command::new(&self.binary);
        broker
            .arg("broker")
            .arg("--listener-url")
            .arg(&listener)
            .arg("--advertised-listener-url")
            .arg(&advertised)
            .arg("--storage-engine")
            .arg(self.storage)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("SCHEMA_REGISTRY")
            .current_dir(self.dir.path());
        self.process.spawn(broker);
        let port = self.port;
        self.process
            .wait_ready(|| async move { api_versions(port).await.unwrap_or(false) })
            .await;
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.process.kill_now();
    }
}

/// One `ApiVersions` v0 round trip; `Ok(true)` if the broker answered with
/// error code 0.
async fn api_versions(port: u16) -> std::io::Result<bool> {
    const API_VERSIONS: i16 = 18;
    const CORRELATION_ID: i32 = 0x05a9_0001;
    const CLIENT_ID: &[u8] = b"osago-testkit";
    let io = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        // Request header v1: api key, api version, correlation id, client id.
        let mut body = Vec::new();
        body.extend_from_slice(&API_VERSIONS.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&CORRELATION_ID.to_be_bytes());
        body.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
        body.extend_from_slice(CLIENT_ID);
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        stream.write_all(&frame).await?;
        let size = stream.read_i32().await?;
        if size < 6 {
            return Ok(false);
        }
        let correlation_id = stream.read_i32().await?;
        let error_code = stream.read_i16().await?;
        Ok(correlation_id == CORRELATION_ID && error_code == 0)
    };
    tokio::time::timeout(Duration::from_secs(2), io)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "tansu did not answer",
            ))
        })
}
