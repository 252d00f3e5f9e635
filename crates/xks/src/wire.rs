//! The JSON bodies of the XKS API, field for field as the specification
//! names them (camelCase). Requests deserialize from KMS's bodies (through
//! [`crate::decode`], which adds the specification's limits) and serialize
//! for tests and clients; answers serialize for KMS.
//!
//! Which unknown fields are tolerated:
//! - `requestMetadata` ignores fields it does not know: Appendix B says KMS
//!   may add some (SourceIdentity, Nitro Enclave attestation, tags).
//! - The top level of every request refuses them (`ValidationException`
//!   naming the field). Those fields are the operation's parameters; the
//!   one KMS added after the first drafts, the CDIV algorithm, obliges the
//!   proxy to answer differently, so an unknown one is refused rather than
//!   silently ignored.
//!
//! Plaintext travels only as [`SecretBase64`]: wiped when dropped and
//! without `Debug`, so no log line can print it by accident.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyhold_core::ports::GcmCiphertext;
use keyhold_core::xks::{RequestContext, XksKeyUsage};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// `requestMetadata` of GetKeyMetadata, Encrypt and Decrypt. Which of the
/// optional fields an operation requires is checked by [`crate::decode`]
/// (`kmsKeyArn` is optional for GetKeyMetadata only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMetadata {
    /// The principal that called KMS (or `AWS Internal`, or a service principal).
    pub aws_principal_arn: String,
    /// Present when the KMS call came through a VPC endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_source_vpc: Option<String>,
    /// Present when the KMS call came through a VPC endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_source_vpce: Option<String>,
    /// Absent only in GetKeyMetadata for KMS `CreateKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
    /// The KMS API behind the call; any value is accepted (KMS adds new ones).
    pub kms_operation: String,
    /// CloudTrail's request id; opaque, never validated (the specification says so).
    pub kms_request_id: String,
    /// Present when an AWS service called KMS on the customer's behalf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_via_service: Option<String>,
}

impl RequestMetadata {
    /// The fields a key's authorization rule reads.
    pub fn context(&self) -> RequestContext<'_> {
        RequestContext {
            principal: &self.aws_principal_arn,
            kms_key_arn: self.kms_key_arn.as_deref(),
            kms_operation: &self.kms_operation,
            source_vpc: self.aws_source_vpc.as_deref(),
        }
    }
}

/// `requestMetadata` of GetHealthStatus: only these two (KMS's periodic
/// check has no principal or key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthRequestMetadata {
    pub kms_request_id: String,
    pub kms_operation: String,
}

/// Base64 text of plaintext: wiped when dropped, never `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBase64(Zeroizing<String>);

impl SecretBase64 {
    /// Encodes `bytes` into a buffer sized once, so no reallocation leaves
    /// an unwiped copy behind.
    pub fn encode(bytes: &[u8]) -> Self {
        let capacity = base64::encoded_len(bytes.len(), true).unwrap_or(0);
        let mut text = Zeroizing::new(String::with_capacity(capacity));
        STANDARD.encode_string(bytes, &mut text);
        Self(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Serialize for SecretBase64 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretBase64 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SecretBase64;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Base64 string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretBase64, E> {
                Ok(SecretBase64(Zeroizing::new(v.to_owned())))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<SecretBase64, E> {
                Ok(SecretBase64(Zeroizing::new(v)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// GetKeyMetadata's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataRequest {
    pub request_metadata: RequestMetadata,
}

/// Encrypt's body. No `Debug`: it holds the plaintext.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptRequest {
    pub request_metadata: RequestMetadata,
    pub plaintext: SecretBase64,
    /// `AES_GCM` is the only value of version 1.
    pub encryption_algorithm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_authenticated_data: Option<String>,
    /// `SHA_256` asks for `ciphertextDataIntegrityValue` in the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_data_integrity_value_algorithm: Option<String>,
}

impl EncryptRequest {
    /// The request KMS would send, from raw bytes (for tests and clients).
    pub fn new(
        request_metadata: RequestMetadata,
        plaintext: &[u8],
        aad: Option<&[u8]>,
        cdiv: bool,
    ) -> Self {
        Self {
            request_metadata,
            plaintext: SecretBase64::encode(plaintext),
            encryption_algorithm: crate::decode::ENCRYPTION_ALGORITHM.to_owned(),
            additional_authenticated_data: aad.map(|aad| STANDARD.encode(aad)),
            ciphertext_data_integrity_value_algorithm: cdiv
                .then(|| crate::decode::CDIV_ALGORITHM.to_owned()),
        }
    }
}

/// Decrypt's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecryptRequest {
    pub request_metadata: RequestMetadata,
    pub ciphertext: String,
    /// What the proxy's encrypt answered; keyhold never answers one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_metadata: Option<String>,
    pub encryption_algorithm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_authenticated_data: Option<String>,
    pub authentication_tag: String,
    pub initialization_vector: String,
}

impl DecryptRequest {
    /// The request KMS would send to open `sealed` (for tests and clients).
    pub fn new(
        request_metadata: RequestMetadata,
        sealed: &GcmCiphertext,
        aad: Option<&[u8]>,
    ) -> Self {
        Self {
            request_metadata,
            ciphertext: STANDARD.encode(&sealed.ciphertext),
            ciphertext_metadata: None,
            encryption_algorithm: crate::decode::ENCRYPTION_ALGORITHM.to_owned(),
            additional_authenticated_data: aad.map(|aad| STANDARD.encode(aad)),
            authentication_tag: STANDARD.encode(sealed.tag),
            initialization_vector: STANDARD.encode(sealed.iv),
        }
    }
}

/// GetHealthStatus's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthRequest {
    pub request_metadata: HealthRequestMetadata,
}

/// `keySpec`: version 1 knows only 256-bit AES keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeySpec {
    #[serde(rename = "AES_256")]
    Aes256,
}

/// `keyStatus` of the key in keyhold (not KMS's own key state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyStatus {
    Enabled,
    Disabled,
}

/// GetKeyMetadata's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataResponse {
    pub key_spec: KeySpec,
    /// `ENCRYPT` and/or `DECRYPT` (the specification allows at most ten values).
    pub key_usage: Vec<String>,
    pub key_status: KeyStatus,
}

impl MetadataResponse {
    /// The answer for a keyhold XKS key (always AES-256).
    pub fn new(usage: XksKeyUsage, enabled: bool) -> Self {
        Self {
            key_spec: KeySpec::Aes256,
            key_usage: usage.metadata().iter().map(|&u| u.to_owned()).collect(),
            key_status: if enabled {
                KeyStatus::Enabled
            } else {
                KeyStatus::Disabled
            },
        }
    }
}

/// Encrypt's answer, every binary field in Base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptResponse {
    pub ciphertext: String,
    /// Keyhold never sets it (see [`crate::decode`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_metadata: Option<String>,
    pub initialization_vector: String,
    pub authentication_tag: String,
    /// Present exactly when the request named a CDIV algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_data_integrity_value: Option<String>,
}

impl EncryptResponse {
    /// The answer for what the keystore sealed, with the CDIV when asked
    /// (computed by [`crate::cdiv()`] before the check decryption, as
    /// Appendix C orders).
    pub fn new(sealed: &GcmCiphertext, cdiv: Option<&[u8; 32]>) -> Self {
        Self {
            ciphertext: STANDARD.encode(&sealed.ciphertext),
            ciphertext_metadata: None,
            initialization_vector: STANDARD.encode(sealed.iv),
            authentication_tag: STANDARD.encode(sealed.tag),
            ciphertext_data_integrity_value: cdiv.map(|value| STANDARD.encode(value)),
        }
    }
}

/// Decrypt's answer. No `Debug`: it holds the plaintext.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecryptResponse {
    pub plaintext: SecretBase64,
}

impl DecryptResponse {
    pub fn new(plaintext: &[u8]) -> Self {
        Self {
            plaintext: SecretBase64::encode(plaintext),
        }
    }

    /// The JSON body, in a buffer sized once and wiped when dropped (a
    /// `serde_json::to_vec` would leave the plaintext's Base64 in freed
    /// memory as its buffer grows).
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        const OPEN: &[u8] = b"{\"plaintext\":\"";
        const CLOSE: &[u8] = b"\"}";
        let text = self.plaintext.expose().as_bytes();
        let mut body = Zeroizing::new(Vec::with_capacity(OPEN.len() + text.len() + CLOSE.len()));
        body.extend_from_slice(OPEN);
        // Base64 needs no JSON escaping.
        body.extend_from_slice(text);
        body.extend_from_slice(CLOSE);
        body
    }
}

/// `healthStatus` of one key manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    /// Healthy.
    Active,
    /// Unhealthy but still serving.
    Degraded,
    /// Not serving.
    Unavailable,
}

/// One entry of `ekmFleetDetails`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EkmFleetDetail {
    pub id: String,
    pub model: String,
    pub health_status: HealthStatus,
}

/// Most `ekmFleetDetails` entries an answer may carry.
pub const MAX_EKM_FLEET_DETAILS: usize = 10;

/// GetHealthStatus's answer. `xks_proxy_fleet_size` must be above zero and
/// `ekm_fleet_details` hold 1 to [`MAX_EKM_FLEET_DETAILS`] entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    pub xks_proxy_fleet_size: u32,
    pub xks_proxy_vendor: String,
    pub xks_proxy_model: String,
    pub ekm_vendor: String,
    pub ekm_fleet_details: Vec<EkmFleetDetail>,
}

/// The body of every error answer (see [`crate::XksError::body`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub error_name: String,
    /// Printable ASCII, fewer than 512 characters.
    pub error_message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_serialize_with_the_specifications_names() {
        let metadata =
            serde_json::to_value(MetadataResponse::new(XksKeyUsage::EncryptDecrypt, true)).unwrap();
        assert_eq!(
            metadata,
            json!({"keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"], "keyStatus": "ENABLED"})
        );
        let disabled =
            serde_json::to_value(MetadataResponse::new(XksKeyUsage::Decrypt, false)).unwrap();
        assert_eq!(disabled["keyStatus"], "DISABLED");
        assert_eq!(disabled["keyUsage"], json!(["DECRYPT"]));

        // The specification's Encrypt example (without its ciphertextMetadata).
        let sealed = GcmCiphertext {
            iv: STANDARD
                .decode("HMrlRw85cAJUd5Ax")
                .unwrap()
                .try_into()
                .unwrap(),
            ciphertext: STANDARD.decode("ghxkK1txeDNn3q8Y").unwrap(),
            tag: STANDARD
                .decode("vBxN2ncH1oEkR8WVXpmyYQ==")
                .unwrap()
                .try_into()
                .unwrap(),
        };
        let encrypt = serde_json::to_value(EncryptResponse::new(&sealed, None)).unwrap();
        assert_eq!(
            encrypt,
            json!({
                "ciphertext": "ghxkK1txeDNn3q8Y",
                "initializationVector": "HMrlRw85cAJUd5Ax",
                "authenticationTag": "vBxN2ncH1oEkR8WVXpmyYQ=="
            })
        );
        let with_cdiv =
            serde_json::to_value(EncryptResponse::new(&sealed, Some(&[0; 32]))).unwrap();
        assert_eq!(
            with_cdiv["ciphertextDataIntegrityValue"],
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        );

        let decrypt = DecryptResponse::new(b"Hello World!");
        let body = decrypt.to_json();
        assert_eq!(body.as_slice(), br#"{"plaintext":"SGVsbG8gV29ybGQh"}"#);
        assert_eq!(
            serde_json::to_vec(&decrypt).unwrap(),
            body.to_vec(),
            "the hand-written body is what serde writes"
        );

        let health = HealthResponse {
            xks_proxy_fleet_size: 2,
            xks_proxy_vendor: "keyhold".into(),
            xks_proxy_model: "keyhold 0.1".into(),
            ekm_vendor: "keyhold".into(),
            ekm_fleet_details: vec![EkmFleetDetail {
                id: "hsm-id-1".into(),
                model: "SoftHSM 2.6".into(),
                health_status: HealthStatus::Degraded,
            }],
        };
        assert_eq!(
            serde_json::to_value(&health).unwrap(),
            json!({
                "xksProxyFleetSize": 2,
                "xksProxyVendor": "keyhold",
                "xksProxyModel": "keyhold 0.1",
                "ekmVendor": "keyhold",
                "ekmFleetDetails": [{"id": "hsm-id-1", "model": "SoftHSM 2.6", "healthStatus": "DEGRADED"}]
            })
        );
        for (status, text) in [
            (HealthStatus::Active, "ACTIVE"),
            (HealthStatus::Degraded, "DEGRADED"),
            (HealthStatus::Unavailable, "UNAVAILABLE"),
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), text);
        }
    }

    #[test]
    fn request_metadata_takes_the_specifications_example_and_ignores_new_fields() {
        let metadata: RequestMetadata = serde_json::from_value(json!({
            "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
            "kmsKeyArn": "arn:aws:kms:us-east-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "kmsOperation": "DescribeKey",
            "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
            "kmsViaService": "ebs",
            "sourceIdentity": "a field KMS may add later"
        }))
        .unwrap();
        assert_eq!(metadata.kms_operation, "DescribeKey");
        assert_eq!(metadata.kms_via_service.as_deref(), Some("ebs"));
        assert_eq!(metadata.aws_source_vpc, None);
        let context = metadata.context();
        assert_eq!(context.principal, "arn:aws:iam::123456789012:user/Alice");
        assert_eq!(context.kms_operation, "DescribeKey");
        let back = serde_json::to_value(&metadata).unwrap();
        assert!(
            back.get("awsSourceVpc").is_none(),
            "absent fields stay absent"
        );
    }
}
