//! Import Material, the step rotate and synchronize share: the key's
//! material wrapped by the keystore under the KMS key's wrapping public key
//! and imported, with a fresh token whenever KMS finds the last one expired.

use super::super::Keyhold;
use super::StepOutcome;
use crate::clock::message_time;
use crate::cloud::aws::{KeyMaterialId, KmsKeyId};
use crate::cloud::{CloudError, CloudKms, MaterialImport, WrappingAlgorithm};
use crate::error::{CoreError, CoreResult, KeystoreError};
use crate::job::Job;
use crate::key::{Key, KeyState, MaterialState};

/// Import attempts when KMS answers that the import token expired.
const IMPORT_ATTEMPTS: u32 = 3;

/// What the import step knows of the KMS key before it acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KmsKeyBefore {
    /// Nothing: KMS is asked, and the material imported whatever the key
    /// already holds (Synchronize: the user asked for it).
    Unknown,
    /// A rotation in a run that did not see the key created: KMS is asked,
    /// and a key already enabled or disabled holds the material (imported
    /// before an interruption), so the step is done.
    MaybeImported,
    /// This run saw the key external and pending import (its CreateKey
    /// answered, or the placeholder was described): KMS is not asked again.
    AwaitingImport,
}

impl Keyhold {
    pub(super) async fn import_material(
        &self,
        job: &mut Job,
        mut key: Key,
        kms: &dyn CloudKms,
        before: KmsKeyBefore,
    ) -> CoreResult<StepOutcome> {
        // A key keyhold records as disabled (rotated out) stays disabled:
        // KMS enables a key when material is imported into it.
        let keep_disabled = key.state == KeyState::Disabled || job.progress.keep_disabled;
        let kms_key_id = job.progress.require_kms_key()?.clone();
        let state_before = if before == KmsKeyBefore::AwaitingImport {
            KeyState::PendingImport
        } else {
            let info = kms.describe_key(&kms_key_id).await?;
            if before == KmsKeyBefore::MaybeImported
                && matches!(info.state, KeyState::Enabled | KeyState::Disabled)
            {
                key.state = info.state;
                return Ok(StepOutcome {
                    drift: None,
                    audit: None,
                    keys: vec![key],
                    group: None,
                    message: format!(
                        "KMS key {kms_key_id} already holds the material (imported before an interruption)"
                    ),
                });
            }
            if !info.external {
                return Err(CoreError::Conflict(format!(
                    "KMS key {kms_key_id} does not take imported key material (its origin is not External)"
                )));
            }
            if info.state == KeyState::PendingDeletion {
                return Err(CoreError::Conflict(format!(
                    "KMS key {kms_key_id} is pending deletion in AWS: cancel the deletion in AWS first (kms cancel-key-deletion), then retry"
                )));
            }
            info.state
        };
        if key.is_expired(self.now()) {
            return Err(CoreError::Conflict(format!(
                "key {kms_key_id} expired on {}: its material cannot be imported again; rotate the group instead",
                key.valid_to.as_ref().map(message_time).unwrap_or_default()
            )));
        }
        let imported = match self
            .import_wrapped(
                &key,
                kms,
                &kms_key_id,
                MaterialImport::Existing(key.kms_material_id.as_ref()),
            )
            .await
        {
            Ok(imported) => imported,
            Err(CoreError::Cloud(CloudError::IncorrectKeyMaterial { operation, message })) => {
                return Err(CloudError::IncorrectKeyMaterial {
                    operation,
                    message: format!("{message}; keyhold holds different material than this KMS key was first given. The alias was not moved"),
                }
                .into());
            }
            Err(e) => return Err(e),
        };
        let algorithm = imported.algorithm;
        if let Some(id) = imported.material {
            key.kms_material_id = Some(id);
        }
        let disabled_again = if keep_disabled {
            kms.disable_key(&kms_key_id).await?;
            ". KMS enabled the key with the import; it is disabled in keyhold, so it was disabled again"
        } else {
            ""
        };
        // What KMS answered settles the state, except for a key that was
        // disabled before the import (KMS leaves it so or enables it, which
        // only it can say).
        key.state = match state_before {
            _ if keep_disabled => KeyState::Disabled,
            KeyState::PendingImport | KeyState::Enabled => KeyState::Enabled,
            _ => kms
                .describe_key(&kms_key_id)
                .await
                .map(|i| i.state)
                .unwrap_or(KeyState::Enabled),
        };
        job.progress.wrapping = Some(algorithm);
        let expiry = match key.valid_to {
            Some(end) => format!(", valid to {}", message_time(&end)),
            None => ", with no expiry".to_owned(),
        };
        let which = match &key.kms_material_id {
            Some(id) if key.rotated_in || key.material_state != MaterialState::Current => {
                format!(" (its material {id})")
            }
            _ => String::new(),
        };
        Ok(StepOutcome {
            drift: None,
            audit: None,
            keys: vec![key],
            group: None,
            message: format!(
                "Imported the key material into KMS key {kms_key_id}{which}, wrapped with {}{expiry}{disabled_again}",
                algorithm.aws_name()
            ),
        })
    }

    /// Wraps the key's material under fresh import parameters and imports
    /// it, fetching new parameters when KMS finds the token expired. KMS's
    /// refusals come back as they are, for the caller to explain.
    pub(super) async fn import_wrapped(
        &self,
        key: &Key,
        kms: &dyn CloudKms,
        kms_key_id: &KmsKeyId,
        import: MaterialImport<'_>,
    ) -> CoreResult<Imported> {
        let algorithm = self.wrapping_algorithm()?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let params = kms.get_parameters_for_import(kms_key_id, algorithm).await?;
            let wrapped = self.keystore.wrap_key(
                key.id,
                &key.keystore_handle,
                &params.public_key_der,
                algorithm,
            )?;
            match kms
                .import_key_material(
                    kms_key_id,
                    &params.import_token,
                    &wrapped,
                    key.valid_to,
                    import,
                )
                .await
            {
                Ok(material) => {
                    return Ok(Imported {
                        algorithm,
                        material,
                    });
                }
                // Tokens live 24 hours; a resumed job may hold a stale one.
                Err(CloudError::ExpiredImportToken { .. }) if attempts < IMPORT_ATTEMPTS => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Keyhold {
    /// The algorithm keyhold wraps material with for KMS: the keystore's
    /// first that AWS accepts.
    pub(super) fn wrapping_algorithm(&self) -> CoreResult<WrappingAlgorithm> {
        let algorithms = self.keystore.wrapping_algorithms()?;
        algorithms.first().copied().ok_or_else(|| {
            KeystoreError::Unsupported("the keystore can wrap with no algorithm AWS accepts".into())
                .into()
        })
    }
}

/// What an import answered.
pub(super) struct Imported {
    pub algorithm: WrappingAlgorithm,
    /// The material's id in the KMS key, when the cloud names it.
    pub material: Option<KeyMaterialId>,
}
