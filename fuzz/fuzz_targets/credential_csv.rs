//! The AWS console's access key CSV, as uploaded on *Cloud Credentials → Import*.
//!
//! Checks: a file that parses yields a well-formed id and secret, hides the
//! secret from `Debug`, and reads the same when written back the way a
//! spreadsheet would save it; a refused file gets a message that never holds
//! the secret. Each input is tried as given and with every `$` standing for a
//! marker secret, so the fuzzer reaches files whose secret is known.
#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;

use keyhold_core::credential::{AccessKeyCsv, MAX_CSV_BYTES};
use keyhold_fuzz::assert_refusal;
use libfuzzer_sys::fuzz_target;

/// A well-formed secret access key that no message has any reason to contain.
const MARKER: &str = "fUzZmArKeR/sEcReT+0123456789abcdefXYZ";
/// Length of the shortest piece of the marker a message must not contain:
/// a truncated echo of the secret leaks as surely as a whole one.
const LEAK_WINDOW: usize = 12;

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.contains(&b'$') {
        check(&with_marker(data));
    }
});

fn with_marker(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + MARKER.len());
    for &b in data {
        if b == b'$' {
            out.extend_from_slice(MARKER.as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

/// Every `LEAK_WINDOW`-byte piece of the marker, looked up once per piece of
/// the message rather than compared byte by byte (which the fuzzer's
/// comparison tracing makes slow).
fn secret_pieces() -> &'static HashSet<&'static [u8]> {
    static PIECES: OnceLock<HashSet<&'static [u8]>> = OnceLock::new();
    PIECES.get_or_init(|| MARKER.as_bytes().windows(LEAK_WINDOW).collect())
}

fn check(raw: &[u8]) {
    let shown = String::from_utf8_lossy(raw);
    match AccessKeyCsv::parse(raw) {
        Ok(csv) => {
            assert!(raw.len() <= MAX_CSV_BYTES);
            let id = csv.access_key_id.as_str();
            let secret = csv.secret();
            assert!(
                (16..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()),
                "access key id {id:?} from {shown:?}"
            );
            assert!(
                (16..=128).contains(&secret.len())
                    && !secret.chars().any(|c| c.is_whitespace() || c.is_control()),
                "secret {secret:?} from {shown:?}"
            );
            // Debug shows the (public) key id and a redaction mark, nothing
            // else: compared whole, since a secret may also occur inside the
            // key id ("AKIA2222…" with a secret of "2222…"), which is no leak.
            assert_eq!(
                format!("{csv:?}"),
                format!(
                    "AccessKeyCsv {{ access_key_id: {:?}, secret_access_key: \"[redacted]\" }}",
                    csv.access_key_id
                ),
                "Debug shows more than the key id"
            );

            let resaved = format!(
                "Access key ID,Secret access key\r\n\"{id}\",\"{}\"\r\n",
                secret.replace('"', "\"\"")
            );
            let again = AccessKeyCsv::parse(resaved.as_bytes())
                .unwrap_or_else(|e| panic!("{shown:?} parsed but {resaved:?} does not: {e}"));
            assert_eq!(again.access_key_id, csv.access_key_id);
            assert_eq!(again.secret(), secret);
        }
        Err(e) => {
            assert_refusal(&e, "csv", &shown);
            let secret_pieces = secret_pieces();
            assert!(
                !e.message
                    .as_bytes()
                    .windows(LEAK_WINDOW)
                    .any(|w| secret_pieces.contains(w)),
                "the message refusing {shown:?} holds part of the secret: {}",
                e.message
            );
        }
    }
}
