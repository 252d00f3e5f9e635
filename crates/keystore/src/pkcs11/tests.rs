//! The session pool's retry and recovery rules, with failures injected into
//! operations on a real SoftHSM2 token (`tests/support/softhsm.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cryptoki::context::Function;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use keyhold_core::error::KeystoreError;
use secrecy::SecretString;

use super::error::Fail;
use super::objects::{self, Material, OwnKey};
use super::session::{POOL_SIZE, Token};
use super::{TokenSelector, context};

#[path = "../../tests/support/softhsm.rs"]
mod softhsm;

use softhsm::{LABEL, MODULE, PIN, with_softhsm};

fn token() -> Token {
    let module = context::load(std::path::Path::new(MODULE)).unwrap();
    let token = Token::new(
        module,
        TokenSelector::Label(LABEL.into()),
        SecretString::from(PIN),
    );
    token
        .run_writing("test setup", |c| {
            objects::ensure_own_key(c, OwnKey::Seal)?;
            objects::ensure_own_key(c, OwnKey::AuditMac)
        })
        .unwrap();
    token
}

fn injected(rv: RvError) -> Fail {
    Fail::Token(Error::Pkcs11(rv, Function::Encrypt))
}

/// Fails the first `failures` calls with `rv`, then succeeds.
fn run_failing(token: &Token, rv: RvError, failures: usize) -> (Result<(), KeystoreError>, usize) {
    let calls = AtomicUsize::new(0);
    let result = token.run("injected", |_| {
        if calls.fetch_add(1, Ordering::SeqCst) < failures {
            Err(injected(rv))
        } else {
            Ok(())
        }
    });
    (result, calls.load(Ordering::SeqCst))
}

#[test]
fn session_errors_are_retried_once_on_a_fresh_session() {
    with_softhsm(
        "pkcs11::tests::session_errors_are_retried_once_on_a_fresh_session",
        || {
            let token = token();
            for rv in [
                RvError::UserNotLoggedIn,
                RvError::SessionHandleInvalid,
                RvError::SessionClosed,
            ] {
                let (result, calls) = run_failing(&token, rv, 1);
                assert!(result.is_ok(), "{rv:?}: {result:?}");
                assert_eq!(calls, 2, "{rv:?}");

                let (result, calls) = run_failing(&token, rv, 2);
                assert_eq!(calls, 2, "{rv:?}: retried more than once");
                assert!(
                    matches!(&result, Err(KeystoreError::Unavailable(m)) if m.starts_with("injected: ")),
                    "{rv:?}: {result:?}"
                );
            }
        },
    );
}

#[test]
fn a_logout_between_check_and_search_is_retried_not_reported_as_missing() {
    with_softhsm(
        "pkcs11::tests::a_logout_between_check_and_search_is_retried_not_reported_as_missing",
        || {
            let token = token();
            let calls = AtomicUsize::new(0);
            token
                .run("sealing", |c| {
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        // Logged out after the pool checked the session: the
                        // search sees no private objects at all.
                        c.session.logout()?;
                    }
                    objects::own_key(c, OwnKey::Seal)
                })
                .unwrap();
            assert_eq!(calls.load(Ordering::SeqCst), 2);

            // The same for a delete: logged out, it must not "succeed" without deleting.
            let key_id = uuid::Uuid::new_v4();
            token
                .run_writing("generating", |c| {
                    Ok(c.session.generate_key(
                        &cryptoki::mechanism::Mechanism::AesKeyGen,
                        &objects::data_key_template(key_id),
                    )?)
                })
                .unwrap();
            let calls = AtomicUsize::new(0);
            let found = token
                .run_writing("deleting", |c| {
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        c.session.logout()?;
                    }
                    objects::find_data_keys(c.session, key_id)
                })
                .unwrap();
            assert_eq!(found.len(), 1);
        },
    );
}

#[test]
fn a_failed_session_is_not_pooled_and_the_pool_is_bounded() {
    with_softhsm(
        "pkcs11::tests::a_failed_session_is_not_pooled_and_the_pool_is_bounded",
        || {
            let token = Arc::new(token());
            assert_eq!(token.pooled(), 1);
            let (result, _) = run_failing(&token, RvError::DataLenRange, 1);
            assert!(
                matches!(result, Err(KeystoreError::Internal(_))),
                "{result:?}"
            );
            assert_eq!(token.pooled(), 0);
            // Our own verdicts (no token error) keep the session.
            let verdict: Result<(), _> = token.run("verdict", |_| {
                Err(Fail::Verdict(KeystoreError::KeyNotFound("x".into())))
            });
            assert!(matches!(verdict, Err(KeystoreError::KeyNotFound(_))));
            assert_eq!(token.pooled(), 1);

            // Many threads at once: sessions beyond the pool are closed on return.
            let barrier = Arc::new(std::sync::Barrier::new(8));
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let token = Arc::clone(&token);
                    let barrier = Arc::clone(&barrier);
                    std::thread::spawn(move || {
                        token
                            .run("concurrent", |_| {
                                barrier.wait();
                                Ok(())
                            })
                            .unwrap();
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
            assert_eq!(token.pooled(), POOL_SIZE);
        },
    );
}

#[test]
fn device_errors_report_unavailable_then_reinitialise_the_module() {
    with_softhsm(
        "pkcs11::tests::device_errors_report_unavailable_then_reinitialise_the_module",
        || {
            let token = token();
            for rv in [
                RvError::DeviceRemoved,
                RvError::TokenNotPresent,
                RvError::DeviceError,
            ] {
                let generation = token.module().current().generation;
                let (result, calls) = run_failing(&token, rv, 1);
                assert_eq!(calls, 1, "{rv:?}: a device error is not retried at once");
                match result {
                    Err(KeystoreError::Unavailable(message)) => {
                        assert!(message.contains("re-initialises the module"), "{message}");
                    }
                    other => panic!("{rv:?}: {other:?}"),
                }
                assert_eq!(token.pooled(), 0);
                // The next call re-initialises the module and works.
                objects_still_work(&token);
                assert_eq!(token.module().current().generation, generation + 1);
            }
        },
    );
}

fn objects_still_work(token: &Token) {
    token
        .run("after recovery", |c| objects::own_key(c, OwnKey::Seal))
        .unwrap();
}

#[test]
fn a_refused_pin_is_not_tried_again() {
    with_softhsm("pkcs11::tests::a_refused_pin_is_not_tried_again", || {
        let token = token();
        let (result, _) = run_failing(&token, RvError::PinIncorrect, 1);
        let first = match result {
            Err(KeystoreError::Unavailable(message)) => message,
            other => panic!("{other:?}"),
        };
        assert!(first.contains("refused the PIN"), "{first}");
        let (result, calls) = run_failing(&token, RvError::PinIncorrect, 0);
        assert_eq!(calls, 0, "the token was asked again");
        assert!(matches!(result, Err(KeystoreError::Unavailable(m)) if m == first));
    });
}

/// `objects::generate_material` with a `C_GenerateKey` that makes the object
/// on the token and, while `lose_answers` says so, reports `lost` instead of
/// its handle (an answer lost on the way back). Counts the calls sent.
fn generate_losing_answers(
    token: &Token,
    key_id: uuid::Uuid,
    lost: RvError,
    lose_answers: usize,
    sent: &AtomicUsize,
) -> Result<cryptoki::object::ObjectHandle, KeystoreError> {
    token.run_writing("generating", |c| {
        objects::generate_material(
            c,
            Material::Key,
            key_id,
            "test token",
            |session, template| {
                let made = session.generate_key(&Mechanism::AesKeyGen, template)?;
                if sent.fetch_add(1, Ordering::SeqCst) < lose_answers {
                    return Err(Error::Pkcs11(lost, Function::GenerateKey));
                }
                Ok(made)
            },
        )
    })
}

/// The objects labelled for key `key_id`, by one search.
fn objects_of(token: &Token, key_id: uuid::Uuid) -> Vec<cryptoki::object::ObjectHandle> {
    token
        .run("counting", |c| objects::find_data_keys(c.session, key_id))
        .unwrap()
}

#[test]
fn a_generated_key_whose_answer_was_lost_is_found_not_made_twice() {
    with_softhsm(
        "pkcs11::tests::a_generated_key_whose_answer_was_lost_is_found_not_made_twice",
        || {
            let token = token();

            // Lost with the session: the pool retries on a fresh one, which
            // searches for the label instead of sending C_GenerateKey again.
            let key_id = uuid::Uuid::new_v4();
            let sent = AtomicUsize::new(0);
            let handle =
                generate_losing_answers(&token, key_id, RvError::SessionClosed, 1, &sent).unwrap();
            assert_eq!(sent.load(Ordering::SeqCst), 1, "C_GenerateKey sent again");
            assert_eq!(objects_of(&token, key_id), vec![handle]);

            // Lost with the device: reported, and the module re-initialised;
            // the caller's next call for the key finds the object made.
            let key_id = uuid::Uuid::new_v4();
            let sent = AtomicUsize::new(0);
            let lost = generate_losing_answers(&token, key_id, RvError::DeviceError, 1, &sent);
            assert!(
                matches!(&lost, Err(KeystoreError::Unavailable(m)) if m.contains("re-initialises")),
                "{lost:?}"
            );
            let handle =
                generate_losing_answers(&token, key_id, RvError::DeviceError, 0, &sent).unwrap();
            assert_eq!(sent.load(Ordering::SeqCst), 1, "C_GenerateKey sent again");
            assert_eq!(objects_of(&token, key_id), vec![handle]);

            // Answered: asked again, the handle is its own (no search, no second object).
            let again =
                generate_losing_answers(&token, key_id, RvError::DeviceError, 0, &sent).unwrap();
            assert_eq!(again, handle);
            assert_eq!(sent.load(Ordering::SeqCst), 1, "C_GenerateKey sent again");
        },
    );
}

/// The price of generating without a search: a key id new to the keystore
/// is trusted to be new to the token (keyhold's callers mint a fresh one
/// for every key). An object made under its label behind keyhold's back is
/// not looked for, and the next search for the key reports both objects.
#[test]
fn a_key_id_new_to_the_keystore_is_not_searched_for() {
    with_softhsm(
        "pkcs11::tests::a_key_id_new_to_the_keystore_is_not_searched_for",
        || {
            let key_id = uuid::Uuid::new_v4();
            let behind_our_back = token();
            behind_our_back
                .run_writing("making an object", |c| {
                    Ok(c.session
                        .generate_key(&Mechanism::AesKeyGen, &objects::data_key_template(key_id))?)
                })
                .unwrap();

            let keystore = token();
            let sent = AtomicUsize::new(0);
            generate_losing_answers(&keystore, key_id, RvError::DeviceError, 0, &sent).unwrap();
            assert_eq!(sent.load(Ordering::SeqCst), 1);
            assert_eq!(objects_of(&keystore, key_id).len(), 2);

            // Another keystore (a restart, another node) searches, and says what to do.
            let found = token().run("looking up", |c| {
                objects::data_key(c, key_id, "test token").map(|_| ())
            });
            match found {
                Err(KeystoreError::Internal(message)) => {
                    assert!(message.contains("2 objects"), "{message}");
                    assert!(message.contains("never imported into KMS"), "{message}");
                }
                other => panic!("{other:?}"),
            }
        },
    );
}

#[test]
fn a_distrusted_label_is_searched_for_before_generating() {
    with_softhsm(
        "pkcs11::tests::a_distrusted_label_is_searched_for_before_generating",
        || {
            let token = token();
            let key_id = uuid::Uuid::new_v4();
            let sent = AtomicUsize::new(0);
            let handle =
                generate_losing_answers(&token, key_id, RvError::DeviceError, 0, &sent).unwrap();
            // The token called the handle invalid (as `with_material` does):
            // the object is searched for, and found, not made twice.
            token
                .run("distrusting", |c| {
                    c.handles.distrust(objects::key_label(key_id).as_bytes());
                    Ok(())
                })
                .unwrap();
            let again =
                generate_losing_answers(&token, key_id, RvError::DeviceError, 0, &sent).unwrap();
            assert_eq!(again, handle);
            assert_eq!(sent.load(Ordering::SeqCst), 1, "C_GenerateKey sent again");
            assert_eq!(objects_of(&token, key_id), vec![handle]);
        },
    );
}
