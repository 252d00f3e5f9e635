//! Backups between keystores against real SoftHSM2 tokens, one fresh token
//! directory per test process (see `support/softhsm.rs`): token to token,
//! software to token and back, token to software.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::Session;
use keyhold_core::audit::{ChainHead, Checkpoint};
use keyhold_core::backup::WrappedAuditKeys;
use keyhold_core::cloud::WrappingAlgorithm;
use keyhold_core::error::KeystoreError;
use keyhold_core::ports::Keystore;
use keyhold_keystore::{MasterKeySource, Pkcs11Keystore, SoftKeystore};
use rsa::pkcs8::EncodePublicKey;
use rsa::rand_core::OsRng;
use rsa::{Oaep, RsaPrivateKey};

#[path = "support/softhsm.rs"]
mod softhsm;
#[path = "support/token.rs"]
mod token;

use softhsm::{LABEL, with_softhsm};
use token::{TARGET, add_target_token, flag, labelled, raw, settings, wrap_key};

fn unsupported<T>(result: Result<T, KeystoreError>) -> String {
    match result {
        Err(KeystoreError::Unsupported(message)) => message,
        Err(other) => panic!("expected Unsupported, got {other:?}"),
        Ok(_) => panic!("expected Unsupported, got a success"),
    }
}

/// Session objects labelled as backup wrap keys, on any token the session sees.
fn wrap_keys_in_token(session: &Session) -> usize {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(false),
        ])
        .unwrap()
        .into_iter()
        .filter(|object| {
            session
                .get_attributes(*object, &[AttributeType::Label])
                .unwrap()
                .iter()
                .any(|a| matches!(a, Attribute::Label(l) if l.starts_with(b"keyhold:backup-wrap:")))
        })
        .count()
}

/// A key's material, as the test playing KMS unwraps it (RSA-OAEP-SHA-1,
/// which SoftHSM2 2.6 wraps with).
fn material(keystore: &dyn Keystore, key_id: uuid::Uuid, handle: &[u8]) -> Vec<u8> {
    let private = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
    let der = private.to_public_key().to_public_key_der().unwrap();
    let wrapped = keystore
        .wrap_key(
            key_id,
            handle,
            der.as_bytes(),
            WrappingAlgorithm::RsaesOaepSha1,
        )
        .unwrap();
    private
        .decrypt(Oaep::new::<sha1::Sha1>(), &wrapped)
        .unwrap()
}

fn assert_same_audit_keys(a: &dyn Keystore, b: &dyn Keystore) {
    assert_eq!(
        a.audit_mac(b"entry").unwrap(),
        b.audit_mac(b"entry").unwrap()
    );
    let key = a.audit_public_key().unwrap();
    assert_eq!(b.audit_public_key().unwrap(), key);
    // And b signs with the private half of a's key.
    let head = ChainHead {
        seq: 1,
        hash: [9; 32],
    };
    let time = keyhold_core::clock::parse_timestamp("2026-12-05T12:00:00Z").unwrap();
    Checkpoint::sign(head, time, b)
        .unwrap()
        .verify(&key)
        .unwrap();
}

#[test]
fn a_token_backup_restores_into_a_fresh_token_and_into_software() {
    with_softhsm(
        "a_token_backup_restores_into_a_fresh_token_and_into_software",
        || {
            add_target_token();
            let source = Pkcs11Keystore::open(settings(LABEL)).unwrap();
            let keys: Vec<_> = (0..3)
                .map(|_| {
                    let id = uuid::Uuid::new_v4();
                    (id, source.generate_key(id).unwrap())
                })
                .collect();

            // A new token's audit keys are sensitive but extractable; the seal key is not.
            let (_pkcs11, raw_source) = raw(LABEL);
            for (class, label) in [
                (ObjectClass::SECRET_KEY, "keyhold:audit-mac"),
                (ObjectClass::PRIVATE_KEY, "keyhold:audit-signing"),
            ] {
                let [object] = labelled(&raw_source, class, label)[..] else {
                    panic!("{label}");
                };
                assert!(
                    flag(&raw_source, object, AttributeType::Sensitive),
                    "{label}"
                );
                assert!(
                    flag(&raw_source, object, AttributeType::Extractable),
                    "{label}"
                );
            }
            let [seal] = labelled(&raw_source, ObjectClass::SECRET_KEY, "keyhold:seal")[..] else {
                panic!("keyhold:seal");
            };
            assert!(!flag(&raw_source, seal, AttributeType::Extractable));

            let exporter = source.backup_export(&wrap_key(1)).unwrap();
            let wrapped: Vec<_> = keys
                .iter()
                .map(|(id, generated)| exporter.export_key(*id, &generated.handle).unwrap())
                .collect();
            let audit_keys = exporter.export_audit_keys().unwrap();
            assert!(
                wrapped.iter().all(|w| w.len() == 40),
                "RFC 5649 of 32 bytes"
            );
            assert_eq!(wrap_keys_in_token(&raw_source), 1);
            drop(exporter);
            assert_eq!(
                wrap_keys_in_token(&raw_source),
                0,
                "the wrap key outlived the export"
            );

            // Into a fresh token: audit keys first, before it makes its own.
            let target = Pkcs11Keystore::load(settings(TARGET)).unwrap();
            target
                .adopt_backup_audit_keys(&wrap_key(1), &audit_keys)
                .unwrap();
            target
                .adopt_backup_audit_keys(&wrap_key(1), &audit_keys)
                .unwrap();
            target.check().unwrap();
            assert_same_audit_keys(&source, &target);
            let (_pkcs11, raw_target) = raw(TARGET);
            assert_eq!(
                labelled(&raw_target, ObjectClass::SECRET_KEY, "keyhold:audit-mac").len(),
                1
            );
            for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
                assert_eq!(
                    labelled(&raw_target, class, "keyhold:audit-signing").len(),
                    1
                );
            }
            let [restored_signing] = labelled(
                &raw_target,
                ObjectClass::PRIVATE_KEY,
                "keyhold:audit-signing",
            )[..] else {
                panic!()
            };
            assert!(flag(
                &raw_target,
                restored_signing,
                AttributeType::Sensitive
            ));
            assert!(flag(&raw_target, restored_signing, AttributeType::Token));

            let importer = target.backup_import(&wrap_key(1)).unwrap();
            for ((id, generated), wrapped) in keys.iter().zip(&wrapped) {
                let restored = importer.import_key(*id, wrapped).unwrap();
                assert_eq!(restored.check_digits, generated.check_digits);
                assert_eq!(restored.handle, generated.handle);
                // Again (an interrupted restore): found, not made twice.
                let again = importer.import_key(*id, wrapped).unwrap();
                assert_eq!(again.handle, restored.handle);
                assert_eq!(again.check_digits, restored.check_digits);
                let label = format!("keyhold:key:{id}");
                let [object] = labelled(&raw_target, ObjectClass::SECRET_KEY, &label)[..] else {
                    panic!("{label}");
                };
                assert!(flag(&raw_target, object, AttributeType::Sensitive));
                assert!(flag(&raw_target, object, AttributeType::Extractable));
                assert!(flag(&raw_target, object, AttributeType::Token));
                assert!(!flag(&raw_target, object, AttributeType::Wrap));
                assert_eq!(
                    material(&target, *id, &restored.handle),
                    material(&source, *id, &generated.handle)
                );
            }
            drop(importer);
            assert_eq!(wrap_keys_in_token(&raw_target), 0);

            // Another wrap key is refused, for new and for present material.
            let (id, _) = keys[0];
            let wrong = target.backup_import(&wrap_key(2)).unwrap();
            let message = unsupported(wrong.import_key(uuid::Uuid::new_v4(), &wrapped[0]));
            assert!(message.contains("does not unwrap"), "{message}");
            let message = unsupported(wrong.import_key(id, &wrapped[0]));
            assert!(message.contains("does not unwrap"), "{message}");
            let message = unsupported(target.adopt_backup_audit_keys(&wrap_key(2), &audit_keys));
            assert!(message.contains("does not unwrap"), "{message}");
            // Other material under a key id the token has is refused.
            let message = unsupported(
                target
                    .backup_import(&wrap_key(1))
                    .unwrap()
                    .import_key(id, &wrapped[1]),
            );
            assert!(message.contains("other material"), "{message}");
            // And the target works on: it backs up what it restored.
            let again = target.backup_export(&wrap_key(1)).unwrap();
            assert_eq!(
                again.export_audit_keys().unwrap().signing_public,
                audit_keys.signing_public
            );

            // Into software: the token's PKCS#8 and raw bytes open there.
            let dir = tempfile::tempdir().unwrap();
            let software = SoftKeystore::init_from_backup(
                &dir.path().join("keystore"),
                MasterKeySource::File,
                &wrap_key(1),
                &audit_keys,
            )
            .unwrap();
            assert_same_audit_keys(&source, &software);
            let importer = software.backup_import(&wrap_key(1)).unwrap();
            for ((id, generated), wrapped) in keys.iter().zip(&wrapped) {
                let restored = importer.import_key(*id, wrapped).unwrap();
                assert_eq!(restored.check_digits, generated.check_digits);
                assert_eq!(
                    material(&software, *id, &restored.handle),
                    material(&source, *id, &generated.handle)
                );
            }
        },
    );
}

#[test]
fn a_software_backup_restores_into_a_token_and_back() {
    with_softhsm("a_software_backup_restores_into_a_token_and_back", || {
        let dir = tempfile::tempdir().unwrap();
        let software = SoftKeystore::init(&dir.path().join("a"), MasterKeySource::File).unwrap();
        let key_id = uuid::Uuid::new_v4();
        let generated = software.generate_key(key_id).unwrap();
        let exporter = software.backup_export(&wrap_key(7)).unwrap();
        let wrapped = exporter.export_key(key_id, &generated.handle).unwrap();
        let audit_keys = exporter.export_audit_keys().unwrap();

        let token = Pkcs11Keystore::load(settings(LABEL)).unwrap();
        token
            .adopt_backup_audit_keys(&wrap_key(7), &audit_keys)
            .unwrap();
        let restored = token
            .backup_import(&wrap_key(7))
            .unwrap()
            .import_key(key_id, &wrapped)
            .unwrap();
        assert_eq!(restored.check_digits, generated.check_digits);
        assert!(Pkcs11Keystore::names_token_object(key_id, &restored.handle));
        assert_same_audit_keys(&software, &token);
        assert_eq!(
            material(&token, key_id, &restored.handle),
            material(&software, key_id, &generated.handle)
        );

        // Another installation's audit keys are refused, not swapped in.
        let other = SoftKeystore::init(&dir.path().join("other"), MasterKeySource::File)
            .unwrap()
            .backup_export(&wrap_key(7))
            .unwrap()
            .export_audit_keys()
            .unwrap();
        let message = unsupported(token.adopt_backup_audit_keys(&wrap_key(7), &other));
        assert!(
            message.contains("already holds another audit MAC key"),
            "{message}"
        );
        let signing_only = WrappedAuditKeys {
            mac: audit_keys.mac.clone(),
            ..other
        };
        let message = unsupported(token.adopt_backup_audit_keys(&wrap_key(7), &signing_only));
        assert!(
            message.contains("already holds another audit signing key"),
            "{message}"
        );
        assert_same_audit_keys(&software, &token);

        // Back out of the token under another backup's key, into software.
        let exporter = token.backup_export(&wrap_key(8)).unwrap();
        let wrapped = exporter.export_key(key_id, &restored.handle).unwrap();
        let audit_keys = exporter.export_audit_keys().unwrap();
        let back = SoftKeystore::init_from_backup(
            &dir.path().join("b"),
            MasterKeySource::File,
            &wrap_key(8),
            &audit_keys,
        )
        .unwrap();
        assert_same_audit_keys(&software, &back);
        let back_key = back
            .backup_import(&wrap_key(8))
            .unwrap()
            .import_key(key_id, &wrapped)
            .unwrap();
        assert_eq!(
            material(&back, key_id, &back_key.handle),
            material(&software, key_id, &generated.handle)
        );
    });
}

#[test]
fn audit_keys_an_older_keyhold_made_unextractable_are_reported() {
    with_softhsm(
        "audit_keys_an_older_keyhold_made_unextractable_are_reported",
        || {
            // The audit MAC key as keyhold made it before backups existed.
            let (_pkcs11, session) = raw(LABEL);
            session
                .generate_key(
                    &Mechanism::GenericSecretKeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::GENERIC_SECRET),
                        Attribute::ValueLen(32.into()),
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Sign(true),
                        Attribute::Verify(true),
                        Attribute::Label(b"keyhold:audit-mac".to_vec()),
                        Attribute::Id(vec![1; 16]),
                    ],
                )
                .unwrap();
            let keystore = Pkcs11Keystore::open(settings(LABEL)).unwrap();
            let key_id = uuid::Uuid::new_v4();
            let generated = keystore.generate_key(key_id).unwrap();
            let exporter = keystore.backup_export(&wrap_key(1)).unwrap();
            let message = unsupported(exporter.export_audit_keys());
            assert!(
                message.contains("keyhold:audit-mac") && message.contains("not extractable"),
                "{message}"
            );
            // Key material still leaves wrapped.
            assert_eq!(
                exporter
                    .export_key(key_id, &generated.handle)
                    .unwrap()
                    .len(),
                40
            );
            // A handle that is not this key's object is refused.
            assert!(
                exporter
                    .export_key(uuid::Uuid::new_v4(), &generated.handle)
                    .is_err()
            );
        },
    );
}
