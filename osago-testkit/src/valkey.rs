//! A private Valkey (or Redis) server.
//!
//! `valkey-server` (or `redis-server`) runs with a generated `valkey.conf` in
//! the temp dir: `bind 127.0.0.1`, the port, `dir` = the temp dir, no RDB
//! snapshots (`save ""`), `appendonly` as asked with
//! `appendfsync everysec` (or `always`, [`ValkeyOptions::fsync_always`]), in the foreground. The testkit speaks the few
//! commands it needs (a probe, `SHUTDOWN`) in raw RESP, so it needs no
//! client library.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::{self, ServiceProcess, STOP_TIMEOUT};
use crate::{free_port, INSTALL_HINT};

/// How a [`Valkey`] is configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValkeyOptions {
    /// Keep an append-only file, so data survives a stop or a kill
    /// (`appendfsync everysec`: what was acknowledged in about the last
    /// second or two may be lost on a kill, as Valkey postpones the write
    /// while a background fsync is slow).
    pub appendonly: bool,
    /// With `appendonly`: `appendfsync always`, so nothing acknowledged is
    /// ever lost on a kill.
    pub fsync_always: bool,
    /// Run as a cluster node (`cluster-enabled yes`); see [`ValkeyCluster`].
    pub cluster_node: bool,
}

/// A private Valkey server on a free loopback port. Dropping it kills the
/// server and removes its files.
#[derive(Debug)]
pub struct Valkey {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The TLS port on 127.0.0.1, when started with [`Valkey::start_tls`].
    pub tls_port: Option<u16>,
    options: ValkeyOptions,
    binary: PathBuf,
    process: ServiceProcess,
    // Last: removed after the process is killed.
    dir: TempDir,
}

impl Valkey {
    /// The server process id while it runs (benchmarks watch its memory
    /// and CPU).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Starts a server with the default options (no persistence).
    pub async fn start() -> Valkey {
        Self::start_with(ValkeyOptions::default()).await
    }

    /// Starts a server with `opts`; returns once it answers commands.
    pub async fn start_with(opts: ValkeyOptions) -> Valkey {
        Self::start_inner(opts, None).await
    }

    /// Starts a server that also serves TLS (the PKI's server certificate;
    /// a client certificate is checked when given) on
    /// [`tls_port`](Self::tls_port), reached with [`tls_url`](Self::tls_url).
    /// The plaintext port stays for the testkit's own probe and shutdown.
    pub async fn start_tls(pki: &crate::TestPki) -> Valkey {
        Self::start_inner(ValkeyOptions::default(), Some(pki)).await
    }

    /// `rediss://localhost:{tls_port}` (panics without TLS).
    pub fn tls_url(&self) -> String {
        format!(
            "rediss://localhost:{}",
            self.tls_port.expect("started with start_tls")
        )
    }

    async fn start_inner(opts: ValkeyOptions, pki: Option<&crate::TestPki>) -> Valkey {
        let binary = binary();
        let dir = tempfile::Builder::new()
            .prefix("osago-valkey-")
            .tempdir_in("/tmp")
            .expect("cannot create a temp dir under /tmp");
        let port = free_port();
        let config = format!(
            "bind 127.0.0.1\n\
             port {port}\n\
             dir {dir}\n\
             save \"\"\n\
             appendonly {appendonly}\n\
             appendfsync {fsync}\n\
             daemonize no\n\
             logfile \"\"\n",
            dir = dir.path().display(),
            appendonly = if opts.appendonly { "yes" } else { "no" },
            fsync = if opts.fsync_always {
                "always"
            } else {
                "everysec"
            },
        );
        let config = if opts.cluster_node {
            // The cluster bus gets a free port of its own: the default,
            // port + 10 000, may be taken (or past 65 535).
            format!(
                "{config}cluster-enabled yes\n\
                 cluster-port {bus}\n\
                 cluster-config-file nodes.conf\n\
                 cluster-node-timeout 5000\n",
                bus = free_port()
            )
        } else {
            config
        };
        let tls_port = pki.map(|_| free_port());
        let config = match (pki, tls_port) {
            (Some(pki), Some(tls_port)) => format!(
                "{config}tls-port {tls_port}\n\
                 tls-cert-file {cert}\n\
                 tls-key-file {key}\n\
                 tls-ca-cert-file {ca}\n\
                 tls-auth-clients optional\n",
                cert = pki.server_cert.display(),
                key = pki.server_key.display(),
                ca = pki.ca.display(),
            ),
            _ => config,
        };
        std::fs::write(dir.path().join("valkey.conf"), config).expect("cannot write valkey.conf");
        let process = ServiceProcess::new("valkey", dir.path().join("valkey.log"));
        let mut valkey = Valkey {
            port,
            tls_port,
            options: opts,
            binary,
            process,
            dir,
        };
        valkey.launch().await;
        tracing::info!(
            service = "valkey",
            port,
            appendonly = opts.appendonly,
            "started"
        );
        valkey
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the server, like a crash.
    pub async fn kill(&mut self) {
        self.process.kill_now();
        tracing::info!(service = "valkey", port = self.port, "killed");
    }

    /// Stops the server with `SHUTDOWN` (`SAVE` when append-only, else
    /// `NOSAVE`); a no-op when not running.
    pub async fn stop(&mut self) {
        if !self.process.is_running() {
            return;
        }
        let mode = if self.options.appendonly {
            "SAVE"
        } else {
            "NOSAVE"
        };
        if let Err(e) = command(self.port, &["SHUTDOWN", mode]).await {
            tracing::warn!(service = "valkey", error = %e, "shutdown command failed");
        }
        if !self.process.wait_exit(STOP_TIMEOUT).await {
            tracing::warn!(service = "valkey", "server ignored shutdown, killing it");
            self.process.kill_now();
        }
        tracing::info!(service = "valkey", port = self.port, "stopped");
    }

    /// Starts the server again on the same dir, configuration and port
    /// (after [`stop`](Self::stop) or [`kill`](Self::kill); stops it first
    /// if it is still running). Returns once it answers commands (its data
    /// loaded).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
        tracing::info!(service = "valkey", port = self.port, "restarted");
    }

    async fn launch(&mut self) {
        let mut server = Command::new(&self.binary);
        server
            .arg(self.dir.path().join("valkey.conf"))
            .current_dir(self.dir.path());
        self.process.spawn(server);
        let port = self.port;
        let cluster = self.options.cluster_node;
        // EXISTS answers `-LOADING` until the data set is loaded (a cluster
        // node without slots answers `-CLUSTERDOWN`: PING it instead).
        self.process
            .wait_ready(|| async move {
                if cluster {
                    return matches!(command(port, &["PING"]).await, Ok(reply) if reply == "+PONG");
                }
                matches!(
                    command(port, &["EXISTS", "osago-testkit:probe"]).await,
                    Ok(reply) if reply.starts_with(':')
                )
            })
            .await;
    }
}

impl Drop for Valkey {
    fn drop(&mut self) {
        self.process.kill_now();
    }
}

/// `$OSAGO_VALKEY_BIN`, else `valkey-server` or `redis-server` on `PATH`.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("OSAGO_VALKEY_BIN") {
        return PathBuf::from(path);
    }
    process::on_path("valkey-server")
        .or_else(|| process::on_path("redis-server"))
        .unwrap_or_else(|| {
            panic!("valkey-server or redis-server not found on PATH: {INSTALL_HINT}")
        })
}

/// Sends one command in RESP and returns the first line of the reply (an
/// empty string when the server closed the connection, as after
/// `SHUTDOWN`).
async fn command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let io = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).await?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            if reply.windows(2).any(|w| w == b"\r\n") {
                break;
            }
        }
        let text = String::from_utf8_lossy(&reply);
        Ok(text.lines().next().unwrap_or_default().to_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "valkey did not answer",
            ))
        })
}

/// A private Valkey (Redis) cluster: three primary nodes on free loopback
/// ports, every slot assigned (`redis-cli --cluster create`), no replicas.
/// Dropping it kills the nodes.
#[derive(Debug)]
pub struct ValkeyCluster {
    /// The nodes.
    pub nodes: Vec<Valkey>,
}

impl ValkeyCluster {
    /// Starts three nodes and joins them; returns once every node reports
    /// `cluster_state:ok`.
    pub async fn start() -> ValkeyCluster {
        let opts = ValkeyOptions {
            cluster_node: true,
            ..ValkeyOptions::default()
        };
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(Valkey::start_with(opts).await);
        }
        let cli = cli_binary();
        let mut create = Command::new(&cli);
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let output = tokio::process::Command::from(create)
            .output()
            .await
            .expect("cannot run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            loop {
                let info = tokio::process::Command::new(&cli)
                    .args(["-p", &node.port.to_string(), "cluster", "info"])
                    .output()
                    .await
                    .expect("cannot run redis-cli cluster info");
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the cluster did not reach cluster_state:ok"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        tracing::info!(service = "valkey-cluster", nodes = nodes.len(), "started");
        ValkeyCluster { nodes }
    }

    /// `redis+cluster://127.0.0.1:{p1},127.0.0.1:{p2},127.0.0.1:{p3}`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}

/// `redis-cli` (or `valkey-cli`) beside the server binary, else on `PATH`.
fn cli_binary() -> PathBuf {
    let server = binary();
    for name in ["valkey-cli", "redis-cli"] {
        let beside = server.with_file_name(name);
        if beside.is_file() {
            return beside;
        }
        if let Some(path) = process::on_path(name) {
            return path;
        }
    }
    panic!("redis-cli or valkey-cli not found: {INSTALL_HINT}")
}
