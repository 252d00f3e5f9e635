//! The small parsed values: names, AWS aliases, regions, key ids, role ARNs,
//! endpoints, access key ids, check digits, roles, the designated rotator,
//! stored key states and node roles, and timestamps. The first byte picks the parser.
//!
//! Checks: an accepted value prints as text that parses back to the same
//! value (also through serde, which the store and API use) and keeps its
//! type's rules; a refusal is a proper message. Timestamps are written in
//! one fixed-width form, since the audit filter compares them as text.
#![no_main]

use std::fmt::Debug;

use keyhold_core::InvalidInput;
use keyhold_core::cloud::aws::{Alias, KmsKeyId, Region};
use keyhold_core::clock::{format_timestamp, parse_timestamp};
use keyhold_core::cluster::{NodeRole, RotatorChoice};
use keyhold_core::credential::{AccessKeyId, CloudService, Endpoint, RoleArn};
use keyhold_core::identity::Role;
use keyhold_core::key::{CheckDigits, KeyState};
use keyhold_core::names::{CredentialName, GroupName, IdentityName, MAX_NAME_LEN, NodeId};
use keyhold_fuzz::assert_refusal;
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let raw = String::from_utf8_lossy(rest);
    let raw = raw.as_ref();
    match pick % 15 {
        0 => name(raw, GroupName::parse, "group name"),
        1 => name(raw, CredentialName::parse, "credential name"),
        2 => name(raw, IdentityName::parse, "identity name"),
        3 => name(raw, NodeId::parse, "node id"),
        4 => round_trip(raw, Alias::parse, "alias", |a| {
            let lower = a.as_str().to_ascii_lowercase();
            assert!(lower.starts_with("alias/") && !lower.starts_with("alias/aws/"));
            assert!(a.as_str().len() <= 256);
        }),
        5 => round_trip(raw, Region::parse, "region", |r| {
            assert!(keyhold_core::cloud::aws::AWS_REGIONS.contains(&r.as_str()));
        }),
        6 => round_trip(raw, KmsKeyId::parse, "key id", |k| {
            let text = k.as_str();
            assert_eq!(text, text.to_ascii_lowercase());
            assert_eq!((text.len(), text.matches('-').count()), (36, 4));
        }),
        7 => round_trip(raw, RoleArn::parse, "role_arn", |arn| {
            assert_eq!(arn.as_str(), raw);
            assert!(arn.as_str().chars().all(|c| c.is_ascii_graphic()));
            let account = arn.account();
            assert!(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()));
        }),
        8 => round_trip(raw, Endpoint::parse, "endpoint", |e| {
            let text = e.as_str();
            assert!(text.starts_with("https://") || text.starts_with("http://"));
            assert!(!text.chars().any(|c| c.is_control() || c.is_whitespace()));
        }),
        9 => round_trip(raw, AccessKeyId::parse, "csv", |id| {
            assert_eq!(id.as_str(), raw);
        }),
        10 => round_trip(raw, CheckDigits::parse, "check_digits", |c| {
            let text = c.as_str();
            assert_eq!(text, raw.to_ascii_uppercase());
            assert!(text.len() == 4 && text.bytes().all(|b| b.is_ascii_hexdigit()));
        }),
        11 => round_trip(raw, RotatorChoice::parse, "designated_rotator", |_| {}),
        12 => {
            check(raw, Role::parse, "role", |r| r.as_str().to_owned(), |_| {});
            check(
                raw,
                CloudService::parse,
                "service",
                |s| s.as_str().to_owned(),
                |_| {},
            );
        }
        13 => {
            // Stored states and roles: only their exact spelling reads back.
            if let Some(state) = KeyState::parse(raw) {
                assert_eq!(state.as_str(), raw);
            }
            if let Some(role) = NodeRole::parse(raw) {
                assert_eq!(role.as_str(), raw);
            }
        }
        _ => timestamp(raw),
    }
});

fn name<T>(raw: &str, parse: fn(&str) -> Result<T, InvalidInput>, field: &str)
where
    T: PartialEq + Debug + std::fmt::Display + Serialize + DeserializeOwned,
{
    round_trip(raw, parse, field, |n| {
        let text = n.to_string();
        assert_eq!(text, raw);
        assert!(text.len() <= MAX_NAME_LEN);
        assert!(text.starts_with(|c: char| c.is_ascii_alphanumeric()));
        assert!(
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        );
    });
}

fn round_trip<T>(
    raw: &str,
    parse: fn(&str) -> Result<T, InvalidInput>,
    field: &str,
    rules: impl Fn(&T),
) where
    T: PartialEq + Debug + std::fmt::Display + Serialize + DeserializeOwned,
{
    check(raw, parse, field, |v| v.to_string(), rules);
}

/// Parses `raw`; an accepted value must show as text that parses back to it,
/// directly and through serde, and satisfy `rules`.
fn check<T>(
    raw: &str,
    parse: fn(&str) -> Result<T, InvalidInput>,
    field: &str,
    show: impl Fn(&T) -> String,
    rules: impl Fn(&T),
) where
    T: PartialEq + Debug + Serialize + DeserializeOwned,
{
    match parse(raw) {
        Ok(value) => {
            rules(&value);
            let shown = show(&value);
            assert_eq!(
                parse(&shown).as_ref(),
                Ok(&value),
                "{raw:?} shows as {shown:?}"
            );
            let json = serde_json::to_string(&value).expect("serializes");
            let back: T = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, value, "{raw:?} through serde as {json}");
        }
        Err(e) => assert_refusal(&e, field, raw),
    }
}

fn timestamp(raw: &str) {
    let Some(time) = parse_timestamp(raw) else {
        return;
    };
    let stored = format_timestamp(&time);
    assert_eq!(
        stored.len(),
        "2026-11-29T12:00:00.000000Z".len(),
        "{raw:?} is stored as {stored:?}, out of the fixed-width form"
    );
    let back = parse_timestamp(&stored)
        .unwrap_or_else(|| panic!("{raw:?} is stored as {stored:?}, which does not parse"));
    assert_eq!(format_timestamp(&back), stored);
    assert!(back <= time && time - back < chrono::Duration::microseconds(1));
}
