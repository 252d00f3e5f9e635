//! External key stores (AWS KMS XKS): keyhold as the proxy AWS KMS calls
//! for every encrypt and decrypt of a KMS key whose material never leaves
//! keyhold's keystore.
//!
//! Rules:
//! - An external key store is a path prefix with its SigV4 credentials (at
//!   most [`MAX_ACTIVE_CREDENTIALS`] at a time, so they can be rotated),
//!   an optional mutual-TLS rule and a request quota. Its keys are AES-256
//!   keys generated in the keystore; their ids are the `XksKeyId` an officer
//!   gives to KMS `CreateKey`.
//! - A credential's secret is generated here, shown once, and kept only
//!   sealed by the keystore (bound to the credential's id).
//! - A key's authorization rule is a second gate after SigV4: every list
//!   that is not empty must match the request's metadata. Denials say
//!   which list refused, for the log; never anything secret.
//! - Nothing here reads a clock or the network: the proxy at the edge
//!   (`keyhold-server`'s `xks` module) parses requests and calls these.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::clock::Timestamp;
use crate::error::InvalidInput;
use crate::key::CheckDigits;

pub use crate::names::XksStoreName;
/// The service's inputs and results, also named here beside the domain.
pub use crate::service::{IssuedCredential, NewXksKey, NewXksStore, XksSnapshot, XksStoreDetail};

/// Credentials a store accepts at once: the one in use and its successor.
pub const MAX_ACTIVE_CREDENTIALS: u32 = 2;
/// AWS KMS's default request quota for one external key store (per second).
pub const DEFAULT_QUOTA_PER_SECOND: u32 = 1800;
/// Highest quota a store may be given (per second, per node).
pub const MAX_QUOTA_PER_SECOND: u32 = 100_000;
/// What every XKS URI path ends with, after the store's prefix.
pub const URI_PATH_SUFFIX: &str = "/kms/xks/v1";
/// The longest `XksProxyUriPath` KMS accepts.
pub const MAX_URI_PATH_LEN: usize = 128;
/// First path segments keyhold's own routes use; a prefix may not start
/// with one (it would shadow, or be shadowed by, the API and the UI).
pub const RESERVED_SEGMENTS: [&str; 8] = [
    "api", "ui", "healthz", "readyz", "metrics", "static", "assets", "kms",
];

/// The path before `/kms/xks/v1` under which KMS reaches one store, such as
/// `/xks/payments`. Letters, digits, `/`, `-` and `_` only (KMS's rule for
/// `XksProxyUriPath`), one or more segments, none empty.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathPrefix(String);

impl PathPrefix {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let invalid = |why: &str| {
            InvalidInput::new(
                "path prefix",
                format!(
                    "path prefix {why}: give one like /xks/payments (segments of letters, digits, '-' or '_', each after a '/'; at most {} characters; not starting with /{})",
                    MAX_URI_PATH_LEN - URI_PATH_SUFFIX.len(),
                    RESERVED_SEGMENTS.join(", /")
                ),
            )
        };
        let Some(rest) = raw.strip_prefix('/') else {
            return Err(invalid("does not start with '/'"));
        };
        if raw.len() + URI_PATH_SUFFIX.len() > MAX_URI_PATH_LEN {
            return Err(invalid("is too long"));
        }
        let segments: Vec<&str> = rest.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(invalid("has an empty segment (a doubled or trailing '/')"));
        }
        if !segments.iter().all(|s| {
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        }) {
            return Err(invalid("has characters that are not allowed"));
        }
        if segments
            .first()
            .is_some_and(|first| RESERVED_SEGMENTS.contains(&first.to_ascii_lowercase().as_str()))
        {
            return Err(invalid("starts with a segment keyhold's own routes use"));
        }
        // Every XKS path is the prefix and then this suffix: a prefix that
        // held it would make a request's path split two ways.
        if format!("{raw}/").contains(&format!("{URI_PATH_SUFFIX}/")) {
            return Err(invalid("contains /kms/xks/v1, which KMS adds after it"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The prefix a store gets when none is given: `/xks/<name>`.
    pub fn for_store(name: &XksStoreName) -> Result<Self, InvalidInput> {
        // Names allow '.', which a prefix does not.
        Self::parse(&format!("/xks/{}", name.as_str().replace('.', "-")))
    }

    /// The `XksProxyUriPath` to give KMS: this prefix and `/kms/xks/v1`.
    pub fn uri_path(&self) -> String {
        format!("{}{URI_PATH_SUFFIX}", self.0)
    }
}

string_newtype!(PathPrefix);

/// An XKS access key id: 26 characters of `A`–`Z` and `2`–`7` (the base32 of
/// 16 random bytes), inside KMS's rule of 20 to 30 such characters. It
/// reveals nothing of its secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct XksAccessKeyId(String);

impl XksAccessKeyId {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let ok_len = (20..=30).contains(&raw.len());
        let ok_chars = raw
            .chars()
            .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c));
        if ok_len && ok_chars {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidInput::new(
                "access key id",
                "an XKS access key id is 20 to 30 characters of A-Z and 2-7: copy it as keyhold showed it",
            ))
        }
    }
}

string_newtype!(XksAccessKeyId);

/// A credential's secret access key as generated: the Base64 of 32 random
/// bytes (44 characters). Shown once; wiped when dropped; never `Debug`.
pub struct XksSecret(Zeroizing<String>);

impl XksSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Wraps a secret opened from its sealed form (to verify signatures).
    pub fn from_opened(secret: Zeroizing<Vec<u8>>) -> Result<Self, InvalidInput> {
        let text = String::from_utf8(secret.to_vec())
            .map_err(|_| InvalidInput::new("secret", "a sealed XKS secret is not text"))?;
        Ok(Self(Zeroizing::new(text)))
    }
}

impl std::fmt::Debug for XksSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("XksSecret(..)")
    }
}

/// A new credential's id and secret, from the operating system's random source.
pub fn generate_credential() -> Result<(XksAccessKeyId, XksSecret), getrandom::Error> {
    let mut id_bytes = [0u8; 16];
    getrandom::getrandom(&mut id_bytes)?;
    let id = base32_rfc4648(&id_bytes);
    let mut secret_bytes = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(secret_bytes.as_mut())?;
    let secret = base64::engine::general_purpose::STANDARD.encode(secret_bytes.as_ref());
    Ok((XksAccessKeyId(id), XksSecret(Zeroizing::new(secret))))
}

/// RFC 4648 base32 without padding (16 bytes give 26 characters).
fn base32_rfc4648(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The keystore context a credential's secret is sealed under, so a sealed
/// secret cannot be moved to another credential's row.
pub fn secret_context(credential_id: uuid::Uuid) -> Vec<u8> {
    format!("keyhold xks credential {credential_id}").into_bytes()
}

/// Mutual TLS for a store: KMS's client certificate must chain to `ca_pem`
/// and carry `subject` as its common name (`cks.kms.<region>.amazonaws.com`).
/// The edge checks the PEM parses as certificates before building one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MtlsRule {
    pub subject: String,
    pub ca_pem: String,
}

/// Largest CA bundle accepted for a store's mTLS rule.
pub const MAX_CA_PEM_LEN: usize = 64 * 1024;

impl MtlsRule {
    pub fn new(subject: &str, ca_pem: &str) -> Result<Self, InvalidInput> {
        let subject_ok = !subject.is_empty()
            && subject.len() <= 255
            && subject
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*'));
        if !subject_ok {
            return Err(InvalidInput::new(
                "mtls subject",
                "the mTLS subject is the common name KMS's client certificate carries, such as cks.kms.eu-west-1.amazonaws.com (letters, digits, '.', '-', '_')",
            ));
        }
        if ca_pem.len() > MAX_CA_PEM_LEN || !ca_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(InvalidInput::new(
                "mtls ca",
                "the mTLS CA is a PEM file of one or more CERTIFICATE blocks (at most 64 KiB): the root CA KMS's client certificate chains to",
            ));
        }
        Ok(Self {
            subject: subject.to_owned(),
            ca_pem: ca_pem.to_owned(),
        })
    }
}

/// An external key store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XksStore {
    pub id: uuid::Uuid,
    pub name: XksStoreName,
    pub path_prefix: PathPrefix,
    /// Requests per second this store is served, per node; beyond it KMS
    /// gets `ThrottlingException`.
    pub quota_per_second: u32,
    pub mtls: Option<MtlsRule>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One of a store's SigV4 credentials (its secret only sealed).
#[derive(Clone, PartialEq, Eq)]
pub struct XksCredential {
    pub id: uuid::Uuid,
    pub store_id: uuid::Uuid,
    pub access_key_id: XksAccessKeyId,
    /// Sealed by the keystore under [`secret_context`] of `id`.
    pub sealed_secret: Vec<u8>,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for XksCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XksCredential")
            .field("id", &self.id)
            .field("store_id", &self.store_id)
            .field("access_key_id", &self.access_key_id)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// What an XKS key may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XksKeyUsage {
    /// Both (what KMS `CreateKey` requires).
    EncryptDecrypt,
    /// Encrypt only: data can be sealed but not opened through this key.
    Encrypt,
    /// Decrypt only: a key being retired keeps opening old data.
    Decrypt,
}

impl XksKeyUsage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EncryptDecrypt => "encrypt_decrypt",
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        match raw {
            "encrypt_decrypt" => Ok(Self::EncryptDecrypt),
            "encrypt" => Ok(Self::Encrypt),
            "decrypt" => Ok(Self::Decrypt),
            _ => Err(InvalidInput::new(
                "usage",
                "usage is encrypt_decrypt, encrypt or decrypt",
            )),
        }
    }

    /// The `keyUsage` GetKeyMetadata answers.
    pub fn metadata(self) -> &'static [&'static str] {
        match self {
            Self::EncryptDecrypt => &["ENCRYPT", "DECRYPT"],
            Self::Encrypt => &["ENCRYPT"],
            Self::Decrypt => &["DECRYPT"],
        }
    }

    pub fn allows(self, operation: XksOperation) -> bool {
        match operation {
            XksOperation::Metadata => true,
            XksOperation::Encrypt => matches!(self, Self::EncryptDecrypt | Self::Encrypt),
            XksOperation::Decrypt => matches!(self, Self::EncryptDecrypt | Self::Decrypt),
        }
    }
}

/// The XKS API operations on a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XksOperation {
    Metadata,
    Encrypt,
    Decrypt,
}

impl XksOperation {
    pub const ALL: [Self; 3] = [Self::Metadata, Self::Encrypt, Self::Decrypt];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Metadata => "metadata",
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
        }
    }
}

/// Longest pattern in an authorization rule (an ARN is at most 2,048).
pub const MAX_PATTERN_LEN: usize = 2048;
/// Most patterns in one list of a rule.
pub const MAX_RULE_ENTRIES: usize = 64;

/// A value in an authorization rule: matched whole, where `*` stands for any
/// run of characters (`arn:aws:iam::111122223333:role/*`). Printable ASCII.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pattern(String);

impl Pattern {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.is_empty()
            || raw.len() > MAX_PATTERN_LEN
            || !raw.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(InvalidInput::new(
                "rule",
                format!(
                    "a rule's value is 1 to {MAX_PATTERN_LEN} printable characters without spaces, '*' matching any run of them (arn:aws:iam::111122223333:role/*)"
                ),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn matches(&self, value: &str) -> bool {
        glob_matches(self.0.as_bytes(), value.as_bytes())
    }
}

string_newtype!(Pattern);

/// `*` matches any run of bytes; everything else itself. Linear in the
/// common case, never exponential (greedy with one backtrack point).
fn glob_matches(pattern: &[u8], value: &[u8]) -> bool {
    let (mut p, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, v));
                p += 1;
            }
            Some(&c) if c == value[v] => {
                p += 1;
                v += 1;
            }
            _ => match star {
                Some((sp, sv)) => {
                    p = sp + 1;
                    v = sv + 1;
                    star = Some((sp, sv + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A key's second gate on `requestMetadata`: each list that is not empty
/// must hold a pattern matching the request's value. An empty rule lets
/// every request SigV4 admitted through.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationRule {
    /// `awsPrincipalArn` patterns.
    #[serde(default)]
    pub principals: Vec<Pattern>,
    /// `kmsKeyArn` patterns (a request without one is refused when set).
    #[serde(default)]
    pub kms_key_arns: Vec<Pattern>,
    /// `kmsOperation` names (Encrypt, Decrypt, GenerateDataKey, ReEncrypt,
    /// DescribeKey, CreateKey, ...).
    #[serde(default)]
    pub kms_operations: Vec<Pattern>,
    /// `awsSourceVpc` patterns (a request without one is refused when set).
    #[serde(default)]
    pub source_vpcs: Vec<Pattern>,
}

impl AuthorizationRule {
    pub fn check(&self) -> Result<(), InvalidInput> {
        for (name, list) in [
            ("principals", &self.principals),
            ("kms_key_arns", &self.kms_key_arns),
            ("kms_operations", &self.kms_operations),
            ("source_vpcs", &self.source_vpcs),
        ] {
            if list.len() > MAX_RULE_ENTRIES {
                return Err(InvalidInput::new(
                    "rule",
                    format!("the rule's {name} has more than {MAX_RULE_ENTRIES} entries"),
                ));
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.principals.is_empty()
            && self.kms_key_arns.is_empty()
            && self.kms_operations.is_empty()
            && self.source_vpcs.is_empty()
    }

    /// Whether the rule admits this request; the refusal names the list that
    /// refused and the value it refused (request metadata, never secret).
    pub fn permits(&self, request: &RequestContext<'_>) -> Result<(), Denial> {
        let gate = |list: &[Pattern], field: &'static str, value: Option<&str>| {
            if list.is_empty() {
                return Ok(());
            }
            match value {
                Some(v) if list.iter().any(|p| p.matches(v)) => Ok(()),
                Some(v) => Err(Denial {
                    field,
                    value: crate::action::printable(v),
                }),
                None => Err(Denial {
                    field,
                    value: "(absent)".to_owned(),
                }),
            }
        };
        gate(&self.principals, "awsPrincipalArn", Some(request.principal))?;
        gate(&self.kms_key_arns, "kmsKeyArn", request.kms_key_arn)?;
        gate(
            &self.kms_operations,
            "kmsOperation",
            Some(request.kms_operation),
        )?;
        gate(&self.source_vpcs, "awsSourceVpc", request.source_vpc)
    }
}

/// The parts of `requestMetadata` an authorization rule reads.
#[derive(Clone, Copy, Debug)]
pub struct RequestContext<'a> {
    pub principal: &'a str,
    pub kms_key_arn: Option<&'a str>,
    pub kms_operation: &'a str,
    pub source_vpc: Option<&'a str>,
}

/// Why a rule refused a request: the field and the value it did not admit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the key's authorization rule does not admit {field} {value}")]
pub struct Denial {
    pub field: &'static str,
    pub value: String,
}

/// An AES-256 key of an external key store, generated in the keystore.
/// Its id (hyphenated) is the `XksKeyId` KMS is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XksKey {
    pub id: uuid::Uuid,
    pub store_id: uuid::Uuid,
    pub description: String,
    pub usage: XksKeyUsage,
    pub enabled: bool,
    pub rule: AuthorizationRule,
    /// Opaque reference the keystore needs to use the key.
    pub handle: Vec<u8>,
    pub check_digits: CheckDigits,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Longest description of an XKS key.
pub const MAX_DESCRIPTION_LEN: usize = 256;

/// Parses a key's description: printable, at most [`MAX_DESCRIPTION_LEN`].
pub fn parse_description(raw: &str) -> Result<String, InvalidInput> {
    if raw.chars().count() > MAX_DESCRIPTION_LEN || raw.chars().any(char::is_control) {
        return Err(InvalidInput::new(
            "description",
            format!("a description is at most {MAX_DESCRIPTION_LEN} printable characters"),
        ));
    }
    Ok(raw.to_owned())
}

/// A change to an XKS key; fields left `None` stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XksKeyChange {
    pub description: Option<String>,
    pub usage: Option<XksKeyUsage>,
    pub enabled: Option<bool>,
    pub rule: Option<AuthorizationRule>,
}

impl XksKeyChange {
    /// Whether the change gives more than the key had: enabling it, widening
    /// its usage, or any change of its rule. Those need dual control;
    /// disabling a key, narrowing its usage or its description do not (a
    /// key officer can pull the brake alone).
    pub fn widens(&self, key: &XksKey) -> bool {
        let enables = self.enabled == Some(true) && !key.enabled;
        let widens_usage = self.usage.is_some_and(|usage| {
            XksOperation::ALL
                .iter()
                .any(|&op| usage.allows(op) && !key.usage.allows(op))
        });
        let rule_changes = self.rule.as_ref().is_some_and(|rule| rule != &key.rule);
        enables || widens_usage || rule_changes
    }

    pub fn apply(&self, key: &XksKey, now: Timestamp) -> XksKey {
        let mut next = key.clone();
        if let Some(description) = &self.description {
            next.description.clone_from(description);
        }
        if let Some(usage) = self.usage {
            next.usage = usage;
        }
        if let Some(enabled) = self.enabled {
            next.enabled = enabled;
        }
        if let Some(rule) = &self.rule {
            next.rule.clone_from(rule);
        }
        next.updated_at = now;
        next
    }
}

/// A change to a store; fields left `None` stay as they are. `mtls:
/// Some(None)` removes the rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XksStoreChange {
    pub quota_per_second: Option<u32>,
    pub mtls: Option<Option<MtlsRule>>,
}

impl XksStoreChange {
    /// The store with this change made (the caller checked the quota with
    /// [`parse_quota`]).
    pub fn apply(&self, store: &XksStore, now: Timestamp) -> XksStore {
        let mut next = store.clone();
        if let Some(quota) = self.quota_per_second {
            next.quota_per_second = quota;
        }
        if let Some(mtls) = &self.mtls {
            next.mtls.clone_from(mtls);
        }
        next.updated_at = now;
        next
    }
}

/// Parses a quota (requests per second, per node).
pub fn parse_quota(raw: u32) -> Result<u32, InvalidInput> {
    if (1..=MAX_QUOTA_PER_SECOND).contains(&raw) {
        Ok(raw)
    } else {
        Err(InvalidInput::new(
            "quota",
            format!(
                "quota_per_second is 1 to {MAX_QUOTA_PER_SECOND} (AWS KMS's default for an external key store is {DEFAULT_QUOTA_PER_SECOND})"
            ),
        ))
    }
}

/// Encodes the settings file the AWS KMS console takes for a store
/// (`XksProxyUriPath` and the credential), as the specification gives it.
pub fn kms_console_file(
    prefix: &PathPrefix,
    access_key_id: &XksAccessKeyId,
    secret: &XksSecret,
) -> serde_json::Value {
    serde_json::json!({
        "XksProxyUriPath": prefix.uri_path(),
        "XksProxyAuthenticationCredential": {
            "AccessKeyId": access_key_id.as_str(),
            "RawSecretAccessKey": secret.expose(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefixes_follow_kms_rules_and_stay_clear_of_keyholds_routes() {
        for good in ["/xks/payments", "/a", "/tenant-1/store_2"] {
            assert!(PathPrefix::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "xks",
            "/",
            "/xks/",
            "//x",
            "/x y",
            "/api/x",
            "/UI",
            "/metrics",
            "/x.y",
            "/kms/xks",
            "/a/kms/xks/v1",
            "/a/kms/xks/v1/b",
        ] {
            assert!(PathPrefix::parse(bad).is_err(), "{bad}");
        }
        let long = format!("/{}", "a".repeat(MAX_URI_PATH_LEN - URI_PATH_SUFFIX.len()));
        assert!(PathPrefix::parse(&long).is_err());
        let longest = format!(
            "/{}",
            "a".repeat(MAX_URI_PATH_LEN - URI_PATH_SUFFIX.len() - 1)
        );
        assert_eq!(PathPrefix::parse(&longest).unwrap().uri_path().len(), 128);
        let name = XksStoreName::parse("pay.ments").unwrap();
        assert_eq!(
            PathPrefix::for_store(&name).unwrap().as_str(),
            "/xks/pay-ments"
        );
    }

    #[test]
    fn generated_credentials_meet_the_specification() {
        let (id, secret) = generate_credential().unwrap();
        assert_eq!(id.as_str().len(), 26);
        assert!(XksAccessKeyId::parse(id.as_str()).is_ok());
        assert_eq!(secret.expose().len(), 44);
        assert!(
            secret
                .expose()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
        );
        assert_eq!(format!("{secret:?}"), "XksSecret(..)");
        let (other, _) = generate_credential().unwrap();
        assert_ne!(id, other);
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        assert_eq!(base32_rfc4648(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_rfc4648(b"f"), "MY");
    }

    fn request<'a>(principal: &'a str, arn: Option<&'a str>, op: &'a str) -> RequestContext<'a> {
        RequestContext {
            principal,
            kms_key_arn: arn,
            kms_operation: op,
            source_vpc: None,
        }
    }

    #[test]
    fn rules_admit_only_what_every_nonempty_list_matches() {
        let p = |s: &str| Pattern::parse(s).unwrap();
        let rule = AuthorizationRule {
            principals: vec![p("arn:aws:iam::111122223333:role/app-*")],
            kms_operations: vec![p("Decrypt"), p("ReEncrypt*")],
            ..AuthorizationRule::default()
        };
        let role = "arn:aws:iam::111122223333:role/app-reader";
        assert!(rule.permits(&request(role, None, "Decrypt")).is_ok());
        assert!(rule.permits(&request(role, None, "ReEncryptFrom")).is_ok());
        let denied = rule.permits(&request(role, None, "Encrypt")).unwrap_err();
        assert_eq!(denied.field, "kmsOperation");
        let denied = rule
            .permits(&request("arn:aws:iam::999999999999:root", None, "Decrypt"))
            .unwrap_err();
        assert_eq!(denied.field, "awsPrincipalArn");
        let arns = AuthorizationRule {
            kms_key_arns: vec![p("arn:aws:kms:eu-west-1:111122223333:key/*")],
            ..AuthorizationRule::default()
        };
        assert_eq!(
            arns.permits(&request(role, None, "DescribeKey"))
                .unwrap_err()
                .value,
            "(absent)"
        );
        assert!(
            AuthorizationRule::default()
                .permits(&request(role, None, "X"))
                .is_ok()
        );
    }

    #[test]
    fn widening_changes_are_told_apart_from_narrowing_ones() {
        let key = XksKey {
            id: uuid::Uuid::nil(),
            store_id: uuid::Uuid::nil(),
            description: String::new(),
            usage: XksKeyUsage::Decrypt,
            enabled: false,
            rule: AuthorizationRule::default(),
            handle: vec![],
            check_digits: CheckDigits::from_encrypted_zero_block(&[0; 16]),
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        };
        let change = |f: fn(&mut XksKeyChange)| {
            let mut c = XksKeyChange::default();
            f(&mut c);
            c
        };
        assert!(change(|c| c.enabled = Some(true)).widens(&key));
        assert!(!change(|c| c.enabled = Some(false)).widens(&key));
        assert!(change(|c| c.usage = Some(XksKeyUsage::EncryptDecrypt)).widens(&key));
        assert!(!change(|c| c.usage = Some(XksKeyUsage::Decrypt)).widens(&key));
        assert!(!change(|c| c.description = Some("x".into())).widens(&key));
        assert!(
            change(|c| c.rule = Some(AuthorizationRule {
                principals: vec![Pattern::parse("a").unwrap()],
                ..AuthorizationRule::default()
            }))
            .widens(&key)
        );
    }

    proptest! {
        #[test]
        fn a_pattern_without_stars_matches_only_itself(s in "[ -~]{1,40}", t in "[ -~]{1,40}") {
            prop_assume!(!s.contains('*'));
            let p = Pattern::parse(&s.replace(' ', "_")).unwrap();
            prop_assert_eq!(p.matches(&t), p.as_str() == t);
        }

        #[test]
        fn a_star_matches_any_middle(pre in "[a-z]{0,8}", mid in "[ -~]{0,30}", post in "[a-z]{0,8}") {
            let p = Pattern::parse(&format!("{pre}*{post}")).unwrap();
            let value = format!("{pre}{mid}{post}");
            prop_assert!(p.matches(&value));
        }

        #[test]
        fn prefixes_that_parse_make_uri_paths_kms_accepts(raw in "/[A-Za-z0-9_/-]{0,140}") {
            if let Ok(prefix) = PathPrefix::parse(&raw) {
                let path = prefix.uri_path();
                prop_assert!(path.len() <= MAX_URI_PATH_LEN);
                prop_assert!(path.chars().all(|c| c.is_ascii_alphanumeric() || "/-_".contains(c)));
            }
        }
    }
}
