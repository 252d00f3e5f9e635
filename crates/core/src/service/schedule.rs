//! The schedule: a group whose rotation time has come is rotated once, by
//! the scheduler (shown as `System`), and its next time set in the same transaction; a scheduled
//! rotation that failed is tried again with backoff. The rotator node runs
//! one pass per tick; its cost follows the due groups, not all groups.

use super::Keyhold;
use crate::clock::Timestamp;
use crate::cluster::Lease;
use crate::error::{CoreError, CoreResult};
use crate::group::KeyGroup;
use crate::job::{Initiator, Job, JobKind, JobStatus};
use crate::names::GroupName;
use crate::ports::Scheduled;
use crate::schedule::{next_rotation, retry_delay};

/// Due groups one pass takes on; the next pass takes the rest.
pub const DUE_PER_PASS: u32 = 200;
/// Failed jobs one pass looks at for scheduled rotations to retry.
const FAILED_PER_PASS: u32 = 200;

/// What one pass did.
#[derive(Debug, Default)]
pub struct SchedulePass {
    /// Rotations started, with their jobs.
    pub started: Vec<(GroupName, uuid::Uuid)>,
    /// Failed scheduled rotations queued again.
    pub retried: Vec<uuid::Uuid>,
    /// Due groups that could not start now, and why (a job of the group is
    /// still running, or its last rotation failed and waits for its retry).
    pub deferred: Vec<(GroupName, String)>,
}

impl SchedulePass {
    /// Jobs the runner should take up.
    pub fn jobs(&self) -> impl Iterator<Item = uuid::Uuid> + '_ {
        self.started
            .iter()
            .map(|(_, id)| *id)
            .chain(self.retried.iter().copied())
    }
}

/// Where a group's rotation stands, for its view.
#[derive(Debug, Default)]
pub struct RotationState {
    /// The newest rotation job of the group.
    pub last: Option<Job>,
    /// When a failed scheduled rotation is tried again.
    pub retry_at: Option<Timestamp>,
    /// A `new_material` group's count against AWS's on-demand rotations.
    pub in_place: Option<super::InPlaceRotations>,
}

impl Keyhold {
    /// One pass of the scheduler, at the clock's now, under the rotator
    /// lease `fence` (every write of the pass is refused once another node
    /// holds it).
    pub async fn run_schedule(&self, fence: Option<&Lease>) -> CoreResult<SchedulePass> {
        let now = self.now();
        let mut pass = SchedulePass::default();
        for job in self.store.failed_jobs(FAILED_PER_PASS).await? {
            if let Some(id) = self.retry_if_due(job, now, fence).await? {
                pass.retried.push(id);
            }
        }
        for group in self.store.due_groups(now, DUE_PER_PASS).await? {
            let name = group.name.clone();
            match self.start_scheduled(group, now, fence).await {
                Ok(job) => pass.started.push((name, job)),
                Err(CoreError::Conflict(why)) => pass.deferred.push((name, why)),
                Err(e) => return Err(e),
            }
        }
        Ok(pass)
    }

    /// Starts the group's rotation and moves its next time on, together. A
    /// group that missed several intervals (keyhold was down) rotates once.
    async fn start_scheduled(
        &self,
        group: KeyGroup,
        now: Timestamp,
        fence: Option<&Lease>,
    ) -> CoreResult<uuid::Uuid> {
        // A drift check or reconciliation is short and only reads or puts
        // back: the rotation waits for it to end (the next pass tries
        // again), rather than being put off for a whole interval.
        if let Some(job) = self.store.unfinished_group_job(&group.name).await?
            && matches!(
                job.kind,
                JobKind::CheckDrift { .. } | JobKind::Reconcile { .. }
            )
        {
            return Err(CoreError::Conflict(format!(
                "waits for job {} ({}) of key group '{}' to end",
                job.id,
                job.kind.title(),
                group.name
            )));
        }
        let mut scheduled = group.clone();
        scheduled.next_rotation_at = self.next_rotation_of(&group, now).await?;
        match self
            .insert_rotation(
                &Initiator::Scheduler,
                &group,
                Some(Scheduled {
                    group: &scheduled,
                    fence,
                }),
            )
            .await
        {
            Ok(job) => Ok(job.id),
            Err(CoreError::Conflict(why)) => {
                // Not now; the job in the way sets the time when it ends, or
                // the retry rule takes the failed one up. Look again next interval.
                let record = self
                    .record(
                        Initiator::Scheduler.users(),
                        format!(
                            "Scheduled rotation of HSM protected key group {} deferred",
                            group.name
                        ),
                    )
                    .with_details(serde_json::json!({
                        "reason": why,
                        "next_rotation_at": scheduled.next_rotation_at.map(|t| t.to_rfc3339()),
                    }));
                // Only over the group as read: an officer's change made
                // meanwhile stays, and the next pass looks at the group again.
                self.store
                    .replace_group(&group, &scheduled, &record)
                    .await?;
                Err(CoreError::Conflict(why))
            }
            Err(e) => Err(e),
        }
    }

    async fn next_rotation_of(
        &self,
        group: &KeyGroup,
        now: Timestamp,
    ) -> CoreResult<Option<Timestamp>> {
        let Some(every) = group.rotate_every else {
            return Ok(None);
        };
        let active_valid_to = match &group.aws.active_key_id {
            Some(active) => self.current_key_in(active).await?.and_then(|k| k.valid_to),
            None => None,
        };
        Ok(Some(next_rotation(
            now,
            every,
            group.valid_for,
            active_valid_to,
        )))
    }

    /// Queues a failed scheduled rotation again once its backoff has passed,
    /// when it is still the group's latest rotation and rotation is still on.
    async fn retry_if_due(
        &self,
        job: Job,
        now: Timestamp,
        fence: Option<&Lease>,
    ) -> CoreResult<Option<uuid::Uuid>> {
        let JobKind::Rotate { group } = &job.kind else {
            return Ok(None);
        };
        let Some(retry_at) = scheduled_retry_at(&job) else {
            return Ok(None);
        };
        if now < retry_at {
            return Ok(None);
        }
        let latest = self.latest_rotation(group).await?;
        if latest.as_ref().map(|j| j.id) != Some(job.id) {
            return Ok(None);
        }
        match self.store.get_group(group).await? {
            Some(g) if g.rotate_every.is_some() => {}
            _ => return Ok(None),
        }
        let id = job.id;
        match self
            .set_job_status(job, JobStatus::Queued, Initiator::Scheduler.users(), fence)
            .await
        {
            Ok(_) => Ok(Some(id)),
            // Another job of the group is unfinished (the database admits
            // one): not now; the next pass looks again.
            Err(CoreError::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The group's last rotation, when it is retried if it failed, and how
    /// many rotations in place its KMS key has left.
    pub async fn rotation_state(&self, group: &KeyGroup) -> CoreResult<RotationState> {
        let last = self.latest_rotation(&group.name).await?;
        let retry_at = last.as_ref().and_then(scheduled_retry_at);
        let in_place = self.in_place_rotations(group).await?;
        Ok(RotationState {
            last,
            retry_at,
            in_place,
        })
    }
}

/// A failed rotation the scheduler started is retried; one an officer
/// started waits for an officer.
fn scheduled_retry_at(job: &Job) -> Option<Timestamp> {
    if job.status != JobStatus::Failed || job.initiator != Initiator::Scheduler {
        return None;
    }
    job.finished_at.map(|at| at + retry_delay(job.attempts))
}
