//! Signed trailers: the audit signing key (ECDSA P-256) over a domain
//! string and the SHA-256 of what precedes the trailer.
//!
//! The domain string keeps a backup's or an archive's signature from
//! passing as an audit checkpoint (or the other way round): each signed
//! message starts with its own format name.

use keyhold_core::audit::{AuditPublicKey, AuditSigner};

use crate::error::{BackupError, Result};

/// r || s.
pub(crate) const SIGNATURE_LEN: usize = 64;
/// An uncompressed SEC1 P-256 point, the end of its SubjectPublicKeyInfo.
const POINT_LEN: usize = 65;

fn message(domain: &[u8], digest: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.len() + 32);
    m.extend_from_slice(domain);
    m.extend_from_slice(digest);
    m
}

/// Signs, and checks the signature under `expected` before returning it: a
/// keystore whose key is not the one named in the file, or that answers in
/// another format, would otherwise write a file nobody can verify.
pub(crate) fn sign(
    domain: &[u8],
    digest: &[u8; 32],
    signer: &dyn AuditSigner,
    expected: &AuditPublicKey,
) -> Result<[u8; SIGNATURE_LEN]> {
    let actual = signer.audit_public_key()?;
    if &actual != expected {
        return Err(BackupError::Invalid(format!(
            "the keystore's audit signing key ({}) is not the one the file names ({}): make the file with the keystore's own audit public key",
            actual.fingerprint_hex(),
            expected.fingerprint_hex()
        )));
    }
    let signature = signer.audit_sign(&message(domain, digest))?;
    let signature: [u8; SIGNATURE_LEN] = signature.try_into().map_err(|s: Vec<u8>| {
        BackupError::Invalid(format!(
            "the keystore returned a {}-byte signature, not r || s ({SIGNATURE_LEN} bytes)",
            s.len()
        ))
    })?;
    if !verifies(domain, digest, &signature, expected) {
        return Err(BackupError::Invalid(
            "the keystore's signature does not verify under its own public key".into(),
        ));
    }
    Ok(signature)
}

pub(crate) fn verifies(
    domain: &[u8],
    digest: &[u8; 32],
    signature: &[u8],
    key: &AuditPublicKey,
) -> bool {
    let spki = key.to_spki_der();
    let Some(point) = spki.get(spki.len().saturating_sub(POINT_LEN)..) else {
        return false;
    };
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
        .verify(&message(domain, digest), signature)
        .is_ok()
}
