//! Share files: one custodian's share of a backup key, encrypted to their
//! key with HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, AES-256-GCM). Text (JSON), so it can be mailed, printed or
//! kept in a password manager.
//!
//! The AAD binds the backup id, the share's index, the threshold, the
//! number of shares and the custodian's name: a share cannot be relabelled
//! as another backup's or another custodian's without failing to decrypt.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use keyhold_core::backup::{MAX_CUSTODIANS, MIN_THRESHOLD, PassphraseKdf};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::custodian::{CustodianSecret, Kem, PublicKey};
use crate::error::{BackupError, Result};
use crate::key::KEY_LEN;

pub const SHARE_FORMAT: &str = "keyhold-backup-share";
pub const SHARE_VERSION: u32 = 1;
type Aead = hpke::aead::AesGcm256;
type Kdf = hpke::kdf::HkdfSha256;
const HPKE_INFO: &[u8] = b"keyhold backup share v1";
/// A Shamir share of a 32-byte key: its x coordinate and 32 y bytes.
pub(crate) const SHARE_LEN: usize = 1 + KEY_LEN;
const TAG_LEN: usize = 16;
const ENC_LEN: usize = 32;
/// Far above a real share file (under 1 KiB): parsing stops before
/// allocating for a hostile one.
const MAX_TEXT_LEN: usize = 16 * 1024;

/// A share file as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareFile {
    pub format: String,
    pub version: u32,
    pub backup_id: Uuid,
    pub custodian: String,
    /// 1-based; share `index` belongs to the header's `custodians[index-1]`.
    pub index: u8,
    pub threshold: u8,
    pub count: u8,
    /// [`crate::key_fingerprint`] of the custodian key it is encrypted to.
    pub key_fingerprint: String,
    /// Present when the custodian's key comes from a passphrase: how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<PassphraseKdf>,
    /// HPKE encapsulated key, hex.
    pub enc: String,
    /// HPKE ciphertext of the share, base64.
    pub ciphertext: String,
}

/// A share opened by its custodian, ready to combine. Wiped on drop,
/// never printed.
#[derive(Clone)]
pub struct Share {
    pub(crate) backup_id: Uuid,
    pub(crate) custodian: String,
    pub(crate) index: u8,
    pub(crate) threshold: u8,
    pub(crate) count: u8,
    pub(crate) bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share")
            .field("backup_id", &self.backup_id)
            .field("custodian", &self.custodian)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Share {
    pub fn backup_id(&self) -> Uuid {
        self.backup_id
    }

    pub fn custodian(&self) -> &str {
        &self.custodian
    }

    pub fn index(&self) -> u8 {
        self.index
    }
}

fn aad(backup_id: Uuid, index: u8, threshold: u8, count: u8, custodian: &str) -> Vec<u8> {
    // The name last: it is the only field of variable length.
    format!("keyhold-backup-share-v1|{backup_id}|{index}|{threshold}|{count}|{custodian}")
        .into_bytes()
}

pub(crate) struct Recipient<'a> {
    pub name: &'a str,
    pub public_key: &'a PublicKey,
    pub key_fingerprint: String,
    pub kdf: Option<PassphraseKdf>,
}

impl ShareFile {
    /// Encrypts `share` (x || y) for `to`.
    pub(crate) fn seal(
        backup_id: Uuid,
        index: u8,
        threshold: u8,
        count: u8,
        to: Recipient<'_>,
        share: &[u8],
    ) -> Result<Self> {
        let aad = aad(backup_id, index, threshold, count, to.name);
        let (enc, ciphertext) = hpke::single_shot_seal::<Aead, Kdf, Kem, _>(
            &OpModeS::Base,
            to.public_key,
            HPKE_INFO,
            share,
            &aad,
            &mut rand_core::OsRng,
        )
        .map_err(|e| {
            BackupError::Custodian(format!(
                "cannot encrypt a share for custodian '{}' ({e}): enrol a key made by `keyhold backup custodian-key`",
                to.name
            ))
        })?;
        Ok(Self {
            format: SHARE_FORMAT.into(),
            version: SHARE_VERSION,
            backup_id,
            custodian: to.name.into(),
            index,
            threshold,
            count,
            key_fingerprint: to.key_fingerprint,
            kdf: to.kdf,
            enc: hex::encode(enc.to_bytes()),
            ciphertext: BASE64.encode(ciphertext),
        })
    }

    /// The file's text (pretty JSON and a newline).
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// A share file's text, checked for shape (not yet opened).
    pub fn parse(text: &str) -> Result<Self> {
        if text.len() > MAX_TEXT_LEN {
            return Err(BackupError::ShareFile(format!(
                "it is {} bytes; a share file is under {MAX_TEXT_LEN}",
                text.len()
            )));
        }
        let file: Self = serde_json::from_str(text).map_err(|e| {
            BackupError::ShareFile(format!("it is not the JSON `keyhold backup` wrote ({e})"))
        })?;
        file.check()?;
        Ok(file)
    }

    fn check(&self) -> Result<()> {
        let bad = |why: String| Err(BackupError::ShareFile(why));
        if self.format != SHARE_FORMAT {
            return bad(format!("its format is not {SHARE_FORMAT}"));
        }
        if self.version != SHARE_VERSION {
            return bad(format!(
                "it is version {}, this keyhold reads version {SHARE_VERSION}",
                self.version
            ));
        }
        let count = usize::from(self.count);
        if self.threshold < MIN_THRESHOLD
            || self.threshold > self.count
            || count > MAX_CUSTODIANS
            || self.index == 0
            || self.index > self.count
        {
            return bad(format!(
                "share {} of {} with threshold {} is impossible",
                self.index, self.count, self.threshold
            ));
        }
        if self.custodian.is_empty() || self.custodian.chars().any(char::is_control) {
            return bad("its custodian name is empty or holds control characters".into());
        }
        if self.key_fingerprint.len() != 32
            || !self.key_fingerprint.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return bad("its key_fingerprint is not 16 bytes of hex".into());
        }
        self.enc_bytes()?;
        self.ciphertext_bytes()?;
        Ok(())
    }

    fn enc_bytes(&self) -> Result<<Kem as hpke::Kem>::EncappedKey> {
        hex::decode(&self.enc)
            .ok()
            .filter(|b| b.len() == ENC_LEN)
            .and_then(|b| <Kem as hpke::Kem>::EncappedKey::from_bytes(&b).ok())
            .ok_or_else(|| BackupError::ShareFile(format!("its enc is not {ENC_LEN} bytes of hex")))
    }

    fn ciphertext_bytes(&self) -> Result<Vec<u8>> {
        BASE64
            .decode(&self.ciphertext)
            .ok()
            .filter(|c| c.len() == SHARE_LEN + TAG_LEN)
            .ok_or_else(|| {
                BackupError::ShareFile(format!(
                    "its ciphertext is not {} bytes of base64",
                    SHARE_LEN + TAG_LEN
                ))
            })
    }

    /// Decrypts the share with its custodian's key.
    pub fn open(&self, key: &CustodianSecret) -> Result<Share> {
        self.check()?;
        if !key
            .fingerprint()
            .eq_ignore_ascii_case(&self.key_fingerprint)
        {
            return Err(BackupError::ShareFile(match &self.kdf {
                Some(_) => format!(
                    "the passphrase is wrong (or this is not your share: it is custodian '{}''s)",
                    self.custodian
                ),
                None => format!(
                    "this share is not for that key: it is custodian '{}''s, for key {}, and the key given is {}; use that custodian's key file",
                    self.custodian,
                    self.key_fingerprint,
                    key.fingerprint()
                ),
            }));
        }
        let aad = aad(
            self.backup_id,
            self.index,
            self.threshold,
            self.count,
            &self.custodian,
        );
        let bytes = Zeroizing::new(
            hpke::single_shot_open::<Aead, Kdf, Kem>(
                &OpModeR::Base,
                key.private(),
                &self.enc_bytes()?,
                HPKE_INFO,
                &self.ciphertext_bytes()?,
                &aad,
            )
            .map_err(|_| {
                BackupError::ShareFile(
                    "it does not decrypt: the file was altered or damaged; ask for another copy of this share".into(),
                )
            })?,
        );
        if bytes.len() != SHARE_LEN || bytes.first() != Some(&self.index) {
            return Err(BackupError::ShareFile(
                "it decrypts, but not to share number it claims: it was made wrongly".into(),
            ));
        }
        Ok(Share {
            backup_id: self.backup_id,
            custodian: self.custodian.clone(),
            index: self.index,
            threshold: self.threshold,
            count: self.count,
            bytes,
        })
    }
}
