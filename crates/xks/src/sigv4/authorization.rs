//! The `Authorization` header of a SigV4-signed request, parsed without
//! copying: `AWS4-HMAC-SHA256 Credential=<akid>/<yyyymmdd>/<region>/<service>/aws4_request,
//! SignedHeaders=<names;...>, Signature=<64 hex>`.
//!
//! Strict about content, lenient only about the whitespace signers put
//! between the parts (spaces or tabs after the algorithm and around commas).

use super::{ALGORITHM, fail};
use crate::XksError;

/// Longest `Authorization` header read (KMS's is about 200 characters).
pub const MAX_AUTHORIZATION_LEN: usize = 4096;
/// Longest access key id accepted (KMS's rule is 20 to 30).
const MAX_ACCESS_KEY_ID_LEN: usize = 128;
/// Longest region or service name accepted.
const MAX_SCOPE_PART_LEN: usize = 64;

/// A parsed `Authorization` header. Its signature is not secret (it is
/// sent in the clear), so `Debug` is fine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: &'a str,
    signature: [u8; 32],
}

impl<'a> Authorization<'a> {
    /// Parses the header's value. Every refusal is
    /// `AuthenticationFailedException` saying which part is wrong.
    pub fn parse(header: &'a str) -> Result<Self, XksError> {
        if header.len() > MAX_AUTHORIZATION_LEN {
            return Err(fail("the Authorization header is too long"));
        }
        let header = header.trim_matches(is_space);
        let Some(after_algorithm) = header.strip_prefix(ALGORITHM) else {
            return Err(fail(
                "the Authorization header is not AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...",
            ));
        };
        let components = after_algorithm.trim_start_matches(is_space);
        if components.len() == after_algorithm.len() {
            return Err(fail(
                "the Authorization header needs a space between AWS4-HMAC-SHA256 and Credential",
            ));
        }
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for component in components.split(',') {
            let component = component.trim_matches(is_space);
            let Some((name, value)) = component.split_once('=') else {
                return Err(fail(
                    "the Authorization header has a part that is not Name=value",
                ));
            };
            let slot = match name {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                _ => {
                    return Err(fail(
                        "the Authorization header has a part other than Credential, SignedHeaders and Signature",
                    ));
                }
            };
            if value.is_empty() || value.contains(is_space) {
                return Err(fail(format!(
                    "the Authorization header's {name} is empty or has spaces"
                )));
            }
            if slot.replace(value).is_some() {
                return Err(fail(format!("the Authorization header has {name} twice")));
            }
        }
        let (Some(credential), Some(signed_headers), Some(signature)) =
            (credential, signed_headers, signature)
        else {
            return Err(fail(
                "the Authorization header lacks one of Credential, SignedHeaders and Signature",
            ));
        };
        let (access_key_id, date, region, service) = parse_credential(credential)?;
        check_signed_headers(signed_headers)?;
        Ok(Self {
            access_key_id,
            date,
            region,
            service,
            signed_headers,
            signature: parse_signature(signature)?,
        })
    }

    /// The access key id, to look the secret up by (not yet authenticated).
    pub fn access_key_id(&self) -> &'a str {
        self.access_key_id
    }

    /// The credential scope's date, `yyyymmdd`.
    pub fn date(&self) -> &'a str {
        self.date
    }

    /// The AWS Region KMS signed from.
    pub fn region(&self) -> &'a str {
        self.region
    }

    /// The credential scope's service (XKS requires `kms-xks-proxy`).
    pub fn service(&self) -> &'a str {
        self.service
    }

    /// `SignedHeaders` as sent: lowercase names, sorted, `;`-separated.
    pub fn signed_headers(&self) -> &'a str {
        self.signed_headers
    }

    pub(super) fn signature(&self) -> &[u8; 32] {
        &self.signature
    }

    /// Whether `name` (lowercase) is among the signed headers.
    pub fn signs(&self, name: &str) -> bool {
        self.signed_headers.split(';').any(|signed| signed == name)
    }
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// `<akid>/<yyyymmdd>/<region>/<service>/aws4_request`.
fn parse_credential(credential: &str) -> Result<(&str, &str, &str, &str), XksError> {
    let mut parts = credential.split('/');
    let (Some(access_key_id), Some(date), Some(region), Some(service), Some(terminator), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(fail(
            "the Credential is not <access key id>/<yyyymmdd>/<region>/<service>/aws4_request",
        ));
    };
    if access_key_id.is_empty()
        || access_key_id.len() > MAX_ACCESS_KEY_ID_LEN
        || !access_key_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(fail("the Credential's access key id is malformed"));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail("the Credential's date is not yyyymmdd"));
    }
    let scope_part = |part: &str| {
        !part.is_empty()
            && part.len() <= MAX_SCOPE_PART_LEN
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !scope_part(region) {
        return Err(fail("the Credential's region is malformed"));
    }
    if !scope_part(service) {
        return Err(fail("the Credential's service is malformed"));
    }
    if terminator != "aws4_request" {
        return Err(fail("the Credential does not end in aws4_request"));
    }
    Ok((access_key_id, date, region, service))
}

/// Lowercase header names, strictly ascending (sorted, no repeats), as
/// every SigV4 signer writes them; the list is part of what is signed, so
/// it is never reordered here.
fn check_signed_headers(signed_headers: &str) -> Result<(), XksError> {
    let mut previous: Option<&str> = None;
    for name in signed_headers.split(';') {
        let token = !name.is_empty()
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
            });
        if !token {
            return Err(fail(
                "SignedHeaders has a name that is empty or not a lowercase header name",
            ));
        }
        if previous.is_some_and(|previous| previous >= name) {
            return Err(fail("SignedHeaders is not sorted or repeats a name"));
        }
        previous = Some(name);
    }
    Ok(())
}

/// 64 lowercase hex digits, as signers write them.
fn parse_signature(signature: &str) -> Result<[u8; 32], XksError> {
    let lowercase_hex = signature.len() == 64
        && signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let mut bytes = [0u8; 32];
    if !lowercase_hex || hex::decode_to_slice(signature, &mut bytes).is_err() {
        return Err(fail("the Signature is not 64 lowercase hex digits"));
    }
    Ok(bytes)
}
