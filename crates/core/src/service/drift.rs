//! Drift: starting checks (on demand and on schedule), reading findings
//! and the reconcile plan, and starting a reconciliation. The checks and
//! repairs themselves run as jobs (`jobs::drift`).

use std::collections::HashMap;

use super::Keyhold;
use crate::action::Action;
use crate::drift::{DriftCheck, DriftFilter, DriftKind, Finding, MAX_PLAN_REPAIRS, Plan, Repair};
use crate::error::{CoreError, CoreResult, InvalidInput, StoreError};
use crate::group::KeyGroup;
use crate::identity::{Operation, Session};
use crate::job::{Initiator, Job, JobKind, JobProgress, Step};
use crate::names::GroupName;

/// A group's drift at a glance: the badge on the group, a row of the Drift
/// screen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDrift {
    pub group: GroupName,
    /// The last check that finished, if any.
    pub last_check: Option<DriftCheck>,
    pub open: u32,
    pub self_heal: bool,
}

/// Every group's drift, with the schedule that checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriftOverview {
    pub groups: Vec<GroupDrift>,
    /// Hours between scheduled checks; 0 when they are off.
    pub check_hours: u32,
    pub expiry_days: u32,
}

/// What "check every group" started, and which groups it left alone.
#[derive(Clone, Debug, Default)]
pub struct ChecksStarted {
    pub started: Vec<Job>,
    /// Groups with another job unfinished, and the refusal that says which.
    pub busy: Vec<(GroupName, String)>,
}

/// A group's reconcile plan, with the fingerprint that names it: the
/// request that applies it names the plan it was shown, and is refused if
/// the plan changed since.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupPlan {
    pub group: GroupName,
    pub plan: Plan,
    pub digest: String,
}

/// How long a failed scheduled check waits before the schedule tries it
/// again (at most, and never longer than the checks' own interval).
const FAILED_CHECK_PAUSE: chrono::Duration = chrono::Duration::hours(1);

impl Keyhold {
    /// Findings by `filter`.
    pub async fn list_drift(
        &self,
        session: &Session,
        filter: &DriftFilter,
    ) -> CoreResult<Vec<Finding>> {
        session.authorize(Operation::READ, true)?;
        Ok(self.store.list_drift(filter).await?)
    }

    pub async fn get_drift(&self, session: &Session, id: uuid::Uuid) -> CoreResult<Finding> {
        session.authorize(Operation::READ, true)?;
        self.store
            .get_drift(id)
            .await?
            .ok_or_else(|| CoreError::not_found("drift finding", id))
    }

    /// Every group with its last check and open findings.
    pub async fn drift_overview(&self, session: &Session) -> CoreResult<DriftOverview> {
        session.authorize(Operation::READ, true)?;
        let settings = self.store.get_settings().await?;
        let groups = self.store.list_groups().await?;
        let mut checks: HashMap<GroupName, DriftCheck> = self
            .store
            .drift_checks()
            .await?
            .into_iter()
            .map(|c| (c.group.clone(), c))
            .collect();
        // The open count is the last check's: one read, whatever the
        // number of groups and findings.
        let groups = groups
            .into_iter()
            .map(|g| {
                let last_check = checks.remove(&g.name);
                GroupDrift {
                    open: last_check.as_ref().map_or(0, |c| c.open),
                    last_check,
                    self_heal: g.aws.self_heal,
                    group: g.name,
                }
            })
            .collect();
        Ok(DriftOverview {
            groups,
            check_hours: settings.drift_check_hours,
            expiry_days: settings.drift_expiry_days,
        })
    }

    /// Open findings by kind (for `/metrics`; no session: the server's own read).
    pub async fn drift_counts(&self) -> CoreResult<Vec<(DriftKind, u64)>> {
        Ok(self.store.drift_counts().await?)
    }

    /// The group's reconcile plan from its open findings.
    pub async fn drift_plan(&self, session: &Session, group: &GroupName) -> CoreResult<GroupPlan> {
        session.authorize(Operation::READ, true)?;
        self.find_group(group).await?;
        self.group_plan(group).await
    }

    async fn group_plan(&self, group: &GroupName) -> CoreResult<GroupPlan> {
        let open = self
            .store
            .list_drift(&DriftFilter {
                group: Some(group.clone()),
                limit: 1000,
                ..DriftFilter::default()
            })
            .await?;
        let plan = Plan::of(&open, false);
        Ok(GroupPlan {
            group: group.clone(),
            digest: plan.digest(),
            plan,
        })
    }

    /// Drift → Check now, for one group.
    pub async fn start_drift_check(&self, session: &Session, group: &GroupName) -> CoreResult<Job> {
        self.authorize(session, Operation::CHECK_DRIFT).await?;
        let group = self.find_group(group).await?;
        self.insert_drift_check(&Initiator::Officers(session.users()), &group)
            .await
    }

    /// Drift → Check all: a check for every group that has no other job
    /// unfinished.
    pub async fn start_drift_checks(&self, session: &Session) -> CoreResult<ChecksStarted> {
        self.authorize(session, Operation::CHECK_DRIFT).await?;
        let initiator = Initiator::Officers(session.users());
        let mut outcome = ChecksStarted::default();
        for group in self.store.list_groups().await? {
            match self.insert_drift_check(&initiator, &group).await {
                Ok(job) => outcome.started.push(job),
                Err(CoreError::Conflict(why)) => outcome.busy.push((group.name, why)),
                Err(e) => return Err(e),
            }
        }
        Ok(outcome)
    }

    /// The schedule's pass: a check for each group whose last check (or,
    /// never checked, its creation) is older than the interval, at most
    /// `limit`, oldest first. A new group is not checked at once: keyhold
    /// just made it. A group whose scheduled check failed is tried again
    /// after an hour, not at every pass. Returns the jobs queued.
    pub async fn queue_due_drift_checks(&self, limit: usize) -> CoreResult<Vec<Job>> {
        let settings = self.store.get_settings().await?;
        let Some(interval) = settings.drift_check_interval() else {
            return Ok(Vec::new());
        };
        let now = self.now();
        let pause = interval.min(FAILED_CHECK_PAUSE);
        let due = self
            .store
            .groups_due_for_drift_check(
                now - interval,
                now - pause,
                u32::try_from(limit).unwrap_or(u32::MAX),
            )
            .await?;
        let mut queued = Vec::new();
        for group in due {
            match self.insert_drift_check(&Initiator::Scheduler, &group).await {
                Ok(job) => queued.push(job),
                // Another job runs for the group: the next pass tries again.
                Err(CoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(queued)
    }

    async fn insert_drift_check(&self, initiator: &Initiator, group: &KeyGroup) -> CoreResult<Job> {
        let job = self.new_job(
            initiator.clone(),
            JobKind::CheckDrift {
                group: group.name.clone(),
            },
            JobProgress::new(vec![Step::CheckDrift]),
        );
        let record = self
            .record(
                initiator.users(),
                Action::CheckDrift(group.name.as_str()).succeeded(),
            )
            .with_details(serde_json::json!({ "job": job.id }));
        // A drift check only reads: unlike a rotation, a failed rotation
        // does not hold it back; another unfinished job of the group does.
        match self.store.insert_job(&job, None, &record).await {
            Ok(()) => Ok(job),
            Err(StoreError::Duplicate) => Err(self.concurrent_job_refusal(&group.name).await),
            Err(e) => Err(e.into()),
        }
    }

    /// Drift → Apply plan: queues a reconcile job with the group's plan,
    /// only while it is the plan the officers were shown (`digest`, from
    /// [`Keyhold::drift_plan`]).
    pub async fn start_reconcile(
        &self,
        session: &Session,
        group: &GroupName,
        digest: &str,
    ) -> CoreResult<Job> {
        self.authorize(session, Operation::RECONCILE_DRIFT).await?;
        self.find_group(group).await?;
        let repairs = self.repairs_to_apply(group, digest).await?;
        self.refuse_concurrent_job(group).await?;
        let mut progress = JobProgress::new(Step::reconcile(repairs.len()));
        progress.repairs = repairs;
        let job = self.new_job(
            Initiator::Officers(session.users()),
            JobKind::Reconcile {
                group: group.clone(),
            },
            progress,
        );
        let record = self
            .record_for(session, Action::ReconcileDrift(group.as_str()).succeeded())
            .with_details(serde_json::json!({
                "job": job.id,
                "plan": digest.trim(),
                "repairs": job.progress.repairs.iter().map(|r| r.describe()).collect::<Vec<_>>(),
            }));
        self.insert_job(&job, None, &record, group).await?;
        Ok(job)
    }

    /// The repairs of the group's plan named `digest`, as a reconciliation
    /// would run them: what an approval request for it shows approvers.
    /// Refused as [`Keyhold::start_reconcile`] would refuse it, so no one
    /// is asked to approve what cannot run.
    pub async fn plan_to_apply(
        &self,
        session: &Session,
        group: &GroupName,
        digest: &str,
    ) -> CoreResult<Vec<Repair>> {
        session.authorize(Operation::READ, true)?;
        self.find_group(group).await?;
        self.repairs_to_apply(group, digest).await
    }

    /// The group's plan while it is still the one named `digest` and has
    /// something to do, within one job's size.
    async fn repairs_to_apply(&self, group: &GroupName, digest: &str) -> CoreResult<Vec<Repair>> {
        let current = self.group_plan(group).await?;
        if current.digest != digest.trim() {
            return Err(CoreError::Conflict(format!(
                "the reconcile plan of key group '{group}' changed since it was read (a check ran, or findings cleared): read the plan again (`keyhold drift plan --group {group}`) and apply that one"
            )));
        }
        let repairs = current.plan.repairs();
        if repairs.is_empty() {
            return Err(InvalidInput::new(
                "group",
                format!(
                    "key group '{group}' has nothing to reconcile: no open finding has a repair keyhold can make{}",
                    if current.plan.unresolved.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " ({} finding(s) need officers outside keyhold; see `keyhold drift list --group {group}`)",
                            current.plan.unresolved.len()
                        )
                    }
                ),
            )
            .into());
        }
        if repairs.len() > MAX_PLAN_REPAIRS {
            return Err(CoreError::Conflict(format!(
                "key group '{group}' has {} repairs to make, more than one job runs ({MAX_PLAN_REPAIRS})",
                repairs.len()
            )));
        }
        Ok(repairs)
    }
}
