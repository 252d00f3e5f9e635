//! Request bodies into typed, checked values: the JSON of [`crate::wire`]
//! plus the specification's rules and keyhold's limits.
//!
//! Which error for what (the specification's error table):
//! - not JSON, the wrong shape, a missing required field, an unknown
//!   top-level field, bad Base64, `ciphertextMetadata` over 20 bytes:
//!   `ValidationException`, naming the field and what is wrong;
//! - an algorithm other than `AES_GCM` / `SHA_256`, or a value beyond
//!   keyhold's maximum (which is above the specification's minimum):
//!   `UnsupportedOperationException`, as the table's 501 row says;
//! - a Decrypt whose IV, tag or `ciphertextMetadata` cannot be keyhold's:
//!   `InvalidCiphertextException`.
//!
//! No message ever quotes plaintext, AAD or ciphertext.
//!
//! The AAD keyhold gives the keystore is not the request's AAD but
//! [`EncryptInput::keystore_aad`]: the specification's encoding
//! `len(aad) as u16 BE || aad || len(ciphertextMetadata) as u8 || ciphertextMetadata`
//! with no metadata, so ciphertext metadata can be introduced later without
//! making old ciphertexts ambiguous. Encrypt and Decrypt must both use it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use base64::{DecodeError, DecodeSliceError};
use keyhold_core::ports::GcmCiphertext;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::XksError;
use crate::error::{printable, quote};
use crate::wire::{
    DecryptRequest, EncryptRequest, HealthRequest, HealthRequestMetadata, MetadataRequest,
    RequestMetadata,
};

/// Largest plaintext (Encrypt) and ciphertext (Decrypt) keyhold takes. The
/// specification requires 4,300 bytes; KMS itself never sends more than
/// 4,300, so 64 KiB is headroom without inviting large bodies.
pub const MAX_PLAINTEXT_LEN: usize = 64 * 1024;
/// Largest AAD keyhold takes: what the two-byte length of the keystore AAD
/// can express. The specification requires 8,192 bytes.
pub const MAX_AAD_LEN: usize = u16::MAX as usize;
/// The specification's bound on `ciphertextMetadata`.
pub const MAX_CIPHERTEXT_METADATA_LEN: usize = 20;
/// Longest value of a `requestMetadata` field keyhold takes (bytes). ARNs
/// reach 2,048 characters; the bound keeps usage-log lines and audit
/// details small.
pub const MAX_METADATA_FIELD_LEN: usize = 4096;
/// Largest request body to read at all: the largest plaintext and AAD in
/// Base64 and every metadata field at its bound, with room for JSON
/// escapes. The server answers `UnsupportedOperationException` beyond it.
pub const MAX_REQUEST_BODY_LEN: usize = 256 * 1024;
/// The IV length keyhold's keystore produces (the specification also allows
/// 16, which keyhold never produces, so such a ciphertext is not keyhold's).
pub const IV_LEN: usize = 12;
/// AES-GCM tag length, the only one the specification allows.
pub const TAG_LEN: usize = 16;
/// The only `encryptionAlgorithm` of version 1.
pub const ENCRYPTION_ALGORITHM: &str = "AES_GCM";
/// The only `ciphertextDataIntegrityValueAlgorithm` of version 1.
pub const CDIV_ALGORITHM: &str = "SHA_256";

/// A checked Encrypt request. No `Debug` of the plaintext: the manual
/// implementation shows lengths only.
pub struct EncryptInput {
    metadata: RequestMetadata,
    plaintext: Zeroizing<Vec<u8>>,
    aad: Vec<u8>,
    cdiv: bool,
}

impl EncryptInput {
    pub fn metadata(&self) -> &RequestMetadata {
        &self.metadata
    }

    pub fn plaintext(&self) -> &[u8] {
        &self.plaintext
    }

    /// The request's AAD as sent (empty when absent): what the CDIV covers.
    pub fn aad(&self) -> &[u8] {
        &self.aad
    }

    /// Whether the answer must carry `ciphertextDataIntegrityValue`.
    pub fn cdiv_requested(&self) -> bool {
        self.cdiv
    }

    /// The AAD to give the keystore (see the module's documentation).
    pub fn keystore_aad(&self) -> Vec<u8> {
        keystore_aad(&self.aad)
    }
}

impl std::fmt::Debug for EncryptInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptInput")
            .field("metadata", &self.metadata)
            .field("plaintext_len", &self.plaintext.len())
            .field("aad_len", &self.aad.len())
            .field("cdiv", &self.cdiv)
            .finish()
    }
}

/// A checked Decrypt request: what the keystore needs to open it.
#[derive(Clone, Debug)]
pub struct DecryptInput {
    metadata: RequestMetadata,
    sealed: GcmCiphertext,
    aad: Vec<u8>,
}

impl DecryptInput {
    pub fn metadata(&self) -> &RequestMetadata {
        &self.metadata
    }

    /// IV, ciphertext and tag, as the keystore takes them.
    pub fn sealed(&self) -> &GcmCiphertext {
        &self.sealed
    }

    /// The request's AAD as sent (empty when absent).
    pub fn aad(&self) -> &[u8] {
        &self.aad
    }

    /// The AAD to give the keystore (see the module's documentation).
    pub fn keystore_aad(&self) -> Vec<u8> {
        keystore_aad(&self.aad)
    }
}

/// `len(aad) as u16 BE || aad || 0u8`: the specification's AAD input for the
/// key manager with no `ciphertextMetadata`. The parsers bound `aad` by
/// [`MAX_AAD_LEN`], so its length always fits two bytes.
fn keystore_aad(aad: &[u8]) -> Vec<u8> {
    let len = u16::try_from(aad.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(aad.len() + 3);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(aad);
    out.push(0);
    out
}

/// GetKeyMetadata's body; `kmsKeyArn` may be absent (KMS `CreateKey`).
pub fn parse_key_metadata(body: &[u8]) -> Result<RequestMetadata, XksError> {
    let request: MetadataRequest = from_json(body)?;
    check_metadata(&request.request_metadata, None)?;
    Ok(request.request_metadata)
}

/// Encrypt's body.
pub fn parse_encrypt(body: &[u8]) -> Result<EncryptInput, XksError> {
    let request: EncryptRequest = from_json(body)?;
    check_metadata(&request.request_metadata, Some("Encrypt"))?;
    check_encryption_algorithm(&request.encryption_algorithm)?;
    let cdiv = match request.ciphertext_data_integrity_value_algorithm.as_deref() {
        None => false,
        Some(CDIV_ALGORITHM) => true,
        Some(other) => {
            return Err(XksError::UnsupportedOperation(format!(
                "ciphertextDataIntegrityValueAlgorithm {} is not supported: keyhold supports {CDIV_ALGORITHM}",
                quote(other)
            )));
        }
    };
    let mut plaintext = Zeroizing::new(Vec::new());
    decode_into(
        request.plaintext.expose(),
        MAX_PLAINTEXT_LEN,
        &mut plaintext,
    )
    .map_err(|problem| problem.into_error("plaintext", MAX_PLAINTEXT_LEN))?;
    let aad = decode_aad(request.additional_authenticated_data.as_deref())?;
    Ok(EncryptInput {
        metadata: request.request_metadata,
        plaintext,
        aad,
        cdiv,
    })
}

/// Decrypt's body.
pub fn parse_decrypt(body: &[u8]) -> Result<DecryptInput, XksError> {
    let request: DecryptRequest = from_json(body)?;
    check_metadata(&request.request_metadata, Some("Decrypt"))?;
    check_encryption_algorithm(&request.encryption_algorithm)?;
    let mut ciphertext = Vec::new();
    decode_into(&request.ciphertext, MAX_PLAINTEXT_LEN, &mut ciphertext)
        .map_err(|problem| problem.into_error("ciphertext", MAX_PLAINTEXT_LEN))?;
    let aad = decode_aad(request.additional_authenticated_data.as_deref())?;
    let iv = decode_fixed::<IV_LEN>(&request.initialization_vector, "initializationVector")?;
    let tag = decode_fixed::<TAG_LEN>(&request.authentication_tag, "authenticationTag")?;
    if let Some(metadata) = request.ciphertext_metadata.as_deref() {
        let mut bytes = Vec::new();
        match decode_into(metadata, MAX_CIPHERTEXT_METADATA_LEN, &mut bytes) {
            Ok(()) => {}
            Err(Problem::TooLong) => {
                return Err(XksError::Validation(format!(
                    "ciphertextMetadata is longer than the specification's {MAX_CIPHERTEXT_METADATA_LEN} bytes"
                )));
            }
            Err(Problem::NotBase64(why)) => {
                return Err(XksError::Validation(format!("ciphertextMetadata {why}")));
            }
        }
        // Keyhold's encrypt never answers ciphertextMetadata, so a
        // ciphertext that comes with some was not sealed by keyhold.
        return Err(XksError::InvalidCiphertext);
    }
    Ok(DecryptInput {
        metadata: request.request_metadata,
        sealed: GcmCiphertext {
            iv,
            ciphertext,
            tag,
        },
        aad,
    })
}

/// GetHealthStatus's body: only `kmsRequestId` and `kmsOperation`.
pub fn parse_health(body: &[u8]) -> Result<HealthRequestMetadata, XksError> {
    let request: HealthRequest = from_json(body)?;
    let metadata = request.request_metadata;
    for (name, value) in [
        ("kmsRequestId", &metadata.kms_request_id),
        ("kmsOperation", &metadata.kms_operation),
    ] {
        check_field_len(name, value)?;
    }
    Ok(metadata)
}

/// Longest detail keyhold builds from a JSON parser's message.
const MAX_JSON_DETAIL: usize = 300;

/// Deserializes `body`, naming the field (as a JSON path) where it failed.
fn from_json<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, XksError> {
    if body.len() > MAX_REQUEST_BODY_LEN {
        return Err(XksError::UnsupportedOperation(format!(
            "the request body is larger than keyhold's {MAX_REQUEST_BODY_LEN} bytes"
        )));
    }
    let mut json = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut json).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let detail = if path == "." {
            format!("the body is not the expected JSON object: {inner}")
        } else {
            format!("{path}: {inner}")
        };
        XksError::Validation(printable(&detail, MAX_JSON_DETAIL))
    })?;
    json.end().map_err(|error| {
        XksError::Validation(printable(
            &format!("the body is not one JSON object: {error}"),
            MAX_JSON_DETAIL,
        ))
    })?;
    Ok(value)
}

/// Required fields the derive cannot require (they are optional for
/// another operation) and the length bound on every field.
fn check_metadata(
    metadata: &RequestMetadata,
    key_arn_required_by: Option<&str>,
) -> Result<(), XksError> {
    if let (None, Some(operation)) = (&metadata.kms_key_arn, key_arn_required_by) {
        return Err(XksError::Validation(format!(
            "requestMetadata: missing field `kmsKeyArn` (required for {operation})"
        )));
    }
    let optional = [
        ("awsSourceVpc", &metadata.aws_source_vpc),
        ("awsSourceVpce", &metadata.aws_source_vpce),
        ("kmsKeyArn", &metadata.kms_key_arn),
        ("kmsViaService", &metadata.kms_via_service),
    ];
    let required = [
        ("awsPrincipalArn", &metadata.aws_principal_arn),
        ("kmsOperation", &metadata.kms_operation),
        ("kmsRequestId", &metadata.kms_request_id),
    ];
    for (name, value) in required {
        check_field_len(name, value)?;
    }
    for (name, value) in optional {
        if let Some(value) = value {
            check_field_len(name, value)?;
        }
    }
    Ok(())
}

fn check_field_len(name: &str, value: &str) -> Result<(), XksError> {
    if value.len() > MAX_METADATA_FIELD_LEN {
        return Err(XksError::UnsupportedOperation(format!(
            "requestMetadata.{name} is {} bytes; keyhold takes at most {MAX_METADATA_FIELD_LEN}",
            value.len()
        )));
    }
    Ok(())
}

fn check_encryption_algorithm(algorithm: &str) -> Result<(), XksError> {
    if algorithm == ENCRYPTION_ALGORITHM {
        Ok(())
    } else {
        Err(XksError::UnsupportedOperation(format!(
            "encryptionAlgorithm {} is not supported: keyhold supports {ENCRYPTION_ALGORITHM}",
            quote(algorithm)
        )))
    }
}

fn decode_aad(encoded: Option<&str>) -> Result<Vec<u8>, XksError> {
    let mut aad = Vec::new();
    if let Some(encoded) = encoded {
        decode_into(encoded, MAX_AAD_LEN, &mut aad)
            .map_err(|problem| problem.into_error("additionalAuthenticatedData", MAX_AAD_LEN))?;
    }
    Ok(aad)
}

/// An IV or tag: its Base64 must be valid (else `ValidationException`), its
/// length exactly `N` (else the ciphertext is not keyhold's).
fn decode_fixed<const N: usize>(encoded: &str, field: &str) -> Result<[u8; N], XksError> {
    let mut bytes = Vec::new();
    match decode_into(encoded, N, &mut bytes) {
        Ok(()) => <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| XksError::InvalidCiphertext),
        Err(Problem::TooLong) => Err(XksError::InvalidCiphertext),
        Err(Problem::NotBase64(why)) => Err(XksError::Validation(format!("{field} {why}"))),
    }
}

/// Why a Base64 field was not taken.
enum Problem {
    /// More than the field's maximum; found before decoding anything.
    TooLong,
    /// A description of what is wrong, without the value.
    NotBase64(String),
}

impl Problem {
    /// The error for a field whose length is bounded by keyhold's maximum.
    fn into_error(self, field: &str, max: usize) -> XksError {
        match self {
            Self::TooLong => XksError::UnsupportedOperation(format!(
                "{field} is longer than keyhold's {max} bytes"
            )),
            Self::NotBase64(why) => XksError::Validation(format!("{field} {why}")),
        }
    }
}

/// Decodes standard, padded Base64 into `out`, refusing more than `max`
/// bytes from the encoded length before decoding. `out` is sized once from
/// the encoded length, so a secret never sits in a buffer left behind by a
/// reallocation.
fn decode_into(encoded: &str, max: usize, out: &mut Vec<u8>) -> Result<(), Problem> {
    let bound = base64::encoded_len(max, true).unwrap_or(usize::MAX);
    if encoded.len() > bound {
        return Err(Problem::TooLong);
    }
    out.clear();
    out.resize(base64::decoded_len_estimate(encoded.len()), 0);
    match STANDARD.decode_slice(encoded, out) {
        Ok(len) => {
            out.truncate(len);
            if len > max {
                Err(Problem::TooLong)
            } else {
                Ok(())
            }
        }
        Err(DecodeSliceError::DecodeError(error)) => Err(Problem::NotBase64(describe(&error))),
        Err(DecodeSliceError::OutputSliceTooSmall) => Err(Problem::NotBase64(
            "is not Base64 keyhold can decode".to_owned(),
        )),
    }
}

/// What is wrong with a Base64 value, without quoting it.
fn describe(error: &DecodeError) -> String {
    match error {
        DecodeError::InvalidByte(offset, _) => format!(
            "is not Base64: character {offset} is not in the alphabet (A-Z a-z 0-9 + / and = padding)"
        ),
        DecodeError::InvalidLength(_) => {
            "is not Base64: its length does not fit whole 4-character groups".to_owned()
        }
        DecodeError::InvalidLastSymbol(offset, _) => {
            format!("is not Base64: character {offset} has bits set past the data's end")
        }
        DecodeError::InvalidPadding => {
            "is not Base64: the '=' padding is missing or wrong (standard Base64 with padding is required)"
                .to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn metadata() -> Value {
        json!({
            "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
            "kmsKeyArn": "arn:aws:kms:us-east-2:123456789012:/key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "kmsOperation": "Encrypt",
            "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
            "kmsViaService": "ebs"
        })
    }

    /// The specification's Encrypt example.
    fn encrypt_example() -> Value {
        json!({
            "requestMetadata": metadata(),
            "additionalAuthenticatedData": "cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n",
            "plaintext": "SGVsbG8gV29ybGQh",
            "encryptionAlgorithm": "AES_GCM",
            "ciphertextDataIntegrityValueAlgorithm": "SHA_256"
        })
    }

    /// The specification's Decrypt example, without its ciphertextMetadata.
    fn decrypt_example() -> Value {
        json!({
            "requestMetadata": metadata(),
            "additionalAuthenticatedData": "cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n",
            "encryptionAlgorithm": "AES_GCM",
            "ciphertext": "ghxkK1txeDNn3q8Y",
            "initializationVector": "HMrlRw85cAJUd5Ax",
            "authenticationTag": "vBxN2ncH1oEkR8WVXpmyYQ=="
        })
    }

    fn bytes(value: &Value) -> Vec<u8> {
        serde_json::to_vec(value).unwrap()
    }

    fn with(mut value: Value, field: &str, new: Value) -> Value {
        value[field] = new;
        value
    }

    fn without(mut value: Value, field: &str) -> Value {
        value.as_object_mut().unwrap().remove(field);
        value
    }

    fn validation(result: Result<impl std::fmt::Debug, XksError>) -> String {
        match result {
            Err(XksError::Validation(detail)) => detail,
            other => panic!("expected ValidationException, got {other:?}"),
        }
    }

    fn unsupported(result: Result<impl std::fmt::Debug, XksError>) -> String {
        match result {
            Err(XksError::UnsupportedOperation(detail)) => detail,
            other => panic!("expected UnsupportedOperationException, got {other:?}"),
        }
    }

    #[test]
    fn the_specifications_encrypt_example_decodes() {
        let input = parse_encrypt(&bytes(&encrypt_example())).unwrap();
        assert_eq!(input.plaintext(), b"Hello World!");
        assert_eq!(input.aad(), b"project=nile,department=marketing");
        assert!(input.cdiv_requested());
        assert_eq!(input.metadata().kms_operation, "Encrypt");
        let debug = format!("{input:?}");
        assert!(!debug.contains("Hello") && debug.contains("plaintext_len: 12"));

        let plain = without(
            without(encrypt_example(), "additionalAuthenticatedData"),
            "ciphertextDataIntegrityValueAlgorithm",
        );
        let input = parse_encrypt(&bytes(&plain)).unwrap();
        assert!(input.aad().is_empty() && !input.cdiv_requested());
        assert_eq!(input.keystore_aad(), vec![0, 0, 0]);
    }

    #[test]
    fn the_keystore_aad_carries_the_aads_length_and_an_empty_metadata_length() {
        let input = parse_encrypt(&bytes(&encrypt_example())).unwrap();
        let mut expected = vec![0, 33];
        expected.extend_from_slice(b"project=nile,department=marketing");
        expected.push(0);
        assert_eq!(input.keystore_aad(), expected);
        let decrypt = parse_decrypt(&bytes(&decrypt_example())).unwrap();
        assert_eq!(decrypt.keystore_aad(), expected);
    }

    #[test]
    fn the_specifications_decrypt_example_decodes() {
        let input = parse_decrypt(&bytes(&decrypt_example())).unwrap();
        let sealed = input.sealed();
        assert_eq!(sealed.ciphertext.len(), 12);
        assert_eq!(sealed.iv[0], 0x1c);
        assert_eq!(sealed.tag[15], 0x61);
        assert_eq!(input.aad(), b"project=nile,department=marketing");
    }

    #[test]
    fn decrypt_refuses_ciphertexts_keyhold_cannot_have_made() {
        // The specification's own example carries ciphertextMetadata: never keyhold's.
        let with_metadata = with(
            decrypt_example(),
            "ciphertextMetadata",
            json!("a2V5X3ZlcnNpb249MQ=="),
        );
        assert_eq!(
            parse_decrypt(&bytes(&with_metadata)).unwrap_err(),
            XksError::InvalidCiphertext
        );
        let long_metadata = with(
            decrypt_example(),
            "ciphertextMetadata",
            json!(STANDARD.encode([1u8; 21])),
        );
        assert!(validation(parse_decrypt(&bytes(&long_metadata))).contains("20 bytes"));
        let bad_metadata = with(
            decrypt_example(),
            "ciphertextMetadata",
            json!("a2V5X3ZlcnNpb249MQ="),
        );
        assert!(validation(parse_decrypt(&bytes(&bad_metadata))).starts_with("ciphertextMetadata"));

        for (field, value) in [
            ("initializationVector", STANDARD.encode([7u8; 16])),
            ("initializationVector", STANDARD.encode([7u8; 11])),
            ("initializationVector", STANDARD.encode([7u8; 64])),
            ("initializationVector", String::new()),
            ("authenticationTag", STANDARD.encode([7u8; 12])),
            ("authenticationTag", STANDARD.encode([7u8; 17])),
        ] {
            let request = with(decrypt_example(), field, json!(value));
            assert_eq!(
                parse_decrypt(&bytes(&request)).unwrap_err(),
                XksError::InvalidCiphertext,
                "{field} {value}"
            );
        }
        let bad_iv = with(
            decrypt_example(),
            "initializationVector",
            json!("HMrlRw85cAJUd5A!"),
        );
        assert!(
            validation(parse_decrypt(&bytes(&bad_iv)))
                .starts_with("initializationVector is not Base64")
        );
    }

    #[test]
    fn shape_errors_are_validation_errors_that_name_the_field() {
        let missing = validation(parse_encrypt(&bytes(&without(
            encrypt_example(),
            "plaintext",
        ))));
        assert!(missing.contains("missing field `plaintext`"), "{missing}");
        let wrong_type = validation(parse_encrypt(&bytes(&with(
            encrypt_example(),
            "plaintext",
            json!(5),
        ))));
        assert!(
            wrong_type.starts_with("plaintext: invalid type"),
            "{wrong_type}"
        );
        let unknown = validation(parse_encrypt(&bytes(&with(
            encrypt_example(),
            "keyVersion",
            json!(2),
        ))));
        assert!(unknown.contains("unknown field `keyVersion`"), "{unknown}");
        let mut no_principal = encrypt_example();
        no_principal["requestMetadata"]
            .as_object_mut()
            .unwrap()
            .remove("awsPrincipalArn");
        let detail = validation(parse_encrypt(&bytes(&no_principal)));
        assert!(
            detail.starts_with("requestMetadata: missing field `awsPrincipalArn`"),
            "{detail}"
        );
        let mut no_arn = decrypt_example();
        no_arn["requestMetadata"]
            .as_object_mut()
            .unwrap()
            .remove("kmsKeyArn");
        let detail = validation(parse_decrypt(&bytes(&no_arn)));
        assert!(
            detail.contains("kmsKeyArn") && detail.contains("Decrypt"),
            "{detail}"
        );
        let mut op_number = encrypt_example();
        op_number["requestMetadata"]["kmsOperation"] = json!(7);
        let detail = validation(parse_encrypt(&bytes(&op_number)));
        assert!(
            detail.starts_with("requestMetadata.kmsOperation: invalid type"),
            "{detail}"
        );

        let bad_plaintext = with(encrypt_example(), "plaintext", json!("SGVsbG8gV29ybGQ"));
        assert_eq!(
            validation(parse_encrypt(&bytes(&bad_plaintext))),
            "plaintext is not Base64: the '=' padding is missing or wrong (standard Base64 with padding is required)"
        );
        let cut_plaintext = with(encrypt_example(), "plaintext", json!("SGVsbG8gV29ybGQhS"));
        assert_eq!(
            validation(parse_encrypt(&bytes(&cut_plaintext))),
            "plaintext is not Base64: its length does not fit whole 4-character groups"
        );
        let bad_aad = with(
            encrypt_example(),
            "additionalAuthenticatedData",
            json!("****"),
        );
        assert!(
            validation(parse_encrypt(&bytes(&bad_aad)))
                .starts_with("additionalAuthenticatedData is not Base64: character 0")
        );

        for body in [
            &b""[..],
            b"{",
            b"[]",
            b"null",
            b"{} {}",
            b"\"SGVsbG8=\"",
            &[0xff, 0xfe],
        ] {
            let detail = validation(parse_encrypt(body));
            assert!(!detail.is_empty());
        }
        let trailing = [bytes(&encrypt_example()), b" x".to_vec()].concat();
        assert!(validation(parse_encrypt(&trailing)).contains("trailing"));
    }

    #[test]
    fn messages_never_quote_the_secret_fields() {
        let secret = "c2VjcmV0IHNlY3JldCBzZWNyZXQ";
        let bad = with(encrypt_example(), "plaintext", json!(secret));
        let detail = validation(parse_encrypt(&bad.to_string().into_bytes()));
        assert!(!detail.contains(secret));
        let body = XksError::Validation(detail).body();
        assert!(!body.error_message.contains("c2Vj"));
    }

    #[test]
    fn algorithms_other_than_version_1s_are_unsupported() {
        let cbc = with(encrypt_example(), "encryptionAlgorithm", json!("AES_CBC"));
        assert!(unsupported(parse_encrypt(&bytes(&cbc))).contains("\"AES_CBC\""));
        let sha3 = with(
            encrypt_example(),
            "ciphertextDataIntegrityValueAlgorithm",
            json!("SHA3_256"),
        );
        assert!(unsupported(parse_encrypt(&bytes(&sha3))).contains("SHA3_256"));
        let decrypt = with(decrypt_example(), "encryptionAlgorithm", json!("aes_gcm"));
        unsupported(parse_decrypt(&bytes(&decrypt)));
    }

    #[test]
    fn sizes_follow_the_specifications_minimums_and_keyholds_maximums() {
        // The specification's minimums are taken.
        let large = with(
            with(
                encrypt_example(),
                "plaintext",
                json!(STANDARD.encode(vec![1u8; 4300])),
            ),
            "additionalAuthenticatedData",
            json!(STANDARD.encode(vec![2u8; 8192])),
        );
        let input = parse_encrypt(&bytes(&large)).unwrap();
        assert_eq!((input.plaintext().len(), input.aad().len()), (4300, 8192));
        // Keyhold's maximums too, and one byte more is refused.
        let max = with(
            encrypt_example(),
            "plaintext",
            json!(STANDARD.encode(vec![1u8; MAX_PLAINTEXT_LEN])),
        );
        assert_eq!(
            parse_encrypt(&bytes(&max)).unwrap().plaintext().len(),
            MAX_PLAINTEXT_LEN
        );
        let over = with(
            encrypt_example(),
            "plaintext",
            json!(STANDARD.encode(vec![1u8; MAX_PLAINTEXT_LEN + 1])),
        );
        assert!(unsupported(parse_encrypt(&bytes(&over))).starts_with("plaintext is longer"));
        let aad_max = with(
            encrypt_example(),
            "additionalAuthenticatedData",
            json!(STANDARD.encode(vec![1u8; MAX_AAD_LEN])),
        );
        let input = parse_encrypt(&bytes(&aad_max)).unwrap();
        assert_eq!(&input.keystore_aad()[..2], &[0xff, 0xff]);
        let aad_over = with(
            encrypt_example(),
            "additionalAuthenticatedData",
            json!(STANDARD.encode(vec![1u8; MAX_AAD_LEN + 1])),
        );
        unsupported(parse_encrypt(&bytes(&aad_over)));
        let ct_over = with(
            decrypt_example(),
            "ciphertext",
            json!(STANDARD.encode(vec![1u8; MAX_PLAINTEXT_LEN + 1])),
        );
        unsupported(parse_decrypt(&bytes(&ct_over)));
        let mut long_arn = encrypt_example();
        long_arn["requestMetadata"]["kmsKeyArn"] = json!("a".repeat(MAX_METADATA_FIELD_LEN + 1));
        assert!(unsupported(parse_encrypt(&bytes(&long_arn))).contains("kmsKeyArn"));
        let mut arn_2048 = encrypt_example();
        arn_2048["requestMetadata"]["awsPrincipalArn"] = json!("a".repeat(2048));
        parse_encrypt(&bytes(&arn_2048)).unwrap();
        unsupported(parse_encrypt(&vec![b' '; MAX_REQUEST_BODY_LEN + 1]));
        // An empty plaintext is still AES-GCM.
        let empty = with(encrypt_example(), "plaintext", json!(""));
        assert!(
            parse_encrypt(&bytes(&empty))
                .unwrap()
                .plaintext()
                .is_empty()
        );
    }

    #[test]
    fn metadata_and_health_bodies_decode() {
        // GetKeyMetadata for CreateKey has no kmsKeyArn.
        let create_key = json!({"requestMetadata": {
            "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
            "kmsOperation": "CreateKey",
            "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
            "aNewField": {"nested": true}
        }});
        let metadata = parse_key_metadata(&bytes(&create_key)).unwrap();
        assert_eq!(metadata.kms_key_arn, None);
        assert_eq!(metadata.kms_operation, "CreateKey");

        let health = json!({"requestMetadata": {
            "kmsRequestId": "1124f4d6-db54-4af4-ae30-c55a22a8abcd",
            "kmsOperation": "KmsHealthCheck"
        }});
        let metadata = parse_health(&bytes(&health)).unwrap();
        assert_eq!(metadata.kms_operation, "KmsHealthCheck");
        let no_id = json!({"requestMetadata": {"kmsOperation": "KmsHealthCheck"}});
        assert!(validation(parse_health(&bytes(&no_id))).contains("kmsRequestId"));
        let extra =
            json!({"requestMetadata": {"kmsOperation": "x", "kmsRequestId": "y"}, "plaintext": ""});
        validation(parse_health(&bytes(&extra)));
    }

    #[test]
    fn requests_built_by_the_wire_types_decode_back() {
        let metadata: RequestMetadata = serde_json::from_value(metadata()).unwrap();
        let request = EncryptRequest::new(metadata.clone(), b"data key", Some(b"context"), true);
        let input = parse_encrypt(&serde_json::to_vec(&request).unwrap()).unwrap();
        assert_eq!(
            (input.plaintext(), input.aad(), input.cdiv_requested()),
            (&b"data key"[..], &b"context"[..], true)
        );
        let sealed = GcmCiphertext {
            iv: [1; 12],
            ciphertext: vec![2; 9],
            tag: [3; 16],
        };
        let request = DecryptRequest::new(metadata, &sealed, None);
        let input = parse_decrypt(&serde_json::to_vec(&request).unwrap()).unwrap();
        assert_eq!(input.sealed(), &sealed);
        assert!(input.aad().is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_encrypt(&body);
            let _ = parse_decrypt(&body);
            let _ = parse_key_metadata(&body);
            let _ = parse_health(&body);
        }

        #[test]
        fn arbitrary_field_values_give_printable_refusals(
            field in prop::sample::select(vec!["plaintext", "additionalAuthenticatedData", "encryptionAlgorithm", "ciphertext", "initializationVector", "authenticationTag", "ciphertextMetadata"]),
            value in ".{0,64}",
        ) {
            for example in [encrypt_example(), decrypt_example()] {
                let body = bytes(&with(example, field, json!(value)));
                let results = [parse_encrypt(&body).err(), parse_decrypt(&body).err()];
                for error in results.into_iter().flatten() {
                    let message = error.body().error_message;
                    prop_assert!(message.len() < 512);
                    prop_assert!(message.bytes().all(|b| (0x20..=0x7e).contains(&b)));
                }
            }
        }

        #[test]
        fn any_plaintext_and_aad_within_bounds_round_trip(
            plaintext in proptest::collection::vec(any::<u8>(), 0..600),
            aad in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        ) {
            let metadata: RequestMetadata = serde_json::from_value(metadata()).unwrap();
            let request = EncryptRequest::new(metadata, &plaintext, aad.as_deref(), false);
            let input = parse_encrypt(&serde_json::to_vec(&request).unwrap()).unwrap();
            prop_assert_eq!(input.plaintext(), plaintext.as_slice());
            let expected = aad.unwrap_or_default();
            prop_assert_eq!(input.aad(), expected.as_slice());
        }
    }
}
