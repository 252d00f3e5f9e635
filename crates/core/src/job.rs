//! Jobs: Force Rotate and Synchronize run as persisted step machines.
//!
//! A job's progress is committed after every step, together with what the
//! step produced (the KMS key id right after CreateKey, …). A job interrupted
//! at any point — a crash, a kill, a restart — resumes from its last committed
//! step, and every step is written so that running it twice does no harm.

use serde::{Deserialize, Serialize};

use crate::audit::SYSTEM_USER;
use crate::clock::Timestamp;
use crate::cloud::WrappingAlgorithm;
use crate::cloud::aws::KmsKeyId;
use crate::error::{CoreError, CoreResult};
use crate::names::GroupName;

/// Tag put on every KMS key keyhold creates, valued with the job id, so a key
/// created just before a crash is found on resume instead of orphaned.
pub const JOB_TAG: &str = "keyhold:job-id";
/// Tag naming the keyhold key whose material the KMS key holds.
pub const KEY_TAG: &str = "keyhold:key-id";
/// Tag naming the key group.
pub const GROUP_TAG: &str = "keyhold:group";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: uuid::Uuid,
    pub kind: JobKind,
    pub status: JobStatus,
    /// Who started it.
    pub initiator: Initiator,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// The step machine's committed state.
    pub progress: JobProgress,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// How many times it has been (re)started.
    pub attempts: u32,
}

impl Job {
    /// What this job does, for lists ([`JobKind::summary`]); a rotation in
    /// place says so, since it makes no new KMS key.
    pub fn summary(&self) -> String {
        match &self.kind {
            JobKind::Rotate { group } if self.progress.steps.contains(&Step::ImportNewMaterial) => {
                format!("new material in the KMS key of key group {group}")
            }
            JobKind::CheckDrift { group } if !self.progress.repairs.is_empty() => format!(
                "drift check of key group {group}, self-heal: {} repair(s)",
                self.progress.repairs.len()
            ),
            JobKind::Reconcile { group } => format!(
                "{} repair(s) of key group {group}'s drift in AWS",
                self.progress.repairs.len()
            ),
            kind => kind.summary(),
        }
    }
}

/// Who started a job. The scheduler's own jobs are told apart by this, not
/// by the name they show (`System`), which an identity may also bear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Initiator {
    /// The schedule: a group's rotation time came.
    Scheduler,
    /// Officers in a session: its identities, as the audit log names them.
    Officers(String),
}

impl Initiator {
    /// The stored names of the two, in the jobs table's `initiator` column.
    pub const SCHEDULER: &'static str = "scheduler";
    pub const OFFICERS: &'static str = "officers";

    /// Who started it, as the audit log's "Users" shows it.
    pub fn users(&self) -> &str {
        match self {
            Self::Scheduler => SYSTEM_USER,
            Self::Officers(users) => users,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Scheduler => Self::SCHEDULER,
            Self::Officers(_) => Self::OFFICERS,
        }
    }

    /// The initiator stored as `kind` (its [`Initiator::as_str`]) with the
    /// users text stored beside it.
    pub fn parse(kind: &str, users: String) -> Option<Self> {
        match kind {
            Self::SCHEDULER => Some(Self::Scheduler),
            Self::OFFICERS => Some(Self::Officers(users)),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobKind {
    /// "Rotate HSM protected keys" for one group.
    Rotate { group: GroupName },
    /// "Synchronize HSM protected keys" for one key.
    Synchronize {
        key_id: uuid::Uuid,
        key_name: String,
        group: GroupName,
        options: SyncOptions,
    },
    /// "Check HSM protected keys": reads the group's keys in AWS and records
    /// where they drifted from keyhold's record (and, when the group
    /// self-heals, repairs what is safe to repair).
    CheckDrift { group: GroupName },
    /// "Reconcile HSM protected keys": runs the reconcile plan officers
    /// approved, then checks again.
    Reconcile { group: GroupName },
}

impl JobKind {
    /// [`JobKind::label`] of a rotation.
    pub const ROTATE_LABEL: &'static str = "rotate";
    /// [`JobKind::label`] of a drift check.
    pub const CHECK_DRIFT_LABEL: &'static str = "check_drift";

    pub fn title(&self) -> &'static str {
        match self {
            Self::Rotate { .. } => "Rotate HSM protected keys",
            Self::Synchronize { .. } => "Synchronize HSM protected keys",
            Self::CheckDrift { .. } => "Check HSM protected keys",
            Self::Reconcile { .. } => "Reconcile HSM protected keys",
        }
    }
    pub fn label(&self) -> &'static str {
        match self {
            Self::Rotate { .. } => Self::ROTATE_LABEL,
            Self::Synchronize { .. } => "synchronize",
            Self::CheckDrift { .. } => Self::CHECK_DRIFT_LABEL,
            Self::Reconcile { .. } => "reconcile",
        }
    }
    pub fn group(&self) -> &GroupName {
        match self {
            Self::Rotate { group }
            | Self::Synchronize { group, .. }
            | Self::CheckDrift { group }
            | Self::Reconcile { group } => group,
        }
    }
    /// What the job acts on, for lists: the group or the key.
    pub fn target(&self) -> String {
        match self {
            Self::Rotate { group } | Self::CheckDrift { group } | Self::Reconcile { group } => {
                group.to_string()
            }
            Self::Synchronize { key_name, .. } => key_name.clone(),
        }
    }

    /// What this job does, beside its [`JobKind::title`], which is the same
    /// for every job of a kind (the reference appliance's words): the
    /// options a synchronization was started with, the group a rotation
    /// makes a new key for. Lists show it so two jobs can be told apart.
    pub fn summary(&self) -> String {
        match self {
            Self::Rotate { group } => format!("new key for key group {group}"),
            Self::Synchronize { options, .. } => options.summary(),
            Self::CheckDrift { group } => format!("drift check of key group {group}"),
            Self::Reconcile { group } => {
                format!("repairs of key group {group}'s drift in AWS")
            }
        }
    }
}

/// The three options of *Cloud → Synchronize*, with the walkthrough's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncOptions {
    pub update_policy: bool,
    pub import_material: bool,
    pub delete_material: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            update_policy: true,
            import_material: true,
            delete_material: false,
        }
    }
}

impl SyncOptions {
    pub fn is_empty(&self) -> bool {
        !(self.update_policy || self.import_material || self.delete_material)
    }

    /// The chosen options in the order the Synchronize dialog lists them,
    /// such as "update policy, import key material".
    pub fn summary(&self) -> String {
        let chosen: Vec<&str> = [
            (self.update_policy, "update policy"),
            (self.import_material, "import key material"),
            (self.delete_material, "delete key material"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if chosen.is_empty() {
            "nothing chosen".to_owned()
        } else {
            chosen.join(", ")
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// The steps of a job in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    GenerateKey,
    CreateKmsKey,
    ImportMaterial,
    MoveAlias,
    DisablePrevious,
    Activate,
    DeleteMaterial,
    UpdatePolicy,
    /// In place: the new version imported into the group's KMS key as new
    /// material (`NEW_KEY_MATERIAL`), pending rotation.
    ImportNewMaterial,
    /// In place: `RotateKeyOnDemand`, the new material made current.
    MakeMaterialCurrent,
    /// Drift: read the group's keys in AWS and record the findings.
    CheckDrift,
    /// Drift: the repair at this index of the job's `repairs`.
    Repair(u16),
    /// Drift: the check again, after the repairs, so the findings they
    /// resolved are cleared from what AWS holds then.
    Recheck,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GenerateKey => "generate_key",
            Self::CreateKmsKey => "create_kms_key",
            Self::ImportMaterial => "import_material",
            Self::MoveAlias => "move_alias",
            Self::DisablePrevious => "disable_previous",
            Self::Activate => "activate",
            Self::DeleteMaterial => "delete_material",
            Self::UpdatePolicy => "update_policy",
            Self::ImportNewMaterial => "import_new_material",
            Self::MakeMaterialCurrent => "make_material_current",
            Self::CheckDrift => "check_drift",
            Self::Repair(_) => "repair",
            Self::Recheck => "recheck",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::GenerateKey => "generate a new AES-256 key in the keystore",
            Self::CreateKmsKey => "create the KMS key (or take the placeholder)",
            Self::ImportMaterial => "wrap and import the key material",
            Self::MoveAlias => "point the alias at the new key",
            Self::DisablePrevious => "disable the previous key",
            Self::Activate => "make the new key the group's active key",
            Self::DeleteMaterial => "delete the imported key material",
            Self::UpdatePolicy => "put the group's key policy",
            Self::ImportNewMaterial => "wrap and import the key as new material of the KMS key",
            Self::MakeMaterialCurrent => "rotate the KMS key on demand to the new material",
            Self::CheckDrift => {
                "read the group's keys in AWS and compare them with keyhold's record"
            }
            Self::Repair(_) => "repair a difference in AWS",
            Self::Recheck => "check the group's keys in AWS again after the repairs",
        }
    }

    /// Whether the step runs right after the step before it and commits
    /// with it, one write fewer per job: it audits nothing of its own, and
    /// running it again leaves KMS and keyhold's record as one run does
    /// (an alias pointed at the key it already names, a disabled key
    /// disabled, an activation recorded from inputs read afresh). A crash
    /// before that one commit resumes at the step before, which runs again
    /// with the steps after it. In a rotation to a new KMS key, the alias,
    /// the disable and the activation commit with the import (the import
    /// itself, run again, finds the material KMS already holds); CreateKey
    /// is not idempotent and commits alone, with its key id.
    pub fn commits_with_the_step_before(self) -> bool {
        matches!(
            self,
            Self::MoveAlias | Self::DisablePrevious | Self::Activate
        )
    }

    pub const ROTATE: [Self; 6] = [
        Self::GenerateKey,
        Self::CreateKmsKey,
        Self::ImportMaterial,
        Self::MoveAlias,
        Self::DisablePrevious,
        Self::Activate,
    ];

    /// A rotation in place: the group's KMS key stays, its alias stays on it.
    pub const ROTATE_IN_PLACE: [Self; 4] = [
        Self::GenerateKey,
        Self::ImportNewMaterial,
        Self::MakeMaterialCurrent,
        Self::Activate,
    ];

    /// Synchronize runs delete, then import, then policy: whatever is chosen.
    pub fn synchronize(options: SyncOptions) -> Vec<Self> {
        let mut steps = Vec::new();
        if options.delete_material {
            steps.push(Self::DeleteMaterial);
        }
        if options.import_material {
            steps.push(Self::ImportMaterial);
        }
        if options.update_policy {
            steps.push(Self::UpdatePolicy);
        }
        steps
    }

    /// A reconcile job's steps: each repair, then the check again.
    pub fn reconcile(repairs: usize) -> Vec<Self> {
        let mut steps: Vec<Self> = (0..repairs)
            .filter_map(|i| u16::try_from(i).ok())
            .map(Self::Repair)
            .collect();
        steps.push(Self::Recheck);
        steps
    }
}

/// A commit a running job makes to the store. Each is a boundary a crash may
/// fall on: the job must resume from either side of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Checkpoint {
    /// The job marked running, at its start or its resumption.
    Start,
    /// The mark, committed before CreateKey is sent, that lets a resumed job
    /// find the KMS key by its tag instead of creating a second one. A
    /// commit of its own only where CreateKey was not certain when the key
    /// was generated (the group's Active Key ID may name a placeholder);
    /// otherwise it is committed with GenerateKey.
    CreateKeySent,
    /// The mark, committed before new material is imported, that makes a
    /// resumed job ask KMS whether the material arrived instead of importing
    /// it a second time. Committed with GenerateKey, which makes the import
    /// certain; a commit of its own only for a job whose GenerateKey did not
    /// set it (one written by an earlier release).
    NewMaterialSent,
    /// A step's result, with the job's progress.
    Step(Step),
}

impl Checkpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::CreateKeySent => "create_key_sent",
            Self::NewMaterialSent => "new_material_sent",
            Self::Step(step) => step.as_str(),
        }
    }
}

/// What a job has committed so far. Each field is set by the step that
/// produced it, in the same transaction that records the step as done.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)] // progress written by an older release still loads
pub struct JobProgress {
    pub steps: Vec<Step>,
    pub done: Vec<Step>,
    /// The keyhold key the job creates (rotate) or acts on (synchronize).
    pub key_id: Option<uuid::Uuid>,
    /// The KMS key holding the material.
    pub kms_key_id: Option<KmsKeyId>,
    /// The group's active KMS key when the rotation started.
    pub previous_kms_key_id: Option<KmsKeyId>,
    /// Committed before CreateKey is sent (with GenerateKey when nothing
    /// but CreateKey can follow it): on resume, a KMS key tagged with this
    /// job may exist that keyhold has not recorded yet.
    pub create_key_sent: bool,
    /// Committed before new material is imported in place (with
    /// GenerateKey): on resume, KMS may hold it pending rotation without
    /// keyhold knowing its id.
    pub new_material_sent: bool,
    /// True when the group's placeholder key received the material.
    pub used_placeholder: bool,
    pub wrapping: Option<WrappingAlgorithm>,
    /// The key was disabled in keyhold's record when a synchronization
    /// deleted its material: importing it again (which enables a key in
    /// KMS) is followed by disabling it again.
    pub keep_disabled: bool,
    /// Drift repairs the job runs, in order (`Step::Repair(i)` runs the
    /// i-th): the plan officers approved, or self-heal's.
    pub repairs: Vec<crate::drift::Repair>,
}

impl JobProgress {
    pub fn new(steps: Vec<Step>) -> Self {
        Self {
            steps,
            ..Self::default()
        }
    }

    pub fn is_done(&self, step: Step) -> bool {
        self.done.contains(&step)
    }

    pub fn next_step(&self) -> Option<Step> {
        self.steps.iter().copied().find(|s| !self.done.contains(s))
    }

    /// The KMS key the job acts on, for the steps that need one (set by
    /// CreateKmsKey in a rotation, at the start of a synchronization).
    pub fn require_kms_key(&self) -> CoreResult<&KmsKeyId> {
        self.kms_key_id
            .as_ref()
            .ok_or_else(|| CoreError::Conflict("the job has no KMS key".into()))
    }

    /// (steps done, steps in all), for progress bars.
    pub fn fraction(&self) -> (usize, usize) {
        (self.done.len(), self.steps.len())
    }
}

/// A timestamped line in a job's log, shown while it runs and afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobMessage {
    pub job_id: uuid::Uuid,
    pub time: Timestamp,
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchronize_runs_delete_then_import_then_policy() {
        let all = SyncOptions {
            update_policy: true,
            import_material: true,
            delete_material: true,
        };
        assert_eq!(
            Step::synchronize(all),
            vec![
                Step::DeleteMaterial,
                Step::ImportMaterial,
                Step::UpdatePolicy
            ]
        );
        assert_eq!(
            Step::synchronize(SyncOptions::default()),
            vec![Step::ImportMaterial, Step::UpdatePolicy]
        );
        let only_delete = SyncOptions {
            update_policy: false,
            import_material: false,
            delete_material: true,
        };
        assert_eq!(Step::synchronize(only_delete), vec![Step::DeleteMaterial]);
    }

    #[test]
    fn a_summary_names_the_options_chosen_or_the_group() {
        let group = GroupName::parse("ig-demo").unwrap();
        let sync = |update_policy, import_material, delete_material| JobKind::Synchronize {
            key_id: uuid::Uuid::nil(),
            key_name: "k".into(),
            group: group.clone(),
            options: SyncOptions {
                update_policy,
                import_material,
                delete_material,
            },
        };
        assert_eq!(
            sync(true, true, false).summary(),
            "update policy, import key material"
        );
        assert_eq!(sync(false, false, true).summary(), "delete key material");
        assert_eq!(
            sync(true, true, true).summary(),
            "update policy, import key material, delete key material"
        );
        assert_eq!(sync(false, true, false).summary(), "import key material");
        assert_eq!(sync(false, false, false).summary(), "nothing chosen");
        let rotate = JobKind::Rotate {
            group: group.clone(),
        };
        assert_eq!(rotate.summary(), "new key for key group ig-demo");
        // The title stays the appliance's, whatever was chosen.
        assert_eq!(
            sync(false, false, true).title(),
            "Synchronize HSM protected keys"
        );
    }

    #[test]
    fn progress_resumes_at_the_first_step_not_done() {
        let mut p = JobProgress::new(Step::ROTATE.to_vec());
        assert_eq!(p.next_step(), Some(Step::GenerateKey));
        p.done.push(Step::GenerateKey);
        p.done.push(Step::CreateKmsKey);
        assert_eq!(p.next_step(), Some(Step::ImportMaterial));
        assert_eq!(p.fraction(), (2, 6));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<JobProgress>(&json).unwrap(), p);
    }
}
