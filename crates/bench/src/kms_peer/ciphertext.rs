//! Encrypt and Decrypt, in the peer's own ciphertext format.
//!
//! AWS's ciphertext blob is opaque but names the key and the key material
//! that encrypted it, so Decrypt needs no KeyId and picks the right material
//! after rotations. The peer's does the same:
//!
//! `"khp1" | key id length (1 byte) | key id | material id (32 bytes) |
//! nonce (12 bytes) | AES-256-GCM ciphertext and tag`
//!
//! under the material, with everything before the nonce and the encryption
//! context (canonical JSON, keys sorted) as additional authenticated data.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::rand_core::{OsRng, RngCore};
use serde_json::{Value, json};

use super::materials::{KeyMaterial, KeyMaterialState};
use super::{Answer, Inner, KmsError, MAX_PLAINTEXT, arn, field, pending_import, resolve};

const MAGIC: &[u8; 4] = b"khp1";
const NONCE_LEN: usize = 12;

/// A blob taken apart; nothing verified yet.
struct Parsed<'a> {
    key_id: &'a str,
    /// Lowercase hex, as `KeyMaterialId`.
    material_id: String,
    header: &'a [u8],
    nonce: &'a [u8],
    sealed: &'a [u8],
}

fn seal(
    key_id: &str,
    material: &KeyMaterial,
    context: &BTreeMap<String, String>,
    plaintext: &[u8],
) -> Result<Vec<u8>, KmsError> {
    let key_id_len = u8::try_from(key_id.len())
        .map_err(|_| KmsError::internal("key id longer than 255 bytes"))?;
    let material_id =
        hex::decode(&material.id).map_err(|_| KmsError::internal("key material id is not hex"))?;
    let mut blob = Vec::with_capacity(4 + 1 + key_id.len() + 32 + NONCE_LEN + plaintext.len() + 16);
    blob.extend_from_slice(MAGIC);
    blob.push(key_id_len);
    blob.extend_from_slice(key_id.as_bytes());
    blob.extend_from_slice(&material_id);
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let aad = aad(&blob, context)?;
    let sealed = cipher(material)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| KmsError::internal("AES-256-GCM encryption failed"))?;
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&sealed);
    Ok(blob)
}

fn parse(blob: &[u8]) -> Option<Parsed<'_>> {
    let rest = blob.strip_prefix(MAGIC)?;
    let (&key_id_len, rest) = rest.split_first()?;
    let key_id_len = usize::from(key_id_len);
    if rest.len() < key_id_len + 32 + NONCE_LEN + 16 {
        return None;
    }
    let (key_id, rest) = rest.split_at(key_id_len);
    let (material_id, rest) = rest.split_at(32);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let header_len = MAGIC.len() + 1 + key_id_len + 32;
    Some(Parsed {
        key_id: std::str::from_utf8(key_id).ok()?,
        material_id: hex::encode(material_id),
        header: blob.get(..header_len)?,
        nonce,
        sealed,
    })
}

/// The plaintext, or `InvalidCiphertextException` when the blob was not made
/// under this material and this encryption context.
fn open(
    parsed: &Parsed<'_>,
    material: &KeyMaterial,
    context: &BTreeMap<String, String>,
) -> Result<Vec<u8>, KmsError> {
    let aad = aad(parsed.header, context)?;
    cipher(material)
        .decrypt(
            Nonce::from_slice(parsed.nonce),
            Payload {
                msg: parsed.sealed,
                aad: &aad,
            },
        )
        .map_err(|_| invalid_ciphertext())
}

fn invalid_ciphertext() -> KmsError {
    KmsError::new(
        "InvalidCiphertextException",
        "the ciphertext or its encryption context is corrupted, missing, or otherwise invalid",
    )
}

fn cipher(material: &KeyMaterial) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(material.material()))
}

fn aad(header: &[u8], context: &BTreeMap<String, String>) -> Result<Vec<u8>, KmsError> {
    let mut aad = header.to_vec();
    let context = serde_json::to_vec(context)
        .map_err(|_| KmsError::internal("encoding the encryption context"))?;
    aad.extend_from_slice(&context);
    Ok(aad)
}

fn encryption_context(request: &Value) -> Result<BTreeMap<String, String>, KmsError> {
    match &request["EncryptionContext"] {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(pairs) => pairs
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(v) => Ok((k.clone(), v.to_owned())),
                None => Err(KmsError::validation(
                    "EncryptionContext values must be strings",
                )),
            })
            .collect(),
        _ => Err(KmsError::validation("EncryptionContext must be a map")),
    }
}

fn check_encryption_algorithm(request: &Value) -> Result<(), KmsError> {
    match field(request, "EncryptionAlgorithm") {
        None | Some("SYMMETRIC_DEFAULT") => Ok(()),
        Some(other) => Err(KmsError::new(
            "InvalidKeyUsageException",
            format!("{other} is not valid for a symmetric encryption key: use SYMMETRIC_DEFAULT"),
        )),
    }
}

/// Encrypt under the key's current material.
pub(super) fn encrypt(inner: &mut Inner, request: &Value) -> Answer {
    let (id, key) = inner.key_mut(field(request, "KeyId").unwrap_or_default())?;
    key.usable(&id)?;
    check_encryption_algorithm(request)?;
    let plaintext = field(request, "Plaintext")
        .and_then(|raw| B64.decode(raw).ok())
        .filter(|p| (1..=MAX_PLAINTEXT).contains(&p.len()))
        .ok_or_else(|| KmsError::validation("Plaintext must be 1 to 4096 bytes"))?;
    let context = encryption_context(request)?;
    let current = key.materials.current().ok_or_else(|| pending_import(&id))?;
    let blob = seal(&id, current, &context, &plaintext)?;
    Ok(json!({
        "CiphertextBlob": B64.encode(blob),
        "KeyId": arn(&id),
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}

/// Decrypt with the material the blob names, whether current or not.
pub(super) fn decrypt(inner: &mut Inner, request: &Value) -> Answer {
    let blob = field(request, "CiphertextBlob")
        .and_then(|raw| B64.decode(raw).ok())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| KmsError::validation("CiphertextBlob is required"))?;
    check_encryption_algorithm(request)?;
    let context = encryption_context(request)?;
    let parsed = parse(&blob).ok_or_else(invalid_ciphertext)?;
    if let Some(raw) = field(request, "KeyId") {
        let named = resolve(inner, raw).ok_or_else(|| {
            KmsError::new("NotFoundException", format!("Key '{raw}' does not exist"))
        })?;
        if named != parsed.key_id {
            return Err(KmsError::new(
                "IncorrectKeyException",
                "the KMS key specified cannot decrypt this ciphertext",
            ));
        }
    }
    let (id, key) = inner
        .key_mut(parsed.key_id)
        .map_err(|_| invalid_ciphertext())?;
    key.usable(&id)?;
    let material = key
        .materials
        .find(&parsed.material_id)
        .filter(|m| m.state != KeyMaterialState::PendingRotation)
        .ok_or_else(invalid_ciphertext)?;
    let plaintext = open(&parsed, material, &context)?;
    Ok(json!({
        "KeyId": arn(&id),
        "Plaintext": B64.encode(plaintext),
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "KeyMaterialId": material.id,
    }))
}
