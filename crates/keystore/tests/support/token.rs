//! What the PKCS#11 integration tests do to a token besides going through
//! the keystore: a second token to restore into, and the test's own
//! cryptoki session to look at the objects the keystore made.
//!
//! Shared by `tests/backup.rs` and `tests/xks.rs` (`#[path]`), on the
//! tokens of `support/softhsm.rs`.

// Each includer uses a part of it.
#![allow(dead_code)]

use std::process::Command;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use keyhold_core::backup::BackupWrapKey;
use keyhold_keystore::{Pkcs11Settings, TokenSelector};
use secrecy::SecretString;
use zeroize::Zeroizing;

use super::softhsm::{MODULE, PIN, SO_PIN};

/// A second token in the test's token directory: a restore's target.
pub const TARGET: &str = "keyhold-restore";

pub fn settings(label: &str) -> Pkcs11Settings {
    Pkcs11Settings {
        module: MODULE.into(),
        token: TokenSelector::Label(label.into()),
        pin: SecretString::from(PIN),
    }
}

/// Made before the module is loaded: SoftHSM2 reads its slots at C_Initialize.
pub fn add_target_token() {
    let made = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", TARGET])
        .args(["--pin", PIN, "--so-pin", SO_PIN])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
}

pub fn wrap_key(byte: u8) -> BackupWrapKey {
    BackupWrapKey::new(Zeroizing::new([byte; 32]))
}

/// The test's own session on a token, through cryptoki directly.
pub fn raw(label: &str) -> (Pkcs11, Session) {
    let pkcs11 = Pkcs11::new(MODULE).unwrap();
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label() == label)
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&SecretString::from(PIN))) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    (pkcs11, session)
}

pub fn labelled(session: &Session, class: ObjectClass, label: &str) -> Vec<ObjectHandle> {
    session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap()
}

/// A boolean attribute of an object.
pub fn flag(session: &Session, object: ObjectHandle, which: AttributeType) -> bool {
    match session.get_attributes(object, &[which]).unwrap().as_slice() {
        [Attribute::Sensitive(v)]
        | [Attribute::Extractable(v)]
        | [Attribute::Token(v)]
        | [Attribute::Private(v)]
        | [Attribute::Encrypt(v)]
        | [Attribute::Decrypt(v)]
        | [Attribute::Wrap(v)]
        | [Attribute::Unwrap(v)]
        | [Attribute::Derive(v)]
        | [Attribute::Sign(v)] => *v,
        other => panic!("{which:?}: {other:?}"),
    }
}
