//! docs/configuration.md lists every setting of every binary: each flag
//! and environment variable its `--help` shows, and each one-off task.

use std::process::Command;

use osago_tests::processes::binary;

fn help(args: &[&str], name: &str) -> String {
    let output = Command::new(binary(name))
        .args(args)
        .arg("--help")
        .output()
        .expect("runs");
    assert!(output.status.success(), "{name} {args:?} --help");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `--flags` and `[env: NAME=…]` of a clap help text.
fn settings(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in help.lines() {
        let line = line.trim_start();
        if let Some(rest) = line.strip_prefix("--") {
            let flag: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !matches!(flag.as_str(), "help" | "version") {
                out.push(format!("`--{flag}`"));
            }
        }
        let mut text = line;
        while let Some(at) = text.find("[env: ") {
            let name: String = text[at + 6..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            out.push(format!("`{name}`"));
            text = &text[at + 6..];
        }
    }
    out
}

#[test]
fn every_setting_is_documented() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let mut missing = Vec::new();
    let mut seen = 0;
    for (name, args) in [
        ("osago", &[][..]),
        ("core-app", &[][..]),
        ("core-app", &["outbox"][..]),
        ("aggregator", &[][..]),
        ("insurer-sim", &[][..]),
    ] {
        let section = format!("## `{name}`");
        let Some(start) = docs.find(&section) else {
            missing.push(format!("{name}: no section {section:?}"));
            continue;
        };
        let rest = &docs[start + section.len()..];
        let body = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
        for setting in settings(&help(args, name)) {
            seen += 1;
            if !body.contains(&setting) {
                missing.push(format!("{name} {args:?}: {setting}"));
            }
        }
    }
    assert!(seen > 60, "only {seen} settings found: is --help parsed?");
    assert!(
        docs.contains("`outbox requeue-dead`"),
        "the requeue task is documented"
    );
    assert!(
        missing.is_empty(),
        "undocumented in docs/configuration.md:\n{}",
        missing.join("\n")
    );
}
