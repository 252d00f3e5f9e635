//! AWS KMS vocabulary, parsed once at the edge so the rest of keyhold cannot
//! hold an alias, region, key id or policy that AWS would refuse; and AWS's
//! names for the wrapping algorithms, which are also the form job progress
//! stores them in.
//!
//! AWS's terms stay AWS's: a second target gets its own module beside this
//! one rather than stretching these types.

use serde::{Deserialize, Serialize};

use super::wrapping::WrappingAlgorithm;
use crate::error::{InvalidInput, printable};

/// Largest key policy AWS KMS accepts (bytes).
pub const MAX_POLICY_BYTES: usize = 32 * 1024;
/// Longest key description AWS KMS accepts (characters).
pub const MAX_DESCRIPTION_CHARS: usize = 8192;

/// Regions where AWS KMS accepts imported key material (commercial, GovCloud, China).
pub const AWS_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-west-1",
    "us-west-2",
];

/// A KMS alias such as `alias/payments`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Alias(String);
string_newtype!(Alias);

impl Alias {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        const FIELD: &str = "alias";
        let Some(rest) = raw.strip_prefix("alias/") else {
            return Err(InvalidInput::new(
                FIELD,
                format!(
                    "alias '{}' must start with 'alias/', for example alias/payments",
                    printable(raw)
                ),
            ));
        };
        if rest.to_ascii_lowercase().starts_with("aws/") {
            return Err(InvalidInput::new(
                FIELD,
                "aliases under 'alias/aws/' are reserved by AWS for its own keys: choose another name",
            ));
        }
        if rest.is_empty() || raw.len() > 256 {
            return Err(InvalidInput::new(
                FIELD,
                "alias must have 1 to 250 characters after 'alias/'",
            ));
        }
        if !rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-'))
        {
            return Err(InvalidInput::new(
                FIELD,
                "alias may only contain letters, digits, '/', '_' and '-' after 'alias/'",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

/// An AWS region where KMS runs, such as `eu-west-1`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region(String);
string_newtype!(Region);

impl Region {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if AWS_REGIONS.contains(&raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidInput::new(
                "region",
                format!(
                    "'{}' is not an AWS region: use a region code such as us-east-1 or eu-west-1",
                    printable(raw)
                ),
            ))
        }
    }
}

/// A KMS key id in UUID form, stored lower case as AWS prints it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KmsKeyId(String);
string_newtype!(KmsKeyId);

impl KmsKeyId {
    /// Any UUID is a KMS key id (fakes and tests make them so).
    pub fn from_uuid(id: uuid::Uuid) -> Self {
        Self(id.hyphenated().to_string())
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        match crate::id::parse_uuid(raw) {
            Some(id) => Ok(Self(id.hyphenated().to_string())),
            None => Err(InvalidInput::new(
                "key id",
                format!(
                    "'{}' is not a KMS key id: use the key's UUID, xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
                    printable(raw)
                ),
            )),
        }
    }
}

/// How many times AWS lets one KMS key rotate on demand (AWS KMS Developer
/// Guide, *Perform on-demand key rotation*: "a maximum of 25 times per KMS
/// key"; the API reference still said 10 when this was written, and
/// LocalStack 4.11 enforces 10). The quota is not adjustable, so keyhold
/// counts against it; settings may lower it for an account that differs.
pub const ON_DEMAND_ROTATION_LIMIT: u32 = 25;

/// Which of a KMS key's materials: AWS names each material a KMS key holds
/// (its first and one per on-demand rotation) by an identifier computed from
/// the key and the material, 64 lower-case hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyMaterialId(String);
string_newtype!(KeyMaterialId);

impl KeyMaterialId {
    pub const LEN: usize = 64;

    /// An id from a SHA-256 digest, for fakes and test peers that compute
    /// ids as AWS describes them (from the key and the material).
    pub fn from_digest(digest: [u8; 32]) -> Self {
        Self(hex::encode(digest))
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let id = raw.trim().to_ascii_lowercase();
        if id.len() == Self::LEN && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(id))
        } else {
            Err(InvalidInput::new(
                "key material id",
                format!(
                    "'{}' is not a KMS key material id: AWS names key material by {} hex digits, as `keyhold key show` lists them",
                    printable(raw),
                    Self::LEN
                ),
            ))
        }
    }
}

/// A KMS key policy document: JSON, at most 32 KiB, with a `Statement`.
/// The text is kept as given, since AWS stores it verbatim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyPolicy(String);
string_newtype!(KeyPolicy);

impl KeyPolicy {
    /// SHA-256 of the text as AWS receives it, hex: what the audit log names
    /// a policy by, so an auditor can match it to the key's policy in AWS.
    pub fn sha256_hex(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        const FIELD: &str = "policy";
        if raw.len() > MAX_POLICY_BYTES {
            return Err(InvalidInput::new(
                FIELD,
                format!(
                    "policy is {} bytes; AWS KMS accepts at most {MAX_POLICY_BYTES}",
                    raw.len()
                ),
            ));
        }
        let doc: serde_json::Value = serde_json::from_str(raw).map_err(|e| {
            InvalidInput::new(
                FIELD,
                format!(
                    "policy is not valid JSON (line {}, column {}): fix the file and try again",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        let Some(obj) = doc.as_object() else {
            return Err(InvalidInput::new(FIELD, "policy must be a JSON object"));
        };
        match obj.get("Statement") {
            Some(serde_json::Value::Array(s)) if !s.is_empty() => Ok(Self(raw.to_owned())),
            Some(serde_json::Value::Object(_)) => Ok(Self(raw.to_owned())),
            _ => Err(InvalidInput::new(
                FIELD,
                "policy has no \"Statement\": a KMS key policy needs at least one statement",
            )),
        }
    }
}

/// A KMS key description.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Description(String);
string_newtype!(Description);

impl Description {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(InvalidInput::new(
                "description",
                format!("description is longer than {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        if raw
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(InvalidInput::new(
                "description",
                "description contains control characters: remove them",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

impl WrappingAlgorithm {
    const ALL: [Self; 3] = [
        Self::RsaesOaepSha256,
        Self::RsaesOaepSha1,
        Self::RsaAesKeyWrapSha256,
    ];

    pub fn aws_name(self) -> &'static str {
        match self {
            Self::RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
            Self::RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
            Self::RsaAesKeyWrapSha256 => "RSA_AES_KEY_WRAP_SHA_256",
        }
    }

    /// The algorithm AWS calls `raw`.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.aws_name() == raw)
    }
}

/// Job progress stores the algorithm by its AWS name (databases hold it so).
impl Serialize for WrappingAlgorithm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.aws_name())
    }
}

impl<'de> Deserialize<'de> for WrappingAlgorithm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        WrappingAlgorithm::parse(&raw)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown wrapping algorithm {raw}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn alias_rules() {
        assert!(Alias::parse("alias/ig-demo").is_ok());
        assert!(Alias::parse("alias/team/key_1").is_ok());
        for bad in [
            "ig-demo",
            "alias/",
            "alias/aws/s3",
            "alias/AWS/x",
            "alias/a b",
            "alias/é",
        ] {
            assert!(Alias::parse(bad).is_err(), "{bad}");
        }
        assert!(
            Alias::parse("alias/aws/x")
                .unwrap_err()
                .message
                .contains("reserved")
        );
    }

    #[test]
    fn region_rules() {
        assert!(Region::parse("eu-west-1").is_ok());
        assert!(Region::parse("mars-north-1").is_err());
        assert!(Region::parse("").is_err());
    }

    #[test]
    fn key_id_is_a_hyphenated_uuid_normalised_to_lower_case() {
        let id = KmsKeyId::parse("BBB61D9F-0FBA-4585-8C31-988CBC999849").unwrap();
        assert_eq!(id.as_str(), "bbb61d9f-0fba-4585-8c31-988cbc999849");
        for bad in [
            "",
            "bbb61d9f0fba45858c31988cbc999849",
            "not-a-uuid",
            "{bbb61d9f-0fba-4585-8c31-988cbc999849}",
        ] {
            assert!(KmsKeyId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_material_ids_are_64_hex_digits_in_lower_case() {
        let raw = "B35D55D8F5AC5E188A1FEE1DB6B5C609b35d55d8f5ac5e188a1fee1db6b5c609";
        let id = KeyMaterialId::parse(raw).unwrap();
        assert_eq!(id.as_str(), raw.to_ascii_lowercase());
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(65), &"a".repeat(63)] {
            let e = KeyMaterialId::parse(bad).unwrap_err();
            assert!(e.message.contains("64 hex digits"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn policy_rules() {
        let ok = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*"}]}"#;
        assert!(KeyPolicy::parse(ok).is_ok());
        assert!(
            KeyPolicy::parse("{")
                .unwrap_err()
                .message
                .contains("not valid JSON")
        );
        assert!(KeyPolicy::parse("[]").is_err());
        assert!(KeyPolicy::parse(r#"{"Version":"2012-10-17"}"#).is_err());
        let huge = format!(
            r#"{{"Statement":[],"x":"{}"}}"#,
            "a".repeat(MAX_POLICY_BYTES)
        );
        assert!(
            KeyPolicy::parse(&huge)
                .unwrap_err()
                .message
                .contains("at most")
        );
    }

    proptest! {
        #[test]
        fn parsed_aliases_are_never_reserved(raw in "alias/[a-zA-Z0-9/_-]{0,260}") {
            if let Ok(a) = Alias::parse(&raw) {
                prop_assert!(!a.as_str().to_ascii_lowercase().starts_with("alias/aws/"));
                prop_assert!(a.as_str().len() <= 256);
            }
        }

        #[test]
        fn any_uuid_parses_as_key_id(bytes in any::<[u8; 16]>()) {
            let id = uuid::Uuid::from_bytes(bytes).hyphenated().to_string();
            let parsed = KmsKeyId::parse(&id.to_uppercase()).unwrap();
            prop_assert_eq!(parsed.as_str(), id.as_str());
        }

        #[test]
        fn any_64_hex_digits_parse_as_a_material_id(bytes in any::<[u8; 32]>()) {
            let raw = hex::encode_upper(bytes);
            let parsed = KeyMaterialId::parse(&raw).unwrap();
            prop_assert_eq!(parsed.as_str(), raw.to_ascii_lowercase());
        }

        #[test]
        fn error_messages_never_carry_control_characters(raw in "\\PC{0,40}[\\x00-\\x1f]\\PC{0,40}") {
            if let Err(e) = Region::parse(&raw) {
                prop_assert!(!e.message.chars().any(char::is_control));
            }
        }
    }
}
