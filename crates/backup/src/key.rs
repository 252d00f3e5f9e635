//! The backup key: one fresh 256-bit key per backup, never stored, only
//! split among the custodians.

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use keyhold_core::backup::BackupWrapKey;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{BackupError, Result};

pub(crate) const KEY_LEN: usize = 32;
const WRAP_INFO: &[u8] = b"keyhold backup v1 wrap";
const STREAM_INFO: &[u8] = b"keyhold backup v1 stream";
const KEY_CHECK_TEXT: &[u8] = b"keyhold backup v1 key check";
/// Bytes of the key check: enough to tell keys apart, too few to help an
/// attacker more than the ciphertext already does.
const KEY_CHECK_LEN: usize = 16;

/// A backup's key. Wiped on drop, never printed.
pub struct BackupKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackupKey(<redacted>)")
    }
}

impl BackupKey {
    /// A fresh random key from the operating system.
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::getrandom(bytes.as_mut()).map_err(|e| {
            BackupError::Invalid(format!(
                "the operating system gave no random bytes for a backup key: {e}"
            ))
        })?;
        Ok(Self(bytes))
    }

    /// A key from its bytes (as the shares recombine it, or a test's fixed key).
    pub fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        Self(bytes)
    }

    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key the keystore wraps key material and audit keys under.
    pub fn wrap_key(&self) -> BackupWrapKey {
        BackupWrapKey::new(self.derive(None, WRAP_INFO))
    }

    /// The header's `key_check`: tells whether shares recombined to this
    /// backup's key before anything is decrypted.
    pub fn key_check(&self) -> String {
        let tag = match Hmac::<Sha256>::new_from_slice(self.expose()) {
            Ok(mut mac) => {
                mac.update(KEY_CHECK_TEXT);
                mac.finalize().into_bytes()
            }
            // HMAC takes keys of any length: unreachable, and an empty
            // check never matches a real one.
            Err(_) => return String::new(),
        };
        hex::encode(&tag[..KEY_CHECK_LEN])
    }

    /// The stream cipher's key: bound to the header's exact bytes, so a
    /// header altered by a single byte no longer decrypts anything.
    pub(crate) fn stream_key(&self, header_sha256: &[u8; 32]) -> Zeroizing<[u8; KEY_LEN]> {
        self.derive(Some(header_sha256), STREAM_INFO)
    }

    fn derive(&self, salt: Option<&[u8]>, info: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
        let hk = Hkdf::<Sha256>::new(salt, self.expose());
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        // 32 bytes is far below HKDF-SHA256's limit of 8160.
        if hk.expand(info, out.as_mut()).is_err() {
            out.as_mut().fill(0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_and_debug_hides_the_key() {
        let key = BackupKey::from_bytes(Zeroizing::new([7; 32]));
        let wrap = key.wrap_key();
        let stream = key.stream_key(&[0; 32]);
        assert_ne!(wrap.expose(), &*stream);
        assert_ne!(&*key.stream_key(&[1; 32]), &*stream);
        assert_eq!(key.key_check().len(), 32);
        assert_ne!(key.key_check(), BackupKey::generate().unwrap().key_check());
        assert_eq!(format!("{key:?}"), "BackupKey(<redacted>)");
    }
}
