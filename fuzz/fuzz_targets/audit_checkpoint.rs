//! Checkpoint files and public keys as an auditor hands them to `keyhold
//! audit verify --checkpoint FILE --public-key KEY`, and the closing line of
//! an export: text from outside, possibly hostile.
//!
//! Checks: nothing panics; an accepted checkpoint prints as a line that
//! parses back equal; an accepted public key prints as PEM that parses back
//! equal; a checkpoint verifies only under the key that signed it, and any
//! change to a parsed one (its entry, its hash, its time) breaks it.
#![no_main]

use keyhold_core::audit::{
    AuditPublicKey, AuditSigner, ChainHead, Checkpoint, ExportEnd, SoftwareSigningKey,
    parse_checkpoints,
};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

/// One key for the whole run: generating one per input would slow the fuzzer.
static KEY: LazyLock<SoftwareSigningKey> =
    LazyLock::new(|| SoftwareSigningKey::generate().expect("a P-256 key"));

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(checkpoints) = parse_checkpoints(&text) {
        for checkpoint in checkpoints {
            let line = checkpoint.to_json_line();
            assert_eq!(Checkpoint::from_json_line(&line).ok(), Some(checkpoint));
        }
    }
    if let Ok(key) = AuditPublicKey::from_pem(&text) {
        assert_eq!(AuditPublicKey::from_pem(&key.to_pem()).ok(), Some(key));
    }
    let _ = serde_json::from_str::<ExportEnd>(&text);

    // A checkpoint over bytes of the input: only an exact copy verifies.
    let mut hash = [0u8; 32];
    for (slot, byte) in hash.iter_mut().zip(data) {
        *slot = *byte;
    }
    let seq = i64::from(data.first().copied().unwrap_or(0)) + 1;
    let time = chrono::DateTime::from_timestamp(i64::from(data.len() as u32), 0)
        .unwrap_or_default();
    let signed = Checkpoint::sign(ChainHead { seq, hash }, time, &*KEY).expect("signing");
    let key = KEY.audit_public_key().expect("the public key");
    assert!(signed.verify(&key).is_ok());
    let mut moved = signed.clone();
    moved.seq += 1;
    assert!(moved.verify(&key).is_err());
    let mut rehashed = signed.clone();
    rehashed.hash[data.len() % 32] ^= 1;
    assert!(rehashed.verify(&key).is_err());
    let mut retimed = signed;
    retimed.time.push(' ');
    assert!(retimed.verify(&key).is_err());
});
