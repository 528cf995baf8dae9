//! One configuration: a TOML file (`--config`), the environment and the
//! flags, with `--print-config`, through the real binaries.

use std::path::Path;
use std::process::{Command, Output};

use osago_tests::processes::binary;

fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary(name));
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("OSAGO_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/examples")
        .join(name)
        .display()
        .to_string()
}

/// The line of `key` in a `--print-config` output.
fn line<'a>(printed: &'a str, key: &str) -> &'a str {
    printed
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{printed}"))
}

#[test]
fn both_example_files_load_for_both_services() {
    for file in ["local.toml", "production.toml"] {
        for name in ["core-app", "aggregator"] {
            let output = run(name, &["--config", &example(file), "--print-config"], &[]);
            assert_eq!(
                output.status.code(),
                Some(0),
                "{name} {file}: {}",
                stderr(&output)
            );
            let printed = stdout(&output);
            assert!(line(&printed, "bus").ends_with("# file"), "{printed}");
            assert!(line(&printed, "listen").ends_with("# file"), "{printed}");
        }
    }
    let printed = stdout(&run(
        "aggregator",
        &["--config", &example("production.toml"), "--print-config"],
        &[],
    ));
    assert_eq!(
        line(&printed, "kafka-property"),
        "kafka-property = [\"security.protocol=SASL_SSL\", \"sasl.mechanisms=SCRAM-SHA-512\", \"sasl.username=osago\", \"ssl.ca.location=/etc/osago/kafka-ca.pem\"]  # file"
    );
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("osago.toml");
    std::fs::write(
        &file,
        "[core-app]\nheartbeat = \"5s\"\n[aggregator]\nnot-ours = 1\n",
    )
    .unwrap();
    let file = file.display().to_string();
    let heartbeat = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["--config", &file, "--print-config"];
        all.extend(args);
        let output = run("core-app", &all, env);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        line(&stdout(&output), "heartbeat").to_owned()
    };
    assert_eq!(heartbeat(&[], &[]), "heartbeat = \"5s\"  # file");
    assert_eq!(
        heartbeat(&[], &[("OSAGO_HEARTBEAT", "7s")]),
        "heartbeat = \"7s\"  # env"
    );
    assert_eq!(
        heartbeat(&["--heartbeat", "9s"], &[("OSAGO_HEARTBEAT", "7s")]),
        "heartbeat = \"9s\"  # flag"
    );
    assert_eq!(
        line(
            &stdout(&run("core-app", &["--print-config"], &[])),
            "heartbeat"
        ),
        "heartbeat = \"15s\"  # default"
    );
    // The file may also be named by the environment.
    let output = run("core-app", &["--print-config"], &[("OSAGO_CONFIG", &file)]);
    assert_eq!(
        line(&stdout(&output), "heartbeat"),
        "heartbeat = \"5s\"  # file"
    );
}

#[test]
fn every_problem_is_reported_at_once_type_errors_included() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("osago.toml");
    std::fs::write(
        &file,
        "heartbeat = \"s3cret-soon\"\nno-such-setting = 1\n[core-app]\nbody-limit = \"big\"\n",
    )
    .unwrap();
    let output = run(
        "core-app",
        &[
            "--config",
            &file.display().to_string(),
            "--request-deadline",
            "never",
        ],
        &[("OSAGO_AUDIT", "maybe")],
    );
    let text = stderr(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(output.status.code(), Some(64), "{text}");
    for needle in [
        ": heartbeat:",
        "no-such-setting: not a setting of core-app",
        ": body-limit:",
        "--request-deadline:",
        "OSAGO_AUDIT:",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(needle)),
            "no line with {needle:?}:\n{text}"
        );
    }
    assert!(!text.contains("s3cret"), "a value was echoed:\n{text}");

    // Type errors of flags alone exit 64 too (clap's own would be 2), and
    // check problems come all at once.
    let output = run(
        "core-app",
        &[
            "--heartbeat",
            "0s",
            "--body-limit",
            "1",
            "--retention",
            "1s",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    assert_eq!(stderr(&output).lines().count(), 3, "{}", stderr(&output));
}

#[test]
fn print_config_never_shows_a_secret() {
    let output = run(
        "core-app",
        &[
            "--print-config",
            "--database",
            "postgres://osago:db-pa55@db:5432/osago",
            "--kafka-property",
            "sasl.password=hunter2",
            "--kafka-property",
            "sasl.username=osago",
        ],
        &[("OSAGO_RATE_LIMIT_URL", "rediss://:valkey-pa55@cache:6380")],
    );
    let printed = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for secret in ["db-pa55", "hunter2", "valkey-pa55"] {
        assert!(!printed.contains(secret), "{secret} in:\n{printed}");
    }
    assert_eq!(
        line(&printed, "database"),
        "database = \"postgres://osago:<redacted>@db:5432/osago\"  # flag"
    );
    assert!(line(&printed, "kafka-property").contains("sasl.username=osago"));
    let output = run(
        "aggregator",
        &[
            "--print-config",
            "--insurer",
            "alfa=https://alfa.example/",
            "--insurer-header",
            "alfa=Authorization: Bearer t0ken",
        ],
        &[],
    );
    let printed = stdout(&output);
    assert!(!printed.contains("t0ken"), "{printed}");
    assert!(line(&printed, "insurer-header").contains("alfa=Authorization: <redacted>"));
}
