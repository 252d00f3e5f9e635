//! Check and Reconcile ("Check HSM protected keys", "Reconcile HSM
//! protected keys"): a drift check reads the group's keys in AWS, compares
//! them with keyhold's record ([`crate::drift::detect`]) and commits the
//! findings with the step; a repair makes one AWS call of the plan; the
//! recheck that closes both reads AWS again, so what the repairs resolved
//! is cleared from what AWS holds then, not assumed.
//!
//! A check of a self-healing group extends its own job with the safe part
//! of the plan and a recheck, committed with the check's findings: resumed
//! after an interruption, it runs the repairs it committed, not a new plan.
//!
//! Reads: one ListAliases and one ListKeys (paged) per check, whatever the
//! group's size; per KMS key of the group DescribeKey, ListResourceTags,
//! GetKeyPolicy when the group has a policy, ListKeyRotations when versions
//! share the KMS key; ListResourceTags for the region's keys keyhold does
//! not hold (a keyhold-tagged stray is among them). Each call waits for its
//! turn under the account's request quotas like the rotations' calls.
//!
//! A check's time is set by those turns, not by round trips: the pacing
//! (the AWS adapter's, a tenth of each quota for the check's own reads)
//! lets each operation's requests leave one interval apart, each operation
//! independently of the others, so the least a check can take is its
//! slowest operation's requests times that operation's interval
//! (GetKeyPolicy's 10 ms per key at a tenth of its quota). Read one key
//! after the other, a key's DescribeKey, GetKeyPolicy and ListResourceTags
//! would each wait for the one before it to be answered, and a key would
//! cost the sum of their round trips whenever that exceeds the slowest
//! interval (against AWS, tens of milliseconds each). So a check keeps
//! [`KEYS_IN_FLIGHT`] keys' reads going at once, each still in its
//! operation's turn, and takes their answers in key order: the findings
//! and their audit entries are those of a check that read one key at a
//! time, and of two keys whose reads fail, the first fails the check. The
//! listings (aliases, the region's keys and the strays among them) run
//! beside the keys' reads.
//! A rotation's DescribeKey, the one bucket a check shares with
//! rotations, waits behind at most [`KEYS_IN_FLIGHT`] of the check's.

use std::collections::HashSet;

use futures_util::future::{self, BoxFuture};
use futures_util::{FutureExt as _, StreamExt as _, TryStreamExt as _, stream};

use super::super::Keyhold;
use super::StepOutcome;
use super::import::KmsKeyBefore;
use super::runner::JobRuntime;
use crate::action::drift as audit_text;
use crate::cloud::aws::KmsKeyId;
use crate::cloud::{CloudError, CloudKms};
use crate::drift::{
    DetectParams, DriftCheck, DriftFilter, DriftRecord, KEYS_IN_FLIGHT, Observed, ObservedKey,
    Plan, Repair, detect, kms_keys_to_check, merge,
};
use crate::error::{CoreError, CoreResult};
use crate::group::KeyGroup;
use crate::job::{GROUP_TAG, Job, JobKind, Step};
use crate::key::{Key, KeyPage, KeyState};

/// Most appeared or cleared findings a check's message names one by one.
const NAMED_IN_MESSAGE: usize = 5;

impl Keyhold {
    /// Runs one step of a drift check or a reconciliation.
    pub(super) async fn run_drift_step(
        &self,
        job: &mut Job,
        step: Step,
        group: &KeyGroup,
        kms: &dyn CloudKms,
        _runtime: &JobRuntime<'_>,
    ) -> CoreResult<StepOutcome> {
        match step {
            Step::CheckDrift => self.check_drift(job, kms, true).await,
            Step::Recheck => self.check_drift(job, kms, false).await,
            Step::Repair(index) => self.repair_drift(job, index, group, kms).await,
            Step::GenerateKey
            | Step::CreateKmsKey
            | Step::ImportMaterial
            | Step::MoveAlias
            | Step::DisablePrevious
            | Step::Activate
            | Step::DeleteMaterial
            | Step::UpdatePolicy
            | Step::ImportNewMaterial
            | Step::MakeMaterialCurrent => Err(super::not_a_step_of(job, step)),
        }
    }

    /// Reads AWS, compares, and returns the findings to commit; with
    /// `may_heal`, a self-healing group's safe repairs join the job.
    async fn check_drift(
        &self,
        job: &mut Job,
        kms: &dyn CloudKms,
        may_heal: bool,
    ) -> CoreResult<StepOutcome> {
        // Read afresh: a check compares AWS with the record as it is now.
        let group = self.job_group(job).await?;
        let keys = self
            .store
            .list_keys(&KeyPage::whole_group(&group.name))
            .await?;
        let settings = self.store.get_settings().await?;
        let observed = self.observe(&group, &keys, kms).await?;
        let now = self.now();
        let detected = detect(
            &group,
            &keys,
            &observed,
            DetectParams {
                now,
                expiry_window: chrono::Duration::days(settings.drift_expiry_days.into()),
            },
        );
        let open = self
            .store
            .list_drift(&DriftFilter {
                group: Some(group.name.clone()),
                limit: 1000,
                ..DriftFilter::default()
            })
            .await?;
        let merged = merge(&group.name, &open, detected, now, uuid::Uuid::new_v4);
        let users = job.initiator.users();
        let mut audits = Vec::new();
        for finding in &merged.appeared {
            audits.push(
                self.record(users, audit_text::found(&finding.summary()))
                    .with_details(serde_json::json!({
                        "job": job.id,
                        "finding": finding.id,
                        "kind": finding.kind.as_str(),
                        "subject": finding.subject,
                        "detail": finding.detail,
                    })),
            );
        }
        for finding in &merged.cleared {
            audits.push(
                self.record(users, audit_text::cleared(&finding.summary()))
                    .with_details(serde_json::json!({
                        "job": job.id,
                        "finding": finding.id,
                        "kind": finding.kind.as_str(),
                        "subject": finding.subject,
                        "first_seen": finding.first_seen.to_rfc3339(),
                    })),
            );
        }
        let open_now: Vec<_> = merged.open().cloned().collect();
        let mut message = format!(
            "Checked {} KMS key(s) of key group {} in AWS: {} finding(s) open, {} new, {} cleared",
            observed.keys.len(),
            group.name,
            open_now.len(),
            merged.appeared.len(),
            merged.cleared.len()
        );
        for (label, list) in [("new", &merged.appeared), ("cleared", &merged.cleared)] {
            for finding in list.iter().take(NAMED_IN_MESSAGE) {
                message.push_str(&format!("; {label}: {}", finding.summary()));
            }
            if list.len() > NAMED_IN_MESSAGE {
                message.push_str(&format!(
                    "; and {} more {label}",
                    list.len() - NAMED_IN_MESSAGE
                ));
            }
        }
        if may_heal && group.aws.self_heal && matches!(job.kind, JobKind::CheckDrift { .. }) {
            let heal = Plan::of(&open_now, true).repairs();
            if !heal.is_empty() {
                message.push_str(&format!("; self-heal: {} repair(s) follow", heal.len()));
                job.progress.steps.extend(Step::reconcile(heal.len()));
                job.progress.repairs = heal;
            }
        }
        let record = DriftRecord {
            check: DriftCheck {
                group: group.name.clone(),
                checked_at: now,
                job_id: job.id,
                open: u32::try_from(open_now.len()).unwrap_or(u32::MAX),
            },
            findings: merged.all().cloned().collect(),
            audits,
        };
        Ok(StepOutcome {
            drift: Some(record),
            ..StepOutcome::message(message)
        })
    }

    /// What AWS holds of the group: each KMS key's reads, [`KEYS_IN_FLIGHT`]
    /// keys at a time and in key order, beside the region's listings.
    async fn observe(
        &self,
        group: &KeyGroup,
        keys: &[Key],
        kms: &dyn CloudKms,
    ) -> CoreResult<Observed> {
        let with_policy = group.aws.policy.is_some();
        // Made before they are awaited, and boxed: a stream that makes them
        // with a closure as it goes leaves the compiler unable to see that
        // the job awaiting them may move between threads. None starts
        // before `buffered` polls it.
        let reads: Vec<BoxFuture<'_, CoreResult<ObservedKey>>> = kms_keys_to_check(keys)
            .into_iter()
            .map(|(kms_key_id, versions)| {
                observe_key(kms, kms_key_id, with_policy, versions.len() > 1).boxed()
            })
            .collect();
        let each_key = stream::iter(reads)
            .buffered(KEYS_IN_FLIGHT)
            .try_collect::<Vec<ObservedKey>>();
        let aliases = async { Ok(kms.list_aliases().await?) };
        let (keys, aliases, unknown) =
            future::try_join3(each_key, aliases, self.strays(group, kms)).await?;
        Ok(Observed {
            keys,
            aliases: aliases.into_iter().collect(),
            unknown,
        })
    }

    /// KMS keys of the region tagged with this group that keyhold holds no
    /// key in (its placeholder and keys on their way out left aside). Only
    /// the keys keyhold does not know are asked for their tags,
    /// [`KEYS_IN_FLIGHT`] at a time, the strays kept in ListKeys's order.
    async fn strays(&self, group: &KeyGroup, kms: &dyn CloudKms) -> CoreResult<Vec<KmsKeyId>> {
        let all = kms.list_key_ids().await?;
        let placeholder: HashSet<&KmsKeyId> = group.aws.active_key_id.iter().collect();
        let candidates: Vec<KmsKeyId> = self
            .store
            .unknown_kms_keys(&all)
            .await?
            .into_iter()
            .filter(|candidate| !placeholder.contains(candidate))
            .collect();
        // Made first and boxed, as the keys' reads are (see `observe`).
        let reads: Vec<BoxFuture<'_, CoreResult<Option<KmsKeyId>>>> = candidates
            .into_iter()
            .map(|candidate| stray(kms, candidate, group).boxed())
            .collect();
        let found: Vec<Option<KmsKeyId>> = stream::iter(reads)
            .buffered(KEYS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Runs repair `index` of the job's plan.
    async fn repair_drift(
        &self,
        job: &mut Job,
        index: u16,
        group: &KeyGroup,
        kms: &dyn CloudKms,
    ) -> CoreResult<StepOutcome> {
        let repair = job
            .progress
            .repairs
            .get(usize::from(index))
            .cloned()
            .ok_or_else(|| {
                CoreError::Conflict(format!(
                    "job {} has no repair number {}: its plan holds {}",
                    job.id,
                    index + 1,
                    job.progress.repairs.len()
                ))
            })?;
        let kms_key_id = repair.kms_key_id().clone();
        // A plan names the group's own KMS keys: one that is no longer
        // the group's (deleted from keyhold since) is left alone.
        let held = self.store.keys_in_kms_key(&kms_key_id).await?;
        if !held.iter().any(|k| k.group == group.name) {
            return Ok(StepOutcome::message(format!(
                "Skipped: {} (KMS key {kms_key_id} no longer holds a key of group {})",
                repair.describe(),
                group.name
            )));
        }
        let mut outcome = match &repair {
            Repair::ReimportMaterial { key_id, kms_key_id } => {
                job.progress.key_id = Some(*key_id);
                job.progress.kms_key_id = Some(kms_key_id.clone());
                job.progress.keep_disabled = false;
                let key = self.job_key(job).await?;
                self.import_material(job, key, kms, KmsKeyBefore::Unknown)
                    .await?
            }
            Repair::PutPolicy { kms_key_id } => match &group.aws.policy {
                Some(policy) => {
                    kms.put_key_policy(kms_key_id, policy).await?;
                    StepOutcome::message(format!(
                        "Put the key group's policy on KMS key {kms_key_id}"
                    ))
                }
                None => StepOutcome::message(format!(
                    "Skipped: key group {} has no policy any more, so KMS key {kms_key_id} keeps its own",
                    group.name
                )),
            },
            Repair::PointAlias { alias, kms_key_id } => {
                if &group.aws.alias != alias || group.aws.active_key_id.as_ref() != Some(kms_key_id)
                {
                    StepOutcome::message(format!(
                        "Skipped: {} (the key group's alias or active key changed since the plan was made)",
                        repair.describe()
                    ))
                } else {
                    kms.point_alias(alias, kms_key_id).await?;
                    StepOutcome::message(format!("Pointed alias {alias} at KMS key {kms_key_id}"))
                }
            }
            Repair::TagKey { kms_key_id, tags } => {
                kms.tag_key(kms_key_id, tags).await?;
                StepOutcome::message(format!("Tagged KMS key {kms_key_id} again"))
            }
            Repair::EnableKey { kms_key_id } => {
                kms.enable_key(kms_key_id).await?;
                StepOutcome::message(format!("Enabled KMS key {kms_key_id}"))
            }
            Repair::DisableKey { kms_key_id } => {
                kms.disable_key(kms_key_id).await?;
                StepOutcome::message(format!("Disabled KMS key {kms_key_id}"))
            }
            Repair::CancelDeletion { kms_key_id, enable } => {
                let info = kms.describe_key(kms_key_id).await?;
                if info.state == KeyState::PendingDeletion {
                    kms.cancel_key_deletion(kms_key_id).await?;
                }
                let info = kms.describe_key(kms_key_id).await?;
                if *enable && info.state == KeyState::Disabled {
                    kms.enable_key(kms_key_id).await?;
                }
                StepOutcome::message(format!(
                    "Cancelled the scheduled deletion of KMS key {kms_key_id}{}",
                    if *enable {
                        "; it is enabled again"
                    } else {
                        "; it stays disabled, as keyhold records it"
                    }
                ))
            }
        };
        let automatically = matches!(job.kind, JobKind::CheckDrift { .. });
        outcome.audit = Some(
            self.record(
                job.initiator.users(),
                audit_text::repaired(group.name.as_str(), &repair.describe(), automatically),
            )
            .with_details(serde_json::json!({
                "job": job.id,
                "repair": repair,
            })),
        );
        Ok(outcome)
    }
}

/// What AWS holds of one KMS key of the group: its description, then (if
/// AWS knows it) its tags, its policy when the group has one and it is not
/// on its way out, and its materials when several versions share it.
async fn observe_key(
    kms: &dyn CloudKms,
    kms_key_id: KmsKeyId,
    with_policy: bool,
    shared: bool,
) -> CoreResult<ObservedKey> {
    let info = match kms.describe_key(&kms_key_id).await {
        Ok(info) => Some(info),
        Err(CloudError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let present = info
        .as_ref()
        .is_some_and(|i| i.state != KeyState::PendingDeletion);
    let policy = if present && with_policy {
        Some(kms.get_key_policy(&kms_key_id).await?)
    } else {
        None
    };
    let tags = if info.is_some() {
        kms.list_tags(&kms_key_id).await?
    } else {
        Vec::new()
    };
    let materials = if present && shared {
        Some(kms.list_key_materials(&kms_key_id).await?)
    } else {
        None
    };
    Ok(ObservedKey {
        kms_key_id,
        info,
        policy,
        tags,
        materials,
    })
}

/// `candidate`, a KMS key keyhold holds no key in, when it is tagged with
/// the group and not pending deletion.
async fn stray(
    kms: &dyn CloudKms,
    candidate: KmsKeyId,
    group: &KeyGroup,
) -> CoreResult<Option<KmsKeyId>> {
    let tags = match kms.list_tags(&candidate).await {
        Ok(tags) => tags,
        // Deleted since ListKeys, or another team's key this credential
        // may not read: not keyhold's.
        Err(CloudError::NotFound { .. } | CloudError::AccessDenied { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if !tags
        .iter()
        .any(|(k, v)| k == GROUP_TAG && v == group.name.as_str())
    {
        return Ok(None);
    }
    match kms.describe_key(&candidate).await {
        Ok(info) if info.state == KeyState::PendingDeletion => Ok(None),
        Ok(_) => Ok(Some(candidate)),
        Err(CloudError::NotFound { .. } | CloudError::AccessDenied { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
