//! The invariants parallel requests must not break, held by the database:
//! login attempts counted before they are checked, conditional password, group and settings writes,
//! one unfinished job per group, one alias per region; and migration 0006,
//! which brings them to a database that already breaks them.

use std::sync::Arc;

use keyhold_core::StoreError;
use keyhold_core::clock::format_timestamp;
use keyhold_core::job::{Initiator, Job, JobKind, JobProgress, JobStatus, Step};
use keyhold_core::names::GroupName;
use keyhold_core::settings::Settings;
use keyhold_store::testing::TestDatabase;

use crate::common::{Fixture, TestMac, at, connect, credential, group, identity, record};

fn rotate(group: &str, created: i64, status: JobStatus) -> Job {
    Job {
        id: uuid::Uuid::new_v4(),
        kind: JobKind::Rotate {
            group: GroupName::parse(group).unwrap(),
        },
        status,
        initiator: Initiator::Officers("Admin1,Admin2".into()),
        created_at: at(created),
        started_at: None,
        finished_at: None,
        progress: JobProgress::new(Step::ROTATE.to_vec()),
        error: None,
        attempts: 0,
    }
}

/// 32 attempts at once against a threshold of 5: the database admits
/// exactly 5, numbered 1 to 5 (each counted before its password would be
/// checked); the others are refused unchecked. A lock holds until its time.
#[tokio::test]
async fn parallel_login_attempts_admit_exactly_the_threshold() {
    let f = Fixture::new().await;
    let alice = identity("alice");
    f.store
        .insert_identity(&alice, &record("add"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let store = f.store.clone();
        let name = alice.name.clone();
        tasks.push(tokio::spawn(async move {
            store.begin_login_attempt(&name, at(0), 5).await.unwrap()
        }));
    }
    let mut admitted = Vec::new();
    for t in tasks {
        admitted.extend(t.await.unwrap());
    }
    admitted.sort_unstable();
    assert_eq!(admitted, [1, 2, 3, 4, 5]);
    let stored = f.store.get_identity(&alice.name).await.unwrap().unwrap();
    assert_eq!(stored.failed_logins, 5);

    f.store
        .lock_identity(&alice.name, at(600), &record("locked"))
        .await
        .unwrap();
    let stored = f.store.get_identity(&alice.name).await.unwrap().unwrap();
    assert_eq!(
        (stored.failed_logins, stored.locked_until),
        (0, Some(at(600)))
    );
    assert_eq!(
        f.store
            .begin_login_attempt(&alice.name, at(599), 5)
            .await
            .unwrap(),
        None
    );
    assert!(
        !f.store
            .clear_failed_logins(&alice.name, at(599), &alice.password_hash)
            .await
            .unwrap()
    );
    // At 600 the lock has run out.
    assert_eq!(
        f.store
            .begin_login_attempt(&alice.name, at(600), 5)
            .await
            .unwrap(),
        Some(1)
    );
    // A password changed since it was checked: not cleared either.
    assert!(
        !f.store
            .clear_failed_logins(&alice.name, at(600), "another hash")
            .await
            .unwrap()
    );
    assert!(
        f.store
            .clear_failed_logins(&alice.name, at(600), &alice.password_hash)
            .await
            .unwrap()
    );
    let stored = f.store.get_identity(&alice.name).await.unwrap().unwrap();
    assert_eq!((stored.failed_logins, stored.locked_until), (0, None));
    assert_eq!(
        f.store
            .begin_login_attempt(&identity("ghost").name, at(0), 5)
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        f.store
            .lock_identity(&identity("ghost").name, at(600), &record("x"))
            .await,
        Err(StoreError::NotFound)
    ));
}

/// A password is set only over the hash that was checked, and a failure
/// counted afterwards leaves it in place.
#[tokio::test]
async fn password_is_set_only_over_the_checked_hash() {
    let f = Fixture::new().await;
    let alice = identity("alice");
    f.store
        .insert_identity(&alice, &record("add"))
        .await
        .unwrap();
    assert!(
        f.store
            .set_password(
                &alice.name,
                &alice.password_hash,
                "new-hash",
                4,
                &record("changed")
            )
            .await
            .unwrap()
    );
    f.store
        .begin_login_attempt(&alice.name, at(0), 5)
        .await
        .unwrap();
    assert!(
        !f.store
            .set_password(
                &alice.name,
                &alice.password_hash,
                "other",
                4,
                &record("stale")
            )
            .await
            .unwrap()
    );
    let stored = f.store.get_identity(&alice.name).await.unwrap().unwrap();
    assert_eq!(stored.password_hash, "new-hash");
    assert!(!stored.must_change_password);
    assert_eq!(stored.failed_logins, 1);
    let entries = f
        .store
        .list_audit(&keyhold_core::audit::AuditFilter::default())
        .await
        .unwrap();
    assert!(entries.iter().any(|e| e.summary == "changed"));
    assert!(
        !entries.iter().any(|e| e.summary == "stale"),
        "no entry without the change"
    );
}

/// Each change puts the replaced hash in the history, in the change's own
/// transaction: a refused change adds nothing, only the newest rows stay,
/// and the history goes with its identity.
#[tokio::test]
async fn password_history_keeps_the_newest_replaced_hashes() {
    let f = Fixture::new().await;
    let alice = identity("alice");
    let bob = identity("bob");
    for who in [&alice, &bob] {
        f.store.insert_identity(who, &record("add")).await.unwrap();
    }
    assert!(
        f.store
            .password_history(&alice.name)
            .await
            .unwrap()
            .is_empty()
    );
    let mut current = alice.password_hash.clone();
    for n in 1..=6 {
        let next = format!("hash-{n}");
        assert!(
            f.store
                .set_password(&alice.name, &current, &next, 4, &record("changed"))
                .await
                .unwrap()
        );
        current = next;
    }
    // A stale change is refused and leaves the history as it was.
    assert!(
        !f.store
            .set_password(&alice.name, "hash-1", "hash-x", 4, &record("stale"))
            .await
            .unwrap()
    );
    assert_eq!(
        f.store.password_history(&alice.name).await.unwrap(),
        ["hash-5", "hash-4", "hash-3", "hash-2"],
        "newest first, the four before the current one"
    );
    assert!(
        f.store
            .set_password(
                &bob.name,
                &bob.password_hash,
                "bob-1",
                4,
                &record("changed")
            )
            .await
            .unwrap()
    );
    assert_eq!(
        f.store.password_history(&bob.name).await.unwrap(),
        std::slice::from_ref(&bob.password_hash)
    );
    f.store
        .delete_identity(&alice.name, &record("deleted"))
        .await
        .unwrap();
    assert!(
        f.store
            .password_history(&alice.name)
            .await
            .unwrap()
            .is_empty()
    );
    f.store
        .insert_identity(&alice, &record("again"))
        .await
        .unwrap();
    assert!(
        f.store
            .password_history(&alice.name)
            .await
            .unwrap()
            .is_empty(),
        "a new identity of the same name starts without the old one's history"
    );
}

/// Groups and settings are replaced only while they are what the caller read.
#[tokio::test]
async fn replacements_refuse_what_changed_since_it_was_read() {
    let f = Fixture::new().await;
    f.store
        .insert_credential(&credential("aws-prod"), &record("c"))
        .await
        .unwrap();
    let g = group("payments", "aws-prod");
    f.store.insert_group(&g, &record("g")).await.unwrap();
    let mut first = g.clone();
    first.info.owner = "first".into();
    let mut second = g.clone();
    second.info.notes = "second".into();
    assert!(
        f.store
            .replace_group(&g, &first, &record("1"))
            .await
            .unwrap()
    );
    assert!(
        !f.store
            .replace_group(&g, &second, &record("2"))
            .await
            .unwrap()
    );
    assert_eq!(
        f.store.get_group(&g.name).await.unwrap(),
        Some(first.clone())
    );
    // Another group cannot take the alias, in the same region.
    let other = group("billing", "aws-prod");
    f.store.insert_group(&other, &record("g2")).await.unwrap();
    let mut taking = other.clone();
    taking.aws.alias = g.aws.alias.clone();
    assert!(matches!(
        f.store.replace_group(&other, &taking, &record("3")).await,
        Err(StoreError::Duplicate)
    ));
    let mut same_alias = group("third", "aws-prod");
    same_alias.aws.alias = g.aws.alias.clone();
    assert!(matches!(
        f.store.insert_group(&same_alias, &record("4")).await,
        Err(StoreError::Duplicate)
    ));

    let defaults = Settings::default();
    let a = Settings {
        dual_control: !defaults.dual_control,
        ..defaults.clone()
    };
    let b = Settings {
        lockout_threshold: defaults.lockout_threshold + 1,
        ..defaults.clone()
    };
    assert!(
        f.store
            .replace_settings(&defaults, &a, &record("a"))
            .await
            .unwrap()
    );
    assert!(
        !f.store
            .replace_settings(&defaults, &b, &record("b"))
            .await
            .unwrap()
    );
    assert_eq!(f.store.get_settings().await.unwrap(), a);
}

/// One unfinished job per group: a second is refused, also when a failed
/// one is queued again; a finished one does not count.
#[tokio::test]
async fn one_unfinished_job_per_group() {
    let f = Fixture::new().await;
    f.store
        .insert_credential(&credential("aws-prod"), &record("c"))
        .await
        .unwrap();
    f.store
        .insert_group(&group("payments", "aws-prod"), &record("g"))
        .await
        .unwrap();
    let failed = rotate("payments", 1, JobStatus::Failed);
    f.store
        .insert_job(&failed, None, &record("j0"))
        .await
        .unwrap();
    let first = rotate("payments", 2, JobStatus::Queued);
    f.store
        .insert_job(&first, None, &record("j1"))
        .await
        .unwrap();
    let store: Arc<dyn keyhold_store::SqlStore> = f.store.clone();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .insert_job(
                    &rotate("payments", 3 + i, JobStatus::Queued),
                    None,
                    &record("j"),
                )
                .await
        }));
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Err(StoreError::Duplicate)));
    }
    let mut requeued = failed.clone();
    requeued.status = JobStatus::Queued;
    assert!(matches!(
        f.store
            .commit_job(&keyhold_core::ports::JobCommit {
                job: &requeued,
                keys: &[],
                group: None,
                messages: &[],
                audit: None,
                drift: None,
                fence: None,
            })
            .await,
        Err(StoreError::Duplicate)
    ));
    let unfinished = f.store.unfinished_jobs().await.unwrap();
    assert_eq!(
        unfinished.iter().map(|j| j.id).collect::<Vec<_>>(),
        [first.id]
    );
}

/// Migration 0006 over a database the release before filled with what raced
/// through: two groups with one alias in one region, three unfinished jobs
/// of one group. It applies; the oldest group keeps the alias and the other
/// gets a suffixed one; the oldest job stays and the later ones are failed
/// with a reason in their log; afterwards the invariants hold.
#[tokio::test]
async fn migration_0006_settles_duplicates_written_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create().await.unwrap();
    let path = dir.path().join("keyhold.db");
    let mut conn = db.raw(&path).await.unwrap();
    let old_migrations = dir.path().join("migrations");
    std::fs::create_dir(&old_migrations).unwrap();
    for entry in std::fs::read_dir(conn.migrations_dir()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.as_str() < "0006" {
            std::fs::copy(entry.path(), old_migrations.join(&name)).unwrap();
        }
    }
    conn.migrate(&old_migrations).await.unwrap();
    let mac = Arc::new(TestMac::default());
    let cred = credential("aws-prod");
    let secret = conn.bytes_literal(&[1, 2, 3]);
    conn.execute(&format!(
        "INSERT INTO credentials \
         (id, name, service, kind, access_key_id, sealed_secret, endpoint, created_at) \
         VALUES ('{}', 'aws-prod', 'aws', 'access_key', 'AKIAIOSFODNN7EXAMPLE', {secret}, NULL, '{}')",
        cred.id,
        format_timestamp(&cred.created_at)
    ))
    .await
    .unwrap();
    let older = group("payments", "aws-prod");
    let mut newer = group("billing", "aws-prod");
    newer.aws.alias = older.aws.alias.clone();
    newer.created_at = at(10);
    for g in [&older, &newer] {
        conn.execute(&format!(
            "INSERT INTO key_groups (id, name, service, credential_name, rotate_every, valid_for, \
             info_owner, info_notes, alias, description, region, active_key_id, policy, \
             disable_after_rotate, created_at, updated_at, next_rotation_at) VALUES \
             ('{}', '{}', 'aws', 'aws-prod', NULL, NULL, '', '', '{}', 'demo key', 'eu-west-1', \
             NULL, NULL, FALSE, '{}', '{}', NULL)",
            g.id,
            g.name,
            g.aws.alias,
            format_timestamp(&g.created_at),
            format_timestamp(&g.updated_at),
        ))
        .await
        .unwrap();
    }
    let jobs = [
        rotate("payments", 1, JobStatus::Running),
        rotate("payments", 2, JobStatus::Queued),
        rotate("payments", 3, JobStatus::Queued),
        rotate("billing", 4, JobStatus::Queued),
        rotate("billing", 0, JobStatus::Succeeded),
    ];
    for j in &jobs {
        conn.execute(&format!(
            "INSERT INTO jobs (id, kind, spec, status, users, initiator, created_at, started_at, \
             finished_at, progress, error, attempts, group_name) VALUES \
             ('{}', '{}', '{}', '{}', 'Admin1,Admin2', 'officers', '{}', NULL, NULL, '{}', NULL, 0, '{}')",
            j.id,
            j.kind.label(),
            serde_json::to_string(&j.kind).unwrap(),
            j.status.as_str(),
            format_timestamp(&j.created_at),
            serde_json::to_string(&j.progress).unwrap(),
            j.kind.group(),
        ))
        .await
        .unwrap();
    }

    let s = connect(&db.url(&path), &mac).await;
    let kept = s.get_group(&older.name).await.unwrap().unwrap();
    assert_eq!(kept.aws.alias, older.aws.alias);
    let moved = s.get_group(&newer.name).await.unwrap().unwrap();
    assert_eq!(
        moved.aws.alias.as_str(),
        format!("{}-{}", older.aws.alias, &newer.id.to_string()[..8])
    );
    let unfinished: Vec<_> = s
        .unfinished_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(unfinished, [jobs[0].id, jobs[3].id]);
    for stopped in &jobs[1..3] {
        let job = s.get_job(stopped.id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Failed);
        assert!(job.finished_at.is_some());
        assert!(
            job.error
                .as_deref()
                .unwrap()
                .starts_with("stopped by the upgrade to one unfinished job per key group")
        );
        let log = s.job_messages(stopped.id).await.unwrap();
        assert_eq!(log.len(), 1);
        assert!(log[0].text.starts_with("Failed: stopped by the upgrade"));
    }
    assert_eq!(
        s.get_job(jobs[4].id).await.unwrap().unwrap().status,
        JobStatus::Succeeded
    );
    // The invariants hold from now on.
    assert!(matches!(
        s.insert_job(
            &rotate("payments", 20, JobStatus::Queued),
            None,
            &record("j")
        )
        .await,
        Err(StoreError::Duplicate)
    ));
    let mut clash = group("third", "aws-prod");
    clash.aws.alias = older.aws.alias.clone();
    assert!(matches!(
        s.insert_group(&clash, &record("g")).await,
        Err(StoreError::Duplicate)
    ));
    s.close().await;
}
