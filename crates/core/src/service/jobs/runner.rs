//! Running a job: its steps in order from the first not done, each
//! committed with the job's progress (fenced by the rotator lease), and a
//! failure recorded with its reason. The one place a job kind is dispatched
//! to its module is `run_step` (and `run_of` beside it, naming the kind for the audit log).

use std::sync::Arc;

use secrecy::SecretString;

use super::super::Keyhold;
use super::StepOutcome;
use crate::action::JobRun;
use crate::audit::AuditRecord;
use crate::cloud::aws::{KeyMaterialId, KmsKeyId};
use crate::cloud::{CloudConnector, CloudKms};
use crate::cluster::Lease;
use crate::credential::CredentialKind;
use crate::error::{CoreError, CoreResult, KeystoreError, StoreError};
use crate::group::KeyGroup;
use crate::job::{Checkpoint, Job, JobKind, JobStatus, Step};
use crate::key::Key;
use crate::ports::{JobCommit, JobHooks};

/// What a run of a job reads once, before its first step: the group as it
/// stood then (every step of the run works from the same settings; Activate,
/// which writes the group, reads it afresh) and its KMS connection.
struct RunContext {
    group: KeyGroup,
    kms: Arc<dyn CloudKms>,
    seen: RunMemory,
}

/// What a run learned from its own steps and KMS's answers, which spares
/// asking again later in the same run. Never committed: a run resumed
/// after an interruption starts knowing nothing, and asks.
#[derive(Default)]
pub(super) struct RunMemory {
    /// The rotation's key as this run last wrote it (committed, or in the
    /// commit being made). Only the rotation writes the key it generated
    /// while it runs (an officer may cancel a job only when it is not
    /// running), so the copy is the record.
    pub key: Option<Key>,
    /// A mark (`create_key_sent`, `new_material_sent`) this run committed
    /// ahead, with GenerateKey, for a call it has not made yet: the mark
    /// need not be committed again, and there is nothing to look for in KMS.
    pub marked_ahead: Option<Checkpoint>,
    /// The KMS key this run saw awaiting its first material: created by
    /// this run's CreateKey (origin External), or the group's placeholder
    /// it described as External and pending import.
    pub awaiting_import: Option<KmsKeyId>,
    /// The material this run imported as new material, pending rotation:
    /// not current yet, so rotating it in place needs no look first.
    pub pending_rotation: Option<KeyMaterialId>,
}

/// The outside world a running job needs.
pub struct JobRuntime<'a> {
    pub connector: &'a dyn CloudConnector,
    pub hooks: &'a dyn JobHooks,
    /// The rotator lease this node runs jobs under; every commit is fenced by it.
    pub fence: Option<&'a Lease>,
}

impl Keyhold {
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
        let (read_status, read_attempts) = (job.status, job.attempts);
        if job.status == JobStatus::Queued {
            job.attempts += 1;
            job.started_at.get_or_insert(self.now());
        }
        job.status = JobStatus::Running;
        let message = self.message(&job, opening);
        runtime.hooks.reached(Checkpoint::Start, false);
        // Only from what was read: an officer's cancel between the read
        // and this write stands (and may have removed the rotation's key),
        // instead of being overwritten by a run that then finds it gone.
        let started = self
            .store
            .start_job(&job, read_status, read_attempts, &message, runtime.fence)
            .await?;
        if !started {
            return self.find_job(id).await;
        }
        runtime.hooks.reached(Checkpoint::Start, true);

        let mut context = None;
        while let Some(step) = job.progress.next_step() {
            let (outcome, pacing, ahead) = match self
                .run_context(&job, runtime.connector, &mut context)
                .await
            {
                Ok(run) => {
                    let outcome = self.run_step(&mut job, step, run, runtime).await;
                    let pacing = pacing_note(run);
                    let ahead = match &outcome {
                        Ok(_) => self.run_steps_ahead(&mut job, step, run, runtime).await,
                        Err(_) => Vec::new(),
                    };
                    (outcome, pacing, ahead)
                }
                Err(e) => (Err(e), None, Vec::new()),
            };
            match outcome {
                Ok(mut outcome) => {
                    if let Some(note) = pacing {
                        outcome.message = format!("{} {note}", outcome.message);
                    }
                    self.commit_step(&mut job, step, outcome, ahead, runtime)
                        .await?;
                }
                Err(error) => {
                    self.fail_job(&mut job, step, &error, pacing, runtime.fence)
                        .await?;
                    return Ok(job);
                }
            }
        }
        Ok(job)
    }

    /// Reads the job's group and connects to its KMS once per run, with the
    /// credential's secret opened only for as long as the connection takes.
    async fn run_context<'c>(
        &self,
        job: &Job,
        connector: &dyn CloudConnector,
        cache: &'c mut Option<RunContext>,
    ) -> CoreResult<&'c mut RunContext> {
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
        // The endpoint was checked when the credential was added; checked
        // again here, so that one the operator has since taken off the
        // allow-list (or one written to the database behind keyhold's back)
        // receives nothing.
        if let Some(endpoint) = &credential.endpoint {
            self.endpoint_policy().check(endpoint).map_err(|e| {
                CoreError::Conflict(format!(
                    "cloud credential '{}' of key group '{}' may not be used: {}",
                    credential.name, group.name, e.message
                ))
            })?;
        }
        let secret = match &credential.kind {
            CredentialKind::AccessKey { sealed_secret, .. } => {
                let opened = self
                    .keystore
                    .open_secret(credential.id.as_bytes(), sealed_secret)?;
                let text = String::from_utf8(opened.to_vec()).map_err(|_| {
                    KeystoreError::Internal("a credential secret is not text".into())
                })?;
                Some(SecretString::from(text))
            }
            // The server's own credentials: keyhold holds no secret for them.
            CredentialKind::DefaultChain { .. } => None,
        };
        let kms = connector
            .connect(&credential, secret, &group.aws.region)
            .await?;
        Ok(cache.insert(RunContext {
            group,
            kms,
            seen: RunMemory::default(),
        }))
    }

    /// Runs the steps after `step` now that commit with the step before
    /// them ([`Step::commits_with_the_step_before`]), in order, each on a
    /// copy of the job that counts the steps before it done. Returns those
    /// that succeeded, up to the first that failed (none, when the first
    /// did): `step` commits with them, and a failed one runs again on its
    /// own after that commit, where its failure is recorded as any step's is.
    async fn run_steps_ahead(
        &self,
        job: &mut Job,
        step: Step,
        run: &mut RunContext,
        runtime: &JobRuntime<'_>,
    ) -> Vec<(Step, StepOutcome)> {
        let done_before = job.progress.done.len();
        let mut after = job.clone();
        after.progress.done.push(step);
        let mut ahead = Vec::new();
        while let Some(next) = after
            .progress
            .next_step()
            .filter(|next| next.commits_with_the_step_before())
        {
            // A copy, so that a step that fails half-way leaves nothing behind.
            let mut attempt = after.clone();
            match self.run_step(&mut attempt, next, run, runtime).await {
                Ok(mut outcome) => {
                    // Each step's message tells what pacing cost it; a
                    // failed step's waits are told when it runs again.
                    if let Some(note) = pacing_note(run) {
                        outcome.message = format!("{} {note}", outcome.message);
                    }
                    attempt.progress.done.push(next);
                    after = attempt;
                    ahead.push((next, outcome));
                }
                Err(_) => break,
            }
        }
        if !ahead.is_empty() {
            // What the steps ahead wrote into the progress, none of them
            // (nor `step`) counted done until the commit does.
            after.progress.done.truncate(done_before);
            *job = after;
        }
        ahead
    }

    /// Commits `step` done with its outcome, and the steps run ahead with
    /// it: one write, its messages in order, the keys as the last step left
    /// them. Steps run ahead audit nothing of their own, so the audit entry
    /// is the step's, or the job's end.
    async fn commit_step(
        &self,
        job: &mut Job,
        step: Step,
        outcome: StepOutcome,
        ahead: Vec<(Step, StepOutcome)>,
        runtime: &JobRuntime<'_>,
    ) -> CoreResult<()> {
        let hooks = runtime.hooks;
        hooks.reached(Checkpoint::Step(step), false);
        let mut steps = vec![(step, outcome.message)];
        let mut keys = outcome.keys;
        let mut group = outcome.group;
        let mut audit = outcome.audit;
        for (next, later) in ahead {
            steps.push((next, later.message));
            keys.retain(|k| !later.keys.iter().any(|l| l.id == k.id));
            keys.extend(later.keys);
            group = later.group.or(group);
            audit = later.audit.or(audit);
        }
        let mut messages = Vec::with_capacity(steps.len());
        for (step, message) in steps {
            job.progress.done.push(step);
            let (done, total) = job.progress.fraction();
            messages.push(self.message(job, format!("Step {done} of {total}: {message}")));
        }
        if job.progress.next_step().is_none() {
            job.status = JobStatus::Succeeded;
            job.finished_at = Some(self.now());
            audit = Some(self.success_record(job));
        }
        self.store
            .commit_job(&JobCommit {
                job,
                keys: &keys,
                group: group.as_ref(),
                messages: &messages,
                audit: audit.as_ref(),
                drift: outcome.drift.as_ref(),
                fence: runtime.fence,
            })
            .await?;
        hooks.reached(Checkpoint::Step(step), true);
        Ok(())
    }

    fn success_record(&self, job: &Job) -> AuditRecord {
        self.record(job.initiator.users(), run_of(&job.kind).succeeded())
            .with_details(serde_json::json!({
                "job": job.id,
                "kms_key_id": job.progress.kms_key_id.as_ref().map(ToString::to_string),
                "wrapping": job.progress.wrapping.map(|w| w.aws_name()),
                "placeholder_used": job.progress.used_placeholder,
                "in_place": job.progress.steps.contains(&Step::MakeMaterialCurrent)
                    && !job.progress.steps.contains(&Step::CreateKmsKey),
                "repairs": job.progress.repairs.len(),
            }))
    }

    /// Ends the job as failed at `step`. `pacing` (what request pacing
    /// cost the step, when worth telling) goes into the message only: the
    /// reason stays the error's.
    async fn fail_job(
        &self,
        job: &mut Job,
        step: Step,
        error: &CoreError,
        pacing: Option<String>,
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
        let record = self
            .record(job.initiator.users(), run_of(&job.kind).failed())
            .with_details(serde_json::json!({ "job": job.id, "reason": reason }));
        let message = match &pacing {
            Some(note) => self.message(job, format!("Failed: {reason} {note}")),
            None => self.message(job, format!("Failed: {reason}")),
        };
        let recorded = self
            .store
            .commit_job(&JobCommit {
                job,
                keys: &[],
                group: None,
                messages: std::slice::from_ref(&message),
                audit: Some(&record),
                drift: None,
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
                        messages: std::slice::from_ref(&message),
                        audit: None,
                        drift: None,
                        fence,
                    })
                    .await?;
                Err(StoreError::AuditSeal(cause).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The dispatch: a step runs in its job kind's module.
    async fn run_step(
        &self,
        job: &mut Job,
        step: Step,
        run: &mut RunContext,
        runtime: &JobRuntime<'_>,
    ) -> CoreResult<StepOutcome> {
        let (group, kms) = (&run.group, run.kms.as_ref());
        match job.kind {
            JobKind::Rotate { .. } => {
                self.run_rotation_step(job, step, group, kms, &mut run.seen, runtime)
                    .await
            }
            JobKind::Synchronize { .. } => {
                self.run_synchronization_step(job, step, group, kms, runtime)
                    .await
            }
            JobKind::CheckDrift { .. } | JobKind::Reconcile { .. } => {
                self.run_drift_step(job, step, group, kms, runtime).await
            }
        }
    }
}

/// What request pacing cost the step just run, as its message tells it
/// (see [`crate::cloud::PacingReport::note`]): the run's connection is its
/// own, so these are this job's waits, not another's.
fn pacing_note(run: &RunContext) -> Option<String> {
    run.kms
        .take_pacing()
        .and_then(|report| report.note(&run.group.credential))
}

/// The job's kind as the audit log names it when the job ends.
fn run_of(kind: &JobKind) -> JobRun<'_> {
    match kind {
        JobKind::Rotate { group } => JobRun::Rotation(group.as_str()),
        JobKind::Synchronize { key_name, .. } => JobRun::Synchronization(key_name),
        JobKind::CheckDrift { group } => JobRun::DriftCheck(group.as_str()),
        JobKind::Reconcile { group } => JobRun::Reconciliation(group.as_str()),
    }
}
