//! A throwaway public-key infrastructure for TLS tests: a CA, a server
//! certificate for `localhost` and `127.0.0.1`, and a client certificate,
//! all made fresh per test (rcgen, ECDSA P-256) and written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tempfile::TempDir;

/// A CA with one server and one client certificate, as PEM files in a
/// temporary folder (removed on drop).
#[derive(Debug)]
pub struct TestPki {
    /// The CA certificate (what clients and servers trust).
    pub ca: PathBuf,
    /// The server certificate (SANs `localhost` and `127.0.0.1`).
    pub server_cert: PathBuf,
    /// Its private key (PKCS#8, mode 0600).
    pub server_key: PathBuf,
    /// A client certificate (CN `osago-client`), for mutual TLS.
    pub client_cert: PathBuf,
    /// Its private key (PKCS#8, mode 0600).
    pub client_key: PathBuf,
    dir: TempDir,
}

impl TestPki {
    /// Makes a new CA and its certificates.
    pub fn new() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("osago-pki-")
            .tempdir_in("/tmp")
            .expect("cannot create a temp dir under /tmp");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "osago test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");

        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &ca, &ca_key).expect("certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            "localhost",
        );
        let (client_cert, client_key) = leaf(Vec::new(), "osago-client");

        let write = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("cannot write a PEM file");
            set_mode(&path, 0o600);
            path
        };
        TestPki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            dir,
        }
    }

    /// The folder holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .expect("cannot set a PEM file's mode");
}
