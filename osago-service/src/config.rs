//! One configuration for every binary: a TOML file, the environment and the
//! flags, in one naming scheme.
//!
//! - **Names.** A setting's key in the file is its flag without the dashes
//!   (`heartbeat = "15s"`, `kafka-property = ["security.protocol=SSL"]`); its
//!   environment variable is the one `--help` shows (`OSAGO_HEARTBEAT`).
//! - **The file** is `--config PATH` (or `OSAGO_CONFIG`). Its top-level
//!   keys apply to the binary reading it; a table named after a binary
//!   (`[core-app]`, `[aggregator]`, `[osago]`) applies to that binary only
//!   and is skipped by the others, so one file can serve a whole
//!   deployment.
//! - **Precedence:** a flag beats the environment, which beats the file,
//!   which beats the built-in default.
//! - **Problems** are all reported at once, type errors included (each
//!   value is checked by its flag's own parser, wherever it came from), and
//!   the binary exits with status 64. A problem never quotes a value: it
//!   may be a secret.
//! - **`--print-config`** prints the effective configuration as TOML, each
//!   value with where it came from, secrets redacted ([`redact`]), and
//!   exits.
//!
//! The file is read with the `toml` crate; clap stays the one description
//! of every setting (name, type, default, env, help).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command, CommandFactory, FromArgMatches};

use crate::settings::Problems;

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "OSAGO_CONFIG";

/// The binaries a file may hold a table for.
pub const BINARIES: [&str; 3] = ["core-app", "aggregator", "osago"];

/// Parsed arguments and what `--print-config` shows.
#[derive(Debug)]
pub struct Loaded<A> {
    /// The arguments, flags over environment over file over defaults.
    pub args: A,
    /// The effective configuration as TOML, secrets redacted.
    pub effective: String,
}

/// Loads the configuration of `binary` from the process's arguments and
/// environment; every problem at once, or the arguments. `--help` and
/// `--version` print and exit here, as clap does.
pub fn load<A: CommandFactory + FromArgMatches>(binary: &str) -> Result<Loaded<A>, Problems> {
    load_from(binary, std::env::args_os().collect(), |name| {
        std::env::var_os(name)
    })
}

/// [`load`] from the given arguments (the first is the program name) and
/// environment lookup.
pub fn load_from<A: CommandFactory + FromArgMatches>(
    binary: &str,
    argv: Vec<OsString>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Loaded<A>, Problems> {
    let command = A::command();
    let mut p = Problems::default();
    let given = flags_given(&argv);
    let mut argv = argv;

    // Values from the environment and the command line, each checked by
    // its own parser (clap would stop at the first bad one).
    for arg in command.get_arguments() {
        let Some(name) = arg.get_env().and_then(|e| e.to_str()) else {
            continue;
        };
        if let Some(value) = env(name).filter(|v| !v.is_empty()) {
            if arg.get_long().is_some_and(|long| given.contains(long)) {
                continue;
            }
            let value = value.to_string_lossy();
            if !arg.get_action().takes_values() {
                let boolish = [
                    "true", "false", "1", "0", "yes", "no", "on", "off", "y", "n",
                ];
                p.check(
                    !boolish.contains(&value.to_ascii_lowercase().as_str()),
                    format!("{name}: expected true or false"),
                );
                continue;
            }
            for value in split(arg, &value) {
                check_value(arg, &value, name, &mut p);
            }
        }
    }
    for (long, value) in flag_values(&command, &argv) {
        if let Some(arg) = find(&command, &long) {
            check_value(arg, &value, &format!("--{long}"), &mut p);
        }
    }

    // The file: its values go in as flags the command line did not give
    // and the environment does not set.
    let path = config_path(&argv, &env);
    let mut from_file = BTreeSet::new();
    if let Some(path) = &path {
        let injected = read_file(binary, &command, path, &given, &env, &mut p);
        for (long, values) in injected {
            from_file.insert(long.clone());
            argv.extend(values);
        }
    }
    if !p.is_empty() {
        return Err(p);
    }

    let matches = match command.clone().try_get_matches_from(&argv) {
        Ok(matches) => matches,
        Err(err) => match err.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                err.exit()
            }
            _ => {
                // clap's first line names the problem; later lines are usage.
                let text = err.to_string();
                let line = text.lines().next().unwrap_or("invalid arguments");
                p.push(line.trim_start_matches("error: ").to_owned());
                return Err(p);
            }
        },
    };
    let args = match A::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(err) => {
            p.push(
                err.to_string()
                    .lines()
                    .next()
                    .unwrap_or("invalid arguments")
                    .to_owned(),
            );
            return Err(p);
        }
    };
    Ok(Loaded {
        effective: effective(&command, &matches, &from_file, path.as_ref()),
        args,
    })
}

/// Long names given on the command line (`--name` or `--name=value`).
fn flags_given(argv: &[OsString]) -> BTreeSet<String> {
    argv.iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .take_while(|a| *a != "--")
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split_once('=').map_or(a, |(name, _)| name).to_owned())
        .collect()
}

/// `(long, value)` for every flag value on the command line.
fn flag_values(command: &Command, argv: &[OsString]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut tokens = argv.iter().skip(1).filter_map(|a| a.to_str()).peekable();
    while let Some(token) = tokens.next() {
        if token == "--" {
            break;
        }
        let Some(flag) = token.strip_prefix("--") else {
            continue;
        };
        let (long, inline) = match flag.split_once('=') {
            Some((long, value)) => (long, Some(value.to_owned())),
            None => (flag, None),
        };
        let Some(arg) = find(command, long) else {
            continue;
        };
        if !arg.get_action().takes_values() {
            continue;
        }
        let value = match inline {
            Some(value) => value,
            None => match tokens.next() {
                Some(value) => value.to_owned(),
                None => continue,
            },
        };
        for value in split(arg, &value) {
            out.push((long.to_owned(), value));
        }
    }
    out
}

fn find<'a>(command: &'a Command, long: &str) -> Option<&'a Arg> {
    command.get_arguments().find(|a| a.get_long() == Some(long))
}

/// A value split at the argument's delimiter, as clap would.
fn split(arg: &Arg, value: &str) -> Vec<String> {
    match arg.get_value_delimiter() {
        Some(delimiter) => value.split(delimiter).map(str::to_owned).collect(),
        None => vec![value.to_owned()],
    }
}

/// Runs the argument's own parser on one value; a problem names where the
/// value came from, never the value.
fn check_value(arg: &Arg, value: &str, origin: &str, p: &mut Problems) {
    let Some(long) = arg.get_long() else {
        return;
    };
    let probe = Command::new("osago").no_binary_name(true).arg(
        arg.clone()
            .env(clap::builder::Resettable::Reset)
            .required(false)
            .value_delimiter(clap::builder::Resettable::Reset),
    );
    if let Err(err) = probe.try_get_matches_from([format!("--{long}={value}")]) {
        let text = err.to_string();
        let reason = text
            .lines()
            .next()
            .unwrap_or("invalid value")
            .trim_start_matches("error: ");
        // clap quotes the value (`invalid value 'x' for '--y'`): keep the
        // reason after the flag only.
        let reason = reason
            .split_once(&format!("'--{long} <"))
            .and_then(|(_, rest)| rest.split_once(">': "))
            .map_or("invalid value", |(_, why)| why);
        p.push(format!("{origin}: {reason}"));
    }
}

/// `--config` or `OSAGO_CONFIG`.
fn config_path(argv: &[OsString], env: &impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let mut tokens = argv.iter().skip(1);
    while let Some(token) = tokens.next() {
        let text = token.to_string_lossy();
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
        if text == "--config" {
            return tokens.next().map(PathBuf::from);
        }
    }
    env(CONFIG_ENV).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// The file's settings for `binary` as flags, `(long, [--long=value…])`,
/// leaving out what the command line or the environment sets.
fn read_file(
    binary: &str,
    command: &Command,
    path: &PathBuf,
    given: &BTreeSet<String>,
    env: &impl Fn(&str) -> Option<OsString>,
    p: &mut Problems,
) -> Vec<(String, Vec<OsString>)> {
    let at = format!("--config {}", path.display());
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            p.push(format!("{at}: {err}"));
            return Vec::new();
        }
    };
    let table: toml::Table = match text.parse() {
        Ok(table) => table,
        Err(err) => {
            // toml's Display quotes the line, which may hold a secret.
            let line = err
                .span()
                .map(|span| text[..span.start].lines().count().max(1));
            let line = line.map_or_else(String::new, |l| format!(" (line {l})"));
            p.push(format!("{at}{line}: {}", err.message()));
            return Vec::new();
        }
    };
    let mut entries: Vec<(String, toml::Value)> = Vec::new();
    for (key, value) in table {
        match value {
            toml::Value::Table(section) if BINARIES.contains(&key.as_str()) => {
                if key == binary {
                    entries.extend(section);
                }
            }
            value => entries.push((key, value)),
        }
    }
    let mut out = Vec::new();
    for (key, value) in entries {
        let own = !matches!(key.as_str(), "config" | "print-config" | "help" | "version");
        let Some(arg) = find(command, &key).filter(|_| own) else {
            p.push(format!("{at}: {key}: not a setting of {binary}"));
            continue;
        };
        let origin = format!("{at}: {key}");
        let values: Vec<String> = match &value {
            toml::Value::Array(items) => {
                items.iter().filter_map(|v| scalar(v, &origin, p)).collect()
            }
            scalar_value => scalar(scalar_value, &origin, p).into_iter().collect(),
        };
        if given.contains(&key)
            || arg
                .get_env()
                .and_then(|e| e.to_str())
                .is_some_and(|name| env(name).is_some_and(|v| !v.is_empty()))
        {
            continue;
        }
        if !arg.get_action().takes_values() {
            match value {
                toml::Value::Boolean(true) => {
                    out.push((key.clone(), vec![format!("--{key}").into()]))
                }
                toml::Value::Boolean(false) => {}
                _ => p.push(format!("{origin}: expected true or false")),
            }
            continue;
        }
        let repeatable = matches!(arg.get_action(), clap::ArgAction::Append);
        if values.len() > 1 && !repeatable {
            p.push(format!("{origin}: takes one value, not a list"));
            continue;
        }
        let mut flags = Vec::new();
        for value in values {
            check_value(arg, &value, &origin, p);
            flags.push(OsString::from(format!("--{key}={value}")));
        }
        out.push((key, flags));
    }
    out
}

/// A TOML scalar as the text a flag would take.
fn scalar(value: &toml::Value, origin: &str, p: &mut Problems) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => {
            p.push(format!(
                "{origin}: expected a string, a number, true/false or a list of them"
            ));
            None
        }
    }
}

/// A value as it may be shown: a URL's password, a secret librdkafka
/// property, an insurer header's value and access keys are replaced by
/// `<redacted>`.
pub fn redact(long: &str, value: &str) -> String {
    if long == "access-keys" {
        return "<redacted>".to_owned();
    }
    if long == "insurer-header" {
        return match value.split_once(':') {
            Some((name, _)) => format!("{name}: <redacted>"),
            None => "<redacted>".to_owned(),
        };
    }
    if long == "kafka-property" {
        if let Some((key, _)) = value.split_once('=') {
            if osago_transport::resolve::is_secret_property(key) {
                return format!("{key}=<redacted>");
            }
        }
    }
    // scheme://user:password@host…
    if let Some((scheme, rest)) = value.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                return format!("{scheme}://{}:<redacted>{}", &rest[..colon], &rest[at..]);
            }
        }
    }
    value.to_owned()
}

/// The effective configuration as TOML: every setting with its value and
/// where it came from.
fn effective(
    command: &Command,
    matches: &ArgMatches,
    from_file: &BTreeSet<String>,
    path: Option<&PathBuf>,
) -> String {
    let mut out = String::new();
    if let Some(path) = path {
        out.push_str(&format!("# file: {}\n", path.display()));
    }
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue;
        };
        if matches!(long, "config" | "print-config" | "help" | "version") {
            continue;
        }
        let id = arg.get_id().as_str();
        let source = if from_file.contains(long) {
            "file"
        } else {
            match matches.value_source(id) {
                Some(ValueSource::CommandLine) => "flag",
                Some(ValueSource::EnvVariable) => "env",
                Some(ValueSource::DefaultValue) => "default",
                _ => "unset",
            }
        };
        let shown = if !arg.get_action().takes_values() {
            matches.get_flag(id).to_string()
        } else {
            let values: Vec<String> = matches
                .get_raw(id)
                .map(|raw| {
                    raw.map(|v| toml_string(&redact(long, &v.to_string_lossy())))
                        .collect()
                })
                .unwrap_or_default();
            if matches!(arg.get_action(), clap::ArgAction::Append) {
                format!("[{}]", values.join(", "))
            } else {
                values
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| "\"\"".to_owned())
            }
        };
        out.push_str(&format!("{long} = {shown}  # {source}\n"));
    }
    out
}

fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

/// Applies the `--set` entries under `root` (`engine.resilience.breaker.failure_rate=0.3`)
/// to a library configuration, so every knob of its struct is reachable
/// without a flag of its own. The path follows the struct's fields (as
/// its serde names them); a value is written as the field takes it: a
/// number, `true`/`false`, text, a duration such as `250ms` or `2m` (for a
/// duration field, or a field in milliseconds), or JSON. An insurer that has
/// no override of its own in `resilience_overrides.<id>` starts from
/// `resilience` (as the other entries set it). An entry that names no
/// field or whose value does not fit is a problem naming it; the others
/// are applied, so the configuration's own checks see them. `None` when
/// the result does not decode.
pub fn apply_sets<T>(config: &T, root: &str, sets: &[String], p: &mut Problems) -> Option<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut value = serde_json::to_value(config).ok()?;
    // Per-insurer overrides last: a new one starts from the default policy
    // as these entries leave it.
    let (overrides, plain): (Vec<&String>, Vec<&String>) = sets
        .iter()
        .partition(|set| set.contains(".resilience_overrides."));
    for set in plain.into_iter().chain(overrides) {
        let Some((path, raw)) = set.split_once('=') else {
            continue;
        };
        let Some(path) = path
            .trim()
            .strip_prefix(root)
            .and_then(|p| p.strip_prefix('.'))
        else {
            continue;
        };
        if let Err(problem) = set_path(&mut value, path, raw.trim()) {
            p.push(format!("--set {root}.{path}: {problem}"));
        }
    }
    // The entries that fit are applied even when others did not, so the
    // configuration's own checks see them and every problem comes at once.
    match serde_json::from_value(value) {
        Ok(config) => Some(config),
        Err(err) => {
            p.push(format!("--set {root}: {err}"));
            None
        }
    }
}

/// The roots `--set` entries name that none of `roots` is: problems.
pub fn check_set_roots(sets: &[String], roots: &[&str], p: &mut Problems) {
    for set in sets {
        let Some((path, _)) = set.split_once('=') else {
            p.push(format!("--set {set:?}: expected root.path=value"));
            continue;
        };
        let root = path.trim().split('.').next().unwrap_or_default();
        p.check(
            !roots.contains(&root) || !path.contains('.'),
            format!(
                "--set {}: {root:?} is not a configuration here ({})",
                path.trim(),
                roots.join(", ")
            ),
        );
    }
}

fn set_path(value: &mut serde_json::Value, path: &str, raw: &str) -> Result<(), String> {
    use serde_json::Value;
    let segments: Vec<&str> = path.split('.').collect();
    let (last, parents) = segments.split_last().ok_or("empty path")?;
    let mut at = value;
    for (i, segment) in parents.iter().enumerate() {
        let Value::Object(object) = at else {
            return Err(format!(
                "{} is not a group of settings",
                parents[..i].join(".")
            ));
        };
        // A per-insurer policy without an override yet starts from the
        // default one.
        if i > 0 && parents[i - 1] == "resilience_overrides" && !object.contains_key(*segment) {
            return Err(format!("no insurer {segment:?}"));
        }
        if *segment == "resilience_overrides" {
            let base = object.get("resilience").cloned();
            if let (Some(Value::Object(map)), Some(id), Some(base)) =
                (object.get_mut(*segment), segments.get(i + 1), base)
            {
                map.entry((*id).to_owned()).or_insert(base);
            }
        }
        if !object.contains_key(*segment) {
            return Err(format!(
                "no setting {segment:?} (there are: {})",
                keys(object)
            ));
        }
        at = object.get_mut(*segment).expect("checked");
    }
    let Value::Object(object) = at else {
        return Err(format!("{} is not a group of settings", parents.join(".")));
    };
    let Some(existing) = object.get(*last) else {
        return Err(format!("no setting {last:?} (there are: {})", keys(object)));
    };
    let new = convert(existing, raw)?;
    object.insert((*last).to_owned(), new);
    Ok(())
}

fn keys(object: &serde_json::Map<String, serde_json::Value>) -> String {
    object.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// The raw text as the kind of value the field holds now.
fn convert(existing: &serde_json::Value, raw: &str) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    let duration = || humantime::parse_duration(raw).map_err(|e| format!("not a duration: {e}"));
    match existing {
        Value::Object(o) if o.len() == 2 && o.contains_key("secs") && o.contains_key("nanos") => {
            let d = duration()?;
            Ok(serde_json::json!({ "secs": d.as_secs(), "nanos": d.subsec_nanos() }))
        }
        Value::Number(_) => match serde_json::from_str::<Value>(raw) {
            Ok(n @ Value::Number(_)) => Ok(n),
            _ => duration().map(|d| Value::from(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
        },
        Value::Bool(_) => match raw {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err("expected true or false".into()),
        },
        Value::String(_) => Ok(Value::String(raw.to_owned())),
        _ => Ok(serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(default)]
    struct Policy {
        failure_rate: f64,
        open_for: std::time::Duration,
        fast: bool,
    }

    #[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(default)]
    struct Engine {
        resilience: Policy,
        resilience_overrides: std::collections::BTreeMap<String, Policy>,
        timeout_ms: u64,
    }

    #[test]
    fn every_field_is_reachable_by_its_path() {
        let base = Engine {
            resilience: Policy {
                failure_rate: 0.5,
                ..Policy::default()
            },
            ..Engine::default()
        };
        let sets = [
            "engine.resilience.failure_rate=0.3",
            "engine.resilience.open_for=45s",
            "engine.resilience_overrides.flaky.fast=true",
            "engine.timeout_ms=2s",
            "intake.anything=1",
        ]
        .map(str::to_owned);
        let mut p = Problems::default();
        let engine = apply_sets(&base, "engine", &sets, &mut p).expect("applied");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(engine.resilience.failure_rate, 0.3);
        assert_eq!(
            engine.resilience.open_for,
            std::time::Duration::from_secs(45)
        );
        // The new override starts from the default policy as set.
        let flaky = &engine.resilience_overrides["flaky"];
        assert!(flaky.fast);
        assert_eq!(flaky.failure_rate, 0.3);
        assert_eq!(engine.timeout_ms, 2_000);
    }

    #[test]
    fn a_wrong_path_or_value_is_a_problem_naming_the_entry() {
        let sets = [
            "engine.resilience.nope=1",
            "engine.resilience.open_for=soon",
            "engine.resilience.fast=maybe",
        ]
        .map(str::to_owned);
        let mut p = Problems::default();
        let _ = apply_sets(&Engine::default(), "engine", &sets, &mut p);
        let lines = p.lines();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("--set engine.resilience.nope: no setting"));
        assert!(lines[1].contains("open_for: not a duration"));
        assert!(lines[2].contains("fast: expected true or false"));
        let mut p = Problems::default();
        check_set_roots(&["queue.x=1".to_owned()], &["engine", "intake"], &mut p);
        assert_eq!(p.lines().len(), 1);
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact(
                "database",
                "postgres://osago:pw@db:5432/osago?sslmode=verify-full"
            ),
            "postgres://osago:<redacted>@db:5432/osago?sslmode=verify-full"
        );
        assert_eq!(
            redact("state", "rediss://:pw@cache:6380"),
            "rediss://:<redacted>@cache:6380"
        );
        assert_eq!(
            redact("database", "postgres://db/osago"),
            "postgres://db/osago"
        );
        assert_eq!(
            redact("kafka-property", "sasl.password=hunter2"),
            "sasl.password=<redacted>"
        );
        assert_eq!(
            redact("kafka-property", "security.protocol=SASL_SSL"),
            "security.protocol=SASL_SSL"
        );
        assert_eq!(
            redact("insurer-header", "alfa=Authorization: Bearer x"),
            "alfa=Authorization: <redacted>"
        );
    }
}
