//! One service process: spawned with its output appended to a log file,
//! waited for with bounds, signalled through the `kill` command (no unsafe
//! code), killed synchronously on drop. Deadlines are measured on the
//! wall clock, so they hold even if a caller pauses tokio's clock.

use std::fs::OpenOptions;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a service may take to become ready.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take before the process is killed.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a one-shot command (initdb, psql, pg_ctl) may take.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// Log lines quoted in a panic.
const TAIL_LINES: usize = 40;

/// A long-running service process and its log file.
#[derive(Debug)]
pub(crate) struct ServiceProcess {
    name: &'static str,
    log: PathBuf,
    child: Option<Child>,
}

impl ServiceProcess {
    /// Not yet running; output will go to `log`.
    pub(crate) fn new(name: &'static str, log: PathBuf) -> Self {
        Self {
            name,
            log,
            child: None,
        }
    }

    /// Spawns `command` with stdin closed and stdout/stderr appended to the
    /// log file.
    pub(crate) fn spawn(&mut self, mut command: Command) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()));
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()));
        command.stdin(Stdio::null()).stdout(log).stderr(err);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({command:?}): {e}", self.name));
        tracing::debug!(service = self.name, pid = child.id(), "process started");
        self.child = Some(child);
    }

    /// The process id while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process was started and has not been reaped.
    pub(crate) fn is_running(&mut self) -> bool {
        self.exit_status().is_none() && self.child.is_some()
    }

    /// The exit status once the process has ended (it is then reaped).
    fn exit_status(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            Ok(None) => None,
            Err(e) => panic!("cannot wait for {}: {e}", self.name),
        }
    }

    /// Sends `signal` (a name such as `TERM`) through the `kill` command.
    pub(crate) fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            send_signal(signal, &[pid]);
        }
    }

    /// Waits up to `within` for the process to end; `true` if it did.
    pub(crate) async fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.child.is_some() {
            if self.exit_status().is_some() {
                break;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
        true
    }

    /// SIGKILLs the process and reaps it, synchronously.
    pub(crate) fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            tracing::debug!(service = self.name, pid = child.id(), "process killed");
        }
    }

    /// Asks the process to stop with `signal`, then kills it if it has not
    /// ended within [`STOP_TIMEOUT`].
    pub(crate) async fn terminate(&mut self, signal: &str) {
        self.signal(signal);
        if !self.wait_exit(STOP_TIMEOUT).await {
            tracing::warn!(
                service = self.name,
                "process ignored the stop signal, killing it"
            );
            self.kill_now();
        }
    }

    /// Calls `probe` until it returns `true`; panics with the log's tail if
    /// the process ends or [`READY_TIMEOUT`] passes first.
    pub(crate) async fn wait_ready<F, Fut>(&mut self, mut probe: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status() {
                self.fail(&format!("exited while starting ({status})"));
            }
            if self.child.is_none() {
                self.fail("is not running");
            }
            if probe().await {
                return;
            }
            if Instant::now() >= deadline {
                self.kill_now();
                self.fail(&format!("not ready after {READY_TIMEOUT:?}"));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Panics with `what` and the log's last lines.
    pub(crate) fn fail(&self, what: &str) -> ! {
        panic!(
            "{} {what}; last lines of {}:\n{}",
            self.name,
            self.log.display(),
            tail(&self.log)
        )
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// The last lines of a log file.
pub(crate) fn tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
        }
        Err(e) => format!("(cannot read the log: {e})"),
    }
}

/// Sends `signal` to `pids` through the `kill` command; errors (a process
/// already gone) are ignored.
pub(crate) fn send_signal(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-s")
        .arg(signal)
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs a one-shot command to its end (bounded by [`COMMAND_TIMEOUT`]) and
/// returns its output; panics if it cannot run, times out or fails.
pub(crate) async fn run(what: &str, command: Command) -> Output {
    let output = try_run(what, command).await;
    if !output.status.success() {
        panic!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

/// Like [`run`] but returns a failed command's output instead of panicking.
pub(crate) async fn try_run(what: &str, command: Command) -> Output {
    let mut command = tokio::process::Command::from(command);
    command.stdin(Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(COMMAND_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("cannot run {what}: {e}"),
        Err(_) => panic!("{what} did not finish within {COMMAND_TIMEOUT:?}"),
    }
}

/// The first `name` on `PATH`.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Processes whose parent is `pid` (from `/proc`; empty elsewhere).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| proc_stat(child).is_some_and(|(_, ppid)| ppid == pid))
        .collect()
}

/// Whether `pid` is alive (exists and is not a zombie).
pub(crate) fn is_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// `(state, parent pid)` from `/proc/{pid}/stat`.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Waits (synchronously, bounded) until none of `pids` is alive.
pub(crate) fn wait_gone(pids: &[u32], within: Duration) {
    let deadline = Instant::now() + within;
    while pids.iter().any(|&pid| is_alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The effective user id of this process (from `/proc/self/status`, else
/// `id -u`).
pub(crate) fn effective_uid() -> u32 {
    let from_proc = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2)?.parse().ok()
        });
    from_proc.unwrap_or_else(|| {
        let out = Command::new("id")
            .arg("-u")
            .output()
            .expect("cannot run id -u");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("id -u printed no number")
    })
}

/// `(uid, gid)` of `user` from `/etc/passwd`.
pub(crate) fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(is_alive(me));
        let (state, _) = proc_stat(me).expect("own stat");
        assert_ne!(state, 'Z');
    }

    #[test]
    fn finds_root_in_passwd() {
        assert_eq!(user_ids("root"), Some((0, 0)));
        assert_eq!(user_ids("no-such-user-osago"), None);
    }
}
