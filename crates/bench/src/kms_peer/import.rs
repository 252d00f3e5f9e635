//! GetParametersForImport and ImportKeyMaterial.
//!
//! In faithful mode the import token must be one the peer gave for this key
//! and still valid, the material is unwrapped with the algorithm the token
//! names, must be 256 bits, and ImportKeyMaterial's parameters are checked
//! as AWS documents them; in the benchmarks' mode none of that happens (no
//! RSA decryption per import) and the materials are made up.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::materials::{Expiration, Import, ImportType};
use super::wrapping::{self, ImportToken, WrappingAlgorithm};
use super::{
    Answer, IMPORT_PARAMETERS_LIFETIME_MS, Inner, KmsError, MAX_VALID_TO_SECONDS, Peer, arn, field,
    lock, now_epoch, now_millis,
};

/// GetParametersForImport: the peer's public key and a token naming the key
/// and the wrapping algorithm.
pub(super) fn get_parameters_for_import(peer: &Peer, inner: &mut Inner, request: &Value) -> Answer {
    let (id, key) = inner.key_mut(field(request, "KeyId").unwrap_or_default())?;
    key.require_external(&id)?;
    // Key-state table, footnote [8]: no import into a key pending deletion.
    key.not_pending_deletion(&id)?;
    let algorithm = match field(request, "WrappingAlgorithm").map(WrappingAlgorithm::parse) {
        Some(Some(algorithm)) => algorithm,
        _ if !peer.faithful => WrappingAlgorithm::RsaesOaepSha256,
        Some(None) => {
            return Err(KmsError::unsupported(
                "keyhold's KMS peer unwraps RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, \
                 RSA_AES_KEY_WRAP_SHA_1 and RSA_AES_KEY_WRAP_SHA_256 only",
            ));
        }
        None => return Err(KmsError::validation("WrappingAlgorithm is required")),
    };
    // Whatever RSA spec is asked for, the peer's one RSA-2048 key answers
    // (keyhold accepts any wrapping key of 2048 bits or more).
    if peer.faithful
        && !matches!(
            field(request, "WrappingKeySpec"),
            Some("RSA_2048" | "RSA_3072" | "RSA_4096")
        )
    {
        return Err(KmsError::validation(
            "WrappingKeySpec must be RSA_2048, RSA_3072 or RSA_4096",
        ));
    }
    let valid_to_ms = now_millis() + IMPORT_PARAMETERS_LIFETIME_MS;
    let token = ImportToken {
        key_id: id.clone(),
        algorithm,
        valid_to_ms,
    };
    Ok(json!({
        "KeyId": arn(&id),
        "ImportToken": B64.encode(token.encode()),
        "PublicKey": B64.encode(peer.public_key_der.as_slice()),
        "ParametersValidTo": valid_to_ms as f64 / 1000.0,
    }))
}

/// ImportKeyMaterial: checks under the lock, unwraps outside it (an RSA
/// private-key operation), then applies under the lock.
pub(super) async fn import_key_material(peer: &Peer, request: &Value) -> Answer {
    let raw_key = field(request, "KeyId").unwrap_or_default();
    let (key_id, algorithm) = {
        let mut inner = lock(&peer.inner);
        let (id, key) = inner.key_mut(raw_key)?;
        key.require_external(&id)?;
        key.not_pending_deletion(&id)?;
        let algorithm = if peer.faithful {
            Some(check_import_token(&id, request)?)
        } else {
            None
        };
        (id, algorithm)
    };
    let import_type = ImportType::parse(field(request, "ImportType"))?;
    let expiration = expiration(request, peer.faithful)?;
    let description = field(request, "KeyMaterialDescription")
        .map(|d| check_description(d, peer.faithful))
        .transpose()?;
    let key_material_id = field(request, "KeyMaterialId")
        .map(|id| check_material_id(id, peer.faithful))
        .transpose()?;
    let material = match algorithm {
        Some(algorithm) => Some(unwrap(peer, algorithm, request).await?),
        None => None,
    };
    let mut inner = lock(&peer.inner);
    let (id, key) = inner.key_mut(&key_id)?;
    key.not_pending_deletion(&id)?;
    let material_id = key.materials.import(
        &id,
        Import {
            material,
            import_type,
            key_material_id,
            description,
            expiration,
        },
    )?;
    key.settle_state();
    Ok(json!({"KeyId": arn(&id), "KeyMaterialId": material_id}))
}

/// The wrapping algorithm of a valid, unexpired import token for `key_id`.
fn check_import_token(key_id: &str, request: &Value) -> Result<WrappingAlgorithm, KmsError> {
    let invalid = || {
        KmsError::new(
            "InvalidImportTokenException",
            "the import token is invalid or is associated with a different KMS key",
        )
    };
    let token = field(request, "ImportToken")
        .and_then(|raw| B64.decode(raw).ok())
        .and_then(|raw| ImportToken::decode(&raw))
        .ok_or_else(invalid)?;
    if token.key_id != key_id {
        return Err(invalid());
    }
    if token.valid_to_ms <= now_millis() {
        return Err(KmsError::new(
            "ExpiredImportTokenException",
            "the import token is expired: call GetParametersForImport again",
        ));
    }
    Ok(token.algorithm)
}

async fn unwrap(
    peer: &Peer,
    algorithm: WrappingAlgorithm,
    request: &Value,
) -> Result<[u8; 32], KmsError> {
    let wrapped = field(request, "EncryptedKeyMaterial")
        .and_then(|raw| B64.decode(raw).ok())
        .filter(|w| !w.is_empty())
        .ok_or_else(|| KmsError::validation("EncryptedKeyMaterial is required"))?;
    let private = peer.private_key.clone();
    let material = tokio::task::spawn_blocking(move || {
        wrapping::unwrap_material(&private, algorithm, &wrapped)
    })
    .await
    .map_err(|_| KmsError::internal("unwrapping the key material failed"))??;
    let length = material.len();
    <[u8; 32]>::try_from(material).map_err(|_| {
        KmsError::new(
            "IncorrectKeyMaterialException",
            format!(
                "the key material must be 256 bits (32 bytes) for a symmetric encryption key; \
                 this is {length} bytes"
            ),
        )
    })
}

/// `ExpirationModel` and `ValidTo`. Faithful mode applies ImportKeyMaterial's
/// rules: the model defaults to KEY_MATERIAL_EXPIRES, which requires a
/// ValidTo in the future and at most 365 days ahead; KEY_MATERIAL_DOES_NOT_EXPIRE
/// forbids one. The benchmarks' mode takes what it is given.
fn expiration(request: &Value, faithful: bool) -> Result<Expiration, KmsError> {
    let valid_to = request["ValidTo"].as_f64();
    let model = field(request, "ExpirationModel");
    if !faithful {
        return Ok(match (model, valid_to) {
            (Some("KEY_MATERIAL_DOES_NOT_EXPIRE"), _) | (_, None) => Expiration::DoesNotExpire,
            (_, Some(valid_to)) => Expiration::Expires { valid_to },
        });
    }
    match (model.unwrap_or("KEY_MATERIAL_EXPIRES"), valid_to) {
        ("KEY_MATERIAL_EXPIRES", Some(valid_to)) => {
            let now = now_epoch();
            if valid_to <= now || valid_to > now + MAX_VALID_TO_SECONDS {
                return Err(KmsError::validation(
                    "ValidTo must be in the future and at most 365 days from now",
                ));
            }
            Ok(Expiration::Expires { valid_to })
        }
        ("KEY_MATERIAL_EXPIRES", None) => Err(KmsError::validation(
            "ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES (the default)",
        )),
        ("KEY_MATERIAL_DOES_NOT_EXPIRE", None) => Ok(Expiration::DoesNotExpire),
        ("KEY_MATERIAL_DOES_NOT_EXPIRE", Some(_)) => Err(KmsError::validation(
            "ValidTo must be omitted when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE",
        )),
        (other, _) => Err(KmsError::validation(format!(
            "ExpirationModel {other:?} is not KEY_MATERIAL_EXPIRES or KEY_MATERIAL_DOES_NOT_EXPIRE"
        ))),
    }
}

/// `KeyMaterialDescription`: up to 256 of `[a-zA-Z0-9:/_\s.-]`.
fn check_description(description: &str, faithful: bool) -> Result<String, KmsError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c.is_whitespace() || ":/_.-".contains(c);
    if faithful && (description.len() > 256 || !description.chars().all(allowed)) {
        return Err(KmsError::validation(
            "KeyMaterialDescription must be at most 256 characters of [a-zA-Z0-9:/_ .-]",
        ));
    }
    Ok(description.to_owned())
}

/// `KeyMaterialId`: 64 lowercase hex digits.
fn check_material_id(id: &str, faithful: bool) -> Result<String, KmsError> {
    let well_formed = id.len() == 64
        && id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    if faithful && !well_formed {
        return Err(KmsError::validation(
            "KeyMaterialId must be 64 lowercase hexadecimal characters",
        ));
    }
    Ok(id.to_owned())
}
