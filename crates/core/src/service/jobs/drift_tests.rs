//! Drift checks, self-heal and reconciliation against the fakes: drift made
//! behind keyhold's back in the fake KMS, found, recorded with its audit
//! entries, repaired (by self-heal or by officers' plan), and cleared by the
//! check that follows; a reconciliation resumed after any interruption.

use std::sync::Arc;

use super::JobRuntime;
use super::tests::{POLICY, World, crash_at, group_name};
use crate::clock::Timestamp;
use crate::cloud::aws::{Alias, KeyMaterialId, KeyPolicy, KmsKeyId, Region};
use crate::cloud::{
    CloudConnector, CloudError, CloudKeyInfo, CloudKms, CloudMaterial, ImportParameters,
    MaterialImport, WrappingAlgorithm,
};
use crate::credential::{CloudService, Credential};
use crate::drift::{DriftFilter, DriftKind, Repair};
use crate::error::CoreError;
use crate::identity::{Role, Session, SessionIdentity};
use crate::job::{Checkpoint, GROUP_TAG, Job, JobKind, JobStatus, Step};
use crate::key::KeyState;
use crate::names::{GroupName, IdentityName};
use crate::ports::NoHooks;
use crate::testing::FakeKms;

const ALIAS: &str = "alias/payments";

fn session(names: &[&str]) -> Session {
    Session {
        id: "s".into(),
        identities: names
            .iter()
            .map(|n| SessionIdentity {
                name: IdentityName::parse(n).unwrap(),
                role: Role::KeyOfficer,
            })
            .collect(),
        created_at: chrono::DateTime::UNIX_EPOCH,
        last_seen: chrono::DateTime::UNIX_EPOCH,
        grant: None,
    }
}

/// Two rotations: the old KMS key disabled, the new one enabled under the alias.
async fn rotated_twice() -> (Arc<World>, KmsKeyId, KmsKeyId) {
    let w = Arc::new(World::new());
    let old = w.rotate().await.progress.kms_key_id.unwrap();
    let new = w.rotate().await.progress.kms_key_id.unwrap();
    (w, old, new)
}

async fn check(w: &World) -> Job {
    let job = w
        .keyhold
        .start_drift_check(&session(&["Off1"]), &group_name())
        .await
        .unwrap();
    let done = w.run(&job, &NoHooks).await.unwrap();
    assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
    done
}

fn open_kinds(w: &World) -> Vec<(DriftKind, String)> {
    w.store
        .snapshot()
        .open_drift()
        .into_iter()
        .map(|f| (f.kind, f.subject.clone()))
        .collect()
}

fn summaries_starting(w: &World, prefix: &str) -> Vec<String> {
    w.store
        .snapshot()
        .audit_summaries()
        .into_iter()
        .filter(|s| s.starts_with(prefix))
        .collect()
}

#[tokio::test]
async fn a_check_records_drift_made_behind_keyholds_back_and_clears_it_once_gone() {
    let (w, old, new) = rotated_twice().await;
    check(&w).await;
    assert_eq!(open_kinds(&w), Vec::new(), "AWS as keyhold left it");

    let before = w.kms.snapshot();
    let stray = w.kms.add_external_key(None);
    w.kms.alter(|kms| {
        kms.aliases.remove(ALIAS);
        kms.keys.get_mut(&new).unwrap().state = KeyState::Disabled;
        kms.keys.get_mut(&new).unwrap().tags.clear();
        kms.keys.get_mut(&old).unwrap().policy =
            Some(KeyPolicy::parse(&POLICY.replace("kms:*", "kms:Decrypt")).unwrap());
        kms.keys
            .get_mut(&stray)
            .unwrap()
            .tags
            .push((GROUP_TAG.into(), group_name().to_string()));
    });
    let job = check(&w).await;
    let mut expected = vec![
        (DriftKind::StateDiffers, new.to_string()),
        (DriftKind::AliasMissing, ALIAS.to_string()),
        (DriftKind::PolicyDiffers, old.to_string()),
        (DriftKind::TagsMissing, new.to_string()),
        (DriftKind::UnknownKey, stray.to_string()),
    ];
    expected.sort();
    let mut found = open_kinds(&w);
    found.sort();
    assert_eq!(found, expected);
    assert_eq!(summaries_starting(&w, "Drift found: ").len(), 5);
    let store = w.store.snapshot();
    let checked = &store.drift_checks[&group_name()];
    assert_eq!((checked.job_id, checked.open), (job.id, 5));
    // A check only reads: keyhold wrote nothing to AWS, and its record stands.
    let kms = w.kms.snapshot();
    for write in [
        "put_key_policy",
        "point_alias",
        "tag_key",
        "enable_key",
        "import_key_material",
    ] {
        assert_eq!(kms.calls_of(write), before.calls_of(write), "{write}");
    }
    assert_eq!(
        store
            .keys
            .values()
            .find(|k| k.kms_key_id.as_ref() == Some(&new))
            .unwrap()
            .state,
        KeyState::Enabled
    );

    // Seen again: same findings, same ids, no new entries.
    let ids: Vec<_> = w
        .store
        .snapshot()
        .open_drift()
        .iter()
        .map(|f| f.id)
        .collect();
    w.clock.advance(chrono::Duration::hours(1));
    check(&w).await;
    let again: Vec<_> = w
        .store
        .snapshot()
        .open_drift()
        .iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(ids, again);
    assert_eq!(summaries_starting(&w, "Drift found: ").len(), 5);

    // Put right by hand in AWS: the next check clears all but the stray.
    w.kms.alter(|kms| {
        kms.aliases.insert(ALIAS.into(), new.clone());
        let key = kms.keys.get_mut(&new).unwrap();
        key.state = KeyState::Enabled;
        key.tags = before.keys[&new].tags.clone();
        kms.keys.get_mut(&old).unwrap().policy = before.keys[&old].policy.clone();
    });
    check(&w).await;
    assert_eq!(
        open_kinds(&w),
        vec![(DriftKind::UnknownKey, stray.to_string())]
    );
    assert_eq!(summaries_starting(&w, "Drift cleared: ").len(), 4);
    let history = w
        .keyhold
        .list_drift(
            &session(&["Off1"]),
            &DriftFilter {
                include_cleared: true,
                ..DriftFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(history.len(), 5);
    assert!(history[1..].iter().all(|f| f.cleared_at.is_some()));
}

#[tokio::test]
async fn deleted_material_and_a_pending_deletion_are_found() {
    let (w, old, new) = rotated_twice().await;
    w.kms.alter(|kms| {
        let key = kms.keys.get_mut(&new).unwrap();
        key.material = None;
        key.state = KeyState::PendingImport;
        let key = kms.keys.get_mut(&old).unwrap();
        key.state = KeyState::PendingDeletion;
        key.deletion_date = Some(super::tests::start() + chrono::Duration::days(7));
    });
    check(&w).await;
    let mut found = open_kinds(&w);
    found.sort();
    assert_eq!(
        found,
        vec![
            (DriftKind::PendingDeletion, old.to_string()),
            (DriftKind::MaterialDeleted, new.to_string()),
        ]
    );
}

#[tokio::test]
async fn self_heal_repairs_the_safe_findings_and_leaves_the_rest_for_officers() {
    let (w, _, new) = rotated_twice().await;
    w.change_group(|g| g.aws.self_heal = true);
    let tags = w.kms.snapshot().keys[&new].tags.clone();
    w.kms.alter(|kms| {
        kms.aliases.remove(ALIAS);
        let key = kms.keys.get_mut(&new).unwrap();
        key.tags.clear();
        key.material = None;
        key.state = KeyState::PendingImport;
    });
    let job = check(&w).await;
    assert_eq!(job.progress.repairs.len(), 3, "{:?}", job.progress.repairs);
    assert_eq!(
        job.progress.steps,
        vec![
            Step::CheckDrift,
            Step::Repair(0),
            Step::Repair(1),
            Step::Repair(2),
            Step::Recheck
        ]
    );
    let kms = w.kms.snapshot();
    assert_eq!(kms.alias(ALIAS), Some(&new));
    // keyhold's tags are back (the job id tag named a job long finished:
    // keyhold finds keys by it only while that job runs).
    for tag in tags.iter().filter(|(k, _)| k != crate::job::JOB_TAG) {
        assert!(kms.keys[&new].tags.contains(tag), "{tag:?}");
    }
    assert_eq!(kms.keys[&new].state, KeyState::Enabled);
    assert_eq!(open_kinds(&w), Vec::new());
    assert_eq!(summaries_starting(&w, "Self-heal repaired drift").len(), 3);
    assert_eq!(summaries_starting(&w, "Drift cleared: ").len(), 3);

    // A key someone disabled on purpose waits for officers.
    w.kms
        .alter(|kms| kms.keys.get_mut(&new).unwrap().state = KeyState::Disabled);
    let job = check(&w).await;
    assert!(job.progress.repairs.is_empty());
    assert_eq!(w.kms.snapshot().keys[&new].state, KeyState::Disabled);
    assert_eq!(
        open_kinds(&w),
        vec![(DriftKind::StateDiffers, new.to_string())]
    );
}

#[tokio::test]
async fn officers_apply_the_plan_they_were_shown_and_only_that_one() {
    let (w, old, new) = rotated_twice().await;
    w.kms.alter(|kms| {
        kms.keys.get_mut(&new).unwrap().state = KeyState::Disabled;
        kms.keys.get_mut(&old).unwrap().state = KeyState::PendingDeletion;
    });
    check(&w).await;
    let officers = session(&["Off1", "Off2"]);
    let plan = w
        .keyhold
        .drift_plan(&officers, &group_name())
        .await
        .unwrap();
    assert_eq!(
        plan.plan.repairs(),
        vec![
            Repair::CancelDeletion {
                kms_key_id: old.clone(),
                enable: false
            },
            Repair::EnableKey {
                kms_key_id: new.clone()
            },
        ]
    );
    // One officer alone may not write to AWS.
    let alone = w
        .keyhold
        .start_reconcile(&session(&["Off1"]), &group_name(), &plan.digest)
        .await;
    assert!(
        matches!(alone, Err(CoreError::DualControlRequired { .. })),
        "{alone:?}"
    );
    // A plan other than the one now due is refused.
    let stale = w
        .keyhold
        .start_reconcile(&officers, &group_name(), "0123")
        .await;
    assert!(
        matches!(stale, Err(CoreError::Conflict(ref m)) if m.contains("changed since it was read"))
    );
    assert!(
        w.store
            .snapshot()
            .jobs
            .iter()
            .all(|j| !matches!(j.kind, JobKind::Reconcile { .. }))
    );

    let job = w
        .keyhold
        .start_reconcile(&officers, &group_name(), &plan.digest)
        .await
        .unwrap();
    let done = w.run(&job, &NoHooks).await.unwrap();
    assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
    let kms = w.kms.snapshot();
    assert_eq!(kms.keys[&new].state, KeyState::Enabled);
    // The old key is disabled in keyhold's record: it stays so.
    assert_eq!(kms.keys[&old].state, KeyState::Disabled);
    assert_eq!(open_kinds(&w), Vec::new());
    assert_eq!(
        summaries_starting(&w, "Repaired drift of HSM protected key group payments").len(),
        2
    );
    assert_eq!(
        summaries_starting(
            &w,
            "Successfully reconciled HSM protected key group payments"
        )
        .len(),
        1
    );
    // Nothing left to apply.
    let plan = w
        .keyhold
        .drift_plan(&officers, &group_name())
        .await
        .unwrap();
    let empty = w
        .keyhold
        .start_reconcile(&officers, &group_name(), &plan.digest)
        .await;
    assert!(matches!(empty, Err(CoreError::Invalid(_))), "{empty:?}");
}

#[tokio::test]
async fn a_reconciliation_interrupted_at_any_commit_resumes_and_repairs_once() {
    let points = [
        Checkpoint::Start,
        Checkpoint::Step(Step::Repair(0)),
        Checkpoint::Step(Step::Repair(1)),
        Checkpoint::Step(Step::Recheck),
    ];
    for at in points {
        for committed in [false, true] {
            let label = format!("{} (committed: {committed})", at.as_str());
            let (w, _, new) = rotated_twice().await;
            w.kms.alter(|kms| {
                kms.aliases.remove(ALIAS);
                let key = kms.keys.get_mut(&new).unwrap();
                key.material = None;
                key.state = KeyState::PendingImport;
            });
            check(&w).await;
            let officers = session(&["Off1", "Off2"]);
            let plan = w
                .keyhold
                .drift_plan(&officers, &group_name())
                .await
                .unwrap();
            let job = w
                .keyhold
                .start_reconcile(&officers, &group_name(), &plan.digest)
                .await
                .unwrap();
            crash_at(&w, &job, at, committed).await;
            let resumed = w.run(&job, &NoHooks).await.unwrap();
            assert_eq!(
                resumed.status,
                JobStatus::Succeeded,
                "{label}: {:?}",
                resumed.error
            );
            let kms = w.kms.snapshot();
            assert_eq!(kms.alias(ALIAS), Some(&new), "{label}");
            assert_eq!(kms.keys[&new].state, KeyState::Enabled, "{label}");
            assert_eq!(open_kinds(&w), Vec::new(), "{label}");
            // Each repair's entry once, whatever was run twice.
            assert_eq!(
                summaries_starting(&w, "Repaired drift of").len(),
                2,
                "{label}"
            );
        }
    }
}

#[tokio::test]
async fn sixteen_checks_at_once_start_one_job() {
    let (w, _, _) = rotated_twice().await;
    let officer = session(&["Off1"]);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (w, officer) = (w.clone(), officer.clone());
            tokio::spawn(async move { w.keyhold.start_drift_check(&officer, &group_name()).await })
        })
        .collect();
    let mut starts = Vec::new();
    for task in tasks {
        starts.push(task.await.unwrap());
    }
    let started = starts.iter().filter(|r| r.is_ok()).count();
    assert_eq!(started, 1);
    assert!(
        starts
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, CoreError::Conflict(m) if m.contains("Check HSM protected keys")))
    );
}

#[tokio::test]
async fn the_schedule_checks_each_group_once_per_interval_and_a_failure_waits() {
    let (w, _, _) = rotated_twice().await;
    // A group keyhold just made waits one interval for its first check.
    assert!(
        w.keyhold
            .queue_due_drift_checks(10)
            .await
            .unwrap()
            .is_empty()
    );
    w.clock.advance(chrono::Duration::hours(24));
    let queued = w.keyhold.queue_due_drift_checks(10).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].initiator, crate::job::Initiator::Scheduler);
    // Queued, not run: the group has an unfinished job; nothing more.
    assert!(
        w.keyhold
            .queue_due_drift_checks(10)
            .await
            .unwrap()
            .is_empty()
    );
    w.run(&queued[0], &NoHooks).await.unwrap();
    w.clock.advance(chrono::Duration::hours(23));
    assert!(
        w.keyhold
            .queue_due_drift_checks(10)
            .await
            .unwrap()
            .is_empty()
    );
    w.clock.advance(chrono::Duration::hours(2));
    let next = w.keyhold.queue_due_drift_checks(10).await.unwrap();
    assert_eq!(next.len(), 1);
    // It fails (AWS away): the schedule waits an hour before trying again.
    w.kms.fail_next(
        "list_aliases",
        crate::cloud::CloudError::Transient {
            operation: "ListAliases",
            message: "down".into(),
        },
    );
    let failed = w.run(&next[0], &NoHooks).await.unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    w.clock.advance(chrono::Duration::minutes(30));
    assert!(
        w.keyhold
            .queue_due_drift_checks(10)
            .await
            .unwrap()
            .is_empty()
    );
    w.clock.advance(chrono::Duration::minutes(31));
    assert_eq!(w.keyhold.queue_due_drift_checks(10).await.unwrap().len(), 1);
    // Checks off: nothing is queued, however old the last one.
    let mut settings = w.store.snapshot().settings;
    settings.drift_check_hours = 0;
    w.store.replace_settings(settings);
    w.clock.advance(chrono::Duration::days(30));
    assert!(
        w.keyhold
            .queue_due_drift_checks(10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_failed_check_waiting_its_pause_leaves_its_place_to_the_next_due_group() {
    let (w, _, _) = rotated_twice().await;
    // A second group, made after the first: checked after it.
    let billing = GroupName::parse("billing").unwrap();
    let mut second = w.group();
    second.id = uuid::Uuid::new_v4();
    second.name = billing.clone();
    second.aws.alias = Alias::parse("alias/billing").unwrap();
    second.created_at = super::tests::start() + chrono::Duration::minutes(1);
    w.store.put_group(second);
    w.clock.advance(chrono::Duration::hours(25));
    let first = w.keyhold.queue_due_drift_checks(1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].kind.group(), &group_name());
    w.kms.fail_next(
        "list_aliases",
        crate::cloud::CloudError::Transient {
            operation: "ListAliases",
            message: "down".into(),
        },
    );
    let failed = w.run(&first[0], &NoHooks).await.unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    // One check a pass: the failed group waits, the other is not held up.
    let next = w.keyhold.queue_due_drift_checks(1).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].kind.group(), &billing);
}

#[tokio::test]
async fn a_rotation_due_during_a_check_waits_for_it_instead_of_a_whole_interval() {
    let (w, _, _) = rotated_twice().await;
    let due = super::tests::start() - chrono::Duration::minutes(1);
    w.change_group(|g| {
        g.rotate_every = Some(crate::interval::Interval::parse("30d").unwrap());
        g.next_rotation_at = Some(due);
    });
    let check = w
        .keyhold
        .start_drift_check(&session(&["Off1"]), &group_name())
        .await
        .unwrap();
    let pass = w.keyhold.run_schedule(None).await.unwrap();
    assert!(pass.started.is_empty());
    assert_eq!(pass.deferred.len(), 1);
    // Still due: the next pass, once the check has ended, rotates.
    assert_eq!(w.group().next_rotation_at, Some(due));
    w.run(&check, &NoHooks).await.unwrap();
    let pass = w.keyhold.run_schedule(None).await.unwrap();
    assert_eq!(pass.started.len(), 1, "{:?}", pass.deferred);
}

// Reads in flight: a check paced by its slowest operation, not by round trips.

/// A check's reads of one key take this long to be answered, each.
const ROUND_TRIP: std::time::Duration = std::time::Duration::from_millis(10);
/// GetKeyPolicy's turns, one per interval, as the adapter's pacing hands
/// them out (first come, first served; a caller that comes late gets the
/// next turn from then on).
const POLICY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// The fake KMS behind a round trip per read and GetKeyPolicy's pacing,
/// counting the reads under way at once; a read of a key in `failing`
/// fails with AccessDenied after its round trip (after `late` more for
/// the first of them).
struct SlowKms {
    inner: Arc<FakeKms>,
    policy_turn: std::sync::Mutex<Option<tokio::time::Instant>>,
    in_flight: std::sync::atomic::AtomicUsize,
    most_in_flight: std::sync::atomic::AtomicUsize,
    failing: Vec<KmsKeyId>,
    late: std::time::Duration,
}

impl SlowKms {
    fn new(inner: Arc<FakeKms>, failing: Vec<KmsKeyId>, late: std::time::Duration) -> Arc<Self> {
        Arc::new(Self {
            inner,
            policy_turn: std::sync::Mutex::new(None),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            most_in_flight: std::sync::atomic::AtomicUsize::new(0),
            failing,
            late,
        })
    }

    async fn round_trip<T>(
        &self,
        key: Option<&KmsKeyId>,
        answer: impl Future<Output = Result<T, CloudError>>,
    ) -> Result<T, CloudError> {
        use std::sync::atomic::Ordering;
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(ROUND_TRIP).await;
        let failing = key.and_then(|k| self.failing.iter().position(|f| f == k));
        if failing == Some(0) {
            tokio::time::sleep(self.late).await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        match failing {
            Some(_) => Err(CloudError::AccessDenied {
                operation: "DescribeKey",
                message: format!(
                    "not allowed to read {}",
                    key.map(|k| k.as_str()).unwrap_or("")
                ),
            }),
            None => answer.await,
        }
    }
}

#[async_trait::async_trait]
impl CloudKms for SlowKms {
    fn service(&self) -> CloudService {
        CloudService::Aws
    }
    async fn create_key(
        &self,
        description: &str,
        policy: Option<&KeyPolicy>,
        tags: &[(String, String)],
    ) -> Result<KmsKeyId, CloudError> {
        self.inner.create_key(description, policy, tags).await
    }
    async fn describe_key(&self, key_id: &KmsKeyId) -> Result<CloudKeyInfo, CloudError> {
        self.round_trip(Some(key_id), self.inner.describe_key(key_id))
            .await
    }
    async fn get_parameters_for_import(
        &self,
        key_id: &KmsKeyId,
        algorithm: WrappingAlgorithm,
    ) -> Result<ImportParameters, CloudError> {
        self.inner
            .get_parameters_for_import(key_id, algorithm)
            .await
    }
    async fn import_key_material(
        &self,
        key_id: &KmsKeyId,
        import_token: &[u8],
        encrypted_material: &[u8],
        valid_to: Option<Timestamp>,
        import: MaterialImport<'_>,
    ) -> Result<Option<KeyMaterialId>, CloudError> {
        self.inner
            .import_key_material(key_id, import_token, encrypted_material, valid_to, import)
            .await
    }
    async fn delete_imported_key_material(
        &self,
        key_id: &KmsKeyId,
        material: Option<&KeyMaterialId>,
    ) -> Result<(), CloudError> {
        self.inner
            .delete_imported_key_material(key_id, material)
            .await
    }
    async fn rotate_key_on_demand(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        self.inner.rotate_key_on_demand(key_id).await
    }
    async fn list_key_materials(
        &self,
        key_id: &KmsKeyId,
    ) -> Result<Vec<CloudMaterial>, CloudError> {
        self.round_trip(None, self.inner.list_key_materials(key_id))
            .await
    }
    async fn point_alias(&self, alias: &Alias, key_id: &KmsKeyId) -> Result<(), CloudError> {
        self.inner.point_alias(alias, key_id).await
    }
    async fn disable_key(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        self.inner.disable_key(key_id).await
    }
    async fn put_key_policy(
        &self,
        key_id: &KmsKeyId,
        policy: &KeyPolicy,
    ) -> Result<(), CloudError> {
        self.inner.put_key_policy(key_id, policy).await
    }
    async fn find_keys_tagged(&self, key: &str, value: &str) -> Result<Vec<KmsKeyId>, CloudError> {
        self.inner.find_keys_tagged(key, value).await
    }
    async fn get_key_policy(&self, key_id: &KmsKeyId) -> Result<KeyPolicy, CloudError> {
        let turn = {
            let mut next = self.policy_turn.lock().unwrap();
            let now = tokio::time::Instant::now();
            let turn = next.filter(|free| *free > now).unwrap_or(now);
            *next = Some(turn + POLICY_INTERVAL);
            turn
        };
        tokio::time::sleep_until(turn).await;
        self.round_trip(None, self.inner.get_key_policy(key_id))
            .await
    }
    async fn list_aliases(&self) -> Result<Vec<(Alias, KmsKeyId)>, CloudError> {
        self.round_trip(None, self.inner.list_aliases()).await
    }
    async fn list_key_ids(&self) -> Result<Vec<KmsKeyId>, CloudError> {
        self.round_trip(None, self.inner.list_key_ids()).await
    }
    async fn list_tags(&self, key_id: &KmsKeyId) -> Result<Vec<(String, String)>, CloudError> {
        self.round_trip(None, self.inner.list_tags(key_id)).await
    }
    async fn tag_key(
        &self,
        key_id: &KmsKeyId,
        tags: &[(String, String)],
    ) -> Result<(), CloudError> {
        self.inner.tag_key(key_id, tags).await
    }
    async fn enable_key(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        self.inner.enable_key(key_id).await
    }
    async fn cancel_key_deletion(&self, key_id: &KmsKeyId) -> Result<(), CloudError> {
        self.inner.cancel_key_deletion(key_id).await
    }
}

struct SlowConnector(Arc<SlowKms>);

#[async_trait::async_trait]
impl CloudConnector for SlowConnector {
    fn service(&self) -> CloudService {
        CloudService::Aws
    }
    async fn connect(
        &self,
        _: &Credential,
        _: Option<secrecy::SecretString>,
        _: &Region,
    ) -> Result<Arc<dyn CloudKms>, CloudError> {
        Ok(self.0.clone())
    }
}

/// Runs a check of the group through `kms`: the job, and how long it took
/// on tokio's clock.
async fn check_through(w: &World, kms: &Arc<SlowKms>) -> (Job, std::time::Duration) {
    let job = w
        .keyhold
        .start_drift_check(&session(&["Off1"]), &group_name())
        .await
        .unwrap();
    let connector = SlowConnector(kms.clone());
    let runtime = JobRuntime {
        connector: &connector,
        hooks: &NoHooks,
        fence: None,
    };
    let started = tokio::time::Instant::now();
    let done = w.keyhold.run_job(job.id, &runtime).await.unwrap();
    (done, started.elapsed())
}

/// Keys of the group that [`slow_group`] makes, one KMS key each.
const SLOW_GROUP_KEYS: usize = 40;

/// A group of [`SLOW_GROUP_KEYS`] KMS keys (the last active), oldest first.
async fn slow_group() -> (World, Vec<KmsKeyId>) {
    let w = World::new();
    let mut kms_keys = Vec::new();
    for _ in 0..SLOW_GROUP_KEYS {
        kms_keys.push(w.rotate().await.progress.kms_key_id.unwrap());
    }
    (w, kms_keys)
}

#[tokio::test(start_paused = true)]
async fn a_check_keeps_keys_in_flight_so_its_time_is_the_slowest_operations_turns() {
    let (w, kms_keys) = slow_group().await;
    // Drift on keys spread over the group, found as one key at a time would.
    w.kms.alter(|kms| {
        kms.keys.get_mut(&kms_keys[3]).unwrap().policy =
            Some(KeyPolicy::parse(&POLICY.replace("kms:*", "kms:Decrypt")).unwrap());
        kms.keys.get_mut(&kms_keys[17]).unwrap().tags.clear();
        kms.keys.get_mut(&kms_keys[30]).unwrap().state = KeyState::Enabled;
    });
    let slow = SlowKms::new(w.kms.clone(), Vec::new(), std::time::Duration::ZERO);
    let (job, took) = check_through(&w, &slow).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    let mut found = open_kinds(&w);
    found.sort();
    let mut expected = vec![
        (DriftKind::PolicyDiffers, kms_keys[3].to_string()),
        (DriftKind::TagsMissing, kms_keys[17].to_string()),
        (DriftKind::StateDiffers, kms_keys[30].to_string()),
    ];
    expected.sort();
    assert_eq!(found, expected);
    // The audit entries in the order of the findings (by kind), whichever
    // key's reads were answered first.
    let entries = summaries_starting(&w, "Drift found: ");
    assert_eq!(entries.len(), 3);
    for (entry, key) in entries.iter().zip([30, 3, 17]) {
        assert!(entry.contains(kms_keys[key].as_str()), "{entries:?}");
    }

    // One key after the other, each key would take three round trips (30
    // ms); in flight, the keys take GetKeyPolicy's turns one after the
    // other, 10 ms apart, and the round trips of the last key and of the
    // listings come on top.
    let turns = POLICY_INTERVAL * u32::try_from(SLOW_GROUP_KEYS).unwrap();
    assert!(took >= turns, "{took:?}");
    assert!(took <= turns + ROUND_TRIP * 5, "{took:?}");
    let most = slow
        .most_in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (2..=crate::drift::KEYS_IN_FLIGHT + 2).contains(&most),
        "{most} reads at once"
    );
}

#[tokio::test(start_paused = true)]
async fn of_two_keys_whose_reads_fail_the_first_in_key_order_fails_the_check() {
    let (w, mut kms_keys) = slow_group().await;
    // A check reads the KMS keys in the order of their ids.
    kms_keys.sort();
    // The first key's refusal comes long after the second's.
    let slow = SlowKms::new(
        w.kms.clone(),
        vec![kms_keys[5].clone(), kms_keys[8].clone()],
        std::time::Duration::from_secs(1),
    );
    let (job, _) = check_through(&w, &slow).await;
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap_or_default();
    assert!(error.contains(kms_keys[5].as_str()), "{error}");
    assert_eq!(open_kinds(&w), Vec::new());
}
