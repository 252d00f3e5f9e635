//! The errors of the XKS API: one variant per row of the specification's
//! error table, each with its HTTP status and `errorName`.
//!
//! Two texts per error: [`std::fmt::Display`] (thiserror) is for keyhold's own
//! log; [`XksError::body`] is what goes back to KMS, which logs it in the
//! customer's CloudWatch. The body carries a fixed sentence per variant and,
//! for the variants built with one, the caller-safe detail; never anything
//! from inside keyhold (a keystore's message, a path, a secret).

use crate::wire::ErrorBody;

/// Longest `errorMessage`: the specification wants fewer than 512 characters.
pub const MAX_ERROR_MESSAGE_LEN: usize = 511;

/// Why keyhold refuses an XKS request. The `String` of a variant is a detail
/// safe to show the caller (it reaches KMS in the error body): which field is
/// wrong and how, which part of the signature failed, which rule refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XksError {
    /// A request parameter is invalid: bad JSON, a missing field, bad Base64.
    #[error("ValidationException: {0}")]
    Validation(String),
    /// The key or its store is disabled.
    #[error("InvalidStateException: {0}")]
    InvalidState(String),
    /// Decrypt's ciphertext, IV, AAD or tag does not authenticate or is malformed.
    #[error("InvalidCiphertextException")]
    InvalidCiphertext,
    /// The key's usage does not allow the operation.
    #[error("InvalidKeyUsageException")]
    InvalidKeyUsage,
    /// The SigV4 signature (or its header, date or credential) is not accepted.
    #[error("AuthenticationFailedException: {0}")]
    AuthenticationFailed(String),
    /// The key's authorization rule does not admit the request's metadata.
    #[error("AccessDeniedException: {0}")]
    AccessDenied(String),
    /// No such key in the store the path names.
    #[error("KeyNotFoundException")]
    KeyNotFound,
    /// The path is under `/kms/xks/v1` but not one of the API's, or names no store.
    #[error("InvalidUriPathException")]
    InvalidUriPath,
    /// The store's request quota is spent for this second.
    #[error("ThrottlingException")]
    Throttling,
    /// An algorithm keyhold does not implement, or a value beyond keyhold's
    /// documented maximum (which is above the specification's minimum).
    #[error("UnsupportedOperationException: {0}")]
    UnsupportedOperation(String),
    /// The keystore did not answer in time.
    #[error("DependencyTimeoutException")]
    DependencyTimeout,
    /// Anything else; the cause is logged by the caller, never sent.
    #[error("InternalException")]
    Internal,
}

impl XksError {
    /// The HTTP status the specification's error table gives.
    pub fn status(&self) -> u16 {
        match self {
            Self::Validation(_)
            | Self::InvalidState(_)
            | Self::InvalidCiphertext
            | Self::InvalidKeyUsage => 400,
            Self::AuthenticationFailed(_) => 401,
            Self::AccessDenied(_) => 403,
            Self::KeyNotFound | Self::InvalidUriPath => 404,
            Self::Throttling => 429,
            Self::UnsupportedOperation(_) => 501,
            Self::DependencyTimeout => 503,
            Self::Internal => 500,
        }
    }

    /// The `errorName` KMS reads to choose its own exception.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Validation(_) => "ValidationException",
            Self::InvalidState(_) => "InvalidStateException",
            Self::InvalidCiphertext => "InvalidCiphertextException",
            Self::InvalidKeyUsage => "InvalidKeyUsageException",
            Self::AuthenticationFailed(_) => "AuthenticationFailedException",
            Self::AccessDenied(_) => "AccessDeniedException",
            Self::KeyNotFound => "KeyNotFoundException",
            Self::InvalidUriPath => "InvalidUriPathException",
            Self::Throttling => "ThrottlingException",
            Self::UnsupportedOperation(_) => "UnsupportedOperationException",
            Self::DependencyTimeout => "DependencyTimeoutException",
            Self::Internal => "InternalException",
        }
    }

    /// The JSON error body for KMS: the name and a printable-ASCII message
    /// of at most [`MAX_ERROR_MESSAGE_LEN`] characters.
    pub fn body(&self) -> ErrorBody {
        let fixed = self.fixed_message();
        let message = match self.detail() {
            Some(detail) if !detail.is_empty() => format!("{fixed}: {detail}"),
            _ => fixed.to_owned(),
        };
        ErrorBody {
            error_name: self.name().to_owned(),
            error_message: printable(&message, MAX_ERROR_MESSAGE_LEN),
        }
    }

    /// One sentence per variant, after the specification's error scenarios.
    fn fixed_message(&self) -> &'static str {
        match self {
            Self::Validation(_) => "One or more input parameters is invalid",
            Self::InvalidState(_) => "The external key or its key store is disabled",
            Self::InvalidCiphertext => {
                "The ciphertext, initialization vector, additional authenticated data or authentication tag is corrupted, missing, or otherwise invalid"
            }
            Self::InvalidKeyUsage => "The external key does not support the requested operation",
            Self::AuthenticationFailed(_) => "The request's AWS SigV4 signature is not valid",
            Self::AccessDenied(_) => {
                "The operation is not authorized for this request metadata by the key's authorization rule"
            }
            Self::KeyNotFound => "The external key is not found",
            Self::InvalidUriPath => "The URI path is not valid",
            Self::Throttling => "The request rate exceeds the external key store's quota",
            Self::UnsupportedOperation(_) => {
                "The operation or a parameter's size is not supported by this proxy"
            }
            Self::DependencyTimeout => "The proxy timed out waiting for its key manager",
            Self::Internal => "The proxy failed to process the request",
        }
    }

    fn detail(&self) -> Option<&str> {
        match self {
            Self::Validation(detail)
            | Self::InvalidState(detail)
            | Self::AuthenticationFailed(detail)
            | Self::AccessDenied(detail)
            | Self::UnsupportedOperation(detail) => Some(detail),
            Self::InvalidCiphertext
            | Self::InvalidKeyUsage
            | Self::KeyNotFound
            | Self::InvalidUriPath
            | Self::Throttling
            | Self::DependencyTimeout
            | Self::Internal => None,
        }
    }
}

/// `text` with every character outside printable ASCII (0x20 to 0x7e)
/// replaced by `?`, cut to `max` characters. What may go into an error body
/// or quote a caller's value in a detail.
pub(crate) fn printable(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

/// A caller's value quoted into a detail: printable and short, so a detail
/// never becomes a copy of the request.
pub(crate) fn quote(value: &str) -> String {
    const MAX_QUOTED: usize = 40;
    let mut quoted = printable(value, MAX_QUOTED);
    if value.chars().count() > MAX_QUOTED {
        quoted.push_str("...");
    }
    format!("\"{quoted}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<XksError> {
        vec![
            XksError::Validation("plaintext: not Base64".into()),
            XksError::InvalidState("key disabled".into()),
            XksError::InvalidCiphertext,
            XksError::InvalidKeyUsage,
            XksError::AuthenticationFailed("signature mismatch".into()),
            XksError::AccessDenied("awsPrincipalArn not admitted".into()),
            XksError::KeyNotFound,
            XksError::InvalidUriPath,
            XksError::Throttling,
            XksError::UnsupportedOperation("plaintext too long".into()),
            XksError::DependencyTimeout,
            XksError::Internal,
        ]
    }

    /// The specification's error table, row by row: status and errorName.
    #[test]
    fn every_error_has_the_status_and_name_of_the_specifications_table() {
        let table: [(u16, &str); 12] = [
            (400, "ValidationException"),
            (400, "InvalidStateException"),
            (400, "InvalidCiphertextException"),
            (400, "InvalidKeyUsageException"),
            (401, "AuthenticationFailedException"),
            (403, "AccessDeniedException"),
            (404, "KeyNotFoundException"),
            (404, "InvalidUriPathException"),
            (429, "ThrottlingException"),
            (501, "UnsupportedOperationException"),
            (503, "DependencyTimeoutException"),
            (500, "InternalException"),
        ];
        let errors = all();
        assert_eq!(errors.len(), table.len());
        for (error, (status, name)) in errors.iter().zip(table) {
            assert_eq!(error.status(), status, "{error:?}");
            assert_eq!(error.name(), name, "{error:?}");
            let body = error.body();
            assert_eq!(body.error_name, name);
            assert!(!body.error_message.is_empty());
        }
    }

    #[test]
    fn bodies_carry_the_safe_detail_and_only_printable_ascii_under_512() {
        let body = XksError::Validation("plaintext: not Base64".into()).body();
        assert_eq!(
            body.error_message,
            "One or more input parameters is invalid: plaintext: not Base64"
        );
        let hostile = XksError::AccessDenied(format!("a\u{7}b\né{}", "x".repeat(2000))).body();
        assert!(hostile.error_message.len() < 512);
        assert!(
            hostile
                .error_message
                .bytes()
                .all(|b| (0x20..=0x7e).contains(&b))
        );
        assert!(hostile.error_message.contains(": a?b??xxx"));
        // Variants without a detail say only their fixed sentence.
        assert_eq!(
            XksError::Internal.body().error_message,
            "The proxy failed to process the request"
        );
        let json = serde_json::to_value(XksError::Throttling.body()).unwrap();
        assert_eq!(json["errorName"], "ThrottlingException");
        assert!(json["errorMessage"].is_string());
    }

    #[test]
    fn quotes_are_short_and_printable() {
        assert_eq!(quote("AES_CBC"), "\"AES_CBC\"");
        let long = quote(&"z".repeat(100));
        assert_eq!(long.len(), 40 + 3 + 2);
        assert_eq!(quote("a\u{0}b"), "\"a?b\"");
    }
}
