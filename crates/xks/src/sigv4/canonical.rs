//! The canonical request of SigV4 (non-S3 rules), hashed.
//!
//! - URI: the path as sent, each byte outside RFC 3986's unreserved set
//!   (`A-Z a-z 0-9 - . _ ~`) and `/` percent-encoded with uppercase hex.
//!   The path on the wire is already encoded once, so this is AWS's
//!   "encode twice" (`%` becomes `%25`); XKS paths hold only unreserved
//!   characters and come out unchanged. No dot-segment normalization: a
//!   path with `.` or `..` segments is never a valid XKS path, and if its
//!   signer normalized it the signature simply does not match.
//! - Query: empty for XKS; otherwise each `name=value` is percent-decoded
//!   (`+` as a space, as the AWS SDK's signer reads it), re-encoded, and
//!   the pairs sorted.
//! - Headers: the signed ones in `SignedHeaders` order, lowercase name,
//!   values of repeated headers joined by `,`, each value trimmed of spaces
//!   with runs of spaces made one.

use sha2::{Digest, Sha256};

use super::{SignedRequest, fail};
use crate::XksError;

/// SHA-256 of the canonical request; `payload_hash` is the body's, in hex.
pub(super) fn hash(
    request: &SignedRequest<'_>,
    signed_headers: &str,
    payload_hash: &[u8],
) -> Result<[u8; 32], XksError> {
    // One buffer, sized for a typical XKS request, then hashed at once.
    let mut canonical = Vec::with_capacity(
        256 + request.path.len() * 3 + request.query.len() * 3 + signed_headers.len() * 2,
    );
    canonical.extend_from_slice(request.method.as_bytes());
    canonical.push(b'\n');
    encode_path(request.path, &mut canonical);
    canonical.push(b'\n');
    encode_query(request.query, &mut canonical);
    canonical.push(b'\n');
    for name in signed_headers.split(';') {
        canonical.extend_from_slice(name.as_bytes());
        canonical.push(b':');
        let mut found = false;
        for &(header, value) in request.headers {
            if header.eq_ignore_ascii_case(name) {
                if found {
                    canonical.push(b',');
                }
                found = true;
                push_trimmed(value, &mut canonical);
            }
        }
        if !found {
            return Err(fail(format!(
                "the signed header {name} is not in the request"
            )));
        }
        canonical.push(b'\n');
    }
    canonical.push(b'\n');
    canonical.extend_from_slice(signed_headers.as_bytes());
    canonical.push(b'\n');
    canonical.extend_from_slice(payload_hash);
    Ok(Sha256::digest(&canonical).into())
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn push_encoded(byte: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[
        b'%',
        HEX[usize::from(byte >> 4)],
        HEX[usize::from(byte & 0x0f)],
    ]);
}

fn encode_path(path: &str, out: &mut Vec<u8>) {
    if path.is_empty() {
        out.push(b'/');
        return;
    }
    for &byte in path.as_bytes() {
        if is_unreserved(byte) || byte == b'/' {
            out.push(byte);
        } else {
            push_encoded(byte, out);
        }
    }
}

fn encode_query(query: &str, out: &mut Vec<u8>) {
    if query.is_empty() {
        return;
    }
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (reencode(name), reencode(value))
        })
        .collect();
    pairs.sort();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(name);
        out.push(b'=');
        out.extend_from_slice(value);
    }
}

/// Percent-decodes (`+` is a space; a `%` not followed by two hex digits
/// stays itself) and encodes again with the unreserved set.
fn reencode(component: &str) -> Vec<u8> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3);
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let decoded = match byte {
            b'+' => b' ',
            b'%' => match (
                bytes.get(i + 1).and_then(|&h| hex_value(h)),
                bytes.get(i + 2).and_then(|&l| hex_value(l)),
            ) {
                (Some(high), Some(low)) => {
                    i += 2;
                    (high << 4) | low
                }
                _ => b'%',
            },
            other => other,
        };
        if is_unreserved(decoded) {
            out.push(decoded);
        } else {
            push_encoded(decoded, &mut out);
        }
        i += 1;
    }
    out
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Trims spaces at both ends and makes each run of spaces one.
fn push_trimmed(value: &[u8], out: &mut Vec<u8>) {
    let mut previous_space = false;
    let start = value.iter().position(|&b| b != b' ').unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(start, |last| last + 1);
    for &byte in value.get(start..end).unwrap_or_default() {
        let space = byte == b' ';
        if !(space && previous_space) {
            out.push(byte);
        }
        previous_space = space;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trimmed(value: &str) -> String {
        let mut out = Vec::new();
        push_trimmed(value.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn header_values_are_trimmed_and_their_space_runs_collapsed() {
        assert_eq!(trimmed("  a   b c  "), "a b c");
        assert_eq!(trimmed("\"a   b   c\""), "\"a b c\"");
        assert_eq!(trimmed("   "), "");
        assert_eq!(trimmed(""), "");
        assert_eq!(trimmed("x"), "x");
    }

    #[test]
    fn paths_are_encoded_as_aws_encodes_them_for_non_s3_services() {
        let encoded = |path: &str| {
            let mut out = Vec::new();
            encode_path(path, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(encoded(""), "/");
        assert_eq!(
            encoded("/xks/p_1/kms/xks/v1/keys/A.b-c_d~e/encrypt"),
            "/xks/p_1/kms/xks/v1/keys/A.b-c_d~e/encrypt"
        );
        // The AWS test suite's double-encode-path and double-url-encode cases.
        assert_eq!(
            encoded("/test/@connections/JBDvjfGEIAMCERw%3D"),
            "/test/%40connections/JBDvjfGEIAMCERw%253D"
        );
        assert_eq!(
            encoded("/2015-03-31/functions/arn%3Aaws%3Alambda/invocations"),
            "/2015-03-31/functions/arn%253Aaws%253Alambda/invocations"
        );
    }

    #[test]
    fn queries_are_decoded_reencoded_and_sorted() {
        let encoded = |query: &str| {
            let mut out = Vec::new();
            encode_query(query, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(encoded(""), "");
        assert_eq!(
            encoded("Param-3=Value3&Param=Value2&%E1%88%B4=Value1"),
            "%E1%88%B4=Value1&Param=Value2&Param-3=Value3"
        );
        assert_eq!(encoded("b&a=1&&a=0"), "a=0&a=1&b=");
        assert_eq!(encoded("x=a+b%2"), "x=a%20b%252");
    }
}
