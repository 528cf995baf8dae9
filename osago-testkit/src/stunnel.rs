//! A TLS terminator (stunnel) in front of a plaintext service, for servers
//! that cannot terminate TLS themselves (tansu 0.6.0, the insurer
//! simulator): it accepts TLS on its own port with the server certificate
//! of a [`TestPki`], optionally requires a client certificate signed by
//! its CA, and forwards the plaintext to `127.0.0.1:{target}`.

use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

use crate::process::{self, ServiceProcess};
use crate::tls::TestPki;
use crate::{free_port, INSTALL_HINT};

/// A running stunnel. Dropping it kills it.
#[derive(Debug)]
pub struct Stunnel {
    /// The TLS port on 127.0.0.1.
    pub port: u16,
    process: ServiceProcess,
    // Last: removed after the process is killed.
    dir: TempDir,
}

impl Stunnel {
    /// TLS on a free port (or `port`) in front of `127.0.0.1:{target}`;
    /// with `require_client_cert`, a client without a certificate signed
    /// by the PKI's CA is refused. Returns once the port accepts.
    pub async fn start(
        pki: &TestPki,
        target: u16,
        port: Option<u16>,
        require_client_cert: bool,
    ) -> Stunnel {
        let binary = binary();
        let dir = tempfile::Builder::new()
            .prefix("osago-stunnel-")
            .tempdir_in("/tmp")
            .expect("cannot create a temp dir under /tmp");
        let port = port.unwrap_or_else(free_port);
        let verify = if require_client_cert {
            format!("verifyChain = yes\nCAfile = {}\n", pki.ca.display())
        } else {
            String::new()
        };
        let config = format!(
            "foreground = yes\n\
             pid =\n\
             debug = notice\n\
             [tls]\n\
             accept = 127.0.0.1:{port}\n\
             connect = 127.0.0.1:{target}\n\
             cert = {cert}\n\
             key = {key}\n\
             {verify}",
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
        );
        let conf = dir.path().join("stunnel.conf");
        std::fs::write(&conf, config).expect("cannot write stunnel.conf");
        let mut process = ServiceProcess::new("stunnel", dir.path().join("stunnel.log"));
        let mut command = Command::new(binary);
        command.arg(&conf);
        process.spawn(command);
        process
            .wait_ready(|| async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            })
            .await;
        tracing::info!(service = "stunnel", port, target, "started");
        Stunnel { port, process, dir }
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stunnel.log")).unwrap_or_default()
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        self.process.kill_now();
    }
}

/// `$OSAGO_STUNNEL_BIN`, else `stunnel4` or `stunnel` on `PATH`.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("OSAGO_STUNNEL_BIN") {
        return PathBuf::from(path);
    }
    process::on_path("stunnel4")
        .or_else(|| process::on_path("stunnel"))
        .unwrap_or_else(|| panic!("no stunnel4 or stunnel on PATH: {INSTALL_HINT}"))
}
