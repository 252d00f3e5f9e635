//! [`CloudConnector`] for AWS: a paced SDK client per credential and Region.
//!
//! Clients are kept and reused, one per (credential, Region): building one
//! loads the SDK's configuration and opens a connection pool, and — more to
//! the point — the request quotas AWS enforces are per account and Region, so
//! every job reaching the same account and Region must draw on the same
//! [`KmsRateLimiter`] buckets for the pacing to mean anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use keyhold_aws::{
    AwsCredentials, AwsKms, AwsKmsSettings, KmsRateLimiter, KmsRateLimits, RateLimitedKms,
};
use keyhold_core::cloud::aws::Region;
use keyhold_core::cloud::{CloudConnector, CloudError, CloudKms};
use keyhold_core::credential::{CloudService, Credential, CredentialKind};
use secrecy::SecretString;

use crate::config::KmsConfig;

/// How failures to build a client are named in job messages.
const CONNECT: &str = "Connect";

/// A client built for one credential as it was when the client was built.
struct Connected {
    /// Compared whole on every use: a credential deleted and imported again
    /// under the same name has another id, and any change to the stored row
    /// (its sealed secret, its endpoint) means the client is stale.
    credential: Credential,
    kms: Arc<dyn CloudKms>,
}

pub struct AwsConnector {
    config: KmsConfig,
    limits: KmsRateLimits,
    clients: Mutex<HashMap<(uuid::Uuid, Region), Connected>>,
}

impl std::fmt::Debug for AwsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsConnector")
            .field("config", &self.config)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl AwsConnector {
    pub fn new(config: KmsConfig) -> Self {
        Self::with_limits(config, KmsRateLimits::default())
    }

    pub fn with_limits(config: KmsConfig, limits: KmsRateLimits) -> Self {
        Self {
            config,
            limits,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<(uuid::Uuid, Region), Connected>> {
        // The map stays consistent under a panic (single inserts and removes).
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cached(
        &self,
        key: &(uuid::Uuid, Region),
        credential: &Credential,
    ) -> Option<Arc<dyn CloudKms>> {
        let mut clients = self.clients();
        match clients.get(key) {
            Some(c) if c.credential == *credential => Some(c.kms.clone()),
            Some(_) => {
                // The credential changed since: drop the old client (and the
                // secret its SDK credentials provider holds) right away.
                clients.remove(key);
                None
            }
            None => None,
        }
    }

    /// How the SDK authenticates for `credential`. An access key needs its
    /// opened secret; the default chain needs none.
    fn credentials(
        credential: &Credential,
        secret: Option<SecretString>,
    ) -> Result<AwsCredentials, CloudError> {
        match &credential.kind {
            CredentialKind::AccessKey { access_key_id, .. } => {
                let Some(secret) = secret else {
                    return Err(CloudError::Rejected {
                        operation: CONNECT,
                        message: format!(
                            "cloud credential '{}' has no secret access key: delete it and import its CSV again",
                            credential.name
                        ),
                    });
                };
                Ok(AwsCredentials::Static {
                    access_key_id: access_key_id.as_str().to_owned(),
                    secret_access_key: secret,
                })
            }
            CredentialKind::DefaultChain { role_arn } => Ok(AwsCredentials::DefaultChain {
                assume_role_arn: role_arn.as_ref().map(|arn| arn.as_str().to_owned()),
            }),
        }
    }

    fn settings(
        &self,
        credential: &Credential,
        credentials: AwsCredentials,
        region: &Region,
    ) -> AwsKmsSettings {
        let mut settings = AwsKmsSettings::new(region.clone(), credentials);
        settings.endpoint = credential.endpoint.as_ref().map(|e| e.as_str().to_owned());
        settings.use_fips = self.config.use_fips;
        settings.wrapping_key_spec = self.config.wrapping_key_spec;
        settings.retry.max_attempts = self.config.max_attempts;
        settings.timeouts.attempt = self.config.request_timeout;
        settings.timeouts.operation = self.config.operation_timeout();
        settings
    }
}

#[async_trait]
impl CloudConnector for AwsConnector {
    fn service(&self) -> CloudService {
        CloudService::Aws
    }

    async fn connect(
        &self,
        credential: &Credential,
        secret: Option<SecretString>,
        region: &Region,
    ) -> Result<Arc<dyn CloudKms>, CloudError> {
        let key = (credential.id, region.clone());
        if let Some(kms) = self.cached(&key, credential) {
            return Ok(kms);
        }
        let credentials = Self::credentials(credential, secret)?;
        // Built without holding the lock: loading the SDK configuration may
        // read files, and other jobs should not wait on it.
        let client = AwsKms::new(self.settings(credential, credentials, region))
            .await
            .map_err(|e| CloudError::Rejected {
                operation: CONNECT,
                message: format!(
                    "cloud credential '{}' cannot be used in {region}: {}",
                    credential.name, e.message
                ),
            })?;
        let endpoint = client.endpoint().clone();

        let mut clients = self.clients();
        // Another job may have connected meanwhile: keep its client, so both
        // share one set of rate-limit buckets.
        if let Some(c) = clients.get(&key).filter(|c| c.credential == *credential) {
            return Ok(c.kms.clone());
        }
        let limiter = Arc::new(KmsRateLimiter::new(&self.limits));
        let kms: Arc<dyn CloudKms> = Arc::new(RateLimitedKms::new(
            Arc::new(client),
            limiter,
            self.config.max_attempts,
        ));
        clients.insert(
            key,
            Connected {
                credential: credential.clone(),
                kms: kms.clone(),
            },
        );
        drop(clients);
        tracing::info!(
            credential = %credential.name,
            kind = credential.kind.label(),
            access_name = credential.kind.access_name(),
            region = region.as_str(),
            ?endpoint,
            "connected to AWS KMS"
        );
        Ok(kms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_core::credential::{AccessKeyId, CloudService, Endpoint, RoleArn};
    use keyhold_core::names::CredentialName;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn credential(name: &str) -> Credential {
        Credential {
            id: uuid::Uuid::new_v4(),
            name: CredentialName::parse(name).unwrap(),
            service: CloudService::Aws,
            kind: CredentialKind::AccessKey {
                access_key_id: AccessKeyId::parse("AKIAIOSFODNN7EXAMPLE").unwrap(),
                sealed_secret: vec![1, 2, 3],
            },
            endpoint: Some(Endpoint::parse("http://127.0.0.1:4566").unwrap()),
            created_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        }
    }

    fn chain_credential(name: &str, role: Option<&str>) -> Credential {
        Credential {
            kind: CredentialKind::DefaultChain {
                role_arn: role.map(|r| RoleArn::parse(r).unwrap()),
            },
            ..credential(name)
        }
    }

    fn secret() -> Option<SecretString> {
        Some(SecretString::from(SECRET.to_owned()))
    }

    fn region(raw: &str) -> Region {
        Region::parse(raw).unwrap()
    }

    // Building a client sends nothing to AWS, so these run offline.

    #[tokio::test]
    async fn a_credential_and_region_keep_their_client() {
        let connector = AwsConnector::new(KmsConfig::default());
        let cred = credential("aws");
        let first = connector
            .connect(&cred, secret(), &region("eu-west-1"))
            .await
            .unwrap();
        // Once connected, the secret is not needed again.
        let again = connector
            .connect(&cred, None, &region("eu-west-1"))
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let elsewhere = connector
            .connect(&cred, secret(), &region("us-east-1"))
            .await
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &elsewhere));
    }

    #[tokio::test]
    async fn a_changed_credential_gets_a_new_client() {
        let connector = AwsConnector::new(KmsConfig::default());
        let cred = credential("aws");
        let first = connector
            .connect(&cred, secret(), &region("eu-west-1"))
            .await
            .unwrap();
        let mut changed = cred.clone();
        changed.endpoint = None;
        let second = connector
            .connect(&changed, secret(), &region("eu-west-1"))
            .await
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        // And the stale one is gone: the old row connects afresh, needing its secret.
        let err = connector
            .connect(&cred, None, &region("eu-west-1"))
            .await
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("has no secret access key"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn failures_name_the_credential_but_never_the_secret() {
        let connector = AwsConnector::new(KmsConfig {
            max_attempts: 0,
            ..KmsConfig::default()
        });
        let err = connector
            .connect(&credential("aws"), secret(), &region("eu-west-1"))
            .await
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(text.contains("'aws'"), "{text}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(!format!("{connector:?}").contains(SECRET));
    }

    #[test]
    fn each_kind_maps_to_its_sdk_credentials() {
        let key = AwsConnector::credentials(&credential("aws"), secret()).unwrap();
        assert!(matches!(
            key,
            AwsCredentials::Static { access_key_id, .. } if access_key_id == "AKIAIOSFODNN7EXAMPLE"
        ));
        let chain = AwsConnector::credentials(&chain_credential("chain", None), None).unwrap();
        assert!(matches!(
            chain,
            AwsCredentials::DefaultChain {
                assume_role_arn: None
            }
        ));
        let role = AwsConnector::credentials(
            &chain_credential("role", Some("arn:aws:iam::123456789012:role/keyhold")),
            None,
        )
        .unwrap();
        assert!(matches!(
            role,
            AwsCredentials::DefaultChain { assume_role_arn: Some(arn) }
                if arn == "arn:aws:iam::123456789012:role/keyhold"
        ));
    }

    #[tokio::test]
    async fn a_default_chain_credential_connects_without_a_secret() {
        let connector = AwsConnector::new(KmsConfig::default());
        let chain = chain_credential("chain", None);
        let first = connector
            .connect(&chain, None, &region("eu-west-1"))
            .await
            .unwrap();
        let again = connector
            .connect(&chain, None, &region("eu-west-1"))
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let role = chain_credential("role", Some("arn:aws:iam::123456789012:role/keyhold"));
        let assumed = connector
            .connect(&role, None, &region("eu-west-1"))
            .await
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &assumed));
    }
}
