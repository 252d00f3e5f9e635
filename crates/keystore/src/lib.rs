//! keyhold's software keystore.
//!
//! Key material, credential secrets and the audit MAC key are sealed with
//! AES-256-GCM under one 32-byte master key. The master key comes from a
//! private file or from a passphrase (see [`MasterKeySource`]).
//!
//! # Files in the keystore directory (mode 0700; every file mode 0600)
//!
//! | file            | mode       | content                                                        |
//! |-----------------|------------|----------------------------------------------------------------|
//! | `master.key`    | file       | the 32 raw bytes of the master key                             |
//! | `master.salt`   | passphrase | JSON: Argon2id parameters and the 16-byte salt (hex); no secret |
//! | `master.check`  | both       | a known text sealed under the master key: detects a wrong key  |
//! | `audit-signing.key` | both   | the audit checkpoint signing key (P-256, PKCS#8) sealed under the master key; made at the first open when missing |
//! | `audit-mac.key` | both       | the audit HMAC key sealed under the master key; written last, so its presence means "initialised" |
//!
//! Key material is not kept here: [`Keystore::generate_key`] (and
//! [`Keystore::xks_generate_key`]) return it sealed as the key's handle and
//! the store keeps that.
//!
//! # Sealed blob format
//!
//! `kind || nonce (12) || ciphertext || tag (16)`, where `kind` is `0x01` for a
//! key handle, `0x02` for a caller's secret, `0x03` for the keystore's own
//! files and `0x04` for an XKS key's handle. The AAD is `kind || context`: the
//! key id's 16 bytes for a handle (a handle cannot be moved to another key),
//! the caller's context for a secret, `keyhold-audit-mac` /
//! `keyhold-audit-signing` / `keyhold-master-check` for the files. The kind
//! keeps the two kinds of keys apart: a BYOK key's handle never encrypts for
//! KMS's XKS calls, an XKS key's handle is never wrapped for a cloud.
//!
//! Whoever can read this directory (and, with a passphrase, knows it) holds
//! every key here, including the audit keys: they could rewrite the audit log
//! and sign checkpoints of the rewrite. Checkpoints shipped off the machine
//! before such a rewrite still catch it; the PKCS#11 keystore keeps both audit
//! keys in the token, where reading files does not reach them.

use std::fmt;
use std::path::{Path, PathBuf};

use aes::Aes256;
use aes::cipher::{BlockEncrypt, KeyInit};
use keyhold_core::audit::{AuditMac, AuditPublicKey, AuditSigner, SoftwareSigningKey, hmac_sha256};
use keyhold_core::backup::{BackupExport, BackupImport, BackupWrapKey};
use keyhold_core::cloud::WrappingAlgorithm;
use keyhold_core::error::KeystoreError;
use keyhold_core::key::CheckDigits;
use keyhold_core::ports::{
    GcmCiphertext, GeneratedKey, Keystore, KeystoreDescription, KeystoreKind,
};
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

mod backup;
mod files;
mod gcm;
mod master;
pub mod pkcs11;
mod seal;
mod wrap;

#[cfg(test)]
mod tests;

pub use master::MasterKeySource;
pub use pkcs11::{Pkcs11Keystore, Pkcs11Settings, TokenSelector};

use backup::RestoredAuditKeys;
use master::{KdfParams, MASTER_KEY_LEN};
use seal::{BlobKind, Sealer, fill_random};

/// File names inside the keystore directory.
pub const MASTER_KEY_FILE: &str = "master.key";
pub const MASTER_SALT_FILE: &str = "master.salt";
pub const MASTER_CHECK_FILE: &str = "master.check";
pub const AUDIT_MAC_FILE: &str = "audit-mac.key";
pub const AUDIT_SIGNING_FILE: &str = "audit-signing.key";

const ALL_FILES: [&str; 5] = [
    MASTER_KEY_FILE,
    MASTER_SALT_FILE,
    MASTER_CHECK_FILE,
    AUDIT_SIGNING_FILE,
    AUDIT_MAC_FILE,
];

const KEY_LEN: usize = 32;
const MASTER_CHECK_CONTEXT: &[u8] = b"keyhold-master-check";
const MASTER_CHECK_TEXT: &[u8] = b"keyhold master key check v1";
const AUDIT_MAC_CONTEXT: &[u8] = b"keyhold-audit-mac";
const AUDIT_SIGNING_CONTEXT: &[u8] = b"keyhold-audit-signing";
/// Generous bound for any file the keystore reads (all are well under 1 KiB).
const MAX_FILE_LEN: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MasterMode {
    File,
    Passphrase,
}

/// Keys sealed under a master key held in memory for the keystore's lifetime
/// (as an expanded AES key, wiped on drop).
pub struct SoftKeystore {
    dir: PathBuf,
    mode: MasterMode,
    sealer: Sealer,
    audit_mac_key: Zeroizing<[u8; KEY_LEN]>,
    signing_key: SoftwareSigningKey,
}

impl fmt::Debug for SoftKeystore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftKeystore")
            .field("dir", &self.dir)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl SoftKeystore {
    /// True once `init` completed in `dir` (its last file, `audit-mac.key`, exists).
    pub fn is_initialised(dir: &Path) -> bool {
        dir.join(AUDIT_MAC_FILE).is_file()
    }

    /// Creates a new keystore in `dir` (created with mode 0700 if missing).
    /// Fails if `dir` already holds a keystore or a part of one.
    pub fn init(dir: &Path, source: MasterKeySource) -> Result<Self, KeystoreError> {
        Self::init_with(dir, source, None)
    }

    /// [`Self::init`] with fresh audit keys, or with `audit`'s (a restore).
    fn init_with(
        dir: &Path,
        source: MasterKeySource,
        audit: Option<RestoredAuditKeys>,
    ) -> Result<Self, KeystoreError> {
        files::ensure_private_dir(dir)?;
        if Self::is_initialised(dir) {
            return Err(KeystoreError::Unavailable(format!(
                "the keystore in {} is already initialised",
                dir.display()
            )));
        }
        if let Some(leftover) = ALL_FILES.iter().find(|name| dir.join(name).exists()) {
            // Without audit-mac.key no open ever succeeded, so nothing was sealed
            // under this master key and removing it loses nothing.
            return Err(KeystoreError::Unavailable(format!(
                "{} is left from an unfinished initialisation; remove the files in {} and run init again",
                dir.join(leftover).display(),
                dir.display()
            )));
        }
        let mut created = Vec::new();
        let result = Self::create_files(dir, source, audit, &mut created);
        if result.is_err() {
            for name in created {
                let _ = std::fs::remove_file(dir.join(name));
            }
        }
        result
    }

    fn create_files(
        dir: &Path,
        source: MasterKeySource,
        audit: Option<RestoredAuditKeys>,
        created: &mut Vec<&'static str>,
    ) -> Result<Self, KeystoreError> {
        let (master_key, mode) = match source {
            MasterKeySource::File => {
                let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
                fill_random(&mut key[..])?;
                files::write_new_file(dir, MASTER_KEY_FILE, &key[..])?;
                created.push(MASTER_KEY_FILE);
                (key, MasterMode::File)
            }
            MasterKeySource::Passphrase(passphrase) => {
                if passphrase.expose_secret().is_empty() {
                    return Err(KeystoreError::Unsupported(
                        "the keystore passphrase must not be empty".into(),
                    ));
                }
                let params = KdfParams::generate()?;
                let key = params.derive(&passphrase)?;
                files::write_new_file(dir, MASTER_SALT_FILE, &params.to_json()?)?;
                created.push(MASTER_SALT_FILE);
                (key, MasterMode::Passphrase)
            }
        };
        let sealer = Sealer::new(&master_key);
        drop(master_key);

        let check = sealer.seal(BlobKind::Internal, MASTER_CHECK_CONTEXT, MASTER_CHECK_TEXT)?;
        files::write_new_file(dir, MASTER_CHECK_FILE, &check)?;
        created.push(MASTER_CHECK_FILE);

        let (signing_key, audit_mac_key) = match audit {
            Some(RestoredAuditKeys { mac, signing }) => (signing, mac),
            None => {
                let mut mac = Zeroizing::new([0u8; KEY_LEN]);
                fill_random(&mut mac[..])?;
                (SoftwareSigningKey::generate()?, mac)
            }
        };
        write_signing_key(&sealer, dir, &signing_key)?;
        created.push(AUDIT_SIGNING_FILE);

        let sealed = sealer.seal(BlobKind::Internal, AUDIT_MAC_CONTEXT, &audit_mac_key[..])?;
        files::write_new_file(dir, AUDIT_MAC_FILE, &sealed)?;
        created.push(AUDIT_MAC_FILE);

        Ok(Self {
            dir: dir.to_path_buf(),
            mode,
            sealer,
            audit_mac_key,
            signing_key,
        })
    }

    /// Opens the keystore in `dir`. Fails clearly on a wrong passphrase, a
    /// master key file others can read, or a source that does not match `init`.
    pub fn open(dir: &Path, source: MasterKeySource) -> Result<Self, KeystoreError> {
        if !Self::is_initialised(dir) {
            return Err(KeystoreError::Unavailable(format!(
                "no keystore in {}: run `keyhold init` first",
                dir.display()
            )));
        }
        let has_key_file = dir.join(MASTER_KEY_FILE).exists();
        let has_salt_file = dir.join(MASTER_SALT_FILE).exists();
        let (master_key, mode) = match source {
            MasterKeySource::File => {
                if !has_key_file && has_salt_file {
                    return Err(KeystoreError::Unavailable(format!(
                        "the keystore in {} is protected by a passphrase, not a master key file: supply the passphrase",
                        dir.display()
                    )));
                }
                (read_master_key_file(dir)?, MasterMode::File)
            }
            MasterKeySource::Passphrase(passphrase) => {
                if has_key_file && !has_salt_file {
                    return Err(KeystoreError::Unavailable(format!(
                        "the keystore in {} uses the master key file {MASTER_KEY_FILE}, not a passphrase",
                        dir.display()
                    )));
                }
                let salt_path = dir.join(MASTER_SALT_FILE);
                let raw = files::read_small_file(&salt_path, MAX_FILE_LEN, false)?;
                let key = KdfParams::from_json(&raw)?.derive(&passphrase)?;
                (key, MasterMode::Passphrase)
            }
        };
        let sealer = Sealer::new(&master_key);
        drop(master_key);

        match open_master_check(&sealer, dir) {
            Ok(()) => {}
            Err(KeystoreError::SealBroken) => {
                return Err(KeystoreError::Unavailable(match mode {
                    MasterMode::Passphrase => {
                        format!("wrong passphrase for the keystore in {}", dir.display())
                    }
                    MasterMode::File => format!(
                        "{} is not the master key of the keystore in {} ({MASTER_CHECK_FILE} does not open)",
                        dir.join(MASTER_KEY_FILE).display(),
                        dir.display()
                    ),
                }));
            }
            Err(other) => return Err(other),
        }
        let audit_mac_key = open_audit_mac_key(&sealer, dir)?;
        let signing_key = if dir.join(AUDIT_SIGNING_FILE).exists() {
            open_signing_key(&sealer, dir)?
        } else {
            // A keystore made before checkpoints existed.
            let key = create_signing_key(&sealer, dir)?;
            tracing::warn!(
                dir = %dir.display(),
                "created the audit checkpoint signing key: checkpoints signed before, if any, were signed by another key"
            );
            key
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            mode,
            sealer,
            audit_mac_key,
            signing_key,
        })
    }

    /// A BYOK key's material (never an XKS key's: see the blob format).
    fn open_material(
        &self,
        key_id: uuid::Uuid,
        handle: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        self.open_handle(BlobKind::KeyHandle, key_id, handle)
    }

    /// The material behind a handle of either kind, for what treats both
    /// alike (backups, listings of missing material): the handle's kind
    /// byte says which it is, and the seal still binds it to `key_id`.
    fn open_any_material(
        &self,
        key_id: uuid::Uuid,
        handle: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        let kind = if handle.first() == Some(&(BlobKind::XksKeyHandle as u8)) {
            BlobKind::XksKeyHandle
        } else {
            BlobKind::KeyHandle
        };
        self.open_handle(kind, key_id, handle)
    }

    fn open_handle(
        &self,
        kind: BlobKind,
        key_id: uuid::Uuid,
        handle: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        let material = self.sealer.open(kind, key_id.as_bytes(), handle)?;
        if material.len() != KEY_LEN {
            return Err(KeystoreError::Internal(format!(
                "the handle of key {key_id} holds {} bytes, not {KEY_LEN}",
                material.len()
            )));
        }
        Ok(material)
    }

    /// An XKS key's material, for one AES-GCM call.
    ///
    /// Opened from the handle at every call, not cached: opening is one
    /// AES-GCM decryption of 32 bytes under the already expanded master key,
    /// and a whole `xks_encrypt` of a data key, opening included, measured
    /// about 1 µs in a release build (`xks_cost_per_call` in tests/xks.rs
    /// prints it), against a budget of more than 500 µs a call at KMS's
    /// 1,800 calls a second. A cache would save nothing that matters and
    /// would keep every busy XKS key's material in memory for longer.
    fn open_xks_material(
        &self,
        key_id: uuid::Uuid,
        handle: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, KeystoreError> {
        if handle.first() == Some(&(BlobKind::KeyHandle as u8)) {
            return Err(KeystoreError::Internal(format!(
                "the keystore handle given for XKS key {key_id} is a BYOK key's handle: it does not serve AES-GCM for KMS"
            )));
        }
        let opened = self
            .open_handle(BlobKind::XksKeyHandle, key_id, handle)
            .map_err(|e| match e {
                KeystoreError::SealBroken => KeystoreError::KeyNotFound(format!(
                    "the keystore handle of XKS key {key_id} does not open under this software keystore's master key: it is another keystore's handle, or it was altered"
                )),
                other => other,
            })?;
        let mut material = Zeroizing::new([0u8; KEY_LEN]);
        material.copy_from_slice(&opened);
        Ok(material)
    }

    /// Seals an XKS key's material into its handle.
    fn seal_xks_material(
        &self,
        key_id: uuid::Uuid,
        material: &[u8; KEY_LEN],
    ) -> Result<GeneratedKey, KeystoreError> {
        let handle = self
            .sealer
            .seal(BlobKind::XksKeyHandle, key_id.as_bytes(), &material[..])?;
        Ok(GeneratedKey {
            handle,
            check_digits: check_digits_of(material),
        })
    }

    /// Wraps the audit MAC key under a transport public key, for a move into
    /// an HSM (`keyhold keystore migrate`): the HSM unwraps it, and the audit
    /// entries sealed here still verify there.
    pub fn wrap_audit_mac_key(
        &self,
        public_key_der: &[u8],
        algorithm: WrappingAlgorithm,
    ) -> Result<Vec<u8>, KeystoreError> {
        wrap::wrap_for_kms(&self.audit_mac_key[..], public_key_der, algorithm)
    }

    /// Wraps XKS key `key_id`'s material under a transport public key, for
    /// a move into an HSM (`keyhold keystore migrate`), which unwraps it
    /// into the key's XKS object. Only an XKS key's handle opens here: a
    /// BYOK key travels with [`Keystore::wrap_key`], so neither kind ever
    /// arrives in the token as the other.
    pub fn wrap_xks_key(
        &self,
        key_id: uuid::Uuid,
        handle: &[u8],
        public_key_der: &[u8],
        algorithm: WrappingAlgorithm,
    ) -> Result<Vec<u8>, KeystoreError> {
        let material = self.open_xks_material(key_id, handle)?;
        wrap::wrap_for_kms(&material[..], public_key_der, algorithm)
    }

    /// Removes the keystore in `dir` once nothing is sealed under its master
    /// key any more (the end of `keyhold keystore migrate`). The audit MAC
    /// file goes first: without it the directory no longer counts as a
    /// keystore, so an interrupted removal is never mistaken for one.
    pub fn remove(dir: &Path) -> Result<(), KeystoreError> {
        for name in [
            AUDIT_MAC_FILE,
            AUDIT_SIGNING_FILE,
            MASTER_CHECK_FILE,
            MASTER_SALT_FILE,
            MASTER_KEY_FILE,
        ] {
            match std::fs::remove_file(dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(KeystoreError::Unavailable(format!(
                        "cannot remove {}: {e}",
                        dir.join(name).display()
                    )));
                }
            }
        }
        // Only when empty: anything else in it is not ours to delete.
        let _ = std::fs::remove_dir(dir);
        Ok(())
    }

    /// The material behind a handle, for tests that unwrap what `wrap_key` made.
    #[cfg(test)]
    pub(crate) fn material_for_test(
        &self,
        key_id: uuid::Uuid,
        handle: &[u8],
    ) -> Zeroizing<Vec<u8>> {
        self.open_material(key_id, handle).unwrap()
    }
}

fn read_master_key_file(dir: &Path) -> Result<Zeroizing<[u8; MASTER_KEY_LEN]>, KeystoreError> {
    let path = dir.join(MASTER_KEY_FILE);
    let raw = files::read_small_file(&path, MAX_FILE_LEN, true)?;
    let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
    if raw.len() != MASTER_KEY_LEN {
        return Err(KeystoreError::Unavailable(format!(
            "{} holds {} bytes, not {MASTER_KEY_LEN}",
            path.display(),
            raw.len()
        )));
    }
    key.copy_from_slice(&raw);
    Ok(key)
}

fn open_master_check(sealer: &Sealer, dir: &Path) -> Result<(), KeystoreError> {
    let blob = files::read_small_file(&dir.join(MASTER_CHECK_FILE), MAX_FILE_LEN, false)?;
    let text = sealer.open(BlobKind::Internal, MASTER_CHECK_CONTEXT, &blob)?;
    if text.as_slice() == MASTER_CHECK_TEXT {
        Ok(())
    } else {
        Err(KeystoreError::SealBroken)
    }
}

fn open_audit_mac_key(
    sealer: &Sealer,
    dir: &Path,
) -> Result<Zeroizing<[u8; KEY_LEN]>, KeystoreError> {
    let opened = open_sealed_file(sealer, dir, AUDIT_MAC_FILE, AUDIT_MAC_CONTEXT)?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if opened.len() != KEY_LEN {
        return Err(KeystoreError::Unavailable(format!(
            "{} holds a key of the wrong length",
            dir.join(AUDIT_MAC_FILE).display()
        )));
    }
    key.copy_from_slice(&opened);
    Ok(key)
}

/// One of the keystore's own keys, sealed in file `name` under `context`.
fn open_sealed_file(
    sealer: &Sealer,
    dir: &Path,
    name: &str,
    context: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    let path = dir.join(name);
    let blob = files::read_small_file(&path, MAX_FILE_LEN, false)?;
    sealer
        .open(BlobKind::Internal, context, &blob)
        .map_err(|_| {
            KeystoreError::Unavailable(format!(
                "{} does not open under the master key: it was altered or belongs to another keystore",
                path.display()
            ))
        })
}

fn create_signing_key(sealer: &Sealer, dir: &Path) -> Result<SoftwareSigningKey, KeystoreError> {
    let key = SoftwareSigningKey::generate()?;
    write_signing_key(sealer, dir, &key)?;
    Ok(key)
}

fn write_signing_key(
    sealer: &Sealer,
    dir: &Path,
    key: &SoftwareSigningKey,
) -> Result<(), KeystoreError> {
    let sealed = sealer.seal(BlobKind::Internal, AUDIT_SIGNING_CONTEXT, key.pkcs8())?;
    files::write_new_file(dir, AUDIT_SIGNING_FILE, &sealed)
}

fn open_signing_key(sealer: &Sealer, dir: &Path) -> Result<SoftwareSigningKey, KeystoreError> {
    let pkcs8 = open_sealed_file(sealer, dir, AUDIT_SIGNING_FILE, AUDIT_SIGNING_CONTEXT)?;
    SoftwareSigningKey::from_pkcs8(&pkcs8)
}

/// Check digits: AES-256-ECB of the zero block under the key.
pub(crate) fn check_digits_of(key: &[u8; KEY_LEN]) -> CheckDigits {
    let cipher = Aes256::new(key.into());
    let mut block = [0u8; 16].into();
    cipher.encrypt_block(&mut block);
    CheckDigits::from_encrypted_zero_block(&block.into())
}

impl AuditMac for SoftKeystore {
    fn audit_mac(&self, data: &[u8]) -> Result<[u8; 32], KeystoreError> {
        hmac_sha256(&self.audit_mac_key[..], data)
    }

    /// An HMAC over a key in memory: microseconds, no device.
    fn may_block(&self) -> bool {
        false
    }
}

impl AuditSigner for SoftKeystore {
    fn audit_public_key(&self) -> Result<AuditPublicKey, KeystoreError> {
        self.signing_key.audit_public_key()
    }

    fn audit_sign(&self, message: &[u8]) -> Result<Vec<u8>, KeystoreError> {
        self.signing_key.audit_sign(message)
    }
}

impl Keystore for SoftKeystore {
    /// The keystore directory's name (not its path, which says more about
    /// the machine than KMS needs) and keyhold's version.
    fn describe(&self) -> KeystoreDescription {
        let name = self
            .dir
            .file_name()
            .map_or_else(|| "keystore".into(), |n| n.to_string_lossy());
        KeystoreDescription {
            id: format!("software:{name}"),
            model: format!("keyhold software keystore {}", env!("CARGO_PKG_VERSION")),
        }
    }

    fn xks_generate_key(&self, key_id: uuid::Uuid) -> Result<GeneratedKey, KeystoreError> {
        let mut material = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(&mut material[..])?;
        self.seal_xks_material(key_id, &material)
    }

    fn xks_encrypt(
        &self,
        key_id: uuid::Uuid,
        handle: &[u8],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<GcmCiphertext, KeystoreError> {
        let material = self.open_xks_material(key_id, handle)?;
        gcm::encrypt(&material, plaintext, aad)
    }

    fn xks_decrypt(
        &self,
        key_id: uuid::Uuid,
        handle: &[u8],
        sealed: &GcmCiphertext,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        let material = self.open_xks_material(key_id, handle)?;
        gcm::decrypt(&material, sealed, aad)
    }

    /// A key made for the check alone, dropped (and wiped) at its end; the
    /// master key is checked by [`Keystore::check`].
    fn xks_health_check(&self) -> Result<(), KeystoreError> {
        gcm::round_trip_throwaway_key()
    }

    fn kind(&self) -> KeystoreKind {
        KeystoreKind::Software
    }

    /// Re-reads the sealed files: catches a keystore directory that was removed,
    /// replaced or altered since `open`.
    fn check(&self) -> Result<(), KeystoreError> {
        open_master_check(&self.sealer, &self.dir).map_err(|e| match e {
            KeystoreError::SealBroken => KeystoreError::Unavailable(format!(
                "{} no longer opens under the master key",
                self.dir.join(MASTER_CHECK_FILE).display()
            )),
            other => other,
        })?;
        let on_disk = open_audit_mac_key(&self.sealer, &self.dir)?;
        if on_disk.as_slice() != self.audit_mac_key.as_slice() {
            return Err(KeystoreError::Unavailable(format!(
                "{} changed since the keystore was opened",
                self.dir.join(AUDIT_MAC_FILE).display()
            )));
        }
        Ok(())
    }

    fn generate_key(&self, key_id: uuid::Uuid) -> Result<GeneratedKey, KeystoreError> {
        let mut material = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(&mut material[..])?;
        let check_digits = check_digits_of(&material);
        let handle = self
            .sealer
            .seal(BlobKind::KeyHandle, key_id.as_bytes(), &material[..])?;
        Ok(GeneratedKey {
            handle,
            check_digits,
        })
    }

    fn wrap_key(
        &self,
        key_id: uuid::Uuid,
        handle: &[u8],
        wrapping_public_key_der: &[u8],
        algorithm: WrappingAlgorithm,
    ) -> Result<Vec<u8>, KeystoreError> {
        let material = self.open_material(key_id, handle)?;
        wrap::wrap_for_kms(&material, wrapping_public_key_der, algorithm)
    }

    /// The handle is the only copy of the material; deleting it from the store destroys the key.
    fn delete_key(&self, _key_id: uuid::Uuid, _handle: &[u8]) -> Result<(), KeystoreError> {
        Ok(())
    }

    fn wrapping_algorithms(&self) -> Result<Vec<WrappingAlgorithm>, KeystoreError> {
        Ok(vec![
            WrappingAlgorithm::RsaesOaepSha256,
            WrappingAlgorithm::RsaesOaepSha1,
            WrappingAlgorithm::RsaAesKeyWrapSha256,
        ])
    }

    /// A software handle carries the sealed material itself: missing is a
    /// handle that does not open (another keystore's, or altered). XKS
    /// keys' handles are answered too.
    fn missing_material(
        &self,
        keys: &[(uuid::Uuid, &[u8])],
    ) -> Result<Vec<uuid::Uuid>, KeystoreError> {
        Ok(keys
            .iter()
            .filter(|(id, handle)| self.open_any_material(*id, handle).is_err())
            .map(|(id, _)| *id)
            .collect())
    }

    fn seal_secret(&self, context: &[u8], secret: &[u8]) -> Result<Vec<u8>, KeystoreError> {
        self.sealer.seal(BlobKind::Secret, context, secret)
    }

    fn open_secret(
        &self,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        self.sealer.open(BlobKind::Secret, context, sealed)
    }

    fn backup_export<'a>(
        &'a self,
        wrap_key: &BackupWrapKey,
    ) -> Result<Box<dyn BackupExport + 'a>, KeystoreError> {
        Ok(self.start_backup_export(wrap_key))
    }

    fn backup_import<'a>(
        &'a self,
        wrap_key: &BackupWrapKey,
    ) -> Result<Box<dyn BackupImport + 'a>, KeystoreError> {
        Ok(self.start_backup_import(wrap_key))
    }
}
