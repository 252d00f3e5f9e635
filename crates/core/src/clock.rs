//! Time as a parameter: everything that depends on "now" asks a [`Clock`].

use chrono::{DateTime, Datelike, Utc};

pub type Timestamp = DateTime<Utc>;

/// The source of the current time. Production uses the system clock; tests
/// move a manual clock forward instead of sleeping.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The operating system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that may read the wall clock
    fn now(&self) -> Timestamp {
        use chrono::SubsecRound;
        // Stored timestamps keep microseconds; rounding here makes a value read
        // back from the store equal to the one written.
        Utc::now().trunc_subsecs(6)
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<Timestamp>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(std::sync::Mutex::new(start))
    }
    pub fn advance(&self, by: chrono::Duration) {
        if let Ok(mut t) = self.0.lock() {
            *t += by;
        }
    }
    pub fn set(&self, to: Timestamp) {
        if let Ok(mut t) = self.0.lock() {
            *t = to;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        match self.0.lock() {
            Ok(t) => *t,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }
}

/// The form of [`format_timestamp`], as chrono writes it.
const STORED_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Timestamps are written in one fixed, sortable form everywhere they are stored
/// or hashed (the audit chain depends on the exact text).
///
/// The digits are written directly rather than through chrono's `format`,
/// which parses its format string on every call: a page of 100 keys writes
/// 200 times, and that parsing was an eighth of the page's CPU. Years outside
/// 0000–9999 (never stored: [`parse_timestamp`] refuses them) take chrono's
/// way, with its sign and fifth digit.
pub fn format_timestamp(t: &Timestamp) -> String {
    use chrono::Timelike;
    let Some(year) = u32::try_from(t.year()).ok().filter(|year| *year <= 9999) else {
        return t.format(STORED_FORMAT).to_string();
    };
    let nanos = t.nanosecond();
    // chrono keeps a leap second as nanoseconds past 1e9, and writes it as
    // second 60.
    let second = t.second() + nanos / 1_000_000_000;
    let micros = nanos / 1_000 % 1_000_000;
    let mut out = String::with_capacity("2026-11-29T12:00:00.000000Z".len());
    push_digits(&mut out, year, 4);
    out.push('-');
    push_digits(&mut out, t.month(), 2);
    out.push('-');
    push_digits(&mut out, t.day(), 2);
    out.push('T');
    push_digits(&mut out, t.hour(), 2);
    out.push(':');
    push_digits(&mut out, t.minute(), 2);
    out.push(':');
    push_digits(&mut out, second, 2);
    out.push('.');
    push_digits(&mut out, micros, 6);
    out.push('Z');
    out
}

/// The last `width` decimal digits of `value`, zero-padded.
fn push_digits(out: &mut String, value: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = value / 10u32.pow(place) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

/// A time in a message people read: RFC 3339 to the second, in UTC
/// (`2026-12-05T12:00:00Z`), the form the API and the CLI take as input.
pub fn message_time(t: &Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Reads an RFC 3339 time. A time whose UTC year falls outside 0000–9999
/// (reachable from a four-digit year through its offset, such as
/// `9999-12-31T23:59:59-01:00`) is refused: [`format_timestamp`] would write it
/// with a sign and a fifth digit, out of the fixed-width form that lets the
/// audit filter compare stored times as text.
pub fn parse_timestamp(raw: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| (0..=9999).contains(&t.year()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_times_are_stored_fixed_width_and_read_back() {
        for raw in [
            "2026-11-29T12:00:00Z",
            "2026-11-29T12:00:00.123456789+01:00",
            "9999-12-31T23:59:59+01:00",
            "0000-01-01T00:00:00-01:00",
            // How the store marks a released lease.
            "0000-01-01T00:00:00.000000Z",
        ] {
            let time = parse_timestamp(raw).unwrap();
            let stored = format_timestamp(&time);
            assert_eq!(stored.len(), "2026-11-29T12:00:00.000000Z".len(), "{raw}");
            assert_eq!(format_timestamp(&parse_timestamp(&stored).unwrap()), stored);
        }
    }

    /// Every stored time and audit hash depends on this text: the direct
    /// writer must match chrono's `format` to the character.
    #[test]
    fn stored_times_are_written_as_chrono_writes_them() {
        let chrono_form = |t: &Timestamp| t.format(STORED_FORMAT).to_string();
        for raw in [
            "2026-11-29T12:00:00Z",
            "2026-11-29T12:00:00.000001Z",
            "2026-11-29T12:00:00.999999999Z",
            "0000-01-01T00:00:00.000000Z",
            "0009-02-03T04:05:06.7Z",
            "0999-12-31T23:59:59.123456Z",
            "9999-12-31T23:59:59.999999Z",
            // A leap second (nanoseconds past 1e9 in chrono): second 60.
            "2016-12-31T23:59:60.5Z",
        ] {
            let t = DateTime::parse_from_rfc3339(raw)
                .unwrap()
                .with_timezone(&Utc);
            assert_eq!(format_timestamp(&t), chrono_form(&t), "{raw}");
        }
        // Outside 0000–9999 chrono's sign and fifth digit are kept.
        for year in [-1, -10_000, 10_000, 200_000] {
            let t = chrono::NaiveDate::from_ymd_opt(year, 6, 7)
                .unwrap()
                .and_hms_micro_opt(8, 9, 10, 11)
                .unwrap()
                .and_utc();
            assert_eq!(format_timestamp(&t), chrono_form(&t), "{year}");
        }
    }

    proptest::proptest! {
        // Cheap cases: many of them, so leap seconds (a :59 second with
        // nanoseconds past 1e9) come up too.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8192))]
        #[test]
        fn any_time_is_written_as_chrono_writes_it(
            // Years -300 to 12000, any nanosecond, and leap seconds.
            seconds in -71_700_000_000i64..316_500_000_000i64,
            nanos in 0u32..2_000_000_000u32,
        ) {
            if let Some(t) = DateTime::from_timestamp(seconds, nanos) {
                proptest::prop_assert_eq!(format_timestamp(&t), t.format(STORED_FORMAT).to_string());
            }
        }
    }

    #[test]
    fn times_whose_utc_year_has_five_digits_or_a_sign_are_refused() {
        // Stored as "+10000-01-01T00:58:59.000000Z" (the `names` fuzz target
        // checks the width), which sorts before every stored time: an audit
        // filter from that time matched the whole log instead of nothing.
        assert_eq!(parse_timestamp("9999-12-31T23:59:59-01:00"), None);
        assert_eq!(parse_timestamp("0000-01-01T00:00:00+01:00"), None);
    }

    #[test]
    fn message_times_are_rfc3339_to_the_second_in_utc() {
        let t = parse_timestamp("2026-12-05T13:30:15.123456+01:00").unwrap();
        assert_eq!(message_time(&t), "2026-12-05T12:30:15Z");
        assert_eq!(
            parse_timestamp(&message_time(&t)).map(|p| p.timestamp()),
            Some(t.timestamp())
        );
    }
}
