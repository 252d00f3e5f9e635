//! The cloud KMS keyhold keeps keys in: the port ([`CloudKms`], opened by a
//! [`CloudConnector`]), what it answers, and how it fails.
//!
//! Rules: the port is the only way the core reaches a cloud; each adapter
//! says which [`CloudService`] it speaks for; a target's own vocabulary
//! (names, identifiers, limits) lives in its own module ([`aws`]), which is
//! where a second target (Azure Key Vault, Google Cloud KMS) goes. The
//! signatures speak AWS's identifiers today, since AWS is the only target.

pub mod aws;
pub mod error;
pub mod wrapping;

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::credential::{CloudService, Credential};
use crate::key::KeyState;
use aws::{Alias, KeyMaterialId, KeyPolicy, KmsKeyId, Region};

pub use error::CloudError;
pub use wrapping::WrappingAlgorithm;

/// The state of a KMS key as the cloud reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudKeyInfo {
    pub key_id: KmsKeyId,
    pub state: KeyState,
    /// True for `Origin=EXTERNAL` (imported material).
    pub external: bool,
    pub valid_to: Option<Timestamp>,
    /// The material KMS encrypts with (`CurrentKeyMaterialId`), when the
    /// cloud names it.
    pub current_material: Option<KeyMaterialId>,
    /// When AWS deletes the key, while it is pending deletion.
    pub deletion_date: Option<Timestamp>,
}

/// One material of a KMS key, as `ListKeyRotations` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudMaterial {
    pub id: KeyMaterialId,
    /// What the import that brought it said of it (`KeyMaterialDescription`).
    pub description: Option<String>,
    pub state: crate::key::MaterialState,
    /// False once the material was deleted (or expired): AWS lists it
    /// pending import until it is imported again.
    pub imported: bool,
}

/// Which material an import brings into a KMS key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaterialImport<'a> {
    /// The key's first material, or one it holds already, re-imported
    /// (`EXISTING_KEY_MATERIAL`): named when keyhold knows its id, so KMS
    /// checks it is that one.
    Existing(Option<&'a KeyMaterialId>),
    /// New material for an on-demand rotation (`NEW_KEY_MATERIAL`): pending
    /// rotation until [`CloudKms::rotate_key_on_demand`].
    New { description: &'a str },
}

/// Import parameters from KMS: a wrapping public key and a token valid 24 hours.
#[derive(Clone)]
pub struct ImportParameters {
    pub public_key_der: Vec<u8>,
    pub import_token: Vec<u8>,
    pub valid_until: Option<Timestamp>,
    pub algorithm: WrappingAlgorithm,
}

impl std::fmt::Debug for ImportParameters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportParameters")
            .field("algorithm", &self.algorithm)
            .field("valid_until", &self.valid_until)
            .finish_non_exhaustive()
    }
}

/// Opens a [`CloudKms`] for a credential in a region (the AWS adapter, with
/// its rate limits). The secret arrives opened by the keystore and is dropped
/// (zeroized) as soon as the client holds it.
#[async_trait]
pub trait CloudConnector: Send + Sync {
    /// The cloud this connector reaches; a credential for another is refused.
    fn service(&self) -> CloudService;

    async fn connect(
        &self,
        credential: &Credential,
        secret: Option<secrecy::SecretString>,
        region: &Region,
    ) -> Result<std::sync::Arc<dyn CloudKms>, CloudError>;
}

/// What client-side pacing cost one job run's requests, since it was last
/// taken ([`CloudKms::take_pacing`]): per operation, how long requests
/// waited for their turn under the request quotas and how many the cloud
/// throttled all the same.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PacingReport {
    /// Whose quotas these are, as people know them ("AWS KMS").
    pub quotas_of: &'static str,
    /// Operations that waited or were throttled, in the order they first did.
    pub operations: Vec<OperationPacing>,
}

/// One operation's part of a [`PacingReport`].
#[derive(Clone, Debug, PartialEq)]
pub struct OperationPacing {
    /// The cloud's name of the operation (`GetParametersForImport`).
    pub operation: &'static str,
    /// The most requests per second it is paced at (its quota, or the
    /// share of it keyhold allows itself).
    pub paced_at_per_second: f64,
    pub waited: std::time::Duration,
    pub throttled: u32,
}

impl PacingReport {
    /// Waits shorter than this, in all, go unmentioned in a job's messages:
    /// a request or two queued behind another is not worth a remark.
    pub const WORTH_TELLING: std::time::Duration = std::time::Duration::from_millis(100);
    /// An operation's part of a wait worth telling is named when it is at
    /// least this (it shows as 0.1 s).
    const WORTH_NAMING: std::time::Duration = std::time::Duration::from_millis(50);

    pub fn waited(&self) -> std::time::Duration {
        self.operations.iter().map(|o| o.waited).sum()
    }

    pub fn throttled(&self) -> u32 {
        self.operations.iter().map(|o| o.throttled).sum()
    }

    /// The remark a job step's message carries when pacing held the step
    /// back noticeably, or the cloud throttled any of its requests:
    /// `(held back 2.1 s by the AWS KMS request quota for
    /// GetParametersForImport, 1/s for credential 'prod'; AWS KMS throttled
    /// 1 request and keyhold's pacing slowed down)`.
    pub fn note(&self, credential: &crate::names::CredentialName) -> Option<String> {
        let waited = self.waited();
        let throttled = self.throttled();
        let held_back = waited >= Self::WORTH_TELLING;
        if !held_back && throttled == 0 {
            return None;
        }
        let mut parts = Vec::new();
        if held_back {
            // Operations that waited a few milliseconds alongside the one
            // that held the step back are not worth naming; one is named
            // at least (the longest) when only small waits add up.
            let mut waiting: Vec<&OperationPacing> = self
                .operations
                .iter()
                .filter(|o| o.waited >= Self::WORTH_NAMING)
                .collect();
            if waiting.is_empty() {
                waiting.extend(self.operations.iter().max_by_key(|o| o.waited));
            }
            parts.push(match waiting.as_slice() {
                [only] => format!(
                    "held back {} by the {} request quota for {}, {}/s for credential '{credential}'",
                    seconds(waited),
                    self.quotas_of,
                    only.operation,
                    per_second(only.paced_at_per_second)
                ),
                many => format!(
                    "held back {} by the {} request quotas for credential '{credential}': {}",
                    seconds(waited),
                    self.quotas_of,
                    many.iter()
                        .map(|o| format!(
                            "{} {} at {}/s",
                            o.operation,
                            seconds(o.waited),
                            per_second(o.paced_at_per_second)
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        if throttled > 0 {
            let requests = if throttled == 1 {
                "request"
            } else {
                "requests"
            };
            let whose = if held_back {
                String::new()
            } else {
                format!(" for credential '{credential}'")
            };
            parts.push(format!(
                "{} throttled {throttled} {requests}{whose} and keyhold's pacing slowed down",
                self.quotas_of
            ));
        }
        Some(format!("({})", parts.join("; ")))
    }
}

/// `2.1 s`: a tenth of a second is as fine as a reader of a job cares.
fn seconds(d: std::time::Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// `1`, `0.25`, `12.5`: a rate as the configuration writes it.
fn per_second(rate: f64) -> String {
    let text = format!("{rate:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A cloud KMS account in one region, reached with one credential. The AWS
/// adapter implements it; the rotate and synchronize steps drive it.
#[async_trait]
pub trait CloudKms: Send + Sync {
    /// The cloud this client speaks to.
    fn service(&self) -> CloudService;

    /// What pacing cost this client's requests since the last call, for a
    /// job's messages; `None` when the client does not pace (or nothing
    /// happened). Each job run gets a client of its own, so what one run
    /// reads is its own requests' waits.
    fn take_pacing(&self) -> Option<PacingReport> {
        None
    }

    async fn create_key(
        &self,
        description: &str,
        policy: Option<&KeyPolicy>,
        tags: &[(String, String)],
    ) -> Result<KmsKeyId, CloudError>;
    async fn describe_key(&self, key_id: &KmsKeyId) -> Result<CloudKeyInfo, CloudError>;
    async fn get_parameters_for_import(
        &self,
        key_id: &KmsKeyId,
        algorithm: WrappingAlgorithm,
    ) -> Result<ImportParameters, CloudError>;
    /// Answers the material's id when the cloud names it.
    async fn import_key_material(
        &self,
        key_id: &KmsKeyId,
        import_token: &[u8],
        encrypted_material: &[u8],
        valid_to: Option<Timestamp>,
        import: MaterialImport<'_>,
    ) -> Result<Option<KeyMaterialId>, CloudError>;
    /// Deletes one material (the current one when `None`); the KMS key
    /// cannot be used until it is imported again.
    async fn delete_imported_key_material(
        &self,
        key_id: &KmsKeyId,
        material: Option<&KeyMaterialId>,
    ) -> Result<(), CloudError>;
    /// Makes the material pending rotation current (`RotateKeyOnDemand`).
    async fn rotate_key_on_demand(&self, key_id: &KmsKeyId) -> Result<(), CloudError>;
    /// Every material the KMS key holds, the one pending rotation included
    /// (`ListKeyRotations` with `IncludeKeyMaterial=ALL_KEY_MATERIAL`).
    async fn list_key_materials(&self, key_id: &KmsKeyId)
    -> Result<Vec<CloudMaterial>, CloudError>;
    /// Creates the alias, or moves it when it exists.
    async fn point_alias(&self, alias: &Alias, key_id: &KmsKeyId) -> Result<(), CloudError>;
    async fn disable_key(&self, key_id: &KmsKeyId) -> Result<(), CloudError>;
    async fn put_key_policy(&self, key_id: &KmsKeyId, policy: &KeyPolicy)
    -> Result<(), CloudError>;
    /// KMS keys carrying tag `key` = `value` (finds a key created just before a crash).
    async fn find_keys_tagged(&self, key: &str, value: &str) -> Result<Vec<KmsKeyId>, CloudError>;

    // Drift checks and their repairs.
    /// The key's policy (the one named `default`, the only one KMS has).
    async fn get_key_policy(&self, key_id: &KmsKeyId) -> Result<KeyPolicy, CloudError>;
    /// Every alias of the region that points at a key, with that key
    /// (AWS's own `alias/aws/…` left out): one listing per check.
    async fn list_aliases(&self) -> Result<Vec<(Alias, KmsKeyId)>, CloudError>;
    /// Every KMS key of the region (`ListKeys`), Multi-Region keys left out.
    async fn list_key_ids(&self) -> Result<Vec<KmsKeyId>, CloudError>;
    /// The key's tags, in the order AWS lists them.
    async fn list_tags(&self, key_id: &KmsKeyId) -> Result<Vec<(String, String)>, CloudError>;
    /// Adds or overwrites these tags (`TagResource`).
    async fn tag_key(&self, key_id: &KmsKeyId, tags: &[(String, String)])
    -> Result<(), CloudError>;
    async fn enable_key(&self, key_id: &KmsKeyId) -> Result<(), CloudError>;
    /// Cancels a scheduled deletion; AWS leaves the key disabled.
    async fn cancel_key_deletion(&self, key_id: &KmsKeyId) -> Result<(), CloudError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::CredentialName;
    use std::time::Duration;

    fn op(operation: &'static str, rate: f64, waited_ms: u64, throttled: u32) -> OperationPacing {
        OperationPacing {
            operation,
            paced_at_per_second: rate,
            waited: Duration::from_millis(waited_ms),
            throttled,
        }
    }

    fn note(operations: Vec<OperationPacing>) -> Option<String> {
        PacingReport {
            quotas_of: "AWS KMS",
            operations,
        }
        .note(&CredentialName::parse("prod").unwrap())
    }

    #[test]
    fn a_noticeable_wait_is_told_with_its_operation_quota_and_credential() {
        assert_eq!(
            note(vec![op("GetParametersForImport", 1.0, 2100, 0)]).as_deref(),
            Some(
                "(held back 2.1 s by the AWS KMS request quota for GetParametersForImport, 1/s for credential 'prod')"
            )
        );
        assert_eq!(
            note(vec![
                op("GetParametersForImport", 0.25, 2100, 1),
                op("CreateKey", 5.0, 300, 0),
            ])
            .as_deref(),
            Some(
                "(held back 2.4 s by the AWS KMS request quotas for credential 'prod': GetParametersForImport 2.1 s at 0.25/s, CreateKey 0.3 s at 5/s; AWS KMS throttled 1 request and keyhold's pacing slowed down)"
            )
        );
    }

    #[test]
    fn small_waits_that_add_up_name_the_longest() {
        assert_eq!(
            note(vec![
                op("CreateKey", 5.0, 40, 0),
                op("PutKeyPolicy", 15.0, 45, 0),
                op("DisableKey", 5.0, 30, 0)
            ])
            .as_deref(),
            Some(
                "(held back 0.1 s by the AWS KMS request quota for PutKeyPolicy, 15/s for credential 'prod')"
            )
        );
    }

    #[test]
    fn throttles_are_always_told_and_short_waits_never() {
        assert_eq!(note(vec![]), None);
        assert_eq!(note(vec![op("CreateKey", 5.0, 99, 0)]), None);
        assert_eq!(
            note(vec![op("DisableKey", 12.5, 20, 2)]).as_deref(),
            Some(
                "(AWS KMS throttled 2 requests for credential 'prod' and keyhold's pacing slowed down)"
            )
        );
        // Operations that did not wait, or hardly, are left out of the wait.
        assert_eq!(
            note(vec![
                op("CreateKey", 5.0, 0, 1),
                op("DescribeKey", 2000.0, 3, 0),
                op("ImportKeyMaterial", 15.0, 160, 0)
            ])
            .as_deref(),
            Some(
                "(held back 0.2 s by the AWS KMS request quota for ImportKeyMaterial, 15/s for credential 'prod'; AWS KMS throttled 1 request and keyhold's pacing slowed down)"
            )
        );
    }
}
