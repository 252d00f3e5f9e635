//! The HTTP layer's error, and its one mapping to status codes.
//!
//! Internal causes (database, keystore) are logged, not returned: the client
//! gets a stable code and a message that says what to do.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyhold_api::{ErrorBody, ErrorDetail};
use keyhold_core::cloud::CloudError;
use keyhold_core::{CoreError, InvalidInput, KeystoreError, StoreError, WriteRefusal};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The body or query could not be read as the endpoint expects.
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is larger than 1 MiB")]
    PayloadTooLarge,
    #[error("the request body stalled for more than 10 s; send it whole, without pauses")]
    BodyStalled,
    #[error("send the body as JSON with the header Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("no such endpoint: see /api/v1/openapi.json for the API")]
    NoRoute,
    #[error("this endpoint does not accept that method: see /api/v1/openapi.json")]
    MethodNotAllowed,
    /// Answered by hyper before routing, rewritten by `crate::serve`.
    #[error(
        "the URL is longer than 64 KiB: send long values in a JSON body, or page with the query's limit"
    )]
    UriTooLong,
    /// Answered by hyper before routing, rewritten by `crate::serve`.
    #[error("the request's headers are too large: send fewer or shorter headers")]
    HeadersTooLarge,
    /// Too many failed logins or password changes from the caller's
    /// address (`crate::login_throttle`); no password was checked.
    #[error(
        "too many failed logins from your address: wait {retry_after_seconds} s before trying again, and check the user name and password first (nothing was checked, and no identity's lockout counted this attempt)"
    )]
    LoginThrottled { retry_after_seconds: u64 },
    /// Not a failure: a policy holds the operation to a quorum, so it did not
    /// run but was stored as this request, which waits for its approvals.
    /// Answered 202 Accepted with the request (and not audited as a failure:
    /// the request's own entry says what happened).
    #[error("{}: it waits for {} approval(s) from {} identities (request {})", .0.summary, .0.approvals_remaining, .0.approver_role, .0.id)]
    AwaitingApproval(Box<keyhold_api::ApprovalView>),
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        Self::Core(CoreError::Invalid(e))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Core(CoreError::Store(e))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// Status and stable code. Exhaustive on purpose: a new error variant
    /// does not compile until it has a status.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::BodyStalled => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::NoRoute => (StatusCode::NOT_FOUND, "no_route"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::UriTooLong => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            Self::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            Self::LoginThrottled { .. } => (StatusCode::TOO_MANY_REQUESTS, "login_throttled"),
            Self::AwaitingApproval(_) => (StatusCode::ACCEPTED, "awaiting_approval"),
            Self::Core(core) => match core {
                CoreError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
                CoreError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
                CoreError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
                CoreError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
                CoreError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
                CoreError::DualControlRequired { .. } => {
                    (StatusCode::FORBIDDEN, "dual_control_required")
                }
                CoreError::ApprovalRequired { .. } => (StatusCode::FORBIDDEN, "approval_required"),
                CoreError::PasswordChangeRequired(_) => {
                    (StatusCode::FORBIDDEN, "password_change_required")
                }
                CoreError::Store(store) => match store {
                    StoreError::Duplicate => (StatusCode::CONFLICT, "conflict"),
                    StoreError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
                    StoreError::InUse => (StatusCode::CONFLICT, "conflict"),
                    StoreError::Unavailable(_) => {
                        (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
                    }
                    // The database answers but records nothing: the change
                    // and its audit entry were rolled back together.
                    StoreError::CannotWrite { refusal, .. } => match refusal {
                        WriteRefusal::StorageFull => {
                            (StatusCode::SERVICE_UNAVAILABLE, "storage_full")
                        }
                        WriteRefusal::OutOfMemory => {
                            (StatusCode::SERVICE_UNAVAILABLE, "database_out_of_memory")
                        }
                        WriteRefusal::ReadOnly => {
                            (StatusCode::SERVICE_UNAVAILABLE, "database_read_only")
                        }
                    },
                    // A job step on a node that lost the rotator lease:
                    // another node carries the job on.
                    StoreError::Fenced(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_rotator"),
                    // Two answers (or an answer and a resumption) ran one
                    // approved request: the other one's write went in.
                    StoreError::ApprovalSpent => (StatusCode::CONFLICT, "conflict"),
                    // The audit key is in the keystore: while it is away,
                    // nothing can be audited, so nothing can change.
                    StoreError::AuditSeal(KeystoreError::Unavailable(_)) => {
                        (StatusCode::SERVICE_UNAVAILABLE, "keystore_unavailable")
                    }
                    StoreError::Corrupt(_) | StoreError::AuditSeal(_) => {
                        (StatusCode::INTERNAL_SERVER_ERROR, "internal")
                    }
                },
                CoreError::Keystore(keystore) => match keystore {
                    KeystoreError::Unavailable(_) => {
                        (StatusCode::SERVICE_UNAVAILABLE, "keystore_unavailable")
                    }
                    KeystoreError::KeyNotFound(_) => (StatusCode::CONFLICT, "key_material_missing"),
                    KeystoreError::Unsupported(_) => (StatusCode::CONFLICT, "keystore_unsupported"),
                    KeystoreError::SealBroken | KeystoreError::Internal(_) => {
                        (StatusCode::INTERNAL_SERVER_ERROR, "internal")
                    }
                },
                CoreError::Cloud(cloud) => match cloud {
                    CloudError::Transient { .. } => {
                        (StatusCode::SERVICE_UNAVAILABLE, "cloud_unavailable")
                    }
                    CloudError::Throttled { .. } => {
                        (StatusCode::SERVICE_UNAVAILABLE, "cloud_throttled")
                    }
                    CloudError::AccessDenied { .. } => {
                        (StatusCode::BAD_GATEWAY, "cloud_access_denied")
                    }
                    CloudError::NotFound { .. } => (StatusCode::BAD_GATEWAY, "cloud_key_not_found"),
                    CloudError::InvalidState { .. } => (StatusCode::CONFLICT, "cloud_key_state"),
                    CloudError::ExpiredImportToken { .. } => {
                        (StatusCode::BAD_GATEWAY, "cloud_import_token_expired")
                    }
                    CloudError::IncorrectKeyMaterial { .. } => {
                        (StatusCode::BAD_GATEWAY, "cloud_incorrect_key_material")
                    }
                    CloudError::LimitExceeded { .. } => {
                        (StatusCode::CONFLICT, "cloud_limit_exceeded")
                    }
                    CloudError::Rejected { .. } => (StatusCode::BAD_GATEWAY, "cloud_rejected"),
                },
            },
        }
    }

    /// Whether the client can act on the message (a 4xx), as opposed to a
    /// fault of keyhold or its dependencies whose cause stays in the log.
    pub fn is_client_error(&self) -> bool {
        self.status_and_code().0.is_client_error()
    }

    /// Why the database refused to record the change, when it did.
    fn write_refusal(&self) -> Option<WriteRefusal> {
        match self {
            Self::Core(CoreError::Store(store)) => store.write_refusal(),
            _ => None,
        }
    }

    fn field(&self) -> Option<String> {
        match self {
            Self::Core(CoreError::Invalid(e)) => Some(e.field.to_owned()),
            _ => None,
        }
    }

    /// The message a client sees. For server-side faults it names no internals.
    pub fn public_message(&self) -> String {
        match self.status_and_code() {
            (StatusCode::INTERNAL_SERVER_ERROR, _) => {
                "keyhold failed internally; the cause is in the server log. Nothing was changed."
                    .to_owned()
            }
            (_, "database_unavailable") => {
                "the database is unavailable; try again shortly. Nothing was changed.".to_owned()
            }
            (_, "keystore_unavailable") => {
                "the keystore is unavailable; check /readyz. Nothing was changed.".to_owned()
            }
            (_, "storage_full" | "database_out_of_memory" | "database_read_only") => format!(
                "keyhold cannot record changes right now ({}). Nothing was changed; \
                 try again once /readyz reports ready (the operator must free space \
                 or make the database writable).",
                self.write_refusal().map_or("", WriteRefusal::as_str)
            ),
            _ => self.to_string(),
        }
    }
}

impl ApiError {
    /// The JSON body every error answer carries.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.status_and_code().1.to_owned(),
                message: self.public_message(),
                field: self.field(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::AwaitingApproval(request) = self {
            let location = format!("/api/v1/approvals/{}", request.id);
            let mut response = (StatusCode::ACCEPTED, axum::Json(*request)).into_response();
            if let Ok(value) = axum::http::HeaderValue::from_str(&location) {
                response
                    .headers_mut()
                    .insert(axum::http::header::LOCATION, value);
            }
            return response;
        }
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, code, "request failed");
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if let Some(header) = self.retry_after() {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, header);
        }
        response
    }
}

impl ApiError {
    /// The `Retry-After` header of an answer that says when to try again.
    pub fn retry_after(&self) -> Option<axum::http::HeaderValue> {
        match self {
            Self::LoginThrottled {
                retry_after_seconds,
            } => Some(axum::http::HeaderValue::from(*retry_after_seconds)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: ApiError) -> u16 {
        e.status_and_code().0.as_u16()
    }

    fn cannot_write(refusal: WriteRefusal) -> ApiError {
        StoreError::CannotWrite {
            refusal,
            detail: "(code: 13) database or disk is full at /var/lib/keyhold/keyhold.db".into(),
        }
        .into()
    }

    #[test]
    fn every_error_kind_has_its_status() {
        let cases: Vec<(ApiError, u16)> = vec![
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::PayloadTooLarge, 413),
            (ApiError::BodyStalled, 408),
            (ApiError::UnsupportedMediaType, 415),
            (ApiError::NoRoute, 404),
            (ApiError::MethodNotAllowed, 405),
            (ApiError::UriTooLong, 414),
            (ApiError::HeadersTooLarge, 431),
            (
                ApiError::LoginThrottled {
                    retry_after_seconds: 60,
                },
                429,
            ),
            (InvalidInput::new("alias", "bad").into(), 400),
            (CoreError::not_found("key group", "g").into(), 404),
            (CoreError::Conflict("c".into()).into(), 409),
            (CoreError::Unauthenticated("u".into()).into(), 401),
            (CoreError::Forbidden("f".into()).into(), 403),
            (
                CoreError::DualControlRequired {
                    operation: "x".into(),
                }
                .into(),
                403,
            ),
            (
                CoreError::PasswordChangeRequired("Admin1".into()).into(),
                403,
            ),
            (StoreError::Duplicate.into(), 409),
            (StoreError::NotFound.into(), 404),
            (StoreError::InUse.into(), 409),
            (StoreError::Unavailable("down".into()).into(), 503),
            (StoreError::Fenced("rotator".into()).into(), 503),
            (cannot_write(WriteRefusal::StorageFull), 503),
            (cannot_write(WriteRefusal::OutOfMemory), 503),
            (cannot_write(WriteRefusal::ReadOnly), 503),
            (StoreError::Corrupt("bad row".into()).into(), 500),
            (
                StoreError::AuditSeal(KeystoreError::Internal("x".into())).into(),
                500,
            ),
            (
                StoreError::AuditSeal(KeystoreError::Unavailable("x".into())).into(),
                503,
            ),
            (
                CoreError::Keystore(KeystoreError::Unavailable("x".into())).into(),
                503,
            ),
            (
                CoreError::Keystore(KeystoreError::KeyNotFound("x".into())).into(),
                409,
            ),
            (
                CoreError::Keystore(KeystoreError::Unsupported("x".into())).into(),
                409,
            ),
            (CoreError::Keystore(KeystoreError::SealBroken).into(), 500),
            (
                CoreError::Keystore(KeystoreError::Internal("x".into())).into(),
                500,
            ),
            (
                CoreError::Cloud(CloudError::Transient {
                    operation: "CreateKey",
                    message: "m".into(),
                })
                .into(),
                503,
            ),
            (
                CoreError::Cloud(CloudError::Throttled {
                    operation: "CreateKey",
                    message: "m".into(),
                })
                .into(),
                503,
            ),
            (
                CoreError::Cloud(CloudError::AccessDenied {
                    operation: "CreateKey",
                    message: "m".into(),
                })
                .into(),
                502,
            ),
            (
                CoreError::Cloud(CloudError::NotFound {
                    operation: "CreateKey",
                    message: "m".into(),
                })
                .into(),
                502,
            ),
            (
                CoreError::Cloud(CloudError::InvalidState {
                    operation: "CreateKey",
                    message: "m".into(),
                })
                .into(),
                409,
            ),
            (
                CoreError::Cloud(CloudError::ExpiredImportToken {
                    operation: "ImportKeyMaterial",
                })
                .into(),
                502,
            ),
            (
                CoreError::Cloud(CloudError::IncorrectKeyMaterial {
                    operation: "ImportKeyMaterial",
                    message: "m".into(),
                })
                .into(),
                502,
            ),
            (
                CoreError::Cloud(CloudError::LimitExceeded {
                    operation: "RotateKeyOnDemand",
                    message: "m".into(),
                })
                .into(),
                409,
            ),
            (
                CoreError::Cloud(CloudError::Rejected {
                    operation: "PutKeyPolicy",
                    message: "m".into(),
                })
                .into(),
                502,
            ),
        ];
        for (error, expected) in cases {
            let shown = format!("{error:?}");
            assert_eq!(status(error), expected, "{shown}");
        }
    }

    #[test]
    fn a_throttled_login_says_when_to_try_again() {
        let error = ApiError::LoginThrottled {
            retry_after_seconds: 540,
        };
        assert_eq!(error.status_and_code().1, "login_throttled");
        assert!(error.public_message().contains("wait 540 s"));
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "540");
        assert_eq!(
            response.headers()[axum::http::header::CONTENT_TYPE],
            "application/json"
        );
        assert!(
            ApiError::NoRoute
                .into_response()
                .headers()
                .get(axum::http::header::RETRY_AFTER)
                .is_none()
        );
    }

    #[test]
    fn internal_causes_stay_out_of_the_message() {
        let e: ApiError = StoreError::Corrupt("row 7 of table secrets".into()).into();
        assert!(!e.public_message().contains("row 7"));
        let e: ApiError = StoreError::Unavailable("connection to 10.0.0.5 refused".into()).into();
        assert!(!e.public_message().contains("10.0.0.5"));
        let e: ApiError = InvalidInput::new("alias", "alias must start with alias/").into();
        assert_eq!(e.public_message(), "alias must start with alias/");
    }

    #[test]
    fn a_database_that_cannot_record_changes_says_so_and_that_nothing_changed() {
        for (refusal, code, words) in [
            (WriteRefusal::StorageFull, "storage_full", "storage full"),
            (
                WriteRefusal::OutOfMemory,
                "database_out_of_memory",
                "database out of memory",
            ),
            (
                WriteRefusal::ReadOnly,
                "database_read_only",
                "database read-only",
            ),
        ] {
            let body = cannot_write(refusal).body().error;
            assert_eq!(body.code, code);
            assert!(
                body.message.starts_with(&format!(
                    "keyhold cannot record changes right now ({words})"
                )),
                "{}",
                body.message
            );
            assert!(
                body.message.contains("Nothing was changed"),
                "{}",
                body.message
            );
            // The driver's words and the database's path stay in the log.
            assert!(!body.message.contains("/var/lib"), "{}", body.message);
            assert!(!body.message.contains("code: 13"), "{}", body.message);
        }
    }
}
