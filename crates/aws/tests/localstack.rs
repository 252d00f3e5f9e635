//! The adapter against a real AWS KMS peer: LocalStack, started with
//! `eval "$(scripts/localstack start)"`. Without it these tests fail.
//!
//! Every test makes its own keys, aliases and tag values, so tests run in
//! parallel and against a LocalStack that earlier runs already used.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aws_sdk_kms::primitives::Blob;
use chrono::{DurationRound, TimeDelta};
use common::{adapter, kms_endpoint, raw_client, run_child_test};
use keyhold_aws::{AwsCredentials, AwsKms, AwsKmsSettings, EndpointChoice, WrappingKeySpec};
use keyhold_core::clock::{Clock, SystemClock, Timestamp};
use keyhold_core::cloud::aws::{Alias, KeyPolicy, KmsKeyId, Region};
use keyhold_core::cloud::{
    CloudError, CloudKms, ImportParameters, MaterialImport, WrappingAlgorithm,
};
use keyhold_core::key::KeyState;
use rsa::pkcs8::DecodePublicKey;
use rsa::rand_core::{OsRng, RngCore};
use rsa::{Oaep, RsaPublicKey};

const POLICY: &str = r#"{"Version":"2012-10-17","Id":"keyhold-test","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"kms:*","Resource":"*"}]}"#;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn random_material() -> [u8; 32] {
    let mut material = [0u8; 32];
    OsRng.fill_bytes(&mut material);
    material
}

/// What a keystore does: RSA-OAEP with SHA-256 under KMS's wrapping key.
fn wrap(params: &ImportParameters, material: &[u8]) -> Vec<u8> {
    assert_eq!(params.algorithm, WrappingAlgorithm::RsaesOaepSha256);
    let public = RsaPublicKey::from_public_key_der(&params.public_key_der).unwrap();
    public
        .encrypt(&mut OsRng, Oaep::new::<sha2::Sha256>(), material)
        .unwrap()
}

async fn new_key(kms: &AwsKms, tags: &[(String, String)]) -> KmsKeyId {
    kms.create_key("keyhold test key", None, tags)
        .await
        .unwrap()
}

async fn import(kms: &AwsKms, key: &KmsKeyId, material: &[u8], valid_to: Option<Timestamp>) {
    let params = kms
        .get_parameters_for_import(key, WrappingAlgorithm::RsaesOaepSha256)
        .await
        .unwrap();
    kms.import_key_material(
        key,
        &params.import_token,
        &wrap(&params, material),
        valid_to,
        MaterialImport::Existing(None),
    )
    .await
    .unwrap();
}

fn now() -> Timestamp {
    SystemClock.now()
}

#[tokio::test]
async fn created_key_is_external_pending_import_with_tags_and_policy() {
    let endpoint = kms_endpoint();
    let kms = adapter(&endpoint).await;
    let tags = vec![
        ("keyhold:job".to_owned(), unique("job")),
        ("team".to_owned(), "payments".to_owned()),
    ];
    let policy = KeyPolicy::parse(POLICY).unwrap();
    let key = kms
        .create_key("payments key", Some(&policy), &tags)
        .await
        .unwrap();

    let info = kms.describe_key(&key).await.unwrap();
    assert_eq!(info.key_id, key);
    assert_eq!(info.state, KeyState::PendingImport);
    assert!(info.external);
    assert_eq!(info.valid_to, None);

    let raw = raw_client(&endpoint);
    let metadata = raw
        .describe_key()
        .key_id(key.as_str())
        .send()
        .await
        .unwrap();
    let metadata = metadata.key_metadata().unwrap();
    assert_eq!(metadata.description(), Some("payments key"));
    assert_eq!(
        metadata.key_spec(),
        Some(&aws_sdk_kms::types::KeySpec::SymmetricDefault)
    );
    assert_eq!(
        metadata.key_usage(),
        Some(&aws_sdk_kms::types::KeyUsageType::EncryptDecrypt)
    );
    let listed = raw
        .list_resource_tags()
        .key_id(key.as_str())
        .send()
        .await
        .unwrap();
    let mut got: Vec<(String, String)> = listed
        .tags()
        .iter()
        .map(|t| (t.tag_key().to_owned(), t.tag_value().to_owned()))
        .collect();
    got.sort();
    let mut want = tags.clone();
    want.sort();
    assert_eq!(got, want);

    let stored = raw
        .get_key_policy()
        .key_id(key.as_str())
        .policy_name("default")
        .send()
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(stored.policy().unwrap()).unwrap(),
        serde_json::from_str::<serde_json::Value>(POLICY).unwrap()
    );
}

#[tokio::test]
async fn import_enables_the_key_and_the_alias_follows_rotation() {
    let endpoint = kms_endpoint();
    let kms = adapter(&endpoint).await;
    let raw = raw_client(&endpoint);

    // First version: material that does not expire.
    let first = new_key(&kms, &[]).await;
    import(&kms, &first, &random_material(), None).await;
    let info = kms.describe_key(&first).await.unwrap();
    assert_eq!(info.state, KeyState::Enabled);
    assert_eq!(info.valid_to, None);

    // Second version: material valid for 30 days.
    let second = new_key(&kms, &[]).await;
    let valid_to = (now() + TimeDelta::days(30))
        .duration_trunc(TimeDelta::seconds(1))
        .unwrap();
    import(&kms, &second, &random_material(), Some(valid_to)).await;
    let info = kms.describe_key(&second).await.unwrap();
    assert_eq!(info.state, KeyState::Enabled);
    // LocalStack 4.8.1 does not keep ValidTo (AWS does); it refuses
    // KEY_MATERIAL_EXPIRES without one, so the import succeeding shows it was
    // sent. tests/wire.rs checks the request and the parsing of ValidTo.
    assert!(
        info.valid_to.is_none() || info.valid_to == Some(valid_to),
        "{info:?}"
    );
    let metadata = raw
        .describe_key()
        .key_id(second.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(
        metadata.key_metadata().unwrap().expiration_model(),
        Some(&aws_sdk_kms::types::ExpirationModelType::KeyMaterialExpires)
    );

    // The alias is created on the first key and used through KMS.
    let alias = Alias::parse(&format!("alias/{}", unique("keyhold-test"))).unwrap();
    kms.point_alias(&alias, &first).await.unwrap();
    assert_eq!(
        alias_target(&raw, &alias).await.as_deref(),
        Some(first.as_str())
    );
    let plaintext = b"keyhold round trip through the alias";
    let encrypted = raw
        .encrypt()
        .key_id(alias.as_str())
        .plaintext(Blob::new(plaintext.as_slice()))
        .send()
        .await
        .unwrap();
    assert!(encrypted.key_id().unwrap().ends_with(first.as_str()));
    let old_ciphertext = encrypted.ciphertext_blob().unwrap().clone();
    let decrypted = raw
        .decrypt()
        .ciphertext_blob(old_ciphertext.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(decrypted.plaintext().unwrap().as_ref(), plaintext);

    // Rotation moves it to the second key; old ciphertext still decrypts.
    kms.point_alias(&alias, &second).await.unwrap();
    assert_eq!(
        alias_target(&raw, &alias).await.as_deref(),
        Some(second.as_str())
    );
    let encrypted = raw
        .encrypt()
        .key_id(alias.as_str())
        .plaintext(Blob::new(plaintext.as_slice()))
        .send()
        .await
        .unwrap();
    assert!(encrypted.key_id().unwrap().ends_with(second.as_str()));
    let decrypted = raw
        .decrypt()
        .ciphertext_blob(old_ciphertext)
        .send()
        .await
        .unwrap();
    assert_eq!(decrypted.plaintext().unwrap().as_ref(), plaintext);

    // Pointing it where it already points is fine (a resumed job does that).
    kms.point_alias(&alias, &second).await.unwrap();
    assert_eq!(
        alias_target(&raw, &alias).await.as_deref(),
        Some(second.as_str())
    );
}

async fn alias_target(raw: &aws_sdk_kms::Client, alias: &Alias) -> Option<String> {
    let mut pages = raw.list_aliases().into_paginator().items().send();
    while let Some(entry) = pages.next().await {
        let entry = entry.unwrap();
        if entry.alias_name() == Some(alias.as_str()) {
            return entry.target_key_id().map(str::to_owned);
        }
    }
    None
}

#[tokio::test]
async fn disable_then_delete_material_leaves_pending_import() {
    let endpoint = kms_endpoint();
    let kms = adapter(&endpoint).await;
    let key = new_key(&kms, &[]).await;
    let material = random_material();
    import(&kms, &key, &material, None).await;

    kms.disable_key(&key).await.unwrap();
    assert_eq!(
        kms.describe_key(&key).await.unwrap().state,
        KeyState::Disabled
    );

    kms.delete_imported_key_material(&key, None).await.unwrap();
    assert_eq!(
        kms.describe_key(&key).await.unwrap().state,
        KeyState::PendingImport
    );

    // Synchronize's "Import Key Material": the same bytes go back in.
    import(&kms, &key, &material, None).await;
    assert_ne!(
        kms.describe_key(&key).await.unwrap().state,
        KeyState::PendingImport
    );
}

#[tokio::test]
async fn put_key_policy_replaces_the_default_policy() {
    let endpoint = kms_endpoint();
    let kms = adapter(&endpoint).await;
    let key = new_key(&kms, &[]).await;
    let policy = KeyPolicy::parse(&POLICY.replace("keyhold-test", &unique("policy"))).unwrap();

    kms.put_key_policy(&key, &policy).await.unwrap();

    let stored = raw_client(&endpoint)
        .get_key_policy()
        .key_id(key.as_str())
        .policy_name("default")
        .send()
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(stored.policy().unwrap()).unwrap(),
        serde_json::from_str::<serde_json::Value>(policy.as_str()).unwrap()
    );
}

#[tokio::test]
async fn find_keys_tagged_finds_only_the_tagged_key() {
    let endpoint = kms_endpoint();
    let kms = adapter(&endpoint).await;
    let job = unique("job");
    let tagged = new_key(&kms, &[("keyhold:job".to_owned(), job.clone())]).await;
    let _other = new_key(&kms, &[("keyhold:job".to_owned(), unique("job"))]).await;
    let _untagged = new_key(&kms, &[]).await;

    let found = kms.find_keys_tagged("keyhold:job", &job).await.unwrap();
    assert_eq!(found, vec![tagged]);
    assert!(
        kms.find_keys_tagged("keyhold:job", &unique("nobody"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn unknown_key_is_not_found() {
    let kms = adapter(&kms_endpoint()).await;
    let missing = KmsKeyId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();

    let err = kms.describe_key(&missing).await.unwrap_err();
    assert!(
        matches!(
            &err,
            CloudError::NotFound {
                operation: "DescribeKey",
                ..
            }
        ),
        "{err:?}"
    );
    let err = kms.disable_key(&missing).await.unwrap_err();
    assert!(matches!(err, CloudError::NotFound { .. }), "{err:?}");
    let err = kms
        .get_parameters_for_import(&missing, WrappingAlgorithm::RsaesOaepSha256)
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn a_key_pending_deletion_is_in_the_wrong_state() {
    let endpoint = kms_endpoint();
    let kms = adapter(&endpoint).await;
    let key = new_key(&kms, &[]).await;
    import(&kms, &key, &random_material(), None).await;
    raw_client(&endpoint)
        .schedule_key_deletion()
        .key_id(key.as_str())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();

    assert_eq!(
        kms.describe_key(&key).await.unwrap().state,
        KeyState::PendingDeletion
    );
    let err = kms.disable_key(&key).await.unwrap_err();
    assert!(
        matches!(
            &err,
            CloudError::InvalidState {
                operation: "DisableKey",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn drift_reads_see_the_policy_tags_aliases_and_keys_aws_holds() {
    let endpoint = kms_endpoint();
    let kms = adapter(&endpoint).await;
    let group = unique("group");
    let tags = vec![
        ("keyhold:group".to_owned(), group.clone()),
        ("team".to_owned(), "payments".to_owned()),
    ];
    let policy = KeyPolicy::parse(&POLICY.replace("keyhold-test", &unique("policy"))).unwrap();
    let key = kms.create_key("drift", Some(&policy), &tags).await.unwrap();
    import(&kms, &key, &random_material(), None).await;
    let alias = Alias::parse(&format!("alias/{}", unique("drift"))).unwrap();
    kms.point_alias(&alias, &key).await.unwrap();

    let read = kms.get_key_policy(&key).await.unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(read.as_str()).unwrap(),
        serde_json::from_str::<serde_json::Value>(policy.as_str()).unwrap()
    );
    let mut listed = kms.list_tags(&key).await.unwrap();
    listed.sort();
    let mut want = tags.clone();
    want.sort();
    assert_eq!(listed, want);

    let aliases = kms.list_aliases().await.unwrap();
    assert!(
        aliases.contains(&(alias.clone(), key.clone())),
        "{aliases:?}"
    );
    assert!(
        aliases
            .iter()
            .all(|(a, _)| !a.as_str().starts_with("alias/aws/")),
        "{aliases:?}"
    );
    assert!(kms.list_key_ids().await.unwrap().contains(&key));

    let missing = KmsKeyId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
    for err in [
        kms.get_key_policy(&missing).await.map(|_| ()).unwrap_err(),
        kms.list_tags(&missing).await.map(|_| ()).unwrap_err(),
    ] {
        assert!(matches!(err, CloudError::NotFound { .. }), "{err:?}");
    }
}

#[tokio::test]
async fn drift_repairs_put_back_tags_the_enabled_state_and_a_key_scheduled_for_deletion() {
    let endpoint = kms_endpoint();
    let kms = adapter(&endpoint).await;
    let key = new_key(&kms, &[("team".to_owned(), "payments".to_owned())]).await;
    import(&kms, &key, &random_material(), None).await;

    let group = unique("group");
    kms.tag_key(
        &key,
        &[
            ("keyhold:group".to_owned(), group.clone()),
            ("team".to_owned(), "billing".to_owned()),
        ],
    )
    .await
    .unwrap();
    let mut tags = kms.list_tags(&key).await.unwrap();
    tags.sort();
    assert_eq!(
        tags,
        [
            ("keyhold:group".to_owned(), group),
            ("team".to_owned(), "billing".to_owned())
        ]
    );

    kms.disable_key(&key).await.unwrap();
    kms.enable_key(&key).await.unwrap();
    assert_eq!(
        kms.describe_key(&key).await.unwrap().state,
        KeyState::Enabled
    );

    let before = now();
    raw_client(&endpoint)
        .schedule_key_deletion()
        .key_id(key.as_str())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let info = kms.describe_key(&key).await.unwrap();
    assert_eq!(info.state, KeyState::PendingDeletion);
    let deletion = info
        .deletion_date
        .expect("a key pending deletion has a deletion date");
    assert!(
        deletion >= before + TimeDelta::days(7) - TimeDelta::seconds(1),
        "{deletion}"
    );
    assert!(deletion <= now() + TimeDelta::days(8), "{deletion}");
    let err = kms.enable_key(&key).await.unwrap_err();
    assert!(
        matches!(
            &err,
            CloudError::InvalidState {
                operation: "EnableKey",
                ..
            }
        ),
        "{err:?}"
    );

    kms.cancel_key_deletion(&key).await.unwrap();
    let info = kms.describe_key(&key).await.unwrap();
    assert_eq!(
        info.state,
        KeyState::Disabled,
        "AWS leaves a recovered key disabled"
    );
    assert_eq!(info.deletion_date, None);
    let err = kms.cancel_key_deletion(&key).await.unwrap_err();
    assert!(
        matches!(
            &err,
            CloudError::InvalidState {
                operation: "CancelKeyDeletion",
                ..
            }
        ),
        "{err:?}"
    );
    kms.enable_key(&key).await.unwrap();
}

#[test]
fn endpoint_and_credentials_from_the_sdk_environment() {
    let endpoint = kms_endpoint();
    run_child_test(
        "child_endpoint_and_credentials_from_the_sdk_environment",
        &[
            ("AWS_ENDPOINT_URL_KMS", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "AKIAKEYHOLDENVKEY001"),
            ("AWS_SECRET_ACCESS_KEY", "keyhold-env-secret"),
        ],
    );
}

#[tokio::test]
#[ignore = "run by endpoint_and_credentials_from_the_sdk_environment with the SDK's variables set"]
async fn child_endpoint_and_credentials_from_the_sdk_environment() {
    common::assert_in_child("child_endpoint_and_credentials_from_the_sdk_environment");
    let endpoint = std::env::var("AWS_ENDPOINT_URL_KMS").unwrap();
    let mut settings = AwsKmsSettings::new(
        Region::parse(common::REGION).unwrap(),
        AwsCredentials::DefaultChain {
            assume_role_arn: None,
        },
    );
    settings.wrapping_key_spec = WrappingKeySpec::Rsa2048;
    // FIPS only picks among AWS's endpoints: the configured one still wins.
    settings.use_fips = true;
    let kms = AwsKms::new(settings).await.unwrap();
    assert_eq!(kms.endpoint(), &EndpointChoice::Environment(endpoint));

    let key = new_key(&kms, &[]).await;
    import(&kms, &key, &random_material(), None).await;
    assert_eq!(
        kms.describe_key(&key).await.unwrap().state,
        KeyState::Enabled
    );
}
