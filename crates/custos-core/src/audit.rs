//! The canonical byte form of a domain event: what the audit log hashes as a Merkle leaf.
//!
//! The form is our own and versioned, not a serde derive, so that it cannot change when a
//! library or a field order does, and so that a verifier in another language can rebuild it
//! from the text alone:
//!
//! ```text
//! event    = 0x01                      ; the version
//!            string(id) string(kind) string(actor) string(subject)
//!            i64(occurred_at)          ; Unix milliseconds
//!            u32(n) n × (string(key) string(value))   ; keys ascending, unique
//! string   = u32(length) UTF-8 bytes
//! u32, i64 = big-endian
//! ```
//!
//! Secrets never reach it: events name credentials by fingerprint only.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::Timestamp;
use crate::event::{Actor, DomainEvent, EventKind};
use crate::merkle::{self, Hash};

/// The version byte of the only form so far.
pub const ENCODING_V1: u8 = 1;

/// Why bytes are not the canonical form of an event.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unknown encoding version {0}")]
    UnknownVersion(u8),
    #[error("the encoding ends early")]
    Truncated,
    #[error("{0} bytes follow the encoded event")]
    TrailingBytes(usize),
    #[error("a string is not valid utf-8")]
    NotUtf8,
    #[error("unknown event kind {0:?}")]
    UnknownKind(String),
    #[error("malformed actor {0:?}")]
    BadActor(String),
    #[error("timestamp {0} is out of range")]
    BadTimestamp(i64),
    #[error("detail keys are not in strictly ascending order")]
    UnorderedDetails,
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    // Texts are bounded by validation far below 4 GiB; a longer one would be a bug upstream,
    // and saturating keeps the function total without a panic.
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// The canonical bytes of `event`.
pub fn encode(event: &DomainEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(ENCODING_V1);
    put_str(&mut out, &event.id);
    put_str(&mut out, event.kind.as_str());
    put_str(&mut out, &event.actor.to_string());
    put_str(&mut out, &event.subject);
    out.extend_from_slice(&event.occurred_at.unix_millis().to_be_bytes());
    let count = u32::try_from(event.details.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    // A BTreeMap iterates its keys in ascending order: the canonical order.
    for (key, value) in &event.details {
        put_str(&mut out, key);
        put_str(&mut out, value);
    }
    out
}

/// The Merkle leaf hash of `event` (RFC 6962: SHA-256 of 0x00 and the canonical bytes).
pub fn leaf_hash(event: &DomainEvent) -> Hash {
    merkle::leaf_hash(&encode(event))
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(i64::from_be_bytes(buf))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = usize::try_from(self.u32()?).map_err(|_| DecodeError::Truncated)?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::NotUtf8)
    }
}

/// Reads the canonical bytes back. Exactly one byte string encodes each event: anything else
/// (trailing bytes, unordered or repeated detail keys) is refused.
pub fn decode(bytes: &[u8]) -> Result<DomainEvent, DecodeError> {
    let mut r = Reader { bytes };
    let version = r.take(1)?[0];
    if version != ENCODING_V1 {
        return Err(DecodeError::UnknownVersion(version));
    }
    let id = r.string()?;
    let kind_text = r.string()?;
    let kind = EventKind::parse(&kind_text).ok_or(DecodeError::UnknownKind(kind_text))?;
    let actor_text = r.string()?;
    let actor = Actor::parse(&actor_text).ok_or(DecodeError::BadActor(actor_text))?;
    let subject = r.string()?;
    let millis = r.i64()?;
    let occurred_at =
        Timestamp::from_unix_millis(millis).ok_or(DecodeError::BadTimestamp(millis))?;
    let count = r.u32()?;
    let mut details = BTreeMap::new();
    let mut previous: Option<String> = None;
    for _ in 0..count {
        let key = r.string()?;
        let value = r.string()?;
        if previous.as_ref().is_some_and(|p| *p >= key) {
            return Err(DecodeError::UnorderedDetails);
        }
        previous = Some(key.clone());
        details.insert(key, value);
    }
    if !r.bytes.is_empty() {
        return Err(DecodeError::TrailingBytes(r.bytes.len()));
    }
    Ok(DomainEvent {
        id,
        kind,
        actor,
        subject,
        occurred_at,
        details,
    })
}
