//! A group's KMS key policy and the other free-form group options (owner,
//! notes, description, key type and usage), as the API and UI receive them.
//!
//! Checks: an accepted policy is kept byte for byte (AWS stores it verbatim),
//! is at most 32 KiB, is a JSON object with a non-empty `Statement`, and comes
//! back equal through serde (how the store and API carry it); accepted options
//! keep their text and their rules; every refusal is a proper message.
#![no_main]

use keyhold_core::cloud::aws::{Description, KeyPolicy, MAX_DESCRIPTION_CHARS, MAX_POLICY_BYTES};
use keyhold_core::group::{GroupInfo, KeySpec, MAX_INFO_CHARS};
use keyhold_fuzz::assert_refusal;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // Requests arrive as JSON strings, so the parsers only ever see UTF-8.
    let raw = String::from_utf8_lossy(data);
    policy(&raw);
    description(&raw);
    info(&raw);
    spec(&raw, data);
});

fn policy(raw: &str) {
    match KeyPolicy::parse(raw) {
        Ok(policy) => {
            assert_eq!(policy.as_str(), raw, "the policy was not kept verbatim");
            assert!(raw.len() <= MAX_POLICY_BYTES);
            let doc: Value = serde_json::from_str(raw).expect("an accepted policy is JSON");
            match doc.get("Statement") {
                Some(Value::Array(statements)) => assert!(!statements.is_empty()),
                Some(Value::Object(_)) => {}
                other => panic!("accepted a policy whose Statement is {other:?}"),
            }
            let json = serde_json::to_string(&policy).expect("a policy serializes");
            let back: KeyPolicy = serde_json::from_str(&json).expect("a policy deserializes");
            assert_eq!(back, policy);
        }
        Err(e) => {
            assert_refusal(&e, "policy", raw);
            if serde_json::from_str::<Value>(raw).is_ok() && raw.len() <= MAX_POLICY_BYTES {
                assert!(
                    !e.message.contains("not valid JSON"),
                    "valid JSON called invalid: {raw:?}"
                );
            }
        }
    }
}

fn allowed_in_free_text(c: char) -> bool {
    !c.is_control() || c == '\n' || c == '\t'
}

fn description(raw: &str) {
    match Description::parse(raw) {
        Ok(d) => {
            assert_eq!(d.as_str(), raw);
            assert!(raw.chars().count() <= MAX_DESCRIPTION_CHARS);
            assert!(raw.chars().all(allowed_in_free_text));
            let json = serde_json::to_string(&d).expect("a description serializes");
            let back: Description = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, d);
        }
        Err(e) => assert_refusal(&e, "description", raw),
    }
}

fn info(raw: &str) {
    // The same text as owner and as notes, split at the first line end, so
    // each field sees both short and multi-line values.
    let (owner, notes) = raw.split_once('\n').unwrap_or((raw, ""));
    match GroupInfo::parse(owner, notes) {
        Ok(info) => {
            assert_eq!((info.owner.as_str(), info.notes.as_str()), (owner, notes));
            for text in [owner, notes] {
                assert!(text.chars().count() <= MAX_INFO_CHARS);
                assert!(text.chars().all(allowed_in_free_text));
            }
        }
        Err(e) => {
            let field = if e.field == "owner" { "owner" } else { "notes" };
            assert_refusal(&e, field, raw);
        }
    }
}

fn spec(raw: &str, data: &[u8]) {
    let length = data
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes);
    let line = raw.lines().next().unwrap_or_default();
    for (key_type, key_length, usage) in [
        (Some(line), None, None),
        (None, length, None),
        (None, None, Some(line)),
    ] {
        match KeySpec::parse(key_type, key_length, usage) {
            Ok(_) => {
                if let Some(t) = key_type {
                    assert!(matches!(
                        t.to_ascii_lowercase().as_str(),
                        "aes" | "symmetric"
                    ));
                }
                if let Some(len) = key_length {
                    assert_eq!(len, 256);
                }
                if let Some(u) = usage {
                    let folded: String = u
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric())
                        .collect::<String>()
                        .to_ascii_lowercase();
                    assert_eq!(folded, "encryptdecrypt", "accepted usage {u:?}");
                }
            }
            Err(e) => {
                let field = match (key_type, key_length) {
                    (Some(_), _) => "key_type",
                    (None, Some(_)) => "key_length",
                    (None, None) => "usage",
                };
                assert_refusal(&e, field, raw);
            }
        }
    }
}
