//! Verification of AWS Signature Version 4 as KMS signs XKS requests
//! (Appendix A): service `kms-xks-proxy`, `SignedHeaders` at least
//! `host;x-amz-date`, the body's SHA-256 in the canonical request, and a
//! timestamp within five minutes of the proxy's clock.
//!
//! The server's sequence:
//! 1. [`Authorization::parse`] the `Authorization` header;
//! 2. look the secret up by [`Authorization::access_key_id`] within the
//!    store the path names (unknown id: `AuthenticationFailed` too);
//! 3. [`verify`] with the request as received and `now` from its clock.
//!
//! Cost: the signing key is derived afresh on every call (four HMACs). A
//! whole verification of an Encrypt request measured about 3 µs in a
//! release build, 1 µs of it the key derivation: at KMS's default 1,800
//! requests per second that is about half a percent of one core. So there
//! is no cache of derived keys, and no derived secrets to keep in memory,
//! evict, or invalidate when a credential is revoked.

mod authorization;
mod canonical;
#[cfg(test)]
mod tests;

use chrono::{DateTime, NaiveDate, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use authorization::{Authorization, MAX_AUTHORIZATION_LEN};

use crate::XksError;

/// The service name in KMS's credential scope for XKS.
pub const SERVICE: &str = "kms-xks-proxy";
/// The only SigV4 algorithm KMS uses.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far `x-amz-date` may be from the proxy's clock, either way (the
/// specification's five minutes against replay, allowing for clock drift).
pub const MAX_CLOCK_SKEW_SECONDS: i64 = 300;

type HmacSha256 = Hmac<Sha256>;

/// A request as received, borrowed from the server's request.
#[derive(Clone, Copy, Debug)]
pub struct SignedRequest<'a> {
    /// As sent (`POST`).
    pub method: &'a str,
    /// The raw path, as sent (still percent-encoded, if it was).
    pub path: &'a str,
    /// The raw query without `?`; empty for XKS.
    pub query: &'a str,
    /// Every header as received, any case, in order; repeated names stay
    /// repeated. Over HTTP/2 there is no `Host` header: pass the request
    /// URI's authority as `host`.
    pub headers: &'a [(&'a str, &'a [u8])],
    pub body: &'a [u8],
}

/// Verifies `request`'s signature under `secret` (the credential's secret
/// access key, as text bytes) at `now`. Every refusal is
/// `AuthenticationFailed` with a caller-safe reason; none reveals the
/// signature keyhold expected.
pub fn verify(
    authorization: &Authorization<'_>,
    request: &SignedRequest<'_>,
    secret: &[u8],
    now: DateTime<Utc>,
) -> Result<(), XksError> {
    if authorization.service() != SERVICE {
        return Err(fail(format!("the Credential's service is not {SERVICE}")));
    }
    verify_signature(authorization, request, secret, now)
}

/// Everything but the service name (so AWS's generic test vectors apply).
fn verify_signature(
    authorization: &Authorization<'_>,
    request: &SignedRequest<'_>,
    secret: &[u8],
    now: DateTime<Utc>,
) -> Result<(), XksError> {
    for required in ["host", "x-amz-date"] {
        if !authorization.signs(required) {
            return Err(fail(format!("SignedHeaders does not include {required}")));
        }
    }
    let amz_date = single_header(request, "x-amz-date")?
        .ok_or_else(|| fail("the x-amz-date header is missing"))?;
    let signed_at =
        parse_amz_date(amz_date).ok_or_else(|| fail("x-amz-date is not yyyymmddThhmmssZ"))?;
    let skew = now.signed_duration_since(signed_at).num_milliseconds();
    if skew.unsigned_abs() > MAX_CLOCK_SKEW_SECONDS.unsigned_abs() * 1000 {
        return Err(fail(
            "x-amz-date is more than 5 minutes away from the proxy's clock",
        ));
    }
    if amz_date.get(..8) != Some(authorization.date()) {
        return Err(fail("the Credential's date is not x-amz-date's date"));
    }

    let mut payload_hash = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(request.body), &mut payload_hash)
        .map_err(|_| XksError::Internal)?;
    if let Some(claimed) = single_header(request, "x-amz-content-sha256")?
        && claimed.as_bytes() != payload_hash
    {
        return Err(fail("x-amz-content-sha256 is not the SHA-256 of the body"));
    }
    let canonical = canonical::hash(request, authorization.signed_headers(), &payload_hash)?;
    let mut canonical_hex = [0u8; 64];
    hex::encode_to_slice(canonical, &mut canonical_hex).map_err(|_| XksError::Internal)?;

    let key = signing_key(
        secret,
        authorization.date(),
        authorization.region(),
        authorization.service(),
    )?;
    let mut mac = HmacSha256::new_from_slice(key.as_ref()).map_err(|_| XksError::Internal)?;
    for part in [
        ALGORITHM.as_bytes(),
        b"\n",
        amz_date.as_bytes(),
        b"\n",
        authorization.date().as_bytes(),
        b"/",
        authorization.region().as_bytes(),
        b"/",
        authorization.service().as_bytes(),
        b"/aws4_request\n",
        &canonical_hex,
    ] {
        mac.update(part);
    }
    // Constant time: the comparison reveals nothing of the expected value.
    mac.verify_slice(authorization.signature())
        .map_err(|_| fail("the signature does not match"))
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
fn signing_key(
    secret: &[u8],
    date: &str,
    region: &str,
    service: &str,
) -> Result<Zeroizing<[u8; 32]>, XksError> {
    let mut secret_key = Zeroizing::new(Vec::with_capacity(4 + secret.len()));
    secret_key.extend_from_slice(b"AWS4");
    secret_key.extend_from_slice(secret);
    let date_key = hmac(&secret_key, date.as_bytes())?;
    let region_key = hmac(date_key.as_ref(), region.as_bytes())?;
    let service_key = hmac(region_key.as_ref(), service.as_bytes())?;
    hmac(service_key.as_ref(), b"aws4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> Result<Zeroizing<[u8; 32]>, XksError> {
    // HMAC takes keys of any length; the error cannot happen.
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| XksError::Internal)?;
    mac.update(data);
    Ok(Zeroizing::new(mac.finalize().into_bytes().into()))
}

/// The one value of header `name` as text; two of them is a refusal (the
/// date and the payload hash must be unambiguous).
fn single_header<'a>(request: &SignedRequest<'a>, name: &str) -> Result<Option<&'a str>, XksError> {
    let mut values = request
        .headers
        .iter()
        .filter(|(header, _)| header.eq_ignore_ascii_case(name))
        .map(|&(_, value)| value);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(fail(format!("the request has more than one {name} header")));
    }
    std::str::from_utf8(value)
        .map(|text| Some(text.trim_matches(' ')))
        .map_err(|_| fail(format!("the {name} header is not text")))
}

/// `yyyymmddThhmmssZ`, exactly.
fn parse_amz_date(text: &str) -> Option<DateTime<Utc>> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes.get(8) != Some(&b'T') || bytes.get(15) != Some(&b'Z') {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = text.get(range)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let year = i32::try_from(number(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, number(4..6)?, number(6..8)?)?
        .and_hms_opt(number(9..11)?, number(11..13)?, number(13..15)?)
        .map(|time| time.and_utc())
}

/// An `AuthenticationFailed` with a fixed reason.
pub(crate) fn fail(reason: impl Into<String>) -> XksError {
    XksError::AuthenticationFailed(reason.into())
}
