//! Rotation intervals and validity periods such as `12h`, `30d`, `1y`
//! (rotation intervals start at a day: see `crate::schedule`).

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::InvalidInput;

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;
const YEAR: u64 = 365 * DAY;
/// Longest interval accepted: 100 years.
const MAX_SECONDS: u64 = 100 * YEAR;

/// What [`Interval::parse`] accepts, in words, for its refusals and for the
/// hints and help that ask for an interval. Every example in it parses (a
/// test keeps it so).
pub const INTERVAL_HINT: &str = "a whole number and a unit, h (hours), d (days), w (weeks) or y (years of 365 days), up to 100 years, for example 12h, 90d or 1y";

/// The words of `text` written like an interval (digits and one letter,
/// such as `30d` or `6m`), for the tests that keep hints and help true.
pub fn written_intervals(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| {
            let mut chars = word.chars();
            chars.next_back().is_some_and(|c| c.is_ascii_alphabetic())
                && !chars.as_str().is_empty()
                && chars.as_str().bytes().all(|b| b.is_ascii_digit())
        })
}

/// A positive span of time written as a number and a unit: `h` hours, `d` days,
/// `w` weeks, `y` years of 365 days. Kept in its written form for display.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Interval {
    count: u32,
    unit: Unit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Unit {
    Hours,
    Days,
    Weeks,
    Years,
}

impl Unit {
    fn seconds(self) -> u64 {
        match self {
            Self::Hours => HOUR,
            Self::Days => DAY,
            Self::Weeks => WEEK,
            Self::Years => YEAR,
        }
    }
    fn suffix(self) -> char {
        match self {
            Self::Hours => 'h',
            Self::Days => 'd',
            Self::Weeks => 'w',
            Self::Years => 'y',
        }
    }
}

impl Interval {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        Self::parse_explained(raw, INTERVAL_HINT)
    }

    /// [`Interval::parse`], whose refusals say `write {hint}`: a caller that
    /// accepts fewer intervals names its own examples.
    pub(crate) fn parse_explained(raw: &str, hint: &str) -> Result<Self, InvalidInput> {
        let bad = |why: &str| InvalidInput::new("interval", format!("{why}: write {hint}"));
        // Spaces are refused, not trimmed: what is stored and shown is
        // exactly what was accepted.
        if raw.chars().any(char::is_whitespace) {
            return Err(bad(&format!(
                "'{}' contains spaces",
                crate::error::printable(raw)
            )));
        }
        let Some(last) = raw.chars().last() else {
            return Err(bad("interval is empty"));
        };
        let unit = match last {
            'h' => Unit::Hours,
            'd' => Unit::Days,
            'w' => Unit::Weeks,
            'y' => Unit::Years,
            _ => {
                return Err(bad(&format!(
                    "'{}' has no known unit",
                    crate::error::printable(raw)
                )));
            }
        };
        let digits = &raw[..raw.len() - 1];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(&format!(
                "'{}' is not a number and a unit",
                crate::error::printable(raw)
            )));
        }
        let count: u32 = digits.parse().map_err(|_| bad("the number is too large"))?;
        if count == 0 {
            return Err(bad("an interval of zero would never end"));
        }
        let interval = Self { count, unit };
        if interval.seconds() > MAX_SECONDS {
            return Err(bad("the longest interval accepted is 100 years"));
        }
        Ok(interval)
    }

    pub fn seconds(self) -> u64 {
        u64::from(self.count) * self.unit.seconds()
    }

    pub fn as_duration(self) -> chrono::Duration {
        // Bounded by MAX_SECONDS, so the conversion cannot overflow.
        chrono::Duration::seconds(i64::try_from(self.seconds()).unwrap_or(i64::MAX))
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.count, self.unit.suffix())
    }
}

impl TryFrom<String> for Interval {
    type Error = InvalidInput;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Interval> for String {
    fn from(i: Interval) -> String {
        i.to_string()
    }
}

impl std::str::FromStr for Interval {
    type Err = InvalidInput;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_reference_intervals() {
        assert_eq!(Interval::parse("1d").unwrap().seconds(), DAY);
        assert_eq!(Interval::parse("12h").unwrap().seconds(), 12 * HOUR);
        assert_eq!(Interval::parse("30d").unwrap().seconds(), 30 * DAY);
        assert_eq!(Interval::parse("1y").unwrap().seconds(), YEAR);
        assert_eq!(Interval::parse("2w").unwrap().to_string(), "2w");
    }

    #[test]
    fn the_hint_names_only_intervals_that_parse() {
        let examples: Vec<&str> = written_intervals(INTERVAL_HINT).collect();
        assert!(examples.len() >= 3, "{examples:?}");
        for example in examples {
            assert!(Interval::parse(example).is_ok(), "{example}");
        }
        let refusal = Interval::parse("6m").unwrap_err().message;
        assert!(refusal.ends_with(INTERVAL_HINT), "{refusal}");
    }

    #[test]
    fn written_intervals_are_found_in_text() {
        let found: Vec<&str> =
            written_intervals("such as 12h, 30d, 6m or 1y (24h); not 100 years, h2 nor 1.5d")
                .collect();
        assert_eq!(found, ["12h", "30d", "6m", "1y", "24h", "5d"]);
    }

    #[test]
    fn refuses_zero_garbage_and_overflow() {
        for bad in [
            "0d",
            "abc",
            "",
            "d",
            "-1d",
            "1.5d",
            "1m",
            "99999999999d",
            "101y",
            "1 d",
            " 30d",
            "30d ",
            "30d\n",
            "\t1y",
            "30\u{a0}d",
        ] {
            assert!(Interval::parse(bad).is_err(), "{bad}");
        }
        assert!(Interval::parse("0d").unwrap_err().message.contains("zero"));
    }

    proptest! {
        #[test]
        fn display_round_trips(count in 1u32..=36500, unit in prop::sample::select(vec!['h', 'd', 'w', 'y'])) {
            let raw = format!("{count}{unit}");
            if let Ok(i) = Interval::parse(&raw) {
                prop_assert_eq!(i.to_string(), raw);
                prop_assert!(i.seconds() > 0 && i.seconds() <= MAX_SECONDS);
            }
        }

        #[test]
        fn never_panics(raw in "\\PC{0,24}") {
            let _ = Interval::parse(&raw);
        }

        #[test]
        fn spaces_anywhere_are_refused(
            count in 1u32..=3650,
            unit in prop::sample::select(vec!['h', 'd', 'w', 'y']),
            space in prop::sample::select(vec![" ", "\t", "\n", "\r", "\u{a0}", "\u{3000}"]),
            at in 0usize..3,
        ) {
            let raw = format!("{count}{unit}");
            let spaced = match at {
                0 => format!("{space}{raw}"),
                1 => format!("{count}{space}{unit}"),
                _ => format!("{raw}{space}"),
            };
            let err = Interval::parse(&spaced).unwrap_err();
            prop_assert!(err.message.contains("spaces"), "{}", err.message);
        }
    }
}
