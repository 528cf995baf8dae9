//! The page in a real browser (issue 14): headless Chromium (Debian's
//! `chromium`, installed by `scripts/install-test-services.sh`, or
//! `$OSAGO_CHROMIUM_BIN`) loads it from core-app under its
//! Content-Security-Policy; its script runs (it fills the region list) and
//! the console shows nothing: no CSP violation, no error.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use osago::EmbeddedConfig;

fn chromium() -> PathBuf {
    if let Some(bin) = std::env::var_os("OSAGO_CHROMIUM_BIN") {
        return PathBuf::from(bin);
    }
    for candidate in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let path = dir.join(candidate);
            if path.is_file() {
                return path;
            }
        }
    }
    panic!(
        "no chromium: run ./scripts/install-test-services.sh (Debian: apt-get install chromium), \
         or set OSAGO_CHROMIUM_BIN"
    );
}

/// Loads `url` in headless Chromium; (the DOM after its scripts ran, the
/// console lines).
async fn load(url: &str) -> (String, Vec<String>) {
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(url)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium finished within 90 s")
    .expect("chromium runs");
    assert!(output.status.success(), "chromium failed: {output:?}");
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    let console = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| line.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    (dom, console)
}

#[tokio::test]
async fn the_page_runs_under_its_csp_with_a_silent_console() {
    let config = EmbeddedConfig {
        insurers: vec![],
        ..EmbeddedConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let system = osago::start(listener, config).await.unwrap();
    let (dom, console) = load(&format!("http://{}/", system.addr)).await;
    assert!(
        console.is_empty(),
        "the console spoke (a CSP violation or an error):\n{}",
        console.join("\n")
    );
    // The script ran: it fills the region list and the driver card.
    assert!(
        dom.contains(r#"<option value="77">"#),
        "the page's script did not run: {dom}"
    );
    assert!(dom.contains("drivers.list[0]"), "no driver card: {dom}");
    // The form opens empty, the consents unticked.
    assert!(
        !dom.contains("Иванов"),
        "sample personal data on an empty page"
    );

    // The probe itself sees a violation: the same page with an inline
    // script is refused and reported.
    let (_, console) = load(&format!(
        "data:text/html,<meta http-equiv=\"Content-Security-Policy\" content=\"{}\"><script>1</script>",
        core_app::http::PAGE_CSP.replace('\'', "%27")
    ))
    .await;
    assert!(
        console.iter().any(|l| l.contains("violates")),
        "a violation went unseen: {console:?}"
    );
    system.stop().await;
}
