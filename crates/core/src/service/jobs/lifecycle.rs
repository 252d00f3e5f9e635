//! Starting a job, retrying and cancelling it, and the rule that one job
//! runs per group at a time.

use super::super::Keyhold;
use crate::action::Action;
use crate::cluster::Lease;
use crate::error::{CoreError, CoreResult, InvalidInput, StoreError};
use crate::group::KeyGroup;
use crate::identity::{Operation, Session};
use crate::job::{
    Initiator, JOB_TAG, Job, JobKind, JobMessage, JobProgress, JobStatus, Step, SyncOptions,
};
use crate::key::Key;
use crate::names::GroupName;
use crate::ports::{JobCommit, Scheduled};

/// The key of a job being cancelled.
enum GeneratedKey {
    /// Not a rotation, or none generated (or deleted since).
    None,
    /// Never reached KMS: it goes with the job.
    Removable(Key),
    /// A KMS key may hold it: it stays.
    Kept(Key),
}

impl Keyhold {
    /// Force Rotate: queues a "Rotate HSM protected keys" job for the group.
    pub async fn start_rotation(&self, session: &Session, group: &GroupName) -> CoreResult<Job> {
        self.authorize(session, Operation::ROTATE_GROUP).await?;
        let group = self.find_group(group).await?;
        let initiator = Initiator::Officers(session.users());
        let record = self.record_for(
            session,
            Action::RotateGroup(group.name.as_str()).succeeded(),
        );
        self.insert_rotation_recorded(&initiator, &group, None, record)
            .await
    }

    /// Queues a rotation on behalf of `initiator`.
    pub async fn queue_rotation(
        &self,
        initiator: &Initiator,
        group: &GroupName,
    ) -> CoreResult<Job> {
        let group = self.find_group(group).await?;
        self.insert_rotation(initiator, &group, None).await
    }

    /// Inserts the rotation job, with the group's new schedule when the
    /// scheduler started it (one transaction).
    pub(in crate::service) async fn insert_rotation(
        &self,
        initiator: &Initiator,
        group: &KeyGroup,
        schedule: Option<Scheduled<'_>>,
    ) -> CoreResult<Job> {
        let record = self.record(
            initiator.users(),
            Action::RotateGroup(group.name.as_str()).succeeded(),
        );
        self.insert_rotation_recorded(initiator, group, schedule, record)
            .await
    }

    /// [`Self::insert_rotation`] with the audit record made by the caller
    /// (one that may execute an approved request); the job's id is added to
    /// its details.
    async fn insert_rotation_recorded(
        &self,
        initiator: &Initiator,
        group: &KeyGroup,
        schedule: Option<Scheduled<'_>>,
        record: crate::audit::AuditRecord,
    ) -> CoreResult<Job> {
        self.refuse_concurrent_job(&group.name).await?;
        let steps = self.rotation_steps(group).await?;
        let job = self.new_job(
            initiator.clone(),
            JobKind::Rotate {
                group: group.name.clone(),
            },
            JobProgress::new(steps),
        );
        let record = record.with_details(serde_json::json!({ "job": job.id }));
        self.insert_job(&job, schedule, &record, &group.name)
            .await?;
        Ok(job)
    }

    /// Cloud → Synchronize: queues a "Synchronize HSM protected keys" job for a key.
    pub async fn start_synchronization(
        &self,
        session: &Session,
        key_name: &str,
        options: SyncOptions,
    ) -> CoreResult<Job> {
        let operation = if options.delete_material {
            Operation::DELETE_KEY_MATERIAL
        } else {
            Operation::SYNC_KEY
        };
        self.authorize(session, operation).await?;
        if options.is_empty() {
            return Err(InvalidInput::new(
                "options",
                "nothing to synchronize: choose at least one of update policy, import key material, delete key material",
            )
            .into());
        }
        let key = self.find_key(key_name).await?;
        if options.import_material {
            self.require_material(&key)?;
        }
        let Some(kms_key_id) = key.kms_key_id.clone() else {
            return Err(CoreError::Conflict(format!(
                "key {} has not reached KMS yet: retry the rotation job that created it",
                key.display_name()
            )));
        };
        self.refuse_concurrent_job(&key.group).await?;
        let mut progress = JobProgress::new(Step::synchronize(options));
        progress.key_id = Some(key.id);
        progress.kms_key_id = Some(kms_key_id.clone());
        let kind = JobKind::Synchronize {
            key_id: key.id,
            key_name: key.display_name(),
            group: key.group.clone(),
            options,
        };
        let job = self.new_job(Initiator::Officers(session.users()), kind, progress);
        let record = self
            .record_for(
                session,
                Action::SynchronizeKey(kms_key_id.as_str()).succeeded(),
            )
            .with_details(serde_json::json!({
                "job": job.id,
                "update_policy": options.update_policy,
                "import_material": options.import_material,
                "delete_material": options.delete_material,
            }));
        self.insert_job(&job, None, &record, &key.group).await?;
        Ok(job)
    }

    pub async fn list_jobs(&self, session: &Session, limit: u32) -> CoreResult<Vec<Job>> {
        session.authorize(Operation::READ, true)?;
        Ok(self.store.list_jobs(limit).await?)
    }

    pub async fn get_job(
        &self,
        session: &Session,
        id: uuid::Uuid,
    ) -> CoreResult<(Job, Vec<JobMessage>)> {
        session.authorize(Operation::READ, true)?;
        let job = self.find_job(id).await?;
        let messages = self.store.job_messages(id).await?;
        Ok((job, messages))
    }

    /// Queues a failed job again; it resumes after its last committed step.
    pub async fn retry_job(&self, session: &Session, id: uuid::Uuid) -> CoreResult<Job> {
        self.change_job_status(session, id, JobStatus::Queued).await
    }

    /// Cancels a job that is not running. A cancelled rotation whose key
    /// never reached KMS (CreateKey not sent, no KMS key recorded) takes
    /// the key with it: from keyhold's records in the same transaction as
    /// the status, then from the keystore. One that may have created a KMS
    /// key leaves its key listed, so nothing in KMS goes unaccounted for;
    /// the job's message and the key's listing say what to check.
    pub async fn cancel_job(&self, session: &Session, id: uuid::Uuid) -> CoreResult<Job> {
        self.change_job_status(session, id, JobStatus::Cancelled)
            .await
    }

    /// Retry (a failed job → queued) or cancel (a queued or failed job →
    /// cancelled), recorded in the job's messages and the audit log.
    async fn change_job_status(
        &self,
        session: &Session,
        id: uuid::Uuid,
        to: JobStatus,
    ) -> CoreResult<Job> {
        self.authorize(session, Operation::ROTATE_GROUP).await?;
        let job = self.find_job(id).await?;
        // Retry and cancel come from an officer on any node; the job is not
        // running (checked below), so no lease fences it.
        self.set_job_status(job, to, &session.users(), None).await
    }

    /// Retry or cancel on behalf of `users` (an officer, or the scheduler).
    pub(in crate::service) async fn set_job_status(
        &self,
        mut job: Job,
        to: JobStatus,
        users: &str,
        fence: Option<&Lease>,
    ) -> CoreResult<Job> {
        let id = job.id;
        let (allowed, verb, rule) = match to {
            JobStatus::Queued => (
                job.status == JobStatus::Failed,
                "Retried",
                "only a failed job can be retried",
            ),
            _ => (
                matches!(job.status, JobStatus::Queued | JobStatus::Failed),
                "Cancelled",
                "only a queued or failed job can be cancelled",
            ),
        };
        if !allowed {
            return Err(CoreError::Conflict(format!(
                "job {id} is {}: {rule}",
                job.status.as_str()
            )));
        }
        let from = job.status;
        let generated = match to {
            JobStatus::Cancelled => self.generated_key(&job).await?,
            _ => GeneratedKey::None,
        };
        job.status = to;
        job.error = None;
        job.finished_at = (to == JobStatus::Cancelled).then(|| self.now());
        let mut text = format!("{verb} by {users}");
        match &generated {
            GeneratedKey::None => {}
            GeneratedKey::Removable(key) => text.push_str(&format!(
                ". Removed its key {} (version {}, check digits {}) from keyhold and the keystore: it never reached KMS",
                key.display_name(),
                key.version,
                key.check_digits
            )),
            GeneratedKey::Kept(key) => match key.kms_key_id.as_ref().or(job.progress.kms_key_id.as_ref()) {
                Some(kms) if key.rotated_in => text.push_str(&format!(
                    ". Its key {} (version {}) stays listed: its material was sent to KMS key {kms} as new material, where it may wait pending rotation: the group's next rotation in place is refused until that material is made current or removed in AWS",
                    key.display_name(),
                    key.version
                )),
                Some(kms) => text.push_str(&format!(
                    ". Its key {} (version {}) stays listed: KMS key {kms} was created for it",
                    key.display_name(),
                    key.version
                )),
                None => text.push_str(&format!(
                    ". Its key {} stays listed: CreateKey was sent, so a KMS key tagged {JOB_TAG}={id} may exist in AWS. Check AWS, then delete the key",
                    key.display_name()
                )),
            },
        }
        let message = self.message(&job, text);
        let removed = match &generated {
            GeneratedKey::Removable(key) => Some(key),
            _ => None,
        };
        let removed_name = removed.map(Key::display_name);
        let (shown_id, title) = (job.id.to_string(), Some(job.kind.title()));
        let action = match to {
            JobStatus::Queued => Action::RetryJob {
                id: &shown_id,
                title,
            },
            _ => Action::CancelJob {
                id: &shown_id,
                title,
                removed_key: removed_name.as_deref(),
            },
        };
        let mut record = self.record(users, action.succeeded());
        if let Some(key) = removed {
            record = record.with_details(serde_json::json!({
                "removed_key": {
                    "id": key.id,
                    "group": key.group.as_str(),
                    "version": key.version,
                    "check_digits": key.check_digits.as_str(),
                }
            }));
        }
        // Only from the status (and attempt) just checked: of parallel
        // retries or cancels one moves the job, and none writes back what
        // it read over the runner's progress. The key goes in the same
        // transaction, so only the cancel that wins removes it, and a crash
        // leaves either both or neither.
        match self
            .store
            .change_job_status(&job, from, &message, &record, fence, removed.map(|k| k.id))
            .await
        {
            Ok(true) => {
                if let Some(key) = removed {
                    self.remove_material(&job, key).await?;
                }
                Ok(job)
            }
            Ok(false) => {
                let current = self.find_job(id).await?;
                Err(CoreError::Conflict(format!(
                    "job {id} is {} now (it changed meanwhile): {rule}",
                    current.status.as_str()
                )))
            }
            // A retry while another job of the group is unfinished: the
            // unique index refuses it.
            Err(StoreError::Duplicate) => Err(self.concurrent_job_refusal(job.kind.group()).await),
            Err(e) => Err(e.into()),
        }
    }

    /// The key a rotation being cancelled generated, and whether it may go:
    /// only when no KMS key can hold it. Once the "CreateKey sent" mark is
    /// committed KMS may have created a key tagged with the job (its answer
    /// may have been lost), so the key stays for an officer to account for.
    async fn generated_key(&self, job: &Job) -> CoreResult<GeneratedKey> {
        let (JobKind::Rotate { .. }, Some(id)) = (&job.kind, job.progress.key_id) else {
            return Ok(GeneratedKey::None);
        };
        let Some(key) = self.store.get_key(id).await? else {
            // Deleted by an officer already, material and all.
            return Ok(GeneratedKey::None);
        };
        // A version rotated in place belongs to its KMS key from the start:
        // it reached KMS once its import may have been sent.
        let reached_kms = if key.rotated_in {
            job.progress.new_material_sent || key.kms_material_id.is_some()
        } else {
            job.progress.create_key_sent
                || job.progress.kms_key_id.is_some()
                || job.progress.is_done(Step::CreateKmsKey)
                || key.kms_key_id.is_some()
        };
        Ok(if reached_kms {
            GeneratedKey::Kept(key)
        } else {
            GeneratedKey::Removable(key)
        })
    }

    /// Destroys a removed key's material, after its record is gone: a
    /// keystore that fails now leaves an object nothing refers to (unusable
    /// without its record, and never in KMS), which the job's messages
    /// name so it can be destroyed on the token. Deleting twice is harmless.
    async fn remove_material(&self, job: &Job, key: &Key) -> CoreResult<()> {
        let Err(error) = self.keystore.delete_key(key.id, &key.keystore_handle) else {
            return Ok(());
        };
        let message = self.message(
            job,
            format!(
                "The keystore did not destroy the material of the removed key {} ({error}): it is held under keyhold key id {}, which no record names any more; destroy it on the token",
                key.display_name(),
                key.id
            ),
        );
        self.store
            .commit_job(&JobCommit {
                job,
                keys: &[],
                group: None,
                messages: std::slice::from_ref(&message),
                audit: None,
                drift: None,
                fence: None,
            })
            .await?;
        Ok(())
    }

    /// Jobs a (re)started node must run: queued, and running when it stopped.
    pub async fn unfinished_jobs(&self) -> CoreResult<Vec<Job>> {
        Ok(self.store.unfinished_jobs().await?)
    }

    pub(in crate::service) fn new_job(
        &self,
        initiator: Initiator,
        kind: JobKind,
        progress: JobProgress,
    ) -> Job {
        Job {
            id: uuid::Uuid::new_v4(),
            kind,
            status: JobStatus::Queued,
            initiator,
            created_at: self.now(),
            started_at: None,
            finished_at: None,
            progress,
            error: None,
            attempts: 0,
        }
    }

    /// Inserts a job. The check before it is only a courtesy: the database's
    /// unique index on the unfinished jobs of a group is the rule, and a job
    /// that a parallel request inserted first is refused with the same words.
    pub(in crate::service) async fn insert_job(
        &self,
        job: &Job,
        schedule: Option<Scheduled<'_>>,
        record: &crate::audit::AuditRecord,
        group: &GroupName,
    ) -> CoreResult<()> {
        match self.store.insert_job(job, schedule, record).await {
            Err(StoreError::Duplicate) => Err(self.concurrent_job_refusal(group).await),
            other => Ok(other?),
        }
    }

    /// The refusal of a job that found another one of its group unfinished.
    pub(in crate::service) async fn concurrent_job_refusal(&self, group: &GroupName) -> CoreError {
        match self.refuse_concurrent_job(group).await {
            Err(refusal) => refusal,
            // It finished in between: the caller may simply try again.
            Ok(()) => CoreError::Conflict(format!(
                "another job was already unfinished for key group '{group}': wait for it to finish, or cancel it"
            )),
        }
    }

    /// One job per group at a time; and a failed rotation must be retried or
    /// cancelled before another starts, so the key it generated (and maybe
    /// created in KMS) is never silently left behind.
    pub(in crate::service) async fn refuse_concurrent_job(
        &self,
        group: &GroupName,
    ) -> CoreResult<()> {
        if let Some(job) = self.store.unfinished_group_job(group).await? {
            return Err(CoreError::Conflict(format!(
                "job {} ({}) is already {} for key group '{group}': wait for it to finish, or cancel it",
                job.id,
                job.kind.title(),
                job.status.as_str()
            )));
        }
        let latest_rotation = self.latest_rotation(group).await?;
        match latest_rotation {
            Some(job) if job.status == JobStatus::Failed => Err(CoreError::Conflict(format!(
                "the last rotation of key group '{group}' (job {id}) failed: retry it with `keyhold job retry {id}` or cancel it with `keyhold job cancel {id}` first",
                id = job.id
            ))),
            _ => Ok(()),
        }
    }

    /// The group's newest rotation job.
    pub(in crate::service) async fn latest_rotation(
        &self,
        group: &GroupName,
    ) -> CoreResult<Option<Job>> {
        Ok(self.store.latest_rotation(group).await?)
    }
}
