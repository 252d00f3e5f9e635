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
    AlgorithmSpec, ExpirationModelType, ImportType, IncludeKeyMaterial,
    KeyMaterialState as AwsMaterialState, KeySpec, KeyState as AwsKeyState, KeyUsageType,
    OriginType, Tag, WrappingKeySpec as AwsWrappingKeySpec,
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
    fn times_round_trip_through_the_sdk_type() {
        let t = chrono::Utc
            .with_ymd_and_hms(2031, 5, 6, 7, 8, 9)
            .single()
            .unwrap();
        assert_eq!(from_aws_time(&to_aws_time(t)), Some(t));
    }
}
