//! What the encrypted stream holds: one record per frame.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keyhold_core::backup::{SnapshotItem, SnapshotValue, WrappedAuditKeys};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;
use zeroize::Zeroizing;

/// One record of a backup, in the order written:
/// `AuditKeys`, then each table and its rows (a key's `KeyMaterial` right
/// before its row, a credential's `CredentialSecret` right before its row),
/// then `AuditArchive` files, then `End`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
// Externally tagged: serde reads it without buffering the content, so a
// secret is not copied into an intermediate value that is never wiped.
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    Table {
        name: String,
        columns: Vec<String>,
    },
    Row {
        values: Vec<SnapshotValue>,
    },
    /// A key's material wrapped under the backup's wrap key (RFC 5649).
    KeyMaterial {
        key_id: Uuid,
        #[serde(with = "keyhold_core::backup::b64")]
        wrapped: Vec<u8>,
    },
    /// A cloud credential's secret in the clear (the stream encrypts it);
    /// the restore seals it again with the new keystore.
    CredentialSecret {
        id: Uuid,
        secret: SecretBytes,
    },
    AuditKeys(WrappedAuditKeys),
    /// An audit archive file, byte for byte.
    AuditArchive {
        file: String,
        #[serde(with = "keyhold_core::backup::b64")]
        bytes: Vec<u8>,
    },
    /// The last record: how many came before it. A stream without it was cut short.
    End {
        records: u64,
    },
}

impl From<SnapshotItem> for Record {
    fn from(item: SnapshotItem) -> Self {
        match item {
            SnapshotItem::Table { name, columns } => Self::Table { name, columns },
            SnapshotItem::Row(values) => Self::Row { values },
        }
    }
}

/// Secret bytes: wiped on drop, never printed, base64 in JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(BASE64.encode(&*self.0));
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        BASE64
            .decode(text.as_bytes())
            .map(|b| Self(Zeroizing::new(b)))
            .map_err(|_| serde::de::Error::custom("the secret is not base64"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_secrets_stay_hidden() {
        let records = vec![
            Record::Table {
                name: "keys".into(),
                columns: vec!["id".into()],
            },
            Record::Row {
                values: vec![SnapshotValue::Null, SnapshotValue::Bytes(vec![1, 2])],
            },
            Record::KeyMaterial {
                key_id: Uuid::nil(),
                wrapped: vec![9; 40],
            },
            Record::CredentialSecret {
                id: Uuid::nil(),
                secret: b"hunter2".to_vec().into(),
            },
            Record::AuditKeys(WrappedAuditKeys {
                mac: vec![1],
                signing: vec![2],
                signing_public: vec![3],
            }),
            Record::AuditArchive {
                file: "a.jsonl".into(),
                bytes: b"x\n".to_vec(),
            },
            Record::End { records: 6 },
        ];
        for record in records {
            let json = serde_json::to_vec(&record).unwrap();
            assert_eq!(serde_json::from_slice::<Record>(&json).unwrap(), record);
            assert!(!format!("{record:?}").contains("hunter2"));
        }
    }
}
