use std::fmt::Write;

/// A point in time, UTC, as the host passes it.
///
/// Plugins get no calendar library for free and should not need one: the two
/// renderings webhooks use are here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Nanoseconds within the second.
    pub nanoseconds: u32,
}

impl Timestamp {
    pub fn from_unix(seconds: i64) -> Self {
        Self {
            seconds,
            nanoseconds: 0,
        }
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
}
