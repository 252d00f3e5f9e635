//! How a failed PKCS#11 call is named, classified and reported.

use cryptoki::context::Function;
use cryptoki::error::{Error, RvError};
use keyhold_core::error::KeystoreError;

/// Why an operation on a session stopped.
#[derive(Debug)]
pub(super) enum Fail {
    /// The token returned an error; the session pool classifies it (retry,
    /// re-initialise, refuse the PIN, or report).
    Token(Error),
    /// The token returned an error that the operation itself interpreted (a
    /// GCM tag that does not verify is [`KeystoreError::SealBroken`]). The
    /// session is still discarded: it returned an error.
    TokenVerdict(KeystoreError),
    /// keyhold's own verdict (a key that is not on the token); the session is fine.
    Verdict(KeystoreError),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Self::Token(e)
    }
}

/// What to do about a token error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    /// The session is gone or logged out: log in again on a fresh session and retry once.
    Session,
    /// The device or the module context is gone: re-initialise the module on the next call.
    Device,
    /// The token refused the PIN.
    Pin,
    /// Anything else: report it.
    Other,
}

pub(super) fn rv(e: &Error) -> Option<RvError> {
    match e {
        Error::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

pub(super) fn classify(e: &Error) -> Class {
    match rv(e) {
        Some(RvError::UserNotLoggedIn | RvError::SessionHandleInvalid | RvError::SessionClosed) => {
            Class::Session
        }
        // CKR_CRYPTOKI_NOT_INITIALIZED: something in the process finalized the
        // module under us; the same cure as a removed device.
        Some(
            RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::DeviceError
            | RvError::TokenNotRecognized
            | RvError::CryptokiNotInitialized,
        ) => Class::Device,
        // "Some horrible, unrecoverable error" from a call that only reads
        // slot, token or login state: SoftHSM2 answers this way once its
        // token directory is gone. Re-initialising is the only cure.
        Some(RvError::GeneralError) if touches_token_state_only(e) => Class::Device,
        Some(
            RvError::PinIncorrect
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::PinExpired
            | RvError::PinLocked
            | RvError::UserPinNotInitialized,
        ) => Class::Pin,
        _ => Class::Other,
    }
}

fn touches_token_state_only(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(
            _,
            Function::GetSlotList
                | Function::GetSlotInfo
                | Function::GetTokenInfo
                | Function::OpenSession
                | Function::GetSessionInfo
                | Function::Login
        )
    )
}

/// `C_WrapKey: CKR_MECHANISM_PARAM_INVALID`. cryptoki's own Display is the
/// paragraph-long description from the standard; operators search for the
/// `CKR_` name.
pub(super) fn describe(e: &Error) -> String {
    match e {
        Error::Pkcs11(rv, function) => format!("{}: {}", function_name(*function), rv_name(*rv)),
        other => other.to_string(),
    }
}

pub(super) fn function_name(function: Function) -> String {
    format!("C_{function:?}")
}

/// `PinIncorrect` → `CKR_PIN_INCORRECT`.
pub(super) fn rv_name(rv: RvError) -> String {
    match rv {
        RvError::VendorDefined(code) => format!("vendor-defined CKR 0x{code:08x}"),
        RvError::UnknownErrorCode(code) => format!("unknown CKR 0x{code:08x}"),
        other => {
            let camel = format!("{other:?}");
            let mut name = String::from("CKR");
            for c in camel.chars() {
                if c.is_ascii_uppercase() {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        }
    }
}

/// A token error that is neither a session, a device nor a PIN problem.
pub(super) fn other(what: &str, e: &Error) -> KeystoreError {
    match rv(e) {
        Some(
            RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
            | RvError::FunctionNotSupported
            | RvError::KeyNotWrappable
            | RvError::WrappingKeyTypeInconsistent
            | RvError::WrappingKeySizeRange,
        ) => KeystoreError::Unsupported(format!(
            "{what}: the PKCS#11 token cannot do this ({})",
            describe(e)
        )),
        Some(RvError::DeviceMemory) => KeystoreError::Unavailable(format!(
            "{what}: the PKCS#11 token is out of memory ({})",
            describe(e)
        )),
        _ => KeystoreError::Internal(format!("{what}: {}", describe(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_standard() {
        assert_eq!(rv_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            rv_name(RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
        assert_eq!(
            describe(&Error::Pkcs11(
                RvError::MechanismParamInvalid,
                Function::WrapKey
            )),
            "C_WrapKey: CKR_MECHANISM_PARAM_INVALID"
        );
    }

    #[test]
    fn classes() {
        let e = |rv| Error::Pkcs11(rv, Function::Encrypt);
        assert_eq!(classify(&e(RvError::UserNotLoggedIn)), Class::Session);
        assert_eq!(classify(&e(RvError::SessionClosed)), Class::Session);
        assert_eq!(classify(&e(RvError::DeviceRemoved)), Class::Device);
        assert_eq!(classify(&e(RvError::TokenNotPresent)), Class::Device);
        assert_eq!(classify(&e(RvError::DeviceError)), Class::Device);
        assert_eq!(classify(&e(RvError::PinIncorrect)), Class::Pin);
        assert_eq!(classify(&e(RvError::DataLenRange)), Class::Other);
    }
}
