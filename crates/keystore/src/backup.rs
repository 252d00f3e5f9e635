//! Backups of the software keystore.
//!
//! Everything leaves wrapped under the backup's wrap key with AES key wrap
//! with padding (RFC 5649), the format a PKCS#11 token's
//! `CKM_AES_KEY_WRAP_PAD` produces and takes, so a backup made here
//! restores into a token and the other way round:
//!
//! | what                | wrapped plaintext                                         |
//! |---------------------|-----------------------------------------------------------|
//! | a key's material    | its 32 raw bytes                                          |
//! | an XKS key's material | its 32 raw bytes                                        |
//! | the audit MAC key   | its 32 raw bytes                                          |
//! | the audit signing key | PKCS#8 DER (P-256, with its public key)                 |
//!
//! The signing key's public half travels in the clear (SubjectPublicKeyInfo
//! DER) next to it: a token needs it to make its public key object.

use std::path::Path;

use aes_kw::KekAes256;
use keyhold_core::audit::{AuditPublicKey, AuditSigner, SoftwareSigningKey};
use keyhold_core::backup::{BackupExport, BackupImport, BackupWrapKey, WrappedAuditKeys};
use keyhold_core::error::KeystoreError;
use keyhold_core::ports::GeneratedKey;
use zeroize::Zeroizing;

use crate::seal::BlobKind;
use crate::{KEY_LEN, MasterKeySource, SoftKeystore, check_digits_of};

mod pkcs8;

#[cfg(test)]
mod tests;

/// The audit keys of a backup, unwrapped (and checked) before a restore
/// touches the keystore directory.
pub(crate) struct RestoredAuditKeys {
    pub(crate) mac: Zeroizing<[u8; KEY_LEN]>,
    pub(crate) signing: SoftwareSigningKey,
}

impl RestoredAuditKeys {
    fn unwrap(wrap_key: &BackupWrapKey, wrapped: &WrappedAuditKeys) -> Result<Self, KeystoreError> {
        let kek = kek(wrap_key);
        let mac = unwrap_exact(&kek, &wrapped.mac, "the audit MAC key")?;
        let public = AuditPublicKey::from_spki_der(&wrapped.signing_public).map_err(|e| {
            KeystoreError::Unsupported(format!(
                "the backup's audit signing public key is unusable ({e}): the backup is damaged"
            ))
        })?;
        let pkcs8 = unwrap(&kek, &wrapped.signing, "the audit signing key")?;
        let signing = pkcs8::signing_key(&pkcs8, &public)?;
        Ok(Self { mac, signing })
    }
}

pub(crate) fn kek(wrap_key: &BackupWrapKey) -> KekAes256 {
    KekAes256::new(wrap_key.expose().into())
}

/// RFC 5649 wrap of `data` (the `aes` zeroize feature wipes the key schedule).
pub(crate) fn wrap(kek: &KekAes256, data: &[u8]) -> Result<Vec<u8>, KeystoreError> {
    // The input padded to 8 bytes, plus the 8-byte integrity block.
    let mut out = vec![0u8; data.len().div_ceil(8) * 8 + 8];
    kek.wrap_with_padding(data, &mut out)
        .map_err(|e| KeystoreError::Internal(format!("AES key wrap with padding failed: {e}")))?;
    Ok(out)
}

/// RFC 5649 unwrap; `what` names the content for the error.
pub(crate) fn unwrap(
    kek: &KekAes256,
    wrapped: &[u8],
    what: &str,
) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    let refused = || {
        KeystoreError::Unsupported(format!(
            "{what} in the backup does not unwrap under the backup's wrap key: the backup was altered, or it is being opened with another backup's key"
        ))
    };
    if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
        return Err(refused());
    }
    let mut out = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
    let len = kek
        .unwrap_with_padding(wrapped, &mut out)
        .map_err(|_| refused())?
        .len();
    out.truncate(len);
    Ok(out)
}

/// [`unwrap`] of a 32-byte key.
fn unwrap_exact(
    kek: &KekAes256,
    wrapped: &[u8],
    what: &str,
) -> Result<Zeroizing<[u8; KEY_LEN]>, KeystoreError> {
    let plain = unwrap(kek, wrapped, what)?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if plain.len() != KEY_LEN {
        return Err(KeystoreError::Unsupported(format!(
            "{what} in the backup is {} bytes, not {KEY_LEN}: the backup is damaged",
            plain.len()
        )));
    }
    key.copy_from_slice(&plain);
    Ok(key)
}

struct SoftExport<'a> {
    keystore: &'a SoftKeystore,
    kek: KekAes256,
}

impl BackupExport for SoftExport<'_> {
    /// BYOK and XKS keys alike: the handle's kind says which it is, and the
    /// backup's record which import restores it.
    fn export_key(&self, key_id: uuid::Uuid, handle: &[u8]) -> Result<Vec<u8>, KeystoreError> {
        let material = self.keystore.open_any_material(key_id, handle).map_err(|e| match e {
            KeystoreError::SealBroken => KeystoreError::KeyNotFound(format!(
                "the keystore handle of key {key_id} does not open under this software keystore's master key: it is another keystore's handle, or it was altered"
            )),
            other => other,
        })?;
        wrap(&self.kek, &material)
    }

    fn export_audit_keys(&self) -> Result<WrappedAuditKeys, KeystoreError> {
        Ok(WrappedAuditKeys {
            mac: wrap(&self.kek, &self.keystore.audit_mac_key[..])?,
            signing: wrap(&self.kek, self.keystore.signing_key.pkcs8())?,
            signing_public: self.keystore.signing_key.audit_public_key()?.to_spki_der(),
        })
    }
}

struct SoftImport<'a> {
    keystore: &'a SoftKeystore,
    kek: KekAes256,
}

impl BackupImport for SoftImport<'_> {
    /// The material is sealed into a new handle; the handle being the only
    /// copy, importing again simply seals it again.
    fn import_key(
        &self,
        key_id: uuid::Uuid,
        wrapped: &[u8],
    ) -> Result<GeneratedKey, KeystoreError> {
        let material = unwrap_exact(&self.kek, wrapped, &format!("the material of key {key_id}"))?;
        let handle =
            self.keystore
                .sealer
                .seal(BlobKind::KeyHandle, key_id.as_bytes(), &material[..])?;
        Ok(GeneratedKey {
            handle,
            check_digits: check_digits_of(&material),
        })
    }

    /// Sealed as an XKS key's handle, like `xks_generate_key` makes it.
    fn import_xks_key(
        &self,
        key_id: uuid::Uuid,
        wrapped: &[u8],
    ) -> Result<GeneratedKey, KeystoreError> {
        let material = unwrap_exact(
            &self.kek,
            wrapped,
            &format!("the material of XKS key {key_id}"),
        )?;
        self.keystore.seal_xks_material(key_id, &material)
    }
}

impl SoftKeystore {
    pub(crate) fn start_backup_export<'a>(
        &'a self,
        wrap_key: &BackupWrapKey,
    ) -> Box<dyn BackupExport + 'a> {
        Box::new(SoftExport {
            keystore: self,
            kek: kek(wrap_key),
        })
    }

    pub(crate) fn start_backup_import<'a>(
        &'a self,
        wrap_key: &BackupWrapKey,
    ) -> Box<dyn BackupImport + 'a> {
        Box::new(SoftImport {
            keystore: self,
            kek: kek(wrap_key),
        })
    }

    /// Creates a keystore in `dir` like [`SoftKeystore::init`], but with the
    /// audit MAC and signing keys of a backup, so the restored audit log
    /// verifies and its checkpoints keep their key. Repeatable: when `dir`
    /// holds a keystore with these audit keys already (an interrupted
    /// restore), it is opened instead; one with other audit keys is refused.
    pub fn init_from_backup(
        dir: &Path,
        source: MasterKeySource,
        wrap_key: &BackupWrapKey,
        audit_keys: &WrappedAuditKeys,
    ) -> Result<Self, KeystoreError> {
        // Unwrapped first: a wrong key or a damaged backup leaves `dir` alone.
        let restored = RestoredAuditKeys::unwrap(wrap_key, audit_keys)?;
        if Self::is_initialised(dir) {
            let keystore = Self::open(dir, source)?;
            let same_mac = keystore.audit_mac_key[..] == restored.mac[..];
            let same_signing =
                keystore.signing_key.audit_public_key()? == restored.signing.audit_public_key()?;
            if same_mac && same_signing {
                return Ok(keystore);
            }
            return Err(KeystoreError::Unavailable(format!(
                "the keystore in {} holds other audit keys than the backup's (it belongs to another installation): restore into an empty keystore directory",
                dir.display()
            )));
        }
        Self::init_with(dir, source, Some(restored))
    }
}
