//! Rotate ("Rotate HSM protected keys"): a new key for the group, taken
//! all the way to being the group's active key. Two ways, chosen when the
//! job is queued (`Keyhold::rotation_steps`):
//!
//! - a new KMS key ([`Step::ROTATE`]): generate the key in the keystore,
//!   create the KMS key (or find the one created before an interruption, or
//!   take the group's placeholder), import the material, move the alias,
//!   disable the previous key (when the group says so), activate;
//! - in place ([`Step::ROTATE_IN_PLACE`]): generate the key, import it into
//!   the group's KMS key as new material, rotate that key on demand so the
//!   material is current, activate. The ARN and alias stay; KMS keeps
//!   decrypting with the earlier materials.

use super::super::Keyhold;
use super::StepOutcome;
use super::import::{Imported, KmsKeyBefore};
use super::runner::{JobRuntime, RunMemory};
use crate::cloud::aws::KmsKeyId;
use crate::cloud::{CloudError, CloudKms, MaterialImport};
use crate::error::{CoreError, CoreResult};
use crate::group::{AtRotationLimit, KeyGroup, RotationStrategy};
use crate::job::{Checkpoint, GROUP_TAG, JOB_TAG, Job, KEY_TAG, Step};
use crate::key::{Key, KeyState, MaterialState};
use crate::ports::JobCommit;
use crate::schedule::next_rotation;

/// How far a `new_material` group's KMS key is through AWS's on-demand
/// rotations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InPlaceRotations {
    /// Versions rotated into the group's active KMS key so far.
    pub used: u32,
    /// The settings' `on_demand_rotation_limit`.
    pub limit: u32,
}

impl InPlaceRotations {
    /// The count for a KMS key holding `keys` (every version in it).
    fn of(keys: &[Key], limit: u32) -> Self {
        let used = keys.iter().filter(|k| k.rotated_in).count();
        Self {
            used: u32::try_from(used).unwrap_or(u32::MAX),
            limit,
        }
    }

    /// Rotations left before the group's `at_rotation_limit` applies.
    pub fn left(self) -> u32 {
        self.limit.saturating_sub(self.used)
    }

    /// Few enough left that officers should hear of it before the limit.
    pub fn running_low(self) -> bool {
        self.left() <= 3
    }
}

impl Keyhold {
    /// The count against AWS's on-demand rotation limit of a `new_material`
    /// group's active KMS key; `None` for a group rotated by new KMS keys,
    /// or with no KMS key of keyhold's yet.
    pub async fn in_place_rotations(
        &self,
        group: &KeyGroup,
    ) -> CoreResult<Option<InPlaceRotations>> {
        if group.aws.rotation != RotationStrategy::NewMaterial {
            return Ok(None);
        }
        let Some(active) = &group.aws.active_key_id else {
            return Ok(None);
        };
        let keys = self.store.keys_in_kms_key(active).await?;
        if keys.is_empty() {
            return Ok(None);
        }
        let limit = self.store.get_settings().await?.on_demand_rotation_limit;
        Ok(Some(InPlaceRotations::of(&keys, limit)))
    }

    /// The steps of the group's next rotation: in place while its strategy
    /// is `new_material` and its KMS key may rotate again; otherwise a new
    /// KMS key, or a refusal at the limit when the group says so.
    pub(super) async fn rotation_steps(&self, group: &KeyGroup) -> CoreResult<Vec<Step>> {
        let Some(count) = self.in_place_rotations(group).await? else {
            // new_key, or the first rotation of a new_material group (which
            // creates the KMS key every later one rotates in).
            return Ok(Step::ROTATE.to_vec());
        };
        if count.left() > 0 {
            return Ok(Step::ROTATE_IN_PLACE.to_vec());
        }
        match group.aws.at_rotation_limit {
            AtRotationLimit::NewKey => Ok(Step::ROTATE.to_vec()),
            AtRotationLimit::Refuse => Err(CoreError::Conflict(format!(
                "key group '{}' has rotated KMS key {} in place {} times, the on-demand rotation limit: it is set to refuse at the limit. Set its at_rotation_limit to new_key (the next rotation then creates a new KMS key and moves the alias), or its rotation strategy to new_key",
                group.name,
                group
                    .aws
                    .active_key_id
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                count.used
            ))),
        }
    }

    /// Commits a mark set in the job's progress before an outside call that
    /// cannot be taken back (CreateKey, a new material's import): a crash
    /// after the call then finds the mark and looks for what the call made.
    async fn commit_mark(
        &self,
        job: &Job,
        mark: Checkpoint,
        runtime: &JobRuntime<'_>,
    ) -> CoreResult<()> {
        runtime.hooks.reached(mark, false);
        self.store
            .commit_job(&JobCommit {
                job,
                keys: &[],
                group: None,
                messages: &[],
                audit: None,
                drift: None,
                fence: runtime.fence,
            })
            .await?;
        runtime.hooks.reached(mark, true);
        Ok(())
    }

    /// Runs one step of a rotation.
    pub(super) async fn run_rotation_step(
        &self,
        job: &mut Job,
        step: Step,
        group: &KeyGroup,
        kms: &dyn CloudKms,
        seen: &mut RunMemory,
        runtime: &JobRuntime<'_>,
    ) -> CoreResult<StepOutcome> {
        let outcome = match step {
            Step::GenerateKey => self.generate_key(job, group, seen).await,
            Step::CreateKmsKey => self.create_kms_key(job, group, kms, seen, runtime).await,
            Step::ImportMaterial => {
                let before = match (&seen.awaiting_import, &job.progress.kms_key_id) {
                    (Some(awaiting), Some(current)) if awaiting == current => {
                        KmsKeyBefore::AwaitingImport
                    }
                    // A resumed rotation may find its key already holding the material.
                    _ => KmsKeyBefore::MaybeImported,
                };
                let key = self.rotation_key(job, seen).await?;
                self.import_material(job, key, kms, before).await
            }
            Step::MoveAlias => self.move_alias(job, group, kms).await,
            Step::DisablePrevious => self.disable_previous(job, group, kms).await,
            Step::Activate => self.activate(job, seen).await,
            Step::ImportNewMaterial => {
                self.import_new_material(job, group, kms, seen, runtime)
                    .await
            }
            Step::MakeMaterialCurrent => self.make_material_current(job, group, kms, seen).await,
            Step::DeleteMaterial
            | Step::UpdatePolicy
            | Step::CheckDrift
            | Step::Repair(_)
            | Step::Recheck => Err(super::not_a_step_of(job, step)),
        }?;
        if let Some(key) = outcome
            .keys
            .iter()
            .find(|k| Some(k.id) == job.progress.key_id)
        {
            seen.key = Some(key.clone());
        }
        Ok(outcome)
    }

    /// The rotation's key: as this run last wrote it, or read once.
    async fn rotation_key(&self, job: &Job, seen: &mut RunMemory) -> CoreResult<Key> {
        match &seen.key {
            Some(key) if Some(key.id) == job.progress.key_id => Ok(key.clone()),
            _ => {
                let key = self.job_key(job).await?;
                seen.key = Some(key.clone());
                Ok(key)
            }
        }
    }

    async fn generate_key(
        &self,
        job: &mut Job,
        group: &KeyGroup,
        seen: &mut RunMemory,
    ) -> CoreResult<StepOutcome> {
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
                .current_key_in(active)
                .await?
                .filter(|k| k.group == group.name)
                .map(|_| active.clone()),
            None => None,
        };
        // In place, the new version belongs to the active KMS key from the
        // start: a crash before its import leaves it listed there.
        let in_place = job.progress.steps.contains(&Step::ImportNewMaterial);
        let kms_key_id = match (in_place, &previous) {
            (false, _) => None,
            (true, Some(active)) => Some(active.clone()),
            (true, None) => {
                return Err(CoreError::Conflict(format!(
                    "key group '{}' has no active KMS key of keyhold's to rotate in place (was its Active Key ID changed?): retry the rotation, which then creates a KMS key",
                    group.name
                )));
            }
        };
        let id = uuid::Uuid::new_v4();
        let generated = self.keystore.generate_key(id)?;
        let now = self.now();
        let key = Key {
            id,
            group: group.name.clone(),
            version,
            kms_key_id: kms_key_id.clone(),
            check_digits: generated.check_digits,
            valid_from: now,
            valid_to: group.valid_for.map(|v| now + v.as_duration()),
            state: KeyState::PreActive,
            kms_material_id: None,
            material_state: if in_place {
                MaterialState::PendingRotation
            } else {
                MaterialState::Current
            },
            rotated_in: in_place,
            keystore_handle: generated.handle,
            created_at: now,
        };
        // The mark the next step's call needs, committed with this step when
        // that call is certain: in place the import; otherwise CreateKey,
        // unless the Active Key ID may name a placeholder to take instead
        // (it names no key of the group's), which CreateKmsKey finds out.
        let marked_ahead = if in_place {
            job.progress.new_material_sent = true;
            Some(Checkpoint::NewMaterialSent)
        } else if group.aws.active_key_id.is_none() || previous.is_some() {
            job.progress.create_key_sent = true;
            Some(Checkpoint::CreateKeySent)
        } else {
            None
        };
        seen.marked_ahead = marked_ahead;
        job.progress.previous_kms_key_id = previous;
        job.progress.key_id = Some(id);
        if in_place {
            job.progress.kms_key_id = kms_key_id;
        }
        let message = format!(
            "Generated AES-256 key version {version} (check digits {})",
            key.check_digits
        );
        Ok(StepOutcome {
            drift: None,
            audit: None,
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
        seen: &mut RunMemory,
        runtime: &JobRuntime<'_>,
    ) -> CoreResult<StepOutcome> {
        let mut key = self.rotation_key(job, seen).await?;
        let job_tag = job.id.to_string();
        // Marked ahead by this run: nothing was sent, nothing to look for.
        let marked_ahead = seen.marked_ahead.take() == Some(Checkpoint::CreateKeySent);
        let found = if marked_ahead {
            None
        } else {
            self.key_created_before_interruption(job, kms).await?
        };
        let (kms_key_id, message) = if let Some(found) = found {
            (
                found.clone(),
                format!(
                    "Found KMS key {found} created before the interruption (tagged with this job)"
                ),
            )
        } else if let Some(placeholder) = self.usable_placeholder(job, group, kms).await? {
            job.progress.used_placeholder = true;
            seen.awaiting_import = Some(placeholder.clone());
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
            if !marked_ahead {
                job.progress.create_key_sent = true;
                self.commit_mark(job, Checkpoint::CreateKeySent, runtime)
                    .await?;
            }
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
            seen.awaiting_import = Some(created.clone());
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
            drift: None,
            audit: None,
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
            || !self.store.keys_in_kms_key(active).await?.is_empty()
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
        let (message, disabled) = match kms.disable_key(&previous).await {
            Ok(()) => (format!("Disabled the previous KMS key {previous}"), true),
            // Gone or scheduled for deletion behind keyhold's back: nothing left to disable.
            Err(
                CloudError::NotFound { message, .. } | CloudError::InvalidState { message, .. },
            ) => (
                format!(
                    "The previous KMS key {previous} could not be disabled ({message}); it is already unusable"
                ),
                false,
            ),
            Err(e) => return Err(e.into()),
        };
        // Every version in the previous KMS key shares its state.
        let mut keys = self.store.keys_in_kms_key(&previous).await?;
        if !keys.is_empty() {
            // KMS answered the disable: the key is disabled. Otherwise KMS
            // says what became of it.
            let state = if disabled {
                KeyState::Disabled
            } else {
                kms.describe_key(&previous)
                    .await
                    .map(|i| i.state)
                    .unwrap_or(KeyState::Disabled)
            };
            for old in &mut keys {
                old.state = state;
            }
        }
        Ok(StepOutcome {
            drift: None,
            audit: None,
            keys,
            group: None,
            message,
        })
    }

    async fn activate(&self, job: &mut Job, seen: &mut RunMemory) -> CoreResult<StepOutcome> {
        let mut group = self.job_group(job).await?;
        let key = self.rotation_key(job, seen).await?;
        let kms_key_id = job.progress.require_kms_key()?.clone();
        let now = self.now();
        group.aws.active_key_id = Some(kms_key_id.clone());
        group.next_rotation_at = group
            .rotate_every
            .map(|every| next_rotation(now, every, group.valid_for, key.valid_to));
        group.updated_at = now;
        Ok(StepOutcome {
            drift: None,
            audit: None,
            keys: vec![key.clone()],
            group: Some(group),
            message: format!(
                "KMS key {kms_key_id} (version {}) is the group's active key",
                key.version
            ),
        })
    }

    /// In place: the version imported into the group's KMS key as new
    /// material, pending rotation. A resumed job whose import may have
    /// reached KMS first re-imports the same material as existing material:
    /// KMS accepts it (and names it) only if it holds it, so a second new
    /// material is never added; a refusal means the first import never
    /// arrived.
    async fn import_new_material(
        &self,
        job: &mut Job,
        group: &KeyGroup,
        kms: &dyn CloudKms,
        seen: &mut RunMemory,
        runtime: &JobRuntime<'_>,
    ) -> CoreResult<StepOutcome> {
        let mut key = self.rotation_key(job, seen).await?;
        let kms_key_id = job.progress.require_kms_key()?.clone();
        let description = material_description(group, &key);
        // Marked ahead by this run: nothing was sent, nothing to look for.
        let marked_ahead = seen.marked_ahead.take() == Some(Checkpoint::NewMaterialSent);
        let found = if job.progress.new_material_sent && !marked_ahead {
            self.material_sent_before(&key, kms, &kms_key_id, &description)
                .await?
        } else {
            None
        };
        let (imported, how) = match found {
            Some(imported) => (
                imported,
                "found (imported before the interruption) in KMS key",
            ),
            None => {
                // Write before acting, as before CreateKey.
                if !marked_ahead {
                    job.progress.new_material_sent = true;
                    self.commit_mark(job, Checkpoint::NewMaterialSent, runtime)
                        .await?;
                }
                let imported = self
                    .import_wrapped(
                        &key,
                        kms,
                        &kms_key_id,
                        MaterialImport::New {
                            description: &description,
                        },
                    )
                    .await
                    .map_err(|e| explain_in_place_import(e, &kms_key_id))?;
                seen.pending_rotation.clone_from(&imported.material);
                (imported, "imported as new key material into KMS key")
            }
        };
        let Some(material) = imported.material else {
            return Err(CoreError::Conflict(format!(
                "KMS did not name the material imported into KMS key {kms_key_id} (no KeyMaterialId in its answer): this KMS does not support rotating imported material in place; set the group's rotation strategy to new_key"
            )));
        };
        key.kms_material_id = Some(material.clone());
        key.material_state = MaterialState::PendingRotation;
        key.state = kms
            .describe_key(&kms_key_id)
            .await
            .map(|i| i.state)
            .unwrap_or(KeyState::Enabled);
        job.progress.wrapping = Some(imported.algorithm);
        let message = format!(
            "Version {} {how} {kms_key_id} (material {material}, wrapped with {}), pending rotation",
            key.version,
            imported.algorithm.aws_name()
        );
        Ok(StepOutcome {
            drift: None,
            audit: None,
            keys: vec![key],
            group: None,
            message,
        })
    }

    /// Whether the new material a job sent before an interruption reached
    /// KMS: the same material imported again as existing material is
    /// accepted (and named) only if the KMS key holds it, and refused as
    /// incorrect if it does not. A KMS that will not re-import material
    /// still pending rotation (LocalStack does not) is asked for its
    /// materials instead, and the one imported with this version's
    /// description is it.
    async fn material_sent_before(
        &self,
        key: &Key,
        kms: &dyn CloudKms,
        kms_key_id: &KmsKeyId,
        description: &str,
    ) -> CoreResult<Option<Imported>> {
        match self
            .import_wrapped(key, kms, kms_key_id, MaterialImport::Existing(None))
            .await
        {
            Ok(imported) => Ok(Some(imported)),
            Err(CoreError::Cloud(CloudError::IncorrectKeyMaterial { .. })) => Ok(None),
            Err(CoreError::Cloud(CloudError::InvalidState { .. })) => {
                let listed = kms.list_key_materials(kms_key_id).await?;
                let pending = listed.into_iter().find(|m| {
                    m.state == MaterialState::PendingRotation
                        && m.description.as_deref() == Some(description)
                });
                // Wrapped the way this keystore always wraps for KMS.
                let algorithm = self.wrapping_algorithm()?;
                Ok(pending.map(|m| Imported {
                    algorithm,
                    material: Some(m.id),
                }))
            }
            Err(e) => Err(e),
        }
    }

    /// In place: `RotateKeyOnDemand`, unless KMS already encrypts with the
    /// new material (rotated before an interruption). The version it
    /// replaces is recorded as non-current in the same commit. When AWS
    /// allows the KMS key no more rotations, the group's choice decides:
    /// the job goes on with a new KMS key, or fails saying why.
    async fn make_material_current(
        &self,
        job: &mut Job,
        group: &KeyGroup,
        kms: &dyn CloudKms,
        seen: &mut RunMemory,
    ) -> CoreResult<StepOutcome> {
        let mut key = self.rotation_key(job, seen).await?;
        let kms_key_id = job.progress.require_kms_key()?.clone();
        let material = key.kms_material_id.clone().ok_or_else(|| {
            CoreError::Conflict(format!(
                "version {} has no material id in KMS key {kms_key_id}: its import did not finish",
                key.version
            ))
        })?;
        // Material this run imported is still pending; after an
        // interruption KMS may have made it current already.
        let already = seen.pending_rotation.as_ref() != Some(&material)
            && kms
                .describe_key(&kms_key_id)
                .await?
                .current_material
                .as_ref()
                == Some(&material);
        if !already {
            match kms.rotate_key_on_demand(&kms_key_id).await {
                Ok(()) => {}
                Err(CloudError::LimitExceeded { message, .. }) => {
                    return self.past_the_rotation_limit(job, group, key, &kms_key_id, &message);
                }
                Err(e) => return Err(e.into()),
            }
            let after = kms.describe_key(&kms_key_id).await?;
            if after.current_material.as_ref() != Some(&material) {
                return Err(CoreError::Conflict(format!(
                    "KMS key {kms_key_id} accepted RotateKeyOnDemand but still encrypts with material {} instead of {material}: AWS may still be rotating; retry the job in a moment",
                    after
                        .current_material
                        .as_ref()
                        .map_or("(unnamed)".to_owned(), ToString::to_string)
                )));
            }
        }
        let in_kms = self.store.keys_in_kms_key(&kms_key_id).await?;
        // Officers hear of the limit before it is reached.
        let count = InPlaceRotations::of(
            &in_kms,
            self.store.get_settings().await?.on_demand_rotation_limit,
        );
        let ahead = if group.aws.rotation == RotationStrategy::NewMaterial && count.running_low() {
            format!(
                ". {} of {} on-demand rotations of this KMS key left; then {}",
                count.left(),
                count.limit,
                group.aws.at_rotation_limit.what_follows()
            )
        } else {
            String::new()
        };
        let mut keys: Vec<Key> = in_kms
            .into_iter()
            .filter(|k| k.id != key.id && k.material_state == MaterialState::Current)
            .map(|mut k| {
                k.material_state = MaterialState::NonCurrent;
                k
            })
            .collect();
        let replaced: Vec<String> = keys.iter().map(|k| format!("v{}", k.version)).collect();
        key.material_state = MaterialState::Current;
        let message = format!(
            "{} KMS key {kms_key_id} to material {material} (version {}){}{ahead}",
            if already {
                "Found already rotated:"
            } else {
                "Rotated on demand:"
            },
            key.version,
            if replaced.is_empty() {
                String::new()
            } else {
                format!("; {} still decrypts what it encrypted", replaced.join(", "))
            }
        );
        keys.push(key);
        Ok(StepOutcome {
            drift: None,
            audit: None,
            keys,
            group: None,
            message,
        })
    }

    /// AWS refused another on-demand rotation of the KMS key.
    fn past_the_rotation_limit(
        &self,
        job: &mut Job,
        group: &KeyGroup,
        mut key: Key,
        kms_key_id: &KmsKeyId,
        aws_says: &str,
    ) -> CoreResult<StepOutcome> {
        match group.aws.at_rotation_limit {
            AtRotationLimit::Refuse => Err(CoreError::Conflict(format!(
                "AWS allows KMS key {kms_key_id} no more on-demand rotations ({aws_says}); key group '{}' is set to refuse at the limit: change its at_rotation_limit to new_key and retry this job (it then moves the version into a new KMS key), or cancel it. Version {}'s material stays pending rotation in that KMS key, unused",
                group.name, key.version
            ))),
            AtRotationLimit::NewKey => {
                // The rest of a new-key rotation follows; this version leaves
                // the exhausted KMS key (its material stays there pending
                // rotation, never used: deleting it would make the whole KMS
                // key unusable).
                // Every step of a new-key rotation after GenerateKey, in
                // place of the in-place Activate that would have followed.
                let through = job
                    .progress
                    .steps
                    .iter()
                    .position(|s| *s == Step::MakeMaterialCurrent)
                    .map_or(0, |at| at + 1);
                job.progress.steps.truncate(through);
                job.progress
                    .steps
                    .extend(Step::ROTATE.into_iter().filter(|s| *s != Step::GenerateKey));
                job.progress.kms_key_id = None;
                key.kms_key_id = None;
                key.kms_material_id = None;
                key.material_state = MaterialState::Current;
                key.rotated_in = false;
                key.state = KeyState::PreActive;
                Ok(StepOutcome {
                    drift: None,
                    audit: None,
                    message: format!(
                        "AWS allows KMS key {kms_key_id} no more on-demand rotations ({aws_says}): version {} goes into a new KMS key, and the alias moves to it (the group's at_rotation_limit is new_key)",
                        key.version
                    ),
                    keys: vec![key],
                    group: None,
                })
            }
        }
    }
}

/// What AWS shows beside the material (`KeyMaterialDescription`): the
/// group, version and keyhold key it is. AWS takes at most 256 characters of
/// `[a-zA-Z0-9:/_ .-]`; anything else in a group name becomes `_`.
fn material_description(group: &KeyGroup, key: &Key) -> String {
    format!("keyhold {} v{} key {}", group.name, key.version, key.id)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ":/_ .-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(256)
        .collect()
}

/// An in-place import KMS refused, said in terms of what to do.
fn explain_in_place_import(error: CoreError, kms_key_id: &KmsKeyId) -> CoreError {
    match error {
        CoreError::Cloud(CloudError::InvalidState { message, .. }) => CoreError::Conflict(format!(
            "KMS key {kms_key_id} refused new key material ({message}). If it holds material pending rotation that keyhold did not make current (a cancelled rotation, or an import outside keyhold), make it current in AWS (kms rotate-key-on-demand) or delete it, then retry"
        )),
        other => other,
    }
}
