use aes_kw::KekAes256;
use keyhold_core::audit::{AuditMac, AuditSigner};
use keyhold_core::backup::{BackupWrapKey, WrappedAuditKeys};
use keyhold_core::error::KeystoreError;
use keyhold_core::ports::Keystore;
use zeroize::Zeroizing;

use crate::{MasterKeySource, SoftKeystore};

fn wrap_key(byte: u8) -> BackupWrapKey {
    BackupWrapKey::new(Zeroizing::new([byte; 32]))
}

fn dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("keystore");
    (parent, dir)
}

fn unsupported<T>(result: Result<T, KeystoreError>) -> String {
    match result {
        Err(KeystoreError::Unsupported(message)) => message,
        Err(other) => panic!("expected Unsupported, got {other:?}"),
        Ok(_) => panic!("expected Unsupported, got a success"),
    }
}

#[test]
fn material_is_rfc_5649_of_the_raw_bytes_and_restores_into_another_keystore() {
    let (_a, source_dir) = dir();
    let source = SoftKeystore::init(&source_dir, MasterKeySource::File).unwrap();
    let key_id = uuid::Uuid::new_v4();
    let generated = source.generate_key(key_id).unwrap();
    let exporter = source.backup_export(&wrap_key(1)).unwrap();
    let wrapped = exporter.export_key(key_id, &generated.handle).unwrap();

    // What any RFC 5649 implementation (a token's CKM_AES_KEY_WRAP_PAD) opens.
    let material = source.material_for_test(key_id, &generated.handle);
    let kek = KekAes256::new(&[1u8; 32].into());
    let mut unwrapped = [0u8; 32];
    kek.unwrap_with_padding(&wrapped, &mut unwrapped).unwrap();
    assert_eq!(&unwrapped[..], &material[..]);
    assert_eq!(wrapped.len(), 40);

    let (_b, target_dir) = dir();
    let target = SoftKeystore::init(&target_dir, MasterKeySource::File).unwrap();
    let importer = target.backup_import(&wrap_key(1)).unwrap();
    let restored = importer.import_key(key_id, &wrapped).unwrap();
    assert_eq!(restored.check_digits, generated.check_digits);
    assert_eq!(
        &target.material_for_test(key_id, &restored.handle)[..],
        &material[..]
    );
    // Bound to its key id like any handle.
    assert!(
        target
            .missing_material(&[(uuid::Uuid::new_v4(), &restored.handle)])
            .unwrap()
            .len()
            == 1
    );
    // Again (an interrupted restore): the same material.
    let again = importer.import_key(key_id, &wrapped).unwrap();
    assert_eq!(again.check_digits, generated.check_digits);

    // Another wrap key, or altered bytes, are refused with the reason.
    let message = unsupported(
        target
            .backup_import(&wrap_key(2))
            .unwrap()
            .import_key(key_id, &wrapped),
    );
    assert!(message.contains("does not unwrap"), "{message}");
    let mut altered = wrapped.clone();
    altered[9] ^= 1;
    unsupported(importer.import_key(key_id, &altered));
    unsupported(importer.import_key(key_id, &wrapped[..32]));
    unsupported(importer.import_key(key_id, &[]));

    // A handle of another keystore does not export.
    let foreign = source.generate_key(key_id).unwrap();
    assert!(matches!(
        target
            .backup_export(&wrap_key(1))
            .unwrap()
            .export_key(key_id, &foreign.handle),
        Err(KeystoreError::KeyNotFound(_))
    ));
}

#[test]
fn a_keystore_restored_from_a_backup_has_the_same_audit_keys_and_reruns() {
    let (_a, source_dir) = dir();
    let source = SoftKeystore::init(&source_dir, MasterKeySource::File).unwrap();
    let audit_keys = source
        .backup_export(&wrap_key(3))
        .unwrap()
        .export_audit_keys()
        .unwrap();
    assert_eq!(
        audit_keys.signing_public,
        source.audit_public_key().unwrap().to_spki_der()
    );
    let kek = KekAes256::new(&[3u8; 32].into());
    let mut mac = [0u8; 32];
    kek.unwrap_with_padding(&audit_keys.mac, &mut mac).unwrap();
    assert_eq!(
        keyhold_core::audit::hmac_sha256(&mac, b"x").unwrap(),
        source.audit_mac(b"x").unwrap()
    );

    let (_b, target_dir) = dir();
    let passphrase = || MasterKeySource::Passphrase("restored".to_owned().into());
    // A wrong key leaves the directory untouched.
    let message = unsupported(SoftKeystore::init_from_backup(
        &target_dir,
        passphrase(),
        &wrap_key(4),
        &audit_keys,
    ));
    assert!(message.contains("audit MAC key"), "{message}");
    assert!(!target_dir.exists());

    let restored =
        SoftKeystore::init_from_backup(&target_dir, passphrase(), &wrap_key(3), &audit_keys)
            .unwrap();
    assert_eq!(
        restored.audit_mac(b"entry").unwrap(),
        source.audit_mac(b"entry").unwrap()
    );
    assert_eq!(
        restored.audit_public_key().unwrap(),
        source.audit_public_key().unwrap()
    );
    let signature = restored.audit_sign(b"checkpoint").unwrap();
    assert_eq!(signature.len(), 64);
    restored.check().unwrap();
    drop(restored);

    // Reopened as usual, and a rerun of the restore opens it.
    let reopened = SoftKeystore::open(&target_dir, passphrase()).unwrap();
    assert_eq!(
        reopened.audit_public_key().unwrap(),
        source.audit_public_key().unwrap()
    );
    let rerun =
        SoftKeystore::init_from_backup(&target_dir, passphrase(), &wrap_key(3), &audit_keys)
            .unwrap();
    assert_eq!(
        rerun.audit_mac(b"entry").unwrap(),
        source.audit_mac(b"entry").unwrap()
    );

    // Another installation's keystore is not taken for the restored one.
    let message = match SoftKeystore::init_from_backup(
        &source_dir,
        MasterKeySource::File,
        &wrap_key(3),
        &other_audit_keys(),
    ) {
        Err(KeystoreError::Unavailable(message)) => message,
        other => panic!("{other:?}"),
    };
    assert!(message.contains("other audit keys"), "{message}");
}

/// Audit keys of a keystore of its own, wrapped under `wrap_key(3)`.
fn other_audit_keys() -> WrappedAuditKeys {
    let (_parent, dir) = dir();
    SoftKeystore::init(&dir, MasterKeySource::File)
        .unwrap()
        .backup_export(&wrap_key(3))
        .unwrap()
        .export_audit_keys()
        .unwrap()
}

#[test]
fn damaged_audit_keys_are_refused() {
    let (_a, source_dir) = dir();
    let source = SoftKeystore::init(&source_dir, MasterKeySource::File).unwrap();
    let good = source
        .backup_export(&wrap_key(5))
        .unwrap()
        .export_audit_keys()
        .unwrap();
    let other = other_audit_keys();
    let other = WrappedAuditKeys {
        signing_public: other.signing_public,
        ..good.clone()
    };
    // A signing key that is not the named public key's other half.
    let (_b, target) = dir();
    let message = unsupported(SoftKeystore::init_from_backup(
        &target,
        MasterKeySource::File,
        &wrap_key(5),
        &other,
    ));
    assert!(message.contains("does not match"), "{message}");
    let garbage = WrappedAuditKeys {
        signing_public: vec![1, 2, 3],
        ..good
    };
    unsupported(SoftKeystore::init_from_backup(
        &target,
        MasterKeySource::File,
        &wrap_key(5),
        &garbage,
    ));
    assert!(!SoftKeystore::is_initialised(&target));
}
