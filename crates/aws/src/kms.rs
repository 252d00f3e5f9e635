//! [`CloudKms`] on AWS KMS through the official SDK.

use std::fmt;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::primitives::{Blob, DateTime as AwsDateTime};
use aws_sdk_kms::types::{
    AlgorithmSpec, ExpirationModelType, ImportState as AwsImportState, ImportType,
    IncludeKeyMaterial, KeyMaterialState as AwsMaterialState, KeySpec, KeyState as AwsKeyState,
    KeyUsageType, OriginType, Tag, WrappingKeySpec as AwsWrappingKeySpec,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_types::service_config::ServiceConfigKey;
use keyhold_core::InvalidInput;
use keyhold_core::clock::Timestamp;
use keyhold_core::cloud::aws::{Alias, KeyMaterialId, KeyPolicy, KmsKeyId};
use keyhold_core::cloud::{
    CloudError, CloudKeyInfo, CloudKms, CloudMaterial, ImportParameters, MaterialImport,
    WrappingAlgorithm,
};
use keyhold_core::credential::CloudService;
use keyhold_core::key::{KeyState, MaterialState};
use secrecy::ExposeSecret;

use crate::error::{classify, malformed, may_have_acted};
use crate::retry::{ThrottlingLeftToThePacer, backoff};
use crate::settings::{AwsCredentials, AwsKmsSettings, RetryMode, WrappingKeySpec};

/// The only key policy name KMS has.
const POLICY_NAME: &str = "default";
/// Shows up in CloudTrail as the session name of an assumed role.
const ROLE_SESSION_NAME: &str = "keyhold";
/// The largest pages AWS serves (ListKeys 1000, ListAliases 100): a drift
/// check lists the whole Region, and fewer pages are fewer requests against
/// the quotas. ListResourceTags is left at its default, which is its maximum (50).
const LIST_KEYS_PAGE: i32 = 1000;
const LIST_ALIASES_PAGE: i32 = 100;
/// The prefix of the aliases AWS gives its own managed keys (`alias/aws/s3`, …).
const AWS_MANAGED_ALIAS_PREFIX: &str = "alias/aws/";

/// Where requests go, for logs and `Debug`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointChoice {
    /// The endpoint of the settings (credential's VPC endpoint, test peer).
    Override(String),
    /// `AWS_ENDPOINT_URL_KMS`, `AWS_ENDPOINT_URL` or the shared config's `endpoint_url`.
    Environment(String),
    /// AWS's regional endpoint (FIPS or not).
    Regional { fips: bool },
}

/// One AWS account in one region, reached with one credential.
///
/// Faults of KMS or the network are retried within each call; a throttled
/// request is not (see [`crate::retry`]): it is answered
/// [`CloudError::Throttled`], for [`crate::RateLimitedKms`] to send again in
/// its turn. Wrap the client in one.
#[derive(Clone)]
pub struct AwsKms {
    client: aws_sdk_kms::Client,
    region: String,
    endpoint: EndpointChoice,
    wrapping_key_spec: WrappingKeySpec,
    /// Attempts of a CreateKey, which keyhold retries itself (see `create_key`).
    create_attempts: u32,
}

impl fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKms")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("wrapping_key_spec", &self.wrapping_key_spec)
            .finish_non_exhaustive()
    }
}

impl AwsKms {
    /// Builds the client. Nothing is sent to AWS yet: credentials from the
    /// default chain or an assumed role are fetched on the first call.
    pub async fn new(settings: AwsKmsSettings) -> Result<Self, InvalidInput> {
        settings.validate()?;
        let region = aws_config::Region::new(settings.region.as_str().to_owned());

        // rustls on ring: TLS without the aws-lc C build. Set on the loader so
        // the credential providers (STS, instance metadata) use it too.
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();

        let retry = match settings.retry.mode {
            RetryMode::Standard => RetryConfig::standard(),
            RetryMode::Adaptive => RetryConfig::adaptive(),
        }
        .with_max_attempts(settings.retry.max_attempts);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(settings.timeouts.connect)
            .operation_attempt_timeout(settings.timeouts.attempt)
            .operation_timeout(settings.timeouts.operation)
            .build();

        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region.clone())
            .http_client(http_client)
            .retry_config(retry)
            .timeout_config(timeouts);
        if let AwsCredentials::Static {
            access_key_id,
            secret_access_key,
        } = &settings.credentials
        {
            loader = loader.credentials_provider(Credentials::new(
                access_key_id.trim(),
                secret_access_key.expose_secret(),
                None,
                None,
                "keyhold-access-key",
            ));
        }
        let mut sdk_config = loader.load().await;

        if let AwsCredentials::DefaultChain {
            assume_role_arn: Some(role_arn),
        } = &settings.credentials
        {
            let role = AssumeRoleProvider::builder(role_arn.as_str())
                .session_name(ROLE_SESSION_NAME)
                .region(region)
                .configure(&sdk_config)
                .build()
                .await;
            sdk_config = sdk_config
                .into_builder()
                .credentials_provider(SharedCredentialsProvider::new(role))
                .build();
        }

        // The endpoint is applied to the KMS client only: on the shared config
        // it would also send STS requests to it.
        let endpoint = match &settings.endpoint {
            Some(url) => EndpointChoice::Override(url.trim_end_matches('/').to_owned()),
            None => match configured_endpoint(&sdk_config) {
                Some(url) => EndpointChoice::Environment(url),
                None => EndpointChoice::Regional {
                    fips: settings.use_fips,
                },
            },
        };
        let mut kms_config = aws_sdk_kms::config::Builder::from(&sdk_config)
            .retry_classifier(ThrottlingLeftToThePacer);
        match &endpoint {
            EndpointChoice::Override(url) | EndpointChoice::Environment(url) => {
                if settings.use_fips {
                    // KMS's endpoint rules refuse FIPS together with a custom
                    // endpoint; the URL given is taken to be the one wanted.
                    tracing::warn!(endpoint = %url, "use_fips is ignored: an explicit KMS endpoint is configured");
                }
                kms_config.set_endpoint_url(Some(url.clone()));
                kms_config.set_use_fips(Some(false));
            }
            EndpointChoice::Regional { fips } => {
                kms_config.set_endpoint_url(None);
                kms_config.set_use_fips(Some(*fips));
            }
        }
        let client = aws_sdk_kms::Client::from_conf(kms_config.build());
        tracing::debug!(
            region = settings.region.as_str(),
            ?endpoint,
            "AWS KMS client ready"
        );
        Ok(Self {
            client,
            region: settings.region.as_str().to_owned(),
            endpoint,
            wrapping_key_spec: settings.wrapping_key_spec,
            create_attempts: settings.retry.max_attempts,
        })
    }

    /// Where this client sends its requests.
    pub fn endpoint(&self) -> &EndpointChoice {
        &self.endpoint
    }

    /// One CreateKey request, without the SDK's retries. A failure comes
    /// with whether KMS may nonetheless have created the key.
    async fn create_key_once(
        &self,
        description: &str,
        policy: Option<&KeyPolicy>,
        tags: &[(String, String)],
    ) -> Result<KmsKeyId, (CloudError, bool)> {
        const OP: &str = "CreateKey";
        let mut request = self
            .client
            .create_key()
            .origin(OriginType::External)
            .key_spec(KeySpec::SymmetricDefault)
            .key_usage(KeyUsageType::EncryptDecrypt)
            .multi_region(false)
            .description(description)
            .bypass_policy_lockout_safety_check(false)
            .set_policy(policy.map(|p| p.as_str().to_owned()));
        for (key, value) in tags {
            let tag = Tag::builder()
                .tag_key(key)
                .tag_value(value)
                .build()
                .map_err(|e| {
                    let error = CloudError::Rejected {
                        operation: OP,
                        message: format!("tag '{key}': {e}"),
                    };
                    (error, false)
                })?;
            request = request.tags(tag);
        }
        let output = request
            .customize()
            .config_override(
                aws_sdk_kms::config::Config::builder().retry_config(RetryConfig::disabled()),
            )
            .send()
            .await
            .map_err(|e| {
                let acted = may_have_acted(&e);
                (classify(OP, e), acted)
            })?;
        let metadata = output
            .key_metadata()
            .ok_or_else(|| (malformed(OP, "key metadata"), false))?;
        let key_id = key_id_from_aws(OP, metadata.key_id()).map_err(|e| (e, false))?;
        tracing::debug!(%key_id, "created KMS key for imported material");
        Ok(key_id)
    }
}

/// The endpoint the SDK's environment and shared config name for KMS, if any.
fn configured_endpoint(sdk_config: &aws_config::SdkConfig) -> Option<String> {
    let key = ServiceConfigKey::builder()
        .service_id("KMS")
        .env("AWS_ENDPOINT_URL")
        .profile("endpoint_url")
        .build()
        .ok()?;
    sdk_config
        .service_config()
        .and_then(|c| c.load_config(key))
        .or_else(|| sdk_config.endpoint_url().map(str::to_owned))
        .filter(|url| !url.trim().is_empty())
}

fn key_id_from_aws(operation: &'static str, raw: &str) -> Result<KmsKeyId, CloudError> {
    KmsKeyId::parse(raw).map_err(|e| CloudError::Rejected {
        operation,
        message: format!("AWS KMS answered with a key id keyhold cannot use: {e}"),
    })
}

fn material_id_from_aws(operation: &'static str, raw: &str) -> Result<KeyMaterialId, CloudError> {
    KeyMaterialId::parse(raw).map_err(|e| CloudError::Rejected {
        operation,
        message: format!("AWS KMS answered with a key material id keyhold cannot use: {e}"),
    })
}

fn to_aws_time(t: Timestamp) -> AwsDateTime {
    AwsDateTime::from_millis(t.timestamp_millis())
}

fn from_aws_time(t: &AwsDateTime) -> Option<Timestamp> {
    chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// A material is in KMS unless AWS lists it pending import (deleted or
/// expired). Keys with AWS-made material carry no import state: theirs is
/// always there. A state this SDK does not know is taken as imported, so an
/// addition on AWS's side is not reported as missing material.
fn material_imported(state: Option<&AwsImportState>) -> bool {
    !matches!(state, Some(AwsImportState::PendingImport))
}

/// The policy text KMS answered, as keyhold's [`KeyPolicy`]. A text keyhold
/// cannot read (not JSON, no statement, too long) is AWS's answer, not the
/// request, that is wrong: the check cannot compare it, so it fails rather
/// than report drift it cannot prove.
fn policy_from_aws(operation: &'static str, text: &str) -> Result<KeyPolicy, CloudError> {
    KeyPolicy::parse(text).map_err(|e| CloudError::Rejected {
        operation,
        message: format!("AWS KMS answered with a key policy keyhold cannot read: {e}"),
    })
}

/// One ListAliases entry as keyhold's (alias, key), or why it is left out:
/// an alias pointing at no key, AWS's own `alias/aws/…`, or a name or
/// target keyhold cannot hold (never one keyhold made).
fn alias_entry(name: Option<&str>, target: Option<&str>) -> Option<(Alias, KmsKeyId)> {
    let name = name?;
    let target = target?;
    if name.starts_with(AWS_MANAGED_ALIAS_PREFIX) {
        return None;
    }
    match (Alias::parse(name), KmsKeyId::parse(target)) {
        (Ok(alias), Ok(key_id)) => Some((alias, key_id)),
        _ => {
            tracing::debug!(
                alias = name,
                target,
                "skipping an alias keyhold cannot hold"
            );
            None
        }
    }
}

fn key_state(operation: &'static str, state: &AwsKeyState) -> Result<KeyState, CloudError> {
    match state {
        AwsKeyState::Enabled => Ok(KeyState::Enabled),
        AwsKeyState::Disabled => Ok(KeyState::Disabled),
        AwsKeyState::PendingImport => Ok(KeyState::PendingImport),
        AwsKeyState::PendingDeletion | AwsKeyState::PendingReplicaDeletion => {
            Ok(KeyState::PendingDeletion)
        }
        // Creating, Updating and Unavailable belong to multi-Region keys and
        // custom key stores, which keyhold neither creates nor manages.
        other => Err(CloudError::InvalidState {
            operation,
            message: format!(
                "the KMS key is in state {}, which keyhold does not manage",
                other.as_str()
            ),
        }),
    }
}

fn wrapping_key_spec(spec: WrappingKeySpec) -> AwsWrappingKeySpec {
    match spec {
        WrappingKeySpec::Rsa2048 => AwsWrappingKeySpec::Rsa2048,
        WrappingKeySpec::Rsa3072 => AwsWrappingKeySpec::Rsa3072,
        WrappingKeySpec::Rsa4096 => AwsWrappingKeySpec::Rsa4096,
    }
}

fn wrapping_algorithm(algorithm: WrappingAlgorithm) -> AlgorithmSpec {
    match algorithm {
        WrappingAlgorithm::RsaesOaepSha256 => AlgorithmSpec::RsaesOaepSha256,
        WrappingAlgorithm::RsaesOaepSha1 => AlgorithmSpec::RsaesOaepSha1,
        WrappingAlgorithm::RsaAesKeyWrapSha256 => AlgorithmSpec::RsaAesKeyWrapSha256,
    }
}

#[async_trait]
impl CloudKms for AwsKms {
    fn service(&self) -> CloudService {
        CloudService::Aws
    }

    /// CreateKey is the one call that is not idempotent: an attempt that
    /// timed out or was cut off may still have created the key, and a blind
    /// retry would create a second one, left orphaned. So the SDK sends it
    /// once, and keyhold retries: before a new attempt after a failure that
    /// leaves open whether KMS acted, a key carrying the request's first tag
    /// (the job's, unique to it) is looked for and taken instead.
    async fn create_key(
        &self,
        description: &str,
        policy: Option<&KeyPolicy>,
        tags: &[(String, String)],
    ) -> Result<KmsKeyId, CloudError> {
        let mut attempt = 1;
        loop {
            let (error, may_have_acted) =
                match self.create_key_once(description, policy, tags).await {
                    Ok(key_id) => return Ok(key_id),
                    Err(failed) => failed,
                };
            if attempt >= self.create_attempts || !matches!(error, CloudError::Transient { .. }) {
                return Err(error);
            }
            tracing::warn!(attempt, %error, "CreateKey failed; trying again");
            tokio::time::sleep(backoff(attempt)).await;
            if may_have_acted
                && let Some((tag, value)) = tags.first()
                && let Some(found) = self.find_keys_tagged(tag, value).await?.into_iter().next()
            {
                tracing::info!(key_id = %found, "the failed CreateKey did create the key; taking it");
                return Ok(found);
            }
            attempt += 1;
        }
    }

    async fn describe_key(&self, key_id: &KmsKeyId) -> Result<CloudKeyInfo, CloudError> {
        const OP: &str = "DescribeKey";
        let output = self
            .client
            .describe_key()
            .key_id(key_id.as_str())
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        let metadata = output
            .key_metadata()
            .ok_or_else(|| malformed(OP, "key metadata"))?;
        let state = key_state(
            OP,
            metadata
                .key_state()
                .ok_or_else(|| malformed(OP, "a key state"))?,
        )?;
        Ok(CloudKeyInfo {
            key_id: key_id_from_aws(OP, metadata.key_id())?,
            state,
            external: metadata.origin() == Some(&OriginType::External),
            valid_to: metadata.valid_to().and_then(from_aws_time),
            current_material: metadata
                .current_key_material_id()
                .map(|id| material_id_from_aws(OP, id))
                .transpose()?,
            deletion_date: metadata.deletion_date().and_then(from_aws_time),
        })
    }

    async fn get_parameters_for_import(
        &self,
        key_id: &KmsKeyId,
        algorithm: WrappingAlgorithm,
    ) -> Result<ImportParameters, CloudError> {
        const OP: &str = "GetParametersForImport";
        let output = self
            .client
            .get_parameters_for_import()
            .key_id(key_id.as_str())
            .wrapping_algorithm(wrapping_algorithm(algorithm))
            .wrapping_key_spec(wrapping_key_spec(self.wrapping_key_spec))
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        let public_key_der = output
            .public_key()
            .ok_or_else(|| malformed(OP, "a wrapping public key"))?
            .as_ref()
            .to_vec();
        let import_token = output
            .import_token()
            .ok_or_else(|| malformed(OP, "an import token"))?
            .as_ref()
            .to_vec();
        Ok(ImportParameters {
            public_key_der,
            import_token,
            valid_until: output.parameters_valid_to().and_then(from_aws_time),
            algorithm,
        })
    }

    async fn import_key_material(
        &self,
        key_id: &KmsKeyId,
        import_token: &[u8],
        encrypted_material: &[u8],
        valid_to: Option<Timestamp>,
        import: MaterialImport<'_>,
    ) -> Result<Option<KeyMaterialId>, CloudError> {
        const OP: &str = "ImportKeyMaterial";
        let request = self
            .client
            .import_key_material()
            .key_id(key_id.as_str())
            .import_token(Blob::new(import_token))
            .encrypted_key_material(Blob::new(encrypted_material));
        let request = match valid_to {
            Some(end) => request
                .expiration_model(ExpirationModelType::KeyMaterialExpires)
                .valid_to(to_aws_time(end)),
            None => request.expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire),
        };
        // An import that names no type is AWS's EXISTING_KEY_MATERIAL; it is
        // left unnamed then, which peers older than in-place rotation accept.
        let request = match import {
            MaterialImport::Existing(None) => request,
            MaterialImport::Existing(Some(id)) => request
                .import_type(ImportType::ExistingKeyMaterial)
                .key_material_id(id.as_str()),
            MaterialImport::New { description } => request
                .import_type(ImportType::NewKeyMaterial)
                .key_material_description(description),
        };
        let output = request.send().await.map_err(|e| classify(OP, e))?;
        tracing::debug!(%key_id, ?valid_to, ?import, "imported key material");
        output
            .key_material_id()
            .map(|id| material_id_from_aws(OP, id))
            .transpose()
    }

    async fn delete_imported_key_material(
        &self,
        key_id: &KmsKeyId,
        material: Option<&KeyMaterialId>,
    ) -> Result<(), CloudError> {
        const OP: &str = "DeleteImportedKeyMaterial";
        self.client
            .delete_imported_key_material()
            .key_id(key_id.as_str())
            .set_key_material_id(material.map(|id| id.as_str().to_owned()))
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        tracing::debug!(%key_id, ?material, "deleted imported key material");
        Ok(())
    }

    async fn list_key_materials(
        &self,
        key_id: &KmsKeyId,
    ) -> Result<Vec<CloudMaterial>, CloudError> {
        const OP: &str = "ListKeyRotations";
        let mut materials = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .client
                .list_key_rotations()
                .key_id(key_id.as_str())
                .include_key_material(IncludeKeyMaterial::AllKeyMaterial)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| classify(OP, e))?;
            for entry in page.rotations() {
                let Some(id) = entry.key_material_id() else {
                    continue;
                };
                let state = match entry.key_material_state() {
                    Some(AwsMaterialState::Current) => MaterialState::Current,
                    Some(AwsMaterialState::PendingRotation) => MaterialState::PendingRotation,
                    _ => MaterialState::NonCurrent,
                };
                materials.push(CloudMaterial {
                    id: material_id_from_aws(OP, id)?,
                    description: entry.key_material_description().map(str::to_owned),
                    state,
                    imported: material_imported(entry.import_state()),
                });
            }
            match page.next_marker() {
                Some(next) if page.truncated() => marker = Some(next.to_owned()),
                _ => return Ok(materials),
            }
        }
    }

    async fn rotate_key_on_demand(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        const OP: &str = "RotateKeyOnDemand";
        self.client
            .rotate_key_on_demand()
            .key_id(key_id.as_str())
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        tracing::debug!(%key_id, "rotated the key on demand");
        Ok(())
    }

    /// Moving the alias is the common case (every rotation after a group's
    /// first), so UpdateAlias goes first: one request, and one quota spent.
    /// CreateAlias follows only when there is no alias to move yet. Either
    /// request may be sent again as a whole, so a call the pacer repeats
    /// after a throttle makes the same progress as the first.
    async fn point_alias(&self, alias: &Alias, key_id: &KmsKeyId) -> Result<(), CloudError> {
        let updated = self
            .client
            .update_alias()
            .alias_name(alias.as_str())
            .target_key_id(key_id.as_str())
            .send()
            .await;
        match updated {
            Ok(_) => {
                tracing::debug!(%alias, %key_id, "moved alias");
                Ok(())
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_not_found_exception()) =>
            {
                self.client
                    .create_alias()
                    .alias_name(alias.as_str())
                    .target_key_id(key_id.as_str())
                    .send()
                    .await
                    .map_err(|e| classify("CreateAlias", e))?;
                tracing::debug!(%alias, %key_id, "created alias");
                Ok(())
            }
            Err(e) => Err(classify("UpdateAlias", e)),
        }
    }

    async fn disable_key(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        const OP: &str = "DisableKey";
        self.client
            .disable_key()
            .key_id(key_id.as_str())
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        tracing::debug!(%key_id, "disabled KMS key");
        Ok(())
    }

    async fn put_key_policy(
        &self,
        key_id: &KmsKeyId,
        policy: &KeyPolicy,
    ) -> Result<(), CloudError> {
        const OP: &str = "PutKeyPolicy";
        self.client
            .put_key_policy()
            .key_id(key_id.as_str())
            .policy_name(POLICY_NAME)
            .policy(policy.as_str())
            .bypass_policy_lockout_safety_check(false)
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        tracing::debug!(%key_id, "put key policy");
        Ok(())
    }

    async fn find_keys_tagged(&self, key: &str, value: &str) -> Result<Vec<KmsKeyId>, CloudError> {
        const OP: &str = "ListKeys";
        const TAGS_OP: &str = "ListResourceTags";
        let mut found = Vec::new();
        let mut keys = self.client.list_keys().into_paginator().items().send();
        while let Some(entry) = keys.next().await {
            let entry = entry.map_err(|e| classify(OP, e))?;
            // Multi-Region (`mrk-…`) keys are never keyhold's.
            let Some(key_id) = entry.key_id().and_then(|id| KmsKeyId::parse(id).ok()) else {
                continue;
            };
            let mut tags = self
                .client
                .list_resource_tags()
                .key_id(key_id.as_str())
                .into_paginator()
                .items()
                .send();
            while let Some(tag) = tags.next().await {
                match tag {
                    Ok(tag) if tag.tag_key() == key && tag.tag_value() == value => {
                        found.push(key_id.clone());
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => match classify(TAGS_OP, e) {
                        // Deleted since ListKeys, or a key this credential may
                        // not read (another team's): not one keyhold created.
                        e @ (CloudError::NotFound { .. } | CloudError::AccessDenied { .. }) => {
                            tracing::debug!(%key_id, error = %e, "skipping key whose tags cannot be read");
                            break;
                        }
                        e => return Err(e),
                    },
                }
            }
        }
        Ok(found)
    }

    async fn get_key_policy(&self, key_id: &KmsKeyId) -> Result<KeyPolicy, CloudError> {
        const OP: &str = "GetKeyPolicy";
        let output = self
            .client
            .get_key_policy()
            .key_id(key_id.as_str())
            .policy_name(POLICY_NAME)
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        let text = output.policy().ok_or_else(|| malformed(OP, "a policy"))?;
        policy_from_aws(OP, text)
    }

    async fn list_aliases(&self) -> Result<Vec<(Alias, KmsKeyId)>, CloudError> {
        const OP: &str = "ListAliases";
        let mut aliases = Vec::new();
        let mut pages = self
            .client
            .list_aliases()
            .limit(LIST_ALIASES_PAGE)
            .into_paginator()
            .items()
            .send();
        while let Some(entry) = pages.next().await {
            let entry = entry.map_err(|e| classify(OP, e))?;
            if let Some(pair) = alias_entry(entry.alias_name(), entry.target_key_id()) {
                aliases.push(pair);
            }
        }
        Ok(aliases)
    }

    async fn list_key_ids(&self) -> Result<Vec<KmsKeyId>, CloudError> {
        const OP: &str = "ListKeys";
        let mut ids = Vec::new();
        let mut keys = self
            .client
            .list_keys()
            .limit(LIST_KEYS_PAGE)
            .into_paginator()
            .items()
            .send();
        while let Some(entry) = keys.next().await {
            let entry = entry.map_err(|e| classify(OP, e))?;
            // Multi-Region (`mrk-…`) keys are never keyhold's.
            if let Some(key_id) = entry.key_id().and_then(|id| KmsKeyId::parse(id).ok()) {
                ids.push(key_id);
            }
        }
        Ok(ids)
    }

    async fn list_tags(&self, key_id: &KmsKeyId) -> Result<Vec<(String, String)>, CloudError> {
        const OP: &str = "ListResourceTags";
        let mut tags = Vec::new();
        let mut pages = self
            .client
            .list_resource_tags()
            .key_id(key_id.as_str())
            .into_paginator()
            .items()
            .send();
        while let Some(tag) = pages.next().await {
            let tag = tag.map_err(|e| classify(OP, e))?;
            tags.push((tag.tag_key().to_owned(), tag.tag_value().to_owned()));
        }
        Ok(tags)
    }

    async fn tag_key(
        &self,
        key_id: &KmsKeyId,
        tags: &[(String, String)],
    ) -> Result<(), CloudError> {
        const OP: &str = "TagResource";
        // TagResource needs at least one tag: nothing to add is no request.
        if tags.is_empty() {
            return Ok(());
        }
        let mut request = self.client.tag_resource().key_id(key_id.as_str());
        for (key, value) in tags {
            let tag = Tag::builder()
                .tag_key(key)
                .tag_value(value)
                .build()
                .map_err(|e| CloudError::Rejected {
                    operation: OP,
                    message: format!("tag '{key}': {e}"),
                })?;
            request = request.tags(tag);
        }
        request.send().await.map_err(|e| classify(OP, e))?;
        tracing::debug!(%key_id, count = tags.len(), "tagged KMS key");
        Ok(())
    }

    async fn enable_key(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        const OP: &str = "EnableKey";
        self.client
            .enable_key()
            .key_id(key_id.as_str())
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        tracing::debug!(%key_id, "enabled KMS key");
        Ok(())
    }

    async fn cancel_key_deletion(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        const OP: &str = "CancelKeyDeletion";
        self.client
            .cancel_key_deletion()
            .key_id(key_id.as_str())
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        tracing::debug!(%key_id, "cancelled the KMS key's scheduled deletion");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn every_wrapping_algorithm_maps_to_its_aws_name() {
        for a in [
            WrappingAlgorithm::RsaesOaepSha256,
            WrappingAlgorithm::RsaesOaepSha1,
            WrappingAlgorithm::RsaAesKeyWrapSha256,
        ] {
            assert_eq!(wrapping_algorithm(a).as_str(), a.aws_name());
        }
        for s in [
            WrappingKeySpec::Rsa2048,
            WrappingKeySpec::Rsa3072,
            WrappingKeySpec::Rsa4096,
        ] {
            assert_eq!(wrapping_key_spec(s).as_str(), s.aws_name());
        }
    }

    #[test]
    fn key_states_map_to_keyholds() {
        let map = |s: AwsKeyState| key_state("Test", &s).ok();
        assert_eq!(map(AwsKeyState::Enabled), Some(KeyState::Enabled));
        assert_eq!(map(AwsKeyState::Disabled), Some(KeyState::Disabled));
        assert_eq!(
            map(AwsKeyState::PendingImport),
            Some(KeyState::PendingImport)
        );
        assert_eq!(
            map(AwsKeyState::PendingDeletion),
            Some(KeyState::PendingDeletion)
        );
        assert!(matches!(
            key_state("Test", &AwsKeyState::Unavailable),
            Err(CloudError::InvalidState { .. })
        ));
        assert!(matches!(
            key_state("Test", &AwsKeyState::from("SomethingNew")),
            Err(CloudError::InvalidState { .. })
        ));
    }

    #[test]
    fn only_material_listed_pending_import_is_missing() {
        assert!(material_imported(Some(&AwsImportState::Imported)));
        assert!(!material_imported(Some(&AwsImportState::PendingImport)));
        // AWS-made material carries no import state.
        assert!(material_imported(None));
        assert!(material_imported(Some(&AwsImportState::from(
            "SomethingNew"
        ))));
    }

    #[test]
    fn a_policy_keyhold_cannot_read_is_refused_naming_aws_as_the_source() {
        let text = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;
        assert_eq!(
            policy_from_aws("GetKeyPolicy", text).unwrap().as_str(),
            text
        );
        for unreadable in ["not json", r#"{"Version":"2012-10-17"}"#] {
            let err = policy_from_aws("GetKeyPolicy", unreadable).unwrap_err();
            assert!(
                matches!(&err, CloudError::Rejected { operation: "GetKeyPolicy", message }
                    if message.contains("AWS KMS answered with a key policy keyhold cannot read")),
                "{err:?}"
            );
        }
    }

    #[test]
    fn aliases_without_a_target_of_aws_or_unreadable_are_left_out() {
        const KEY: &str = "0b9c0a55-3f0e-4a43-9c2e-6a1c1f8f2b11";
        let (alias, key_id) = alias_entry(Some("alias/payments"), Some(KEY)).unwrap();
        assert_eq!(alias.as_str(), "alias/payments");
        assert_eq!(key_id.as_str(), KEY);
        // Ids are normalised to lower case, as everywhere else.
        let (_, upper) = alias_entry(Some("alias/p"), Some(&KEY.to_uppercase())).unwrap();
        assert_eq!(upper.as_str(), KEY);
        assert_eq!(alias_entry(Some("alias/unused"), None), None);
        assert_eq!(alias_entry(None, Some(KEY)), None);
        assert_eq!(alias_entry(Some("alias/aws/s3"), Some(KEY)), None);
        assert_eq!(alias_entry(Some("alias/bad name"), Some(KEY)), None);
        assert_eq!(
            alias_entry(
                Some("alias/mrk"),
                Some("mrk-1234abcd12ab34cd56ef1234567890ab")
            ),
            None
        );
    }

    #[test]
    fn times_round_trip_through_the_sdk_type() {
        let t = chrono::Utc
            .with_ymd_and_hms(2031, 5, 6, 7, 8, 9)
            .single()
            .unwrap();
        assert_eq!(from_aws_time(&to_aws_time(t)), Some(t));
    }
}
