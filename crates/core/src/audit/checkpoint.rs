//! Signed checkpoints of the audit chain's head.
//!
//! Rules:
//! - A checkpoint says "entry SEQ of this log had hash H at TIME". It is signed
//!   (ECDSA P-256 over SHA-256) by a key the keystore holds: in the token with
//!   PKCS#11, sealed under the master key with the software keystore.
//! - Because each entry's hash covers the one before it, a checkpoint pins
//!   every entry up to SEQ. A log that ends before SEQ, or holds another hash
//!   there, was cut short or rewritten; an empty log always fails.
//! - Checking needs only the public key: an auditor verifies an exported log
//!   and the checkpoints shipped elsewhere without the audit MAC key.
//! - The signed bytes name the signing key's fingerprint, so a checkpoint
//!   cannot be passed off as another key's.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ChainHead;
use crate::clock::{Timestamp, format_timestamp};
use crate::error::KeystoreError;

/// The `format` of every checkpoint this version writes, and the domain
/// separator of the signed bytes.
pub const CHECKPOINT_FORMAT: &str = "keyhold-audit-checkpoint-v1";

/// SubjectPublicKeyInfo DER of a P-256 key up to its 65-byte point:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING }.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// An uncompressed SEC1 point: 0x04 || x (32) || y (32).
const P256_POINT_LEN: usize = 65;
/// r || s, 32 bytes each.
pub const SIGNATURE_LEN: usize = 64;
const PEM_BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
const PEM_END: &str = "-----END PUBLIC KEY-----";

/// Signs checkpoints. Implemented by the keystore, which holds the private key.
pub trait AuditSigner: Send + Sync {
    /// The public half of the checkpoint signing key.
    fn audit_public_key(&self) -> Result<AuditPublicKey, KeystoreError>;
    /// ECDSA P-256 over SHA-256 of `message`, as r || s (64 bytes).
    fn audit_sign(&self, message: &[u8]) -> Result<Vec<u8>, KeystoreError>;
}

/// Why a checkpoint or a public key is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a keyhold audit checkpoint: {0}")]
    Malformed(String),
    #[error(
        "not a P-256 public key in PEM (-----BEGIN PUBLIC KEY-----, as `keyhold audit public-key` prints it): {0}"
    )]
    PublicKey(String),
    #[error(
        "the checkpoint of entry {seq} is signed by another key (fingerprint {found}), not by {expected}: verify it with that key's public key"
    )]
    OtherKey {
        seq: i64,
        found: String,
        expected: String,
    },
    #[error(
        "the checkpoint of entry {seq} does not verify: its signature does not match its content, so it was altered or forged"
    )]
    BadSignature { seq: i64 },
}

/// The public half of the checkpoint signing key (P-256).
#[derive(Clone, PartialEq, Eq)]
pub struct AuditPublicKey {
    point: [u8; P256_POINT_LEN],
}

impl fmt::Debug for AuditPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditPublicKey({})", self.fingerprint_hex())
    }
}

impl AuditPublicKey {
    /// From an uncompressed SEC1 point (what a PKCS#11 token's `CKA_EC_POINT`
    /// holds inside its DER OCTET STRING, and what ring returns).
    pub fn from_sec1(point: &[u8]) -> Result<Self, CheckpointError> {
        let point: [u8; P256_POINT_LEN] = point.try_into().map_err(|_| {
            CheckpointError::PublicKey(format!(
                "an uncompressed P-256 point has {P256_POINT_LEN} bytes, not {}",
                point.len()
            ))
        })?;
        if point[0] != 0x04 {
            return Err(CheckpointError::PublicKey(
                "the point is not in uncompressed form (0x04)".into(),
            ));
        }
        Ok(Self { point })
    }

    pub fn to_spki_der(&self) -> Vec<u8> {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        der
    }

    pub fn from_spki_der(der: &[u8]) -> Result<Self, CheckpointError> {
        match der.strip_prefix(&P256_SPKI_PREFIX[..]) {
            Some(point) => Self::from_sec1(point),
            None => Err(CheckpointError::PublicKey(
                "the key is not an EC P-256 SubjectPublicKeyInfo".into(),
            )),
        }
    }

    /// PEM, as OpenSSL reads it (`openssl pkey -pubin -in key.pem -text`).
    pub fn to_pem(&self) -> String {
        let body = BASE64.encode(self.to_spki_der());
        let mut pem = String::from(PEM_BEGIN);
        pem.push('\n');
        for line in body.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str(PEM_END);
        pem.push('\n');
        pem
    }

    pub fn from_pem(text: &str) -> Result<Self, CheckpointError> {
        let text = text.trim();
        let body = text
            .strip_prefix(PEM_BEGIN)
            .and_then(|rest| rest.strip_suffix(PEM_END))
            .ok_or_else(|| {
                CheckpointError::PublicKey(format!(
                    "it must start with {PEM_BEGIN} and end with {PEM_END}"
                ))
            })?;
        let body: String = body.split_whitespace().collect();
        let der = BASE64
            .decode(body)
            .map_err(|e| CheckpointError::PublicKey(format!("its base64 does not decode: {e}")))?;
        Self::from_spki_der(&der)
    }

    /// SHA-256 of the SubjectPublicKeyInfo DER: the key's name in checkpoints.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.to_spki_der()).into()
    }

    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint())
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            &self.point[..],
        )
        .verify(message, signature)
        .is_ok()
    }
}

/// A checkpoint signing key held in memory, for keystores without a token
/// (the software keystore seals its PKCS#8 under the master key).
pub struct SoftwareSigningKey {
    pair: ring::signature::EcdsaKeyPair,
    pkcs8: zeroize::Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SoftwareSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftwareSigningKey").finish_non_exhaustive()
    }
}

impl SoftwareSigningKey {
    pub fn generate() -> Result<Self, KeystoreError> {
        let rng = ring::rand::SystemRandom::new();
        let document = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .map_err(|_| KeystoreError::Internal("cannot generate a P-256 key".into()))?;
        Self::from_pkcs8(document.as_ref())
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, KeystoreError> {
        let rng = ring::rand::SystemRandom::new();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &rng,
        )
        .map_err(|e| KeystoreError::Internal(format!("not a P-256 PKCS#8 key: {e}")))?;
        Ok(Self {
            pair,
            pkcs8: zeroize::Zeroizing::new(pkcs8.to_vec()),
        })
    }

    /// The private key as PKCS#8 DER, for sealing.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }
}

impl AuditSigner for SoftwareSigningKey {
    fn audit_public_key(&self) -> Result<AuditPublicKey, KeystoreError> {
        use ring::signature::KeyPair as _;
        AuditPublicKey::from_sec1(self.pair.public_key().as_ref())
            .map_err(|e| KeystoreError::Internal(e.to_string()))
    }

    fn audit_sign(&self, message: &[u8]) -> Result<Vec<u8>, KeystoreError> {
        let rng = ring::rand::SystemRandom::new();
        self.pair
            .sign(&rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| KeystoreError::Internal("ECDSA signing failed".into()))
    }
}

/// A signed statement of the chain's head: entry `seq` had hash `hash` at `time`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CheckpointJson", into = "CheckpointJson")]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: [u8; 32],
    /// When it was signed, RFC 3339 exactly as signed.
    pub time: String,
    /// Fingerprint of the signing key ([`AuditPublicKey::fingerprint`]).
    pub key: [u8; 32],
    pub signature: Vec<u8>,
}

/// A checkpoint as written: one JSON object per line of a checkpoint file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointJson {
    format: String,
    seq: i64,
    /// Hex SHA-256 of the entry (the `hash` of the exported entry).
    hash: String,
    time: String,
    /// Hex fingerprint of the signing key.
    key: String,
    /// Base64 of r || s.
    signature: String,
}

impl From<Checkpoint> for CheckpointJson {
    fn from(c: Checkpoint) -> Self {
        Self {
            format: CHECKPOINT_FORMAT.to_owned(),
            seq: c.seq,
            hash: hex::encode(c.hash),
            time: c.time,
            key: hex::encode(c.key),
            signature: BASE64.encode(&c.signature),
        }
    }
}

impl TryFrom<CheckpointJson> for Checkpoint {
    type Error = CheckpointError;

    fn try_from(j: CheckpointJson) -> Result<Self, Self::Error> {
        if j.format != CHECKPOINT_FORMAT {
            return Err(CheckpointError::Malformed(format!(
                "its format is not {CHECKPOINT_FORMAT}"
            )));
        }
        if j.seq < 1 {
            return Err(CheckpointError::Malformed(
                "its seq must be 1 or more".into(),
            ));
        }
        let bytes32 = |field: &str, text: &str| -> Result<[u8; 32], CheckpointError> {
            hex::decode(text)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    CheckpointError::Malformed(format!("its {field} is not 64 hex digits"))
                })
        };
        let signature = BASE64
            .decode(&j.signature)
            .ok()
            .filter(|s| s.len() == SIGNATURE_LEN)
            .ok_or_else(|| {
                CheckpointError::Malformed(format!(
                    "its signature is not {SIGNATURE_LEN} bytes of base64"
                ))
            })?;
        Ok(Self {
            seq: j.seq,
            hash: bytes32("hash", &j.hash)?,
            time: j.time,
            key: bytes32("key", &j.key)?,
            signature,
        })
    }
}

impl Checkpoint {
    /// Signs `head` as of `time` with the keystore's checkpoint key, and
    /// checks the signature before returning it (a token that answered in
    /// another format would otherwise produce checkpoints nobody can verify).
    pub fn sign(
        head: ChainHead,
        time: Timestamp,
        signer: &dyn AuditSigner,
    ) -> Result<Self, KeystoreError> {
        let public_key = signer.audit_public_key()?;
        let mut checkpoint = Self {
            seq: head.seq,
            hash: head.hash,
            time: format_timestamp(&time),
            key: public_key.fingerprint(),
            signature: Vec::new(),
        };
        checkpoint.signature = signer.audit_sign(&checkpoint.signed_bytes())?;
        checkpoint.verify(&public_key).map_err(|e| {
            KeystoreError::Internal(format!(
                "the keystore's checkpoint signature does not verify ({e})"
            ))
        })?;
        Ok(checkpoint)
    }

    /// What the signature covers: the format, the head, the time and the key.
    fn signed_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(CHECKPOINT_FORMAT.len() + 8 + 32 + 8 + 40 + 32);
        bytes.extend_from_slice(CHECKPOINT_FORMAT.as_bytes());
        bytes.extend_from_slice(&self.seq.to_be_bytes());
        bytes.extend_from_slice(&self.hash);
        bytes.extend_from_slice(&(self.time.len() as u64).to_be_bytes());
        bytes.extend_from_slice(self.time.as_bytes());
        bytes.extend_from_slice(&self.key);
        bytes
    }

    /// Checks that `key` signed exactly this checkpoint.
    pub fn verify(&self, key: &AuditPublicKey) -> Result<(), CheckpointError> {
        if self.key != key.fingerprint() {
            return Err(CheckpointError::OtherKey {
                seq: self.seq,
                found: hex::encode(self.key),
                expected: key.fingerprint_hex(),
            });
        }
        if key.verifies(&self.signed_bytes(), &self.signature) {
            Ok(())
        } else {
            Err(CheckpointError::BadSignature { seq: self.seq })
        }
    }

    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash,
        }
    }

    /// The checkpoint as one line of a checkpoint file (no newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// One line of a checkpoint file.
    pub fn from_json_line(line: &str) -> Result<Self, CheckpointError> {
        serde_json::from_str(line).map_err(|e| CheckpointError::Malformed(e.to_string()))
    }
}

/// The last line of an audit export (`GET /audit/export`): how the server's
/// verification of the exported entries ended. Externally tagged:
/// `{"checkpoint": {...}}`, `{"broken": {...}}` or `{"unsigned": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ExportEnd {
    /// The entries verified; signed over the last one.
    Checkpoint(Checkpoint),
    /// The entries did not verify, from this one on.
    Broken { first_bad_seq: i64, reason: String },
    /// The entries verified but the keystore could not sign.
    Unsigned { reason: String },
}

/// Every checkpoint in a checkpoint file's text (one JSON object per line;
/// blank lines allowed). Fails on the first line that is not one, naming it.
pub fn parse_checkpoints(text: &str) -> Result<Vec<Checkpoint>, CheckpointError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            Checkpoint::from_json_line(line.trim()).map_err(|e| match e {
                CheckpointError::Malformed(why) => {
                    CheckpointError::Malformed(format!("line {}: {why}", i + 1))
                }
                other => other,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeKeystore;

    fn head(seq: i64) -> ChainHead {
        ChainHead {
            seq,
            hash: [seq as u8; 32],
        }
    }

    #[test]
    fn a_signed_checkpoint_verifies_with_the_public_key_alone() {
        let keystore = FakeKeystore::default();
        let checkpoint =
            Checkpoint::sign(head(7), chrono::DateTime::UNIX_EPOCH, &keystore).unwrap();
        let key = keystore.audit_public_key().unwrap();
        let pem = key.to_pem();
        let read_back = AuditPublicKey::from_pem(&pem).unwrap();
        assert_eq!(read_back, key);
        let line = checkpoint.to_json_line();
        let parsed = Checkpoint::from_json_line(&line).unwrap();
        assert_eq!(parsed, checkpoint);
        parsed.verify(&read_back).unwrap();
    }

    #[test]
    fn an_altered_or_foreign_checkpoint_is_refused() {
        let keystore = FakeKeystore::default();
        let key = keystore.audit_public_key().unwrap();
        let checkpoint =
            Checkpoint::sign(head(7), chrono::DateTime::UNIX_EPOCH, &keystore).unwrap();
        for altered in [
            Checkpoint {
                seq: 3,
                ..checkpoint.clone()
            },
            Checkpoint {
                hash: [9; 32],
                ..checkpoint.clone()
            },
            Checkpoint {
                time: "2030-01-01T00:00:00Z".into(),
                ..checkpoint.clone()
            },
        ] {
            assert!(matches!(
                altered.verify(&key),
                Err(CheckpointError::BadSignature { .. })
            ));
        }
        let other = FakeKeystore::default();
        let foreign = Checkpoint::sign(head(7), chrono::DateTime::UNIX_EPOCH, &other).unwrap();
        assert!(matches!(
            foreign.verify(&key),
            Err(CheckpointError::OtherKey { seq: 7, .. })
        ));
        // Claiming our key's fingerprint does not make another key's signature ours.
        let claimed = Checkpoint {
            key: key.fingerprint(),
            ..foreign
        };
        assert!(matches!(
            claimed.verify(&key),
            Err(CheckpointError::BadSignature { .. })
        ));
    }

    #[test]
    fn checkpoint_files_refuse_what_is_not_a_checkpoint() {
        let keystore = FakeKeystore::default();
        let checkpoint =
            Checkpoint::sign(head(2), chrono::DateTime::UNIX_EPOCH, &keystore).unwrap();
        let text = format!(
            "{}\n\n{}\n",
            checkpoint.to_json_line(),
            checkpoint.to_json_line()
        );
        assert_eq!(parse_checkpoints(&text).unwrap().len(), 2);
        let bad = format!("{}\n{{\"seq\":1}}\n", checkpoint.to_json_line());
        let err = parse_checkpoints(&bad).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        let extra = checkpoint
            .to_json_line()
            .replace("{\"format\"", "{\"extra\":1,\"format\"");
        assert!(Checkpoint::from_json_line(&extra).is_err());
        assert!(
            AuditPublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .is_err()
        );
        assert!(AuditPublicKey::from_pem("hello").is_err());
    }
}
