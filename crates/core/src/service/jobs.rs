//! Force Rotate and Synchronize: starting jobs, and running their steps.
//!
//! Every step follows the same rule: do the outside work, then commit the
//! step's result together with the job's progress. A step may therefore run
//! again after an interruption, and each is written to be harmless the
//! second time: CreateKey is preceded by a committed "sent" mark and found
//! again by its job tag; an import is skipped when KMS already holds the
//! material; moving an alias and disabling a key are idempotent in KMS.

use std::sync::Arc;

use secrecy::SecretString;

use super::Keyhold;
use crate::audit::AuditRecord;
use crate::cloud::aws::KmsKeyId;
use crate::cloud::{CloudConnector, CloudError, CloudKms};
use crate::cluster::Lease;
use crate::error::{CoreError, CoreResult, InvalidInput, KeystoreError, StoreError};
use crate::group::KeyGroup;
use crate::identity::{Operation, Session};
use crate::job::{
    Checkpoint, GROUP_TAG, JOB_TAG, Job, JobKind, JobMessage, JobProgress, JobStatus, KEY_TAG,
    Step, SyncOptions,
};
use crate::key::{Key, KeyState};
use crate::names::GroupName;
use crate::ports::{JobCommit, JobHooks, Scheduled};
use crate::schedule::next_rotation;

/// What a step produced, committed in one transaction with the job's progress.
struct StepOutcome {
    keys: Vec<Key>,
    group: Option<KeyGroup>,
    message: String,
}

impl StepOutcome {
    fn message(message: impl Into<String>) -> Self {
        Self {
            keys: Vec::new(),
            group: None,
            message: message.into(),
        }
    }
}

/// What a run of a job reads once, before its first step: the group as it
/// stood then (every step of the run works from the same settings; Activate,
/// which writes the group, reads it afresh) and its KMS connection.
struct RunContext {
    group: KeyGroup,
    kms: Arc<dyn CloudKms>,
}

/// The outside world a running job needs.
pub struct JobRuntime<'a> {
    pub connector: &'a dyn CloudConnector,
    pub hooks: &'a dyn JobHooks,
    /// The rotator lease this node runs jobs under; every commit is fenced by it.
    pub fence: Option<&'a Lease>,
}

impl Keyhold {
    /// Force Rotate: queues a "Rotate HSM protected keys" job for the group.
    pub async fn start_rotation(&self, session: &Session, group: &GroupName) -> CoreResult<Job> {
        self.authorize(session, Operation::ROTATE_GROUP).await?;
        self.queue_rotation(&session.users(), group).await
    }

    /// Queues a rotation on behalf of `users` (a session, or `System` for the scheduler).
    pub async fn queue_rotation(&self, users: &str, group: &GroupName) -> CoreResult<Job> {
        let group = self.find_group(group).await?;
        self.insert_rotation(users, &group, None).await
    }

    /// Inserts the rotation job, with the group's new schedule when the
    /// scheduler started it (one transaction).
    pub(super) async fn insert_rotation(
        &self,
        users: &str,
        group: &KeyGroup,
        schedule: Option<Scheduled<'_>>,
    ) -> CoreResult<Job> {
        self.refuse_concurrent_job(&group.name).await?;
        let job = self.new_job(
            users,
            JobKind::Rotate {
                group: group.name.clone(),
            },
            JobProgress::new(Step::ROTATE.to_vec()),
        );
        let record = self
            .record(
                users,
                format!(
                    "Started rotating keys for HSM protected key group {}",
                    group.name
                ),
            )
            .with_details(serde_json::json!({ "job": job.id }));
        self.store.insert_job(&job, schedule, &record).await?;
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
            key_name: kms_key_id.to_string(),
            group: key.group.clone(),
            options,
        };
        let job = self.new_job(&session.users(), kind, progress);
        let record = self
            .record(
                session.users(),
                format!("Started synchronizing HSM protected key {kms_key_id}"),
            )
            .with_details(serde_json::json!({
                "job": job.id,
                "update_policy": options.update_policy,
                "import_material": options.import_material,
                "delete_material": options.delete_material,
            }));
        self.store.insert_job(&job, None, &record).await?;
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

    /// Cancels a job that is not running. A cancelled rotation leaves its new
    /// key (if any) listed, so nothing created in KMS goes unaccounted for.
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
    pub(super) async fn set_job_status(
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
        job.status = to;
        job.error = None;
        job.finished_at = (to == JobStatus::Cancelled).then(|| self.now());
        let message = self.message(&job, format!("{verb} by {users}"));
        let record = self.record(
            users,
            format!("{verb} job {} ({})", job.id, job.kind.title()),
        );
        self.store
            .commit_job(&JobCommit {
                job: &job,
                keys: &[],
                group: None,
                message: Some(&message),
                audit: Some(&record),
                fence,
            })
            .await?;
        Ok(job)
    }

    /// Jobs a (re)started node must run: queued, and running when it stopped.
    pub async fn unfinished_jobs(&self) -> CoreResult<Vec<Job>> {
        Ok(self.store.unfinished_jobs().await?)
    }

    /// Runs a job to its end, resuming after its last committed step. A step
    /// that fails ends the job as failed, with the reason, and audits it.
    pub async fn run_job(&self, id: uuid::Uuid, runtime: &JobRuntime<'_>) -> CoreResult<Job> {
        let mut job = self.find_job(id).await?;
        if job.status.is_finished() {
            return Ok(job);
        }
        let opening = match (job.status, job.progress.next_step()) {
            (JobStatus::Running, Some(step)) => {
                format!("Resumed after an interruption, at: {}", step.describe())
            }
            _ => format!("Started (attempt {})", job.attempts + 1),
        };
        if job.status == JobStatus::Queued {
            job.attempts += 1;
            job.started_at.get_or_insert(self.now());
        }
        job.status = JobStatus::Running;
        let message = self.message(&job, opening);
        runtime.hooks.reached(Checkpoint::Start, false);
        self.store
            .commit_job(&JobCommit {
                job: &job,
                keys: &[],
                group: None,
                message: Some(&message),
                audit: None,
                fence: runtime.fence,
            })
            .await?;
        runtime.hooks.reached(Checkpoint::Start, true);

        let mut context = None;
        while let Some(step) = job.progress.next_step() {
            let outcome = match self
                .run_context(&job, runtime.connector, &mut context)
                .await
            {
                Ok(run) => self.run_step(&mut job, step, run, runtime).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(outcome) => self.commit_step(&mut job, step, outcome, runtime).await?,
                Err(error) => {
                    self.fail_job(&mut job, step, &error, runtime.fence).await?;
                    return Ok(job);
                }
            }
        }
        Ok(job)
    }

    async fn find_job(&self, id: uuid::Uuid) -> CoreResult<Job> {
        self.store
            .get_job(id)
            .await?
            .ok_or_else(|| CoreError::not_found("job", id))
    }

    fn new_job(&self, users: &str, kind: JobKind, progress: JobProgress) -> Job {
        Job {
            id: uuid::Uuid::new_v4(),
            kind,
            status: JobStatus::Queued,
            users: users.to_owned(),
            created_at: self.now(),
            started_at: None,
            finished_at: None,
            progress,
            error: None,
            attempts: 0,
        }
    }

    fn message(&self, job: &Job, text: impl Into<String>) -> JobMessage {
        JobMessage {
            job_id: job.id,
            time: self.now(),
            text: text.into(),
        }
    }

    /// One job per group at a time; and a failed rotation must be retried or
    /// cancelled before another starts, so the key it generated (and maybe
    /// created in KMS) is never silently left behind.
    async fn refuse_concurrent_job(&self, group: &GroupName) -> CoreResult<()> {
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
    pub(super) async fn latest_rotation(&self, group: &GroupName) -> CoreResult<Option<Job>> {
        Ok(self.store.latest_rotation(group).await?)
    }

    /// Reads the job's group and connects to its KMS once per run, with the
    /// credential's secret opened only for as long as the connection takes.
    async fn run_context<'c>(
        &self,
        job: &Job,
        connector: &dyn CloudConnector,
        cache: &'c mut Option<RunContext>,
    ) -> CoreResult<&'c RunContext> {
        if let Some(run) = cache {
            return Ok(run);
        }
        let group = self.job_group(job).await?;
        let credential = self
            .store
            .get_credential(&group.credential)
            .await?
            .ok_or_else(|| {
                CoreError::Conflict(format!(
                    "cloud credential '{}' of key group '{}' no longer exists",
                    group.credential, group.name
                ))
            })?;
        if credential.service != connector.service() {
            return Err(CoreError::Conflict(format!(
                "cloud credential '{}' is for {}, but this server connects to {}",
                credential.name,
                credential.service.as_str(),
                connector.service().as_str()
            )));
        }
        let secret = match &credential.kind {
            crate::credential::CredentialKind::AccessKey { sealed_secret, .. } => {
                let opened = self
                    .keystore
                    .open_secret(credential.id.as_bytes(), sealed_secret)?;
                let text = String::from_utf8(opened.to_vec()).map_err(|_| {
                    KeystoreError::Internal("a credential secret is not text".into())
                })?;
                Some(SecretString::from(text))
            }
            // The server's own credentials: keyhold holds no secret for them.
            crate::credential::CredentialKind::DefaultChain { .. } => None,
        };
        let kms = connector
            .connect(&credential, secret, &group.aws.region)
            .await?;
        Ok(cache.insert(RunContext { group, kms }))
    }

    async fn job_group(&self, job: &Job) -> CoreResult<KeyGroup> {
        self.store
            .get_group(job.kind.group())
            .await?
            .ok_or_else(|| {
                CoreError::Conflict(format!(
                    "key group '{}' was deleted while the job waited",
                    job.kind.group()
                ))
            })
    }

    async fn job_key(&self, job: &Job) -> CoreResult<Key> {
        let id = job
            .progress
            .key_id
            .ok_or_else(|| CoreError::Conflict("the job has no key yet".into()))?;
        self.store
            .get_key(id)
            .await?
            .ok_or_else(|| CoreError::Conflict(format!("key {id} was deleted while the job ran")))
    }

    async fn commit_step(
        &self,
        job: &mut Job,
        step: Step,
        outcome: StepOutcome,
        runtime: &JobRuntime<'_>,
    ) -> CoreResult<()> {
        let hooks = runtime.hooks;
        hooks.reached(Checkpoint::Step(step), false);
        job.progress.done.push(step);
        let (done, total) = job.progress.fraction();
        let finished = job.progress.next_step().is_none();
        let audit = if finished {
            job.status = JobStatus::Succeeded;
            job.finished_at = Some(self.now());
            Some(self.success_record(job))
        } else {
            None
        };
        let message = self.message(job, format!("Step {done} of {total}: {}", outcome.message));
        self.store
            .commit_job(&JobCommit {
                job,
                keys: &outcome.keys,
                group: outcome.group.as_ref(),
                message: Some(&message),
                audit: audit.as_ref(),
                fence: runtime.fence,
            })
            .await?;
        hooks.reached(Checkpoint::Step(step), true);
        Ok(())
    }

    fn success_record(&self, job: &Job) -> AuditRecord {
        let summary = match &job.kind {
            JobKind::Rotate { group } => {
                format!("Successfully rotated keys for HSM protected key group {group}.")
            }
            JobKind::Synchronize { key_name, .. } => {
                format!("Successfully synchronized HSM protected key {key_name}.")
            }
        };
        self.record(job.users.clone(), summary)
            .with_details(serde_json::json!({
                "job": job.id,
                "kms_key_id": job.progress.kms_key_id.as_ref().map(ToString::to_string),
                "wrapping": job.progress.wrapping.map(|w| w.aws_name()),
                "placeholder_used": job.progress.used_placeholder,
            }))
    }

    async fn fail_job(
        &self,
        job: &mut Job,
        step: Step,
        error: &CoreError,
        fence: Option<&Lease>,
    ) -> CoreResult<()> {
        let (done, total) = job.progress.fraction();
        let kms = job
            .progress
            .kms_key_id
            .as_ref()
            .map(|k| format!(" (KMS key {k})"))
            .unwrap_or_default();
        let reason = format!(
            "step {} of {total}, {}{kms}, failed: {error}",
            done + 1,
            step.describe()
        );
        job.status = JobStatus::Failed;
        job.finished_at = Some(self.now());
        job.error = Some(reason.clone());
        let summary = match &job.kind {
            JobKind::Rotate { group } => {
                format!("Failed to rotate keys for HSM protected key group {group}.")
            }
            JobKind::Synchronize { key_name, .. } => {
                format!("Failed to synchronize HSM protected key {key_name}.")
            }
        };
        let record = self
            .record(job.users.clone(), summary)
            .with_details(serde_json::json!({ "job": job.id, "reason": reason }));
        let message = self.message(job, format!("Failed: {reason}"));
        let recorded = self
            .store
            .commit_job(&JobCommit {
                job,
                keys: &[],
                group: None,
                message: Some(&message),
                audit: Some(&record),
                fence,
            })
            .await;
        match recorded {
            Ok(()) => Ok(()),
            // The audit MAC key lives in the keystore that failed (an HSM
            // token pulled out): the failure cannot be recorded as final,
            // since nothing is without its audit entry. The job stays
            // running, says why, and the runner tries it again until the
            // keystore answers; its steps are idempotent.
            Err(StoreError::AuditSeal(cause)) => {
                job.status = JobStatus::Running;
                job.finished_at = None;
                job.error = Some(format!("waiting for the keystore: {reason}"));
                let message = self.message(
                    job,
                    format!("Waiting: {reason}. The audit log cannot be sealed ({cause}); keyhold tries again by itself once the keystore answers"),
                );
                self.store
                    .commit_job(&JobCommit {
                        job,
                        keys: &[],
                        group: None,
                        message: Some(&message),
                        audit: None,
                        fence,
                    })
                    .await?;
                Err(StoreError::AuditSeal(cause).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn run_step(
        &self,
        job: &mut Job,
        step: Step,
        run: &RunContext,
        runtime: &JobRuntime<'_>,
    ) -> CoreResult<StepOutcome> {
        let (group, kms) = (&run.group, run.kms.as_ref());
        match step {
            Step::GenerateKey => self.generate_key(job, group).await,
            Step::CreateKmsKey => self.create_kms_key(job, group, kms, runtime).await,
            Step::ImportMaterial => self.import_material(job, kms).await,
            Step::MoveAlias => self.move_alias(job, group, kms).await,
            Step::DisablePrevious => self.disable_previous(job, group, kms).await,
            Step::Activate => self.activate(job).await,
            Step::DeleteMaterial => self.delete_material(job, kms).await,
            Step::UpdatePolicy => self.update_policy(job, group, kms).await,
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

    async fn import_material(&self, job: &mut Job, kms: &dyn CloudKms) -> CoreResult<StepOutcome> {
        let mut key = self.job_key(job).await?;
        let kms_key_id = job
            .progress
            .kms_key_id
            .clone()
            .ok_or_else(|| CoreError::Conflict("the job has no KMS key".into()))?;
        let info = kms.describe_key(&kms_key_id).await?;
        let rotating = matches!(job.kind, JobKind::Rotate { .. });
        if rotating && matches!(info.state, KeyState::Enabled | KeyState::Disabled) {
            key.state = info.state;
            return Ok(StepOutcome {
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
        if key.is_expired(self.now()) {
            return Err(CoreError::Conflict(format!(
                "key {kms_key_id} expired on {}: its material cannot be imported again; rotate the group instead",
                key.valid_to.map(|t| t.to_rfc3339()).unwrap_or_default()
            )));
        }
        let algorithm = *self
            .keystore
            .wrapping_algorithms()?
            .first()
            .ok_or_else(|| {
                KeystoreError::Unsupported(
                    "the keystore can wrap with no algorithm AWS accepts".into(),
                )
            })?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let params = kms
                .get_parameters_for_import(&kms_key_id, algorithm)
                .await?;
            let wrapped = self.keystore.wrap_key(
                key.id,
                &key.keystore_handle,
                &params.public_key_der,
                algorithm,
            )?;
            match kms
                .import_key_material(&kms_key_id, &params.import_token, &wrapped, key.valid_to)
                .await
            {
                Ok(()) => break,
                // Tokens live 24 hours; a resumed job may hold a stale one.
                Err(CloudError::ExpiredImportToken { .. }) if attempts < 3 => continue,
                Err(CloudError::IncorrectKeyMaterial { operation, message }) => {
                    return Err(CloudError::IncorrectKeyMaterial {
                        operation,
                        message: format!("{message}; keyhold holds different material than this KMS key was first given. The alias was not moved"),
                    }
                    .into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        key.state = kms
            .describe_key(&kms_key_id)
            .await
            .map(|i| i.state)
            .unwrap_or(KeyState::Enabled);
        job.progress.wrapping = Some(algorithm);
        let expiry = match key.valid_to {
            Some(end) => format!(", valid to {}", end.to_rfc3339()),
            None => ", with no expiry".to_owned(),
        };
        Ok(StepOutcome {
            keys: vec![key],
            group: None,
            message: format!(
                "Imported the key material into KMS key {kms_key_id}, wrapped with {}{expiry}",
                algorithm.aws_name()
            ),
        })
    }

    async fn move_alias(
        &self,
        job: &mut Job,
        group: &KeyGroup,
        kms: &dyn CloudKms,
    ) -> CoreResult<StepOutcome> {
        let kms_key_id = job
            .progress
            .kms_key_id
            .clone()
            .ok_or_else(|| CoreError::Conflict("the job has no KMS key".into()))?;
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
        let kms_key_id = job
            .progress
            .kms_key_id
            .clone()
            .ok_or_else(|| CoreError::Conflict("the job has no KMS key".into()))?;
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

    async fn delete_material(&self, job: &mut Job, kms: &dyn CloudKms) -> CoreResult<StepOutcome> {
        let mut key = self.job_key(job).await?;
        let kms_key_id = job
            .progress
            .kms_key_id
            .clone()
            .ok_or_else(|| CoreError::Conflict("the job has no KMS key".into()))?;
        let info = kms.describe_key(&kms_key_id).await?;
        let message = if info.state == KeyState::PendingImport {
            format!("KMS key {kms_key_id} holds no material already")
        } else {
            kms.delete_imported_key_material(&kms_key_id).await?;
            format!(
                "Deleted the imported key material of KMS key {kms_key_id}; it is pending import"
            )
        };
        key.state = KeyState::PendingImport;
        Ok(StepOutcome {
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
        let kms_key_id = job
            .progress
            .kms_key_id
            .clone()
            .ok_or_else(|| CoreError::Conflict("the job has no KMS key".into()))?;
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
            keys,
            group: None,
            message: format!("Put the key group's policy on KMS key {kms_key_id}"),
        })
    }
}
