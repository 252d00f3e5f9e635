//! The audit log's hash chain and MAC, as `keyhold audit verify` walks it.
//!
//! The fuzzer's bytes choose a MAC key and the records (times, users,
//! summaries, details of any text); the target seals them into a chain and
//! then checks that:
//! - the chain as sealed verifies, and still does with entries archived;
//! - under any other MAC key it fails at the first entry;
//! - any single byte flipped in any chained field (sequence number, time,
//!   users, summary, details, previous hash, hash, MAC) fails verification at
//!   exactly that entry, for the reason that field implies;
//! - for any selection of entries (deleted, repeated, reordered), the
//!   verifier accepts exactly the longest unaltered prefix of the chain and
//!   calls the first bad entry a gap when entries before it are missing.
#![no_main]

use keyhold_core::KeystoreError;
use keyhold_core::audit::{
    AuditEntry, AuditMac, AuditRecord, ChainBreak, ChainHead, ChainVerifier, hmac_sha256, seal,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// 9999-12-31T23:59:59Z: the last second the stored time format can write.
const LAST_SECOND: i64 = 253_402_300_799;

struct KeyMac(Vec<u8>);

impl AuditMac for KeyMac {
    fn audit_mac(&self, data: &[u8]) -> std::result::Result<[u8; 32], KeystoreError> {
        hmac_sha256(&self.0, data)
    }
}

fuzz_target!(|data: &[u8]| {
    // Running out of bytes ends the case early; it is not a finding.
    let _ = run(&mut Unstructured::new(data));
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    // Up to 80 bytes: HMAC pads keys up to 64 bytes and hashes longer ones.
    let key_len = u.int_in_range(1..=80)?;
    let mac = KeyMac(u.bytes(key_len)?.to_vec());
    let chain = sealed_chain(u, &mac)?;
    let n = chain.len();

    assert_eq!(verify(&chain, &mac), (n, None), "an intact chain fails");

    let mut archived = chain.clone();
    for entry in &mut archived {
        entry.archived = u.arbitrary()?;
    }
    assert_eq!(
        verify(&archived, &mac),
        (n, None),
        "archiving broke the chain"
    );

    let mut other_key = mac.0.clone();
    other_key[0] ^= 1;
    assert_eq!(
        verify(&chain, &KeyMac(other_key)),
        (0, Some(ChainBreak::BadMac)),
        "the chain verifies under another key"
    );

    let victim = u.choose_index(n)?;
    let mut tampered = chain.clone();
    if let Some(expected) = flip_one_byte(u, &mut tampered[victim])? {
        assert_eq!(
            verify(&tampered, &mac),
            (victim, Some(expected)),
            "a byte flipped in entry {victim} of {n}: {:?} became {:?}",
            chain[victim],
            tampered[victim]
        );
    }

    let picks_len = u.int_in_range(0..=2 * n)?;
    let picks = (0..picks_len)
        .map(|_| u.choose_index(n))
        .collect::<Result<Vec<usize>>>()?;
    let selection: Vec<AuditEntry> = picks.iter().map(|&i| chain[i].clone()).collect();
    let prefix = picks
        .iter()
        .enumerate()
        .take_while(|&(at, &pick)| at == pick)
        .count();
    let expected_break = picks.get(prefix).map(|&pick| {
        if pick > prefix {
            ChainBreak::Gap {
                expected_seq: seq_at(prefix),
            }
        } else {
            ChainBreak::Unlinked
        }
    });
    assert_eq!(
        verify(&selection, &mac),
        (prefix, expected_break),
        "entries {picks:?} of the chain"
    );
    Ok(())
}

fn seq_at(index: usize) -> i64 {
    i64::try_from(index).expect("a short chain") + 1
}

fn sealed_chain(u: &mut Unstructured<'_>, mac: &KeyMac) -> Result<Vec<AuditEntry>> {
    let n = u.int_in_range(1..=6)?;
    let mut head = ChainHead::EMPTY;
    let mut chain = Vec::with_capacity(n);
    for _ in 0..n {
        let seconds = u.int_in_range(0..=LAST_SECOND)?;
        let micros = u.int_in_range(0..=999_999u32)?;
        let time =
            chrono::DateTime::from_timestamp(seconds, micros * 1000).expect("in chrono's range");
        let users: String = u.arbitrary()?;
        let summary: String = u.arbitrary()?;
        let details = match u.int_in_range(0..=2u8)? {
            0 => json!({}),
            1 => json!({ "note": u.arbitrary::<String>()? }),
            _ => Value::String(u.arbitrary()?),
        };
        let record = AuditRecord::new(time, users, summary).with_details(details);
        let entry = seal(head, &record, mac).expect("HMAC takes any key");
        head = ChainHead {
            seq: entry.seq,
            hash: entry.hash,
        };
        chain.push(entry);
    }
    Ok(chain)
}

/// How many entries the verifier accepts, and why it stops if it does.
fn verify(entries: &[AuditEntry], mac: &KeyMac) -> (usize, Option<ChainBreak>) {
    let mut verifier = ChainVerifier::new(std::sync::Arc::new(KeyMac(mac.0.clone())));
    for (at, entry) in entries.iter().enumerate() {
        if let Err(broken) = verifier.push(entry) {
            assert_eq!(verifier.checked(), at as u64);
            return (at, Some(broken));
        }
    }
    assert_eq!(verifier.checked(), entries.len() as u64);
    (entries.len(), None)
}

/// Flips one byte of one chained field; returns why verification must now
/// fail, or `None` when the flip leaves a string that is not UTF-8 (which
/// the store could not hold).
fn flip_one_byte(u: &mut Unstructured<'_>, entry: &mut AuditEntry) -> Result<Option<ChainBreak>> {
    let at: usize = u.arbitrary()?;
    let mask = u.int_in_range(1..=255u8)?;
    let flip = |bytes: &mut [u8]| {
        let len = bytes.len();
        if len > 0 {
            bytes[at % len] ^= mask;
        }
        len > 0
    };
    let flip_text = |text: &mut String| {
        let mut bytes = std::mem::take(text).into_bytes();
        let flipped = flip(&mut bytes);
        match String::from_utf8(bytes) {
            Ok(changed) => {
                *text = changed;
                flipped
            }
            Err(_) => false,
        }
    };
    let expected = match u.int_in_range(0..=7u8)? {
        0 => {
            let mut seq = entry.seq.to_be_bytes();
            flip(&mut seq);
            entry.seq = i64::from_be_bytes(seq);
            ChainBreak::Unlinked
        }
        1 if flip_text(&mut entry.time) => ChainBreak::Altered,
        2 if flip_text(&mut entry.users) => ChainBreak::Altered,
        3 if flip_text(&mut entry.summary) => ChainBreak::Altered,
        4 if flip_text(&mut entry.details) => ChainBreak::Altered,
        5 => {
            flip(&mut entry.prev_hash);
            ChainBreak::Unlinked
        }
        6 => {
            flip(&mut entry.hash);
            ChainBreak::Altered
        }
        7 => {
            flip(&mut entry.mac);
            ChainBreak::BadMac
        }
        _ => return Ok(None),
    };
    Ok(Some(expected))
}
