//! An XKS request as KMS's side of the wire sends it: the path, the
//! `Authorization` header and the JSON body. The input is split at its first
//! two newlines into those three; the whole input is also tried as a body.
//!
//! Checks: nothing panics; a route keeps the path's text (its prefix is the
//! path's start, a key id fits the specification's characters and length);
//! a decoded body keeps keyhold's limits (plaintext and ciphertext at most
//! 64 KiB, AAD at most 65,535 bytes and its keystore AAD three bytes longer);
//! a parsed `Authorization` has its parts in shape, and a signature made of
//! fuzz input never verifies; every refusal's error body is printable ASCII
//! under 512 characters, with the name and status of the specification's
//! table.
#![no_main]

use chrono::NaiveDate;
use keyhold_xks::decode::{MAX_AAD_LEN, MAX_PLAINTEXT_LEN};
use keyhold_xks::route::MAX_KEY_ID_LEN;
use keyhold_xks::sigv4::{Authorization, SignedRequest, verify};
use keyhold_xks::{Route, XksError, route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let authorization = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();

    check_route(&path);
    for candidate in [body, data] {
        check_bodies(candidate);
    }
    check_signature(&path, &authorization, body);
});

fn check_route(path: &str) {
    let Some(found) = route(path) else {
        return;
    };
    let prefix = found.prefix();
    assert!(path.starts_with(prefix), "{path:?} routed under {prefix:?}");
    assert!(path[prefix.len()..].starts_with("/kms/xks/v1"));
    match found {
        Route::Health { .. } => assert_eq!(&path[prefix.len()..], "/kms/xks/v1/health"),
        Route::Key {
            key_id, operation, ..
        } => {
            assert!((1..=MAX_KEY_ID_LEN).contains(&key_id.len()));
            assert!(
                key_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            );
            let expected = format!("{prefix}/kms/xks/v1/keys/{key_id}/{}", operation.as_str());
            assert_eq!(path, expected);
        }
        Route::Invalid { .. } => {}
    }
}

fn check_bodies(body: &[u8]) {
    match keyhold_xks::parse_encrypt(body) {
        Ok(input) => {
            assert!(input.plaintext().len() <= MAX_PLAINTEXT_LEN);
            assert!(input.aad().len() <= MAX_AAD_LEN);
            assert_eq!(input.keystore_aad().len(), input.aad().len() + 3);
        }
        Err(error) => check_error(&error),
    }
    match keyhold_xks::parse_decrypt(body) {
        Ok(input) => {
            assert!(input.sealed().ciphertext.len() <= MAX_PLAINTEXT_LEN);
            assert!(input.aad().len() <= MAX_AAD_LEN);
        }
        Err(error) => check_error(&error),
    }
    if let Err(error) = keyhold_xks::parse_key_metadata(body) {
        check_error(&error);
    }
    if let Err(error) = keyhold_xks::parse_health(body) {
        check_error(&error);
    }
}

fn check_signature(path: &str, authorization: &str, body: &[u8]) {
    let auth = match Authorization::parse(authorization) {
        Ok(auth) => auth,
        Err(error) => {
            assert!(
                matches!(error, XksError::AuthenticationFailed(_)),
                "{error:?}"
            );
            check_error(&error);
            return;
        }
    };
    assert!(!auth.access_key_id().is_empty());
    assert_eq!(auth.date().len(), 8);
    assert!(!auth.region().is_empty() && !auth.service().is_empty());
    let date = format!("{}T120000Z", auth.date());
    let headers: [(&str, &[u8]); 2] = [
        ("host", b"xks.example.com"),
        ("x-amz-date", date.as_bytes()),
    ];
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let request = SignedRequest {
        method: "POST",
        path,
        query,
        headers: &headers,
        body,
    };
    // Noon of the credential's day, so the date checks pass and the
    // canonical request and the HMACs are reached.
    let now = NaiveDate::parse_from_str(auth.date(), "%Y%m%d")
        .ok()
        .and_then(|day| day.and_hms_opt(12, 0, 0))
        .map(|noon| noon.and_utc())
        .unwrap_or_default();
    // A signature taken from the input never matches a secret it does not know.
    let error = verify(
        &auth,
        &request,
        b"FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE",
        now,
    )
    .expect_err("a fuzzed signature verified");
    assert!(
        matches!(error, XksError::AuthenticationFailed(_)),
        "{error:?}"
    );
    check_error(&error);
}

fn check_error(error: &XksError) {
    let body = error.body();
    assert_eq!(body.error_name, error.name());
    assert!(!body.error_message.is_empty());
    assert!(body.error_message.len() < 512, "{}", body.error_message);
    assert!(
        body.error_message
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b)),
        "{:?}",
        body.error_message
    );
    assert!(matches!(
        error.status(),
        400 | 401 | 403 | 404 | 429 | 500 | 501 | 503
    ));
}
