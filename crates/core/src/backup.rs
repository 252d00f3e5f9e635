//! Backups: what a backup is made of, who may open it, and the ports the
//! keystore and the store offer to make and restore one.
//!
//! A backup is encrypted under a fresh 256-bit backup key. The key is never
//! stored: it is split into shares (M of N, Shamir), each encrypted for one
//! custodian. Key material travels in it wrapped under a key derived from
//! the backup key ([`BackupWrapKey`], AES key wrap with padding, RFC 5649),
//! so a PKCS#11 token wraps it out and unwraps it in without the material
//! ever being in the clear outside a keystore.
//!
//! The file format, the sharing and the custodians' encryption live in the
//! `keyhold-backup` crate; this module holds the domain's side.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::clock::Timestamp;
use crate::error::{InvalidInput, KeystoreError, StoreError};
use crate::ports::GeneratedKey;

/// Fewest custodians whose shares open a backup: one custodian alone must
/// never be able to.
pub const MIN_THRESHOLD: u8 = 2;
/// Most custodians one backup's key is split among.
pub const MAX_CUSTODIANS: usize = 16;

/// The key a backup's key material is wrapped under (RFC 5649), derived
/// from the backup key. Handed to a keystore for the length of a backup or
/// a restore; wiped on drop, never printed.
pub struct BackupWrapKey(Zeroizing<[u8; 32]>);

impl BackupWrapKey {
    pub fn new(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for BackupWrapKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackupWrapKey(<redacted>)")
    }
}

/// The audit keys, wrapped under a [`BackupWrapKey`] (RFC 5649): the MAC
/// key's 32 bytes, the checkpoint signing key as PKCS#8 (P-256, with its
/// public key), and that public key as SubjectPublicKeyInfo DER in the
/// clear (a token needs it to make the public key object).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedAuditKeys {
    #[serde(with = "crate::backup::b64")]
    pub mac: Vec<u8>,
    #[serde(with = "crate::backup::b64")]
    pub signing: Vec<u8>,
    #[serde(with = "crate::backup::b64")]
    pub signing_public: Vec<u8>,
}

/// A keystore's side of making a backup: material and audit keys wrapped
/// under one wrap key. Dropping it removes the wrap key from the keystore.
pub trait BackupExport {
    /// The key's material wrapped under the wrap key (RFC 5649).
    fn export_key(&self, key_id: uuid::Uuid, handle: &[u8]) -> Result<Vec<u8>, KeystoreError>;
    /// Both audit keys wrapped under the wrap key.
    fn export_audit_keys(&self) -> Result<WrappedAuditKeys, KeystoreError>;
}

/// A keystore's side of a restore: material unwrapped into the keystore.
pub trait BackupImport {
    /// Unwraps `wrapped` into the keystore as key `key_id`'s material and
    /// returns its new handle and check digits. Repeatable: material that
    /// is there already (an earlier, interrupted restore) is found, not
    /// made twice.
    fn import_key(&self, key_id: uuid::Uuid, wrapped: &[u8])
    -> Result<GeneratedKey, KeystoreError>;
    /// The same for an XKS key: its material made usable for AES-GCM in
    /// the keystore, as [`crate::ports::Keystore::xks_generate_key`] makes it.
    fn import_xks_key(
        &self,
        key_id: uuid::Uuid,
        wrapped: &[u8],
    ) -> Result<GeneratedKey, KeystoreError>;
}

/// Names a custodian: who holds one share of every backup's key.
pub use crate::names::CustodianName;

/// Argon2id parameters that turn a custodian's passphrase into their
/// private key (the public key is what keyhold keeps). No secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassphraseKdf {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// 16 bytes, hex.
    pub salt: String,
}

/// One custodian: an X25519 public key their share is encrypted to, made
/// either by them (`keyhold backup custodian-key`) or from their
/// passphrase (then `kdf` says how).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Custodian {
    pub name: CustodianName,
    /// 32 bytes, hex.
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<PassphraseKdf>,
}

/// Who holds a backup's key: N custodians, any M of whom open it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodianSet {
    pub threshold: u8,
    pub custodians: Vec<Custodian>,
}

impl CustodianSet {
    /// A set whose threshold is at least [`MIN_THRESHOLD`] and at most the
    /// number of custodians, of at most [`MAX_CUSTODIANS`] distinct names
    /// and keys, each key 32 bytes of hex.
    pub fn new(threshold: u8, custodians: Vec<Custodian>) -> Result<Self, InvalidInput> {
        let count = custodians.len();
        if count > MAX_CUSTODIANS {
            return Err(InvalidInput::new(
                "custodians",
                format!(
                    "{count} custodians given: a backup key is split among at most {MAX_CUSTODIANS}"
                ),
            ));
        }
        if threshold < MIN_THRESHOLD || usize::from(threshold) > count {
            return Err(InvalidInput::new(
                "threshold",
                format!(
                    "threshold {threshold} with {count} custodian(s): the threshold must be at least {MIN_THRESHOLD} (one custodian alone must not open a backup) and at most the number of custodians"
                ),
            ));
        }
        for (i, custodian) in custodians.iter().enumerate() {
            let key_ok = custodian.public_key.len() == 64
                && custodian.public_key.bytes().all(|b| b.is_ascii_hexdigit());
            if !key_ok {
                return Err(InvalidInput::new(
                    "public_key",
                    format!(
                        "custodian '{}': the public key must be 32 bytes as 64 hex digits, as `keyhold backup custodian-key` prints it",
                        custodian.name
                    ),
                ));
            }
            if let Some(kdf) = &custodian.kdf
                && !(kdf.salt.len() == 32 && kdf.salt.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(InvalidInput::new(
                    "kdf",
                    format!(
                        "custodian '{}': the passphrase salt must be 16 bytes as 32 hex digits",
                        custodian.name
                    ),
                ));
            }
            for other in &custodians[..i] {
                if other.name == custodian.name {
                    return Err(InvalidInput::new(
                        "custodians",
                        format!("custodian '{}' is named twice", custodian.name),
                    ));
                }
                if other.public_key.eq_ignore_ascii_case(&custodian.public_key) {
                    return Err(InvalidInput::new(
                        "custodians",
                        format!(
                            "custodians '{}' and '{}' have the same key: each share must need its own custodian",
                            other.name, custodian.name
                        ),
                    ));
                }
            }
        }
        Ok(Self {
            threshold,
            custodians,
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.custodians.iter().map(|c| c.name.to_string()).collect()
    }
}

/// What started a backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupTrigger {
    /// Officers asked for it (API, CLI or web UI).
    Manual,
    /// The schedule (`backup_every_hours`).
    Scheduled,
}

impl BackupTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Scheduled => "scheduled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "manual" => Some(Self::Manual),
            "scheduled" => Some(Self::Scheduled),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupStatus {
    Running,
    Succeeded,
    Failed,
}

impl BackupStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "running" => Some(Self::Running),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One backup keyhold made, as the `backups` table keeps it. The shares
/// are kept too (each encrypted for its custodian, useless to anyone
/// else), so they can be handed out again; the file is in the backup
/// directory under `file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupRecord {
    pub id: uuid::Uuid,
    pub trigger: BackupTrigger,
    /// `Admin1,Admin2` or `System`.
    pub initiated_by: String,
    pub status: BackupStatus,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// The file's name in the backup directory (no path).
    pub file: String,
    /// Bytes, once finished.
    pub size: Option<u64>,
    /// SHA-256 of the whole file, hex, once finished.
    pub sha256: Option<String>,
    pub keys: Option<u64>,
    pub threshold: u8,
    pub custodians: Vec<String>,
    /// The share files' text, one per custodian in `custodians` order.
    pub shares: Vec<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The node that made it.
    pub node: String,
}

/// A signed file of audit entries moved out of the live log
/// (`audit archive`); the live entries stay, marked archived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditArchive {
    pub id: uuid::Uuid,
    /// The file's name in the archive directory (no path).
    pub file: String,
    pub first_seq: i64,
    pub last_seq: i64,
    pub created_at: Timestamp,
    /// SHA-256 of the whole file, hex.
    pub sha256: String,
}

// Which columns of the snapshot hold what the old keystore sealed: the
// backup replaces them with material wrapped under the backup key, the
// restore with what the new keystore makes of it.

/// The table of keys; `id` is the key's id (TEXT UUID).
pub const KEYS_TABLE: &str = "keys";
pub const KEY_ID_COLUMN: &str = "id";
/// The keystore's handle of the key's material.
pub const KEY_HANDLE_COLUMN: &str = "keystore_handle";
/// The table of cloud credentials; its secret is sealed with the
/// credential id's 16 bytes as context.
pub const CREDENTIALS_TABLE: &str = "credentials";
pub const CREDENTIAL_ID_COLUMN: &str = "id";
pub const CREDENTIAL_SECRET_COLUMN: &str = "sealed_secret";
/// The table of XKS keys: the same `id`, `keystore_handle` and
/// `check_digits` columns as [`KEYS_TABLE`]; their material is imported
/// with [`BackupImport::import_xks_key`].
pub const XKS_KEYS_TABLE: &str = "xks_keys";
/// The table of XKS credentials: `id` and `sealed_secret`, sealed under
/// [`crate::xks::secret_context`] of the id.
pub const XKS_CREDENTIALS_TABLE: &str = "xks_credentials";

/// One value of a row in a snapshot, independent of the database it was
/// read from (SQLite booleans are integers, PostgreSQL's are not: the
/// loader converts by the target column's type).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Bytes(#[serde(with = "crate::backup::b64")] Vec<u8>),
    Bool(bool),
}

/// What a consistent snapshot of the database is made of, in order: each
/// table, then its rows, tables in an order the loader can insert them in
/// (referenced tables first).
#[derive(Clone, Debug, PartialEq)]
pub enum SnapshotItem {
    Table { name: String, columns: Vec<String> },
    Row(Vec<SnapshotValue>),
}

/// Where [`crate::ports::Store::snapshot`] sends what it reads, one item at
/// a time (so a snapshot's memory does not grow with the database).
#[async_trait]
pub trait SnapshotSink: Send {
    async fn item(&mut self, item: SnapshotItem) -> Result<(), StoreError>;
}

/// What a snapshot read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The newest migration applied to the database (its version number).
    pub schema_version: i64,
    /// Rows per table, in the order they were sent.
    pub rows: Vec<(String, u64)>,
}

/// Base64 (standard, padded) for byte fields in JSON.
pub mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custodian(name: &str, key_byte: u8) -> Custodian {
        Custodian {
            name: CustodianName::parse(name).unwrap(),
            public_key: hex::encode([key_byte; 32]),
            kdf: None,
        }
    }

    #[test]
    fn a_set_needs_two_of_distinct_custodians() {
        let three = || {
            vec![
                custodian("alice", 1),
                custodian("bob", 2),
                custodian("carol", 3),
            ]
        };
        assert!(CustodianSet::new(2, three()).is_ok());
        assert!(CustodianSet::new(3, three()).is_ok());
        assert!(
            CustodianSet::new(1, three()).is_err(),
            "one custodian alone"
        );
        assert!(
            CustodianSet::new(4, three()).is_err(),
            "more than there are"
        );
        assert!(CustodianSet::new(2, vec![custodian("a", 1), custodian("a", 2)]).is_err());
        assert!(CustodianSet::new(2, vec![custodian("a", 1), custodian("b", 1)]).is_err());
        let mut bad = three();
        bad[0].public_key = "zz".into();
        assert!(CustodianSet::new(2, bad).is_err());
        let many: Vec<_> = (0..=MAX_CUSTODIANS as u8)
            .map(|i| custodian(&format!("c{i}"), i))
            .collect();
        assert!(CustodianSet::new(2, many).is_err());
    }

    #[test]
    fn snapshot_values_round_trip_through_json() {
        let values = vec![
            SnapshotValue::Null,
            SnapshotValue::Integer(-7),
            SnapshotValue::Real(1.5),
            SnapshotValue::Text("x".into()),
            SnapshotValue::Bytes(vec![0, 255]),
            SnapshotValue::Bool(true),
        ];
        let json = serde_json::to_string(&values).unwrap();
        let back: Vec<SnapshotValue> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, values);
    }
}
