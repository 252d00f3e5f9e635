//! Which XKS operation a request path names, and under which store prefix.
//!
//! The path is taken raw, as sent (no percent-decoding): every valid XKS
//! path is made of characters that never need encoding, so a `%` anywhere
//! in the part after `/kms/xks/v1` makes the path invalid rather than
//! something to decode and guess at.

use keyhold_core::xks::{URI_PATH_SUFFIX, XksOperation};

/// The specification's bound on an `externalKeyId`.
pub const MAX_KEY_ID_LEN: usize = 128;

/// An XKS request path, split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `<prefix>/kms/xks/v1/health`
    Health { prefix: &'a str },
    /// `<prefix>/kms/xks/v1/keys/<key_id>/<metadata|encrypt|decrypt>`; the
    /// key id fits the specification's characters and length (whether it
    /// names a key is the server's question).
    Key {
        prefix: &'a str,
        key_id: &'a str,
        operation: XksOperation,
    },
    /// Under `<prefix>/kms/xks/v1` but none of the API's paths (an unknown
    /// operation, a key id with other characters, extra segments): the
    /// server answers `InvalidUriPathException`, counted against `prefix`.
    Invalid { prefix: &'a str },
}

impl<'a> Route<'a> {
    /// The path before `/kms/xks/v1` (empty when there is none), as sent;
    /// the server looks its store up by it.
    pub fn prefix(&self) -> &'a str {
        match *self {
            Self::Health { prefix } | Self::Key { prefix, .. } | Self::Invalid { prefix } => prefix,
        }
    }
}

/// Splits `path` (without its query). `None` when it has no `/kms/xks/v1`
/// segment run at all: not an XKS path, for the server's other routes.
///
/// The last `/kms/xks/v1` is the one that counts: a store prefix may itself
/// contain those segments, and nothing after the real one can (key ids
/// have no `/`), so the last is right for every valid path.
pub fn route(path: &str) -> Option<Route<'_>> {
    let at = path
        .rmatch_indices(URI_PATH_SUFFIX)
        .map(|(at, _)| at)
        .find(|&at| {
            let end = at + URI_PATH_SUFFIX.len();
            end == path.len() || path.as_bytes().get(end) == Some(&b'/')
        })?;
    let prefix = path.get(..at)?;
    let rest = path.get(at + URI_PATH_SUFFIX.len()..)?;
    let invalid = Route::Invalid { prefix };
    if rest == "/health" {
        return Some(Route::Health { prefix });
    }
    let Some(key_path) = rest.strip_prefix("/keys/") else {
        return Some(invalid);
    };
    let mut segments = key_path.split('/');
    let (Some(key_id), Some(operation), None) = (segments.next(), segments.next(), segments.next())
    else {
        return Some(invalid);
    };
    if !is_key_id(key_id) {
        return Some(invalid);
    }
    let operation = match operation {
        "metadata" => XksOperation::Metadata,
        "encrypt" => XksOperation::Encrypt,
        "decrypt" => XksOperation::Decrypt,
        _ => return Some(invalid),
    };
    Some(Route::Key {
        prefix,
        key_id,
        operation,
    })
}

/// The specification's `externalKeyId`: 1 to 128 letters, digits, `-`, `.`, `_`.
fn is_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "b42c7fbf-de61-441c-ae24-123456789012";

    #[test]
    fn api_paths_split_into_prefix_key_and_operation() {
        assert_eq!(
            route("/xks/payments/kms/xks/v1/health"),
            Some(Route::Health {
                prefix: "/xks/payments"
            })
        );
        assert_eq!(
            route("/kms/xks/v1/health"),
            Some(Route::Health { prefix: "" })
        );
        for (op, operation) in [
            ("metadata", XksOperation::Metadata),
            ("encrypt", XksOperation::Encrypt),
            ("decrypt", XksOperation::Decrypt),
        ] {
            assert_eq!(
                route(&format!("/path/kms/xks/v1/keys/{KEY}/{op}")),
                Some(Route::Key {
                    prefix: "/path",
                    key_id: KEY,
                    operation
                })
            );
        }
        assert_eq!(
            route("/a/kms/xks/v1/keys/Key_1.v-2/encrypt").map(|r| r.prefix()),
            Some("/a")
        );
    }

    #[test]
    fn a_prefix_may_contain_the_api_segments_itself() {
        assert_eq!(
            route("/t/kms/xks/v1/kms/xks/v1/health"),
            Some(Route::Health {
                prefix: "/t/kms/xks/v1"
            })
        );
        assert_eq!(
            route("/t/kms/xks/v1/x/kms/xks/v1/keys/k/decrypt"),
            Some(Route::Key {
                prefix: "/t/kms/xks/v1/x",
                key_id: "k",
                operation: XksOperation::Decrypt
            })
        );
    }

    #[test]
    fn other_paths_under_the_api_are_invalid() {
        let long_id = "k".repeat(MAX_KEY_ID_LEN + 1);
        let max_id = "k".repeat(MAX_KEY_ID_LEN);
        assert!(matches!(
            route(&format!("/p/kms/xks/v1/keys/{max_id}/encrypt")),
            Some(Route::Key { .. })
        ));
        for path in [
            "/p/kms/xks/v1".to_owned(),
            "/p/kms/xks/v1/".to_owned(),
            "/p/kms/xks/v1/health/".to_owned(),
            "/p/kms/xks/v1/healthz".to_owned(),
            "/p/kms/xks/v1/keys".to_owned(),
            "/p/kms/xks/v1/keys/".to_owned(),
            format!("/p/kms/xks/v1/keys/{KEY}"),
            format!("/p/kms/xks/v1/keys/{KEY}/"),
            format!("/p/kms/xks/v1/keys/{KEY}/sign"),
            format!("/p/kms/xks/v1/keys/{KEY}/Encrypt"),
            format!("/p/kms/xks/v1/keys/{KEY}/encrypt/"),
            format!("/p/kms/xks/v1/keys/{KEY}/encrypt/more"),
            "/p/kms/xks/v1/keys//encrypt".to_owned(),
            "/p/kms/xks/v1/keys/a%2Db/encrypt".to_owned(),
            "/p/kms/xks/v1/keys/a,b/encrypt".to_owned(),
            "/p/kms/xks/v1/keys/a b/encrypt".to_owned(),
            "/p/kms/xks/v1/keys/é/encrypt".to_owned(),
            format!("/p/kms/xks/v1/keys/{long_id}/encrypt"),
        ] {
            assert_eq!(
                route(&path),
                Some(Route::Invalid { prefix: "/p" }),
                "{path}"
            );
        }
    }

    #[test]
    fn paths_without_the_api_segments_are_not_xks() {
        for path in [
            "",
            "/",
            "/api/v1/keys",
            "/kms/xks/v10/health",
            "/kms/xks/v1x",
            "/xkms/xks/v1/health",
        ] {
            assert_eq!(route(path), None, "{path}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_paths_never_panic_and_keep_their_prefix(path in "\\PC{0,80}(/kms/xks/v1)?\\PC{0,40}") {
            if let Some(found) = route(&path) {
                prop_assert!(path.starts_with(found.prefix()));
                prop_assert!(path[found.prefix().len()..].starts_with("/kms/xks/v1"));
            }
        }

        #[test]
        fn valid_paths_round_trip(
            prefix in "(/[A-Za-z0-9_-]{1,12}){0,3}",
            key_id in "[A-Za-z0-9._-]{1,128}",
            op in prop::sample::select(vec!["metadata", "encrypt", "decrypt"]),
        ) {
            let path = format!("{prefix}/kms/xks/v1/keys/{key_id}/{op}");
            match route(&path) {
                Some(Route::Key { prefix: p, key_id: k, operation }) => {
                    prop_assert_eq!(p, prefix.as_str());
                    prop_assert_eq!(k, key_id.as_str());
                    prop_assert_eq!(operation.as_str(), op);
                }
                other => prop_assert!(false, "{path} gave {other:?}"),
            }
        }
    }
}
