//! Rotate ("Rotate HSM protected keys"): a new key for the group, taken
//! all the way to being the group's active key. Its steps, in order
//! ([`Step::ROTATE`]): generate the key in the keystore, create the KMS key
//! (or find the one created before an interruption, or take the group's
//! placeholder), import the material, move the alias, disable the previous
//! key (when the group says so), activate.

use super::super::Keyhold;
use super::StepOutcome;
use super::runner::JobRuntime;
use crate::cloud::aws::KmsKeyId;
use crate::cloud::{CloudError, CloudKms};
use crate::error::{CoreError, CoreResult};
use crate::group::KeyGroup;
use crate::job::{Checkpoint, GROUP_TAG, JOB_TAG, Job, KEY_TAG, Step};
use crate::key::{Key, KeyState};
use crate::ports::JobCommit;
use crate::schedule::next_rotation;

impl Keyhold {
    /// Runs one step of a rotation.
    pub(super) async fn run_rotation_step(
        &self,
        job: &mut Job,
        step: Step,
        group: &KeyGroup,
        kms: &dyn CloudKms,
        runtime: &JobRuntime<'_>,
    ) -> CoreResult<StepOutcome> {
        match step {
            Step::GenerateKey => self.generate_key(job, group).await,
            Step::CreateKmsKey => self.create_kms_key(job, group, kms, runtime).await,
            // A resumed rotation may find its key already holding the material.
            Step::ImportMaterial => self.import_material(job, kms, true).await,
            Step::MoveAlias => self.move_alias(job, group, kms).await,
            Step::DisablePrevious => self.disable_previous(job, group, kms).await,
            Step::Activate => self.activate(job).await,
            Step::DeleteMaterial | Step::UpdatePolicy => Err(super::not_a_step_of(job, step)),
        }
    }

    async fn generate_key(&self, job: &mut Job, group: &KeyGroup) -> CoreResult<StepOutcome> {
        // Two index lookups, not the group's keys: a group gains a key with
        // every rotation, for as long as it exists.
        let version = self
            .store
            .latest_key_version(&group.name)
            .await?
            .unwrap_or(0)
            + 1;
        // The previous key is the active one keyhold holds material for; a
        // placeholder the user created is not a previous key.
        let previous = match &group.aws.active_key_id {
            Some(active) => self
                .store
                .find_key_by_kms_id(active)
                .await?
                .filter(|k| k.group == group.name)
                .map(|_| active.clone()),
            None => None,
        };
        let id = uuid::Uuid::new_v4();
        let generated = self.keystore.generate_key(id)?;
        let now = self.now();
        let key = Key {
            id,
            group: group.name.clone(),
            version,
            kms_key_id: None,
            check_digits: generated.check_digits,
            valid_from: now,
            valid_to: group.valid_for.map(|v| now + v.as_duration()),
            state: KeyState::PreActive,
            keystore_handle: generated.handle,
            created_at: now,
        };
        job.progress.previous_kms_key_id = previous;
        job.progress.key_id = Some(id);
        let message = format!(
            "Generated AES-256 key version {version} (check digits {})",
            key.check_digits
        );
        Ok(StepOutcome {
            keys: vec![key],
            group: None,
            message,
        })
    }

    async fn create_kms_key(
        &self,
        job: &mut Job,
        group: &KeyGroup,
        kms: &dyn CloudKms,
        runtime: &JobRuntime<'_>,
    ) -> CoreResult<StepOutcome> {
        let JobRuntime { hooks, fence, .. } = *runtime;
        let mut key = self.job_key(job).await?;
        let job_tag = job.id.to_string();
        let (kms_key_id, message) = if let Some(found) =
            self.key_created_before_interruption(job, kms).await?
        {
            (
                found.clone(),
                format!(
                    "Found KMS key {found} created before the interruption (tagged with this job)"
                ),
            )
        } else if let Some(placeholder) = self.usable_placeholder(job, group, kms).await? {
            job.progress.used_placeholder = true;
            (
                placeholder.clone(),
                format!(
                    "Using the placeholder KMS key {placeholder} (Active Key ID) awaiting its first material"
                ),
            )
        } else {
            // Write before acting: the mark is committed before CreateKey is sent,
            // so a crash between CreateKey's answer and the next commit is
            // recovered by the job tag instead of creating a second key.
            job.progress.create_key_sent = true;
            hooks.reached(Checkpoint::CreateKeySent, false);
            self.store
                .commit_job(&JobCommit {
                    job,
                    keys: &[],
                    group: None,
                    message: None,
                    audit: None,
                    fence,
                })
                .await?;
            hooks.reached(Checkpoint::CreateKeySent, true);
            let tags = [
                (JOB_TAG.to_owned(), job_tag),
                (KEY_TAG.to_owned(), key.id.to_string()),
                (GROUP_TAG.to_owned(), group.name.to_string()),
            ];
            let created = kms
                .create_key(
                    group.aws.description.as_str(),
                    group.aws.policy.as_ref(),
                    &tags,
                )
                .await?;
            (
                created.clone(),
                format!(
                    "Created KMS key {created} (origin External) in {}",
                    group.aws.region
                ),
            )
        };
        key.kms_key_id = Some(kms_key_id.clone());
        key.state = KeyState::PendingImport;
        job.progress.kms_key_id = Some(kms_key_id);
        Ok(StepOutcome {
            keys: vec![key],
            group: None,
            message,
        })
    }

    async fn key_created_before_interruption(
        &self,
        job: &Job,
        kms: &dyn CloudKms,
    ) -> CoreResult<Option<KmsKeyId>> {
        if !job.progress.create_key_sent {
            return Ok(None);
        }
        let found = kms.find_keys_tagged(JOB_TAG, &job.id.to_string()).await?;
        Ok(found.into_iter().next())
    }

    /// The group's Active Key ID, when it names a KMS key the user created for
    /// imported material that still awaits its first import.
    async fn usable_placeholder(
        &self,
        job: &Job,
        group: &KeyGroup,
        kms: &dyn CloudKms,
    ) -> CoreResult<Option<KmsKeyId>> {
        let Some(active) = &group.aws.active_key_id else {
            return Ok(None);
        };
        // GenerateKey found the active key among the group's own (every
        // rotation after the first): no need to look it up again.
        if job.progress.previous_kms_key_id.as_ref() == Some(active)
            || self.store.find_key_by_kms_id(active).await?.is_some()
        {
            return Ok(None);
        }
        let info = match kms.describe_key(active).await {
            Ok(info) => info,
            Err(CloudError::NotFound { message, .. }) => {
                return Err(CoreError::Conflict(format!(
                    "the group's Active Key ID {active} does not exist in KMS in {} ({message}): correct or clear it with `keyhold group update {} --active-key-id …`",
                    group.aws.region, group.name
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if !info.external || info.state != KeyState::PendingImport {
            return Err(CoreError::Conflict(format!(
                "the group's Active Key ID {active} is not a placeholder awaiting imported material (origin {}, state {}): give a KMS key created with key material origin External, or clear it",
                if info.external { "External" } else { "AWS_KMS" },
                info.state.as_str()
            )));
        }
        Ok(Some(active.clone()))
    }

    async fn move_alias(
        &self,
        job: &mut Job,
        group: &KeyGroup,
        kms: &dyn CloudKms,
    ) -> CoreResult<StepOutcome> {
        let kms_key_id = job.progress.require_kms_key()?.clone();
        kms.point_alias(&group.aws.alias, &kms_key_id).await?;
        Ok(StepOutcome::message(format!(
            "Alias {} now points to KMS key {kms_key_id}",
            group.aws.alias
        )))
    }

    async fn disable_previous(
        &self,
        job: &mut Job,
        group: &KeyGroup,
        kms: &dyn CloudKms,
    ) -> CoreResult<StepOutcome> {
        let Some(previous) = job.progress.previous_kms_key_id.clone() else {
            return Ok(StepOutcome::message("No previous key to disable"));
        };
        if !group.aws.disable_after_rotate {
            return Ok(StepOutcome::message(format!(
                "Disable key after rotating is off: KMS key {previous} stays enabled"
            )));
        }
        let message = match kms.disable_key(&previous).await {
            Ok(()) => format!("Disabled the previous KMS key {previous}"),
            // Gone or scheduled for deletion behind keyhold's back: nothing left to disable.
            Err(
                CloudError::NotFound { message, .. } | CloudError::InvalidState { message, .. },
            ) => {
                format!(
                    "The previous KMS key {previous} could not be disabled ({message}); it is already unusable"
                )
            }
            Err(e) => return Err(e.into()),
        };
        let mut keys = Vec::new();
        if let Some(mut old) = self.store.find_key_by_kms_id(&previous).await? {
            old.state = kms
                .describe_key(&previous)
                .await
                .map(|i| i.state)
                .unwrap_or(KeyState::Disabled);
            keys.push(old);
        }
        Ok(StepOutcome {
            keys,
            group: None,
            message,
        })
    }

    async fn activate(&self, job: &mut Job) -> CoreResult<StepOutcome> {
        let mut group = self.job_group(job).await?;
        let key = self.job_key(job).await?;
        let kms_key_id = job.progress.require_kms_key()?.clone();
        let now = self.now();
        group.aws.active_key_id = Some(kms_key_id.clone());
        group.next_rotation_at = group
            .rotate_every
            .map(|every| next_rotation(now, every, group.valid_for, key.valid_to));
        group.updated_at = now;
        Ok(StepOutcome {
            keys: vec![key.clone()],
            group: Some(group),
            message: format!(
                "KMS key {kms_key_id} (version {}) is the group's active key",
                key.version
            ),
        })
    }
}
