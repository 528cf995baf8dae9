//! Adapters are chosen by URL: `memory://`, `postgres://…`, `redis://…`
//! (or `valkey://…`), `kafka://host:port[,host:port]`. This module parses
//! and checks such URLs (the binaries then build the adapters), so every
//! configuration problem is found before a port is bound.

use std::fmt;

/// Where events travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusUrl {
    /// The in-process bus (one process only).
    Memory,
    /// A Kafka-protocol broker: the bootstrap servers, `host:port,host:port`.
    Kafka(String),
}

/// Where core-app keeps requests, the outbox and the read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// Memory stores.
    Memory,
    /// PostgreSQL (the URL as given).
    Postgres(String),
}

/// Where the aggregator keeps in-flight state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateUrl {
    /// The memory store.
    Memory,
    /// Valkey or Redis (as a `redis://` URL).
    Valkey(String),
}

/// A URL that names no adapter this build has; the message never repeats
/// the URL (it may hold a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedUrl {
    what: &'static str,
    expected: &'static str,
}

impl fmt::Display for UnsupportedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} url must be {}", self.what, self.expected)
    }
}

impl std::error::Error for UnsupportedUrl {}

fn scheme(url: &str) -> Option<(&str, &str)> {
    url.split_once("://")
}

/// Whether a client property (librdkafka's, for one) holds a secret: a
/// password, a private key, a token, a JAAS config. Its value is never
/// printed; a file location is not a secret.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "key", "jaas", "token", "credential"]
        .iter()
        .any(|word| key.contains(word))
        && !key.ends_with(".location")
}

/// Parses a bus URL.
pub fn bus(url: &str) -> Result<BusUrl, UnsupportedUrl> {
    let err = UnsupportedUrl {
        what: "bus",
        expected: "memory:// or kafka://host:port[,host:port]",
    };
    match scheme(url) {
        Some(("memory", "")) => Ok(BusUrl::Memory),
        Some(("kafka", servers)) => {
            let servers = servers.trim_end_matches('/');
            let valid = !servers.is_empty()
                && servers.split(',').all(|server| {
                    server.rsplit_once(':').is_some_and(|(host, port)| {
                        !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                    })
                });
            if valid {
                Ok(BusUrl::Kafka(servers.to_owned()))
            } else {
                Err(err)
            }
        }
        _ => Err(err),
    }
}

/// Parses a database URL.
pub fn database(url: &str) -> Result<DatabaseUrl, UnsupportedUrl> {
    match scheme(url) {
        Some(("memory", "")) => Ok(DatabaseUrl::Memory),
        Some(("postgres" | "postgresql", rest)) if !rest.is_empty() => {
            Ok(DatabaseUrl::Postgres(url.to_owned()))
        }
        _ => Err(UnsupportedUrl {
            what: "database",
            expected: "memory:// or postgres://user@host:port/db",
        }),
    }
}

/// Parses a state-store URL.
pub fn state(url: &str) -> Result<StateUrl, UnsupportedUrl> {
    match scheme(url) {
        Some(("memory", "")) => Ok(StateUrl::Memory),
        Some(("redis" | "rediss" | "redis+cluster" | "rediss+cluster", rest))
            if !rest.is_empty() =>
        {
            Ok(StateUrl::Valkey(url.to_owned()))
        }
        Some(("valkey", rest)) if !rest.is_empty() => {
            Ok(StateUrl::Valkey(format!("redis://{rest}")))
        }
        _ => Err(UnsupportedUrl {
            what: "state",
            expected: "memory://, redis://host:port (valkey://host:port, rediss:// for TLS) or redis+cluster://host:port[,host:port]",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(bus("memory://"), Ok(BusUrl::Memory));
        assert_eq!(
            bus("kafka://127.0.0.1:9092,b:9093"),
            Ok(BusUrl::Kafka("127.0.0.1:9092,b:9093".into()))
        );
        assert!(bus("kafka://").is_err());
        assert!(bus("kafka://host").is_err());
        assert!(bus("nats://x:1").is_err());
        assert_eq!(
            database("postgres://u@h/db"),
            Ok(DatabaseUrl::Postgres("postgres://u@h/db".into()))
        );
        assert!(database("mysql://u@h/db").is_err());
        assert_eq!(
            state("valkey://h:6379"),
            Ok(StateUrl::Valkey("redis://h:6379".into()))
        );
        assert_eq!(state("memory://"), Ok(StateUrl::Memory));
        let err = database("postgres:/secret@h").unwrap_err().to_string();
        assert!(!err.contains("secret"));
    }
}
