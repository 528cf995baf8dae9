//! The real binaries as child processes (built by `cargo build --workspace
//! --bins`, which the README's test command runs first).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where cargo put the binaries of this build (next to the test executable).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins), as scripts/test-all.sh does",
        path.display()
    );
    path
}

/// A running binary; killed when dropped. Its output goes to a log file.
#[derive(Debug)]
pub struct Service {
    /// A name for messages.
    pub name: String,
    child: Option<Child>,
    /// Its combined stdout and stderr.
    pub log: PathBuf,
}

impl Service {
    /// Starts `binary` with `args` and extra environment.
    pub fn start(
        name: &str,
        binary_name: &str,
        args: &[String],
        logs: &std::path::Path,
    ) -> Service {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary(binary_name))
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Service {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The last lines of its log (for failure messages).
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Sends SIGTERM and waits (up to `limit`) for the exit status code.
    pub async fn terminate(&mut self, limit: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills it at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `url` answers 200, or panics with the service's log.
pub async fn wait_healthy(service: &Service, url: &str, limit: Duration) {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(response) = http.get(url).timeout(Duration::from_secs(2)).send().await {
            if response.status() == 200 {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} not healthy at {url} after {limit:?}:\n{}",
            service.name,
            service.tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
