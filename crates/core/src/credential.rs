//! Cloud credentials: how keyhold authenticates to AWS for a key group.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::clock::Timestamp;
use crate::error::{InvalidInput, printable};
use crate::names::CredentialName;

/// Largest CSV file accepted on import; the AWS console's is well under 1 KiB.
pub const MAX_CSV_BYTES: usize = 16 * 1024;

/// A credential as stored. The secret exists only sealed by the keystore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub id: uuid::Uuid,
    pub name: CredentialName,
    pub service: CloudService,
    pub kind: CredentialKind,
    /// Endpoint override (VPC endpoint, test peer); None means AWS's own.
    pub endpoint: Option<Endpoint>,
    pub created_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudService {
    Aws,
}

impl CloudService {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        match raw.to_ascii_lowercase().as_str() {
            "aws" | "amazon web services" => Ok(Self::Aws),
            _ => Err(InvalidInput::new(
                "service",
                "the only cloud service supported is 'aws' (Amazon Web Services)",
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// An IAM access key imported from the console CSV. `sealed_secret` is the
    /// secret access key sealed by the keystore with the credential id as context.
    AccessKey {
        access_key_id: AccessKeyId,
        sealed_secret: Vec<u8>,
    },
    /// Whatever credentials the server process has through the AWS SDK's
    /// default chain (environment, profile, web identity, instance role),
    /// optionally used only to assume `role_arn` through STS. keyhold stores
    /// no secret for it: there is no long-lived access key to leak.
    DefaultChain { role_arn: Option<RoleArn> },
}

impl CredentialKind {
    pub const ACCESS_KEY: &'static str = "access_key";
    pub const DEFAULT_CHAIN: &'static str = "default_chain";

    pub fn label(&self) -> &'static str {
        match self {
            Self::AccessKey { .. } => Self::ACCESS_KEY,
            Self::DefaultChain { .. } => Self::DEFAULT_CHAIN,
        }
    }
    /// The "Access Name" column: what identifies the credential to AWS.
    pub fn access_name(&self) -> &str {
        match self {
            Self::AccessKey { access_key_id, .. } => access_key_id.as_str(),
            Self::DefaultChain {
                role_arn: Some(role_arn),
            } => role_arn.as_str(),
            Self::DefaultChain { role_arn: None } => "default credential chain",
        }
    }
    /// The IAM role assumed through STS, if any.
    pub fn role_arn(&self) -> Option<&RoleArn> {
        match self {
            Self::AccessKey { .. } => None,
            Self::DefaultChain { role_arn } => role_arn.as_ref(),
        }
    }
}

/// An AWS access key id such as `AKIAIOSFODNN7EXAMPLE` (not secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccessKeyId(String);

impl AccessKeyId {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let ok = (16..=128).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric());
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidInput::new(
                "csv",
                "the access key id is not an AWS access key id (16 to 128 letters and digits, such as AKIA…): check that the CSV is the one IAM offered for download",
            ))
        }
    }
}

string_newtype!(AccessKeyId);

/// Longest role ARN STS accepts in AssumeRole.
pub const MAX_ROLE_ARN_LEN: usize = 2048;
/// Longest IAM role name.
const MAX_ROLE_NAME_LEN: usize = 64;
/// The AWS partitions whose IAM roles keyhold can assume.
const PARTITIONS: &[&str] = &["aws", "aws-cn", "aws-us-gov"];

/// An IAM role ARN such as `arn:aws:iam::123456789012:role/keyhold` (or with a
/// path, `…:role/team/keyhold`), assumed through STS (not secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoleArn(String);
string_newtype!(RoleArn);

impl RoleArn {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let bad = |why: String| {
            InvalidInput::new(
                "role_arn",
                format!(
                    "{why}: give an IAM role ARN such as arn:aws:iam::123456789012:role/keyhold"
                ),
            )
        };
        if raw.len() > MAX_ROLE_ARN_LEN {
            return Err(bad(format!(
                "the role ARN is longer than {MAX_ROLE_ARN_LEN} characters"
            )));
        }
        let shown = printable(raw);
        let parts: Vec<&str> = raw.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts[..] else {
            return Err(bad(format!("'{shown}' is not an ARN")));
        };
        if arn != "arn" {
            return Err(bad(format!("'{shown}' does not start with 'arn:'")));
        }
        if !PARTITIONS.contains(&partition) {
            return Err(bad(format!(
                "'{}' is not an AWS partition (aws, aws-cn or aws-us-gov)",
                printable(partition)
            )));
        }
        if service != "iam" || !region.is_empty() {
            return Err(bad(format!(
                "'{shown}' is not an IAM ARN (arn:{partition}:iam::ACCOUNT:role/NAME)"
            )));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!(
                "the account '{}' is not a 12-digit AWS account id",
                printable(account)
            )));
        }
        let Some(path_and_name) = resource.strip_prefix("role/") else {
            return Err(bad(format!(
                "'{shown}' is not a role ARN: the resource must be role/NAME"
            )));
        };
        if !path_and_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_/-".contains(c))
        {
            return Err(bad(
                "the role path and name may only contain letters, digits and + = , . @ _ / -"
                    .to_owned(),
            ));
        }
        let name = path_and_name.rsplit('/').next().unwrap_or_default();
        if path_and_name.split('/').any(str::is_empty) {
            return Err(bad(format!(
                "'{shown}' has an empty role name or path part"
            )));
        }
        if name.len() > MAX_ROLE_NAME_LEN {
            return Err(bad(format!(
                "the role name is longer than {MAX_ROLE_NAME_LEN} characters"
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The account the role belongs to.
    pub fn account(&self) -> &str {
        self.0.split(':').nth(4).unwrap_or_default()
    }
}

/// An endpoint override URL (`https://…`, or `http://` for a loopback test peer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Endpoint(String);

impl Endpoint {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let bad = |why: &str| {
            InvalidInput::new(
                "endpoint",
                format!(
                    "{why}: give a URL such as https://vpce-0123.kms.eu-west-1.vpce.amazonaws.com"
                ),
            )
        };
        if raw.len() > 2048 || raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad("the endpoint contains spaces or control characters"));
        }
        let rest = raw
            .strip_prefix("https://")
            .or_else(|| raw.strip_prefix("http://"))
            .ok_or_else(|| bad("the endpoint must start with https:// or http://"))?;
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() {
            return Err(bad("the endpoint has no host"));
        }
        if host.contains('@') {
            return Err(bad("the endpoint must not carry a user name or password"));
        }
        check_port(host).map_err(|why| bad(&why))?;
        Ok(Self(raw.trim_end_matches('/').to_owned()))
    }
}

/// A port in `host` (`name:port`, `[v6]:port`) must be a number from 1 to
/// 65535: a URL parser further on would reject a larger one, or worse, wrap it.
fn check_port(host: &str) -> Result<(), String> {
    let after_address = match host.rfind(']') {
        Some(end) => &host[end + 1..],
        None => host,
    };
    let Some((_, port)) = after_address.rsplit_once(':') else {
        return Ok(());
    };
    match port.parse::<u16>() {
        Ok(number) if number > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(format!(
            "the endpoint's port '{}' is not a port number from 1 to 65535",
            crate::error::printable(port)
        )),
    }
}

string_newtype!(Endpoint);

impl Endpoint {
    /// `https://` (as opposed to plain `http://`).
    pub fn is_https(&self) -> bool {
        self.0
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    }

    /// `host[:port]`, lower case.
    fn authority(&self) -> String {
        let rest = self.0.split_once("://").map_or("", |(_, rest)| rest);
        rest.split(['/', '?', '#'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    }

    /// The host is a loopback IP address (127.0.0.0/8 or [::1]). A name such
    /// as `localhost` does not count: what it resolves to is not the
    /// operator's to vouch for here.
    pub fn is_loopback(&self) -> bool {
        let authority = self.authority();
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.split(':').next().unwrap_or_default(),
        };
        host.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    }

    /// The endpoint compared without regard to the case of its scheme and
    /// host (which name the same server either way).
    fn canonical(&self) -> String {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        let path = rest.find(['/', '?', '#']).map_or("", |at| &rest[at..]);
        format!(
            "{}://{}{path}",
            scheme.to_ascii_lowercase(),
            self.authority()
        )
    }
}

/// Where keyhold may send key material besides AWS's own endpoints: the
/// endpoint overrides the server's operator allows (configuration
/// `kms_endpoint_allow`). The KMS wrapping public key is not signed by AWS;
/// only the endpoint's TLS identity vouches for it, so an endpoint is
/// operator configuration, never an officer's choice: one an officer gives
/// (a credential's `endpoint`) must be on this list, and it is checked again
/// before every job reaches KMS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    allowed: Vec<Endpoint>,
    plain_http_to_loopback: bool,
}

/// How an operator allows an endpoint, for messages.
pub const ENDPOINT_ALLOW_SETTING: &str = "kms_endpoint_allow (environment KEYHOLD_KMS_ENDPOINT_ALLOW, comma-separated; flag --kms-endpoint-allow)";
/// How an operator allows plain HTTP to a loopback endpoint, for messages.
pub const ENDPOINT_PLAIN_HTTP_SETTING: &str = "kms_endpoint_allow_plain_http = true (KEYHOLD_KMS_ENDPOINT_ALLOW_PLAIN_HTTP, --kms-endpoint-allow-plain-http)";

impl EndpointPolicy {
    /// No endpoint override allowed: material goes to AWS's own endpoints only.
    pub fn none() -> Self {
        Self::default()
    }

    /// The allow-list, refused when an entry is plain HTTP to anything but a
    /// loopback address, or to a loopback address without
    /// `plain_http_to_loopback` (the operator's consent, for test peers).
    pub fn new(allowed: Vec<Endpoint>, plain_http_to_loopback: bool) -> Result<Self, InvalidInput> {
        let policy = Self {
            allowed,
            plain_http_to_loopback,
        };
        for endpoint in &policy.allowed {
            policy.check_transport(endpoint)?;
        }
        Ok(policy)
    }

    pub fn allowed(&self) -> &[Endpoint] {
        &self.allowed
    }

    /// Whether an officer may send material to `endpoint`; the refusal says
    /// what the operator would have to configure.
    pub fn check(&self, endpoint: &Endpoint) -> Result<(), InvalidInput> {
        self.check_transport(endpoint)?;
        let canonical = endpoint.canonical();
        if self.allowed.iter().any(|a| a.canonical() == canonical) {
            return Ok(());
        }
        let allowed = if self.allowed.is_empty() {
            "it allows none, so credentials use AWS's own endpoints".to_owned()
        } else {
            format!(
                "it allows {}",
                self.allowed
                    .iter()
                    .map(Endpoint::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        Err(InvalidInput::new(
            "endpoint",
            format!(
                "endpoint {} is not on this server's allow-list of KMS endpoints ({allowed}): endpoints decide where key material is sent, so they are operator configuration. Leave the endpoint out to use AWS's own, or have the operator add it to {ENDPOINT_ALLOW_SETTING} and restart keyhold",
                printable(endpoint.as_str())
            ),
        ))
    }

    fn check_transport(&self, endpoint: &Endpoint) -> Result<(), InvalidInput> {
        if endpoint.is_https() {
            return Ok(());
        }
        let shown = printable(endpoint.as_str());
        if !endpoint.is_loopback() {
            return Err(InvalidInput::new(
                "endpoint",
                format!(
                    "endpoint {shown} is plain HTTP: key material is sent only over HTTPS (https://…); plain http:// is allowed only to a loopback address (127.0.0.1, [::1]) with {ENDPOINT_PLAIN_HTTP_SETTING}"
                ),
            ));
        }
        if !self.plain_http_to_loopback {
            return Err(InvalidInput::new(
                "endpoint",
                format!(
                    "endpoint {shown} is plain HTTP to a loopback address, which this server's configuration does not allow: use https://, or have the operator set {ENDPOINT_PLAIN_HTTP_SETTING} (for a local test peer)"
                ),
            ));
        }
        Ok(())
    }
}

/// The columns (lower case) of the console's access key file and of the IAM
/// user file.
const IAM_CSV_COLUMNS: &[&str] = &[
    "user name",
    "password",
    "access key id",
    "secret access key",
    "console login link",
];

/// An access key read from the CSV that IAM offers for download.
pub struct AccessKeyCsv {
    pub access_key_id: AccessKeyId,
    pub secret_access_key: SecretString,
}

impl fmt::Debug for AccessKeyCsv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeyCsv")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .finish()
    }
}

impl AccessKeyCsv {
    /// Parses the console's `Access key ID,Secret access key` file or the IAM
    /// user file `User name,Password,Access key ID,Secret access key,Console login link`,
    /// with or without a UTF-8 BOM, CRLF line ends and spaces around fields.
    /// Messages never include the secret.
    pub fn parse(raw: &[u8]) -> Result<Self, InvalidInput> {
        const FIELD: &str = "csv";
        let expected = "expected the CSV that IAM offers for download, with the header 'Access key ID,Secret access key' and one row";
        if raw.len() > MAX_CSV_BYTES {
            return Err(InvalidInput::new(
                FIELD,
                format!("the CSV is larger than {MAX_CSV_BYTES} bytes: {expected}"),
            ));
        }
        let text = std::str::from_utf8(raw).map_err(|_| {
            InvalidInput::new(FIELD, format!("the CSV is not UTF-8 text: {expected}"))
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rows = text
            .split('\n')
            .map(|line| line.trim_end_matches('\r'))
            .filter(|line| !line.trim().is_empty());
        let header = rows
            .next()
            .ok_or_else(|| InvalidInput::new(FIELD, format!("the CSV is empty: {expected}")))?;
        let columns: Vec<String> = split_csv_line(header)
            .into_iter()
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        // Only the columns of IAM's two files: a column of any other name (or
        // one named twice) means a file edited or made by hand, whose fields
        // keyhold cannot be sure it reads right.
        for (i, column) in columns.iter().enumerate() {
            if !IAM_CSV_COLUMNS.contains(&column.as_str()) {
                // Named by its place, not its text: a file given by mistake
                // (or on purpose) must not be echoed back.
                return Err(InvalidInput::new(
                    FIELD,
                    format!(
                        "column {} of the CSV's header is not one of IAM's ('Access key ID', 'Secret access key', 'User name', 'Password', 'Console login link'): {expected}",
                        i + 1
                    ),
                ));
            }
            if columns[..i].contains(column) {
                return Err(InvalidInput::new(
                    FIELD,
                    format!("the CSV has the column '{column}' twice: {expected}"),
                ));
            }
        }
        let position = |name: &str| columns.iter().position(|c| c == name);
        let (Some(id_col), Some(secret_col)) =
            (position("access key id"), position("secret access key"))
        else {
            return Err(InvalidInput::new(
                FIELD,
                format!(
                    "the CSV header has no 'Access key ID' and 'Secret access key' columns: {expected}"
                ),
            ));
        };
        let row = rows.next().ok_or_else(|| {
            InvalidInput::new(
                FIELD,
                format!("the CSV has a header but no access key row: {expected}"),
            )
        })?;
        if rows.next().is_some() {
            return Err(InvalidInput::new(
                FIELD,
                "the CSV holds more than one access key: import one credential per file",
            ));
        }
        let fields = split_csv_line(row);
        if fields.len() != columns.len() {
            return Err(InvalidInput::new(
                FIELD,
                format!(
                    "the CSV row has {} fields but the header has {}: {expected}",
                    fields.len(),
                    columns.len()
                ),
            ));
        }
        let access_key_id = AccessKeyId::parse(fields[id_col].trim())?;
        let secret = fields[secret_col].trim();
        if secret.len() < 16
            || secret.len() > 128
            || secret.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(InvalidInput::new(
                FIELD,
                "the secret access key in the CSV is not well formed (16 to 128 printable characters): check that the file was not edited",
            ));
        }
        Ok(Self {
            access_key_id,
            secret_access_key: SecretString::from(secret.to_owned()),
        })
    }

    pub fn secret(&self) -> &str {
        self.secret_access_key.expose_secret()
    }
}

/// Splits one CSV line on commas, honouring double quotes (IAM quotes nothing,
/// but spreadsheets that re-save the file do).
fn split_csv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    fields.push(current);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    #[test]
    fn reads_console_and_iam_user_files() {
        let variants = [
            format!("Access key ID,Secret access key\nAKIAIOSFODNN7EXAMPLE,{SECRET}\n"),
            format!("\u{feff}Access key ID,Secret access key\r\nAKIAIOSFODNN7EXAMPLE,{SECRET}\r\n"),
            format!("Access key ID , Secret access key \n  AKIAIOSFODNN7EXAMPLE , {SECRET}  \n\n"),
            format!(
                "User name,Password,Access key ID,Secret access key,Console login link\nbob,,AKIAIOSFODNN7EXAMPLE,{SECRET},https://123.signin.aws.amazon.com/console\n"
            ),
            format!(
                "\"Access key ID\",\"Secret access key\"\n\"AKIAIOSFODNN7EXAMPLE\",\"{SECRET}\""
            ),
        ];
        for v in variants {
            let csv = AccessKeyCsv::parse(v.as_bytes()).unwrap();
            assert_eq!(csv.access_key_id.as_str(), "AKIAIOSFODNN7EXAMPLE");
            assert_eq!(csv.secret(), SECRET);
        }
    }

    #[test]
    fn refuses_malformed_files_without_echoing_the_secret() {
        let cases = [
            String::new(),
            "Access key ID,Secret access key\n".to_owned(),
            format!("Key,Value\nAKIAIOSFODNN7EXAMPLE,{SECRET}\n"),
            "Access key ID,Secret access key\nAKIAIOSFODNN7EXAMPLE\n".to_owned(),
            format!("Access key ID,Secret access key\nAKIA IOSFODNN7EXAMPLE,{SECRET}\n"),
            format!(
                "Access key ID,Secret access key\nAKIAIOSFODNN7EXAMPLE,{SECRET}\nAKIAIOSFODNN7EXAMPLF,{SECRET}\n"
            ),
            "Access key ID,Secret access key\nAKIAIOSFODNN7EXAMPLE,short\n".to_owned(),
            // Extra columns, in the header and the row alike, or only in the row.
            format!("Access key ID,Secret access key,Note\nAKIAIOSFODNN7EXAMPLE,{SECRET},x\n"),
            format!("Access key ID,Secret access key,\nAKIAIOSFODNN7EXAMPLE,{SECRET},\n"),
            format!("Access key ID,Secret access key\nAKIAIOSFODNN7EXAMPLE,{SECRET},extra\n"),
            format!(
                "Access key ID,Secret access key,Secret access key\nAKIAIOSFODNN7EXAMPLE,{SECRET},{SECRET}\n"
            ),
        ];
        for c in cases {
            let err = AccessKeyCsv::parse(c.as_bytes()).unwrap_err();
            assert!(!err.message.contains(SECRET), "{}", err.message);
            assert!(!err.message.is_empty());
        }
        assert!(AccessKeyCsv::parse(&[0xff, 0xfe, 0x00]).is_err());
        assert!(AccessKeyCsv::parse(&vec![b'a'; MAX_CSV_BYTES + 1]).is_err());
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let csv = AccessKeyCsv::parse(
            format!("Access key ID,Secret access key\nAKIAIOSFODNN7EXAMPLE,{SECRET}").as_bytes(),
        )
        .unwrap();
        assert!(!format!("{csv:?}").contains(SECRET));
    }

    #[test]
    fn endpoint_rules() {
        assert!(Endpoint::parse("https://kms.eu-west-1.amazonaws.com").is_ok());
        assert!(Endpoint::parse("http://127.0.0.1:4566/").is_ok());
        for bad in [
            "ftp://x",
            "kms.eu-west-1.amazonaws.com",
            "https://",
            "https://user:pw@host",
            "https://a b",
            "http://127.0.0.1:65536",
            "http://127.0.0.1:99999/",
            "https://kms.eu-west-1.amazonaws.com:0",
            "https://kms.eu-west-1.amazonaws.com:",
            "https://kms.eu-west-1.amazonaws.com:+443",
            "https://[::1]:70000",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        for ok in [
            "http://127.0.0.1:65535",
            "https://[::1]:443/",
            "https://[::1]",
            "https://kms.eu-west-1.amazonaws.com:443",
        ] {
            assert!(Endpoint::parse(ok).is_ok(), "{ok}");
        }
        assert!(
            Endpoint::parse("http://127.0.0.1:99999")
                .unwrap_err()
                .message
                .contains("1 to 65535")
        );
    }

    #[test]
    fn endpoint_overrides_must_be_allow_listed_and_https_unless_loopback_with_consent() {
        let ep = |raw: &str| Endpoint::parse(raw).unwrap();
        let peer = ep("http://127.0.0.1:4566");
        let vpce = ep("https://vpce-0abc.kms.eu-west-1.vpce.amazonaws.com");
        // Plain HTTP beyond loopback cannot even be configured.
        let err = EndpointPolicy::new(vec![ep("http://kms.example.com")], true).unwrap_err();
        assert!(err.message.contains("only over HTTPS"), "{}", err.message);
        let err = EndpointPolicy::new(vec![ep("http://localhost:4566")], true).unwrap_err();
        assert!(err.message.contains("loopback"), "{}", err.message);
        // Plain HTTP to loopback needs the operator's consent.
        let err = EndpointPolicy::new(vec![peer.clone()], false).unwrap_err();
        assert!(
            err.message.contains("kms_endpoint_allow_plain_http"),
            "{}",
            err.message
        );
        let policy = EndpointPolicy::new(vec![peer.clone(), vpce.clone()], true).unwrap();
        assert!(policy.check(&peer).is_ok());
        assert!(
            policy
                .check(&ep("https://VPCE-0abc.kms.eu-west-1.vpce.amazonaws.com/"))
                .is_ok()
        );
        assert!(policy.check(&ep("http://[::1]:4566")).is_err());
        for refused in [
            "http://127.0.0.1:4567",
            "https://evil.example.com",
            "https://vpce-0abc.kms.eu-west-1.vpce.amazonaws.com.evil.example.com",
            "https://vpce-0abc.kms.eu-west-1.vpce.amazonaws.com/other",
        ] {
            let err = policy.check(&ep(refused)).unwrap_err();
            assert_eq!(err.field, "endpoint");
            assert!(
                err.message.contains("kms_endpoint_allow"),
                "{}",
                err.message
            );
            assert!(
                err.message.contains("KEYHOLD_KMS_ENDPOINT_ALLOW"),
                "{}",
                err.message
            );
        }
        let none = EndpointPolicy::none();
        let err = none.check(&vpce).unwrap_err();
        assert!(err.message.contains("allows none"), "{}", err.message);
        let err = none.check(&peer).unwrap_err();
        assert!(err.message.contains("plain HTTP"), "{}", err.message);
        assert!(ep("http://[::1]:1").is_loopback());
        assert!(ep("http://127.3.4.5").is_loopback());
        assert!(!ep("http://128.0.0.1").is_loopback());
    }

    #[test]
    fn role_arn_rules() {
        for ok in [
            "arn:aws:iam::123456789012:role/keyhold",
            "arn:aws:iam::123456789012:role/team/payments/keyhold-rotator",
            "arn:aws-cn:iam::123456789012:role/keyhold",
            "arn:aws-us-gov:iam::123456789012:role/a+b=c,d.e@f_g-h",
        ] {
            let arn = RoleArn::parse(ok).unwrap();
            assert_eq!(arn.as_str(), ok);
            assert_eq!(arn.account(), "123456789012");
        }
        let long_path = format!("arn:aws:iam::123456789012:role/{}/k", "p".repeat(2048));
        let long_name = format!("arn:aws:iam::123456789012:role/{}", "n".repeat(65));
        for (bad, why) in [
            ("", "not an ARN"),
            ("keyhold", "not an ARN"),
            ("arn:aws:iam::123456789012", "not an ARN"),
            (
                "urn:aws:iam::123456789012:role/k",
                "does not start with 'arn:'",
            ),
            (
                "arn:aws-eu:iam::123456789012:role/k",
                "not an AWS partition",
            ),
            ("arn:aws:sts::123456789012:role/k", "not an IAM ARN"),
            (
                "arn:aws:iam:eu-west-1:123456789012:role/k",
                "not an IAM ARN",
            ),
            ("arn:aws:iam::12345678901:role/k", "12-digit"),
            ("arn:aws:iam::1234567890123:role/k", "12-digit"),
            ("arn:aws:iam::12345678901x:role/k", "12-digit"),
            ("arn:aws:iam::123456789012:user/k", "not a role ARN"),
            ("arn:aws:iam::123456789012:role/", "empty"),
            ("arn:aws:iam::123456789012:role/team/", "empty"),
            ("arn:aws:iam::123456789012:role//k", "empty"),
            ("arn:aws:iam::123456789012:role/k y", "may only contain"),
            ("arn:aws:iam::123456789012:role/k:y", "may only contain"),
            ("arn:aws:iam::123456789012:role/ké", "may only contain"),
            (long_path.as_str(), "longer than 2048"),
            (long_name.as_str(), "longer than 64"),
        ] {
            let err = RoleArn::parse(bad).unwrap_err();
            assert_eq!(err.field, "role_arn", "{bad}");
            assert!(err.message.contains(why), "{bad}: {}", err.message);
            assert!(
                err.message.contains("arn:aws:iam::123456789012:role/"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn role_arns_go_through_serde_validated() {
        let ok: RoleArn =
            serde_json::from_str("\"arn:aws:iam::123456789012:role/keyhold\"").unwrap();
        assert_eq!(ok.to_string(), "arn:aws:iam::123456789012:role/keyhold");
        assert!(serde_json::from_str::<RoleArn>("\"arn:aws:iam::1:role/k\"").is_err());
    }

    #[test]
    fn default_chain_labels_and_access_names() {
        let plain = CredentialKind::DefaultChain { role_arn: None };
        assert_eq!(plain.label(), "default_chain");
        assert_eq!(plain.access_name(), "default credential chain");
        assert_eq!(plain.role_arn(), None);
        let arn = RoleArn::parse("arn:aws:iam::123456789012:role/keyhold").unwrap();
        let role = CredentialKind::DefaultChain {
            role_arn: Some(arn.clone()),
        };
        assert_eq!(role.label(), "default_chain");
        assert_eq!(role.access_name(), arn.as_str());
        assert_eq!(role.role_arn(), Some(&arn));
        let key = CredentialKind::AccessKey {
            access_key_id: AccessKeyId::parse("AKIAIOSFODNN7EXAMPLE").unwrap(),
            sealed_secret: vec![1],
        };
        assert_eq!(key.label(), "access_key");
        assert_eq!(key.role_arn(), None);
    }

    proptest! {
        #[test]
        fn role_arns_from_the_alphabet_are_accepted(
            partition in "aws|aws-cn|aws-us-gov",
            account in "[0-9]{12}",
            path in "([A-Za-z0-9+=,.@_-]{1,20}/){0,3}",
            name in "[A-Za-z0-9+=,.@_-]{1,64}",
        ) {
            let raw = format!("arn:{partition}:iam::{account}:role/{path}{name}");
            let arn = RoleArn::parse(&raw).unwrap();
            prop_assert_eq!(arn.as_str(), raw.as_str());
            prop_assert_eq!(arn.account(), account.as_str());
        }

        #[test]
        fn parsed_role_arns_keep_the_rules(raw in "(arn:aws(-cn|-us-gov|-eu)?:iam::[0-9x]{11,13}:role/)?\\PC{0,80}") {
            match RoleArn::parse(&raw) {
                Ok(arn) => {
                    prop_assert!(arn.as_str().len() <= MAX_ROLE_ARN_LEN);
                    prop_assert_eq!(arn.account().len(), 12);
                    prop_assert!(arn.as_str().chars().all(|c| c.is_ascii_graphic()));
                }
                Err(e) => {
                    prop_assert_eq!(e.field, "role_arn");
                    prop_assert!(!e.message.chars().any(char::is_control));
                }
            }
        }

        #[test]
        fn endpoint_ports_are_1_to_65535(port in 0u32..200_000) {
            let parsed = Endpoint::parse(&format!("https://kms.example.com:{port}/"));
            prop_assert_eq!(parsed.is_ok(), (1..=65_535).contains(&port));
            let parsed = Endpoint::parse(&format!("http://[::1]:{port}"));
            prop_assert_eq!(parsed.is_ok(), (1..=65_535).contains(&port));
        }

        #[test]
        fn a_csv_with_a_column_iam_does_not_write_is_refused(
            extra in "[A-Za-z ]{1,20}",
            at in 0usize..3,
        ) {
            prop_assume!(!IAM_CSV_COLUMNS.contains(&extra.trim().to_ascii_lowercase().as_str()));
            let mut header = vec!["Access key ID", "Secret access key"];
            let mut row = vec!["AKIAIOSFODNN7EXAMPLE", SECRET];
            header.insert(at.min(2), &extra);
            row.insert(at.min(2), "value");
            let csv = format!("{}\n{}\n", header.join(","), row.join(","));
            let err = AccessKeyCsv::parse(csv.as_bytes()).unwrap_err();
            prop_assert!(err.message.contains("column"), "{}", err.message);
            prop_assert!(!err.message.contains(SECRET));
        }

        #[test]
        fn csv_parser_never_panics(raw in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = AccessKeyCsv::parse(&raw);
        }
    }
}
