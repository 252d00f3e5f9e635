//! Why a call to a cloud KMS failed, classified for the retry and job logic.
//! A leaf: the core's own error ([`crate::CoreError`]) wraps it.
//!
//! The texts name AWS KMS, the only target so far; they are what users and
//! tests read, so a second target adds its service to them rather than
//! changing them.

/// Why a cloud KMS call failed, classified for the retry and job logic.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CloudError {
    /// A transient fault (KMS or the network failing, a timeout) that
    /// outlived the retry budget.
    #[error("{operation}: AWS KMS is unavailable: {message}")]
    Transient {
        operation: &'static str,
        message: String,
    },
    /// The account's request quota for the operation was exceeded: KMS did
    /// nothing, so the same request may be sent again once the quota allows.
    /// Kept apart from [`CloudError::Transient`] because only this one is
    /// always safe to resend, and resending it is the pacer's job.
    #[error("{operation}: AWS KMS is throttling requests (request quota exceeded): {message}")]
    Throttled {
        operation: &'static str,
        message: String,
    },
    /// The credential was refused.
    #[error("{operation}: AWS refused the credential: {message}")]
    AccessDenied {
        operation: &'static str,
        message: String,
    },
    #[error("{operation}: KMS key not found: {message}")]
    NotFound {
        operation: &'static str,
        message: String,
    },
    /// The key is in a state that does not allow the call (disabled, pending deletion).
    #[error("{operation}: KMS key is in the wrong state: {message}")]
    InvalidState {
        operation: &'static str,
        message: String,
    },
    /// The import token expired; fetch new parameters and try again.
    #[error("{operation}: import token expired")]
    ExpiredImportToken { operation: &'static str },
    /// KMS refuses this material (not the material first imported into the key).
    #[error("{operation}: KMS refused the key material: {message}")]
    IncorrectKeyMaterial {
        operation: &'static str,
        message: String,
    },
    /// A limit AWS does not lift was reached: on-demand rotations of one KMS
    /// key above all (keys per account too).
    #[error("{operation}: AWS KMS limit reached: {message}")]
    LimitExceeded {
        operation: &'static str,
        message: String,
    },
    /// The request itself is wrong (policy rejected, alias taken, …).
    #[error("{operation}: {message}")]
    Rejected {
        operation: &'static str,
        message: String,
    },
}
