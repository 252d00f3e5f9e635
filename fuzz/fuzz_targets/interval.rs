//! Rotation intervals and validity periods (`12h`, `30d`, `1y`), as given to
//! `keyhold group create --rotate-every/--valid-for` and the API.
//!
//! Checks: an accepted interval is positive and at most 100 years, prints in a
//! canonical form that parses back to the same value (also through serde),
//! and its duration is exact; `parse_rotation_interval` accepts exactly the
//! intervals of a day or more; the next rotation it schedules is never in the
//! past nor later than one interval; refusals are proper messages.
#![no_main]

use keyhold_core::interval::Interval;
use keyhold_core::schedule::{MIN_ROTATION_SECONDS, next_rotation, parse_rotation_interval};
use keyhold_fuzz::assert_refusal;
use libfuzzer_sys::fuzz_target;

const HUNDRED_YEARS: u64 = 100 * 365 * 24 * 3600;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let parsed = Interval::parse(&raw);
    match &parsed {
        Ok(interval) => accepted(&raw, *interval),
        Err(e) => assert_refusal(e, "interval", &raw),
    }
    match (parse_rotation_interval(&raw), parsed) {
        (Ok(every), Ok(interval)) => {
            assert_eq!(every, interval);
            assert!(every.seconds() >= MIN_ROTATION_SECONDS);
        }
        (Err(e), Ok(interval)) => {
            assert!(
                interval.seconds() < MIN_ROTATION_SECONDS,
                "{raw:?} refused: {e}"
            );
            assert_refusal(&e, "rotate_every", &raw);
        }
        (Err(e), Err(_)) => assert_refusal(&e, "rotate_every", &raw),
        (Ok(every), Err(e)) => {
            panic!("{raw:?} is a rotation interval {every} but not an interval: {e}")
        }
    }
});

fn accepted(raw: &str, interval: Interval) {
    let seconds = interval.seconds();
    assert!(
        seconds > 0 && seconds <= HUNDRED_YEARS,
        "{raw:?} is {seconds}s"
    );
    assert_eq!(
        u64::try_from(interval.as_duration().num_seconds()).ok(),
        Some(seconds)
    );

    let shown = interval.to_string();
    assert_eq!(
        Interval::parse(&shown),
        Ok(interval),
        "{raw:?} shows as {shown:?}"
    );
    assert!(
        shown.len() <= raw.trim().len(),
        "{shown:?} is not the shortest form of {raw:?}"
    );
    let json = serde_json::to_string(&interval).expect("an interval serializes");
    assert_eq!(json, format!("\"{shown}\""));
    let back: Interval = serde_json::from_str(&json).expect("an interval deserializes");
    assert_eq!(back, interval);

    let now = chrono::DateTime::UNIX_EPOCH;
    let regular = now + interval.as_duration();
    for key_ends in [now, now + interval.as_duration() / 2, regular] {
        let next = next_rotation(now, interval, Some(interval), Some(key_ends));
        assert!(
            now <= next && next <= regular,
            "next rotation {next} for {interval}"
        );
    }
}
