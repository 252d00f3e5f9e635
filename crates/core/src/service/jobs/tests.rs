//! Every step of every job kind against the fakes of [`crate::testing`]:
//! what each step leaves in KMS and in the store, resumption after each
//! commit, and the failures the steps must handle (expired tokens, refused
//! material, throttling, a stale fence).

use std::sync::{Arc, Mutex};

use super::JobRuntime;
use crate::clock::{ManualClock, Timestamp};
use crate::cloud::aws::{Alias, Description, KeyPolicy, Region};
use crate::cloud::{CloudError, OperationPacing};
use crate::credential::{CloudService, Credential, CredentialKind};
use crate::error::{CoreError, StoreError};
use crate::group::{
    AtRotationLimit, AwsProperties, GroupInfo, KeyGroup, KeySpec, RotationStrategy,
};
use crate::job::{Checkpoint, Initiator, Job, JobKind, JobProgress, JobStatus, Step, SyncOptions};
use crate::key::{KeyState, MaterialState};
use crate::names::{CredentialName, GroupName};
use crate::ports::{JobHooks, NoHooks};
use crate::service::Keyhold;
use crate::testing::{FakeConnector, FakeKeystore, FakeKms, FakeStore};

const ALIAS: &str = "alias/payments";
pub(super) const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*"}]}"#;

pub(super) fn start() -> Timestamp {
    chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

pub(super) fn group_name() -> GroupName {
    GroupName::parse("payments").unwrap()
}

pub(super) struct World {
    pub(super) keyhold: Keyhold,
    pub(super) store: Arc<FakeStore>,
    pub(super) keystore: Arc<FakeKeystore>,
    pub(super) kms: Arc<FakeKms>,
    pub(super) connector: FakeConnector,
    pub(super) clock: Arc<ManualClock>,
}

impl World {
    pub(super) fn new() -> Self {
        let store = Arc::new(FakeStore::new());
        let keystore = Arc::new(FakeKeystore::new());
        let kms = FakeKms::new();
        let credential = CredentialName::parse("aws-test").unwrap();
        store.put_credential(Credential {
            id: uuid::Uuid::new_v4(),
            name: credential.clone(),
            service: CloudService::Aws,
            kind: CredentialKind::DefaultChain { role_arn: None },
            endpoint: None,
            created_at: start(),
        });
        store.put_group(KeyGroup {
            id: uuid::Uuid::new_v4(),
            name: group_name(),
            service: CloudService::Aws,
            credential,
            spec: KeySpec,
            rotate_every: None,
            valid_for: None,
            info: GroupInfo::default(),
            aws: AwsProperties {
                alias: Alias::parse(ALIAS).unwrap(),
                description: Description::parse("payments").unwrap(),
                region: Region::parse("eu-west-1").unwrap(),
                active_key_id: None,
                policy: Some(KeyPolicy::parse(POLICY).unwrap()),
                disable_after_rotate: true,
                rotation: crate::group::RotationStrategy::NewKey,
                at_rotation_limit: crate::group::AtRotationLimit::NewKey,
                self_heal: false,
            },
            created_at: start(),
            updated_at: start(),
            next_rotation_at: None,
        });
        let clock = Arc::new(ManualClock::new(start()));
        let keyhold = Keyhold::new(store.clone(), keystore.clone(), clock.clone());
        let connector = FakeConnector { kms: kms.clone() };
        Self {
            keyhold,
            store,
            keystore,
            kms,
            connector,
            clock,
        }
    }

    pub(super) fn group(&self) -> KeyGroup {
        self.store.snapshot().groups[&group_name()].clone()
    }

    pub(super) fn change_group(&self, change: impl FnOnce(&mut KeyGroup)) {
        let mut group = self.group();
        change(&mut group);
        self.store.put_group(group);
    }

    pub(super) async fn queue_rotation(&self) -> Job {
        self.keyhold
            .queue_rotation(&Initiator::Officers("Admin1,Admin2".into()), &group_name())
            .await
            .unwrap()
    }

    pub(super) async fn run(&self, job: &Job, hooks: &dyn JobHooks) -> Result<Job, CoreError> {
        let runtime = JobRuntime {
            connector: &self.connector,
            hooks,
            fence: None,
        };
        self.keyhold.run_job(job.id, &runtime).await
    }

    pub(super) async fn rotate(&self) -> Job {
        let job = self.queue_rotation().await;
        self.run(&job, &NoHooks).await.unwrap()
    }

    /// Queues a synchronization of the rotation's key, as Cloud → Synchronize does.
    fn queue_synchronization(&self, rotation: &Job, options: SyncOptions) -> Job {
        let kms_key_id = rotation.progress.kms_key_id.clone().unwrap();
        let mut progress = JobProgress::new(Step::synchronize(options));
        progress.key_id = rotation.progress.key_id;
        progress.kms_key_id = Some(kms_key_id.clone());
        let job = Job {
            id: uuid::Uuid::new_v4(),
            kind: JobKind::Synchronize {
                key_id: rotation.progress.key_id.unwrap(),
                key_name: kms_key_id.to_string(),
                group: group_name(),
                options,
            },
            status: JobStatus::Queued,
            initiator: Initiator::Officers("Admin1".into()),
            created_at: start(),
            started_at: None,
            finished_at: None,
            progress,
            error: None,
            attempts: 0,
        };
        self.store.put_job(job.clone());
        job
    }

    fn messages(&self, job: &Job) -> Vec<String> {
        self.store.snapshot().messages_of(job.id)
    }

    fn material_of(&self, job: &Job) -> Vec<u8> {
        self.keystore
            .material(job.progress.key_id.unwrap())
            .unwrap()
    }
}

fn assert_step_message(messages: &[String], step: usize, of: usize, starts: &str) {
    let prefix = format!("Step {step} of {of}: {starts}");
    assert!(
        messages.iter().any(|m| m.starts_with(&prefix)),
        "no message starting {prefix:?} in {messages:#?}"
    );
}

// Rotate, step by step

#[tokio::test]
async fn a_first_rotation_runs_every_step_and_makes_the_new_key_active() {
    let w = World::new();
    let job = w.rotate().await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert_eq!(job.progress.done, Step::ROTATE.to_vec());

    // CreateKmsKey: one KMS key, tagged with the job, its key and group.
    let kms = w.kms.snapshot();
    assert_eq!(kms.calls_of("create_key"), 1);
    let kms_key_id = job.progress.kms_key_id.clone().unwrap();
    let kms_key = &kms.keys[&kms_key_id];
    assert!(
        kms_key
            .tags
            .contains(&(crate::job::JOB_TAG.to_owned(), job.id.to_string()))
    );
    // ImportMaterial: the keystore's material, and the key enabled.
    assert_eq!(kms_key.material.as_ref(), Some(&w.material_of(&job)));
    assert_eq!(kms_key.state, KeyState::Enabled);
    assert_eq!(
        job.progress.wrapping,
        Some(crate::cloud::WrappingAlgorithm::RsaAesKeyWrapSha256)
    );
    // MoveAlias.
    assert_eq!(kms.alias(ALIAS), Some(&kms_key_id));

    let store = w.store.snapshot();
    // GenerateKey: version 1, no previous key.
    let key = store.key_by_kms_id(&kms_key_id).unwrap();
    assert_eq!((key.version, key.state), (1, KeyState::Enabled));
    assert_eq!(job.progress.previous_kms_key_id, None);
    // Activate.
    assert_eq!(
        store.groups[&group_name()].aws.active_key_id,
        Some(kms_key_id)
    );

    let messages = w.messages(&job);
    assert_step_message(&messages, 1, 6, "Generated AES-256 key version 1");
    assert_step_message(&messages, 2, 6, "Created KMS key");
    assert_step_message(&messages, 3, 6, "Imported the key material into KMS key");
    assert_step_message(
        &messages,
        4,
        6,
        "Alias alias/payments now points to KMS key",
    );
    assert_step_message(&messages, 5, 6, "No previous key to disable");
    assert_step_message(&messages, 6, 6, "KMS key");
    let audit = store.audit_summaries();
    assert!(audit.contains(&"Started rotating keys for HSM protected key group payments".into()));
    assert!(
        audit.contains(&"Successfully rotated keys for HSM protected key group payments.".into())
    );
    assert_eq!(store.audit.last().unwrap().users, "Admin1,Admin2");
}

#[tokio::test]
async fn a_second_rotation_disables_the_previous_key_when_the_group_says_so() {
    let w = World::new();
    let first = w.rotate().await;
    let second = w.rotate().await;
    assert_eq!(second.status, JobStatus::Succeeded, "{:?}", second.error);
    let old = first.progress.kms_key_id.clone().unwrap();
    let new = second.progress.kms_key_id.clone().unwrap();
    assert_eq!(second.progress.previous_kms_key_id.as_ref(), Some(&old));

    let kms = w.kms.snapshot();
    assert_eq!(kms.keys[&old].state, KeyState::Disabled);
    assert_eq!(kms.keys[&new].state, KeyState::Enabled);
    assert_eq!(kms.alias(ALIAS), Some(&new));
    let store = w.store.snapshot();
    assert_eq!(store.key_by_kms_id(&old).unwrap().state, KeyState::Disabled);
    assert_eq!(store.key_by_kms_id(&new).unwrap().version, 2);
    assert_eq!(store.groups[&group_name()].aws.active_key_id, Some(new));
    assert_step_message(
        &w.messages(&second),
        5,
        6,
        &format!("Disabled the previous KMS key {old}"),
    );
}

#[tokio::test]
async fn a_rotation_asks_kms_nothing_its_own_run_was_told() {
    let w = World::new();
    let first = w.rotate().await;
    let calls_before = w.kms.snapshot().calls.len();
    let second = w.rotate().await;
    assert_eq!(second.status, JobStatus::Succeeded, "{:?}", second.error);
    // The key this run created awaits its import, the import enables it, and
    // the disable that KMS answered disabled the previous one: no DescribeKey.
    let kms = w.kms.snapshot();
    assert_eq!(
        kms.calls[calls_before..],
        [
            "create_key",
            "get_parameters_for_import",
            "import_key_material",
            "point_alias",
            "disable_key",
        ]
    );
    // What keyhold records is what KMS holds.
    let store = w.store.snapshot();
    for job in [&first, &second] {
        let kms_key_id = job.progress.kms_key_id.clone().unwrap();
        assert_eq!(
            store.key_by_kms_id(&kms_key_id).unwrap().state,
            kms.keys[&kms_key_id].state,
            "{kms_key_id}"
        );
    }
}

#[tokio::test]
async fn a_rotation_resumed_after_creating_its_key_asks_kms_before_importing() {
    let w = Arc::new(World::new());
    let job = w.queue_rotation().await;
    crash_at(&w, &job, Checkpoint::Step(Step::CreateKmsKey), true).await;
    let calls_before = w.kms.snapshot().calls.len();
    let resumed = w.run(&job, &NoHooks).await.unwrap();
    assert_eq!(resumed.status, JobStatus::Succeeded, "{:?}", resumed.error);
    // Another run created the key: it may already hold the material.
    let kms = w.kms.snapshot();
    assert_eq!(
        kms.calls[calls_before..calls_before + 2],
        ["describe_key", "get_parameters_for_import"]
    );
    let kms_key_id = resumed.progress.kms_key_id.clone().unwrap();
    assert_eq!(kms.keys[&kms_key_id].state, KeyState::Enabled);
    assert_eq!(
        w.store.snapshot().key_by_kms_id(&kms_key_id).unwrap().state,
        KeyState::Enabled
    );
}

#[tokio::test]
async fn a_previous_key_kms_would_not_disable_is_recorded_as_kms_describes_it() {
    let w = World::new();
    let first = w.rotate().await;
    let old = first.progress.kms_key_id.clone().unwrap();
    // Scheduled for deletion in AWS behind keyhold's back.
    w.kms.alter(|kms| {
        kms.keys.get_mut(&old).unwrap().state = KeyState::PendingDeletion;
    });
    let second = w.rotate().await;
    assert_eq!(second.status, JobStatus::Succeeded, "{:?}", second.error);
    assert_eq!(
        w.store.snapshot().key_by_kms_id(&old).unwrap().state,
        KeyState::PendingDeletion
    );
    assert_step_message(
        &w.messages(&second),
        5,
        6,
        &format!("The previous KMS key {old} could not be disabled"),
    );
}

#[tokio::test]
async fn with_disable_after_rotate_off_the_previous_key_stays_enabled() {
    let w = World::new();
    w.change_group(|g| g.aws.disable_after_rotate = false);
    let first = w.rotate().await;
    let second = w.rotate().await;
    assert_eq!(second.status, JobStatus::Succeeded, "{:?}", second.error);
    let old = first.progress.kms_key_id.clone().unwrap();
    assert_eq!(w.kms.snapshot().keys[&old].state, KeyState::Enabled);
    assert_eq!(w.kms.snapshot().calls_of("disable_key"), 0);
    assert_eq!(
        w.store.snapshot().key_by_kms_id(&old).unwrap().state,
        KeyState::Enabled
    );
    assert_step_message(
        &w.messages(&second),
        5,
        6,
        &format!("Disable key after rotating is off: KMS key {old} stays enabled"),
    );
}

#[tokio::test]
async fn a_placeholder_awaiting_its_first_import_is_used_instead_of_a_new_key() {
    let w = World::new();
    let placeholder = w.kms.add_external_key(None);
    w.change_group(|g| g.aws.active_key_id = Some(placeholder.clone()));
    let job = w.rotate().await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert!(job.progress.used_placeholder);
    assert_eq!(job.progress.kms_key_id.as_ref(), Some(&placeholder));
    // Not a previous key: the placeholder was never keyhold's.
    assert_eq!(job.progress.previous_kms_key_id, None);

    let kms = w.kms.snapshot();
    assert_eq!(kms.calls_of("create_key"), 0);
    assert_eq!(kms.keys.len(), 1);
    assert_eq!(
        kms.keys[&placeholder].material.as_ref(),
        Some(&w.material_of(&job))
    );
    assert_eq!(kms.alias(ALIAS), Some(&placeholder));
    assert_step_message(&w.messages(&job), 2, 6, "Using the placeholder KMS key");
}

// Failures of the rotate steps

#[tokio::test]
async fn an_expired_import_token_is_replaced_and_the_import_retried() {
    let w = World::new();
    w.kms.fail_next(
        "import_key_material",
        CloudError::ExpiredImportToken {
            operation: "ImportKeyMaterial",
        },
    );
    let job = w.rotate().await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    let kms = w.kms.snapshot();
    assert_eq!(kms.calls_of("get_parameters_for_import"), 2);
    assert_eq!(kms.calls_of("import_key_material"), 2);
}

#[tokio::test]
async fn three_expired_import_tokens_in_a_row_fail_the_job() {
    let w = World::new();
    for _ in 0..3 {
        w.kms.fail_next(
            "import_key_material",
            CloudError::ExpiredImportToken {
                operation: "ImportKeyMaterial",
            },
        );
    }
    let job = w.rotate().await;
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap();
    assert!(
        error.starts_with("step 3 of 6, wrap and import the key material"),
        "{error}"
    );
    assert!(error.contains("import token expired"), "{error}");
    let kms = w.kms.snapshot();
    assert_eq!(kms.calls_of("import_key_material"), 3);
    assert_eq!(kms.alias(ALIAS), None);
    assert_eq!(w.group().aws.active_key_id, None);
}

#[tokio::test]
async fn material_kms_refuses_fails_the_job_and_leaves_the_alias_alone() {
    let w = World::new();
    // A placeholder once given other material: KMS takes only that again.
    let placeholder = w.kms.add_external_key(Some(b"other material".to_vec()));
    w.change_group(|g| g.aws.active_key_id = Some(placeholder.clone()));
    let job = w.rotate().await;
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.clone().unwrap();
    assert!(error.contains("KMS refused the key material"), "{error}");
    assert!(error.contains("The alias was not moved"), "{error}");

    let kms = w.kms.snapshot();
    assert_eq!(kms.alias(ALIAS), None);
    assert_eq!(kms.keys[&placeholder].state, KeyState::PendingImport);
    assert_eq!(kms.calls_of("point_alias"), 0);
    let store = w.store.snapshot();
    assert!(
        store
            .audit_summaries()
            .contains(&"Failed to rotate keys for HSM protected key group payments.".into())
    );
}

#[tokio::test]
async fn throttling_fails_the_job_with_the_reason_and_nothing_half_done() {
    let w = World::new();
    w.kms.fail_next(
        "create_key",
        CloudError::Throttled {
            operation: "CreateKey",
            message: "Rate exceeded".into(),
        },
    );
    let job = w.rotate().await;
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap();
    assert!(
        error.starts_with("step 2 of 6, create the KMS key"),
        "{error}"
    );
    assert!(error.contains("throttling requests"), "{error}");
    assert!(error.contains("Rate exceeded"), "{error}");

    let kms = w.kms.snapshot();
    assert!(kms.keys.is_empty());
    assert_eq!(kms.alias(ALIAS), None);
    assert_eq!(w.group().aws.active_key_id, None);
    // The generated key stays listed, not yet in KMS, for the retry to take.
    let store = w.store.snapshot();
    let key = &store.keys[&job.progress.key_id.unwrap()];
    assert_eq!(
        (key.kms_key_id.as_ref(), key.state),
        (None, KeyState::PreActive)
    );
}

#[tokio::test]
async fn a_failed_rotation_retried_finishes_with_the_kms_key_it_created() {
    let w = World::new();
    let failed = rotation_failed_at_the_alias(&w).await;
    let session = crate::identity::Session {
        id: "s".into(),
        identities: vec![crate::identity::SessionIdentity {
            name: crate::names::IdentityName::parse("Admin1").unwrap(),
            role: crate::identity::Role::Administrator,
        }],
        created_at: start(),
        last_seen: start(),
        grant: None,
    };
    w.keyhold.retry_job(&session, failed.id).await.unwrap();
    let job = w.run(&failed, &NoHooks).await.unwrap();
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    let kms = w.kms.snapshot();
    assert_eq!(kms.calls_of("create_key"), 1);
    assert_eq!(kms.alias(ALIAS), job.progress.kms_key_id.as_ref());
}

// Interruptions

/// Stops the run (a crash) when the job reaches `at` on the chosen side of its commit.
pub(super) struct CrashAt {
    at: Checkpoint,
    committed: bool,
    reached: Mutex<bool>,
}

impl JobHooks for CrashAt {
    fn reached(&self, at: Checkpoint, committed: bool) {
        if (at, committed) == (self.at, self.committed) {
            *self.reached.lock().unwrap() = true;
            panic!("crash at {} (committed: {committed})", at.as_str());
        }
    }
}

/// Runs `job` until it crashes at `at` (on the chosen side of its commit);
/// fails the test if the run never gets there.
pub(super) async fn crash_at(w: &Arc<World>, job: &Job, at: Checkpoint, committed: bool) {
    let hook = Arc::new(CrashAt {
        at,
        committed,
        reached: Mutex::new(false),
    });
    let (world, crash, queued) = (w.clone(), hook.clone(), job.clone());
    let run = tokio::spawn(async move { world.run(&queued, crash.as_ref()).await });
    assert!(run.await.is_err(), "{} {committed}: no crash", at.as_str());
    assert!(*hook.reached.lock().unwrap());
}

/// The commits a job with these steps makes, each named by the
/// checkpoint around it: the start, then every step but those that commit
/// with the step before them. The marks before CreateKey and an in-place
/// import commit with GenerateKey.
fn commits_of(steps: &[Step]) -> Vec<Checkpoint> {
    let mut points = vec![Checkpoint::Start];
    points.extend(
        steps
            .iter()
            .filter(|s| !s.commits_with_the_step_before())
            .map(|s| Checkpoint::Step(*s)),
    );
    points
}

fn rotation_checkpoints() -> Vec<Checkpoint> {
    commits_of(&Step::ROTATE)
}

/// Every checkpoint a run reaches, in order, with the side of its commit.
#[derive(Default)]
struct Trace(Mutex<Vec<(Checkpoint, bool)>>);

impl JobHooks for Trace {
    fn reached(&self, at: Checkpoint, committed: bool) {
        self.0.lock().unwrap().push((at, committed));
    }
}

impl Trace {
    /// The commits made, in order.
    fn commits(&self) -> Vec<Checkpoint> {
        let reached = self.0.lock().unwrap();
        reached
            .iter()
            .filter(|(_, committed)| *committed)
            .map(|(at, _)| *at)
            .collect()
    }
}

#[tokio::test]
async fn a_rotation_commits_its_start_the_key_the_kms_key_then_the_import_with_the_rest() {
    let w = World::new();
    w.rotate().await;
    let job = w.queue_rotation().await;
    let trace = Trace::default();
    let done = w.run(&job, &trace).await.unwrap();
    assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
    let commits = [
        Checkpoint::Start,
        Checkpoint::Step(Step::GenerateKey),
        Checkpoint::Step(Step::CreateKmsKey),
        Checkpoint::Step(Step::ImportMaterial),
    ];
    assert_eq!(trace.commits(), commits);
    assert_eq!(rotation_checkpoints(), commits);
    assert!(done.progress.create_key_sent, "committed with GenerateKey");
    assert_eq!(done.progress.done, Step::ROTATE);
    let messages = w.store.snapshot().messages_of(job.id);
    let steps: Vec<&String> = messages.iter().filter(|m| m.starts_with("Step ")).collect();
    assert_eq!(steps.len(), 6, "{messages:?}");
    assert!(steps[4].starts_with("Step 5 of 6: Disabled the previous KMS key"));
    assert!(
        steps[5].starts_with("Step 6 of 6: KMS key "),
        "{}",
        steps[5]
    );
    // Nothing was looked for: this run sent CreateKey once.
    let kms = w.kms.snapshot();
    assert_eq!(kms.calls_of("find_keys_tagged"), 0);
    assert_eq!(kms.calls_of("create_key"), 2);
    let store = w.store.snapshot();
    assert_eq!(
        store.groups[&group_name()].aws.active_key_id,
        done.progress.kms_key_id
    );
}

#[tokio::test]
async fn a_rotation_resumed_after_generating_its_key_looks_for_a_tagged_kms_key_then_creates_one() {
    let w = Arc::new(World::new());
    let job = w.queue_rotation().await;
    crash_at(&w, &job, Checkpoint::Step(Step::GenerateKey), true).await;
    let stored = w.store.snapshot().job(job.id).cloned().unwrap();
    assert!(stored.progress.create_key_sent, "the mark committed ahead");
    assert_eq!(w.kms.snapshot().calls_of("create_key"), 0);

    let resumed = w.run(&job, &NoHooks).await.unwrap();
    assert_eq!(resumed.status, JobStatus::Succeeded, "{:?}", resumed.error);
    let kms = w.kms.snapshot();
    assert_eq!(kms.calls_of("find_keys_tagged"), 1, "{:?}", kms.calls);
    assert_eq!(kms.calls_of("create_key"), 1);
    assert_eq!(kms.keys.len(), 1);
}

/// The next `times` calls of `operation` (the fake's name; `aws` is AWS's)
/// fail as a cut connection would.
fn cut_off(w: &World, operation: &'static str, aws: &'static str, times: usize) {
    for _ in 0..times {
        w.kms.fail_next(
            operation,
            CloudError::Transient {
                operation: aws,
                message: "connection reset".into(),
            },
        );
    }
}

#[tokio::test]
async fn a_step_after_the_import_that_fails_runs_again_alone_after_the_import_commits() {
    let w = World::new();
    w.rotate().await; // a previous key, so DisablePrevious acts
    let previous = w.group().aws.active_key_id.unwrap();
    cut_off(&w, "disable_key", "DisableKey", 1);
    let job = w.queue_rotation().await;
    let trace = Trace::default();
    let done = w.run(&job, &trace).await.unwrap();
    assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
    // The import with the alias, then the disable (tried again) with the
    // activation.
    assert_eq!(
        trace.commits(),
        [
            Checkpoint::Start,
            Checkpoint::Step(Step::GenerateKey),
            Checkpoint::Step(Step::CreateKmsKey),
            Checkpoint::Step(Step::ImportMaterial),
            Checkpoint::Step(Step::DisablePrevious),
        ]
    );
    let kms = w.kms.snapshot();
    assert_eq!(kms.calls_of("disable_key"), 2);
    assert_eq!(kms.calls_of("point_alias"), 2, "one per rotation");
    assert_eq!(kms.keys[&previous].state, KeyState::Disabled);
    let new = done.progress.kms_key_id.clone().unwrap();
    assert_eq!(kms.alias(ALIAS), Some(&new));
    assert_eq!(w.group().aws.active_key_id, Some(new));
    let messages = w.store.snapshot().messages_of(job.id);
    let steps: Vec<&String> = messages.iter().filter(|m| m.starts_with("Step ")).collect();
    assert_eq!(steps.len(), 6, "one message per step: {messages:?}");
}

/// The alias and the disable run ahead of the import's commit, on the
/// import's connection: each step's message tells what pacing cost that
/// step, not another's.
#[tokio::test]
async fn each_step_run_ahead_of_a_commit_tells_what_pacing_cost_it() {
    let w = World::new();
    w.rotate().await; // a previous key, so DisablePrevious acts
    let paced = |operation, waited, throttled| OperationPacing {
        operation,
        paced_at_per_second: 5.0,
        waited: std::time::Duration::from_millis(waited),
        throttled,
    };
    w.kms.pace_next("point_alias", paced("UpdateAlias", 0, 1));
    w.kms
        .pace_next("disable_key", paced("DisableKey", 2_000, 0));
    let job = w.queue_rotation().await;
    let done = w.run(&job, &NoHooks).await.unwrap();
    assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
    let messages = w.store.snapshot().messages_of(job.id);
    let steps: Vec<&String> = messages.iter().filter(|m| m.starts_with("Step ")).collect();
    assert_eq!(steps.len(), 6, "{messages:?}");
    let import = steps[2];
    assert!(!import.contains("AWS KMS"), "{import}");
    let alias = steps[3];
    assert!(alias.starts_with("Step 4 of 6: "), "{alias}");
    assert!(alias.contains("AWS KMS throttled 1 request"), "{alias}");
    assert!(!alias.contains("held back"), "{alias}");
    let disable = steps[4];
    assert!(disable.starts_with("Step 5 of 6: Disabled the previous KMS key"));
    assert!(
        disable.contains("held back 2.0 s by the AWS KMS request quota for DisableKey, 5/s"),
        "{disable}"
    );
    assert!(!steps[5].contains("AWS KMS"), "{}", steps[5]);
}

#[tokio::test]
async fn a_failure_after_the_import_records_what_kms_did_before_it() {
    let w = World::new();
    w.rotate().await;
    let previous = w.group().aws.active_key_id.unwrap();
    cut_off(&w, "disable_key", "DisableKey", 2);
    let job = w.queue_rotation().await;
    let failed = w.run(&job, &NoHooks).await.unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    let error = failed.error.clone().unwrap();
    assert!(error.starts_with("step 5 of 6, "), "{error}");
    // The alias moved in KMS, and the job's record says so: a retry goes
    // on from the disable.
    let new = failed.progress.kms_key_id.clone().unwrap();
    assert_eq!(w.kms.snapshot().alias(ALIAS), Some(&new));
    let store = w.store.snapshot();
    assert_eq!(store.job(job.id).unwrap().progress.done, Step::ROTATE[..4]);
    assert_eq!(w.group().aws.active_key_id, Some(previous.clone()));

    w.keyhold
        .retry_job(&officer_session(), failed.id)
        .await
        .unwrap();
    let retried = w.run(&failed, &NoHooks).await.unwrap();
    assert_eq!(retried.status, JobStatus::Succeeded, "{:?}", retried.error);
    let kms = w.kms.snapshot();
    assert_eq!(
        kms.calls_of("import_key_material"),
        2,
        "one import per rotation"
    );
    assert_eq!(kms.keys[&previous].state, KeyState::Disabled);
    assert_eq!(w.group().aws.active_key_id, Some(new));
}

#[tokio::test]
async fn a_rotation_interrupted_at_any_commit_resumes_without_a_second_key_or_import() {
    for at in rotation_checkpoints() {
        for committed in [false, true] {
            let w = Arc::new(World::new());
            w.rotate().await; // a previous key, so DisablePrevious acts
            let job = w.queue_rotation().await;
            crash_at(&w, &job, at, committed).await;
            let before = w.kms.snapshot();

            let resumed = w.run(&job, &NoHooks).await.unwrap();
            let label = format!("{} (committed: {committed})", at.as_str());
            assert_eq!(
                resumed.status,
                JobStatus::Succeeded,
                "{label}: {:?}",
                resumed.error
            );
            let kms = w.kms.snapshot();
            // One KMS key for each of the two rotations, one successful import each.
            assert_eq!(kms.calls_of("create_key"), 2, "{label}");
            assert_eq!(kms.keys.len(), 2, "{label}");
            let new = resumed.progress.kms_key_id.clone().unwrap();
            assert_eq!(kms.alias(ALIAS), Some(&new), "{label}");
            assert_eq!(
                kms.keys[&new].material.as_ref(),
                Some(&w.material_of(&resumed))
            );
            assert_eq!(kms.keys[&new].state, KeyState::Enabled, "{label}");
            let imports_after_crash =
                kms.calls_of("import_key_material") - before.calls_of("import_key_material");
            let imported_before = before.keys.get(&new).is_some_and(|k| k.material.is_some());
            assert_eq!(
                imports_after_crash,
                usize::from(!imported_before),
                "{label}"
            );
            let store = w.store.snapshot();
            assert_eq!(
                store.groups[&group_name()].aws.active_key_id,
                Some(new),
                "{label}"
            );
            assert_eq!(store.keys.len(), 2, "{label}");
        }
    }
}

/// The lease lost right after GenerateKey's commit: the run's next
/// commit is refused, so it can end nothing. CreateKey was already marked
/// as sent with GenerateKey, so the node that takes the job over finds the
/// KMS key the stale run created by its tag instead of creating a second.
#[tokio::test]
async fn a_stale_fence_stops_the_run_at_its_next_commit_and_the_next_holder_finds_its_kms_key() {
    struct FenceLostAfter<'a>(&'a FakeStore, Checkpoint);
    impl JobHooks for FenceLostAfter<'_> {
        fn reached(&self, at: Checkpoint, committed: bool) {
            if at == self.1 && committed {
                self.0
                    .refuse_commits(Some(|| StoreError::Fenced("rotator".into())));
            }
        }
    }
    let w = World::new();
    let job = w.queue_rotation().await;
    let hook = FenceLostAfter(&w.store, Checkpoint::Step(Step::GenerateKey));
    let outcome = w.run(&job, &hook).await;
    assert!(
        matches!(outcome, Err(CoreError::Store(StoreError::Fenced(_)))),
        "{outcome:?}"
    );
    let stored = w.store.snapshot().job(job.id).cloned().unwrap();
    assert_eq!(stored.status, JobStatus::Running);
    assert_eq!(stored.progress.done, vec![Step::GenerateKey]);
    assert!(stored.progress.create_key_sent);
    assert!(
        !w.store
            .snapshot()
            .audit_summaries()
            .iter()
            .any(|s| s.starts_with("Successfully") || s.starts_with("Failed"))
    );

    w.store.refuse_commits(None);
    let resumed = w.run(&job, &NoHooks).await.unwrap();
    assert_eq!(resumed.status, JobStatus::Succeeded, "{:?}", resumed.error);
    let kms = w.kms.snapshot();
    assert_eq!(kms.calls_of("create_key"), 1, "one KMS key, found again");
    assert_eq!(kms.keys.len(), 1);
    assert_eq!(kms.alias(ALIAS), resumed.progress.kms_key_id.as_ref());
}

// Synchronize, step by step

#[tokio::test]
async fn synchronize_deletes_imports_again_and_puts_the_policy() {
    let w = World::new();
    let rotation = w.rotate().await;
    let kms_key_id = rotation.progress.kms_key_id.clone().unwrap();
    let options = SyncOptions {
        update_policy: true,
        import_material: true,
        delete_material: true,
    };
    let sync = w.queue_synchronization(&rotation, options);
    let job = w.run(&sync, &NoHooks).await.unwrap();
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    assert_eq!(job.progress.done, Step::synchronize(options));

    let kms = w.kms.snapshot();
    assert_eq!(kms.calls_of("delete_imported_key_material"), 1);
    assert_eq!(kms.calls_of("import_key_material"), 2);
    assert_eq!(kms.calls_of("put_key_policy"), 1);
    let key = &kms.keys[&kms_key_id];
    assert_eq!(key.material.as_ref(), Some(&w.material_of(&rotation)));
    assert_eq!(key.state, KeyState::Enabled);
    assert_eq!(key.policy.as_ref().map(KeyPolicy::as_str), Some(POLICY));
    let store = w.store.snapshot();
    assert_eq!(
        store.key_by_kms_id(&kms_key_id).unwrap().state,
        KeyState::Enabled
    );

    let messages = w.messages(&job);
    assert_step_message(
        &messages,
        1,
        3,
        &format!("Deleted the imported key material of KMS key {kms_key_id}"),
    );
    assert_step_message(&messages, 2, 3, "Imported the key material into KMS key");
    assert_step_message(
        &messages,
        3,
        3,
        &format!("Put the key group's policy on KMS key {kms_key_id}"),
    );
    assert!(store.audit_summaries().contains(&format!(
        "Successfully synchronized HSM protected key {kms_key_id}."
    )));
}

#[tokio::test]
async fn synchronize_delete_only_leaves_the_key_pending_import() {
    let w = World::new();
    let rotation = w.rotate().await;
    let kms_key_id = rotation.progress.kms_key_id.clone().unwrap();
    let options = SyncOptions {
        update_policy: false,
        import_material: false,
        delete_material: true,
    };
    let job = w
        .run(&w.queue_synchronization(&rotation, options), &NoHooks)
        .await
        .unwrap();
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    let kms = w.kms.snapshot();
    assert_eq!(kms.keys[&kms_key_id].state, KeyState::PendingImport);
    assert_eq!(kms.keys[&kms_key_id].material, None);
    assert_eq!(
        w.store.snapshot().key_by_kms_id(&kms_key_id).unwrap().state,
        KeyState::PendingImport
    );

    // Deleting again finds nothing to delete, and says so.
    let again = w
        .run(&w.queue_synchronization(&rotation, options), &NoHooks)
        .await
        .unwrap();
    assert_eq!(again.status, JobStatus::Succeeded);
    assert_eq!(w.kms.snapshot().calls_of("delete_imported_key_material"), 1);
    assert_step_message(
        &w.messages(&again),
        1,
        1,
        &format!("KMS key {kms_key_id} holds no material already"),
    );
}

#[tokio::test]
async fn synchronize_puts_no_policy_when_the_group_has_none() {
    let w = World::new();
    let rotation = w.rotate().await;
    w.change_group(|g| g.aws.policy = None);
    let options = SyncOptions {
        update_policy: true,
        import_material: false,
        delete_material: false,
    };
    let job = w
        .run(&w.queue_synchronization(&rotation, options), &NoHooks)
        .await
        .unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(w.kms.snapshot().calls_of("put_key_policy"), 0);
    assert_step_message(
        &w.messages(&job),
        1,
        1,
        "Key group payments has no policy: nothing to put",
    );
}

#[tokio::test]
async fn synchronize_imports_only_the_material_the_kms_key_first_had() {
    let w = World::new();
    let rotation = w.rotate().await;
    let kms_key_id = rotation.progress.kms_key_id.clone().unwrap();
    // Another key's job pointed at this KMS key: its material is not the first.
    let mut other = rotation.clone();
    let second = w.rotate().await;
    other.progress.key_id = second.progress.key_id;
    let options = SyncOptions {
        update_policy: false,
        import_material: true,
        delete_material: false,
    };
    let job = w
        .run(&w.queue_synchronization(&other, options), &NoHooks)
        .await
        .unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job.error.unwrap().contains("KMS refused the key material"));
    let kms = w.kms.snapshot();
    assert_eq!(
        kms.keys[&kms_key_id].material.as_ref(),
        Some(&w.material_of(&rotation))
    );
    assert!(w.store.snapshot().audit_summaries().contains(&format!(
        "Failed to synchronize HSM protected key {kms_key_id}."
    )));
}

#[tokio::test]
async fn a_step_of_another_kind_is_refused() {
    let w = World::new();
    let rotation = w.rotate().await;
    let mut job = w.queue_synchronization(
        &rotation,
        SyncOptions {
            update_policy: true,
            import_material: false,
            delete_material: false,
        },
    );
    job.progress.steps = vec![Step::MoveAlias];
    w.store.put_job(job.clone());
    let job = w.run(&job, &NoHooks).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert!(
        job.error
            .unwrap()
            .contains("which is not a step of Synchronize HSM protected keys")
    );
}

#[tokio::test]
async fn a_synchronization_interrupted_at_any_commit_resumes_and_finishes() {
    let options = SyncOptions {
        update_policy: true,
        import_material: true,
        delete_material: true,
    };
    let mut points = vec![Checkpoint::Start];
    points.extend(Step::synchronize(options).into_iter().map(Checkpoint::Step));
    for at in points {
        for committed in [false, true] {
            let label = format!("{} (committed: {committed})", at.as_str());
            let w = Arc::new(World::new());
            let rotation = w.rotate().await;
            let kms_key_id = rotation.progress.kms_key_id.clone().unwrap();
            let job = w.queue_synchronization(&rotation, options);
            crash_at(&w, &job, at, committed).await;

            let resumed = w.run(&job, &NoHooks).await.unwrap();
            assert_eq!(
                resumed.status,
                JobStatus::Succeeded,
                "{label}: {:?}",
                resumed.error
            );
            let kms = w.kms.snapshot();
            let key = &kms.keys[&kms_key_id];
            // Re-importing the same material is what KMS allows, and all it allows.
            assert_eq!(
                key.material.as_ref(),
                Some(&w.material_of(&rotation)),
                "{label}"
            );
            assert_eq!(key.state, KeyState::Enabled, "{label}");
            assert_eq!(kms.calls_of("create_key"), 1, "{label}");
            assert_eq!(
                w.store.snapshot().key_by_kms_id(&kms_key_id).unwrap().state,
                KeyState::Enabled,
                "{label}"
            );
        }
    }
}

// Custody: a rotated-out key stays disabled

#[tokio::test]
async fn importing_again_into_a_key_keyhold_records_as_disabled_leaves_it_disabled() {
    for delete_material in [false, true] {
        let w = World::new();
        let first = w.rotate().await;
        w.rotate().await;
        let old = first.progress.kms_key_id.clone().unwrap();
        assert_eq!(w.kms.snapshot().keys[&old].state, KeyState::Disabled);
        let options = SyncOptions {
            update_policy: false,
            import_material: true,
            delete_material,
        };
        let sync = w.queue_synchronization(&first, options);
        let job = w.run(&sync, &NoHooks).await.unwrap();
        assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);

        let kms = w.kms.snapshot();
        let key = &kms.keys[&old];
        assert_eq!(key.material.as_ref(), Some(&w.material_of(&first)));
        assert_eq!(
            key.state,
            KeyState::Disabled,
            "delete first: {delete_material}: the import enabled it, keyhold disabled it again"
        );
        assert_eq!(
            w.store.snapshot().key_by_kms_id(&old).unwrap().state,
            KeyState::Disabled
        );
        let imported = w
            .messages(&job)
            .into_iter()
            .find(|m| m.contains("Imported the key material"))
            .unwrap();
        assert!(imported.contains("disabled again"), "{imported}");
    }
}

#[tokio::test]
async fn importing_again_into_an_enabled_key_leaves_it_enabled_without_a_disable_call() {
    let w = World::new();
    let rotation = w.rotate().await;
    let calls = w.kms.snapshot().calls_of("disable_key");
    let options = SyncOptions {
        update_policy: false,
        import_material: true,
        delete_material: false,
    };
    let sync = w.queue_synchronization(&rotation, options);
    let job = w.run(&sync, &NoHooks).await.unwrap();
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    let kms = w.kms.snapshot();
    assert_eq!(kms.calls_of("disable_key"), calls);
    let kms_key_id = rotation.progress.kms_key_id.unwrap();
    assert_eq!(kms.keys[&kms_key_id].state, KeyState::Enabled);
}

#[tokio::test]
async fn a_credential_endpoint_off_the_allow_list_reaches_no_kms() {
    let w = World::new();
    let mut credential = w
        .store
        .snapshot()
        .credentials
        .values()
        .next()
        .unwrap()
        .clone();
    credential.endpoint =
        Some(crate::credential::Endpoint::parse("https://mitm.example.com").unwrap());
    w.store.put_credential(credential);
    let job = w.rotate().await;
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap();
    assert!(
        error.contains("allow-list") && error.contains("kms_endpoint_allow"),
        "{error}"
    );
    assert!(w.kms.snapshot().calls.is_empty(), "nothing was sent to KMS");
}

// Cancelling a rotation: its key goes when it never reached KMS

fn officer_session() -> crate::identity::Session {
    crate::identity::Session {
        id: "s".into(),
        identities: vec![crate::identity::SessionIdentity {
            name: crate::names::IdentityName::parse("Admin1").unwrap(),
            role: crate::identity::Role::Administrator,
        }],
        created_at: start(),
        last_seen: start(),
        grant: None,
    }
}

/// A rotation that fails moving the alias, after its KMS key was created
/// and given the material. Twice: the alias is first moved ahead of the
/// import's commit, and after that attempt fails, once more on its own.
async fn rotation_failed_at_the_alias(w: &World) -> Job {
    cut_off(w, "point_alias", "CreateAlias", 2);
    let job = w.rotate().await;
    assert_eq!(job.status, JobStatus::Failed);
    job
}

/// A rotation that fails at CreateKmsKey before CreateKey is sent: the
/// group's Active Key ID names a KMS key that does not exist.
async fn rotation_failed_before_create_key(w: &World) -> Job {
    let missing =
        crate::cloud::aws::KmsKeyId::parse("0000dead-0000-4000-8000-00000000beef").unwrap();
    w.change_group(|g| g.aws.active_key_id = Some(missing));
    let job = w.rotate().await;
    assert_eq!(job.status, JobStatus::Failed);
    assert!(!job.progress.create_key_sent);
    assert!(job.progress.key_id.is_some());
    job
}

#[tokio::test]
async fn a_rotation_cancelled_before_create_key_removes_its_key_and_says_so() {
    let w = World::new();
    let failed = rotation_failed_before_create_key(&w).await;
    let key_id = failed.progress.key_id.unwrap();
    assert!(w.keystore.material(key_id).is_some());

    // Before the cancel, the listing names the key readably and says why.
    let session = officer_session();
    let listed = w
        .keyhold
        .get_key(&session, "payments v1 (no KMS key)")
        .await
        .unwrap();
    assert_eq!(listed.key.id, key_id);
    assert_eq!(listed.key.display_name(), "payments v1 (no KMS key)");
    let note = listed.note.unwrap();
    assert!(
        note.starts_with(&format!(
            "pre_active: its rotation job {} failed before the key reached KMS",
            failed.id
        )),
        "{note}"
    );

    let cancelled = w.keyhold.cancel_job(&session, failed.id).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    let store = w.store.snapshot();
    assert!(!store.keys.contains_key(&key_id), "the record is gone");
    assert!(
        w.keystore.material(key_id).is_none(),
        "the material is gone"
    );
    let last = store.messages_of(failed.id).pop().unwrap();
    assert!(
        last.starts_with("Cancelled by Admin1. Removed its key payments v1 (no KMS key) (version 1, check digits "),
        "{last}"
    );
    let audit = store.audit.last().unwrap();
    assert_eq!(
        audit.summary,
        format!(
            "Cancelled job {} (Rotate HSM protected keys); removed its key payments v1 (no KMS key), which never reached KMS",
            failed.id
        )
    );
    assert!(audit.details.to_string().contains(&key_id.to_string()));
    assert!(w.kms.snapshot().keys.is_empty());
    let listed = w
        .keyhold
        .list_keys(&session, &crate::key::KeyPage::whole_group(&group_name()))
        .await
        .unwrap();
    assert!(listed.is_empty());
}

#[tokio::test]
async fn a_rotation_cancelled_after_create_key_was_sent_keeps_its_key_and_explains_it() {
    let w = World::new();
    w.kms.fail_next(
        "create_key",
        CloudError::Transient {
            operation: "CreateKey",
            message: "connection reset".into(),
        },
    );
    let failed = w.rotate().await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert!(failed.progress.create_key_sent);
    let key_id = failed.progress.key_id.unwrap();
    let session = officer_session();

    w.keyhold.cancel_job(&session, failed.id).await.unwrap();
    let store = w.store.snapshot();
    assert!(store.keys.contains_key(&key_id), "a KMS key may hold it");
    assert!(w.keystore.material(key_id).is_some());
    let last = store.messages_of(failed.id).pop().unwrap();
    assert!(
        last.contains("Its key payments v1 (no KMS key) stays listed: CreateKey was sent"),
        "{last}"
    );
    assert_eq!(
        store.audit.last().unwrap().summary,
        format!("Cancelled job {} (Rotate HSM protected keys)", failed.id)
    );
    let listed = w
        .keyhold
        .get_key(&session, &key_id.to_string())
        .await
        .unwrap();
    let note = listed.note.unwrap();
    assert!(
        note.contains(&format!(
            "its rotation job {} was cancelled after CreateKey was sent",
            failed.id
        )),
        "{note}"
    );
    // The name it is listed under addresses it: an officer deletes it by that name.
    assert_eq!(
        w.keyhold
            .get_key(&session, "payments v1")
            .await
            .unwrap()
            .key
            .id,
        key_id
    );
}

#[tokio::test]
async fn parallel_cancels_remove_the_key_once() {
    let w = World::new();
    let failed = rotation_failed_before_create_key(&w).await;
    let session = officer_session();
    let (a, b) = tokio::join!(
        w.keyhold.cancel_job(&session, failed.id),
        w.keyhold.cancel_job(&session, failed.id)
    );
    assert_eq!(
        [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "{a:?} {b:?}"
    );
    let store = w.store.snapshot();
    let removals = store
        .audit_summaries()
        .iter()
        .filter(|s| s.contains("removed its key"))
        .count();
    assert_eq!(removals, 1);
    assert!(store.keys.is_empty());
}

#[tokio::test]
async fn a_cancel_decided_on_a_stale_read_removes_nothing() {
    let w = World::new();
    let failed = rotation_failed_before_create_key(&w).await;
    let stale = w.store.snapshot().job(failed.id).unwrap().clone();
    // Meanwhile it was retried and failed again, this time after CreateKey
    // was sent: the status read is the same, the progress is not.
    let mut moved = stale.clone();
    moved.attempts += 1;
    moved.progress.create_key_sent = true;
    w.store.put_job(moved);

    let refused = w
        .keyhold
        .set_job_status(stale, JobStatus::Cancelled, "Admin1", None)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("changed meanwhile"),
        "{refused}"
    );
    let key_id = failed.progress.key_id.unwrap();
    assert!(w.store.snapshot().keys.contains_key(&key_id));
    assert!(w.keystore.material(key_id).is_some());
}

#[tokio::test]
async fn cancelling_a_queued_rotation_removes_nothing_it_did_not_generate() {
    let w = World::new();
    let job = w.queue_rotation().await;
    let session = officer_session();
    w.keyhold.cancel_job(&session, job.id).await.unwrap();
    let store = w.store.snapshot();
    assert_eq!(
        store.messages_of(job.id).pop().unwrap(),
        "Cancelled by Admin1"
    );
    assert!(store.keys.is_empty());
}

/// Cancels the job in the store when the runner is about to mark it
/// running: an officer's cancel landing between the runner's read and its start.
struct CancelBeforeStart {
    store: Arc<FakeStore>,
}

impl JobHooks for CancelBeforeStart {
    fn reached(&self, at: Checkpoint, committed: bool) {
        if (at, committed) == (Checkpoint::Start, false) {
            let state = self.store.snapshot();
            for job in state.jobs {
                if job.status == JobStatus::Queued {
                    self.store.put_job(Job {
                        status: JobStatus::Cancelled,
                        finished_at: Some(start()),
                        ..job
                    });
                }
            }
        }
    }
}

#[tokio::test]
async fn a_cancel_between_the_runners_read_and_its_start_stands() {
    let w = World::new();
    let job = w.queue_rotation().await;
    let hooks = CancelBeforeStart {
        store: w.store.clone(),
    };
    let ran = w.run(&job, &hooks).await.unwrap();
    assert_eq!(ran.status, JobStatus::Cancelled);
    assert_eq!(ran.attempts, 0);
    let store = w.store.snapshot();
    assert_eq!(store.job(job.id).unwrap().status, JobStatus::Cancelled);
    assert!(store.keys.is_empty(), "no step ran");
    assert!(
        store.messages_of(job.id).is_empty(),
        "{:?}",
        store.messages_of(job.id)
    );
    assert!(w.kms.snapshot().calls.is_empty());
}

#[tokio::test]
async fn a_rotation_cancelled_after_its_kms_key_was_created_keeps_the_key_and_names_it() {
    let w = World::new();
    let failed = rotation_failed_at_the_alias(&w).await;
    let kms_key = failed.progress.kms_key_id.clone().unwrap();
    w.keyhold
        .cancel_job(&officer_session(), failed.id)
        .await
        .unwrap();
    let store = w.store.snapshot();
    assert!(store.key_by_kms_id(&kms_key).is_some());
    let last = store.messages_of(failed.id).pop().unwrap();
    assert_eq!(
        last,
        format!(
            "Cancelled by Admin1. Its key {kms_key} (version 1) stays listed: KMS key {kms_key} was created for it"
        )
    );
}

// Rotation in place (new_material)

impl World {
    fn in_place(at_limit: AtRotationLimit) -> Self {
        let w = Self::new();
        w.change_group(|g| {
            g.aws.rotation = RotationStrategy::NewMaterial;
            g.aws.at_rotation_limit = at_limit;
            g.aws.disable_after_rotate = false;
        });
        w
    }

    fn set_rotation_limit(&self, limit: u32) {
        let mut settings = self.store.snapshot().settings;
        settings.on_demand_rotation_limit = limit;
        self.store.replace_settings(settings);
    }

    fn keys_by_version(&self) -> Vec<crate::key::Key> {
        let mut keys: Vec<_> = self.store.snapshot().keys.into_values().collect();
        keys.sort_by_key(|k| k.version);
        keys
    }
}

#[tokio::test]
async fn a_new_material_group_keeps_its_kms_key_and_each_version_names_its_material() {
    let w = World::in_place(AtRotationLimit::NewKey);
    let first = w.rotate().await;
    assert_eq!(
        first.progress.steps,
        Step::ROTATE.to_vec(),
        "the first rotation makes the KMS key"
    );
    let kms_key = first.progress.kms_key_id.clone().unwrap();
    for _ in 0..2 {
        let job = w.rotate().await;
        assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
        assert_eq!(job.progress.done, Step::ROTATE_IN_PLACE.to_vec());
        assert_eq!(job.progress.kms_key_id.as_ref(), Some(&kms_key));
    }
    let kms = w.kms.snapshot();
    assert_eq!(
        kms.calls_of("create_key"),
        1,
        "one KMS key for three rotations"
    );
    assert_eq!(kms.calls_of("rotate_key_on_demand"), 2);
    assert_eq!(kms.alias(ALIAS), Some(&kms_key));
    let held = &kms.keys[&kms_key];
    let keys = w.keys_by_version();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k.kms_key_id.as_ref() == Some(&kms_key)));
    assert_eq!(
        keys.iter()
            .map(|k| (k.rotated_in, k.material_state))
            .collect::<Vec<_>>(),
        [
            (false, MaterialState::NonCurrent),
            (true, MaterialState::NonCurrent),
            (true, MaterialState::Current)
        ]
    );
    // Each version's material id is KMS's id of the material keyhold holds.
    for key in &keys {
        let material = w.keystore.material(key.id).unwrap();
        assert_eq!(
            key.kms_material_id,
            Some(crate::testing::FakeKmsKey::material_id(&kms_key, &material))
        );
    }
    assert_eq!(
        held.current.as_ref(),
        Some(&w.keystore.material(keys[2].id).unwrap())
    );
    assert_eq!(w.group().aws.active_key_id, Some(kms_key.clone()));
    assert_eq!(keys[2].display_name(), format!("{kms_key} v3"));
    assert_eq!(keys[0].display_name(), kms_key.to_string());
}

#[tokio::test]
async fn an_in_place_rotation_looks_at_the_kms_key_only_after_rotating_it() {
    let w = World::in_place(AtRotationLimit::NewKey);
    w.rotate().await;
    let calls_before = w.kms.snapshot().calls.len();
    let job = w.rotate().await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    // The material this run imported is pending: no look before rotating;
    // one after the import (the key's state) and one after the rotation
    // (the material current).
    let kms = w.kms.snapshot();
    assert_eq!(
        kms.calls[calls_before..],
        [
            "get_parameters_for_import",
            "import_key_material",
            "describe_key",
            "rotate_key_on_demand",
            "describe_key",
        ]
    );
    let kms_key = job.progress.kms_key_id.clone().unwrap();
    let current = w.keys_by_version().pop().unwrap();
    assert_eq!(current.material_state, MaterialState::Current);
    assert_eq!(
        kms.keys[&kms_key].current.as_ref(),
        Some(&w.material_of(&job))
    );
}

#[tokio::test]
async fn an_in_place_rotation_interrupted_at_any_commit_imports_and_rotates_once() {
    for at in commits_of(&Step::ROTATE_IN_PLACE) {
        for committed in [false, true] {
            let w = Arc::new(World::in_place(AtRotationLimit::NewKey));
            w.rotate().await;
            let job = w.queue_rotation().await;
            crash_at(&w, &job, at, committed).await;
            let resumed = w.run(&job, &NoHooks).await.unwrap();
            let label = format!("{} (committed: {committed})", at.as_str());
            assert_eq!(
                resumed.status,
                JobStatus::Succeeded,
                "{label}: {:?}",
                resumed.error
            );
            let kms = w.kms.snapshot();
            assert_eq!(kms.calls_of("create_key"), 1, "{label}");
            let kms_key = resumed.progress.kms_key_id.clone().unwrap();
            let held = &kms.keys[&kms_key];
            assert_eq!(held.new_materials.len(), 1, "{label}: one new material");
            assert_eq!(held.on_demand_rotations, 1, "{label}: one rotation");
            assert_eq!(
                held.current.as_ref(),
                Some(&w.material_of(&resumed)),
                "{label}"
            );
            let keys = w.keys_by_version();
            assert_eq!(
                keys.iter().map(|k| k.material_state).collect::<Vec<_>>(),
                [MaterialState::NonCurrent, MaterialState::Current],
                "{label}"
            );
        }
    }
}

#[tokio::test]
async fn at_the_rotation_limit_a_group_starts_a_new_kms_key_or_refuses_as_it_chose() {
    let w = World::in_place(AtRotationLimit::NewKey);
    w.set_rotation_limit(2);
    let first = w.rotate().await.progress.kms_key_id.unwrap();
    w.rotate().await;
    let last_in_place = w.rotate().await;
    assert_eq!(last_in_place.progress.kms_key_id.as_ref(), Some(&first));
    // Warned ahead, in the job's messages.
    assert!(
        w.messages(&last_in_place)
            .iter()
            .any(|m| m.contains("0 of 2 on-demand rotations of this KMS key left; then the next rotation creates a new KMS key")),
        "{:#?}",
        w.messages(&last_in_place)
    );
    let state = w.keyhold.rotation_state(&w.group()).await.unwrap();
    assert_eq!(state.in_place.map(|c| (c.used, c.left())), Some((2, 0)));

    let moved = w.rotate().await;
    assert_eq!(moved.status, JobStatus::Succeeded, "{:?}", moved.error);
    assert_eq!(moved.progress.steps, Step::ROTATE.to_vec());
    let second = moved.progress.kms_key_id.clone().unwrap();
    assert_ne!(second, first);
    assert_eq!(w.kms.snapshot().alias(ALIAS), Some(&second));
    // The old KMS key stays enabled: its ciphertexts still decrypt.
    assert_eq!(w.kms.snapshot().keys[&first].state, KeyState::Enabled);
    // And the new KMS key rotates in place in its turn.
    let again = w.rotate().await;
    assert_eq!(again.progress.steps, Step::ROTATE_IN_PLACE.to_vec());
    assert_eq!(again.progress.kms_key_id, Some(second));

    let refusing = World::in_place(AtRotationLimit::Refuse);
    refusing.set_rotation_limit(1);
    refusing.rotate().await;
    refusing.rotate().await;
    let refused = refusing
        .keyhold
        .queue_rotation(&Initiator::Scheduler, &group_name())
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("refuse at the limit"),
        "{refused}"
    );
    assert_eq!(refusing.keys_by_version().len(), 2, "nothing generated");
}

#[tokio::test]
async fn aws_refusing_the_rotation_sends_the_version_to_a_new_kms_key_when_the_group_says_so() {
    let w = World::in_place(AtRotationLimit::NewKey);
    let first = w.rotate().await.progress.kms_key_id.unwrap();
    w.kms.fail_next(
        "rotate_key_on_demand",
        CloudError::LimitExceeded {
            operation: "RotateKeyOnDemand",
            message: "The on-demand rotations limit has been reached".into(),
        },
    );
    let job = w.rotate().await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    let second = job.progress.kms_key_id.clone().unwrap();
    assert_ne!(second, first);
    assert_eq!(w.kms.snapshot().alias(ALIAS), Some(&second));
    let keys = w.keys_by_version();
    assert_eq!(keys[1].kms_key_id, Some(second));
    assert!(!keys[1].rotated_in);
    assert!(
        w.messages(&job)
            .iter()
            .any(|m| m.contains("no more on-demand rotations")),
        "{:#?}",
        w.messages(&job)
    );

    let refusing = World::in_place(AtRotationLimit::Refuse);
    refusing.rotate().await;
    refusing.kms.fail_next(
        "rotate_key_on_demand",
        CloudError::LimitExceeded {
            operation: "RotateKeyOnDemand",
            message: "limit".into(),
        },
    );
    let failed = refusing.rotate().await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert!(failed.error.unwrap().contains("set to refuse at the limit"));
}

#[tokio::test]
async fn a_resumed_import_finds_its_material_by_listing_when_kms_will_not_reimport_it() {
    let w = Arc::new(World::in_place(AtRotationLimit::NewKey));
    w.rotate().await;
    let job = w.queue_rotation().await;
    // Crash after KMS took the new material, before keyhold recorded it.
    crash_at(&w, &job, Checkpoint::Step(Step::ImportNewMaterial), false).await;
    // A KMS (LocalStack's way) that refuses to re-import material pending
    // rotation: keyhold lists the key's materials instead.
    w.kms.fail_next(
        "import_key_material",
        CloudError::InvalidState {
            operation: "ImportKeyMaterial",
            message: "another key material is pending rotation".into(),
        },
    );
    let resumed = w.run(&job, &NoHooks).await.unwrap();
    assert_eq!(resumed.status, JobStatus::Succeeded, "{:?}", resumed.error);
    let kms = w.kms.snapshot();
    let held = &kms.keys[&resumed.progress.kms_key_id.clone().unwrap()];
    assert_eq!(held.new_materials.len(), 1, "no second new material");
    assert_eq!(kms.calls_of("list_key_materials"), 1);
    assert_eq!(held.current.as_ref(), Some(&w.material_of(&resumed)));
    assert!(
        w.messages(&resumed)
            .iter()
            .any(|m| m.contains("imported before the interruption")),
        "{:#?}",
        w.messages(&resumed)
    );
}
