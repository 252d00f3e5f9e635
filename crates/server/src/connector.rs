//! [`CloudConnector`] for AWS: a paced SDK client per credential and Region.
//!
//! Clients are kept and reused, one per (credential, Region): building one
//! loads the SDK's configuration and opens a connection pool, and — more to
//! the point — the request quotas AWS enforces are per account and Region, so
//! every job reaching the same account and Region must draw on the same
//! [`KmsRateLimiter`] buckets for the pacing to mean anything. Each
//! connection handed out is a view of its own on that shared client and
//! limiter ([`RateLimitedKms`]), so a job run's messages tell its own waits.
//!
//! The quotas of a credential are its own (`kms_credential_quotas`), else
//! those of every credential (`kms_quotas`), else AWS's defaults.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use keyhold_aws::{
    AwsCredentials, AwsKms, AwsKmsSettings, KmsQuotas, KmsRateLimiter, KmsRateLimits,
    OperationPacingStats, RateLimitedKms,
};
use keyhold_core::cloud::aws::Region;
use keyhold_core::cloud::{CloudConnector, CloudError, CloudKms};
use keyhold_core::credential::{CloudService, Credential, CredentialKind};
use keyhold_core::names::CredentialName;
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
    /// The SDK client, shared by every view.
    client: Arc<dyn CloudKms>,
    /// The account and Region's buckets, shared by every view.
    limiter: Arc<KmsRateLimiter>,
}

/// The pacing of one credential in one Region since its client was built.
#[derive(Clone, Debug)]
pub struct CredentialPacing {
    pub credential: CredentialName,
    pub region: Region,
    pub operations: Vec<OperationPacingStats>,
}

pub struct AwsConnector {
    config: KmsConfig,
    clients: Mutex<HashMap<(uuid::Uuid, Region), Connected>>,
}

impl std::fmt::Debug for AwsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsConnector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AwsConnector {
    pub fn new(config: KmsConfig) -> Self {
        Self {
            config,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The quotas `credential`'s requests are paced under: its own over
    /// every credential's, AWS's defaults for the rest.
    fn quotas(&self, credential: &CredentialName) -> KmsQuotas {
        self.config
            .credential_quotas
            .for_credential(credential, &self.config.quotas)
    }

    /// A view of its own on a shared client and limiter, for one job run.
    fn view(&self, connected: &Connected) -> Arc<dyn CloudKms> {
        Arc::new(RateLimitedKms::new(
            connected.client.clone(),
            connected.limiter.clone(),
            self.config.max_attempts,
        ))
    }

    /// Every connected credential's pacing, for `/metrics`.
    pub fn pacing(&self) -> Vec<CredentialPacing> {
        let mut pacing: Vec<CredentialPacing> = self
            .clients()
            .iter()
            .map(|((_, region), connected)| CredentialPacing {
                credential: connected.credential.name.clone(),
                region: region.clone(),
                operations: connected.limiter.stats(),
            })
            .collect();
        pacing.sort_by(|a, b| {
            (a.credential.as_str(), a.region.as_str())
                .cmp(&(b.credential.as_str(), b.region.as_str()))
        });
        pacing
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
            Some(c) if c.credential == *credential => Some(self.view(c)),
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
            return Ok(self.view(c));
        }
        let quotas = self.quotas(&credential.name);
        let connected = Connected {
            credential: credential.clone(),
            client: Arc::new(client),
            limiter: Arc::new(KmsRateLimiter::new(&KmsRateLimits::from_quotas(&quotas))),
        };
        let kms = self.view(&connected);
        clients.insert(key, connected);
        drop(clients);
        tracing::info!(
            credential = %credential.name,
            kind = credential.kind.label(),
            access_name = credential.kind.access_name(),
            region = region.as_str(),
            ?endpoint,
            %quotas,
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

    impl AwsConnector {
        /// The limiter a credential's client in `region` paces with.
        fn limiter_of(&self, credential: &Credential, region: &Region) -> Arc<KmsRateLimiter> {
            self.clients()
                .get(&(credential.id, region.clone()))
                .map(|c| c.limiter.clone())
                .unwrap()
        }
    }

    #[tokio::test]
    async fn a_credential_and_region_keep_their_client() {
        let connector = AwsConnector::new(KmsConfig::default());
        let cred = credential("aws");
        let first = connector
            .connect(&cred, secret(), &region("eu-west-1"))
            .await
            .unwrap();
        let limiter = connector.limiter_of(&cred, &region("eu-west-1"));
        // Once connected, the secret is not needed again; the connection
        // is another view on the same client and limiter.
        let again = connector
            .connect(&cred, None, &region("eu-west-1"))
            .await
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &again));
        assert!(Arc::ptr_eq(
            &limiter,
            &connector.limiter_of(&cred, &region("eu-west-1"))
        ));
        let _elsewhere = connector
            .connect(&cred, secret(), &region("us-east-1"))
            .await
            .unwrap();
        assert!(!Arc::ptr_eq(
            &limiter,
            &connector.limiter_of(&cred, &region("us-east-1"))
        ));
        assert_eq!(connector.clients().len(), 2);
        let pacing = connector.pacing();
        assert_eq!(pacing.len(), 2);
        assert_eq!(pacing[0].credential.as_str(), "aws");
        assert_eq!(pacing[0].region.as_str(), "eu-west-1");
        assert_eq!(pacing[1].region.as_str(), "us-east-1");
        assert!(pacing[0].operations.iter().all(|o| o.waits == 0));
    }

    #[tokio::test]
    async fn each_credential_is_paced_at_its_own_quotas_else_the_global_ones() {
        use keyhold_aws::{CredentialQuotas, KmsQuotas, Rate};
        let connector = AwsConnector::new(KmsConfig {
            quotas: KmsQuotas::parse(&["GetParametersForImport=50"]).unwrap(),
            credential_quotas: CredentialQuotas::parse(&[
                "raised:GetParametersForImport=500",
                "raised:CreateKey=20",
            ])
            .unwrap(),
            ..KmsConfig::default()
        });
        let rate_of = |name: &str, operation: &str| {
            connector
                .pacing()
                .into_iter()
                .find(|p| p.credential.as_str() == name)
                .unwrap()
                .operations
                .into_iter()
                .find(|o| o.operation == operation)
                .unwrap()
                .quota
        };
        for name in ["raised", "plain"] {
            connector
                .connect(&credential(name), secret(), &region("eu-west-1"))
                .await
                .unwrap();
        }
        assert_eq!(
            rate_of("raised", "GetParametersForImport"),
            Rate::per_second(500)
        );
        assert_eq!(rate_of("raised", "CreateKey"), Rate::per_second(20));
        assert_eq!(
            rate_of("plain", "GetParametersForImport"),
            Rate::per_second(50)
        );
        // AWS's default where neither gives one.
        assert_eq!(rate_of("plain", "CreateKey"), Rate::per_second(5));
        assert_eq!(rate_of("raised", "DisableKey"), Rate::per_second(5));
    }

    #[tokio::test]
    async fn a_changed_credential_gets_a_new_client() {
        let connector = AwsConnector::new(KmsConfig::default());
        let cred = credential("aws");
        connector
            .connect(&cred, secret(), &region("eu-west-1"))
            .await
            .unwrap();
        let first = connector.limiter_of(&cred, &region("eu-west-1"));
        let mut changed = cred.clone();
        changed.endpoint = None;
        connector
            .connect(&changed, secret(), &region("eu-west-1"))
            .await
            .unwrap();
        let second = connector.limiter_of(&changed, &region("eu-west-1"));
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
        let eu = region("eu-west-1");
        connector.connect(&chain, None, &eu).await.unwrap();
        let first = connector.limiter_of(&chain, &eu);
        connector.connect(&chain, None, &eu).await.unwrap();
        assert!(Arc::ptr_eq(&first, &connector.limiter_of(&chain, &eu)));
        let role = chain_credential("role", Some("arn:aws:iam::123456789012:role/keyhold"));
        connector.connect(&role, None, &eu).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &connector.limiter_of(&role, &eu)));
    }
}
