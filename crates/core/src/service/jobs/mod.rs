//! Jobs: Force Rotate and Synchronize, started, run step by step, retried
//! and cancelled.
//!
//! Every step follows the same rule: do the outside work, then commit the
//! step's result together with the job's progress. A step may therefore run
//! again after an interruption, and each is written to be harmless the
//! second time: CreateKey is preceded by a committed "sent" mark and found
//! again by its job tag; an import is skipped when KMS already holds the
//! material; moving an alias and disabling a key are idempotent in KMS.
//!
//! Layout: [`lifecycle`] starts, retries and cancels jobs; [`runner`] runs a
//! job's steps, commits each with its progress, and fails it; each job kind
//! is a module listing its steps and holding them ([`rotate`],
//! [`synchronize`]; [`import`] is the step both share). A new kind is a new
//! module, a [`JobKind`](crate::job::JobKind) variant, and one arm in the runner's dispatch.

mod drift;
#[cfg(test)]
mod drift_tests;
mod import;
mod lifecycle;
mod rotate;
mod runner;
mod synchronize;
#[cfg(test)]
mod tests;

use super::Keyhold;
use crate::error::{CoreError, CoreResult};
use crate::group::KeyGroup;
use crate::job::{Job, JobMessage};
use crate::key::Key;

pub use rotate::InPlaceRotations;
pub use runner::JobRuntime;

/// A step the job's progress lists that its kind does not have: progress
/// that does not belong to this job.
fn not_a_step_of(job: &Job, step: crate::job::Step) -> CoreError {
    CoreError::Conflict(format!(
        "job {} lists step {}, which is not a step of {}",
        job.id,
        step.as_str(),
        job.kind.title()
    ))
}

/// What a step produced, committed in one transaction with the job's progress.
struct StepOutcome {
    keys: Vec<Key>,
    group: Option<KeyGroup>,
    message: String,
    /// A drift check's findings.
    drift: Option<crate::drift::DriftRecord>,
    /// The step's own audit entry (a repair). Never on a job's last step,
    /// which carries the job's success entry: a recheck follows every repair.
    audit: Option<crate::audit::AuditRecord>,
}

impl StepOutcome {
    fn message(message: impl Into<String>) -> Self {
        Self {
            keys: Vec::new(),
            group: None,
            message: message.into(),
            drift: None,
            audit: None,
        }
    }
}

impl Keyhold {
    async fn find_job(&self, id: uuid::Uuid) -> CoreResult<Job> {
        self.store
            .get_job(id)
            .await?
            .ok_or_else(|| CoreError::not_found("job", id))
    }

    fn message(&self, job: &Job, text: impl Into<String>) -> JobMessage {
        JobMessage {
            job_id: job.id,
            time: self.now(),
            text: text.into(),
        }
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
}
