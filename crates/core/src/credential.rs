//! Cloud credentials: how keyhold authenticates to AWS for a key group.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::clock::Timestamp;
use crate::error::InvalidInput;
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
        "aws"
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
}

impl CredentialKind {
    pub fn label(&self) -> &'static str {
        match self {
            Self::AccessKey { .. } => "access_key",
        }
    }
    /// The "Access Name" column: what identifies the credential to AWS.
    pub fn access_name(&self) -> &str {
        match self {
            Self::AccessKey { access_key_id, .. } => access_key_id.as_str(),
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
        Ok(Self(raw.trim_end_matches('/').to_owned()))
    }
}

string_newtype!(Endpoint);

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
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn csv_parser_never_panics(raw in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = AccessKeyCsv::parse(&raw);
        }
    }
}
