//! What drift checks read and their repairs write, driven over HTTP by the
//! real AWS SDK as keyhold's adapter drives the peer: policies, tags,
//! aliases, the listings and the key's life, in faithful mode. (The peer's
//! in-place rotation is tested the same way in tests/kms_peer.rs.)

use aws_credential_types::Credentials;
use aws_sdk_kms::Client;
use aws_sdk_kms::config::BehaviorVersion;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    AlgorithmSpec, ExpirationModelType, ImportState, ImportType, IncludeKeyMaterial, KeyState,
    OriginType, Tag, WrappingKeySpec,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use rsa::pkcs8::DecodePublicKey;
use rsa::rand_core::{OsRng, RngCore};
use rsa::{Oaep, RsaPublicKey};
use sha2::Sha256;

use super::{KmsPeer, now_epoch};

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

/// The error code (`__type`) of a call that failed.
fn code<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    result: Result<T, SdkError<E, R>>,
) -> String {
    let err = result.expect_err("the call should have been refused");
    err.code()
        .unwrap_or_else(|| panic!("no error code in {err:?}"))
        .to_owned()
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder()
        .tag_key(key)
        .tag_value(value)
        .build()
        .unwrap()
}

/// A key KMS made the material of (origin AWS_KMS): Enabled at once.
async fn enabled_key(kms: &Client) -> String {
    let out = kms.create_key().send().await.unwrap();
    out.key_metadata().unwrap().key_id().to_owned()
}

async fn state(kms: &Client, key: &str) -> KeyState {
    let out = kms.describe_key().key_id(key).send().await.unwrap();
    out.key_metadata().unwrap().key_state().unwrap().clone()
}

async fn tags(kms: &Client, key: &str) -> Vec<(String, String)> {
    kms.list_resource_tags()
        .key_id(key)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.tag_key().to_owned(), t.tag_value().to_owned()))
        .collect()
}

/// GetParametersForImport, RSAES_OAEP_SHA_256, ImportKeyMaterial: the id
/// KMS gave the material.
async fn import(
    kms: &Client,
    key: &str,
    material: &[u8],
    import_type: Option<ImportType>,
) -> String {
    let params = kms
        .get_parameters_for_import()
        .key_id(key)
        .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha256)
        .wrapping_key_spec(WrappingKeySpec::Rsa2048)
        .send()
        .await
        .unwrap();
    let public = RsaPublicKey::from_public_key_der(params.public_key().unwrap().as_ref()).unwrap();
    let wrapped = public
        .encrypt(&mut OsRng, Oaep::new::<Sha256>(), material)
        .unwrap();
    kms.import_key_material()
        .key_id(key)
        .import_token(params.import_token().unwrap().clone())
        .encrypted_key_material(Blob::new(wrapped))
        .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
        .set_import_type(import_type)
        .send()
        .await
        .unwrap()
        .key_material_id()
        .unwrap()
        .to_owned()
}

fn random_material() -> [u8; 32] {
    let mut material = [0u8; 32];
    OsRng.fill_bytes(&mut material);
    material
}

#[tokio::test]
async fn a_key_has_awss_default_policy_until_another_is_put() {
    let (peer, kms) = faithful().await;
    let key = enabled_key(&kms).await;
    let out = kms.get_key_policy().key_id(&key).send().await.unwrap();
    assert_eq!(out.policy_name(), Some("default"));
    let default = out.policy().unwrap();
    assert!(
        default.contains("arn:aws:iam::111122223333:root"),
        "{default}"
    );
    assert!(default.contains("\"kms:*\""), "{default}");

    // Kept verbatim, named or not by its only name.
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Sid":"only","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/keyhold"},"Action":"kms:*","Resource":"*"}]}"#;
    kms.put_key_policy()
        .key_id(&key)
        .policy_name("default")
        .policy(policy)
        .send()
        .await
        .unwrap();
    let out = kms
        .get_key_policy()
        .key_id(&key)
        .policy_name("default")
        .send()
        .await
        .unwrap();
    assert_eq!(out.policy(), Some(policy));
    assert_eq!(peer.policy(&key).as_deref(), Some(policy));

    assert_eq!(
        code(
            kms.put_key_policy()
                .key_id(&key)
                .policy("{\"Version\":\"2012-10-17\"}")
                .send()
                .await
        ),
        "MalformedPolicyDocumentException"
    );
    assert_eq!(
        code(
            kms.get_key_policy()
                .key_id(&key)
                .policy_name("other")
                .send()
                .await
        ),
        "NotFoundException"
    );
    assert_eq!(
        code(
            kms.get_key_policy()
                .key_id("0b9c0a55-3f0e-4a43-9c2e-6a1c1f8f2b11")
                .send()
                .await
        ),
        "NotFoundException"
    );

    // CreateKey keeps the policy it is given.
    let created = kms
        .create_key()
        .origin(OriginType::External)
        .policy(policy)
        .send()
        .await
        .unwrap();
    let created = created.key_metadata().unwrap().key_id().to_owned();
    let out = kms.get_key_policy().key_id(&created).send().await.unwrap();
    assert_eq!(out.policy(), Some(policy));
}

#[tokio::test]
async fn tags_are_added_overwritten_removed_and_listed_in_pages() {
    let (peer, kms) = faithful().await;
    let key = kms
        .create_key()
        .tags(tag("keyhold:group", "payments"))
        .tags(tag("owner", "team-a"))
        .send()
        .await
        .unwrap();
    let key = key.key_metadata().unwrap().key_id().to_owned();
    kms.tag_resource()
        .key_id(&key)
        .tags(tag("owner", "team-b"))
        .tags(tag("keyhold:version", "3"))
        .send()
        .await
        .unwrap();
    let expected = [
        ("keyhold:group".to_owned(), "payments".to_owned()),
        ("owner".to_owned(), "team-b".to_owned()),
        ("keyhold:version".to_owned(), "3".to_owned()),
    ];
    assert_eq!(tags(&kms, &key).await, expected);
    assert_eq!(peer.tags(&key).unwrap(), expected);

    // One tag to a page: three pages, the same tags.
    let first = kms
        .list_resource_tags()
        .key_id(&key)
        .limit(1)
        .send()
        .await
        .unwrap();
    assert_eq!(first.tags().len(), 1);
    assert!(first.truncated());
    let paged: Vec<_> = kms
        .list_resource_tags()
        .key_id(&key)
        .limit(1)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(paged.len(), 3);

    kms.untag_resource()
        .key_id(&key)
        .tag_keys("owner")
        .tag_keys("never-there")
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags(&kms, &key).await,
        [
            ("keyhold:group".to_owned(), "payments".to_owned()),
            ("keyhold:version".to_owned(), "3".to_owned()),
        ]
    );

    assert_eq!(
        code(
            kms.tag_resource()
                .key_id(&key)
                .tags(tag("aws:reserved", "x"))
                .send()
                .await
        ),
        "TagException"
    );
    assert_eq!(
        code(kms.list_resource_tags().key_id(&key).limit(51).send().await),
        "ValidationException"
    );
}

#[tokio::test]
async fn aliases_are_created_moved_deleted_and_listed_with_awss_own() {
    let (peer, kms) = faithful().await;
    let a = enabled_key(&kms).await;
    let b = enabled_key(&kms).await;
    kms.create_alias()
        .alias_name("alias/payments")
        .target_key_id(&a)
        .send()
        .await
        .unwrap();
    kms.create_alias()
        .alias_name("alias/billing")
        .target_key_id(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(
            kms.create_alias()
                .alias_name("alias/payments")
                .target_key_id(&b)
                .send()
                .await
        ),
        "AlreadyExistsException"
    );
    assert_eq!(
        code(
            kms.create_alias()
                .alias_name("alias/aws/mine")
                .target_key_id(&b)
                .send()
                .await
        ),
        "InvalidAliasNameException"
    );
    assert_eq!(
        code(
            kms.update_alias()
                .alias_name("alias/nowhere")
                .target_key_id(&b)
                .send()
                .await
        ),
        "NotFoundException"
    );
    kms.update_alias()
        .alias_name("alias/payments")
        .target_key_id(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(
        peer.aliases(),
        [
            ("alias/billing".to_owned(), b.clone()),
            ("alias/payments".to_owned(), b.clone())
        ]
    );

    // Every alias of the Region, AWS's predefined ones (no target) included,
    // two to a page.
    let all: Vec<_> = kms
        .list_aliases()
        .limit(2)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .unwrap();
    let listed: Vec<_> = all
        .iter()
        .map(|a| (a.alias_name().unwrap(), a.target_key_id()))
        .collect();
    assert_eq!(
        listed,
        [
            ("alias/aws/ebs", None),
            ("alias/aws/rds", None),
            ("alias/aws/s3", None),
            ("alias/billing", Some(b.as_str())),
            ("alias/payments", Some(b.as_str())),
        ]
    );
    let payments = &all[4];
    assert!(payments.alias_arn().unwrap().ends_with(":alias/payments"));
    assert!(payments.creation_date().is_some());
    assert!(payments.last_updated_date().is_some());

    // Only the aliases of one key; none for a key without.
    let of_b = kms.list_aliases().key_id(&b).send().await.unwrap();
    assert_eq!(of_b.aliases().len(), 2);
    let of_a = kms.list_aliases().key_id(&a).send().await.unwrap();
    assert!(of_a.aliases().is_empty());
    assert!(!of_a.truncated());
    assert_eq!(
        code(
            kms.list_aliases()
                .key_id("0b9c0a55-3f0e-4a43-9c2e-6a1c1f8f2b11")
                .send()
                .await
        ),
        "NotFoundException"
    );

    kms.delete_alias()
        .alias_name("alias/billing")
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(kms.delete_alias().alias_name("alias/billing").send().await),
        "NotFoundException"
    );
    assert_eq!(peer.aliases().len(), 1);
}

#[tokio::test]
async fn list_keys_pages_through_every_key_in_creation_order() {
    let (_peer, kms) = faithful().await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(enabled_key(&kms).await);
    }
    let first = kms.list_keys().limit(2).send().await.unwrap();
    assert_eq!(first.keys().len(), 2);
    assert!(first.truncated());
    assert!(first.next_marker().is_some());
    let listed: Vec<String> = kms
        .list_keys()
        .limit(2)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key_id().unwrap().to_owned())
        .collect();
    assert_eq!(listed, created);
    assert_eq!(
        code(kms.list_keys().limit(1001).send().await),
        "ValidationException"
    );
    assert_eq!(
        code(kms.list_keys().marker("not-a-marker").send().await),
        "InvalidMarkerException"
    );
}

#[tokio::test]
async fn a_key_scheduled_for_deletion_is_refused_and_cancelling_leaves_it_disabled() {
    let (peer, kms) = faithful().await;
    let key = enabled_key(&kms).await;
    kms.create_alias()
        .alias_name("alias/doomed")
        .target_key_id(&key)
        .send()
        .await
        .unwrap();
    for days in [6, 31] {
        assert_eq!(
            code(
                kms.schedule_key_deletion()
                    .key_id(&key)
                    .pending_window_in_days(days)
                    .send()
                    .await
            ),
            "ValidationException",
            "{days} days"
        );
    }
    let before = now_epoch();
    let out = kms
        .schedule_key_deletion()
        .key_id(&key)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    assert!(out.key_id().unwrap().ends_with(&format!(":key/{key}")));
    assert_eq!(out.key_state(), Some(&KeyState::PendingDeletion));
    assert_eq!(out.pending_window_in_days(), Some(7));
    let week = 7.0 * 86_400.0;
    let deletion = out.deletion_date().unwrap().as_secs_f64();
    assert!(
        deletion >= before + week && deletion <= now_epoch() + week,
        "{deletion}"
    );
    let metadata = kms.describe_key().key_id(&key).send().await.unwrap();
    let metadata = metadata.key_metadata().unwrap();
    assert_eq!(metadata.key_state(), Some(&KeyState::PendingDeletion));
    assert!(!metadata.enabled());
    assert_eq!(
        metadata.deletion_date().map(|d| d.as_secs_f64()),
        Some(deletion)
    );
    assert_eq!(peer.deletion_date(&key), Some(deletion));

    // Key-state table, footnote [3]: "<key ARN> is pending deletion."
    let refused = kms.enable_key().key_id(&key).send().await;
    let message = refused
        .as_ref()
        .unwrap_err()
        .message()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(code(refused), "KMSInvalidStateException");
    assert!(
        message.ends_with(&format!("key/{key} is pending deletion.")),
        "{message}"
    );
    assert_eq!(
        code(kms.disable_key().key_id(&key).send().await),
        "KMSInvalidStateException"
    );
    assert_eq!(
        code(
            kms.tag_resource()
                .key_id(&key)
                .tags(tag("k", "v"))
                .send()
                .await
        ),
        "KMSInvalidStateException"
    );
    assert_eq!(
        code(kms.untag_resource().key_id(&key).tag_keys("k").send().await),
        "KMSInvalidStateException"
    );
    assert_eq!(
        code(
            kms.create_alias()
                .alias_name("alias/another")
                .target_key_id(&key)
                .send()
                .await
        ),
        "KMSInvalidStateException"
    );
    assert_eq!(
        code(
            kms.encrypt()
                .key_id(&key)
                .plaintext(Blob::new(b"x".to_vec()))
                .send()
                .await
        ),
        "KMSInvalidStateException"
    );
    assert_eq!(
        code(kms.schedule_key_deletion().key_id(&key).send().await),
        "KMSInvalidStateException"
    );
    // Reads go on; the alias still points at the key.
    kms.get_key_policy().key_id(&key).send().await.unwrap();
    kms.list_resource_tags().key_id(&key).send().await.unwrap();
    let aliases = kms.list_aliases().key_id(&key).send().await.unwrap();
    assert_eq!(aliases.aliases().len(), 1);
    let listed = kms.list_keys().send().await.unwrap();
    assert!(
        listed
            .keys()
            .iter()
            .any(|k| k.key_id() == Some(key.as_str()))
    );

    let out = kms.cancel_key_deletion().key_id(&key).send().await.unwrap();
    assert!(out.key_id().unwrap().ends_with(&format!(":key/{key}")));
    let metadata = kms.describe_key().key_id(&key).send().await.unwrap();
    let metadata = metadata.key_metadata().unwrap();
    assert_eq!(metadata.key_state(), Some(&KeyState::Disabled));
    assert_eq!(metadata.deletion_date(), None);
    // Footnote [4]: "<key ARN> is not pending deletion."
    assert_eq!(
        code(kms.cancel_key_deletion().key_id(&key).send().await),
        "KMSInvalidStateException"
    );
    kms.enable_key().key_id(&key).send().await.unwrap();
    assert_eq!(state(&kms, &key).await, KeyState::Enabled);
    // The default window is 30 days.
    let out = kms
        .schedule_key_deletion()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(out.pending_window_in_days(), Some(30));
}

#[tokio::test]
async fn a_deleted_material_is_listed_pending_import_and_deletion_keeps_the_key_pending() {
    let (peer, kms) = faithful().await;
    let key = kms
        .create_key()
        .origin(OriginType::External)
        .send()
        .await
        .unwrap();
    let key = key.key_metadata().unwrap().key_id().to_owned();
    let first = import(&kms, &key, &random_material(), None).await;
    let second = import(
        &kms,
        &key,
        &random_material(),
        Some(ImportType::NewKeyMaterial),
    )
    .await;
    kms.rotate_key_on_demand()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    kms.delete_imported_key_material()
        .key_id(&key)
        .key_material_id(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(state(&kms, &key).await, KeyState::PendingImport);
    let listed = kms
        .list_key_rotations()
        .key_id(&key)
        .include_key_material(IncludeKeyMaterial::AllKeyMaterial)
        .send()
        .await
        .unwrap();
    let import_states: Vec<_> = listed
        .rotations()
        .iter()
        .map(|r| (r.key_material_id().unwrap(), r.import_state().cloned()))
        .collect();
    assert_eq!(
        import_states,
        [
            (first.as_str(), Some(ImportState::PendingImport)),
            (second.as_str(), Some(ImportState::Imported)),
        ]
    );

    // Scheduled for deletion, the key stays pending deletion whatever
    // happens to its material; no import while it is.
    kms.schedule_key_deletion()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    kms.delete_imported_key_material()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(state(&kms, &key).await, KeyState::PendingDeletion);
    assert_eq!(
        code(
            kms.get_parameters_for_import()
                .key_id(&key)
                .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha256)
                .wrapping_key_spec(WrappingKeySpec::Rsa2048)
                .send()
                .await
        ),
        "KMSInvalidStateException"
    );
    // Cancelled, it waits for its material again rather than being Disabled.
    kms.cancel_key_deletion().key_id(&key).send().await.unwrap();
    assert_eq!(peer.key_state(&key).as_deref(), Some("PendingImport"));
}

#[tokio::test]
async fn the_benchmarks_mode_serves_the_drift_operations_too() {
    let peer = KmsPeer::start(false).await.unwrap();
    let kms = client(&peer.endpoint);
    let key = kms.create_key().send().await.unwrap();
    let key = key.key_metadata().unwrap().key_id().to_owned();
    kms.get_key_policy().key_id(&key).send().await.unwrap();
    kms.tag_resource()
        .key_id(&key)
        .tags(tag("keyhold:group", "g"))
        .send()
        .await
        .unwrap();
    assert_eq!(tags(&kms, &key).await.len(), 1);
    kms.create_alias()
        .alias_name("alias/g")
        .target_key_id(&key)
        .send()
        .await
        .unwrap();
    let aliases = kms.list_aliases().key_id(&key).send().await.unwrap();
    assert_eq!(aliases.aliases()[0].alias_name(), Some("alias/g"));
    kms.schedule_key_deletion()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    kms.cancel_key_deletion().key_id(&key).send().await.unwrap();
    assert_eq!(peer.counts()["CancelKeyDeletion"].accepted, 1);
}
