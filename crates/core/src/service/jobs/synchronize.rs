//! Synchronize ("Synchronize HSM protected keys"): one key's KMS key put
//! back in line with keyhold. Its steps are the options chosen, in the
//! order [`Step::synchronize`] gives: delete the imported material, import
//! it again, put the group's key policy.

use super::super::Keyhold;
use super::StepOutcome;
use super::import::KmsKeyBefore;
use super::runner::JobRuntime;
use crate::cloud::{CloudError, CloudKms};
use crate::error::CoreResult;
use crate::group::KeyGroup;
use crate::job::{Job, Step};
use crate::key::KeyState;

impl Keyhold {
    /// Runs one step of a synchronization.
    pub(super) async fn run_synchronization_step(
        &self,
        job: &mut Job,
        step: Step,
        group: &KeyGroup,
        kms: &dyn CloudKms,
        _runtime: &JobRuntime<'_>,
    ) -> CoreResult<StepOutcome> {
        match step {
            Step::DeleteMaterial => self.delete_material(job, kms).await,
            // Synchronize imports whatever KMS holds: the user asked for it.
            Step::ImportMaterial => {
                let key = self.job_key(job).await?;
                self.import_material(job, key, kms, KmsKeyBefore::Unknown)
                    .await
            }
            Step::UpdatePolicy => self.update_policy(job, group, kms).await,
            Step::GenerateKey
            | Step::CreateKmsKey
            | Step::MoveAlias
            | Step::DisablePrevious
            | Step::Activate
            | Step::ImportNewMaterial
            | Step::MakeMaterialCurrent
            | Step::CheckDrift
            | Step::Repair(_)
            | Step::Recheck => Err(super::not_a_step_of(job, step)),
        }
    }

    async fn delete_material(&self, job: &mut Job, kms: &dyn CloudKms) -> CoreResult<StepOutcome> {
        let mut key = self.job_key(job).await?;
        let kms_key_id = job.progress.require_kms_key()?.clone();
        let info = kms.describe_key(&kms_key_id).await?;
        // A version that shares its KMS key deletes its own material only
        // (and the KMS key is then unusable until it is back); a key alone
        // in its KMS key has nothing left to delete once it is pending import.
        let shares = self.store.keys_in_kms_key(&kms_key_id).await?.len() > 1;
        let message = if info.state == KeyState::PendingImport && !shares {
            format!("KMS key {kms_key_id} holds no material already")
        } else {
            let material = key.kms_material_id.as_ref().filter(|_| shares);
            match kms
                .delete_imported_key_material(&kms_key_id, material)
                .await
            {
                Ok(()) => {}
                // Deleted already (a resumed job, or behind keyhold's back).
                Err(CloudError::InvalidState { .. }) if info.state == KeyState::PendingImport => {}
                Err(e) => return Err(e.into()),
            }
            match material {
                Some(id) => format!(
                    "Deleted the imported key material of KMS key {kms_key_id} for version {} (material {id}); the KMS key is pending import until it is imported again",
                    key.version
                ),
                None => format!(
                    "Deleted the imported key material of KMS key {kms_key_id}; it is pending import"
                ),
            }
        };
        // Committed with this step: the import that follows disables the
        // key again once KMS has enabled it.
        if key.state == KeyState::Disabled {
            job.progress.keep_disabled = true;
        }
        key.state = KeyState::PendingImport;
        Ok(StepOutcome {
            drift: None,
            audit: None,
            keys: vec![key],
            group: None,
            message,
        })
    }

    async fn update_policy(
        &self,
        job: &mut Job,
        group: &KeyGroup,
        kms: &dyn CloudKms,
    ) -> CoreResult<StepOutcome> {
        let kms_key_id = job.progress.require_kms_key()?.clone();
        let Some(policy) = &group.aws.policy else {
            return Ok(StepOutcome::message(format!(
                "Key group {} has no policy: nothing to put",
                group.name
            )));
        };
        kms.put_key_policy(&kms_key_id, policy).await?;
        let mut keys = Vec::new();
        if let Ok(info) = kms.describe_key(&kms_key_id).await {
            let mut key = self.job_key(job).await?;
            key.state = info.state;
            keys.push(key);
        }
        Ok(StepOutcome {
            drift: None,
            audit: None,
            keys,
            group: None,
            message: format!("Put the key group's policy on KMS key {kms_key_id}"),
        })
    }
}
