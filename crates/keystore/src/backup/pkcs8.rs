//! The audit signing key of a backup, as PKCS#8.
//!
//! Keystores do not all write the same PKCS#8 for a P-256 key: ring (the
//! software keystore) includes the public key; a token's `C_WrapKey` writes
//! what its library makes of it, and SoftHSM2 2.6 leaves the public key out
//! and follows the DER with zero bytes up to a multiple of 8. ring reads
//! only its own form, so the private scalar is taken out of whichever form
//! came and put back into ring's with the public key the backup names
//! (ring then checks that the two halves belong together).

use keyhold_core::audit::{AuditPublicKey, AuditSigner, SoftwareSigningKey};
use keyhold_core::error::KeystoreError;
use zeroize::Zeroizing;

/// `AlgorithmIdentifier { id-ecPublicKey, prime256v1 }`.
const P256_ALGORITHM: [u8; 21] = [
    0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
    0xce, 0x3d, 0x03, 0x01, 0x07,
];
/// ring's P-256 PKCS#8 up to the private scalar: version 0, the algorithm,
/// and an `ECPrivateKey { version 1, privateKey`.
const RING_PREFIX: [u8; 36] = [
    0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
    0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x6d, 0x30, 0x6b, 0x02,
    0x01, 0x01, 0x04, 0x20,
];
/// Between the scalar and the public point: `[1] BIT STRING (0 unused bits)`.
const RING_PUBLIC_KEY_TAG: [u8; 5] = [0xa1, 0x44, 0x03, 0x42, 0x00];
const SCALAR_LEN: usize = 32;
const POINT_LEN: usize = 65;

fn damaged(what: &str) -> KeystoreError {
    KeystoreError::Unsupported(format!(
        "the backup's audit signing key {what}: the backup is damaged"
    ))
}

/// The signing key in `pkcs8`, which must be the private half of `public`
/// (the public key the backup names).
pub(super) fn signing_key(
    pkcs8: &[u8],
    public: &AuditPublicKey,
) -> Result<SoftwareSigningKey, KeystoreError> {
    let scalar = private_scalar(pkcs8)?;
    let spki = public.to_spki_der();
    let point = &spki[spki.len().saturating_sub(POINT_LEN)..];
    let mut ring_form = Zeroizing::new(Vec::with_capacity(
        RING_PREFIX.len() + SCALAR_LEN + RING_PUBLIC_KEY_TAG.len() + POINT_LEN,
    ));
    ring_form.extend_from_slice(&RING_PREFIX);
    ring_form.extend_from_slice(&scalar[..]);
    ring_form.extend_from_slice(&RING_PUBLIC_KEY_TAG);
    ring_form.extend_from_slice(point);
    let key = SoftwareSigningKey::from_pkcs8(&ring_form).map_err(|_| {
        damaged("does not match the public key the backup names, or is not a P-256 key")
    })?;
    if key.audit_public_key()? != *public {
        return Err(damaged("does not match the public key the backup names"));
    }
    Ok(key)
}

/// The 32-byte private scalar of a P-256 PKCS#8 `PrivateKeyInfo` (DER,
/// optionally followed by zero bytes).
fn private_scalar(pkcs8: &[u8]) -> Result<Zeroizing<[u8; SCALAR_LEN]>, KeystoreError> {
    let not_pkcs8 = || damaged("is not a P-256 PKCS#8 key");
    let mut outer = Der(pkcs8);
    let info = outer.take(0x30).ok_or_else(not_pkcs8)?;
    if !outer.0.iter().all(|b| *b == 0) {
        return Err(not_pkcs8());
    }
    let mut info = Der(info);
    if info.take(0x02) != Some(&[0x00]) {
        return Err(not_pkcs8());
    }
    let algorithm_start = info.0;
    info.take(0x30).ok_or_else(not_pkcs8)?;
    let algorithm = &algorithm_start[..algorithm_start.len() - info.0.len()];
    if algorithm != P256_ALGORITHM {
        return Err(damaged("is not a P-256 key"));
    }
    let mut ec = Der(Der(info.take(0x04).ok_or_else(not_pkcs8)?)
        .take(0x30)
        .ok_or_else(not_pkcs8)?);
    if ec.take(0x02) != Some(&[0x01]) {
        return Err(not_pkcs8());
    }
    let raw = ec.take(0x04).ok_or_else(not_pkcs8)?;
    // Some encoders drop the scalar's leading zero bytes.
    if raw.is_empty() || raw.len() > SCALAR_LEN {
        return Err(not_pkcs8());
    }
    let mut scalar = Zeroizing::new([0u8; SCALAR_LEN]);
    scalar[SCALAR_LEN - raw.len()..].copy_from_slice(raw);
    // What follows ([0] parameters, [1] public key) is not needed: the
    // curve was checked above and the public key comes from the backup.
    Ok(scalar)
}

/// A reader of DER with definite lengths up to 2^16, enough for a key.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The content of the next element if it has tag `tag`.
    fn take(&mut self, tag: u8) -> Option<&'a [u8]> {
        let (&found, rest) = self.0.split_first()?;
        if found != tag {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = match first {
            0..=0x7f => (usize::from(first), rest),
            0x81 => {
                let (&len, rest) = rest.split_first()?;
                (usize::from(len), rest)
            }
            0x82 => {
                let (len, rest) = rest.split_at_checked(2)?;
                (usize::from(u16::from_be_bytes([len[0], len[1]])), rest)
            }
            _ => return None,
        };
        let (content, rest) = rest.split_at_checked(len)?;
        self.0 = rest;
        Some(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SoftwareSigningKey {
        SoftwareSigningKey::generate().unwrap()
    }

    /// ring's form, our prefix: the template above is ring's.
    #[test]
    fn ring_pkcs8_reads_back_unchanged() {
        let key = key();
        assert!(key.pkcs8().starts_with(&RING_PREFIX));
        let public = key.audit_public_key().unwrap();
        let again = signing_key(key.pkcs8(), &public).unwrap();
        assert_eq!(again.pkcs8(), key.pkcs8());
    }

    /// The form SoftHSM2 2.6 wraps: no public key, zero bytes after the DER.
    #[test]
    fn pkcs8_without_public_key_and_with_padding_reads() {
        let key = key();
        let public = key.audit_public_key().unwrap();
        let scalar = &key.pkcs8()[RING_PREFIX.len()..RING_PREFIX.len() + SCALAR_LEN];
        let mut softhsm =
            hex::decode("3041020100301306072a8648ce3d020106082a8648ce3d030107042730250201010420")
                .unwrap();
        softhsm.extend_from_slice(scalar);
        softhsm.extend_from_slice(&[0; 5]);
        assert_eq!(signing_key(&softhsm, &public).unwrap().pkcs8(), key.pkcs8());

        // Another key's public half, garbage after the DER, another curve: refused.
        let other = self::key().audit_public_key().unwrap();
        assert!(signing_key(&softhsm, &other).is_err());
        let mut trailing = softhsm.clone();
        trailing.push(1);
        assert!(signing_key(&trailing, &public).is_err());
        let mut curve = softhsm.clone();
        curve[26] ^= 1;
        assert!(signing_key(&curve, &public).is_err());
        for len in 0..softhsm.len() - 5 {
            assert!(signing_key(&softhsm[..len], &public).is_err(), "{len}");
        }
    }
}
