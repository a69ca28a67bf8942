use std::fmt::{self, Write};

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// A UTC instant with nanosecond precision.
///
/// In JSON (the API, the `default` plugin) it is RFC 3339 to the second, as
/// the design document shows; in the log's binary records it keeps its
/// nanoseconds (Unix nanoseconds as one integer), which plugins such as
/// `europa` print as milliseconds. Serde's `is_human_readable` tells the two
/// apart.
///
/// Formatting is done here by hand so that plugins need no calendar
/// library; parsing, which only the gateway does, uses `time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Nanoseconds within the second.
    pub nanoseconds: u32,
}

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self::from_unix_nanos(since.as_nanos() as i128)
    }

    pub fn from_unix(seconds: i64) -> Self {
        Self {
            seconds,
            nanoseconds: 0,
        }
    }

    pub fn from_unix_seconds(seconds: i64) -> Self {
        Self::from_unix(seconds)
    }

    pub fn from_unix_millis(millis: i64) -> Self {
        Self::from_unix_nanos(i128::from(millis) * 1_000_000)
    }

    /// Saturates at the ends of `i64` seconds.
    pub fn from_unix_nanos(nanos: i128) -> Self {
        let seconds = nanos.div_euclid(1_000_000_000);
        Self {
            seconds: seconds.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
            nanoseconds: nanos.rem_euclid(1_000_000_000) as u32,
        }
    }

    pub fn unix_seconds(&self) -> i64 {
        self.seconds
    }

    pub fn unix_millis(&self) -> i64 {
        self.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(self.nanoseconds / 1_000_000))
    }

    pub fn unix_nanos(&self) -> i128 {
        i128::from(self.seconds) * 1_000_000_000 + i128::from(self.nanoseconds)
    }

    pub fn nanosecond(&self) -> u32 {
        self.nanoseconds
    }

    /// Parses RFC 3339 with any precision and offset.
    pub fn parse_rfc3339(s: &str) -> Result<Self, time::error::Parse> {
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)?;
        Ok(Self::from_unix_nanos(t.unix_timestamp_nanos()))
    }

    /// RFC 3339 to the second: `2026-11-28T20:25:52Z`.
    pub fn to_rfc3339(&self) -> String {
        let mut s = self.date_time();
        s.push('Z');
        s
    }

    /// RFC 3339 with milliseconds: `2026-11-28T20:25:52.778Z`.
    pub fn to_rfc3339_millis(&self) -> String {
        let mut s = self.date_time();
        let _ = write!(s, ".{:03}Z", self.nanoseconds / 1_000_000);
        s
    }

    fn date_time(&self) -> String {
        let days = self.seconds.div_euclid(86_400);
        let secs = self.seconds.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to a proleptic
/// Gregorian date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_rfc3339())
        } else {
            s.serialize_i128(self.unix_nanos())
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            Timestamp::parse_rfc3339(&s).map_err(de::Error::custom)
        } else {
            i128::deserialize(d).map(Timestamp::from_unix_nanos)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        let t = Timestamp {
            seconds: 1_795_897_552,
            nanoseconds: 778_574_819,
        };
        assert_eq!(t.to_rfc3339(), "2026-11-28T20:25:52Z");
        assert_eq!(t.to_rfc3339_millis(), "2026-11-28T20:25:52.778Z");
        assert_eq!(Timestamp::from_unix(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        // A leap day and the last second of a year.
        assert_eq!(
            Timestamp::from_unix(951_782_400).to_rfc3339(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            Timestamp::from_unix(1_767_225_599).to_rfc3339_millis(),
            "2025-12-31T23:59:59.000Z"
        );
        assert_eq!(
            Timestamp::from_unix(-1).to_rfc3339(),
            "1969-12-31T23:59:59Z"
        );
    }

    #[test]
    fn parses_any_precision_and_offset() {
        let t = Timestamp::parse_rfc3339("2026-11-28T20:25:52.778574819Z").unwrap();
        assert_eq!((t.seconds, t.nanoseconds), (1_795_897_552, 778_574_819));
        let t = Timestamp::parse_rfc3339("2026-11-28T21:25:52+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-28T20:25:52Z");
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn unix_conversions_round_trip() {
        let t = Timestamp::from_unix_nanos(-1);
        assert_eq!((t.seconds, t.nanoseconds), (-1, 999_999_999));
        assert_eq!(Timestamp::from_unix_millis(1_500).unix_millis(), 1_500);
        let now = Timestamp::now();
        assert_eq!(Timestamp::from_unix_nanos(now.unix_nanos()), now);
    }
}
