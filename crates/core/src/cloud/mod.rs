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

/// A cloud KMS account in one region, reached with one credential. The AWS
/// adapter implements it; the rotate and synchronize steps drive it.
#[async_trait]
pub trait CloudKms: Send + Sync {
    /// The cloud this client speaks to.
    fn service(&self) -> CloudService;

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
