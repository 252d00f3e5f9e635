use keyhold_core::StoreError;
use keyhold_core::audit::AuditFilter;
use keyhold_core::cloud::WrappingAlgorithm;
use keyhold_core::cloud::aws::KmsKeyId;
use keyhold_core::group::KeyGroup;
use keyhold_core::job::{
    Initiator, Job, JobKind, JobMessage, JobProgress, JobStatus, Step, SyncOptions,
};
use keyhold_core::key::{Key, KeyState};
use keyhold_core::names::{GroupName, NodeId};
use keyhold_core::ports::JobCommit;

use keyhold_core::clock::format_timestamp;
use keyhold_store::testing::TestDatabase;

use crate::common::{Fixture, TestMac, at, connect, credential, group, key, record, verify_chain};

fn rotate(group: &str, created: i64) -> Job {
    Job {
        id: uuid::Uuid::new_v4(),
        kind: JobKind::Rotate {
            group: GroupName::parse(group).unwrap(),
        },
        status: JobStatus::Queued,
        initiator: Initiator::Officers("Admin1,Admin2".into()),
        created_at: at(created),
        started_at: None,
        finished_at: None,
        progress: JobProgress::new(Step::ROTATE.to_vec()),
        error: None,
        attempts: 0,
    }
}

/// `job` as finished: a group has one unfinished job at most (the database's
/// unique index), so tests that need several of one group finish them.
fn finished(mut job: Job) -> Job {
    job.status = JobStatus::Succeeded;
    job.started_at = Some(job.created_at);
    job.finished_at = Some(job.created_at);
    job
}

fn synchronize(key: &Key, created: i64) -> Job {
    let options = SyncOptions {
        update_policy: true,
        import_material: false,
        delete_material: true,
    };
    Job {
        id: uuid::Uuid::new_v4(),
        kind: JobKind::Synchronize {
            key_id: key.id,
            key_name: format!("{}-v{}", key.group, key.version),
            group: key.group.clone(),
            options,
        },
        status: JobStatus::Running,
        initiator: Initiator::Scheduler,
        created_at: at(created),
        started_at: Some(at(created + 1)),
        finished_at: None,
        progress: JobProgress {
            done: vec![Step::DeleteMaterial],
            key_id: Some(key.id),
            kms_key_id: key.kms_key_id.clone(),
            wrapping: Some(WrappingAlgorithm::RsaAesKeyWrapSha256),
            ..JobProgress::new(Step::synchronize(options))
        },
        error: Some("AWS KMS is unavailable or throttling".into()),
        attempts: 2,
    }
}

fn message(job: &Job, secs: i64, text: &str) -> JobMessage {
    JobMessage {
        job_id: job.id,
        time: at(secs),
        text: text.into(),
    }
}

fn kms_id() -> KmsKeyId {
    KmsKeyId::parse(&uuid::Uuid::new_v4().to_string()).unwrap()
}

/// A credential, group `payments` and its key version 1.
async fn seed(f: &Fixture) -> (KeyGroup, Key) {
    let s = &f.store;
    let g = group("payments", "aws-prod");
    let k = key("payments", 1);
    s.insert_credential(&credential("aws-prod"), &record("c"))
        .await
        .unwrap();
    s.insert_group(&g, &record("g")).await.unwrap();
    s.insert_key(&k, None).await.unwrap();
    (g, k)
}

fn ids(jobs: &[Job]) -> Vec<uuid::Uuid> {
    jobs.iter().map(|j| j.id).collect()
}

#[tokio::test]
async fn rotate_and_synchronize_jobs_round_trip() {
    let f = Fixture::new().await;
    let (_, k) = seed(&f).await;
    let s = &f.store;
    let r = finished(rotate("payments", 10));
    let y = synchronize(&k, 20);
    s.insert_job(&r, None, &record("Started rotate"))
        .await
        .unwrap();
    s.insert_job(&y, None, &record("Started synchronize"))
        .await
        .unwrap();

    assert_eq!(s.get_job(r.id).await.unwrap(), Some(r.clone()));
    assert_eq!(s.get_job(y.id).await.unwrap(), Some(y.clone()));
    assert_eq!(s.get_job(uuid::Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(f.audit_count().await, 4);

    assert!(matches!(
        s.insert_job(&r, None, &record("again")).await,
        Err(StoreError::Duplicate)
    ));
    assert_eq!(f.audit_count().await, 4);
    assert_eq!(verify_chain(s).await, 4);
}

/// On SQLite reads go to the store's own connections (in place) and writes
/// to sqlx's: a read after a commit returned sees it, and 16 readers
/// reading the job meanwhile never see it go back a step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_after_a_commit_sees_it_and_sixteen_readers_never_see_a_step_undone() {
    let f = Fixture::new().await;
    seed(&f).await;
    let s = f.store.clone();
    let mut job = rotate("payments", 10);
    s.insert_job(&job, None, &record("Started rotate"))
        .await
        .unwrap();
    let steps = job.progress.steps.clone();
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let (s, id, all) = (s.clone(), job.id, steps.len());
            tokio::spawn(async move {
                let mut seen = 0;
                while seen < all {
                    let read = s.get_job(id).await.unwrap().unwrap();
                    let done = read.progress.done.len();
                    assert!(done >= seen, "a step read done was read undone");
                    let messages = s.job_messages(id).await.unwrap().len();
                    assert!(messages >= done, "a step read without its message");
                    seen = done;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    job.status = JobStatus::Running;
    job.started_at = Some(at(11));
    for (i, step) in steps.iter().enumerate() {
        job.progress.done.push(*step);
        let msg = message(&job, 20 + i as i64, &format!("{step:?}"));
        s.commit_job(&JobCommit {
            job: &job,
            keys: &[],
            group: None,
            messages: std::slice::from_ref(&msg),
            audit: None,
            drift: None,
            fence: None,
        })
        .await
        .unwrap();
        assert_eq!(s.get_job(job.id).await.unwrap(), Some(job.clone()));
        assert_eq!(s.job_messages(job.id).await.unwrap().len(), i + 1);
    }
    for reader in readers {
        reader.await.unwrap();
    }
}

/// The scheduler shows as "System", a name an identity may bear too: the
/// stored initiator, not the name, tells them apart.
#[tokio::test]
async fn an_officer_named_system_is_not_the_scheduler() {
    let f = Fixture::new().await;
    seed(&f).await;
    let s = &f.store;
    let mut officer = rotate("payments", 10);
    officer.initiator = Initiator::Officers("System".into());
    let mut scheduler = rotate("refunds", 20);
    scheduler.initiator = Initiator::Scheduler;
    for job in [&officer, &scheduler] {
        s.insert_job(job, None, &record("Started rotate"))
            .await
            .unwrap();
        assert_eq!(s.get_job(job.id).await.unwrap().as_ref(), Some(job));
    }
    assert_eq!(officer.initiator.users(), scheduler.initiator.users());
}

#[tokio::test]
async fn commit_job_writes_the_job_keys_group_message_and_audit_together() {
    let f = Fixture::new().await;
    let (g, old) = seed(&f).await;
    let s = &f.store;
    let mut job = rotate("payments", 10);
    s.insert_job(&job, None, &record("Started rotate"))
        .await
        .unwrap();

    let mut new = key("payments", 2);
    new.state = KeyState::PendingImport;
    let mut disabled = old.clone();
    disabled.state = KeyState::Disabled;
    disabled.valid_to = Some(at(99));
    disabled.keystore_handle = vec![7; 12];
    let mut activated = g.clone();
    activated.aws.active_key_id = new.kms_key_id.clone();
    activated.updated_at = at(40);
    job.status = JobStatus::Running;
    job.started_at = Some(at(11));
    job.attempts = 1;
    job.progress.done = vec![Step::GenerateKey, Step::CreateKmsKey];
    job.progress.key_id = Some(new.id);
    job.progress.kms_key_id = new.kms_key_id.clone();
    job.progress.previous_kms_key_id = old.kms_key_id.clone();
    job.progress.create_key_sent = true;
    let msg = message(&job, 30, "Created KMS key");
    let audit = record("Rotated key group payments");
    s.commit_job(&JobCommit {
        job: &job,
        keys: &[new.clone(), disabled.clone()],
        group: Some(&activated),
        messages: std::slice::from_ref(&msg),
        audit: Some(&audit),
        drift: None,
        fence: None,
    })
    .await
    .unwrap();

    assert_eq!(s.get_job(job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(s.get_key(new.id).await.unwrap(), Some(new.clone()));
    assert_eq!(s.get_key(old.id).await.unwrap(), Some(disabled.clone()));
    assert_eq!(s.get_group(&g.name).await.unwrap(), Some(activated.clone()));
    assert_eq!(s.job_messages(job.id).await.unwrap(), vec![msg.clone()]);
    let newest = s.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(newest[0].summary, "Rotated key group payments");
    assert_eq!(f.audit_count().await, 4);

    // A step without an audit entry or message; the key it writes again is
    // replaced in place, keeping its creation time.
    let mut imported = new.clone();
    imported.state = KeyState::Enabled;
    imported.created_at = at(500);
    job.progress.done.push(Step::ImportMaterial);
    job.status = JobStatus::Succeeded;
    job.finished_at = Some(at(60));
    job.error = None;
    s.commit_job(&JobCommit {
        job: &job,
        keys: std::slice::from_ref(&imported),
        group: None,
        messages: &[],
        audit: None,
        drift: None,
        fence: None,
    })
    .await
    .unwrap();
    assert_eq!(s.get_job(job.id).await.unwrap(), Some(job.clone()));
    imported.created_at = new.created_at;
    assert_eq!(s.get_key(new.id).await.unwrap(), Some(imported));
    assert_eq!(s.job_messages(job.id).await.unwrap(), vec![msg]);
    assert_eq!(f.audit_count().await, 4);
    assert_eq!(verify_chain(s).await, 4);
}

#[tokio::test]
async fn a_failing_audit_mac_rolls_a_job_commit_back() {
    let f = Fixture::new().await;
    let (g, _) = seed(&f).await;
    let s = &f.store;
    let queued = rotate("payments", 10);
    s.insert_job(&queued, None, &record("Started rotate"))
        .await
        .unwrap();

    let mut job = queued.clone();
    job.status = JobStatus::Running;
    job.progress.done.push(Step::GenerateKey);
    let new = key("payments", 2);
    let mut activated = g.clone();
    activated.aws.active_key_id = new.kms_key_id.clone();
    // Two steps in one commit (Activate with the step before it): their
    // messages, in order.
    let msgs = [
        message(&job, 30, "Step 5 of 6: Disabled the previous KMS key"),
        message(&job, 30, "Step 6 of 6: the group's active key"),
    ];
    let commit = JobCommit {
        job: &job,
        keys: std::slice::from_ref(&new),
        group: Some(&activated),
        messages: &msgs,
        audit: Some(&record("Generated key")),
        drift: None,
        fence: None,
    };
    f.mac.fail(true);
    let r = s.commit_job(&commit).await;
    assert!(matches!(r, Err(StoreError::AuditSeal(_))), "{r:?}");
    // Another group's job: this group's is still unfinished (one at a time).
    assert!(matches!(
        s.insert_job(&rotate("billing", 11), None, &record("x"))
            .await,
        Err(StoreError::AuditSeal(_))
    ));

    assert_eq!(s.get_job(job.id).await.unwrap(), Some(queued));
    assert_eq!(s.get_key(new.id).await.unwrap(), None);
    assert_eq!(s.get_group(&g.name).await.unwrap(), Some(g));
    assert_eq!(s.job_messages(job.id).await.unwrap(), vec![]);
    assert_eq!(s.list_jobs(0).await.unwrap().len(), 1);
    assert_eq!(f.audit_count().await, 3);

    f.mac.fail(false);
    s.commit_job(&commit).await.unwrap();
    assert_eq!(s.get_job(job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(s.get_key(new.id).await.unwrap(), Some(new));
    assert_eq!(s.job_messages(job.id).await.unwrap(), msgs.to_vec());
    assert_eq!(verify_chain(s).await, 4);
}

#[tokio::test]
async fn a_kms_key_id_clash_is_a_duplicate_and_writes_nothing() {
    let f = Fixture::new().await;
    let (g, old) = seed(&f).await;
    let s = &f.store;
    let queued = rotate("payments", 10);
    s.insert_job(&queued, None, &record("Started rotate"))
        .await
        .unwrap();
    let audits = f.audit_count().await;

    let mut job = queued.clone();
    job.progress.done.push(Step::CreateKmsKey);
    let mut clash = key("payments", 2);
    clash.kms_key_id = old.kms_key_id.clone();
    let mut activated = g.clone();
    activated.aws.active_key_id = Some(kms_id());
    let msg = message(&job, 30, "Created KMS key");
    let audit = record("Created KMS key");
    let commit = |keys| JobCommit {
        job: &job,
        keys,
        group: Some(&activated),
        messages: std::slice::from_ref(&msg),
        audit: Some(&audit),
        drift: None,
        fence: None,
    };
    let r = s.commit_job(&commit(std::slice::from_ref(&clash))).await;
    assert!(matches!(r, Err(StoreError::Duplicate)), "{r:?}");
    // The same version of the group twice is a clash too.
    let mut same_version = key("payments", 1);
    same_version.kms_key_id = Some(kms_id());
    let r = s
        .commit_job(&commit(std::slice::from_ref(&same_version)))
        .await;
    assert!(matches!(r, Err(StoreError::Duplicate)), "{r:?}");

    assert_eq!(s.get_job(job.id).await.unwrap(), Some(queued));
    assert_eq!(s.get_key(clash.id).await.unwrap(), None);
    assert_eq!(s.get_key(same_version.id).await.unwrap(), None);
    assert_eq!(s.get_key(old.id).await.unwrap(), Some(old));
    assert_eq!(s.get_group(&g.name).await.unwrap(), Some(g));
    assert_eq!(s.job_messages(job.id).await.unwrap(), vec![]);
    assert_eq!(f.audit_count().await, audits);
    assert_eq!(verify_chain(s).await, 3);
}

#[tokio::test]
async fn commit_job_reports_missing_rows_and_writes_nothing() {
    let f = Fixture::new().await;
    let (g, _) = seed(&f).await;
    let s = &f.store;
    let queued = rotate("payments", 10);
    s.insert_job(&queued, None, &record("Started rotate"))
        .await
        .unwrap();
    let audits = f.audit_count().await;
    let mut job = queued.clone();
    job.status = JobStatus::Failed;
    let new = key("payments", 2);
    let msg = message(&job, 30, "Failed");

    let unknown = rotate("payments", 12);
    let not_found = |r: Result<(), StoreError>| matches!(r, Err(StoreError::NotFound));
    assert!(not_found(
        s.commit_job(&JobCommit {
            job: &unknown,
            keys: &[],
            group: None,
            messages: &[],
            audit: Some(&record("x")),
            drift: None,
            fence: None,
        })
        .await
    ));
    let missing_group = group("no-such-group", "aws-prod");
    assert!(not_found(
        s.commit_job(&JobCommit {
            job: &job,
            keys: std::slice::from_ref(&new),
            group: Some(&missing_group),
            messages: std::slice::from_ref(&msg),
            audit: Some(&record("x")),
            drift: None,
            fence: None,
        })
        .await
    ));
    let orphan = key("no-such-group", 1);
    assert!(not_found(
        s.commit_job(&JobCommit {
            job: &job,
            keys: &[new.clone(), orphan.clone()],
            group: None,
            messages: std::slice::from_ref(&msg),
            audit: Some(&record("x")),
            drift: None,
            fence: None,
        })
        .await
    ));
    // A message for a job that does not exist.
    assert!(not_found(
        s.commit_job(&JobCommit {
            job: &job,
            keys: &[],
            group: None,
            messages: &[message(&unknown, 30, "stray")],
            audit: None,
            drift: None,
            fence: None,
        })
        .await
    ));

    assert_eq!(s.get_job(job.id).await.unwrap(), Some(queued));
    assert_eq!(s.get_job(unknown.id).await.unwrap(), None);
    assert_eq!(s.get_key(new.id).await.unwrap(), None);
    assert_eq!(s.get_key(orphan.id).await.unwrap(), None);
    assert_eq!(s.get_group(&g.name).await.unwrap(), Some(g));
    assert_eq!(s.job_messages(job.id).await.unwrap(), vec![]);
    assert_eq!(f.audit_count().await, audits);
}

#[tokio::test]
async fn a_job_commit_under_a_lease_taken_over_is_refused_and_writes_nothing() {
    let f = Fixture::new().await;
    seed(&f).await;
    let s = &f.store;
    let queued = rotate("payments", 10);
    s.insert_job(&queued, None, &record("Started rotate"))
        .await
        .unwrap();
    let first = NodeId::parse("node-a").unwrap();
    let second = NodeId::parse("node-b").unwrap();
    let held = s
        .acquire_lease("rotator", &first, at(20), at(30))
        .await
        .unwrap()
        .unwrap();
    let mut job = queued.clone();
    job.status = JobStatus::Running;
    let commit = |job, fence| JobCommit {
        job,
        keys: &[],
        group: None,
        messages: &[],
        audit: None,
        drift: None,
        fence,
    };
    s.commit_job(&commit(&job, Some(&held))).await.unwrap();
    assert_eq!(s.get_job(job.id).await.unwrap(), Some(job.clone()));

    // The lease expires and another node takes it: the first node's commits
    // are refused, whatever they carry.
    let taken = s
        .acquire_lease("rotator", &second, at(31), at(40))
        .await
        .unwrap()
        .unwrap();
    assert!(taken.token > held.token);
    let audits = f.audit_count().await;
    let mut late = job.clone();
    late.status = JobStatus::Succeeded;
    let r = s
        .commit_job(&JobCommit {
            messages: &[message(&late, 32, "Step 6 of 6")],
            audit: Some(&record("Successfully rotated")),
            ..commit(&late, Some(&held))
        })
        .await;
    assert!(
        matches!(&r, Err(StoreError::Fenced(name)) if name == "rotator"),
        "{r:?}"
    );
    assert_eq!(s.get_job(job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(s.job_messages(job.id).await.unwrap(), vec![]);
    assert_eq!(f.audit_count().await, audits);

    // Under the current lease the same commit goes through; a job that does
    // not exist is still reported as missing, not as fenced.
    s.commit_job(&commit(&late, Some(&taken))).await.unwrap();
    assert_eq!(s.get_job(job.id).await.unwrap().as_ref(), Some(&late));
    let unknown = rotate("payments", 12);
    let r = s.commit_job(&commit(&unknown, Some(&taken))).await;
    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
}

/// A step commit is one batch on SQLite; the failure it reports is the
/// first in the order of its writes, as if they had run one by one, and
/// nothing of it stays.
#[tokio::test]
async fn a_job_commit_reports_its_first_failure_in_order_and_writes_nothing() {
    let f = Fixture::new().await;
    let (g, old) = seed(&f).await;
    let s = &f.store;
    let queued = rotate("payments", 10);
    s.insert_job(&queued, None, &record("Started rotate"))
        .await
        .unwrap();
    let node = NodeId::parse("node-a").unwrap();
    let held = s
        .acquire_lease("rotator", &node, at(20), at(30))
        .await
        .unwrap()
        .unwrap();
    let mut stale = held.clone();
    stale.token -= 1;
    let audits = f.audit_count().await;

    let mut job = queued.clone();
    job.status = JobStatus::Running;
    let mut clash = key("payments", 2);
    clash.kms_key_id = old.kms_key_id.clone();
    let fresh = key("payments", 3);
    let missing_group = group("no-such-group", "aws-prod");
    let msg = message(&job, 30, "Step 2 of 6");
    let audit = record("Step");
    let commit = |keys, group, fence| JobCommit {
        job: &job,
        keys,
        group,
        messages: std::slice::from_ref(&msg),
        audit: Some(&audit),
        drift: None,
        fence,
    };
    // The job's row comes first: a lost fence wins over a clashing key.
    let r = s
        .commit_job(&commit(std::slice::from_ref(&clash), None, Some(&stale)))
        .await;
    assert!(matches!(&r, Err(StoreError::Fenced(_))), "{r:?}");
    // Then the keys, in order: the clash before the group that is missing.
    let keys = [fresh.clone(), clash.clone()];
    let r = s
        .commit_job(&commit(&keys, Some(&missing_group), Some(&held)))
        .await;
    assert!(matches!(r, Err(StoreError::Duplicate)), "{r:?}");
    // The group after the keys.
    let r = s
        .commit_job(&commit(
            std::slice::from_ref(&fresh),
            Some(&missing_group),
            Some(&held),
        ))
        .await;
    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");

    assert_eq!(s.get_job(job.id).await.unwrap(), Some(queued));
    assert_eq!(s.get_key(fresh.id).await.unwrap(), None);
    assert_eq!(s.get_key(clash.id).await.unwrap(), None);
    assert_eq!(s.get_group(&g.name).await.unwrap(), Some(g));
    assert_eq!(s.job_messages(job.id).await.unwrap(), vec![]);
    assert_eq!(f.audit_count().await, audits);

    // All of it goes through together once nothing fails.
    s.commit_job(&commit(std::slice::from_ref(&fresh), None, Some(&held)))
        .await
        .unwrap();
    assert_eq!(s.get_job(job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(s.get_key(fresh.id).await.unwrap(), Some(fresh.clone()));
    assert_eq!(s.job_messages(job.id).await.unwrap(), vec![msg.clone()]);
    assert_eq!(f.audit_count().await, audits + 1);
}

#[tokio::test]
async fn the_latest_rotation_is_found_past_any_synchronizations_and_other_groups() {
    let f = Fixture::new().await;
    let (g, k) = seed(&f).await;
    let s = &f.store;
    assert_eq!(s.latest_rotation(&g.name).await.unwrap(), None);
    let older = finished(rotate("payments", 10));
    let newer = finished(rotate("payments", 20));
    for job in [&older, &newer] {
        s.insert_job(job, None, &record("Started rotate"))
            .await
            .unwrap();
    }
    // Newer than the rotation: synchronizations of the group's key, and
    // another group's rotation.
    for i in 0..5 {
        s.insert_job(
            &finished(synchronize(&k, 30 + i)),
            None,
            &record("Started synchronize"),
        )
        .await
        .unwrap();
    }
    let other = group("refunds", "aws-prod");
    s.insert_group(&other, &record("g")).await.unwrap();
    s.insert_job(&rotate("refunds", 40), None, &record("Started rotate"))
        .await
        .unwrap();

    assert_eq!(s.latest_rotation(&g.name).await.unwrap(), Some(newer));
    let missing = GroupName::parse("no-such-group").unwrap();
    assert_eq!(s.latest_rotation(&missing).await.unwrap(), None);
}

#[tokio::test]
async fn unfinished_jobs_are_the_queued_and_running_oldest_first() {
    let f = Fixture::new().await;
    let (_, k) = seed(&f).await;
    let s = &f.store;
    let mut running = synchronize(&k, 30);
    // One unfinished job per group: these three belong to three groups.
    let queued = rotate("refunds", 10);
    let mut done = rotate("payments", 5);
    done.status = JobStatus::Succeeded;
    let mut failed = rotate("payments", 6);
    failed.status = JobStatus::Failed;
    let mut cancelled = rotate("payments", 7);
    cancelled.status = JobStatus::Cancelled;
    // Created in the same microsecond as `queued`, inserted after it.
    let twin = rotate("archive", 10);
    for j in [&running, &done, &queued, &twin, &failed, &cancelled] {
        s.insert_job(j, None, &record("j")).await.unwrap();
    }
    assert_eq!(
        ids(&s.unfinished_jobs().await.unwrap()),
        vec![queued.id, twin.id, running.id]
    );

    running.status = JobStatus::Succeeded;
    running.finished_at = Some(at(40));
    s.commit_job(&JobCommit {
        job: &running,
        keys: &[],
        group: None,
        messages: &[],
        audit: Some(&record("Synchronized")),
        drift: None,
        fence: None,
    })
    .await
    .unwrap();
    assert_eq!(
        ids(&s.unfinished_jobs().await.unwrap()),
        vec![queued.id, twin.id]
    );
    // One group's: its unfinished job; none for a group without one.
    let refunds = GroupName::parse("refunds").unwrap();
    assert_eq!(
        s.unfinished_group_job(&refunds)
            .await
            .unwrap()
            .map(|j| j.id),
        Some(queued.id)
    );
    let other = GroupName::parse("no-such-group").unwrap();
    assert!(s.unfinished_group_job(&other).await.unwrap().is_none());
}

#[tokio::test]
async fn list_jobs_is_newest_first_and_limited() {
    let f = Fixture::new().await;
    let (_, k) = seed(&f).await;
    let s = &f.store;
    let a = finished(rotate("payments", 10));
    let b = synchronize(&k, 30);
    let c = finished(rotate("payments", 20));
    // Same microsecond as `c`, inserted later: shown first.
    let d = finished(rotate("payments", 20));
    for j in [&a, &b, &c, &d] {
        s.insert_job(j, None, &record("j")).await.unwrap();
    }
    assert_eq!(
        ids(&s.list_jobs(0).await.unwrap()),
        vec![b.id, d.id, c.id, a.id]
    );
    assert_eq!(ids(&s.list_jobs(2).await.unwrap()), vec![b.id, d.id]);
    assert_eq!(s.list_jobs(5000).await.unwrap().len(), 4);
}

#[tokio::test]
async fn list_jobs_defaults_to_100_and_caps_at_1000() {
    let f = Fixture::new().await;
    seed(&f).await;
    f.store
        .insert_job(&rotate("payments", 10), None, &record("j"))
        .await
        .unwrap();
    let mut conn = f.raw().await;
    // 1004 copies under other ids, in one statement rather than 1004 commits.
    let copies = if f.is_postgres() {
        "INSERT INTO jobs (id, kind, spec, status, users, created_at, started_at, finished_at, \
         progress, error, attempts, group_name) \
         SELECT format('00000000-0000-4000-8000-%s', lpad(n::text, 12, '0')), kind, spec, \
         'succeeded', users, created_at, started_at, finished_at, progress, error, attempts, \
         group_name FROM jobs, generate_series(1, 1004) AS n"
    } else {
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1004) \
         INSERT INTO jobs SELECT printf('00000000-0000-4000-8000-%012d', n.i), kind, spec, \
         'succeeded', users, created_at, started_at, finished_at, progress, error, attempts, \
         group_name, initiator FROM jobs, n"
    };
    assert_eq!(conn.execute(copies).await.unwrap(), 1004);
    assert_eq!(f.store.list_jobs(0).await.unwrap().len(), 100);
    assert_eq!(f.store.list_jobs(5000).await.unwrap().len(), 1000);
}

#[tokio::test]
async fn job_messages_are_per_job_oldest_first() {
    let f = Fixture::new().await;
    seed(&f).await;
    let s = &f.store;
    let one = rotate("payments", 10);
    let two = rotate("refunds", 11);
    s.insert_job(&one, None, &record("1")).await.unwrap();
    s.insert_job(&two, None, &record("2")).await.unwrap();
    let texts = ["Generated key", "Created KMS key", "Imported material"];
    for (i, text) in texts.iter().enumerate() {
        for job in [&one, &two] {
            s.commit_job(&JobCommit {
                job,
                keys: &[],
                group: None,
                messages: &[message(job, 100 + i as i64, text)],
                audit: None,
                drift: None,
                fence: None,
            })
            .await
            .unwrap();
        }
    }
    let read = s.job_messages(one.id).await.unwrap();
    assert_eq!(
        read.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        texts
    );
    assert!(read.iter().all(|m| m.job_id == one.id));
    assert_eq!(read[2], message(&one, 102, "Imported material"));
    assert_eq!(s.job_messages(two.id).await.unwrap().len(), 3);
    assert_eq!(s.job_messages(uuid::Uuid::new_v4()).await.unwrap(), vec![]);
}

#[tokio::test]
async fn deleting_a_key_keeps_the_jobs_that_named_it() {
    let f = Fixture::new().await;
    let (_, k) = seed(&f).await;
    let s = &f.store;
    let job = synchronize(&k, 10);
    s.insert_job(&job, None, &record("Started synchronize"))
        .await
        .unwrap();
    s.commit_job(&JobCommit {
        job: &job,
        keys: std::slice::from_ref(&k),
        group: None,
        messages: &[message(&job, 20, "Deleted material")],
        audit: None,
        drift: None,
        fence: None,
    })
    .await
    .unwrap();

    s.delete_key(k.id, &record("Deleted key")).await.unwrap();
    assert_eq!(s.get_key(k.id).await.unwrap(), None);
    assert_eq!(s.get_job(job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(s.job_messages(job.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_audit_chain_verifies_after_job_commits() {
    let f = Fixture::new().await;
    let (g, _) = seed(&f).await;
    let s = &f.store;
    let mut job = rotate("payments", 10);
    s.insert_job(&job, None, &record("Started rotate"))
        .await
        .unwrap();
    // credential, group, "Started rotate"
    let mut expected = 3;
    for (i, step) in Step::ROTATE.into_iter().enumerate() {
        let i = i as i64;
        job.status = JobStatus::Running;
        job.progress.done.push(step);
        let audited = i % 2 == 0;
        let k = key("payments", 10 + i as u32);
        s.commit_job(&JobCommit {
            job: &job,
            keys: std::slice::from_ref(&k),
            group: Some(&g),
            messages: &[message(&job, 20 + i, step.describe())],
            audit: audited.then(|| record(step.as_str())).as_ref(),
            drift: None,
            fence: None,
        })
        .await
        .unwrap();
        s.append_audit(&record("between steps")).await.unwrap();
        expected += 1 + u64::from(audited);
    }
    assert_eq!(verify_chain(s).await, expected);
    assert_eq!(s.get_job(job.id).await.unwrap(), Some(job));
}

#[tokio::test]
async fn progress_saved_by_an_older_release_reads_with_defaults() {
    let f = Fixture::new().await;
    seed(&f).await;
    let job = rotate("payments", 10);
    f.store.insert_job(&job, None, &record("j")).await.unwrap();
    let mut conn = f.raw().await;
    conn.execute(r#"UPDATE jobs SET progress = '{"steps":["generate_key"],"done":[]}'"#)
        .await
        .unwrap();
    let read = f.store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(read.progress, JobProgress::new(vec![Step::GenerateKey]));

    // A row whose kind disagrees with its spec is reported, not trusted.
    conn.execute("UPDATE jobs SET kind = 'synchronize'")
        .await
        .unwrap();
    let r = f.store.get_job(job.id).await;
    assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
}

/// Migration 0005 over jobs the release before wrote, when the users text
/// was all there was: "System" was the scheduler, and stays so; an
/// officer's job stays the officers'.
#[tokio::test]
async fn migration_0005_keeps_who_started_the_jobs_of_the_release_before() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create().await.unwrap();
    let path = dir.path().join("keyhold.db");
    let mut conn = db.raw(&path).await.unwrap();
    let old_migrations = dir.path().join("migrations");
    std::fs::create_dir(&old_migrations).unwrap();
    for name in [
        "0001_initial.sql",
        "0002_jobs.sql",
        "0003_credential_kinds.sql",
        "0004_schedule_and_cluster.sql",
    ] {
        std::fs::copy(conn.migrations_dir().join(name), old_migrations.join(name)).unwrap();
    }
    conn.migrate(&old_migrations).await.unwrap();
    let mut scheduled = rotate("payments", 10);
    scheduled.initiator = Initiator::Scheduler;
    let officers = rotate("refunds", 20);
    for job in [&scheduled, &officers] {
        conn.execute(&format!(
            "INSERT INTO jobs (id, kind, spec, status, users, created_at, progress, attempts, \
             group_name) VALUES ('{}', 'rotate', '{}', 'queued', '{}', '{}', '{}', 0, '{}')",
            job.id,
            serde_json::to_string(&job.kind).unwrap(),
            job.initiator.users(),
            format_timestamp(&job.created_at),
            serde_json::to_string(&job.progress).unwrap(),
            job.kind.group(),
        ))
        .await
        .unwrap();
    }

    let mac = std::sync::Arc::new(TestMac::default());
    let s = connect(&db.url(&path), &mac).await;
    assert_eq!(s.get_job(scheduled.id).await.unwrap(), Some(scheduled));
    assert_eq!(s.get_job(officers.id).await.unwrap(), Some(officers));
    s.close().await;
}

/// A cancel removes the rotation's key in its own transaction, and only from
/// the status and attempt it read; the runner's start likewise writes only
/// over what it read.
#[tokio::test]
async fn status_changes_and_starts_apply_only_to_what_was_read_and_take_the_key_along() {
    let f = Fixture::new().await;
    let (_, in_kms) = seed(&f).await;
    let s = &f.store;
    let mut generated = key("payments", 2);
    generated.kms_key_id = None;
    generated.state = KeyState::PreActive;
    s.insert_key(&generated, None).await.unwrap();
    let mut failed = rotate("payments", 10);
    failed.status = JobStatus::Failed;
    failed.attempts = 1;
    failed.progress.key_id = Some(generated.id);
    s.insert_job(&failed, None, &record("Started rotate"))
        .await
        .unwrap();

    let mut cancel = failed.clone();
    cancel.status = JobStatus::Cancelled;
    cancel.finished_at = Some(at(20));
    // Read at another attempt: nothing is written, not even the entry.
    let audits = f.audit_count().await;
    let mut stale = cancel.clone();
    stale.attempts = 0;
    let moved = s
        .change_job_status(
            &stale,
            JobStatus::Failed,
            &message(&failed, 20, "Cancelled"),
            &record("Cancelled job"),
            None,
            Some(generated.id),
        )
        .await
        .unwrap();
    assert!(!moved);
    assert_eq!(
        s.get_job(failed.id).await.unwrap().unwrap().status,
        JobStatus::Failed
    );
    assert!(s.get_key(generated.id).await.unwrap().is_some());
    assert_eq!(f.audit_count().await, audits);

    // A key with a KMS key is never removed this way, even if named.
    let moved = s
        .change_job_status(
            &cancel,
            JobStatus::Failed,
            &message(&failed, 21, "Cancelled"),
            &record("Cancelled job"),
            None,
            Some(in_kms.id),
        )
        .await
        .unwrap();
    assert!(moved);
    assert!(s.get_key(in_kms.id).await.unwrap().is_some());
    assert_eq!(f.audit_count().await, audits + 1);

    // The generated key goes with the status, in one transaction.
    let mut other = rotate("payments", 30);
    other.status = JobStatus::Failed;
    other.attempts = 1;
    other.progress.key_id = Some(generated.id);
    s.insert_job(&other, None, &record("Started rotate"))
        .await
        .unwrap();
    let mut cancel_other = other.clone();
    cancel_other.status = JobStatus::Cancelled;
    cancel_other.finished_at = Some(at(40));
    assert!(
        s.change_job_status(
            &cancel_other,
            JobStatus::Failed,
            &message(&other, 40, "Cancelled, key removed"),
            &record("Cancelled job; removed its key"),
            None,
            Some(generated.id),
        )
        .await
        .unwrap()
    );
    assert_eq!(s.get_key(generated.id).await.unwrap(), None);
    assert_eq!(
        s.get_job(other.id).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );

    // The runner's start over a job cancelled since it read it: refused.
    let mut queued = rotate("payments", 50);
    s.insert_job(&queued, None, &record("Started rotate"))
        .await
        .unwrap();
    let mut cancelled = queued.clone();
    cancelled.status = JobStatus::Cancelled;
    cancelled.finished_at = Some(at(51));
    assert!(
        s.change_job_status(
            &cancelled,
            JobStatus::Queued,
            &message(&queued, 51, "Cancelled"),
            &record("Cancelled job"),
            None,
            None,
        )
        .await
        .unwrap()
    );
    queued.status = JobStatus::Running;
    queued.attempts = 1;
    queued.started_at = Some(at(52));
    let started = s
        .start_job(
            &queued,
            JobStatus::Queued,
            0,
            &message(&queued, 52, "Started"),
            None,
        )
        .await
        .unwrap();
    assert!(!started);
    let stored = s.get_job(queued.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.attempts), (JobStatus::Cancelled, 0));
    assert_eq!(
        s.job_messages(queued.id).await.unwrap().len(),
        1,
        "only the cancel's message"
    );

    // And over one still as read: written, with its message.
    let mut fresh = rotate("refunds", 60);
    s.insert_group(&group("refunds", "aws-prod"), &record("g"))
        .await
        .unwrap();
    s.insert_job(&fresh, None, &record("Started rotate"))
        .await
        .unwrap();
    fresh.status = JobStatus::Running;
    fresh.attempts = 1;
    fresh.started_at = Some(at(61));
    assert!(
        s.start_job(
            &fresh,
            JobStatus::Queued,
            0,
            &message(&fresh, 61, "Started"),
            None
        )
        .await
        .unwrap()
    );
    assert_eq!(s.get_job(fresh.id).await.unwrap(), Some(fresh.clone()));
    assert_eq!(
        verify_chain(s).await,
        u64::try_from(f.audit_count().await).unwrap()
    );
}
