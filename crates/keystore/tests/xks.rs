//! XKS keys in both keystores: AES-256-GCM for AWS KMS's external key store
//! calls, kept apart from BYOK keys, backed up and restored across
//! keystores. The software keystore's tests run in this process; the
//! PKCS#11 ones against a fresh SoftHSM2 token each (`support/softhsm.rs`).
//! Ciphertexts are checked against the `aes-gcm` crate: KMS expects plain
//! AES-GCM, and any implementation must read what keyhold writes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use keyhold_core::cloud::WrappingAlgorithm;
use keyhold_core::error::KeystoreError;
use keyhold_core::ports::{GcmCiphertext, GeneratedKey, Keystore};
use keyhold_keystore::{MasterKeySource, Pkcs11Keystore, SoftKeystore};
use rsa::RsaPrivateKey;
use rsa::pkcs8::EncodePublicKey;
use rsa::rand_core::OsRng;
use zeroize::Zeroizing;

#[path = "support/softhsm.rs"]
mod softhsm;
#[path = "support/token.rs"]
mod token;

use softhsm::{LABEL, PIN, SO_PIN, with_softhsm};
use token::{TARGET, add_target_token, flag, labelled, raw, settings, wrap_key};

/// The AAD KMS sends is up to 8 KiB; any bytes do here.
const AAD: &[u8] = b"arn:aws:kms:eu-west-1:123456789012:key/1234abcd \x00\xff";

// ------------------------------------------------------------- helpers

fn token() -> Pkcs11Keystore {
    Pkcs11Keystore::open(settings(LABEL)).unwrap()
}

fn software(dir: &tempfile::TempDir, name: &str) -> SoftKeystore {
    SoftKeystore::init(&dir.path().join(name), MasterKeySource::File).unwrap()
}

fn xks_label(key_id: uuid::Uuid) -> String {
    format!("keyhold:xks:{key_id}")
}

/// An XKS key's raw material, as the test reads it out of a backup: the
/// only way it leaves a keystore. The test then plays "any AES-GCM".
fn material_via_backup(keystore: &dyn Keystore, key_id: uuid::Uuid, handle: &[u8]) -> [u8; 32] {
    let wrapped = keystore
        .backup_export(&wrap_key(0x5a))
        .unwrap()
        .export_key(key_id, handle)
        .unwrap();
    let kek = aes_kw::KekAes256::new(wrap_key(0x5a).expose().into());
    let mut out = [0u8; 32];
    let material = kek.unwrap_with_padding(&wrapped, &mut out).unwrap();
    material.try_into().unwrap()
}

/// Standard AES-256-GCM decryption of what a keystore encrypted.
fn standard_decrypt(key: &[u8; 32], sealed: &GcmCiphertext, aad: &[u8]) -> Vec<u8> {
    let mut buffer = sealed.ciphertext.clone();
    Aes256Gcm::new(key.into())
        .decrypt_in_place_detached(
            Nonce::from_slice(&sealed.iv),
            aad,
            &mut buffer,
            Tag::from_slice(&sealed.tag),
        )
        .expect("standard AES-GCM does not open the keystore's ciphertext");
    buffer
}

/// Standard AES-256-GCM encryption, for the keystore to decrypt.
fn standard_encrypt(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> GcmCiphertext {
    let iv = [7u8; 12];
    let mut ciphertext = plaintext.to_vec();
    let tag = Aes256Gcm::new(key.into())
        .encrypt_in_place_detached(Nonce::from_slice(&iv), aad, &mut ciphertext)
        .unwrap();
    GcmCiphertext {
        iv,
        ciphertext,
        tag: tag.into(),
    }
}

fn seal_broken(result: Result<Zeroizing<Vec<u8>>, KeystoreError>, what: &str) {
    match result {
        Err(KeystoreError::SealBroken) => {}
        Err(other) => panic!("{what}: expected SealBroken, got {other:?}"),
        Ok(_) => panic!("{what}: decrypted"),
    }
}

fn plaintexts() -> Vec<Vec<u8>> {
    let mut long = vec![0u8; 64 * 1024];
    getrandom::getrandom(&mut long).unwrap();
    vec![
        Vec::new(),
        b"a data key of 32 bytes, exactly.".to_vec(),
        long[..4300].to_vec(),
        long,
    ]
}

/// What every keystore must do with an XKS key: plain AES-256-GCM round
/// trips with and without AAD, every alteration refused as SealBroken.
fn gcm_contract(keystore: &dyn Keystore, key_id: uuid::Uuid, key: &GeneratedKey) {
    let handle = key.handle.as_slice();
    let mut ivs = std::collections::HashSet::new();
    for plaintext in plaintexts() {
        for aad in [AAD, b"".as_slice()] {
            let sealed = keystore
                .xks_encrypt(key_id, handle, &plaintext, aad)
                .unwrap();
            assert_eq!(sealed.ciphertext.len(), plaintext.len());
            if !plaintext.is_empty() {
                assert_ne!(sealed.ciphertext, plaintext);
            }
            assert!(ivs.insert(sealed.iv), "an IV came twice");
            let opened = keystore.xks_decrypt(key_id, handle, &sealed, aad).unwrap();
            assert_eq!(opened.as_slice(), plaintext.as_slice());
        }
    }

    // An Encrypt proven by its own decryption (XKS's CDIV) is the same
    // AES-GCM: a fresh IV, and the plain decryption opens it.
    for plaintext in plaintexts() {
        let sealed = keystore
            .xks_encrypt_proven(key_id, handle, &plaintext, AAD)
            .unwrap();
        assert!(ivs.insert(sealed.iv), "an IV came twice");
        assert_eq!(sealed.ciphertext.len(), plaintext.len());
        let opened = keystore.xks_decrypt(key_id, handle, &sealed, AAD).unwrap();
        assert_eq!(opened.as_slice(), plaintext.as_slice());
    }

    let plaintext = b"the data key KMS protects".to_vec();
    let sealed = keystore
        .xks_encrypt(key_id, handle, &plaintext, AAD)
        .unwrap();
    let decrypt =
        |sealed: &GcmCiphertext, aad: &[u8]| keystore.xks_decrypt(key_id, handle, sealed, aad);
    seal_broken(decrypt(&sealed, b"another AAD"), "wrong AAD");
    seal_broken(decrypt(&sealed, b""), "AAD left out");
    let mut flipped = sealed.clone();
    flipped.ciphertext[3] ^= 0x01;
    seal_broken(decrypt(&flipped, AAD), "flipped ciphertext byte");
    let mut flipped = sealed.clone();
    flipped.tag[15] ^= 0x80;
    seal_broken(decrypt(&flipped, AAD), "flipped tag bit");
    let mut flipped = sealed.clone();
    flipped.iv[0] ^= 0x01;
    seal_broken(decrypt(&flipped, AAD), "flipped IV bit");
    let mut cut = sealed.clone();
    cut.ciphertext.pop();
    seal_broken(decrypt(&cut, AAD), "ciphertext cut short");
    let empty = keystore.xks_encrypt(key_id, handle, b"", AAD).unwrap();
    let mut flipped = empty.clone();
    flipped.tag[0] ^= 0x01;
    seal_broken(decrypt(&flipped, AAD), "flipped tag of an empty plaintext");

    // Another XKS key's ciphertext, and this key's under the other key.
    let other_id = uuid::Uuid::new_v4();
    let other = keystore.xks_generate_key(other_id).unwrap();
    let theirs = keystore
        .xks_encrypt(other_id, &other.handle, &plaintext, AAD)
        .unwrap();
    seal_broken(decrypt(&theirs, AAD), "another key's ciphertext");
    seal_broken(
        keystore.xks_decrypt(other_id, &other.handle, &sealed, AAD),
        "this key's ciphertext under another key",
    );
    // And the keystore still works after all these refusals.
    assert_eq!(decrypt(&sealed, AAD).unwrap().as_slice(), plaintext);
}

/// BYOK and XKS handles do not stand in for one another.
fn kinds_stay_apart(keystore: &dyn Keystore) {
    let byok_id = uuid::Uuid::new_v4();
    let byok = keystore.generate_key(byok_id).unwrap();
    let xks_id = uuid::Uuid::new_v4();
    let xks = keystore.xks_generate_key(xks_id).unwrap();

    match keystore.xks_encrypt(byok_id, &byok.handle, b"data", AAD) {
        Err(KeystoreError::Internal(message)) => {
            assert!(message.contains("BYOK key's handle"), "{message}");
        }
        other => panic!("a BYOK key encrypted for XKS: {other:?}"),
    }
    match keystore.xks_encrypt_proven(byok_id, &byok.handle, b"data", AAD) {
        Err(KeystoreError::Internal(message)) => {
            assert!(message.contains("BYOK key's handle"), "{message}");
        }
        other => panic!("a BYOK key encrypted for XKS: {other:?}"),
    }
    let sealed = keystore
        .xks_encrypt(xks_id, &xks.handle, b"data", AAD)
        .unwrap();
    assert!(matches!(
        keystore.xks_decrypt(byok_id, &byok.handle, &sealed, AAD),
        Err(KeystoreError::Internal(_))
    ));
    // An XKS key is never wrapped for a cloud.
    let kms = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
    let der = kms.to_public_key().to_public_key_der().unwrap();
    let wrapped = keystore.wrap_key(
        xks_id,
        &xks.handle,
        der.as_bytes(),
        WrappingAlgorithm::RsaesOaepSha1,
    );
    assert!(wrapped.is_err(), "an XKS key was wrapped for KMS import");
    // A handle is bound to its key id.
    let moved = keystore.xks_encrypt(uuid::Uuid::new_v4(), &xks.handle, b"data", AAD);
    assert!(moved.is_err(), "a handle served another key id");
    // The listing of missing material answers for XKS keys too.
    assert_eq!(
        keystore
            .missing_material(&[
                (xks_id, xks.handle.as_slice()),
                (byok_id, byok.handle.as_slice())
            ])
            .unwrap(),
        Vec::<uuid::Uuid>::new()
    );
}

/// Prints a rough cost per call (never asserted: machines differ).
fn print_cost_per_call(name: &str, keystore: &dyn Keystore) {
    let key_id = uuid::Uuid::new_v4();
    let key = keystore.xks_generate_key(key_id).unwrap();
    // KMS's plaintexts are data keys: 32 bytes, with an AAD of its own.
    let plaintext = [0x42u8; 32];
    let calls = 2000u32;
    let started = Instant::now();
    let mut last = None;
    for _ in 0..calls {
        last = Some(
            keystore
                .xks_encrypt(key_id, &key.handle, &plaintext, AAD)
                .unwrap(),
        );
    }
    let encrypt = started.elapsed() / calls;
    let sealed = last.unwrap();
    let started = Instant::now();
    for _ in 0..calls {
        keystore
            .xks_decrypt(key_id, &key.handle, &sealed, AAD)
            .unwrap();
    }
    let decrypt = started.elapsed() / calls;
    println!(
        "xks_cost_per_call {name}: encrypt {encrypt:?}, decrypt {decrypt:?} (32 bytes, {calls} calls, one thread)"
    );
    // The proxy calls from many requests at once.
    for threads in [2u32, 8, 32] {
        let per_thread = calls / threads;
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..per_thread {
                        let sealed = keystore
                            .xks_encrypt(key_id, &key.handle, &plaintext, AAD)
                            .unwrap();
                        keystore
                            .xks_decrypt(key_id, &key.handle, &sealed, AAD)
                            .unwrap();
                    }
                });
            }
        });
        let elapsed = started.elapsed();
        println!(
            "xks_cost_per_call {name}: {threads} threads, {} encrypt+decrypt pairs a second",
            f64::from(per_thread * threads) / elapsed.as_secs_f64()
        );
    }
}

// ------------------------------------------------- software keystore

#[test]
fn software_xks_keys_are_aes_gcm_and_refuse_every_alteration() {
    let dir = tempfile::tempdir().unwrap();
    let keystore = software(&dir, "keystore");
    let key_id = uuid::Uuid::new_v4();
    let key = keystore.xks_generate_key(key_id).unwrap();
    gcm_contract(&keystore, key_id, &key);

    // Another keystore's handle is material that is not here.
    let elsewhere = software(&dir, "elsewhere");
    match elsewhere.xks_encrypt(key_id, &key.handle, b"data", AAD) {
        Err(KeystoreError::KeyNotFound(message)) => {
            assert!(message.contains(&key_id.to_string()), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        elsewhere
            .missing_material(&[(key_id, key.handle.as_slice())])
            .unwrap(),
        vec![key_id]
    );
}

#[test]
fn software_xks_and_byok_handles_stay_apart() {
    let dir = tempfile::tempdir().unwrap();
    kinds_stay_apart(&software(&dir, "keystore"));
}

#[test]
fn software_xks_ciphertexts_are_standard_aes_gcm_and_keys_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let keystore = software(&dir, "keystore");
    let key_id = uuid::Uuid::new_v4();
    let key = keystore.xks_generate_key(key_id).unwrap();
    let material = material_via_backup(&keystore, key_id, &key.handle);
    assert_eq!(key.check_digits, check_digits_of(&material));

    let sealed = keystore
        .xks_encrypt(key_id, &key.handle, b"plain AES-GCM", AAD)
        .unwrap();
    assert_eq!(standard_decrypt(&material, &sealed, AAD), b"plain AES-GCM");
    let theirs = standard_encrypt(&material, b"from elsewhere", AAD);
    assert_eq!(
        keystore
            .xks_decrypt(key_id, &key.handle, &theirs, AAD)
            .unwrap()
            .as_slice(),
        b"from elsewhere"
    );

    drop(keystore);
    let reopened = SoftKeystore::open(&dir.path().join("keystore"), MasterKeySource::File).unwrap();
    assert_eq!(
        reopened
            .xks_decrypt(key_id, &key.handle, &sealed, AAD)
            .unwrap()
            .as_slice(),
        b"plain AES-GCM"
    );
}

#[test]
fn software_health_check_and_description() {
    let dir = tempfile::tempdir().unwrap();
    let keystore = software(&dir, "keystore");
    keystore.xks_health_check().unwrap();
    let description = keystore.describe();
    assert_eq!(description.id, "software:keystore");
    assert_eq!(
        description.model,
        format!("keyhold software keystore {}", env!("CARGO_PKG_VERSION"))
    );
    // Nothing of the master key, nor the directory's path.
    let master = std::fs::read(dir.path().join("keystore/master.key")).unwrap();
    let text = format!("{description:?}");
    assert!(!text.contains(&hex::encode(&master)));
    assert!(!text.contains(&dir.path().display().to_string()));
}

#[test]
fn software_xks_cost_per_call() {
    let dir = tempfile::tempdir().unwrap();
    print_cost_per_call("software", &software(&dir, "keystore"));
}

#[test]
fn software_xks_keys_back_up_and_restore_into_software() {
    let dir = tempfile::tempdir().unwrap();
    let source = software(&dir, "source");
    let key_id = uuid::Uuid::new_v4();
    let key = source.xks_generate_key(key_id).unwrap();
    let sealed = source
        .xks_encrypt(key_id, &key.handle, b"before the backup", AAD)
        .unwrap();
    let exporter = source.backup_export(&wrap_key(3)).unwrap();
    let wrapped = exporter.export_key(key_id, &key.handle).unwrap();
    assert_eq!(wrapped.len(), 40, "RFC 5649 of 32 bytes");
    let audit_keys = exporter.export_audit_keys().unwrap();

    let target = SoftKeystore::init_from_backup(
        &dir.path().join("target"),
        MasterKeySource::File,
        &wrap_key(3),
        &audit_keys,
    )
    .unwrap();
    let importer = target.backup_import(&wrap_key(3)).unwrap();
    let restored = importer.import_xks_key(key_id, &wrapped).unwrap();
    assert_eq!(restored.check_digits, key.check_digits);
    assert_eq!(
        target
            .xks_decrypt(key_id, &restored.handle, &sealed, AAD)
            .unwrap()
            .as_slice(),
        b"before the backup"
    );
    // Restored as an XKS key, not a BYOK key.
    assert!(
        target
            .xks_encrypt(
                key_id,
                &importer.import_key(key_id, &wrapped).unwrap().handle,
                b"x",
                AAD
            )
            .is_err()
    );
    // Another backup's wrap key is refused.
    let wrong = target.backup_import(&wrap_key(4)).unwrap();
    assert!(matches!(
        wrong.import_xks_key(key_id, &wrapped),
        Err(KeystoreError::Unsupported(_))
    ));
}

fn check_digits_of(material: &[u8; 32]) -> keyhold_core::key::CheckDigits {
    use aes::cipher::{BlockEncrypt, KeyInit as _};
    let cipher = aes::Aes256::new(material.into());
    let mut block = [0u8; 16].into();
    cipher.encrypt_block(&mut block);
    keyhold_core::key::CheckDigits::from_encrypted_zero_block(&block.into())
}

// -------------------------------------------------- PKCS#11 keystore

#[test]
fn token_xks_keys_are_aes_gcm_and_refuse_every_alteration() {
    with_softhsm(
        "token_xks_keys_are_aes_gcm_and_refuse_every_alteration",
        || {
            let keystore = token();
            let key_id = uuid::Uuid::new_v4();
            let key = keystore.xks_generate_key(key_id).unwrap();
            assert_eq!(key.handle, xks_label(key_id).into_bytes());
            gcm_contract(&keystore, key_id, &key);
        },
    );
}

#[test]
fn token_xks_and_byok_handles_stay_apart() {
    with_softhsm("token_xks_and_byok_handles_stay_apart", || {
        kinds_stay_apart(&token());
    });
}

#[test]
fn token_xks_key_is_a_sensitive_token_object_that_survives_a_reopen() {
    with_softhsm(
        "token_xks_key_is_a_sensitive_token_object_that_survives_a_reopen",
        || {
            let keystore = token();
            let key_id = uuid::Uuid::new_v4();
            let key = keystore.xks_generate_key(key_id).unwrap();
            // Generating again (a lost answer) finds it, never makes a second.
            let again = keystore.xks_generate_key(key_id).unwrap();
            assert_eq!(again.handle, key.handle);
            assert_eq!(again.check_digits, key.check_digits);

            let (_pkcs11, raw) = raw(LABEL);
            let [object] = labelled(&raw, ObjectClass::SECRET_KEY, &xks_label(key_id))[..] else {
                panic!("not exactly one object labelled {}", xks_label(key_id));
            };
            for (which, expected) in [
                (AttributeType::Token, true),
                (AttributeType::Private, true),
                (AttributeType::Sensitive, true),
                (AttributeType::Encrypt, true),
                (AttributeType::Decrypt, true),
                // Only so that a backup can wrap it.
                (AttributeType::Extractable, true),
                (AttributeType::Wrap, false),
                (AttributeType::Unwrap, false),
                (AttributeType::Derive, false),
            ] {
                assert_eq!(flag(&raw, object, which), expected, "{which:?}");
            }
            assert_eq!(
                raw.get_attributes(object, &[AttributeType::Id]).unwrap(),
                vec![Attribute::Id(key_id.as_bytes().to_vec())]
            );
            assert!(
                raw.get_attributes(object, &[AttributeType::Value])
                    .unwrap()
                    .is_empty(),
                "CKA_VALUE came back"
            );
            // Not a BYOK key's object.
            assert!(
                labelled(
                    &raw,
                    ObjectClass::SECRET_KEY,
                    &format!("keyhold:key:{key_id}")
                )
                .is_empty()
            );

            let sealed = keystore
                .xks_encrypt(key_id, &key.handle, b"kept in the token", AAD)
                .unwrap();
            drop(keystore);
            let reopened = token();
            assert_eq!(
                reopened
                    .xks_decrypt(key_id, &key.handle, &sealed, AAD)
                    .unwrap()
                    .as_slice(),
                b"kept in the token"
            );

            // Deleted: its object goes, and it is reported missing.
            reopened.delete_key(key_id, &key.handle).unwrap();
            assert!(labelled(&raw, ObjectClass::SECRET_KEY, &xks_label(key_id)).is_empty());
            match reopened.xks_decrypt(key_id, &key.handle, &sealed, AAD) {
                Err(KeystoreError::KeyNotFound(message)) => {
                    assert!(message.contains(&xks_label(key_id)), "{message}");
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(
                reopened
                    .missing_material(&[(key_id, key.handle.as_slice())])
                    .unwrap(),
                vec![key_id]
            );
        },
    );
}

#[test]
fn token_xks_key_destroyed_behind_our_back_is_reported_missing() {
    with_softhsm(
        "token_xks_key_destroyed_behind_our_back_is_reported_missing",
        || {
            let keystore = token();
            let key_id = uuid::Uuid::new_v4();
            let key = keystore.xks_generate_key(key_id).unwrap();
            // Cached by the generation and the encryption.
            keystore
                .xks_encrypt(key_id, &key.handle, b"x", AAD)
                .unwrap();
            let (_pkcs11, raw) = raw(LABEL);
            for object in labelled(&raw, ObjectClass::SECRET_KEY, &xks_label(key_id)) {
                raw.destroy_object(object).unwrap();
            }
            assert!(matches!(
                keystore.xks_encrypt(key_id, &key.handle, b"x", AAD),
                Err(KeystoreError::KeyNotFound(_))
            ));
            // The proven Encrypt says so too, not an internal failure.
            assert!(matches!(
                keystore.xks_encrypt_proven(key_id, &key.handle, b"x", AAD),
                Err(KeystoreError::KeyNotFound(_))
            ));
        },
    );
}

#[test]
fn token_xks_ciphertexts_are_standard_aes_gcm() {
    with_softhsm("token_xks_ciphertexts_are_standard_aes_gcm", || {
        let keystore = token();
        let key_id = uuid::Uuid::new_v4();
        let key = keystore.xks_generate_key(key_id).unwrap();
        let material = material_via_backup(&keystore, key_id, &key.handle);
        assert_eq!(key.check_digits, check_digits_of(&material));
        for plaintext in plaintexts() {
            let sealed = keystore
                .xks_encrypt(key_id, &key.handle, &plaintext, AAD)
                .unwrap();
            assert_eq!(standard_decrypt(&material, &sealed, AAD), plaintext);
            let theirs = standard_encrypt(&material, &plaintext, AAD);
            assert_eq!(
                keystore
                    .xks_decrypt(key_id, &key.handle, &theirs, AAD)
                    .unwrap()
                    .as_slice(),
                plaintext.as_slice()
            );
        }
    });
}

#[test]
fn token_health_check_leaves_nothing_and_description_names_the_token() {
    with_softhsm(
        "token_health_check_leaves_nothing_and_description_names_the_token",
        || {
            let keystore = token();
            let (pkcs11, raw) = raw(LABEL);
            let secret_keys = || {
                raw.find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
                    .unwrap()
                    .len()
            };
            let before = secret_keys();
            for _ in 0..3 {
                keystore.xks_health_check().unwrap();
            }
            assert_eq!(secret_keys(), before, "the health check left a key");

            let description = keystore.describe();
            println!("{description:?}");
            let slot = pkcs11
                .get_slots_with_token()
                .unwrap()
                .into_iter()
                .find(|s| pkcs11.get_token_info(*s).unwrap().label() == LABEL)
                .unwrap();
            let info = pkcs11.get_token_info(slot).unwrap();
            assert_eq!(
                description.id,
                format!("{LABEL}/{}", info.serial_number().trim())
            );
            assert!(description.model.starts_with("SoftHSM"), "{description:?}");
            assert!(
                description.model.contains("PKCS#11 module"),
                "{description:?}"
            );
            // The model is built from fixed token and library texts only.
            assert!(!description.model.contains(PIN), "{description:?}");
            assert!(!description.model.contains(SO_PIN), "{description:?}");
        },
    );
}

#[test]
fn token_xks_cost_per_call() {
    with_softhsm("token_xks_cost_per_call", || {
        print_cost_per_call("pkcs11 (SoftHSM2)", &token());
    });
}

#[test]
fn token_xks_keys_restore_into_a_fresh_token_and_into_software_and_back() {
    with_softhsm(
        "token_xks_keys_restore_into_a_fresh_token_and_into_software_and_back",
        || {
            add_target_token();
            let source = token();
            let key_id = uuid::Uuid::new_v4();
            let key = source.xks_generate_key(key_id).unwrap();
            let byok_id = uuid::Uuid::new_v4();
            let byok = source.generate_key(byok_id).unwrap();
            let sealed = source
                .xks_encrypt(key_id, &key.handle, b"encrypted before the backup", AAD)
                .unwrap();

            let exporter = source.backup_export(&wrap_key(1)).unwrap();
            let wrapped = exporter.export_key(key_id, &key.handle).unwrap();
            let wrapped_byok = exporter.export_key(byok_id, &byok.handle).unwrap();
            assert_eq!(wrapped.len(), 40, "RFC 5649 of 32 bytes");
            let audit_keys = exporter.export_audit_keys().unwrap();
            drop(exporter);

            // Into a fresh token.
            let target = Pkcs11Keystore::load(settings(TARGET)).unwrap();
            target
                .adopt_backup_audit_keys(&wrap_key(1), &audit_keys)
                .unwrap();
            let importer = target.backup_import(&wrap_key(1)).unwrap();
            let restored = importer.import_xks_key(key_id, &wrapped).unwrap();
            assert_eq!(restored.handle, key.handle);
            assert_eq!(restored.check_digits, key.check_digits);
            // Again (an interrupted restore): found, not made twice.
            let again = importer.import_xks_key(key_id, &wrapped).unwrap();
            assert_eq!(again.handle, restored.handle);
            assert_eq!(again.check_digits, restored.check_digits);
            // Other material under the same XKS key id is refused.
            match importer.import_xks_key(key_id, &wrapped_byok) {
                Err(KeystoreError::Unsupported(message)) => {
                    assert!(message.contains("other material"), "{message}");
                }
                other => panic!("{other:?}"),
            }
            drop(importer);
            let (_pkcs11, raw_target) = raw(TARGET);
            let [object] = labelled(&raw_target, ObjectClass::SECRET_KEY, &xks_label(key_id))[..]
            else {
                panic!("not exactly one restored object");
            };
            for (which, expected) in [
                (AttributeType::Token, true),
                (AttributeType::Sensitive, true),
                (AttributeType::Extractable, true),
                (AttributeType::Encrypt, true),
                (AttributeType::Decrypt, true),
                (AttributeType::Wrap, false),
            ] {
                assert_eq!(flag(&raw_target, object, which), expected, "{which:?}");
            }
            assert_eq!(
                target
                    .xks_decrypt(key_id, &restored.handle, &sealed, AAD)
                    .unwrap()
                    .as_slice(),
                b"encrypted before the backup"
            );
            let later = target
                .xks_encrypt(key_id, &restored.handle, b"after the restore", AAD)
                .unwrap();
            assert_eq!(
                source
                    .xks_decrypt(key_id, &key.handle, &later, AAD)
                    .unwrap()
                    .as_slice(),
                b"after the restore"
            );

            // Into software, and from there back into the source token's
            // own backup format.
            let dir = tempfile::tempdir().unwrap();
            let soft = SoftKeystore::init_from_backup(
                &dir.path().join("keystore"),
                MasterKeySource::File,
                &wrap_key(1),
                &audit_keys,
            )
            .unwrap();
            let soft_key = soft
                .backup_import(&wrap_key(1))
                .unwrap()
                .import_xks_key(key_id, &wrapped)
                .unwrap();
            assert_eq!(soft_key.check_digits, key.check_digits);
            assert_eq!(
                soft.xks_decrypt(key_id, &soft_key.handle, &sealed, AAD)
                    .unwrap()
                    .as_slice(),
                b"encrypted before the backup"
            );
            let from_software = soft
                .xks_encrypt(key_id, &soft_key.handle, b"from software", AAD)
                .unwrap();
            assert_eq!(
                source
                    .xks_decrypt(key_id, &key.handle, &from_software, AAD)
                    .unwrap()
                    .as_slice(),
                b"from software"
            );
        },
    );
}

#[test]
fn software_xks_keys_restore_into_a_token() {
    with_softhsm("software_xks_keys_restore_into_a_token", || {
        let dir = tempfile::tempdir().unwrap();
        let soft = software(&dir, "keystore");
        let key_id = uuid::Uuid::new_v4();
        let key = soft.xks_generate_key(key_id).unwrap();
        let sealed = soft
            .xks_encrypt(key_id, &key.handle, b"made in software", AAD)
            .unwrap();
        let exporter = soft.backup_export(&wrap_key(9)).unwrap();
        let wrapped = exporter.export_key(key_id, &key.handle).unwrap();
        let audit_keys = exporter.export_audit_keys().unwrap();

        let target = Pkcs11Keystore::load(settings(LABEL)).unwrap();
        target
            .adopt_backup_audit_keys(&wrap_key(9), &audit_keys)
            .unwrap();
        let restored = target
            .backup_import(&wrap_key(9))
            .unwrap()
            .import_xks_key(key_id, &wrapped)
            .unwrap();
        assert_eq!(restored.handle, xks_label(key_id).into_bytes());
        assert_eq!(restored.check_digits, key.check_digits);
        assert_eq!(
            target
                .xks_decrypt(key_id, &restored.handle, &sealed, AAD)
                .unwrap()
                .as_slice(),
            b"made in software"
        );
        // A BYOK import of the same bytes is another object, never an XKS key.
        let byok = target
            .backup_import(&wrap_key(9))
            .unwrap()
            .import_key(key_id, &wrapped)
            .unwrap();
        assert!(target.xks_encrypt(key_id, &byok.handle, b"x", AAD).is_err());
    });
}

/// `keyhold keystore migrate`'s move of an XKS key: the software keystore
/// wraps the material under the token's transport key, the token unwraps it
/// into the key's XKS object, with the attributes of one it generated; a
/// second move finds that object; BYOK and XKS keys never cross over.
#[test]
fn software_xks_keys_move_into_a_token_through_its_transport_key() {
    with_softhsm(
        "software_xks_keys_move_into_a_token_through_its_transport_key",
        || {
            let dir = tempfile::tempdir().unwrap();
            let soft = software(&dir, "keystore");
            let key_id = uuid::Uuid::new_v4();
            let key = soft.xks_generate_key(key_id).unwrap();
            let sealed = soft
                .xks_encrypt(key_id, &key.handle, b"made in software", AAD)
                .unwrap();
            let target = token();
            let moved = target
                .xks_import_key(key_id, &|der, algorithm| {
                    soft.wrap_xks_key(key_id, &key.handle, der, algorithm)
                })
                .unwrap();
            assert_eq!(moved.handle, xks_label(key_id).into_bytes());
            assert_eq!(moved.check_digits, key.check_digits);
            assert!(Pkcs11Keystore::names_xks_token_object(
                key_id,
                &moved.handle
            ));
            assert!(!Pkcs11Keystore::names_token_object(key_id, &moved.handle));
            assert!(!Pkcs11Keystore::names_xks_token_object(key_id, &key.handle));
            assert!(!Pkcs11Keystore::names_xks_token_object(
                uuid::Uuid::new_v4(),
                &moved.handle
            ));
            // The same material: what either encrypted, the other decrypts.
            assert_eq!(
                target
                    .xks_decrypt(key_id, &moved.handle, &sealed, AAD)
                    .unwrap()
                    .as_slice(),
                b"made in software"
            );
            let theirs = target
                .xks_encrypt(key_id, &moved.handle, b"made in the token", AAD)
                .unwrap();
            assert_eq!(
                soft.xks_decrypt(key_id, &key.handle, &theirs, AAD)
                    .unwrap()
                    .as_slice(),
                b"made in the token"
            );

            let (_pkcs11, raw) = raw(LABEL);
            let [object] = labelled(&raw, ObjectClass::SECRET_KEY, &xks_label(key_id))[..] else {
                panic!("not exactly one object labelled {}", xks_label(key_id));
            };
            for (which, expected) in [
                (AttributeType::Token, true),
                (AttributeType::Private, true),
                (AttributeType::Sensitive, true),
                (AttributeType::Encrypt, true),
                (AttributeType::Decrypt, true),
                (AttributeType::Extractable, true),
                (AttributeType::Wrap, false),
                (AttributeType::Unwrap, false),
                (AttributeType::Derive, false),
            ] {
                assert_eq!(flag(&raw, object, which), expected, "{which:?}");
            }
            assert_eq!(
                raw.get_attributes(object, &[AttributeType::Id]).unwrap(),
                vec![Attribute::Id(key_id.as_bytes().to_vec())]
            );
            assert!(
                labelled(
                    &raw,
                    ObjectClass::SECRET_KEY,
                    &format!("keyhold:key:{key_id}")
                )
                .is_empty()
            );

            // Moved again (a run after a crash): the object is found, nothing
            // is wrapped, no second object is made.
            let again = target
                .xks_import_key(key_id, &|_, _| {
                    Err(KeystoreError::Internal("wrapped a second time".into()))
                })
                .unwrap();
            assert_eq!(again.handle, moved.handle);
            assert_eq!(again.check_digits, moved.check_digits);
            assert_eq!(
                labelled(&raw, ObjectClass::SECRET_KEY, &xks_label(key_id)).len(),
                1
            );

            // A BYOK key's handle does not travel as an XKS key…
            let byok_id = uuid::Uuid::new_v4();
            let byok = soft.generate_key(byok_id).unwrap();
            match target.xks_import_key(byok_id, &|der, algorithm| {
                soft.wrap_xks_key(byok_id, &byok.handle, der, algorithm)
            }) {
                Err(KeystoreError::Internal(message)) => {
                    assert!(message.contains("BYOK key's handle"), "{message}");
                }
                other => panic!("a BYOK key moved as an XKS key: {other:?}"),
            }
            assert!(labelled(&raw, ObjectClass::SECRET_KEY, &xks_label(byok_id)).is_empty());
            // …nor an XKS key's as a BYOK key.
            let crossed = target.import_key(key_id, &|der, algorithm| {
                soft.wrap_key(key_id, &key.handle, der, algorithm)
            });
            assert!(crossed.is_err(), "an XKS key moved as a BYOK key");
            assert!(
                labelled(
                    &raw,
                    ObjectClass::SECRET_KEY,
                    &format!("keyhold:key:{key_id}")
                )
                .is_empty()
            );
            // The BYOK key moves as what it is.
            let byok_moved = target
                .import_key(byok_id, &|der, algorithm| {
                    soft.wrap_key(byok_id, &byok.handle, der, algorithm)
                })
                .unwrap();
            assert_eq!(
                byok_moved.handle,
                format!("keyhold:key:{byok_id}").into_bytes()
            );
            assert_eq!(byok_moved.check_digits, byok.check_digits);
            assert!(Pkcs11Keystore::names_token_object(
                byok_id,
                &byok_moved.handle
            ));
            assert!(!Pkcs11Keystore::names_xks_token_object(
                byok_id,
                &byok_moved.handle
            ));
            assert!(
                target
                    .xks_encrypt(byok_id, &byok_moved.handle, b"x", AAD)
                    .is_err()
            );
            assert!(labelled(&raw, ObjectClass::SECRET_KEY, &xks_label(byok_id)).is_empty());
        },
    );
}

/// What SoftHSM2 answers to a GCM tag that does not verify, which the
/// keystore turns into SealBroken (see `is_tag_mismatch`): the standard's
/// CKR_ENCRYPTED_DATA_INVALID, or CKR_GENERAL_ERROR from SoftHSM2 2.6.
#[test]
fn softhsm_answer_to_a_gcm_tag_mismatch() {
    with_softhsm("softhsm_answer_to_a_gcm_tag_mismatch", || {
        use cryptoki::mechanism::Mechanism;
        use cryptoki::mechanism::aead::GcmParams;
        use cryptoki::object::KeyType;
        let (_pkcs11, session) = raw(LABEL);
        let key = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Token(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                ],
            )
            .unwrap();
        let mut iv = [1u8; 12];
        let params = GcmParams::new(&mut iv, AAD, 128.into()).unwrap();
        let mut sealed = session
            .encrypt(&Mechanism::AesGcm(params), key, b"data")
            .unwrap();
        *sealed.last_mut().unwrap() ^= 1;
        let mut iv = [1u8; 12];
        let params = GcmParams::new(&mut iv, AAD, 128.into()).unwrap();
        let refused = session
            .decrypt(&Mechanism::AesGcm(params), key, &sealed)
            .unwrap_err();
        println!("SoftHSM2 answers a GCM tag mismatch with {refused}");
        assert!(
            matches!(
                refused,
                Error::Pkcs11(RvError::EncryptedDataInvalid | RvError::GeneralError, _)
            ),
            "{refused}"
        );
    });
}
