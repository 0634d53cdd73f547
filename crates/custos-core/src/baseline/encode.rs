//! The stored form of a profile: a versioned, fixed-layout little-endian byte string. Our
//! own rather than a serde format, so that its size is known and its decoding of bytes read
//! back from a store checks every field.

use thiserror::Error;

use super::profile::{
    BLOOM_WORDS, NAME_BYTES, NOVELTY_CLASSES, OperationRate, Profile, Rate, TRACKED_OPERATIONS,
};
use crate::Timestamp;

/// Version 2 added the people acted for; a version 1 profile reads back as one that has
/// never acted for anyone. Version 3 added the peer group; an older profile reads back in
/// none, until its NHI's next load sets it.
const VERSION: u8 = 3;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error("profile encoding version {0} is not supported")]
    Version(u8),
    #[error("profile bytes end early")]
    Truncated,
    #[error("profile bytes have {0} bytes left over")]
    TrailingBytes(usize),
    #[error("profile field {0} is out of range")]
    OutOfRange(&'static str),
}

impl Profile {
    /// The profile's stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1600);
        out.push(VERSION);
        put_i64(&mut out, self.started_at.unix_millis());
        put_i64(&mut out, self.last_at.unix_millis());
        out.extend_from_slice(&self.events.to_le_bytes());
        out.extend_from_slice(&self.departures.to_le_bytes());
        for word in self.seen {
            out.extend_from_slice(&word.to_le_bytes());
        }
        for rate in self.novelty {
            put_rate(&mut out, rate);
        }
        for count in self.distinct {
            out.extend_from_slice(&count.to_le_bytes());
        }
        out.extend_from_slice(&self.hours);
        for slot in &self.operations {
            for word in [slot.key, slot.service, slot.hour, slot.count, slot.events] {
                out.extend_from_slice(&word.to_le_bytes());
            }
            put_f32(&mut out, slot.hourly);
            put_f32(&mut out, slot.peak);
            out.push(slot.name_len);
            out.extend_from_slice(&slot.name);
        }
        put_rate(&mut out, self.refusals);
        out.extend_from_slice(&self.refusal_window.to_le_bytes());
        out.extend_from_slice(&self.window_refusals.to_le_bytes());
        for service in self.refused_services {
            out.extend_from_slice(&service.to_le_bytes());
        }
        out.extend_from_slice(&self.home_environment.to_le_bytes());
        out.push(self.client_classes);
        out.extend_from_slice(&self.delegation_hour.to_le_bytes());
        out.extend_from_slice(&self.delegatees.to_le_bytes());
        put_f32(&mut out, self.delegation_peak);
        put_rate(&mut out, self.for_person);
        put_rate(&mut out, self.people);
        out.extend_from_slice(&self.distinct_people.to_le_bytes());
        out.extend_from_slice(&self.peer_group.to_le_bytes());
        out
    }

    /// Reads a stored profile back, refusing anything that is not exactly one.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProfileError> {
        let mut input = Reader(bytes);
        let version = input.u8()?;
        if !(1..=VERSION).contains(&version) {
            return Err(ProfileError::Version(version));
        }
        let started_at = input.timestamp("started_at")?;
        let last_at = input.timestamp("last_at")?;
        let events = input.u64()?;
        let departures = input.u64()?;
        let mut profile = Profile::new(started_at, None);
        profile.last_at = last_at;
        profile.events = events;
        profile.departures = departures;
        for word in &mut profile.seen {
            *word = input.u64()?;
        }
        for rate in &mut profile.novelty {
            *rate = input.rate("novelty")?;
        }
        for count in &mut profile.distinct {
            *count = input.u16()?;
        }
        profile.hours.copy_from_slice(input.take(168)?);
        for slot in &mut profile.operations {
            let mut fields = [0u32; 5];
            for field in &mut fields {
                *field = input.u32()?;
            }
            let [key, service, hour, count, events] = fields;
            let hourly = input.f32("hourly")?;
            let peak = input.f32("peak")?;
            let name_len = input.u8()?;
            if usize::from(name_len) > NAME_BYTES {
                return Err(ProfileError::OutOfRange("name_len"));
            }
            let mut name = [0u8; NAME_BYTES];
            name.copy_from_slice(input.take(NAME_BYTES)?);
            *slot = OperationRate {
                key,
                service,
                hour,
                count,
                hourly,
                peak,
                events,
                name_len,
                name,
            };
        }
        profile.refusals = input.rate("refusals")?;
        profile.refusal_window = input.u32()?;
        profile.window_refusals = input.u16()?;
        for service in &mut profile.refused_services {
            *service = input.u32()?;
        }
        profile.home_environment = input.u32()?;
        profile.client_classes = input.u8()?;
        profile.delegation_hour = input.u32()?;
        profile.delegatees = input.u64()?;
        profile.delegation_peak = input.f32("delegation_peak")?;
        if version >= 2 {
            profile.for_person = input.rate("for_person")?;
            profile.people = input.rate("people")?;
            profile.distinct_people = input.u16()?;
        }
        if version >= 3 {
            profile.peer_group = input.u32()?;
        }
        if !input.0.is_empty() {
            return Err(ProfileError::TrailingBytes(input.0.len()));
        }
        Ok(profile)
    }
}

fn put_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_f32(out: &mut Vec<u8>, value: f32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_rate(out: &mut Vec<u8>, rate: Rate) {
    put_f32(out, rate.hits);
    put_f32(out, rate.total);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProfileError> {
        if self.0.len() < n {
            return Err(ProfileError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProfileError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, ProfileError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ProfileError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, ProfileError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ProfileError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn timestamp(&mut self, field: &'static str) -> Result<Timestamp, ProfileError> {
        Timestamp::from_unix_millis(i64::from_le_bytes(self.array()?))
            .ok_or(ProfileError::OutOfRange(field))
    }

    /// A finite, non-negative number: anything else would poison every later score.
    fn f32(&mut self, field: &'static str) -> Result<f32, ProfileError> {
        let value = f32::from_le_bytes(self.array()?);
        if value.is_finite() && value >= 0.0 {
            Ok(value)
        } else {
            Err(ProfileError::OutOfRange(field))
        }
    }

    fn rate(&mut self, field: &'static str) -> Result<Rate, ProfileError> {
        let hits = self.f32(field)?;
        let total = self.f32(field)?;
        if hits > total + 1.0 {
            return Err(ProfileError::OutOfRange(field));
        }
        Ok(Rate { hits, total })
    }
}

const _: () = assert!(BLOOM_WORDS * 8 + TRACKED_OPERATIONS * (28 + 1 + NAME_BYTES) < 2048);
const _: () = assert!(NOVELTY_CLASSES == 6);
