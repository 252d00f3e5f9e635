//! From the SDK's errors to [`CloudError`], the classification the rotate and
//! synchronize steps act on (retry later, fetch new import parameters, stop).
//!
//! Service errors are classified by their error code (what the SDK's typed
//! variants are built from), never by message text; AWS's message is kept
//! for the operator.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_kms::error::{ConnectorError, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::RequestId;
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use keyhold_core::cloud::CloudError;

/// Longest AWS message kept in an error (they are short; this bounds a misbehaving peer).
const MAX_MESSAGE_CHARS: usize = 600;

/// Which [`CloudError`] an AWS error code means. The one place that knows.
///
/// `status` (HTTP) only decides for codes this function does not know.
pub(crate) fn classify_code(
    operation: &'static str,
    code: &str,
    status: Option<u16>,
    message: String,
) -> CloudError {
    if is_throttling(code) {
        return CloudError::Throttled { operation, message };
    }
    match code {
        // Server-side faults: worth another try later.
        "KMSInternalException"
        | "KMSInternal"
        | "InternalFailure"
        | "InternalServerError"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "DependencyTimeoutException"
        | "RequestTimeout"
        | "RequestTimeoutException"
        | "KeyUnavailableException" => CloudError::Transient { operation, message },

        // The credential or the signature was refused.
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredTokenException"
        | "ExpiredToken"
        | "NotAuthorized" => CloudError::AccessDenied { operation, message },

        "NotFoundException" => CloudError::NotFound { operation, message },

        "KMSInvalidStateException" | "DisabledException" => {
            CloudError::InvalidState { operation, message }
        }

        // An import token from another GetParametersForImport (or for another
        // key) has the same remedy as an expired one: fetch new parameters.
        "ExpiredImportTokenException" | "InvalidImportTokenException" => {
            tracing::info!(operation, code, %message, "KMS refused the import token");
            CloudError::ExpiredImportToken { operation }
        }

        "IncorrectKeyMaterialException" | "InvalidCiphertextException" => {
            CloudError::IncorrectKeyMaterial { operation, message }
        }

        "LimitExceededException" => CloudError::LimitExceeded { operation, message },

        // The request itself is wrong: retrying the same one cannot help.
        "MalformedPolicyDocumentException"
        | "AlreadyExistsException"
        | "InvalidAliasNameException"
        | "ValidationException"
        | "InvalidArnException"
        | "TagException"
        | "UnsupportedOperationException"
        | "InvalidKeyUsageException"
        | "InvalidMarkerException"
        | "InvalidGrantTokenException"
        | "SerializationException"
        | "UnknownOperationException"
        | "OptInRequired" => CloudError::Rejected { operation, message },

        // Codes this version does not know: the HTTP status is the best hint.
        _ => match status {
            Some(429) => CloudError::Throttled { operation, message },
            Some(500..=599) => CloudError::Transient { operation, message },
            Some(401) | Some(403) => CloudError::AccessDenied { operation, message },
            _ => CloudError::Rejected { operation, message },
        },
    }
}

/// Whether an AWS error code says the request quota was exceeded (AWS KMS
/// answers `ThrottlingException`; the others are the same refusal from
/// AWS's other front ends, STS among them).
pub(crate) fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException" | "Throttling" | "TooManyRequestsException" | "RequestLimitExceeded"
    )
}

/// Whether KMS may have carried out a request that failed: unless it
/// answered with a refusal (a 4xx error code) or the request was never sent,
/// the answer may simply have been lost on the way back.
pub(crate) fn may_have_acted<E>(err: &SdkError<E>) -> bool {
    match err {
        SdkError::ServiceError(context) => context.raw().status().as_u16() >= 500,
        SdkError::ConstructionFailure(_) => false,
        SdkError::DispatchFailure(failure) => !failure.is_user(),
        _ => true,
    }
}

/// Classifies any error of a KMS call.
pub(crate) fn classify<E>(operation: &'static str, err: SdkError<E>) -> CloudError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    // Credentials are resolved while the request is dispatched, so their
    // failures arrive wrapped as dispatch failures: look for them first.
    if let Some(classified) = credentials_failure(operation, &err) {
        return classified;
    }
    match &err {
        SdkError::ServiceError(context) => {
            let service = context.err();
            let status = context.raw().status().as_u16();
            let code = service.code().unwrap_or_default();
            let mut message = match (service.code(), service.message()) {
                (Some(code), Some(text)) => format!("{code}: {text}"),
                (Some(code), None) => code.to_owned(),
                (None, Some(text)) => format!("HTTP {status}: {text}"),
                (None, None) => format!("HTTP {status} without an error code"),
            };
            if let Some(id) = err.request_id() {
                message.push_str(&format!(" (request id {id})"));
            }
            classify_code(operation, code, Some(status), clean(&message))
        }
        SdkError::TimeoutError(_) => CloudError::Transient {
            operation,
            message: clean(&format!("no answer in time: {}", chain(&err))),
        },
        SdkError::DispatchFailure(failure) if failure.is_user() => CloudError::Rejected {
            operation,
            message: clean(&format!("the request could not be sent: {}", chain(&err))),
        },
        SdkError::DispatchFailure(_) => CloudError::Transient {
            operation,
            message: clean(&format!("AWS KMS could not be reached: {}", chain(&err))),
        },
        // An answer that is not a KMS response (a proxy's page, a cut stream).
        SdkError::ResponseError(context) => CloudError::Transient {
            operation,
            message: clean(&format!(
                "unreadable response (HTTP {}): {}",
                context.raw().status().as_u16(),
                chain(&err)
            )),
        },
        SdkError::ConstructionFailure(_) => CloudError::Rejected {
            operation,
            message: clean(&format!("the request could not be built: {}", chain(&err))),
        },
        _ => CloudError::Transient {
            operation,
            message: clean(&chain(&err)),
        },
    }
}

fn credentials_failure<E>(operation: &'static str, err: &SdkError<E>) -> Option<CloudError>
where
    E: StdError + Send + Sync + 'static,
{
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    let credentials = loop {
        let current = source?;
        if let Some(found) = current.downcast_ref::<CredentialsError>() {
            break found;
        }
        source = current.source();
    };
    let message = clean(&format!(
        "no usable AWS credentials: {}",
        chain(credentials)
    ));
    Some(match credentials {
        CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
            CloudError::AccessDenied { operation, message }
        }
        CredentialsError::ProviderTimedOut(_) => CloudError::Transient { operation, message },
        // STS or the instance metadata service refused, or could not be reached.
        CredentialsError::ProviderError(_) if provider_may_recover(credentials) => {
            CloudError::Transient { operation, message }
        }
        CredentialsError::ProviderError(_) => CloudError::AccessDenied { operation, message },
        _ => CloudError::Transient { operation, message },
    })
}

/// Whether a credential provider failed for a reason that passes: the
/// network, a timeout, or STS throttling or failing on its side (assume-role).
fn provider_may_recover(err: &(dyn StdError + 'static)) -> bool {
    let mut source = err.source();
    while let Some(current) = source {
        if let Some(connector) = current.downcast_ref::<ConnectorError>() {
            return connector.is_io() || connector.is_timeout();
        }
        if let Some(sts) = current.downcast_ref::<aws_sdk_sts::error::SdkError<AssumeRoleError>>() {
            return match sts {
                SdkError::ServiceError(context) => matches!(
                    classify_code(
                        "AssumeRole",
                        context.err().code().unwrap_or_default(),
                        Some(context.raw().status().as_u16()),
                        String::new(),
                    ),
                    CloudError::Transient { .. } | CloudError::Throttled { .. }
                ),
                SdkError::TimeoutError(_) => true,
                SdkError::DispatchFailure(failure) => failure.is_io() || failure.is_timeout(),
                _ => false,
            };
        }
        source = current.source();
    }
    false
}

/// The error and its sources, as one sentence. Only `Display` texts: the
/// `Debug` forms the SDK's own formatter adds are noisy and could carry more
/// than the operator needs.
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(current) = source {
        let text = current.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = current.source();
    }
    out
}

/// Keeps messages one line and bounded: they end up in job messages and the audit log.
pub(crate) fn clean(raw: &str) -> String {
    let one_line = raw
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if one_line.chars().count() > MAX_MESSAGE_CHARS {
        let mut out: String = one_line.chars().take(MAX_MESSAGE_CHARS).collect();
        out.push('…');
        out
    } else {
        one_line
    }
}

/// A response that lacks what KMS always sends.
pub(crate) fn malformed(operation: &'static str, what: &str) -> CloudError {
    CloudError::Rejected {
        operation,
        message: format!("AWS KMS answered without {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(code: &str) -> &'static str {
        kind_of(&classify_code(
            "Test",
            code,
            Some(400),
            format!("{code}: why"),
        ))
    }

    fn kind_of(e: &CloudError) -> &'static str {
        match e {
            CloudError::Transient { .. } => "transient",
            CloudError::Throttled { .. } => "throttled",
            CloudError::AccessDenied { .. } => "access_denied",
            CloudError::NotFound { .. } => "not_found",
            CloudError::InvalidState { .. } => "invalid_state",
            CloudError::ExpiredImportToken { .. } => "expired_import_token",
            CloudError::IncorrectKeyMaterial { .. } => "incorrect_key_material",
            CloudError::LimitExceeded { .. } => "limit_exceeded",
            CloudError::Rejected { .. } => "rejected",
        }
    }

    #[test]
    fn throttling_is_throttled() {
        for code in [
            "ThrottlingException",
            "Throttling",
            "TooManyRequestsException",
            "RequestLimitExceeded",
        ] {
            assert_eq!(kind(code), "throttled", "{code}");
        }
    }

    #[test]
    fn kms_internal_is_transient() {
        assert_eq!(kind("KMSInternalException"), "transient");
    }

    #[test]
    fn dependency_timeout_is_transient() {
        assert_eq!(kind("DependencyTimeoutException"), "transient");
    }

    #[test]
    fn key_unavailable_is_transient() {
        assert_eq!(kind("KeyUnavailableException"), "transient");
    }

    #[test]
    fn access_denied_is_access_denied() {
        assert_eq!(kind("AccessDeniedException"), "access_denied");
    }

    #[test]
    fn unrecognized_client_is_access_denied() {
        assert_eq!(kind("UnrecognizedClientException"), "access_denied");
    }

    #[test]
    fn invalid_signature_is_access_denied() {
        assert_eq!(kind("InvalidSignatureException"), "access_denied");
    }

    #[test]
    fn expired_token_is_access_denied() {
        assert_eq!(kind("ExpiredTokenException"), "access_denied");
    }

    #[test]
    fn not_found_is_not_found() {
        assert_eq!(kind("NotFoundException"), "not_found");
    }

    #[test]
    fn kms_invalid_state_is_invalid_state() {
        assert_eq!(kind("KMSInvalidStateException"), "invalid_state");
    }

    #[test]
    fn disabled_is_invalid_state() {
        assert_eq!(kind("DisabledException"), "invalid_state");
    }

    #[test]
    fn expired_import_token_is_expired_import_token() {
        assert_eq!(kind("ExpiredImportTokenException"), "expired_import_token");
    }

    #[test]
    fn invalid_import_token_asks_for_new_parameters_too() {
        assert_eq!(kind("InvalidImportTokenException"), "expired_import_token");
    }

    #[test]
    fn incorrect_key_material_is_incorrect_key_material() {
        assert_eq!(
            kind("IncorrectKeyMaterialException"),
            "incorrect_key_material"
        );
    }

    #[test]
    fn invalid_ciphertext_is_incorrect_key_material() {
        assert_eq!(kind("InvalidCiphertextException"), "incorrect_key_material");
    }

    #[test]
    fn malformed_policy_is_rejected() {
        assert_eq!(kind("MalformedPolicyDocumentException"), "rejected");
    }

    #[test]
    fn already_exists_is_rejected() {
        assert_eq!(kind("AlreadyExistsException"), "rejected");
    }

    #[test]
    fn invalid_alias_name_is_rejected() {
        assert_eq!(kind("InvalidAliasNameException"), "rejected");
    }

    #[test]
    fn validation_is_rejected() {
        assert_eq!(kind("ValidationException"), "rejected");
    }

    #[test]
    fn a_limit_aws_does_not_lift_is_told_apart() {
        assert_eq!(kind("LimitExceededException"), "limit_exceeded");
    }

    #[test]
    fn other_request_errors_are_rejected() {
        for code in [
            "InvalidArnException",
            "TagException",
            "UnsupportedOperationException",
            "InvalidKeyUsageException",
            "InvalidMarkerException",
        ] {
            assert_eq!(kind(code), "rejected", "{code}");
        }
    }

    #[test]
    fn unknown_codes_follow_the_http_status() {
        let at = |status| {
            kind_of(&classify_code(
                "Test",
                "SomethingNew",
                status,
                String::new(),
            ))
        };
        assert_eq!(at(Some(503)), "transient");
        assert_eq!(at(Some(429)), "throttled");
        assert_eq!(at(Some(403)), "access_denied");
        assert_eq!(at(Some(400)), "rejected");
        assert_eq!(at(None), "rejected");
    }

    #[test]
    fn messages_carry_the_aws_reason_and_the_operation() {
        let e = classify_code(
            "CreateAlias",
            "AlreadyExistsException",
            Some(400),
            "AlreadyExistsException: An alias with the name alias/x already exists".to_owned(),
        );
        let text = e.to_string();
        assert!(text.starts_with("CreateAlias: "), "{text}");
        assert!(text.contains("alias/x already exists"), "{text}");
    }

    #[test]
    fn messages_are_one_bounded_line() {
        let long = format!("a\nb\r{}", "x".repeat(2000));
        let c = clean(&long);
        assert!(!c.chars().any(char::is_control));
        assert!(c.chars().count() <= MAX_MESSAGE_CHARS + 1);
        assert!(c.ends_with('…'));
    }
}
