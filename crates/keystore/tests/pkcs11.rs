//! The PKCS#11 keystore against a real SoftHSM2 token, one fresh token per
//! test process (see `support/softhsm.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::sync::Arc;

use aes::Aes256;
use aes::cipher::{BlockEncrypt, KeyInit};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use cryptoki::session::{Session, SessionState, UserType};
use keyhold_core::audit::{AuditMac, AuditSigner, ChainHead, Checkpoint};
use keyhold_core::cloud::WrappingAlgorithm;
use keyhold_core::error::KeystoreError;
use keyhold_core::key::CheckDigits;
use keyhold_core::ports::{Keystore, KeystoreKind};
use keyhold_keystore::{Pkcs11Keystore, Pkcs11Settings, TokenSelector};
use rsa::pkcs8::EncodePublicKey;
use rsa::rand_core::OsRng;
use rsa::{Oaep, RsaPrivateKey};
use secrecy::SecretString;

#[path = "support/softhsm.rs"]
mod softhsm;

use softhsm::{LABEL, MODULE, PIN, with_softhsm};

fn settings() -> Pkcs11Settings {
    Pkcs11Settings {
        module: MODULE.into(),
        token: TokenSelector::Label(LABEL.into()),
        pin: SecretString::from(PIN),
    }
}

fn open() -> Pkcs11Keystore {
    Pkcs11Keystore::open(settings()).unwrap()
}

/// The test's own view of the token, through cryptoki directly, like another
/// library in the same process: same module state, same login state.
struct Raw {
    pkcs11: Pkcs11,
    session: Session,
}

fn raw() -> Raw {
    let pkcs11 = Pkcs11::new(MODULE).unwrap();
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let session = raw_session(&pkcs11);
    Raw { pkcs11, session }
}

fn raw_session(pkcs11: &Pkcs11) -> Session {
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label() == LABEL)
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&SecretString::from(PIN))) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    session
}

impl Raw {
    fn objects_labelled(&self, label: &str) -> Vec<cryptoki::object::ObjectHandle> {
        self.session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .unwrap()
    }

    fn bool_attribute(&self, object: cryptoki::object::ObjectHandle, which: AttributeType) -> bool {
        let attributes = self.session.get_attributes(object, &[which]).unwrap();
        match attributes.as_slice() {
            [Attribute::Sensitive(v)]
            | [Attribute::Extractable(v)]
            | [Attribute::Token(v)]
            | [Attribute::Private(v)]
            | [Attribute::Wrap(v)]
            | [Attribute::Unwrap(v)]
            | [Attribute::Encrypt(v)]
            | [Attribute::Derive(v)]
            | [Attribute::Sign(v)] => *v,
            other => panic!("{which:?}: {other:?}"),
        }
    }
}

fn key_label(key_id: uuid::Uuid) -> String {
    format!("keyhold:key:{key_id}")
}

/// An RSA-2048 key pair in software: the test plays KMS.
fn kms_key_pair() -> (RsaPrivateKey, Vec<u8>) {
    let private = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
    let der = private
        .to_public_key()
        .to_public_key_der()
        .unwrap()
        .as_bytes()
        .to_vec();
    (private, der)
}

fn check_digits_of(material: &[u8]) -> CheckDigits {
    let cipher = Aes256::new_from_slice(material).unwrap();
    let mut block = [0u8; 16].into();
    cipher.encrypt_block(&mut block);
    CheckDigits::from_encrypted_zero_block(&block.into())
}

fn unavailable(result: Result<impl std::fmt::Debug, KeystoreError>) -> String {
    match result {
        Err(KeystoreError::Unavailable(message)) => message,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn generated_key_is_sensitive_and_its_value_cannot_be_read() {
    with_softhsm(
        "generated_key_is_sensitive_and_its_value_cannot_be_read",
        || {
            let keystore = open();
            let key_id = uuid::Uuid::new_v4();
            let generated = keystore.generate_key(key_id).unwrap();
            assert_eq!(generated.handle, key_label(key_id).into_bytes());

            let raw = raw();
            let objects = raw.objects_labelled(&key_label(key_id));
            let [object] = objects.as_slice() else {
                panic!("expected one object, found {}", objects.len());
            };
            assert!(raw.bool_attribute(*object, AttributeType::Sensitive));
            assert!(raw.bool_attribute(*object, AttributeType::Extractable));
            assert!(raw.bool_attribute(*object, AttributeType::Token));
            assert!(raw.bool_attribute(*object, AttributeType::Private));
            assert!(raw.bool_attribute(*object, AttributeType::Encrypt));
            assert!(!raw.bool_attribute(*object, AttributeType::Wrap));
            assert!(!raw.bool_attribute(*object, AttributeType::Unwrap));
            assert!(!raw.bool_attribute(*object, AttributeType::Derive));
            let id = raw
                .session
                .get_attributes(*object, &[AttributeType::Id])
                .unwrap();
            assert_eq!(id, vec![Attribute::Id(key_id.as_bytes().to_vec())]);
            // CKA_VALUE: the token answers "sensitive", and no value comes back.
            let info = raw
                .session
                .get_attribute_info(*object, &[AttributeType::Value])
                .unwrap();
            assert!(
                matches!(info.as_slice(), [AttributeInfo::Sensitive]),
                "{info:?}"
            );
            let value = raw
                .session
                .get_attributes(*object, &[AttributeType::Value])
                .unwrap();
            assert!(value.is_empty(), "CKA_VALUE came back: {}", value.len());
            // keyhold's seal key is not even extractable; the audit MAC key
            // is, only to be wrapped into backups.
            for (label, extractable) in [("keyhold:seal", false), ("keyhold:audit-mac", true)] {
                let own = raw.objects_labelled(label);
                assert_eq!(own.len(), 1, "{label}");
                assert!(raw.bool_attribute(own[0], AttributeType::Sensitive));
                assert_eq!(
                    raw.bool_attribute(own[0], AttributeType::Extractable),
                    extractable,
                    "{label}"
                );
            }

            // The same seen by OpenSC's pkcs11-tool from another process.
            let pkcs11_tool = |args: &[&str]| {
                Command::new("pkcs11-tool")
                    .args(["--module", MODULE, "--token-label", LABEL])
                    .args(["--login", "--pin", PIN])
                    .args(args)
                    .output()
                    .unwrap_or_else(|e| {
                        panic!("this test needs pkcs11-tool (Debian package opensc): {e}")
                    })
            };
            let listed = pkcs11_tool(&["--list-objects", "--type", "secrkey"]);
            assert!(listed.status.success());
            let listing = String::from_utf8_lossy(&listed.stdout);
            println!("{listing}");
            let entry = listing
                .split("Secret Key Object")
                .find(|entry| entry.contains(&key_label(key_id)))
                .unwrap_or_else(|| panic!("pkcs11-tool does not list {}", key_label(key_id)));
            assert!(entry.contains("AES length 32"), "{entry}");
            assert!(entry.contains("sensitive"), "{entry}");
            assert!(!entry.to_ascii_lowercase().contains("value"), "{entry}");
            let read = pkcs11_tool(&[
                "--read-object",
                "--type",
                "secrkey",
                "--label",
                &key_label(key_id),
            ]);
            assert!(!read.status.success(), "pkcs11-tool read the key's value");
            let refusal = String::from_utf8_lossy(&read.stderr);
            assert!(refusal.contains("CKR_ATTRIBUTE_SENSITIVE"), "{refusal}");
        },
    );
}

#[test]
fn check_digits_are_aes_ecb_of_the_zero_block_under_the_material() {
    with_softhsm(
        "check_digits_are_aes_ecb_of_the_zero_block_under_the_material",
        || {
            let keystore = open();
            let key_id = uuid::Uuid::new_v4();
            let generated = keystore.generate_key(key_id).unwrap();
            let (private, der) = kms_key_pair();
            let wrapped = keystore
                .wrap_key(
                    key_id,
                    &generated.handle,
                    &der,
                    WrappingAlgorithm::RsaesOaepSha1,
                )
                .unwrap();
            assert_eq!(wrapped.len(), 256);
            let material = private
                .decrypt(Oaep::new::<sha1::Sha1>(), &wrapped)
                .unwrap();
            assert_eq!(material.len(), 32);
            assert_eq!(check_digits_of(&material), generated.check_digits);

            // Generating again for the same key id (an earlier call whose
            // answer was lost) returns the same material, never a second object.
            let again = keystore.generate_key(key_id).unwrap();
            assert_eq!(again.check_digits, generated.check_digits);
            assert_eq!(raw().objects_labelled(&key_label(key_id)).len(), 1);
        },
    );
}

#[test]
fn softhsm_wraps_with_oaep_sha1_only() {
    with_softhsm("softhsm_wraps_with_oaep_sha1_only", || {
        let keystore = open();
        // SoftHSM2 2.6 refuses OAEP-SHA-256 for C_WrapKey and has no
        // CKM_RSA_AES_KEY_WRAP: its probe leaves OAEP SHA-1 alone.
        assert_eq!(
            keystore.wrapping_algorithms().unwrap(),
            vec![WrappingAlgorithm::RsaesOaepSha1]
        );
        let key_id = uuid::Uuid::new_v4();
        let generated = keystore.generate_key(key_id).unwrap();
        let (private, der) = kms_key_pair();
        let refused = keystore.wrap_key(
            key_id,
            &generated.handle,
            &der,
            WrappingAlgorithm::RsaesOaepSha256,
        );
        match refused {
            Err(KeystoreError::Unsupported(message)) => {
                assert!(message.contains("RSAES_OAEP_SHA_256"), "{message}");
                assert!(message.contains("RSAES_OAEP_SHA_1"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let wrapped = keystore
            .wrap_key(
                key_id,
                &generated.handle,
                &der,
                WrappingAlgorithm::RsaesOaepSha1,
            )
            .unwrap();
        let material = private
            .decrypt(Oaep::new::<sha1::Sha1>(), &wrapped)
            .unwrap();
        assert_eq!(check_digits_of(&material), generated.check_digits);

        // Small or malformed wrapping keys are refused before the token is asked.
        let small = RsaPrivateKey::new(&mut OsRng, 1024)
            .unwrap()
            .to_public_key()
            .to_public_key_der()
            .unwrap();
        assert!(matches!(
            keystore.wrap_key(
                key_id,
                &generated.handle,
                small.as_bytes(),
                WrappingAlgorithm::RsaesOaepSha1
            ),
            Err(KeystoreError::Unsupported(m)) if m.contains("1024 bits")
        ));
        assert!(matches!(
            keystore.wrap_key(
                key_id,
                &generated.handle,
                b"not DER",
                WrappingAlgorithm::RsaesOaepSha1
            ),
            Err(KeystoreError::Unsupported(_))
        ));
        // A handle that names another key is refused.
        assert!(matches!(
            keystore.wrap_key(
                uuid::Uuid::new_v4(),
                &generated.handle,
                &der,
                WrappingAlgorithm::RsaesOaepSha1
            ),
            Err(KeystoreError::Internal(_))
        ));
        // No session public keys are left behind (the token's one public
        // key is the audit checkpoint key's).
        let leftovers = raw()
            .session
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Token(false),
            ])
            .unwrap();
        assert!(leftovers.is_empty(), "{} public keys left", leftovers.len());
    });
}

#[test]
fn rsa_aes_key_wrap_composition_is_the_aws_format() {
    with_softhsm("rsa_aes_key_wrap_composition_is_the_aws_format", || {
        // SoftHSM2 2.6 cannot wrap with OAEP-SHA-256, so the composition is
        // run with OAEP-SHA-1 for its first half; the layout is what counts.
        let keystore = open();
        let key_id = uuid::Uuid::new_v4();
        let generated = keystore.generate_key(key_id).unwrap();
        let (private, der) = kms_key_pair();
        let wrapped = keystore
            .wrap_rsa_aes_oaep_sha1_for_tests(key_id, &generated.handle, &der)
            .unwrap();
        assert_eq!(wrapped.len(), 256 + 40);
        let (wrapped_ephemeral, wrapped_material) = wrapped.split_at(256);
        let ephemeral = private
            .decrypt(Oaep::new::<sha1::Sha1>(), wrapped_ephemeral)
            .unwrap();
        let kek = aes_kw::KekAes256::try_from(ephemeral.as_slice()).unwrap();
        let mut material = [0u8; 32];
        kek.unwrap_with_padding(wrapped_material, &mut material)
            .unwrap();
        assert_eq!(check_digits_of(&material), generated.check_digits);
    });
}

#[test]
fn sealed_secrets_open_only_with_their_context() {
    with_softhsm("sealed_secrets_open_only_with_their_context", || {
        let keystore = open();
        let secret = b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let sealed = keystore.seal_secret(b"credential:prod", secret).unwrap();
        assert_eq!(sealed[0], 0x01);
        assert_eq!(sealed.len(), 1 + 12 + secret.len() + 16);
        assert!(
            !sealed
                .windows(secret.len())
                .any(|window| window == secret.as_slice())
        );
        let opened = keystore.open_secret(b"credential:prod", &sealed).unwrap();
        assert_eq!(opened.as_slice(), secret.as_slice());
        // A fresh IV every time.
        assert_ne!(
            keystore.seal_secret(b"credential:prod", secret).unwrap(),
            sealed
        );

        let wrong_context = keystore.open_secret(b"credential:test", &sealed);
        assert!(
            matches!(wrong_context, Err(KeystoreError::SealBroken)),
            "{wrong_context:?}"
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            keystore.open_secret(b"credential:prod", &tampered),
            Err(KeystoreError::SealBroken)
        ));
        let mut other_version = sealed.clone();
        other_version[0] = 0x02;
        assert!(matches!(
            keystore.open_secret(b"credential:prod", &other_version),
            Err(KeystoreError::SealBroken)
        ));
        assert!(matches!(
            keystore.open_secret(b"credential:prod", &sealed[..20]),
            Err(KeystoreError::SealBroken)
        ));
        // A failed open leaves the keystore working.
        assert_eq!(
            keystore
                .open_secret(b"credential:prod", &sealed)
                .unwrap()
                .as_slice(),
            secret.as_slice()
        );
        // Empty secrets and contexts work too.
        let empty = keystore.seal_secret(b"", b"").unwrap();
        assert!(keystore.open_secret(b"", &empty).unwrap().is_empty());
    });
}

#[test]
fn audit_mac_is_stable_across_opens_and_depends_on_the_data() {
    with_softhsm(
        "audit_mac_is_stable_across_opens_and_depends_on_the_data",
        || {
            let first = open();
            let mac = first.audit_mac(b"entry 1").unwrap();
            assert_ne!(mac, first.audit_mac(b"entry 2").unwrap());
            assert_eq!(mac, first.audit_mac(b"entry 1").unwrap());
            let sealed = first.seal_secret(b"ctx", b"secret").unwrap();

            // A second keystore on the same token, while the first is open.
            let second = open();
            assert_eq!(second.audit_mac(b"entry 1").unwrap(), mac);
            assert_eq!(
                second.open_secret(b"ctx", &sealed).unwrap().as_slice(),
                b"secret"
            );
            drop(first);
            drop(second);

            // And after both are gone (a restart).
            let third = open();
            assert_eq!(third.audit_mac(b"entry 1").unwrap(), mac);
            assert_eq!(
                third.open_secret(b"ctx", &sealed).unwrap().as_slice(),
                b"secret"
            );
            let raw = raw();
            assert_eq!(raw.objects_labelled("keyhold:seal").len(), 1);
            assert_eq!(raw.objects_labelled("keyhold:audit-mac").len(), 1);

            // HMAC-SHA256 in the token: a token-side verify accepts it.
            let object = raw.objects_labelled("keyhold:audit-mac")[0];
            raw.session
                .verify(
                    &cryptoki::mechanism::Mechanism::Sha256Hmac,
                    object,
                    b"entry 1",
                    &mac,
                )
                .unwrap();
        },
    );
}

#[test]
fn checkpoints_are_signed_in_the_token_by_a_key_whose_value_cannot_be_read() {
    with_softhsm(
        "checkpoints_are_signed_in_the_token_by_a_key_whose_value_cannot_be_read",
        || {
            let first = open();
            let key = first.audit_public_key().unwrap();
            let head = ChainHead {
                seq: 42,
                hash: [7; 32],
            };
            let checkpoint = Checkpoint::sign(
                head,
                keyhold_core::clock::parse_timestamp("2026-12-05T12:00:00Z").unwrap(),
                &first,
            )
            .unwrap();
            // Verified with the public key alone, outside the token.
            checkpoint.verify(&key).unwrap();
            drop(first);

            // The same key after a restart, and one pair on the token.
            let second = open();
            assert_eq!(second.audit_public_key().unwrap(), key);
            let raw = raw();
            let private = raw
                .session
                .find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Label(b"keyhold:audit-signing".to_vec()),
                ])
                .unwrap();
            assert_eq!(private.len(), 1);
            assert!(raw.bool_attribute(private[0], AttributeType::Sensitive));
            // Extractable only to be wrapped into backups; sensitive keeps its value in.
            assert!(raw.bool_attribute(private[0], AttributeType::Extractable));
            assert!(raw.bool_attribute(private[0], AttributeType::Token));
            assert!(raw.bool_attribute(private[0], AttributeType::Sign));
            // Its value cannot be read from the token.
            assert!(!matches!(
                raw.session
                    .get_attributes(private[0], &[AttributeType::Value])
                    .unwrap()
                    .as_slice(),
                [Attribute::Value(_)]
            ));
        },
    );
}

/// The material key `key_id` wraps to, unwrapped by the test playing KMS.
fn wrapped_check_digits(
    keystore: &Pkcs11Keystore,
    key_id: uuid::Uuid,
) -> Result<CheckDigits, KeystoreError> {
    let (private, der) = kms_key_pair();
    let handle = key_label(key_id).into_bytes();
    let wrapped = keystore.wrap_key(key_id, &handle, &der, WrappingAlgorithm::RsaesOaepSha1)?;
    let material = private
        .decrypt(Oaep::new::<sha1::Sha1>(), &wrapped)
        .unwrap();
    Ok(check_digits_of(&material))
}

/// keyhold keeps the handles of objects it found (a search costs time in
/// proportion to the objects on the token), but never wraps with a handle
/// that no longer names the key's object: destroyed behind its back, the
/// key is reported missing even when another key now holds the handle, and
/// an object labelled for the key again is found and used.
#[test]
fn a_remembered_handle_never_wraps_another_key() {
    with_softhsm("a_remembered_handle_never_wraps_another_key", || {
        let keystore = open();
        let first = uuid::Uuid::new_v4();
        let generated = keystore.generate_key(first).unwrap();
        assert_eq!(
            wrapped_check_digits(&keystore, first).unwrap(),
            generated.check_digits
        );

        let raw = raw();
        for object in raw.objects_labelled(&key_label(first)) {
            raw.session.destroy_object(object).unwrap();
        }
        // New objects may take the destroyed one's handle.
        let others: Vec<(uuid::Uuid, CheckDigits)> = (0..3)
            .map(|_| {
                let id = uuid::Uuid::new_v4();
                (id, keystore.generate_key(id).unwrap().check_digits)
            })
            .collect();
        match wrapped_check_digits(&keystore, first) {
            Err(KeystoreError::KeyNotFound(message)) => {
                assert!(message.contains(&first.to_string()), "{message}");
            }
            other => panic!("a destroyed key wrapped: {other:?}"),
        }
        for (id, digits) in &others {
            assert_eq!(wrapped_check_digits(&keystore, *id).unwrap(), *digits);
        }

        // An object made for the key again (a token restored, say) is found.
        let again = raw
            .session
            .generate_key(
                &cryptoki::mechanism::Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::ValueLen(32.into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Extractable(true),
                    Attribute::Sensitive(true),
                    Attribute::Wrap(false),
                    Attribute::Encrypt(true),
                    Attribute::Label(key_label(first).into_bytes()),
                    Attribute::Id(first.as_bytes().to_vec()),
                ],
            )
            .unwrap();
        let block = raw
            .session
            .encrypt(&cryptoki::mechanism::Mechanism::AesEcb, again, &[0u8; 16])
            .unwrap();
        let expected = CheckDigits::from_encrypted_zero_block(&block.try_into().unwrap());
        assert_eq!(wrapped_check_digits(&keystore, first).unwrap(), expected);
    });
}

#[test]
fn deleted_key_is_gone_from_the_token() {
    with_softhsm("deleted_key_is_gone_from_the_token", || {
        let keystore = open();
        let key_id = uuid::Uuid::new_v4();
        let generated = keystore.generate_key(key_id).unwrap();
        let kept_id = uuid::Uuid::new_v4();
        keystore.generate_key(kept_id).unwrap();
        keystore.delete_key(key_id, &generated.handle).unwrap();

        let raw = raw();
        assert!(raw.objects_labelled(&key_label(key_id)).is_empty());
        assert_eq!(raw.objects_labelled(&key_label(kept_id)).len(), 1);
        let (_, der) = kms_key_pair();
        match keystore.wrap_key(
            key_id,
            &generated.handle,
            &der,
            WrappingAlgorithm::RsaesOaepSha1,
        ) {
            Err(KeystoreError::KeyNotFound(message)) => {
                assert!(message.contains(&key_id.to_string()), "{message}");
                assert!(message.contains("missing from the token"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Already gone is fine.
        keystore.delete_key(key_id, &generated.handle).unwrap();
    });
}

/// Listings answer from the handles the keystore knows and list the token
/// only for the others: an object destroyed behind keyhold's back is still
/// reported missing, by this keystore and by a fresh one.
#[test]
fn material_listing_notices_objects_destroyed_behind_our_back() {
    with_softhsm(
        "material_listing_notices_objects_destroyed_behind_our_back",
        || {
            let keystore = open();
            let kept = uuid::Uuid::new_v4();
            let destroyed = uuid::Uuid::new_v4();
            let kept_handle = keystore.generate_key(kept).unwrap().handle;
            let destroyed_handle = keystore.generate_key(destroyed).unwrap().handle;
            let listing = [
                (kept, kept_handle.as_slice()),
                (destroyed, destroyed_handle.as_slice()),
                // Another keystore's handle has no material here.
                (kept, b"software-blob".as_slice()),
            ];
            assert_eq!(keystore.missing_material(&listing).unwrap(), vec![kept]);

            let raw = raw();
            for object in raw.objects_labelled(&key_label(destroyed)) {
                raw.session.destroy_object(object).unwrap();
            }
            // New objects may take the destroyed one's handle.
            keystore.generate_key(uuid::Uuid::new_v4()).unwrap();
            assert_eq!(
                keystore.missing_material(&listing).unwrap(),
                vec![destroyed, kept]
            );
            assert_eq!(
                open().missing_material(&listing).unwrap(),
                vec![destroyed, kept]
            );

            // Destroyed by another process (an operator's pkcs11-tool): this
            // process's SoftHSM2 learns it from the token's files.
            let deleted = Command::new("pkcs11-tool")
                .args(["--module", MODULE, "--token-label", LABEL])
                .args(["--login", "--pin", PIN])
                .args(["--delete-object", "--type", "secrkey"])
                .args(["--label", &key_label(kept)])
                .output()
                .unwrap_or_else(|e| {
                    panic!("this test needs pkcs11-tool (Debian package opensc): {e}")
                });
            assert!(deleted.status.success(), "{deleted:?}");
            assert_eq!(
                keystore.missing_material(&listing).unwrap(),
                vec![kept, destroyed, kept]
            );
            match wrapped_check_digits(&keystore, kept) {
                Err(KeystoreError::KeyNotFound(message)) => {
                    assert!(message.contains(&kept.to_string()), "{message}");
                }
                other => panic!("a destroyed key wrapped: {other:?}"),
            }
        },
    );
}

#[test]
fn wrong_pin_is_refused_without_showing_it() {
    with_softhsm("wrong_pin_is_refused_without_showing_it", || {
        let pin = "31415926";
        let wrong = Pkcs11Settings {
            pin: SecretString::from(pin),
            ..settings()
        };
        assert!(!format!("{wrong:?}").contains(pin));
        let message = unavailable(Pkcs11Keystore::open(wrong));
        println!("{message}");
        assert!(
            message.contains("the PKCS#11 token refused the PIN"),
            "{message}"
        );
        assert!(message.contains("CKR_PIN_INCORRECT"), "{message}");
        assert!(message.contains(LABEL), "{message}");
        assert!(!message.contains(pin), "{message}");

        let keystore = open();
        keystore.check().unwrap();
        assert!(!format!("{keystore:?}").contains(PIN));
        assert!(!format!("{:?}", settings()).contains(PIN));
    });
}

#[test]
fn missing_module_is_a_clear_error() {
    // Does not touch SoftHSM2: no token needed.
    let message = unavailable(Pkcs11Keystore::open(Pkcs11Settings {
        module: "/nonexistent/libpkcs11.so".into(),
        ..settings()
    }));
    assert!(
        message.starts_with("cannot load PKCS#11 module /nonexistent/libpkcs11.so: "),
        "{message}"
    );
    assert!(
        message.contains("set pkcs11_module to the library, e.g. /usr/lib/softhsm/libsofthsm2.so"),
        "{message}"
    );
    assert!(!message.contains(PIN), "{message}");

    // A file that is no PKCS#11 library.
    let dir = tempfile::tempdir().unwrap();
    let not_a_library = dir.path().join("libfake.so");
    std::fs::write(&not_a_library, b"not a shared object").unwrap();
    let message = unavailable(Pkcs11Keystore::open(Pkcs11Settings {
        module: not_a_library.clone(),
        ..settings()
    }));
    assert!(
        message.starts_with(&format!(
            "cannot load PKCS#11 module {}",
            not_a_library.display()
        )),
        "{message}"
    );
}

#[test]
fn absent_token_is_a_clear_error() {
    with_softhsm("absent_token_is_a_clear_error", || {
        let message = unavailable(Pkcs11Keystore::open(Pkcs11Settings {
            token: TokenSelector::Label("no-such-token".into()),
            ..settings()
        }));
        println!("{message}");
        assert!(
            message.contains("no token labelled 'no-such-token'"),
            "{message}"
        );
        assert!(message.contains(&format!("'{LABEL}' in slot")), "{message}");

        let message = unavailable(Pkcs11Keystore::open(Pkcs11Settings {
            token: TokenSelector::Slot(4_000_000_000),
            ..settings()
        }));
        assert!(message.contains("no token in slot 4000000000"), "{message}");

        // Selecting by slot id works.
        let raw = raw();
        let slot = raw.session.get_session_info().unwrap().slot_id();
        let keystore = Pkcs11Keystore::open(Pkcs11Settings {
            token: TokenSelector::Slot(slot.id()),
            ..settings()
        })
        .unwrap();
        keystore.check().unwrap();
    });
}

#[test]
fn logout_behind_our_back_is_survived() {
    with_softhsm("logout_behind_our_back_is_survived", || {
        let keystore = open();
        let sealed = keystore.seal_secret(b"ctx", b"secret").unwrap();
        let mac = keystore.audit_mac(b"entry").unwrap();

        // C_Logout on any session logs the whole process out of the token,
        // keyhold's pooled sessions included.
        let raw = raw();
        raw.session.logout().unwrap();
        assert_eq!(
            raw.session.get_session_info().unwrap().session_state(),
            SessionState::RwPublic
        );

        keystore.check().unwrap();
        assert_eq!(
            keystore.open_secret(b"ctx", &sealed).unwrap().as_slice(),
            b"secret"
        );
        assert_eq!(keystore.audit_mac(b"entry").unwrap(), mac);
        keystore.generate_key(uuid::Uuid::new_v4()).unwrap();

        // Again, between two calls of a job.
        raw.session.logout().unwrap();
        keystore.generate_key(uuid::Uuid::new_v4()).unwrap();
    });
}

#[test]
fn module_reinitialised_behind_our_back_is_survived() {
    with_softhsm("module_reinitialised_behind_our_back_is_survived", || {
        let keystore = open();
        let sealed = keystore.seal_secret(b"ctx", b"secret").unwrap();
        // Another library of the process finalizes and initialises the
        // module: every session keyhold had is gone (CKR_SESSION_HANDLE_INVALID).
        let Raw { pkcs11, session } = raw();
        drop(session);
        pkcs11.clone().finalize().unwrap();
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .unwrap();

        assert_eq!(
            keystore.open_secret(b"ctx", &sealed).unwrap().as_slice(),
            b"secret"
        );
        keystore.check().unwrap();
    });
}

#[test]
fn module_finalized_behind_our_back_recovers_on_the_next_call() {
    with_softhsm(
        "module_finalized_behind_our_back_recovers_on_the_next_call",
        || {
            let keystore = open();
            let mac = keystore.audit_mac(b"entry").unwrap();
            let Raw { pkcs11, session } = raw();
            drop(session);
            pkcs11.finalize().unwrap();

            // The call that meets the dead module reports it...
            let message = unavailable(keystore.audit_mac(b"entry"));
            println!("{message}");
            assert!(
                message.contains("CKR_CRYPTOKI_NOT_INITIALIZED"),
                "{message}"
            );
            assert!(message.contains("re-initialises the module"), "{message}");
            // ...and the next one re-initialises it and works.
            assert_eq!(keystore.audit_mac(b"entry").unwrap(), mac);
            keystore.check().unwrap();
        },
    );
}

#[test]
fn keystore_serves_many_threads() {
    with_softhsm("keystore_serves_many_threads", || {
        let keystore = Arc::new(open());
        let mac = keystore.audit_mac(b"entry").unwrap();
        let (private, der) = kms_key_pair();
        let (private, der) = (Arc::new(private), Arc::new(der));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let keystore = Arc::clone(&keystore);
                let (private, der) = (Arc::clone(&private), Arc::clone(&der));
                std::thread::spawn(move || {
                    for j in 0..10 {
                        if j % 3 == 0 {
                            // Token-object writes interleaved with everything else.
                            let key_id = uuid::Uuid::new_v4();
                            let generated = keystore.generate_key(key_id).unwrap();
                            if j == 3 {
                                keystore.delete_key(key_id, &generated.handle).unwrap();
                            } else {
                                let wrapped = keystore
                                    .wrap_key(
                                        key_id,
                                        &generated.handle,
                                        &der,
                                        WrappingAlgorithm::RsaesOaepSha1,
                                    )
                                    .unwrap();
                                let material = private
                                    .decrypt(Oaep::new::<sha1::Sha1>(), &wrapped)
                                    .unwrap();
                                assert_eq!(check_digits_of(&material), generated.check_digits);
                            }
                        }
                        let context = format!("ctx-{i}-{j}");
                        let sealed = keystore.seal_secret(context.as_bytes(), b"secret").unwrap();
                        let opened = keystore.open_secret(context.as_bytes(), &sealed).unwrap();
                        assert_eq!(opened.as_slice(), b"secret");
                        assert_eq!(keystore.audit_mac(b"entry").unwrap(), mac);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        // At most POOL_SIZE (4) idle sessions stay open, plus the test's own.
        let raw = raw();
        let slot = raw.session.get_session_info().unwrap().slot_id();
        let info = raw.pkcs11.get_token_info(slot).unwrap();
        println!("sessions open: {:?}", info.session_count());
        if let Some(sessions) = info.session_count() {
            assert!(sessions <= 4 + 1, "{sessions} sessions open");
        }
    });
}

#[test]
fn kind_and_check() {
    with_softhsm("kind_and_check", || {
        let keystore = open();
        assert_eq!(keystore.kind(), KeystoreKind::Pkcs11);
        keystore.check().unwrap();

        // The seal key deleted on the token: check says so.
        let raw = raw();
        for object in raw.objects_labelled("keyhold:seal") {
            raw.session.destroy_object(object).unwrap();
        }
        let message = unavailable(keystore.check());
        assert!(message.contains("keyhold:seal"), "{message}");
    });
}

#[test]
fn token_removed_while_in_use_is_reported_and_recovers_when_back() {
    with_softhsm(
        "token_removed_while_in_use_is_reported_and_recovers_when_back",
        || {
            let keystore = open();
            let key_id = uuid::Uuid::new_v4();
            let generated = keystore.generate_key(key_id).unwrap();
            let sealed = keystore.seal_secret(b"ctx", b"secret").unwrap();

            // Pull the token: its files leave SoftHSM2's token directory.
            let dir =
                std::path::PathBuf::from(std::env::var("KEYHOLD_PKCS11_TEST_TOKEN_DIR").unwrap());
            let tokens = dir.join("tokens");
            let away = dir.join("away");
            std::fs::rename(&tokens, &away).unwrap();
            std::fs::create_dir(&tokens).unwrap();

            let message = unavailable(keystore.check());
            assert!(message.contains("is not reachable"), "{message}");
            assert!(message.contains(LABEL), "{message}");
            // The next calls re-initialise the module and find no such token.
            for _ in 0..2 {
                let message = unavailable(keystore.generate_key(uuid::Uuid::new_v4()));
                assert!(
                    message.contains(&format!("no token labelled '{LABEL}'")),
                    "{message}"
                );
            }
            let message = unavailable(keystore.audit_mac(b"entry"));
            assert!(
                message.contains(&format!("no token labelled '{LABEL}'")),
                "{message}"
            );

            // Put it back: the same keystore works again, with the same keys.
            std::fs::remove_dir(&tokens).unwrap();
            std::fs::rename(&away, &tokens).unwrap();
            keystore.check().unwrap();
            assert_eq!(
                &keystore.open_secret(b"ctx", &sealed).unwrap()[..],
                b"secret"
            );
            let again = keystore.generate_key(key_id).unwrap();
            assert_eq!(again.check_digits, generated.check_digits);
        },
    );
}

#[test]
fn a_token_that_is_absent_at_load_is_reported_until_it_appears() {
    with_softhsm(
        "a_token_that_is_absent_at_load_is_reported_until_it_appears",
        || {
            let keystore = Pkcs11Keystore::load(Pkcs11Settings {
                token: TokenSelector::Label("arrives-later".into()),
                ..settings()
            })
            .unwrap();
            let message = unavailable(keystore.check());
            assert!(
                message.contains("no token labelled 'arrives-later'"),
                "{message}"
            );
            let message = unavailable(keystore.wrapping_algorithms());
            assert!(
                message.contains("no token labelled 'arrives-later'"),
                "{message}"
            );

            let conf = std::env::var("SOFTHSM2_CONF").unwrap();
            let init = Command::new("softhsm2-util")
                .args(["--init-token", "--free", "--label", "arrives-later"])
                .args(["--pin", PIN, "--so-pin", softhsm::SO_PIN])
                .env("SOFTHSM2_CONF", conf)
                .output()
                .unwrap();
            assert!(init.status.success(), "{init:?}");
            keystore.check().unwrap();
            assert_eq!(
                keystore.wrapping_algorithms().unwrap(),
                vec![WrappingAlgorithm::RsaesOaepSha1]
            );
        },
    );
}

#[test]
fn software_keys_and_audit_mac_key_move_into_the_token() {
    with_softhsm(
        "software_keys_and_audit_mac_key_move_into_the_token",
        || {
            let dir = tempfile::tempdir().unwrap();
            let software = keyhold_keystore::SoftKeystore::init(
                dir.path(),
                keyhold_keystore::MasterKeySource::File,
            )
            .unwrap();
            let key_id = uuid::Uuid::new_v4();
            let soft_key = software.generate_key(key_id).unwrap();

            // The audit MAC key first, before the token makes one of its own.
            let token = Pkcs11Keystore::load(settings()).unwrap();
            let expected = software.audit_mac(b"probe").unwrap();
            let wrap_mac = |der: &[u8], algorithm| software.wrap_audit_mac_key(der, algorithm);
            token
                .adopt_audit_mac_key(b"probe", &expected, &wrap_mac)
                .unwrap();
            assert_eq!(
                token.audit_mac(b"entry").unwrap(),
                software.audit_mac(b"entry").unwrap()
            );
            // Again (a resumed migration): found, not duplicated.
            token
                .adopt_audit_mac_key(b"probe", &expected, &wrap_mac)
                .unwrap();
            assert_eq!(raw().objects_labelled("keyhold:audit-mac").len(), 1);
            // Another installation's key is refused, not replaced.
            let other = keyhold_keystore::SoftKeystore::init(
                &dir.path().join("other"),
                keyhold_keystore::MasterKeySource::File,
            )
            .unwrap();
            let refused = token.adopt_audit_mac_key(
                b"probe",
                &other.audit_mac(b"probe").unwrap(),
                &|der: &[u8], algorithm| other.wrap_audit_mac_key(der, algorithm),
            );
            assert!(
                matches!(&refused, Err(KeystoreError::Unsupported(m)) if m.contains("already holds another audit MAC key")),
                "{refused:?}"
            );

            let wrap_key =
                |der: &[u8], algorithm| software.wrap_key(key_id, &soft_key.handle, der, algorithm);
            let moved = token.import_key(key_id, &wrap_key).unwrap();
            assert_eq!(moved.check_digits, soft_key.check_digits);
            assert!(Pkcs11Keystore::names_token_object(key_id, &moved.handle));
            assert!(!Pkcs11Keystore::names_token_object(
                key_id,
                &soft_key.handle
            ));
            // Idempotent: the object is found, not made twice.
            assert_eq!(
                token.import_key(key_id, &wrap_key).unwrap().check_digits,
                moved.check_digits
            );
            let raw = raw();
            let objects = raw.objects_labelled(&key_label(key_id));
            assert_eq!(objects.len(), 1);
            assert!(raw.bool_attribute(objects[0], AttributeType::Sensitive));

            // The token now wraps the same material for KMS.
            let (private_key, public_der) = kms_key_pair();
            let wrapped = token
                .wrap_key(
                    key_id,
                    &moved.handle,
                    &public_der,
                    WrappingAlgorithm::RsaesOaepSha1,
                )
                .unwrap();
            let material = private_key
                .decrypt(Oaep::new::<sha1::Sha1>(), &wrapped)
                .unwrap();
            assert_eq!(check_digits_of(&material), soft_key.check_digits);

            assert_eq!(
                token
                    .missing_material(&[(key_id, &moved.handle), (key_id, &soft_key.handle)])
                    .unwrap(),
                vec![key_id]
            );
            assert_eq!(
                software
                    .missing_material(&[(key_id, &moved.handle), (key_id, &soft_key.handle)])
                    .unwrap(),
                vec![key_id]
            );
        },
    );
}
