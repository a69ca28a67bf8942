//! When the next attempt comes.

use std::time::Duration;

/// The delay before attempt `next` (2 is the first retry), or `None` when
/// the schedule is spent. `schedule[0]` is the delay before attempt 2.
///
/// `retry_after` (a receiver's `Retry-After`) replaces the scheduled delay,
/// capped at `retry_after_max` so that a receiver cannot park a delivery
/// for a week; it does not add attempts. The scheduled delay varies by
/// `±jitter` so that retries of a burst do not arrive together.
pub fn delay(
    schedule: &[u64],
    next: u32,
    retry_after: Option<Duration>,
    retry_after_max: Duration,
    jitter: f64,
) -> Option<Duration> {
    let index = usize::try_from(next.checked_sub(2)?).ok()?;
    let scheduled = Duration::from_secs(*schedule.get(index)?);
    if let Some(after) = retry_after {
        return Some(after.min(retry_after_max));
    }
    let factor = 1.0 + jitter * (fastrand::f64() * 2.0 - 1.0);
    Some(scheduled.mul_f64(factor.max(0.0)))
}

/// Parses `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let format = time::format_description::well_known::Rfc2822;
    let at = time::OffsetDateTime::parse(value, &format).ok()?;
    let at = std::time::SystemTime::from(at);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: [u64; 3] = [5, 300, 1800];

    #[test]
    fn follows_the_schedule_within_jitter_then_stops() {
        let max = Duration::from_secs(3600);
        assert_eq!(
            delay(&SCHEDULE, 2, None, max, 0.0),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            delay(&SCHEDULE, 4, None, max, 0.0),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(delay(&SCHEDULE, 5, None, max, 0.0), None);
        for _ in 0..100 {
            let d = delay(&SCHEDULE, 3, None, max, 0.2).unwrap().as_secs_f64();
            assert!((240.0..=360.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn retry_after_replaces_the_delay_within_bounds() {
        let max = Duration::from_secs(60);
        let d = delay(&SCHEDULE, 2, Some(Duration::from_secs(30)), max, 0.2);
        assert_eq!(d, Some(Duration::from_secs(30)));
        let d = delay(&SCHEDULE, 2, Some(Duration::from_secs(86_400)), max, 0.2);
        assert_eq!(d, Some(max));
        // It does not extend the schedule.
        assert_eq!(
            delay(&SCHEDULE, 5, Some(Duration::from_secs(1)), max, 0.0),
            None
        );
    }

    #[test]
    fn parses_both_retry_after_forms() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let date = "Sun, 09 Sep 2001 01:48:40 GMT"; // 1_000_000_120
        assert_eq!(parse_retry_after(date, now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
