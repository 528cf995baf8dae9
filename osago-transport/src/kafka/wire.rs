//! A minimal Kafka protocol client for the one admin call rdkafka does not
//! wrap: `IncrementalAlterConfigs` (API key 44, version 0), on a plain TCP
//! connection to the first bootstrap broker.
//!
//! It is the fallback for brokers that do not implement the legacy
//! `AlterConfigs` (tansu, Kafka 4 without it); it sets the given topic
//! configs and leaves every other one alone. No TLS or SASL: the adapter
//! connects in plaintext anyway.

use std::time::Duration;

use osago_core::ports::{PortError, PortErrorKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const INCREMENTAL_ALTER_CONFIGS: i16 = 44;
const RESOURCE_TOPIC: i8 = 2;
const OP_SET: i8 = 0;
const CORRELATION_ID: i32 = 0x05a9_0044;
/// A response larger than this is not an answer to our request.
const MAX_RESPONSE: i32 = 1 << 20;

fn unavailable(message: String) -> PortError {
    PortError::new(PortErrorKind::Unavailable, message)
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    // Names and values here are short config strings, far below i16::MAX.
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&s.as_bytes()[..len as usize]);
}

/// The request frame (size prefix included).
fn encode(client_id: &str, topic: &str, set: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    // Request header v1.
    body.extend_from_slice(&INCREMENTAL_ALTER_CONFIGS.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    put_str(&mut body, client_id);
    // One resource: the topic, with its configs to set.
    body.extend_from_slice(&1i32.to_be_bytes());
    body.push(RESOURCE_TOPIC as u8);
    put_str(&mut body, topic);
    body.extend_from_slice(&(set.len() as i32).to_be_bytes());
    for (name, value) in set {
        put_str(&mut body, name);
        body.push(OP_SET as u8);
        put_str(&mut body, value);
    }
    // validate_only = false.
    body.push(0);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// Reads big-endian fields off a response.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], PortError> {
        if self.0.len() < n {
            return Err(unavailable(
                "truncated IncrementalAlterConfigs response".into(),
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn i8(&mut self) -> Result<i8, PortError> {
        Ok(self.take(1)?[0] as i8)
    }

    fn i16(&mut self) -> Result<i16, PortError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, PortError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn nullable_str(&mut self) -> Result<Option<String>, PortError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let b = self.take(len as usize)?;
        Ok(Some(String::from_utf8_lossy(b).into_owned()))
    }
}

/// The per-resource result: `Ok` or the error code and message.
fn decode(response: &[u8]) -> Result<Result<(), (i16, String)>, PortError> {
    let mut r = Reader(response);
    if r.i32()? != CORRELATION_ID {
        return Err(unavailable(
            "IncrementalAlterConfigs response out of order".into(),
        ));
    }
    let _throttle_ms = r.i32()?;
    let count = r.i32()?;
    for _ in 0..count.max(0) {
        let code = r.i16()?;
        let message = r.nullable_str()?;
        let _resource_type = r.i8()?;
        let _name = r.nullable_str()?;
        if code != 0 {
            return Ok(Err((code, message.unwrap_or_default())));
        }
    }
    Ok(Ok(()))
}

/// Sets `set` on `topic` with `IncrementalAlterConfigs`, via the first
/// broker of `bootstrap`, within `timeout`.
pub(crate) async fn incremental_alter_topic(
    bootstrap: &str,
    client_id: &str,
    topic: &str,
    set: &[(&str, &str)],
    timeout: Duration,
) -> Result<(), PortError> {
    let broker = bootstrap.split(',').next().unwrap_or_default().trim();
    let broker = broker
        .split_once("://")
        .map_or(broker, |(_, address)| address);
    let call = async {
        let mut stream = TcpStream::connect(broker)
            .await
            .map_err(|e| unavailable(format!("connecting to {broker} failed")).with_source(e))?;
        stream.set_nodelay(true).ok();
        let io = |e: std::io::Error| {
            unavailable(format!("IncrementalAlterConfigs to {broker} failed")).with_source(e)
        };
        stream
            .write_all(&encode(client_id, topic, set))
            .await
            .map_err(io)?;
        let size = stream.read_i32().await.map_err(io)?;
        if !(8..=MAX_RESPONSE).contains(&size) {
            return Err(unavailable(format!(
                "IncrementalAlterConfigs response of {size} bytes from {broker}"
            )));
        }
        let mut response = vec![0; size as usize];
        stream.read_exact(&mut response).await.map_err(io)?;
        decode(&response)?.map_err(|(code, message)| {
            unavailable(format!(
                "altering the config of topic {topic} failed: error code {code} {message}"
            ))
        })
    };
    tokio::time::timeout(timeout, call).await.map_err(|_| {
        PortError::new(
            PortErrorKind::Timeout,
            format!("altering the config of topic {topic} timed out"),
        )
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_frame_layout() {
        let frame = encode("c", "t", &[("retention.ms", "1")]);
        let size = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(size, frame.len() - 4);
        // api key 44, version 0
        assert_eq!(&frame[4..8], &[0, 44, 0, 0]);
        // ends with: name, op SET, value, validate_only false
        assert!(frame.ends_with(b"\x00\x0cretention.ms\x00\x00\x011\x00"));
    }

    #[test]
    fn response_errors_are_reported() {
        let mut ok = Vec::new();
        ok.extend_from_slice(&CORRELATION_ID.to_be_bytes());
        ok.extend_from_slice(&0i32.to_be_bytes());
        ok.extend_from_slice(&1i32.to_be_bytes());
        ok.extend_from_slice(&0i16.to_be_bytes());
        ok.extend_from_slice(&(-1i16).to_be_bytes());
        ok.push(2);
        ok.extend_from_slice(&1i16.to_be_bytes());
        ok.push(b't');
        assert!(matches!(decode(&ok), Ok(Ok(()))));

        let mut bad = ok.clone();
        bad[12..14].copy_from_slice(&40i16.to_be_bytes());
        bad.splice(14..16, [0, 1, b'x']);
        assert!(matches!(decode(&bad), Ok(Err((40, m))) if m == "x"));
        assert!(decode(&ok[..10]).is_err());
    }
}
