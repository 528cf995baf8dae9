//! Identifiers.
//!
//! Request ids are random UUIDs (122 random bits): they are unguessable, so a
//! request's stream and quotes URLs can be shared with the browser without
//! further authorisation. Insurer ids are short slugs chosen by configuration.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The id of one quote request, random and unguessable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RequestId(Uuid);

impl RequestId {
    /// A new random id.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for RequestId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for RequestId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s).map(Self)
    }
}

/// The id of one event, unique per published event (consumers may use it
/// for tracing; deduplication relies on `version`, not on this id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EventId(Uuid);

impl EventId {
    /// A new random id.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The id of an insurer: a slug of `[a-z0-9-]`, 1 to 32 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InsurerId(String);

/// Why a string is not an [`InsurerId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("insurer id must be 1-32 characters of a-z, 0-9 and '-'")]
pub struct InvalidInsurerId;

impl InsurerId {
    /// Parses and checks a slug.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidInsurerId> {
        let value = value.into();
        let ok = !value.is_empty()
            && value.len() <= 32
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(value))
        } else {
            Err(InvalidInsurerId)
        }
    }

    /// The slug.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InsurerId {
    type Error = InvalidInsurerId;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<InsurerId> for String {
    fn from(value: InsurerId) -> Self {
        value.0
    }
}

impl FromStr for InsurerId {
    type Err = InvalidInsurerId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for InsurerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The idempotency key sent to an insurer with `POST /applications`: the
/// same for every attempt of one (request, insurer), so retries create one
/// application. Derived (UUID v5), so a resumed pod computes the same key.
pub fn idempotency_key(request_id: &RequestId, insurer_id: &InsurerId) -> String {
    const NAMESPACE: Uuid = Uuid::from_u128(0x6f5a_90c1_4a3e_4f0b_9d2e_0c8b_7a11_5e42);
    let name = format!("{request_id}/{insurer_id}");
    Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for InsurerId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "InsurerId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[a-z0-9-]{1,32}$",
            "description": "An insurer's id: a slug of a-z, 0-9 and '-', 1 to 32 characters"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_random_and_round_trip() {
        let a = RequestId::random();
        let b = RequestId::random();
        assert_ne!(a, b);
        assert_eq!(a.to_string().parse::<RequestId>().unwrap(), a);
    }

    #[test]
    fn insurer_id_accepts_slugs_only() {
        assert!(InsurerId::new("swift-2").is_ok());
        assert!(InsurerId::new("").is_err());
        assert!(InsurerId::new("Swift").is_err());
        assert!(InsurerId::new("a b").is_err());
        assert!(InsurerId::new("x".repeat(33)).is_err());
    }

    #[test]
    fn idempotency_key_is_stable_per_pair() {
        let r = RequestId::random();
        let a = InsurerId::new("a").unwrap();
        let b = InsurerId::new("b").unwrap();
        assert_eq!(idempotency_key(&r, &a), idempotency_key(&r, &a));
        assert_ne!(idempotency_key(&r, &a), idempotency_key(&r, &b));
    }
}
