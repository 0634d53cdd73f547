//! Timestamps as milliseconds since the Unix epoch, written as RFC 3339 on the wire.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// A point in time with millisecond precision. The core never reads the clock: callers pass
/// the current time in, so every decision can be replayed and tested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {0:?}: expected RFC 3339, e.g. 2026-01-31T12:00:00Z")]
pub struct TimestampError(pub String);

impl Timestamp {
    /// Years outside 1970..=9999 are refused so that every stored value formats as RFC 3339.
    const MAX_MILLIS: i64 = 253_402_300_799_999;

    pub fn from_unix_millis(millis: i64) -> Option<Self> {
        (0..=Self::MAX_MILLIS)
            .contains(&millis)
            .then_some(Self(millis))
    }

    pub fn unix_millis(self) -> i64 {
        self.0
    }

    pub fn plus_seconds(self, seconds: i64) -> Self {
        Self(
            self.0
                .saturating_add(seconds.saturating_mul(1000))
                .clamp(0, Self::MAX_MILLIS),
        )
    }

    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let parsed =
            OffsetDateTime::parse(text, &Rfc3339).map_err(|_| TimestampError(text.to_owned()))?;
        let millis = i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000)
            .map_err(|_| TimestampError(text.to_owned()))?;
        Self::from_unix_millis(millis).ok_or_else(|| TimestampError(text.to_owned()))
    }

    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_rfc3339() {
        let t = Timestamp::parse_rfc3339("2026-11-28T10:00:00.250+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-28T09:00:00.25Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()).unwrap(), t);
    }

    #[test]
    fn refuses_garbage_and_pre_epoch() {
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        assert!(Timestamp::parse_rfc3339("1969-12-31T23:59:59Z").is_err());
    }
}
