//! When groups rotate: the rules the scheduler and the rotation job share,
//! free of I/O and of the clock (time comes in as an argument).

use crate::clock::Timestamp;
use crate::error::InvalidInput;
use crate::interval::Interval;

/// The shortest rotation interval: every rotation creates a KMS key, which
/// AWS bills monthly and keeps until it is deleted.
pub const MIN_ROTATION_SECONDS: u64 = 24 * 60 * 60;

/// What [`parse_rotation_interval`] accepts, in words, for its refusals and
/// for the hints and help that ask how often to rotate. Every example in it
/// parses as a rotation interval (a test keeps it so).
pub const ROTATION_INTERVAL_HINT: &str = "a whole number and a unit, h (hours), d (days), w (weeks) or y (years of 365 days), from 1 day (24h) up to 100 years, for example 1d, 30d, 2w or 1y";

/// Parses "rotate every": an interval of at least a day.
pub fn parse_rotation_interval(raw: &str) -> Result<Interval, InvalidInput> {
    let every = Interval::parse_explained(raw, ROTATION_INTERVAL_HINT)
        .map_err(|e| InvalidInput::new("rotate_every", e.message))?;
    if every.seconds() < MIN_ROTATION_SECONDS {
        return Err(InvalidInput::new(
            "rotate_every",
            format!(
                "rotating every {every} is too often: each rotation creates a KMS key, which AWS bills monthly; rotate every 24h (1d) or less often"
            ),
        ));
    }
    Ok(every)
}

/// How long before the active key expires the group rotates at the latest:
/// a tenth of its validity, at most a day, so data encrypted under the new
/// key can be read before the old one stops working.
pub fn expiry_lead(valid_for: Interval) -> chrono::Duration {
    (valid_for.as_duration() / 10).min(chrono::Duration::days(1))
}

/// The next rotation after one at `now`: an interval later, or earlier when
/// the active key would expire first. Downtime never queues several: a
/// group that missed intervals rotates once, and counts on from then.
pub fn next_rotation(
    now: Timestamp,
    every: Interval,
    valid_for: Option<Interval>,
    active_key_valid_to: Option<Timestamp>,
) -> Timestamp {
    let regular = now + every.as_duration();
    match (valid_for, active_key_valid_to) {
        (Some(valid_for), Some(end)) => regular.min(end - expiry_lead(valid_for)).max(now),
        _ => regular,
    }
}

/// How long a failed scheduled rotation waits before its next attempt:
/// a minute after the first failure, doubling, at most an hour.
pub fn retry_delay(attempts: u32) -> chrono::Duration {
    let doublings = attempts.saturating_sub(1).min(6);
    (chrono::Duration::minutes(1) * 2_i32.pow(doublings)).min(chrono::Duration::hours(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> Timestamp {
        chrono::DateTime::parse_from_rfc3339("2026-11-29T09:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    fn i(raw: &str) -> Interval {
        Interval::parse(raw).unwrap()
    }

    #[test]
    fn an_interval_later_unless_the_key_expires_first() {
        assert_eq!(
            next_rotation(t0(), i("30d"), None, None),
            t0() + chrono::Duration::days(30)
        );
        // Valid for a year: the interval comes first.
        let end = t0() + chrono::Duration::days(365);
        assert_eq!(
            next_rotation(t0(), i("30d"), Some(i("1y")), Some(end)),
            t0() + chrono::Duration::days(30)
        );
        // Valid for 20 days, rotating every 30: a day before the end.
        let end = t0() + chrono::Duration::days(20);
        assert_eq!(
            next_rotation(t0(), i("30d"), Some(i("20d")), Some(end)),
            t0() + chrono::Duration::days(19)
        );
        // Valid for 10 hours: a tenth before the end.
        let end = t0() + chrono::Duration::hours(10);
        assert_eq!(
            next_rotation(t0(), i("1d"), Some(i("10h")), Some(end)),
            t0() + chrono::Duration::hours(9)
        );
        // Already past its lead: now.
        assert_eq!(
            next_rotation(t0(), i("1d"), Some(i("10h")), Some(t0())),
            t0()
        );
    }

    #[test]
    fn rotation_intervals_start_at_a_day() {
        assert_eq!(parse_rotation_interval("24h").unwrap(), i("24h"));
        assert_eq!(parse_rotation_interval("1d").unwrap(), i("1d"));
        let err = parse_rotation_interval("23h").unwrap_err();
        assert_eq!(err.field, "rotate_every");
        assert!(err.message.contains("too often"), "{}", err.message);
        assert_eq!(
            parse_rotation_interval("soon").unwrap_err().field,
            "rotate_every"
        );
    }

    #[test]
    fn the_hint_names_only_rotation_intervals_that_parse() {
        let examples: Vec<&str> =
            crate::interval::written_intervals(ROTATION_INTERVAL_HINT).collect();
        assert!(examples.len() >= 3, "{examples:?}");
        for example in examples {
            assert!(parse_rotation_interval(example).is_ok(), "{example}");
        }
        // A refusal names the rotation's examples, not those of any interval
        // (12h is an interval, but too short a rotation).
        for bad in ["6m", "soon", "0d"] {
            let refusal = parse_rotation_interval(bad).unwrap_err().message;
            assert!(refusal.ends_with(ROTATION_INTERVAL_HINT), "{refusal}");
        }
    }

    #[test]
    fn retries_back_off_to_an_hour() {
        let minutes: Vec<i64> = (1..=9).map(|n| retry_delay(n).num_minutes()).collect();
        assert_eq!(minutes, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_delay(0).num_minutes(), 1);
    }

    proptest! {
        #[test]
        fn the_next_rotation_is_never_in_the_past_nor_later_than_an_interval(
            hours in 24u32..20_000, valid_hours in 1u32..20_000, age_hours in 0u32..30_000,
        ) {
            let every = i(&format!("{hours}h"));
            let valid_for = i(&format!("{valid_hours}h"));
            let created = t0() - chrono::Duration::hours(i64::from(age_hours));
            let end = created + valid_for.as_duration();
            let next = next_rotation(t0(), every, Some(valid_for), Some(end));
            prop_assert!(next >= t0());
            prop_assert!(next <= t0() + every.as_duration());
            if end - expiry_lead(valid_for) >= t0() {
                prop_assert!(next <= end - expiry_lead(valid_for) || next == t0() + every.as_duration());
                prop_assert!(next <= end);
            }
        }
    }
}
