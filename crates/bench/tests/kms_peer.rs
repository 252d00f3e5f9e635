//! The KMS peer driven over HTTP by the real AWS SDK, as keyhold's adapter
//! drives it: faithful mode against AWS KMS's documented behaviour for
//! imported key material with on-demand rotation, and the benchmarks' mode's
//! simplified take on the same operations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aes_kw::KekAes256;
use aws_credential_types::Credentials;
use aws_sdk_kms::Client;
use aws_sdk_kms::config::BehaviorVersion;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::{Blob, DateTime};
use aws_sdk_kms::types::{
    AlgorithmSpec, ExpirationModelType, ImportState, ImportType, IncludeKeyMaterial,
    KeyMaterialState, KeyState, OriginType, RotationType, WrappingKeySpec,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use keyhold_bench::kms_peer::{KmsPeer, MAX_ON_DEMAND_ROTATIONS, material_id};
use keyhold_core::clock::{Clock, SystemClock};
use rsa::pkcs8::DecodePublicKey;
use rsa::rand_core::{OsRng, RngCore};
use rsa::{Oaep, RsaPublicKey};
use sha1::Sha1;
use sha2::Sha256;

fn client(endpoint: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new("eu-west-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .retry_config(RetryConfig::disabled())
        .http_client(http)
        .build();
    Client::from_conf(config)
}

async fn faithful() -> (KmsPeer, Client) {
    let peer = KmsPeer::start_faithful().await.unwrap();
    let kms = client(&peer.endpoint);
    (peer, kms)
}

/// The error code of a failed call (its `__type`).
fn code<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    result: Result<T, SdkError<E, R>>,
) -> String {
    let err = result.expect_err("the call should have been refused");
    err.code()
        .unwrap_or_else(|| panic!("no error code in {err:?}"))
        .to_owned()
}

fn random_material() -> [u8; 32] {
    let mut material = [0u8; 32];
    OsRng.fill_bytes(&mut material);
    material
}

fn now() -> f64 {
    SystemClock.now().timestamp_millis() as f64 / 1000.0
}

async fn external_key(kms: &Client) -> String {
    let out = kms
        .create_key()
        .origin(OriginType::External)
        .description("keyhold test")
        .send()
        .await
        .unwrap();
    let metadata = out.key_metadata().unwrap();
    assert_eq!(metadata.key_state(), Some(&KeyState::PendingImport));
    metadata.key_id().to_owned()
}

/// Wraps `material` as keyhold does (crates/keystore/src/wrap.rs).
fn wrap(public_key_der: &[u8], algorithm: &AlgorithmSpec, material: &[u8]) -> Vec<u8> {
    let public = RsaPublicKey::from_public_key_der(public_key_der).unwrap();
    match algorithm {
        AlgorithmSpec::RsaesOaepSha1 => public
            .encrypt(&mut OsRng, Oaep::new::<Sha1>(), material)
            .unwrap(),
        AlgorithmSpec::RsaesOaepSha256 => public
            .encrypt(&mut OsRng, Oaep::new::<Sha256>(), material)
            .unwrap(),
        AlgorithmSpec::RsaAesKeyWrapSha256 => {
            let ephemeral = random_material();
            let mut wrapped = public
                .encrypt(&mut OsRng, Oaep::new::<Sha256>(), &ephemeral)
                .unwrap();
            let kek = KekAes256::try_from(&ephemeral[..]).unwrap();
            let mut kwp = vec![0u8; material.len().div_ceil(8) * 8 + 8];
            kek.wrap_with_padding(material, &mut kwp).unwrap();
            wrapped.extend_from_slice(&kwp);
            wrapped
        }
        other => panic!("the tests do not wrap with {other:?}"),
    }
}

/// What ImportKeyMaterial is asked for, besides the key and the material.
#[derive(Clone, Default)]
struct Options {
    import_type: Option<ImportType>,
    key_material_id: Option<String>,
    description: Option<&'static str>,
    valid_to: Option<f64>,
}

impl Options {
    fn new_material() -> Self {
        Self {
            import_type: Some(ImportType::NewKeyMaterial),
            ..Self::default()
        }
    }

    fn existing(key_material_id: Option<&str>) -> Self {
        Self {
            import_type: Some(ImportType::ExistingKeyMaterial),
            key_material_id: key_material_id.map(str::to_owned),
            ..Self::default()
        }
    }
}

/// GetParametersForImport, wrap, ImportKeyMaterial: the import's answer.
async fn import(
    kms: &Client,
    key: &str,
    material: &[u8],
    algorithm: AlgorithmSpec,
    options: Options,
) -> Result<
    aws_sdk_kms::operation::import_key_material::ImportKeyMaterialOutput,
    SdkError<
        aws_sdk_kms::operation::import_key_material::ImportKeyMaterialError,
        aws_sdk_kms::config::http::HttpResponse,
    >,
> {
    let params = kms
        .get_parameters_for_import()
        .key_id(key)
        .wrapping_algorithm(algorithm.clone())
        .wrapping_key_spec(WrappingKeySpec::Rsa4096)
        .send()
        .await
        .unwrap();
    let wrapped = wrap(params.public_key().unwrap().as_ref(), &algorithm, material);
    let mut request = kms
        .import_key_material()
        .key_id(key)
        .import_token(params.import_token().unwrap().clone())
        .encrypted_key_material(Blob::new(wrapped))
        .set_import_type(options.import_type)
        .set_key_material_id(options.key_material_id)
        .set_key_material_description(options.description.map(str::to_owned));
    request = match options.valid_to {
        Some(valid_to) => request
            .expiration_model(ExpirationModelType::KeyMaterialExpires)
            .valid_to(DateTime::from_secs_f64(valid_to)),
        None => request.expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire),
    };
    request.send().await
}

async fn describe(kms: &Client, key: &str) -> aws_sdk_kms::types::KeyMetadata {
    kms.describe_key()
        .key_id(key)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .clone()
}

async fn encrypt(kms: &Client, key: &str, plaintext: &[u8]) -> Blob {
    kms.encrypt()
        .key_id(key)
        .plaintext(Blob::new(plaintext))
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone()
}

async fn decrypt(
    kms: &Client,
    blob: &Blob,
) -> Result<
    aws_sdk_kms::operation::decrypt::DecryptOutput,
    SdkError<
        aws_sdk_kms::operation::decrypt::DecryptError,
        aws_sdk_kms::config::http::HttpResponse,
    >,
> {
    kms.decrypt()
        .ciphertext_blob(blob.clone())
        .encryption_context("purpose", "test")
        .send()
        .await
}

async fn rotations(
    kms: &Client,
    key: &str,
    include: Option<IncludeKeyMaterial>,
) -> Vec<aws_sdk_kms::types::RotationsListEntry> {
    let out = kms
        .list_key_rotations()
        .key_id(key)
        .set_include_key_material(include)
        .send()
        .await
        .unwrap();
    assert!(!out.truncated());
    out.rotations().to_vec()
}

/// A key with a first material (`m1`, CURRENT) and a second one rotated in
/// (`m2`), with a ciphertext made under each.
struct Rotated {
    key: String,
    m1: [u8; 32],
    id1: String,
    m2: [u8; 32],
    id2: String,
    c1: Blob,
    c2: Blob,
}

async fn rotated(kms: &Client) -> Rotated {
    let key = external_key(kms).await;
    let m1 = random_material();
    let id1 = import(
        kms,
        &key,
        &m1,
        AlgorithmSpec::RsaesOaepSha256,
        Options::default(),
    )
    .await
    .unwrap()
    .key_material_id()
    .unwrap()
    .to_owned();
    let c1 = encrypt(kms, &key, b"under the first material").await;
    let m2 = random_material();
    let id2 = import(
        kms,
        &key,
        &m2,
        AlgorithmSpec::RsaAesKeyWrapSha256,
        Options::new_material(),
    )
    .await
    .unwrap()
    .key_material_id()
    .unwrap()
    .to_owned();
    kms.rotate_key_on_demand()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    let c2 = encrypt(kms, &key, b"under the second material").await;
    Rotated {
        key,
        m1,
        id1,
        m2,
        id2,
        c1,
        c2,
    }
}

#[tokio::test]
async fn the_first_import_becomes_current_and_answers_its_id() {
    let (peer, kms) = faithful().await;
    let key = external_key(&kms).await;
    let material = random_material();
    let out = import(
        &kms,
        &key,
        &material,
        AlgorithmSpec::RsaesOaepSha256,
        Options {
            description: Some("first material"),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let id = material_id(&key, &material);
    assert_eq!(out.key_material_id(), Some(id.as_str()));
    assert!(out.key_id().unwrap().ends_with(&format!(":key/{key}")));

    let metadata = describe(&kms, &key).await;
    assert_eq!(metadata.key_state(), Some(&KeyState::Enabled));
    assert!(metadata.enabled());
    assert_eq!(metadata.origin(), Some(&OriginType::External));
    assert_eq!(metadata.current_key_material_id(), Some(id.as_str()));
    assert_eq!(
        metadata.expiration_model(),
        Some(&ExpirationModelType::KeyMaterialDoesNotExpire)
    );

    // What the peer holds is what was wrapped.
    let held = peer.materials(&key).unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].material(), &material);
    assert_eq!(held[0].description.as_deref(), Some("first material"));
    assert_eq!(peer.key_state(&key).as_deref(), Some("Enabled"));

    // The first material is no rotation: listed only with ALL_KEY_MATERIAL.
    assert!(rotations(&kms, &key, None).await.is_empty());
    let all = rotations(&kms, &key, Some(IncludeKeyMaterial::AllKeyMaterial)).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].key_material_id(), Some(id.as_str()));
    assert_eq!(
        all[0].key_material_state(),
        Some(&KeyMaterialState::Current)
    );
    assert_eq!(all[0].import_state(), Some(&ImportState::Imported));
    assert_eq!(all[0].key_material_description(), Some("first material"));
    assert_eq!(all[0].rotation_date(), None);
    assert_eq!(all[0].rotation_type(), None);
}

#[tokio::test]
async fn new_material_waits_for_the_rotation_and_every_material_still_decrypts() {
    let (_peer, kms) = faithful().await;
    let key = external_key(&kms).await;
    let m1 = random_material();
    let id1 = material_id(&key, &m1);
    import(
        &kms,
        &key,
        &m1,
        AlgorithmSpec::RsaesOaepSha256,
        Options::default(),
    )
    .await
    .unwrap();
    let c1 = encrypt(&kms, &key, b"one").await;
    // Nothing to rotate to yet.
    assert_eq!(
        code(kms.rotate_key_on_demand().key_id(&key).send().await),
        "KMSInvalidStateException"
    );

    let m2 = random_material();
    let id2 = material_id(&key, &m2);
    let out = import(
        &kms,
        &key,
        &m2,
        AlgorithmSpec::RsaAesKeyWrapSha256,
        Options {
            description: Some("Q2 rotation"),
            ..Options::new_material()
        },
    )
    .await
    .unwrap();
    assert_eq!(out.key_material_id(), Some(id2.as_str()));
    // Pending: still encrypting under m1, listed only with ALL_KEY_MATERIAL.
    assert_eq!(
        describe(&kms, &key).await.current_key_material_id(),
        Some(id1.as_str())
    );
    let before = encrypt(&kms, &key, b"still one").await;
    assert_eq!(
        decrypt(&kms, &before).await.unwrap().key_material_id(),
        Some(id1.as_str())
    );
    assert!(rotations(&kms, &key, None).await.is_empty());
    let all = rotations(&kms, &key, Some(IncludeKeyMaterial::AllKeyMaterial)).await;
    let states: Vec<_> = all
        .iter()
        .map(|r| r.key_material_state().cloned())
        .collect();
    assert_eq!(
        states,
        [
            Some(KeyMaterialState::Current),
            Some(KeyMaterialState::PendingRotation)
        ]
    );

    // One pending material at a time; new material must be new; no id with NEW.
    assert_eq!(
        code(
            import(
                &kms,
                &key,
                &random_material(),
                AlgorithmSpec::RsaesOaepSha256,
                Options::new_material()
            )
            .await
        ),
        "KMSInvalidStateException"
    );
    assert_eq!(
        code(
            import(
                &kms,
                &key,
                &m1,
                AlgorithmSpec::RsaesOaepSha256,
                Options::new_material()
            )
            .await
        ),
        "IncorrectKeyMaterialException"
    );
    assert_eq!(
        code(
            import(
                &kms,
                &key,
                &random_material(),
                AlgorithmSpec::RsaesOaepSha256,
                Options {
                    key_material_id: Some(id1.clone()),
                    ..Options::new_material()
                }
            )
            .await
        ),
        "ValidationException"
    );

    let rotated = kms
        .rotate_key_on_demand()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert!(rotated.key_id().unwrap().ends_with(&key));
    let metadata = describe(&kms, &key).await;
    assert_eq!(metadata.current_key_material_id(), Some(id2.as_str()));
    assert_eq!(metadata.key_state(), Some(&KeyState::Enabled));

    let c2 = encrypt(&kms, &key, b"two").await;
    let out = decrypt(&kms, &c2).await.unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), b"two");
    assert_eq!(out.key_material_id(), Some(id2.as_str()));
    assert!(out.key_id().unwrap().ends_with(&key));
    let out = decrypt(&kms, &c1).await.unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), b"one");
    assert_eq!(out.key_material_id(), Some(id1.as_str()));

    let only = rotations(&kms, &key, None).await;
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].key_material_id(), Some(id2.as_str()));
    assert_eq!(
        only[0].key_material_state(),
        Some(&KeyMaterialState::Current)
    );
    assert_eq!(only[0].key_material_description(), Some("Q2 rotation"));
    assert_eq!(only[0].rotation_type(), Some(&RotationType::OnDemand));
    assert!(only[0].rotation_date().is_some());
    let all = rotations(&kms, &key, Some(IncludeKeyMaterial::AllKeyMaterial)).await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].key_material_id(), Some(id1.as_str()));
    assert_eq!(
        all[0].key_material_state(),
        Some(&KeyMaterialState::NonCurrent)
    );
}

#[tokio::test]
async fn a_ciphertext_decrypts_only_unaltered_under_its_context_and_key() {
    let (_peer, kms) = faithful().await;
    let r = rotated(&kms).await;
    let other = rotated(&kms).await;
    let wrong_context = kms
        .decrypt()
        .ciphertext_blob(r.c1.clone())
        .encryption_context("purpose", "another")
        .send()
        .await;
    assert_eq!(code(wrong_context), "InvalidCiphertextException");
    let mut tampered = r.c2.clone().into_inner();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(
        code(decrypt(&kms, &Blob::new(tampered)).await),
        "InvalidCiphertextException"
    );
    assert_eq!(
        code(decrypt(&kms, &Blob::new(b"not a ciphertext".to_vec())).await),
        "InvalidCiphertextException"
    );
    let wrong_key = kms
        .decrypt()
        .key_id(&other.key)
        .ciphertext_blob(r.c1.clone())
        .encryption_context("purpose", "test")
        .send()
        .await;
    assert_eq!(code(wrong_key), "IncorrectKeyException");
    let right_key = kms
        .decrypt()
        .key_id(&r.key)
        .ciphertext_blob(r.c1.clone())
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(right_key.key_material_id(), Some(r.id1.as_str()));
}

#[tokio::test]
async fn an_existing_import_must_be_material_the_key_already_has() {
    let (_peer, kms) = faithful().await;
    // A key without material has nothing to re-import.
    let empty = external_key(&kms).await;
    assert_eq!(
        code(
            import(
                &kms,
                &empty,
                &random_material(),
                AlgorithmSpec::RsaesOaepSha256,
                Options::existing(None)
            )
            .await
        ),
        "IncorrectKeyMaterialException"
    );

    let r = rotated(&kms).await;
    let unknown = random_material();
    for options in [Options::existing(None), Options::default()] {
        assert_eq!(
            code(
                import(
                    &kms,
                    &r.key,
                    &unknown,
                    AlgorithmSpec::RsaesOaepSha256,
                    options
                )
                .await
            ),
            "IncorrectKeyMaterialException"
        );
    }
    // The id given must be this material's.
    assert_eq!(
        code(
            import(
                &kms,
                &r.key,
                &r.m1,
                AlgorithmSpec::RsaesOaepSha256,
                Options::existing(Some(&r.id2))
            )
            .await
        ),
        "IncorrectKeyMaterialException"
    );
    // Re-importing an imported material changes its expiration.
    let valid_to = (now() + 86_400.0).floor();
    let out = import(
        &kms,
        &r.key,
        &r.m2,
        AlgorithmSpec::RsaesOaepSha1,
        Options {
            valid_to: Some(valid_to),
            ..Options::existing(Some(&r.id2))
        },
    )
    .await
    .unwrap();
    assert_eq!(out.key_material_id(), Some(r.id2.as_str()));
    let metadata = describe(&kms, &r.key).await;
    assert_eq!(
        metadata.expiration_model(),
        Some(&ExpirationModelType::KeyMaterialExpires)
    );
    assert_eq!(metadata.valid_to().unwrap().as_secs_f64(), valid_to);
}

#[tokio::test]
async fn deleting_an_old_material_suspends_the_key_until_that_material_is_back() {
    let (peer, kms) = faithful().await;
    let r = rotated(&kms).await;

    let unknown = material_id(&r.key, &random_material());
    assert_eq!(
        code(
            kms.delete_imported_key_material()
                .key_id(&r.key)
                .key_material_id(&unknown)
                .send()
                .await
        ),
        "NotFoundException"
    );

    let deleted = kms
        .delete_imported_key_material()
        .key_id(&r.key)
        .key_material_id(&r.id1)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.key_material_id(), Some(r.id1.as_str()));
    let metadata = describe(&kms, &r.key).await;
    assert_eq!(metadata.key_state(), Some(&KeyState::PendingImport));
    assert_eq!(metadata.current_key_material_id(), Some(r.id2.as_str()));
    // The whole key is unusable, not only the deleted material's ciphertexts.
    assert_eq!(code(decrypt(&kms, &r.c2).await), "KMSInvalidStateException");
    assert_eq!(code(decrypt(&kms, &r.c1).await), "KMSInvalidStateException");
    assert_eq!(
        code(
            kms.encrypt()
                .key_id(&r.key)
                .plaintext(Blob::new(b"x".to_vec()))
                .send()
                .await
        ),
        "KMSInvalidStateException"
    );
    let all = rotations(&kms, &r.key, Some(IncludeKeyMaterial::AllKeyMaterial)).await;
    assert_eq!(all[0].key_material_id(), Some(r.id1.as_str()));
    assert_eq!(all[0].import_state(), Some(&ImportState::PendingImport));
    assert_eq!(
        all[0].key_material_state(),
        Some(&KeyMaterialState::NonCurrent)
    );
    assert_eq!(all[1].import_state(), Some(&ImportState::Imported));

    import(
        &kms,
        &r.key,
        &r.m1,
        AlgorithmSpec::RsaesOaepSha1,
        Options::existing(Some(&r.id1)),
    )
    .await
    .unwrap();
    assert_eq!(
        describe(&kms, &r.key).await.key_state(),
        Some(&KeyState::Enabled)
    );
    let out = decrypt(&kms, &r.c1).await.unwrap();
    assert_eq!(
        out.plaintext().unwrap().as_ref(),
        b"under the first material"
    );
    let out = decrypt(&kms, &r.c2).await.unwrap();
    assert_eq!(
        out.plaintext().unwrap().as_ref(),
        b"under the second material"
    );

    // Without an id, the current material is deleted; re-imported without
    // an ImportType (EXISTING_KEY_MATERIAL once the key has material).
    let deleted = kms
        .delete_imported_key_material()
        .key_id(&r.key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.key_material_id(), Some(r.id2.as_str()));
    assert_eq!(peer.key_state(&r.key).as_deref(), Some("PendingImport"));
    import(
        &kms,
        &r.key,
        &r.m2,
        AlgorithmSpec::RsaAesKeyWrapSha256,
        Options::default(),
    )
    .await
    .unwrap();
    assert_eq!(peer.key_state(&r.key).as_deref(), Some("Enabled"));
    assert!(decrypt(&kms, &r.c2).await.is_ok());
}

#[tokio::test]
async fn a_pending_material_can_be_deleted_and_another_imported_in_its_place() {
    let (peer, kms) = faithful().await;
    let key = external_key(&kms).await;
    let m1 = random_material();
    import(
        &kms,
        &key,
        &m1,
        AlgorithmSpec::RsaesOaepSha256,
        Options::default(),
    )
    .await
    .unwrap();
    let pending = random_material();
    let pending_id = material_id(&key, &pending);
    import(
        &kms,
        &key,
        &pending,
        AlgorithmSpec::RsaesOaepSha256,
        Options::new_material(),
    )
    .await
    .unwrap();
    kms.delete_imported_key_material()
        .key_id(&key)
        .key_material_id(&pending_id)
        .send()
        .await
        .unwrap();
    // It was never permanently associated: gone, and the key still usable.
    assert_eq!(peer.key_state(&key).as_deref(), Some("Enabled"));
    assert_eq!(peer.materials(&key).unwrap().len(), 1);
    let replacement = random_material();
    import(
        &kms,
        &key,
        &replacement,
        AlgorithmSpec::RsaesOaepSha256,
        Options::new_material(),
    )
    .await
    .unwrap();
    kms.rotate_key_on_demand()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        describe(&kms, &key).await.current_key_material_id(),
        Some(material_id(&key, &replacement).as_str())
    );
}

#[tokio::test]
async fn the_26th_on_demand_rotation_is_refused_and_every_rotation_is_listed() {
    let (_peer, kms) = faithful().await;
    let key = external_key(&kms).await;
    import(
        &kms,
        &key,
        &random_material(),
        AlgorithmSpec::RsaesOaepSha256,
        Options::default(),
    )
    .await
    .unwrap();
    for _ in 0..MAX_ON_DEMAND_ROTATIONS {
        import(
            &kms,
            &key,
            &random_material(),
            AlgorithmSpec::RsaesOaepSha256,
            Options::new_material(),
        )
        .await
        .unwrap();
        kms.rotate_key_on_demand()
            .key_id(&key)
            .send()
            .await
            .unwrap();
    }
    import(
        &kms,
        &key,
        &random_material(),
        AlgorithmSpec::RsaesOaepSha256,
        Options::new_material(),
    )
    .await
    .unwrap();
    assert_eq!(
        code(kms.rotate_key_on_demand().key_id(&key).send().await),
        "LimitExceededException"
    );

    let listed = rotations(&kms, &key, None).await;
    assert_eq!(listed.len(), 25);
    assert!(
        listed
            .iter()
            .all(|r| r.rotation_type() == Some(&RotationType::OnDemand))
    );
    assert_eq!(
        listed
            .iter()
            .filter(|r| r.key_material_state() == Some(&KeyMaterialState::Current))
            .count(),
        1
    );
    // The first material and the pending one too; page by page.
    let all: Vec<_> = kms
        .list_key_rotations()
        .key_id(&key)
        .include_key_material(IncludeKeyMaterial::AllKeyMaterial)
        .limit(10)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 27);
    assert_eq!(all[0].rotation_date(), None);
    assert_eq!(
        all[26].key_material_state(),
        Some(&KeyMaterialState::PendingRotation)
    );
}

#[tokio::test]
async fn a_disabled_key_neither_rotates_nor_decrypts_and_stays_disabled_on_import() {
    let (_peer, kms) = faithful().await;
    let r = rotated(&kms).await;
    import(
        &kms,
        &r.key,
        &random_material(),
        AlgorithmSpec::RsaesOaepSha256,
        Options::new_material(),
    )
    .await
    .unwrap();
    kms.disable_key().key_id(&r.key).send().await.unwrap();
    assert_eq!(
        code(kms.rotate_key_on_demand().key_id(&r.key).send().await),
        "DisabledException"
    );
    assert_eq!(code(decrypt(&kms, &r.c1).await), "DisabledException");
    import(
        &kms,
        &r.key,
        &r.m1,
        AlgorithmSpec::RsaesOaepSha256,
        Options::existing(None),
    )
    .await
    .unwrap();
    assert_eq!(
        describe(&kms, &r.key).await.key_state(),
        Some(&KeyState::Disabled)
    );
    kms.enable_key().key_id(&r.key).send().await.unwrap();
    kms.rotate_key_on_demand()
        .key_id(&r.key)
        .send()
        .await
        .unwrap();
    assert!(decrypt(&kms, &r.c1).await.is_ok());

    // A key waiting for its material cannot be disabled.
    let waiting = external_key(&kms).await;
    assert_eq!(
        code(kms.disable_key().key_id(&waiting).send().await),
        "KMSInvalidStateException"
    );
}

#[tokio::test]
async fn import_tokens_wrapped_material_and_expiration_are_checked() {
    let (_peer, kms) = faithful().await;
    let key = external_key(&kms).await;
    let other = external_key(&kms).await;
    let params = kms
        .get_parameters_for_import()
        .key_id(&other)
        .wrapping_algorithm(AlgorithmSpec::RsaAesKeyWrapSha256)
        .wrapping_key_spec(WrappingKeySpec::Rsa2048)
        .send()
        .await
        .unwrap();
    let public = params.public_key().unwrap().as_ref().to_vec();
    let token = params.import_token().unwrap().clone();
    let send = |key: String, token: Blob, wrapped: Vec<u8>| {
        kms.import_key_material()
            .key_id(key)
            .import_token(token)
            .encrypted_key_material(Blob::new(wrapped))
            .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
            .send()
    };
    let material = random_material();
    let wrapped = wrap(&public, &AlgorithmSpec::RsaAesKeyWrapSha256, &material);
    // Another key's token; no token the peer made.
    assert_eq!(
        code(send(key.clone(), token.clone(), wrapped.clone()).await),
        "InvalidImportTokenException"
    );
    assert_eq!(
        code(
            send(
                other.clone(),
                Blob::new(b"forged".to_vec()),
                wrapped.clone()
            )
            .await
        ),
        "InvalidImportTokenException"
    );
    // Wrapped another way than the token's algorithm says; not wrapped at all.
    let oaep = wrap(&public, &AlgorithmSpec::RsaesOaepSha256, &material);
    assert_eq!(
        code(send(other.clone(), token.clone(), oaep).await),
        "InvalidCiphertextException"
    );
    assert_eq!(
        code(send(other.clone(), token.clone(), vec![7u8; 300]).await),
        "InvalidCiphertextException"
    );
    // Not 256 bits.
    let short = wrap(&public, &AlgorithmSpec::RsaAesKeyWrapSha256, &[1u8; 16]);
    assert_eq!(
        code(send(other.clone(), token.clone(), short).await),
        "IncorrectKeyMaterialException"
    );
    // ExpirationModel defaults to KEY_MATERIAL_EXPIRES, which needs ValidTo.
    let no_valid_to = kms
        .import_key_material()
        .key_id(&other)
        .import_token(token.clone())
        .encrypted_key_material(Blob::new(wrapped.clone()))
        .send()
        .await;
    assert_eq!(code(no_valid_to), "ValidationException");
    send(other.clone(), token, wrapped).await.unwrap();
    assert_eq!(
        describe(&kms, &other).await.current_key_material_id(),
        Some(material_id(&other, &material).as_str())
    );

    // A key whose material KMS made (origin AWS_KMS, the default) imports nothing.
    let generated = kms.create_key().send().await.unwrap();
    let generated = generated.key_metadata().unwrap();
    assert_eq!(generated.origin(), Some(&OriginType::AwsKms));
    assert_eq!(generated.key_state(), Some(&KeyState::Enabled));
    let refused = kms
        .get_parameters_for_import()
        .key_id(generated.key_id())
        .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha256)
        .wrapping_key_spec(WrappingKeySpec::Rsa2048)
        .send()
        .await;
    assert_eq!(code(refused), "UnsupportedOperationException");
}

#[tokio::test]
async fn material_past_its_valid_to_is_deleted_until_imported_again() {
    let (_peer, kms) = faithful().await;
    let key = external_key(&kms).await;
    let material = random_material();
    let valid_to = now() + 1.5;
    import(
        &kms,
        &key,
        &material,
        AlgorithmSpec::RsaesOaepSha256,
        Options {
            valid_to: Some(valid_to),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let metadata = describe(&kms, &key).await;
    assert_eq!(metadata.key_state(), Some(&KeyState::Enabled));
    assert_eq!(
        metadata.expiration_model(),
        Some(&ExpirationModelType::KeyMaterialExpires)
    );
    let ciphertext = encrypt(&kms, &key, b"short-lived").await;
    tokio::time::sleep(std::time::Duration::from_secs_f64(
        (valid_to - now()).max(0.0) + 0.2,
    ))
    .await;
    assert_eq!(
        describe(&kms, &key).await.key_state(),
        Some(&KeyState::PendingImport)
    );
    assert_eq!(
        code(decrypt(&kms, &ciphertext).await),
        "KMSInvalidStateException"
    );
    import(
        &kms,
        &key,
        &material,
        AlgorithmSpec::RsaesOaepSha256,
        Options::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        decrypt(&kms, &ciphertext)
            .await
            .unwrap()
            .plaintext()
            .unwrap()
            .as_ref(),
        b"short-lived"
    );
}

#[tokio::test]
async fn the_benchmarks_mode_serves_the_same_operations_without_unwrapping() {
    let peer = KmsPeer::start(false).await.unwrap();
    let kms = client(&peer.endpoint);
    // No Origin: a key for import, as the benchmarks have always had.
    let key = kms.create_key().send().await.unwrap();
    let key = key.key_metadata().unwrap().key_id().to_owned();
    let blind = |import_type: Option<ImportType>, key_material_id: Option<String>| {
        kms.import_key_material()
            .key_id(&key)
            .import_token(Blob::new(b"anything".to_vec()))
            .encrypted_key_material(Blob::new(vec![0u8; 256]))
            .set_import_type(import_type)
            .set_key_material_id(key_material_id)
            .send()
    };
    let id1 = blind(None, None)
        .await
        .unwrap()
        .key_material_id()
        .unwrap()
        .to_owned();
    let c1 = encrypt(&kms, &key, b"one").await;
    let id2 = blind(Some(ImportType::NewKeyMaterial), None)
        .await
        .unwrap()
        .key_material_id()
        .unwrap()
        .to_owned();
    assert_ne!(id1, id2);
    kms.rotate_key_on_demand()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        describe(&kms, &key).await.current_key_material_id(),
        Some(id2.as_str())
    );
    kms.delete_imported_key_material()
        .key_id(&key)
        .key_material_id(&id1)
        .send()
        .await
        .unwrap();
    assert_eq!(code(decrypt(&kms, &c1).await), "KMSInvalidStateException");
    blind(Some(ImportType::ExistingKeyMaterial), Some(id1.clone()))
        .await
        .unwrap();
    assert_eq!(
        decrypt(&kms, &c1).await.unwrap().key_material_id(),
        Some(id1.as_str())
    );
    assert_eq!(rotations(&kms, &key, None).await.len(), 1);
    let counts = peer.counts();
    assert_eq!(counts["ImportKeyMaterial"].accepted, 3);
    assert_eq!(counts["RotateKeyOnDemand"].accepted, 1);
}
