use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::LazyLock;

use aes_kw::KekAes256;
use keyhold_core::audit::AuditMac;
use keyhold_core::cloud::WrappingAlgorithm;
use keyhold_core::error::KeystoreError;
use keyhold_core::ports::{Keystore, KeystoreKind};
use rsa::pkcs8::EncodePublicKey;
use rsa::rand_core::OsRng;
use rsa::{Oaep, RsaPrivateKey};
use secrecy::SecretString;
use sha1::Sha1;
use sha2::Sha256;
use uuid::Uuid;

use super::*;

fn keystore_dir() -> (tempfile::TempDir, PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("keystore");
    (parent, dir)
}

fn passphrase(text: &str) -> MasterKeySource {
    MasterKeySource::Passphrase(SecretString::from(text))
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn unavailable_message(result: Result<SoftKeystore, KeystoreError>) -> String {
    match result {
        Err(KeystoreError::Unavailable(message)) => message,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn init_creates_private_files_and_reopen_gives_the_same_audit_mac() {
    let (_parent, dir) = keystore_dir();
    assert!(!SoftKeystore::is_initialised(&dir));
    let created = SoftKeystore::init(&dir, MasterKeySource::File).unwrap();
    assert!(SoftKeystore::is_initialised(&dir));

    assert_eq!(mode_of(&dir), 0o700);
    for name in [
        MASTER_KEY_FILE,
        MASTER_CHECK_FILE,
        AUDIT_SIGNING_FILE,
        AUDIT_MAC_FILE,
    ] {
        assert_eq!(mode_of(&dir.join(name)), 0o600, "{name}");
    }
    assert!(!dir.join(MASTER_SALT_FILE).exists());
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        4,
        "no temporary files left"
    );

    let mac = created.audit_mac(b"entry hash").unwrap();
    let reopened = SoftKeystore::open(&dir, MasterKeySource::File).unwrap();
    assert_eq!(reopened.audit_mac(b"entry hash").unwrap(), mac);
    assert_ne!(reopened.audit_mac(b"other hash").unwrap(), mac);
    reopened.check().unwrap();
    assert_eq!(reopened.kind(), KeystoreKind::Software);
}

#[test]
fn the_checkpoint_key_is_sealed_kept_across_opens_and_made_for_older_keystores() {
    use keyhold_core::audit::{AuditSigner, ChainHead, Checkpoint};
    let (_parent, dir) = keystore_dir();
    let created = SoftKeystore::init(&dir, MasterKeySource::File).unwrap();
    let key = created.audit_public_key().unwrap();
    let head = ChainHead {
        seq: 3,
        hash: [1; 32],
    };
    let checkpoint = Checkpoint::sign(
        head,
        keyhold_core::clock::parse_timestamp("2026-12-05T12:00:00Z").unwrap(),
        &created,
    )
    .unwrap();
    let reopened = SoftKeystore::open(&dir, MasterKeySource::File).unwrap();
    assert_eq!(reopened.audit_public_key().unwrap(), key);
    checkpoint.verify(&key).unwrap();
    // The PKCS#8 is not in the file in the clear.
    let sealed = fs::read(dir.join(AUDIT_SIGNING_FILE)).unwrap();
    assert!(
        !sealed
            .windows(key.to_spki_der().len())
            .any(|w| w == key.to_spki_der())
    );

    // A keystore from before checkpoints: the key is made at the next open.
    fs::remove_file(dir.join(AUDIT_SIGNING_FILE)).unwrap();
    let upgraded = SoftKeystore::open(&dir, MasterKeySource::File).unwrap();
    assert_ne!(upgraded.audit_public_key().unwrap(), key);
    assert_eq!(mode_of(&dir.join(AUDIT_SIGNING_FILE)), 0o600);
}

#[test]
fn init_refuses_an_initialised_keystore_and_keeps_its_master_key() {
    let (_parent, dir) = keystore_dir();
    SoftKeystore::init(&dir, MasterKeySource::File).unwrap();
    let master_key = fs::read(dir.join(MASTER_KEY_FILE)).unwrap();
    let message = unavailable_message(SoftKeystore::init(&dir, MasterKeySource::File));
    assert!(message.contains("already initialised"), "{message}");
    assert_eq!(fs::read(dir.join(MASTER_KEY_FILE)).unwrap(), master_key);
}

#[test]
fn init_names_the_leftovers_of_an_unfinished_init() {
    let (_parent, dir) = keystore_dir();
    files::ensure_private_dir(&dir).unwrap();
    fs::write(dir.join(MASTER_SALT_FILE), b"{}").unwrap();
    let message = unavailable_message(SoftKeystore::init(&dir, MasterKeySource::File));
    assert!(
        message.contains("unfinished") && message.contains(MASTER_SALT_FILE),
        "{message}"
    );
    assert!(!dir.join(MASTER_KEY_FILE).exists());
}

#[test]
fn open_before_init_says_to_run_init() {
    let (_parent, dir) = keystore_dir();
    let message = unavailable_message(SoftKeystore::open(&dir, MasterKeySource::File));
    assert!(message.contains("keyhold init"), "{message}");
}

#[test]
fn passphrase_mode_opens_with_the_right_passphrase_only() {
    let (_parent, dir) = keystore_dir();
    let created = SoftKeystore::init(&dir, passphrase("correct horse battery staple")).unwrap();
    assert!(!dir.join(MASTER_KEY_FILE).exists());
    let salt = fs::read_to_string(dir.join(MASTER_SALT_FILE)).unwrap();
    assert!(
        salt.contains("argon2id") && !salt.contains("horse"),
        "{salt}"
    );

    let message = unavailable_message(SoftKeystore::open(&dir, passphrase("wrong horse")));
    assert!(message.contains("wrong passphrase"), "{message}");
    assert!(!message.contains("horse"), "{message}");

    let reopened = SoftKeystore::open(&dir, passphrase("correct horse battery staple")).unwrap();
    assert_eq!(
        reopened.audit_mac(b"x").unwrap(),
        created.audit_mac(b"x").unwrap()
    );

    let message = unavailable_message(SoftKeystore::open(&dir, MasterKeySource::File));
    assert!(message.contains("passphrase"), "{message}");
}

#[test]
fn a_master_key_file_others_can_read_is_refused() {
    let (_parent, dir) = keystore_dir();
    SoftKeystore::init(&dir, MasterKeySource::File).unwrap();
    let key_path = dir.join(MASTER_KEY_FILE);
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
    let message = unavailable_message(SoftKeystore::open(&dir, MasterKeySource::File));
    assert!(message.contains("chmod 600"), "{message}");

    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).unwrap();
    SoftKeystore::open(&dir, MasterKeySource::File).unwrap();
}

#[test]
fn another_keystores_master_key_is_detected() {
    let (_parent_a, dir_a) = keystore_dir();
    let (_parent_b, dir_b) = keystore_dir();
    SoftKeystore::init(&dir_a, MasterKeySource::File).unwrap();
    let b = SoftKeystore::init(&dir_b, MasterKeySource::File).unwrap();
    fs::copy(dir_a.join(MASTER_CHECK_FILE), dir_b.join(MASTER_CHECK_FILE)).unwrap();

    assert!(b.check().is_err());
    let message = unavailable_message(SoftKeystore::open(&dir_b, MasterKeySource::File));
    assert!(message.contains("is not the master key"), "{message}");
}

#[test]
fn secrets_round_trip_and_are_bound_to_their_context() {
    let (_parent, dir) = keystore_dir();
    let keystore = SoftKeystore::init(&dir, MasterKeySource::File).unwrap();
    let sealed = keystore
        .seal_secret(b"credential:prod", b"aws secret access key")
        .unwrap();
    assert!(!sealed.windows(6).any(|w| w == b"secret"));
    assert_eq!(
        keystore
            .open_secret(b"credential:prod", &sealed)
            .unwrap()
            .as_slice(),
        b"aws secret access key"
    );
    assert!(matches!(
        keystore.open_secret(b"credential:test", &sealed),
        Err(KeystoreError::SealBroken)
    ));
    for index in [0, 5, sealed.len() - 1] {
        let mut tampered = sealed.clone();
        tampered[index] ^= 1;
        assert!(matches!(
            keystore.open_secret(b"credential:prod", &tampered),
            Err(KeystoreError::SealBroken)
        ));
    }
    assert!(matches!(
        keystore.open_secret(b"credential:prod", &sealed[..10]),
        Err(KeystoreError::SealBroken)
    ));
}

#[test]
fn a_key_handle_cannot_be_moved_to_another_key_or_used_as_a_secret() {
    let (_parent, dir) = keystore_dir();
    let keystore = SoftKeystore::init(&dir, MasterKeySource::File).unwrap();
    let key_id = Uuid::new_v4();
    let generated = keystore.generate_key(key_id).unwrap();
    assert_eq!(generated.handle.len(), 1 + 12 + 32 + 16);
    assert_eq!(generated.handle[0], 0x01);

    let public_der = test_rsa_key().to_public_key().to_public_key_der().unwrap();
    let moved = keystore.wrap_key(
        Uuid::new_v4(),
        &generated.handle,
        public_der.as_bytes(),
        WrappingAlgorithm::RsaesOaepSha256,
    );
    assert!(matches!(moved, Err(KeystoreError::SealBroken)));
    assert!(matches!(
        keystore.open_secret(key_id.as_bytes(), &generated.handle),
        Err(KeystoreError::SealBroken)
    ));

    // A secret sealed with a key id as its context is still not a key handle.
    let secret = keystore.seal_secret(key_id.as_bytes(), &[7u8; 32]).unwrap();
    let forged = keystore.wrap_key(
        key_id,
        &secret,
        public_der.as_bytes(),
        WrappingAlgorithm::RsaesOaepSha256,
    );
    assert!(matches!(forged, Err(KeystoreError::SealBroken)));
}

#[test]
fn check_digits_match_the_aes_test_vector_for_the_zero_key() {
    // AES-256-ECB(key = 0^256, block = 0^128) = DC95C078A2408989AD48A21492842087.
    assert_eq!(check_digits_of(&[0u8; 32]).as_str(), "DC95");
}

#[test]
fn generated_keys_are_random_and_their_check_digits_match_their_material() {
    let (_parent, dir) = keystore_dir();
    let keystore = SoftKeystore::init(&dir, MasterKeySource::File).unwrap();
    let first_id = Uuid::new_v4();
    let first = keystore.generate_key(first_id).unwrap();
    let second_id = Uuid::new_v4();
    let second = keystore.generate_key(second_id).unwrap();

    let first_material = keystore.material_for_test(first_id, &first.handle);
    let second_material = keystore.material_for_test(second_id, &second.handle);
    assert_eq!(first_material.len(), 32);
    assert_ne!(first_material.as_slice(), second_material.as_slice());

    let mut block = [0u8; 16].into();
    Aes256::new_from_slice(&first_material)
        .unwrap()
        .encrypt_block(&mut block);
    let expected = hex::encode_upper(&block[..2]);
    assert_eq!(first.check_digits.as_str(), expected);

    // The handle opens after a restart: the master key is what protects it.
    let reopened = SoftKeystore::open(&dir, MasterKeySource::File).unwrap();
    assert_eq!(
        reopened
            .material_for_test(first_id, &first.handle)
            .as_slice(),
        first_material.as_slice()
    );
}

static TEST_RSA_KEY: LazyLock<RsaPrivateKey> =
    LazyLock::new(|| RsaPrivateKey::new(&mut OsRng, 2048).unwrap());

fn test_rsa_key() -> &'static RsaPrivateKey {
    &TEST_RSA_KEY
}

#[test]
fn wrapped_material_unwraps_to_the_keys_bytes_with_every_algorithm() {
    let (_parent, dir) = keystore_dir();
    let keystore = SoftKeystore::init(&dir, MasterKeySource::File).unwrap();
    let key_id = Uuid::new_v4();
    let generated = keystore.generate_key(key_id).unwrap();
    let material = keystore.material_for_test(key_id, &generated.handle);
    let private_key = test_rsa_key();
    let public_der = private_key.to_public_key().to_public_key_der().unwrap();

    assert_eq!(
        keystore.wrapping_algorithms().unwrap(),
        vec![
            WrappingAlgorithm::RsaesOaepSha256,
            WrappingAlgorithm::RsaesOaepSha1,
            WrappingAlgorithm::RsaAesKeyWrapSha256,
        ]
    );
    for algorithm in keystore.wrapping_algorithms().unwrap() {
        let wrapped = keystore
            .wrap_key(key_id, &generated.handle, public_der.as_bytes(), algorithm)
            .unwrap();
        let unwrapped = match algorithm {
            WrappingAlgorithm::RsaesOaepSha256 => {
                assert_eq!(wrapped.len(), 256);
                // The hash matters: SHA-1 OAEP must not decrypt a SHA-256 wrap.
                assert!(private_key.decrypt(Oaep::new::<Sha1>(), &wrapped).is_err());
                private_key
                    .decrypt(Oaep::new::<Sha256>(), &wrapped)
                    .unwrap()
            }
            WrappingAlgorithm::RsaesOaepSha1 => {
                assert_eq!(wrapped.len(), 256);
                private_key.decrypt(Oaep::new::<Sha1>(), &wrapped).unwrap()
            }
            WrappingAlgorithm::RsaAesKeyWrapSha256 => {
                assert_eq!(wrapped.len(), 256 + 40);
                let (rsa_part, kwp_part) = wrapped.split_at(256);
                let aes_key = private_key
                    .decrypt(Oaep::new::<Sha256>(), rsa_part)
                    .unwrap();
                assert_eq!(aes_key.len(), 32);
                let kek = KekAes256::try_from(aes_key.as_slice()).unwrap();
                let mut out = vec![0u8; kwp_part.len() - 8];
                kek.unwrap_with_padding(kwp_part, &mut out)
                    .unwrap()
                    .to_vec()
            }
        };
        assert_eq!(unwrapped, material.as_slice(), "{}", algorithm.aws_name());
    }
}

#[test]
fn wrapping_refuses_a_key_that_is_not_rsa_der_or_too_small() {
    let (_parent, dir) = keystore_dir();
    let keystore = SoftKeystore::init(&dir, MasterKeySource::File).unwrap();
    let key_id = Uuid::new_v4();
    let generated = keystore.generate_key(key_id).unwrap();

    let not_der = keystore.wrap_key(
        key_id,
        &generated.handle,
        b"not a key",
        WrappingAlgorithm::RsaesOaepSha256,
    );
    assert!(matches!(not_der, Err(KeystoreError::Unsupported(_))));

    let small = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
    let small_der = small.to_public_key().to_public_key_der().unwrap();
    let too_small = keystore.wrap_key(
        key_id,
        &generated.handle,
        small_der.as_bytes(),
        WrappingAlgorithm::RsaesOaepSha1,
    );
    assert!(matches!(too_small, Err(KeystoreError::Unsupported(_))));
}

#[test]
fn debug_output_shows_no_secret() {
    let (_parent, dir) = keystore_dir();
    let keystore = SoftKeystore::init(&dir, MasterKeySource::File).unwrap();
    let printed = format!("{keystore:?}");
    assert!(printed.contains("SoftKeystore") && !printed.contains("audit_mac_key"));
    assert_eq!(
        format!("{:?}", passphrase("hunter2")),
        "Passphrase(<redacted>)"
    );
}
