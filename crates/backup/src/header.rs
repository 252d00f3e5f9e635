//! The cleartext header: what anyone holding the file may read, so they can
//! tell which backup it is and whom to ask for shares before opening it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keyhold_core::audit::AuditPublicKey;
use keyhold_core::backup::{CustodianSet, MAX_CUSTODIANS, MIN_THRESHOLD};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{BackupError, Result};
use crate::key::BackupKey;

pub const BACKUP_FORMAT: &str = "keyhold-backup";
pub const BACKUP_VERSION: u32 = 1;
/// Bytes of the STREAM nonce prefix for AES-256-GCM with a 32-bit counter
/// (12 - 4 - 1 last-block flag).
pub(crate) const STREAM_NONCE_LEN: usize = 7;

/// The file's first part, in the clear (JSON). Its exact bytes are bound
/// into the stream key and covered by the signed trailer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always [`BACKUP_FORMAT`].
    pub format: String,
    /// Always [`BACKUP_VERSION`] for files this version writes.
    pub version: u32,
    pub backup_id: Uuid,
    /// RFC 3339.
    pub created_at: String,
    /// `Admin1,Admin2` or `System`.
    pub created_by: String,
    pub node: String,
    /// `software` or `pkcs11`.
    pub keystore: String,
    /// `sqlite` or `postgres`.
    pub database: String,
    /// The newest migration of the database the snapshot was read from.
    pub schema_version: i64,
    pub threshold: u8,
    /// Custodian names, in share index order (share `i` is `custodians[i-1]`'s).
    pub custodians: Vec<String>,
    /// Hex, 16 bytes: [`BackupKey::key_check`].
    pub key_check: String,
    /// Base64 SubjectPublicKeyInfo DER of the audit signing key that signs the trailer.
    pub audit_public_key: String,
    /// Hex, 7 bytes: the STREAM nonce prefix.
    pub stream_nonce: String,
}

/// What the caller knows about a new backup; [`Header::new`] adds the rest.
#[derive(Clone, Debug)]
pub struct HeaderInfo {
    pub backup_id: Uuid,
    pub created_at: String,
    pub created_by: String,
    pub node: String,
    pub keystore: String,
    pub database: String,
    pub schema_version: i64,
}

impl Header {
    /// The header of a new backup under `key`, split among `custodians`,
    /// signed at the end by the holder of `audit_public_key`.
    pub fn new(
        info: HeaderInfo,
        custodians: &CustodianSet,
        audit_public_key: &AuditPublicKey,
        key: &BackupKey,
    ) -> Result<Self> {
        let mut nonce = [0u8; STREAM_NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| {
            BackupError::Invalid(format!(
                "the operating system gave no random bytes for the stream nonce: {e}"
            ))
        })?;
        let header = Self {
            format: BACKUP_FORMAT.into(),
            version: BACKUP_VERSION,
            backup_id: info.backup_id,
            created_at: info.created_at,
            created_by: info.created_by,
            node: info.node,
            keystore: info.keystore,
            database: info.database,
            schema_version: info.schema_version,
            threshold: custodians.threshold,
            custodians: custodians.names(),
            key_check: key.key_check(),
            audit_public_key: BASE64.encode(audit_public_key.to_spki_der()),
            stream_nonce: hex::encode(nonce),
        };
        header.check()?;
        Ok(header)
    }

    /// The audit signing key the trailer must verify under.
    pub fn audit_public_key(&self) -> Result<AuditPublicKey> {
        let der = BASE64.decode(&self.audit_public_key).map_err(|_| {
            BackupError::NotABackup("the header's audit_public_key is not base64".into())
        })?;
        AuditPublicKey::from_spki_der(&der).map_err(|e| {
            BackupError::NotABackup(format!(
                "the header's audit_public_key is not a P-256 public key ({e})"
            ))
        })
    }

    pub(crate) fn stream_nonce(&self) -> Result<[u8; STREAM_NONCE_LEN]> {
        hex::decode(&self.stream_nonce)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                BackupError::NotABackup(format!(
                    "the header's stream_nonce is not {STREAM_NONCE_LEN} bytes of hex"
                ))
            })
    }

    /// Refuses a header this version cannot have written.
    pub(crate) fn check(&self) -> Result<()> {
        if self.format != BACKUP_FORMAT {
            return Err(BackupError::NotABackup(format!(
                "its format is not {BACKUP_FORMAT}"
            )));
        }
        if self.version != BACKUP_VERSION {
            return Err(BackupError::NotABackup(format!(
                "it is format version {}, this keyhold reads version {BACKUP_VERSION}: restore with a keyhold release that knows it",
                self.version
            )));
        }
        let count = self.custodians.len();
        if self.threshold < MIN_THRESHOLD
            || usize::from(self.threshold) > count
            || count > MAX_CUSTODIANS
        {
            return Err(BackupError::NotABackup(format!(
                "its threshold {} of {count} custodians is impossible",
                self.threshold
            )));
        }
        let check_ok =
            self.key_check.len() == 32 && self.key_check.bytes().all(|b| b.is_ascii_hexdigit());
        if !check_ok {
            return Err(BackupError::NotABackup(
                "the header's key_check is not 16 bytes of hex".into(),
            ));
        }
        self.stream_nonce()?;
        self.audit_public_key()?;
        Ok(())
    }

    /// Whether `key` is this backup's key.
    pub fn matches(&self, key: &BackupKey) -> bool {
        self.key_check.eq_ignore_ascii_case(&key.key_check())
    }
}
