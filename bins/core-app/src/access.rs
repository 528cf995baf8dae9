//! Access to one request's quotes: a token bound to the request id, an
//! HMAC-SHA256 under a server key every core-app shares ([`AccessKeys`]).
//!
//! The `POST` answer carries it (`access_token`) and sets it as an
//! `HttpOnly; Secure; SameSite=Strict` cookie scoped to the request's path,
//! so the page's `EventSource` sends it and no script can read it; other
//! clients send `Authorization: Bearer <token>`. The stream and quotes
//! endpoints answer a missing, wrong or foreign token exactly as they
//! answer an unknown id (404), before touching the database.
//!
//! Rotation: the first key signs, every key verifies; a token names its
//! key (`<key id>.<mac>`). Add the new key first, keep the old one for the
//! retention period, then drop it. Keys come from the configuration, so
//! tokens survive restarts and work on every pod.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use osago_core::RequestId;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The cookie carrying a request's token.
pub const COOKIE: &str = "osago_access";

/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// What the MAC covers besides the id: a purpose and a version, so the key
/// signs nothing else that could be mistaken for a token.
const CONTEXT: &[u8] = b"osago-access-v1:";

/// Server keys for access tokens: `(id, secret)`, the first signs.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKeys {
    keys: Vec<(String, Vec<u8>)>,
}

impl fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("AccessKeys")
            .field("ids", &ids)
            .finish_non_exhaustive()
    }
}

impl Default for AccessKeys {
    /// One random key, this process's own (the same for every default in
    /// the process): tokens die with the process and work on this pod
    /// only. Configure keys for more than one pod.
    fn default() -> Self {
        static LOCAL: std::sync::OnceLock<AccessKeys> = std::sync::OnceLock::new();
        LOCAL.get_or_init(Self::random).clone()
    }
}

impl AccessKeys {
    /// One random key with the id `local`.
    pub fn random() -> Self {
        let secret: [u8; 32] = rand::random();
        Self {
            keys: vec![("local".to_owned(), secret.to_vec())],
        }
    }

    /// Keys from `spec`: `id:base64-secret` entries separated by commas or
    /// new lines (a mounted secret file), the signing key first; blank
    /// lines and `#` comments are skipped. Ids are 1-32 of `[A-Za-z0-9_-]`;
    /// a secret is at least [`MIN_KEY_BYTES`] bytes. Errors never echo a
    /// secret.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (n, entry) in spec
            .split([',', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.starts_with('#'))
            .enumerate()
        {
            let Some((id, secret)) = entry.split_once(':') else {
                return Err(format!("access key {}: expected id:base64-secret", n + 1));
            };
            let id = id.trim();
            if id.is_empty()
                || id.len() > 32
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!(
                    "access key {}: the id must be 1-32 of A-Z a-z 0-9 - _",
                    n + 1
                ));
            }
            let secret = STANDARD
                .decode(secret.trim())
                .map_err(|_| format!("access key {id}: the secret is not base64"))?;
            if secret.len() < MIN_KEY_BYTES {
                return Err(format!(
                    "access key {id}: the secret must be at least {MIN_KEY_BYTES} bytes"
                ));
            }
            if keys.iter().any(|(seen, _)| seen == id) {
                return Err(format!("access key {id}: the id is used twice"));
            }
            keys.push((id.to_owned(), secret));
        }
        if keys.is_empty() {
            return Err("no access key given".to_owned());
        }
        Ok(Self { keys })
    }

    /// The ids, signing key first.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(id, _)| id.as_str()).collect()
    }

    fn mac(secret: &[u8], id: &RequestId) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(secret).expect("any key length");
        mac.update(CONTEXT);
        mac.update(id.to_string().as_bytes());
        mac
    }

    /// The token for request `id`, under the signing key.
    pub fn issue(&self, id: &RequestId) -> String {
        let (key_id, secret) = &self.keys[0];
        let tag = Self::mac(secret, id).finalize().into_bytes();
        format!("{key_id}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Whether `token` was issued for `id` under one of the keys (compared
    /// in constant time).
    pub fn verify(&self, id: &RequestId, token: &str) -> bool {
        let Some((key_id, tag)) = token.trim().split_once('.') else {
            return false;
        };
        let Some((_, secret)) = self.keys.iter().find(|(k, _)| k == key_id) else {
            return false;
        };
        let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else {
            return false;
        };
        Self::mac(secret, id).verify_slice(&tag).is_ok()
    }

    /// Whether `headers` carry a valid token for `id`: a bearer token, or
    /// any [`COOKIE`] value.
    pub fn allows(&self, id: &RequestId, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            });
        let cookies = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                (name == COOKIE).then_some(value)
            });
        bearer.chain(cookies).any(|token| self.verify(id, token))
    }

    /// The `Set-Cookie` value handing the page the token of request `id`,
    /// sent back only to that request's endpoints, for `max_age`.
    pub fn cookie(&self, id: &RequestId, max_age: std::time::Duration) -> String {
        format!(
            "{COOKIE}={}; Path=/api/osago/requests/{id}; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
            self.issue(id),
            max_age.as_secs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(spec: &str) -> AccessKeys {
        AccessKeys::parse(spec).unwrap()
    }

    const K1: &str = "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const K2: &str = "k2:ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

    #[test]
    fn a_token_opens_its_request_only() {
        let keys = keys(K1);
        let (a, b) = (RequestId::random(), RequestId::random());
        let token = keys.issue(&a);
        assert!(keys.verify(&a, &token));
        assert!(!keys.verify(&b, &token));
        assert!(!keys.verify(&a, "k1.AAAA"));
        assert!(!keys.verify(&a, ""));
        assert!(!keys.verify(&a, "nokey"));
        assert!(!AccessKeys::random().verify(&a, &token));
    }

    #[test]
    fn rotation_keeps_old_tokens_until_their_key_is_dropped() {
        let id = RequestId::random();
        let old = keys(K1).issue(&id);
        let rotated = keys(&format!("{K2},{K1}"));
        assert!(rotated.issue(&id).starts_with("k2."));
        assert!(rotated.verify(&id, &old));
        assert!(!keys(K2).verify(&id, &old));
    }

    #[test]
    fn bad_key_specs_are_explained_without_the_secret() {
        for (spec, says) in [
            ("", "no access key"),
            ("k1", "expected id:base64-secret"),
            ("k 1:AAAA", "the id must be"),
            ("k1:!!!!", "not base64"),
            ("k1:c2hvcnQ=", "at least 32 bytes"),
            (&format!("{K1},{K1}"), "used twice"),
        ] {
            let err = AccessKeys::parse(spec).unwrap_err();
            assert!(err.contains(says), "{spec}: {err}");
            assert!(!err.contains("MDEy"), "{err}");
        }
        assert_eq!(
            keys(&format!("# rotated 2026-11\n{K2}\n\n{K1}\n")).ids(),
            ["k2", "k1"]
        );
        assert!(!format!("{:?}", keys(K1)).contains("MDEy"));
    }

    #[test]
    fn bearer_or_cookie() {
        let keys = keys(K1);
        let id = RequestId::random();
        let token = keys.issue(&id);
        let mut headers = HeaderMap::new();
        assert!(!keys.allows(&id, &headers));
        headers.insert("cookie", format!("a=b; {COOKIE}={token}").parse().unwrap());
        assert!(keys.allows(&id, &headers));
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        assert!(keys.allows(&id, &headers));
        let cookie = keys.cookie(&id, std::time::Duration::from_secs(60));
        for part in ["HttpOnly", "Secure", "SameSite=Strict", "Max-Age=60"] {
            assert!(cookie.contains(part), "{cookie}");
        }
        assert!(cookie.contains(&format!("Path=/api/osago/requests/{id}")));
    }
}
