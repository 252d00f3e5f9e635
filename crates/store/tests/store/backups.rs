//! Backups and audit archives as records; the snapshot a backup is made of
//! and the load that restores it, on the run's backend and across backends:
//! a restored store reads back as the one it was taken from (its audit chain
//! still verifying), a load never writes over an installation, and a load
//! stopped half-way leaves no row behind.

use std::sync::Arc;

use async_trait::async_trait;
use keyhold_core::StoreError;
use keyhold_core::approval::{ApprovalRequest, OperationClass, Quorum, Vote};
use keyhold_core::backup::{
    AuditArchive, BackupRecord, BackupStatus, BackupTrigger, SnapshotItem, SnapshotSink,
    SnapshotSummary, SnapshotValue,
};
use keyhold_core::cluster::{NodeRecord, NodeRole};
use keyhold_core::drift::{DriftCheck, DriftFilter, DriftKind, DriftRecord, Finding};
use keyhold_core::identity::{Role, Session, SessionIdentity};
use keyhold_core::job::{Initiator, Job, JobKind, JobMessage, JobProgress, JobStatus, Step};
use keyhold_core::key::KeyPage;
use keyhold_core::names::{GroupName, IdentityName, NodeId};
use keyhold_core::ports::JobCommit;
use keyhold_core::settings::Settings;
use keyhold_store::restore::{
    LoadError, LoadSummary, Loader, SNAPSHOT_TABLES, latest_schema_version,
};
use keyhold_store::testing::TestDatabase;
use keyhold_store::{DatabaseKind, SqlStore};

use crate::common::{
    Fixture, at, chain_credential, connect, credential, group, identity, key, record, verify_chain,
    xks_credential, xks_key, xks_store,
};

fn backup(started: i64, trigger: BackupTrigger) -> BackupRecord {
    let id = uuid::Uuid::new_v4();
    BackupRecord {
        id,
        trigger,
        initiated_by: "Admin1,Admin2".into(),
        status: BackupStatus::Running,
        started_at: at(started),
        finished_at: None,
        file: format!("keyhold-{id}.khb"),
        size: None,
        sha256: None,
        keys: None,
        threshold: 2,
        custodians: vec!["alice".into(), "bob".into(), "carol".into()],
        shares: vec![
            "share for alice".into(),
            "share for bob".into(),
            "share for carol".into(),
        ],
        error: None,
        node: "node-1".into(),
    }
}

fn ended(b: &BackupRecord, status: BackupStatus, when: i64) -> BackupRecord {
    BackupRecord {
        status,
        finished_at: Some(at(when)),
        size: Some(123_456),
        sha256: Some("ab".repeat(32)),
        keys: Some(3),
        error: (status == BackupStatus::Failed).then(|| "the backup directory is full".into()),
        ..b.clone()
    }
}

#[tokio::test]
async fn backups_round_trip_newest_first_one_running_at_a_time() {
    let f = Fixture::new().await;
    let s = &f.store;
    let first = backup(10, BackupTrigger::Manual);
    s.insert_backup(&first, &record("Backup started"))
        .await
        .unwrap();
    assert_eq!(s.get_backup(first.id).await.unwrap(), Some(first.clone()));

    // A second start while one runs is a duplicate, and writes nothing.
    let second = backup(20, BackupTrigger::Scheduled);
    assert!(matches!(
        s.insert_backup(&second, &record("Backup started")).await,
        Err(StoreError::Duplicate)
    ));

    let done = ended(&first, BackupStatus::Succeeded, 15);
    assert!(
        s.finish_backup(&done, &record("Backup succeeded"))
            .await
            .unwrap()
    );
    // Ended once: a second end (a restart failing it, say) writes nothing.
    let again = ended(&first, BackupStatus::Failed, 16);
    assert!(
        !s.finish_backup(&again, &record("Backup failed"))
            .await
            .unwrap()
    );
    assert_eq!(s.get_backup(first.id).await.unwrap(), Some(done.clone()));

    s.insert_backup(&second, &record("Backup started"))
        .await
        .unwrap();
    let failed = ended(&second, BackupStatus::Failed, 21);
    assert!(
        s.finish_backup(&failed, &record("Backup failed"))
            .await
            .unwrap()
    );
    assert_eq!(s.list_backups(0).await.unwrap(), vec![failed.clone(), done]);
    assert_eq!(s.list_backups(1).await.unwrap(), vec![failed.clone()]);

    s.delete_backup(first.id, &record("Backup removed"))
        .await
        .unwrap();
    assert!(matches!(
        s.delete_backup(first.id, &record("Backup removed")).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.list_backups(0).await.unwrap(), vec![failed]);
    assert_eq!(s.get_backup(first.id).await.unwrap(), None);

    // Started, ended, started, ended, removed: refusals left no entry.
    assert_eq!(verify_chain(s).await, 5);
}

#[tokio::test]
async fn sixteen_concurrent_ends_of_one_backup_record_one() {
    let f = Fixture::new().await;
    let b = backup(10, BackupTrigger::Scheduled);
    f.store
        .insert_backup(&b, &record("Backup started"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = f.store.clone();
        let status = if i % 2 == 0 {
            BackupStatus::Succeeded
        } else {
            BackupStatus::Failed
        };
        let end = ended(&b, status, 20 + i);
        tasks.push(tokio::spawn(async move {
            store
                .finish_backup(&end, &record("Backup ended"))
                .await
                .unwrap()
        }));
    }
    let mut recorded = 0;
    for task in tasks {
        if task.await.unwrap() {
            recorded += 1;
        }
    }
    assert_eq!(recorded, 1);
    assert_ne!(
        f.store.get_backup(b.id).await.unwrap().unwrap().status,
        BackupStatus::Running
    );
    assert_eq!(verify_chain(&f.store).await, 2);
}

fn archive(first: i64, last: i64) -> AuditArchive {
    AuditArchive {
        id: uuid::Uuid::new_v4(),
        file: format!("audit-{first:08}-{last:08}.jsonl"),
        first_seq: first,
        last_seq: last,
        created_at: at(100 + first),
        sha256: "cd".repeat(32),
    }
}

#[tokio::test]
async fn an_audit_archive_marks_its_entries_archived_in_its_transaction() {
    let f = Fixture::new().await;
    let s = &f.store;
    for i in 0..5 {
        s.append_audit(&record(&format!("entry {i}")))
            .await
            .unwrap();
    }
    // Archives are contiguous from the first entry: one that leaves a gap
    // (or overlaps, as two nodes archiving at once would) is refused.
    assert!(matches!(
        s.insert_audit_archive(&archive(2, 4), &record("Archived"))
            .await,
        Err(StoreError::Duplicate)
    ));
    let a = archive(1, 4);
    s.insert_audit_archive(&a, &record("Archived the audit log"))
        .await
        .unwrap();
    assert_eq!(s.list_audit_archives().await.unwrap(), vec![a.clone()]);
    assert!(matches!(
        s.insert_audit_archive(&archive(3, 5), &record("Archived"))
            .await,
        Err(StoreError::Duplicate)
    ));
    let archived: Vec<bool> = s
        .audit_page(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.archived)
        .collect();
    assert_eq!(archived, [true, true, true, true, false, false]);

    // Entries keyhold does not hold, a file named twice: refused, nothing written.
    assert!(matches!(
        s.insert_audit_archive(&archive(5, 50), &record("Archived"))
            .await,
        Err(StoreError::NotFound)
    ));
    let twice = AuditArchive {
        id: uuid::Uuid::new_v4(),
        ..a.clone()
    };
    assert!(matches!(
        s.insert_audit_archive(&twice, &record("Archived")).await,
        Err(StoreError::Duplicate)
    ));
    assert_eq!(s.list_audit_archives().await.unwrap(), vec![a]);
    // The flag is outside the chain: it still verifies.
    assert_eq!(verify_chain(s).await, 6);
}

// Snapshots and loads

/// Keeps what a snapshot sends, each row's values through JSON as a backup
/// file carries them.
#[derive(Default)]
struct Kept(Vec<SnapshotItem>);

#[async_trait]
impl SnapshotSink for Kept {
    async fn item(&mut self, item: SnapshotItem) -> Result<(), StoreError> {
        let item = match item {
            SnapshotItem::Row(values) => {
                let json = serde_json::to_string(&values).unwrap();
                SnapshotItem::Row(serde_json::from_str::<Vec<SnapshotValue>>(&json).unwrap())
            }
            table => table,
        };
        self.0.push(item);
        Ok(())
    }
}

async fn snapshot(store: &Arc<dyn SqlStore>) -> (SnapshotSummary, Vec<SnapshotItem>) {
    let mut kept = Kept::default();
    let summary = store.export_snapshot(&mut kept).await.unwrap();
    (summary, kept.0)
}

async fn load(url: &str, version: i64, items: Vec<SnapshotItem>) -> LoadSummary {
    let mut loader = Loader::begin(url, version).await.unwrap();
    for item in items {
        loader.item(item).await.unwrap();
    }
    loader.finish().await.unwrap()
}

/// What a populated store holds, to compare a restored one with.
struct Seeded {
    job: uuid::Uuid,
    session: String,
}

fn name(group: &str) -> GroupName {
    GroupName::parse(group).unwrap()
}

/// A store with a row in every table a snapshot carries, and in those it
/// leaves out (a session, a node, a lease).
async fn populate(s: &Arc<dyn SqlStore>) -> Seeded {
    let admin = identity("Admin1");
    s.insert_identity(&admin, &record("Added Admin1"))
        .await
        .unwrap();
    s.insert_identity(&identity("Officer1"), &record("Added Officer1"))
        .await
        .unwrap();
    assert!(
        s.set_password(
            &admin.name,
            &admin.password_hash,
            "$argon2id$v=19$new",
            5,
            &record("pw")
        )
        .await
        .unwrap()
    );
    let session = Session {
        id: "ab".repeat(32),
        identities: vec![SessionIdentity {
            name: admin.name.clone(),
            role: Role::Administrator,
        }],
        created_at: at(6),
        last_seen: at(6),
        grant: None,
    };
    s.insert_session(&session, &record("Login")).await.unwrap();

    s.insert_credential(&credential("aws-prod"), &record("c1"))
        .await
        .unwrap();
    s.insert_credential(
        &chain_credential("aws-chain", Some("arn:aws:iam::123456789012:role/keyhold")),
        &record("c2"),
    )
    .await
    .unwrap();
    s.insert_group(&group("payments", "aws-prod"), &record("g1"))
        .await
        .unwrap();
    s.insert_group(&group("billing", "aws-chain"), &record("g2"))
        .await
        .unwrap();
    let k1 = key("payments", 1);
    s.insert_key(&k1, Some(&record("k1"))).await.unwrap();
    s.insert_key(&key("payments", 2), None).await.unwrap();
    s.insert_key(&key("billing", 1), None).await.unwrap();
    let settings = Settings {
        backup_keep: 9,
        ..Settings::default()
    };
    s.put_settings(&settings, &record("Settings"))
        .await
        .unwrap();

    // A job with messages, and a drift check with a finding on a key.
    let job = Job {
        id: uuid::Uuid::new_v4(),
        kind: JobKind::CheckDrift {
            group: name("payments"),
        },
        status: JobStatus::Running,
        initiator: Initiator::Scheduler,
        created_at: at(20),
        started_at: Some(at(20)),
        finished_at: None,
        progress: JobProgress::new(vec![Step::CheckDrift]),
        error: None,
        attempts: 1,
    };
    s.insert_job(&job, None, &record("Started")).await.unwrap();
    let finding = Finding {
        id: uuid::Uuid::new_v4(),
        group: name("payments"),
        kind: DriftKind::AliasMissing,
        subject: "alias/payments".into(),
        key_id: Some(k1.id),
        kms_key_id: k1.kms_key_id.clone(),
        detail: "the alias is gone".into(),
        repair: None,
        first_seen: at(21),
        last_seen: at(21),
        cleared_at: None,
    };
    let drift = DriftRecord {
        check: DriftCheck {
            group: name("payments"),
            checked_at: at(21),
            job_id: job.id,
            open: 1,
        },
        findings: vec![finding],
        audits: vec![record("Drift found")],
    };
    for (secs, text, with_drift) in [(21, "Checked", true), (22, "Done", false)] {
        let message = JobMessage {
            job_id: job.id,
            time: at(secs),
            text: text.into(),
        };
        s.commit_job(&JobCommit {
            job: &job,
            keys: &[],
            group: None,
            messages: std::slice::from_ref(&message),
            audit: None,
            drift: with_drift.then_some(&drift),
            fence: None,
        })
        .await
        .unwrap();
    }

    // An approval with a vote.
    let request = ApprovalRequest::pending(
        OperationClass::DeleteGroup,
        serde_json::json!({"kind": "delete_group", "group": "billing"}),
        "Delete key group 'billing'".into(),
        vec![IdentityName::parse("Admin1").unwrap()],
        Quorum::new(2, Role::Administrator, 1).unwrap(),
        at(30),
    );
    s.insert_approval(&request, &record("Asked")).await.unwrap();
    let vote = Vote {
        identity: IdentityName::parse("Officer1").unwrap(),
        role: Role::Administrator,
        approve: true,
        at: at(31),
        reason: None,
    };
    s.vote_approval(request.id, &vote, &record("Voted"))
        .await
        .unwrap();

    let node = NodeId::parse("node-1").unwrap();
    assert!(
        s.advance_audit_stream_cursor("syslog", None, 3, &node, at(40))
            .await
            .unwrap()
    );
    s.heartbeat(&NodeRecord {
        id: node.clone(),
        started_at: at(40),
        last_seen: at(41),
        role: NodeRole::Rotator,
    })
    .await
    .unwrap();
    s.acquire_lease("rotator", &node, at(41), at(100))
        .await
        .unwrap()
        .unwrap();

    let b = backup(50, BackupTrigger::Manual);
    s.insert_backup(&b, &record("Backup started"))
        .await
        .unwrap();
    s.finish_backup(
        &ended(&b, BackupStatus::Succeeded, 51),
        &record("Backup done"),
    )
    .await
    .unwrap();
    s.insert_audit_archive(&archive(1, 3), &record("Archived"))
        .await
        .unwrap();

    // An external key store with two credentials and a key.
    let xks = xks_store("payments");
    s.insert_xks_store(&xks, &xks_credential(&xks, 60), &record("XKS store"))
        .await
        .unwrap();
    assert!(
        s.insert_xks_credential(&xks_credential(&xks, 61), 2, &record("XKS credential"))
            .await
            .unwrap()
    );
    s.insert_xks_key(&xks_key(&xks, 62), &record("XKS key"))
        .await
        .unwrap();
    Seeded {
        job: job.id,
        session: session.id,
    }
}

/// `restored` reads back as `original` did, through the Store port; what a
/// snapshot leaves out is not there.
async fn assert_same(original: &Arc<dyn SqlStore>, restored: &Arc<dyn SqlStore>, seeded: &Seeded) {
    let (o, r) = (original, restored);
    assert_eq!(
        o.list_identities().await.unwrap(),
        r.list_identities().await.unwrap()
    );
    let admin = IdentityName::parse("Admin1").unwrap();
    assert_eq!(
        r.password_history(&admin).await.unwrap(),
        o.password_history(&admin).await.unwrap()
    );
    assert_eq!(r.password_history(&admin).await.unwrap().len(), 1);
    assert_eq!(
        o.list_credentials().await.unwrap(),
        r.list_credentials().await.unwrap()
    );
    assert_eq!(
        o.list_groups().await.unwrap(),
        r.list_groups().await.unwrap()
    );
    let all_keys = KeyPage {
        group: None,
        after: None,
        limit: KeyPage::MAX_LIMIT,
    };
    let keys = r.list_keys(&all_keys).await.unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(o.list_keys(&all_keys).await.unwrap(), keys);
    assert_eq!(
        o.get_settings().await.unwrap(),
        r.get_settings().await.unwrap()
    );
    assert_eq!(o.list_jobs(0).await.unwrap(), r.list_jobs(0).await.unwrap());
    assert_eq!(
        o.job_messages(seeded.job).await.unwrap(),
        r.job_messages(seeded.job).await.unwrap()
    );
    assert_eq!(
        o.list_approvals(None, 0).await.unwrap(),
        r.list_approvals(None, 0).await.unwrap()
    );
    let drift = DriftFilter {
        include_cleared: true,
        ..DriftFilter::default()
    };
    assert_eq!(
        o.list_drift(&drift).await.unwrap(),
        r.list_drift(&drift).await.unwrap()
    );
    assert_eq!(
        o.drift_checks().await.unwrap(),
        r.drift_checks().await.unwrap()
    );
    assert_eq!(r.audit_stream_cursor("syslog").await.unwrap(), Some(3));
    assert_eq!(
        o.list_backups(0).await.unwrap(),
        r.list_backups(0).await.unwrap()
    );
    assert_eq!(
        o.list_audit_archives().await.unwrap(),
        r.list_audit_archives().await.unwrap()
    );
    assert_eq!(
        o.list_xks_stores().await.unwrap(),
        r.list_xks_stores().await.unwrap()
    );
    let credentials = r.list_xks_credentials().await.unwrap();
    assert_eq!(credentials.len(), 2);
    assert_eq!(o.list_xks_credentials().await.unwrap(), credentials);
    let xks_keys = r.list_xks_keys(None).await.unwrap();
    assert_eq!(xks_keys.len(), 1);
    assert_eq!(o.list_xks_keys(None).await.unwrap(), xks_keys);
    // The XKS revision is the installation's own: rebuilt at 0, and it
    // moves with the restored database's first XKS write.
    assert!(o.xks_revision().await.unwrap() > 0);
    assert_eq!(r.xks_revision().await.unwrap(), 0);
    let entries = r.audit_page(0, 1_000_000).await.unwrap();
    assert_eq!(o.audit_page(0, 1_000_000).await.unwrap(), entries);
    assert!(entries[..3].iter().all(|e| e.archived));
    assert_eq!(verify_chain(r).await, entries.len() as u64);

    // The installation's own: not carried.
    assert_eq!(
        r.get_session(&seeded.session).await.unwrap().map(|s| s.id),
        None
    );
    assert!(r.list_nodes().await.unwrap().is_empty());
    assert_eq!(r.get_lease("rotator").await.unwrap(), None);

    // The restored database takes new rows: ids generated after the loaded
    // ones (PostgreSQL's identity columns), the chain going on.
    let job = o.get_job(seeded.job).await.unwrap().unwrap();
    let message = JobMessage {
        job_id: job.id,
        time: at(60),
        text: "After the restore".into(),
    };
    r.commit_job(&JobCommit {
        job: &job,
        keys: &[],
        group: None,
        messages: std::slice::from_ref(&message),
        audit: Some(&record("After the restore")),
        drift: None,
        fence: None,
    })
    .await
    .unwrap();
    let texts: Vec<String> = r
        .job_messages(job.id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["Checked", "Done", "After the restore"]);
    r.insert_approval(
        &ApprovalRequest::pending(
            OperationClass::DeleteGroup,
            serde_json::json!({"kind": "delete_group", "group": "payments"}),
            "Delete key group 'payments'".into(),
            vec![IdentityName::parse("Admin1").unwrap()],
            Quorum::new(1, Role::Administrator, 1).unwrap(),
            at(61),
        ),
        &record("Asked again"),
    )
    .await
    .unwrap();
    assert!(
        r.delete_xks_key(xks_keys[0].id, &record("XKS key deleted"))
            .await
            .unwrap()
    );
    assert_eq!(r.xks_revision().await.unwrap(), 1);
    assert_eq!(verify_chain(r).await, entries.len() as u64 + 3);
}

/// A fresh database of `kind` and the URL to load into; the directory
/// holds a SQLite file.
async fn target(kind: DatabaseKind) -> (TestDatabase, tempfile::TempDir, String) {
    let db = TestDatabase::create_on(kind).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = db.url(&dir.path().join("restored.db"));
    (db, dir, url)
}

#[tokio::test]
async fn a_snapshot_loads_into_a_new_database_as_it_was() {
    let f = Fixture::new().await;
    let seeded = populate(&f.store).await;
    let (summary, items) = snapshot(&f.store).await;
    let latest = latest_schema_version(f.db.kind());
    assert_eq!(summary.schema_version, latest);
    let tables: Vec<&str> = summary.rows.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(tables, SNAPSHOT_TABLES);
    assert!(
        summary.rows.iter().all(|(_, n)| *n > 0),
        "{:?}",
        summary.rows
    );

    let (_db, _dir, url) = target(f.db.kind()).await;
    let loaded = load(&url, summary.schema_version, items).await;
    assert_eq!(loaded.rows, summary.rows);
    assert_eq!((loaded.loaded_at, loaded.schema_version), (latest, latest));
    let restored = connect(&url, &f.mac).await;
    assert_same(&f.store, &restored, &seeded).await;
}

/// SQLite to PostgreSQL and back (or the other way round on a PostgreSQL
/// run): booleans, integers and ids convert, and the store reads the same.
#[tokio::test]
async fn a_snapshot_loads_across_backends_and_back() {
    if !TestDatabase::postgres_available() {
        eprintln!(
            "no PostgreSQL server for this run (KEYHOLD_TEST_POSTGRES_URL unset): the cross-backend load is not tested"
        );
        return;
    }
    let f = Fixture::new().await;
    let seeded = populate(&f.store).await;
    let other = match f.db.kind() {
        DatabaseKind::Sqlite => DatabaseKind::Postgres,
        DatabaseKind::Postgres => DatabaseKind::Sqlite,
    };
    let (summary, items) = snapshot(&f.store).await;
    let (_across_db, _across_dir, across_url) = target(other).await;
    load(&across_url, summary.schema_version, items).await;
    let across = connect(&across_url, &f.mac).await;
    assert_same(&f.store, &across, &seeded).await;

    // Back to the first backend, from the restored store (which has taken
    // one message, one request and their entries since).
    let (summary, items) = snapshot(&across).await;
    let (_back_db, _back_dir, back_url) = target(f.db.kind()).await;
    load(&back_url, summary.schema_version, items).await;
    let back = connect(&back_url, &f.mac).await;
    assert_eq!(
        across.audit_page(0, 1_000_000).await.unwrap(),
        back.audit_page(0, 1_000_000).await.unwrap()
    );
    assert_eq!(
        across.job_messages(seeded.job).await.unwrap(),
        back.job_messages(seeded.job).await.unwrap()
    );
    assert_eq!(
        across.list_approvals(None, 0).await.unwrap(),
        back.list_approvals(None, 0).await.unwrap()
    );
    assert_eq!(
        across.list_groups().await.unwrap(),
        back.list_groups().await.unwrap()
    );
    verify_chain(&back).await;
}

#[tokio::test]
async fn a_load_refuses_a_database_that_holds_an_installation() {
    let f = Fixture::new().await;
    let version = latest_schema_version(f.db.kind());
    // Only an audit entry: that is an installation already.
    f.store.append_audit(&record("Started")).await.unwrap();
    let refused = Loader::begin(&f.url(), version).await.unwrap_err();
    assert!(matches!(refused, LoadError::NotEmpty(_)), "{refused}");
    let message = refused.to_string();
    assert!(
        message.contains("already holds a keyhold installation (audit entries: 1)"),
        "{message}"
    );
    assert!(message.contains("new, empty database"), "{message}");

    f.store
        .insert_identity(&identity("Admin1"), &record("Added"))
        .await
        .unwrap();
    let refused = Loader::begin(&f.url(), version).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("identities: 1, audit entries: 2"),
        "{refused}"
    );
    // Nothing touched.
    assert_eq!(verify_chain(&f.store).await, 2);
}

#[tokio::test]
async fn a_load_stopped_half_way_leaves_no_rows_and_runs_again() {
    let f = Fixture::new().await;
    let seeded = populate(&f.store).await;
    for i in 0..1_000 {
        f.store
            .append_audit(&record(&format!("entry {i}")))
            .await
            .unwrap();
    }
    let (summary, items) = snapshot(&f.store).await;
    let (_db, _dir, url) = target(f.db.kind()).await;

    // Every table before the audit log, then part of its rows: a whole
    // batch of them (888 rows of 9 columns; 900 are sent) is inserted in the load's
    // transaction before the load stops.
    let mut loader = Loader::begin(&url, summary.schema_version).await.unwrap();
    let log = items
        .iter()
        .position(|i| matches!(i, SnapshotItem::Table { name, .. } if name == "audit_log"))
        .unwrap();
    for item in items[..log + 1 + 900].iter().cloned() {
        loader.item(item).await.unwrap();
    }
    drop(loader);

    let stopped = connect(&url, &f.mac).await;
    assert!(stopped.list_identities().await.unwrap().is_empty());
    assert!(stopped.list_credentials().await.unwrap().is_empty());
    assert!(stopped.audit_page(0, 10).await.unwrap().is_empty());
    stopped.close().await;

    load(&url, summary.schema_version, items).await;
    let restored = connect(&url, &f.mac).await;
    assert_same(&f.store, &restored, &seeded).await;
}

#[tokio::test]
async fn a_load_refuses_a_newer_schema_and_a_snapshot_that_does_not_fit() {
    let f = Fixture::new().await;
    let latest = latest_schema_version(f.db.kind());
    let (_db, _dir, url) = target(f.db.kind()).await;

    let newer = Loader::begin(&url, latest + 1).await.unwrap_err();
    assert!(matches!(newer, LoadError::Schema(_)), "{newer}");
    assert!(
        newer.to_string().contains("newer than this keyhold knows"),
        "{newer}"
    );

    let columns = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let mut loader = Loader::begin(&url, latest).await.unwrap();
    let e = loader.row(vec![SnapshotValue::Null]).await.unwrap_err();
    assert!(e.to_string().contains("row before any table"), "{e}");
    for (table, cols, expected) in [
        (
            "no_such_table",
            columns(&["x"]),
            "no keyhold backup carries",
        ),
        ("sessions", columns(&["id"]), "no keyhold backup carries"),
        (
            "identities",
            columns(&["name", "shoe_size"]),
            "column 'shoe_size'",
        ),
        ("identities", columns(&["name", "name"]), "twice"),
    ] {
        let e = loader.table(table, &cols).await.unwrap_err();
        assert!(matches!(e, LoadError::Snapshot(_)), "{e}");
        assert!(e.to_string().contains(expected), "{table}: {e}");
    }
    loader
        .table("identities", &columns(&["name", "role"]))
        .await
        .unwrap();
    let e = loader.row(vec![SnapshotValue::Null]).await.unwrap_err();
    assert!(e.to_string().contains("1 values for 2 columns"), "{e}");
    loader
        .row(vec![
            SnapshotValue::Bytes(vec![1]),
            SnapshotValue::Text("x".into()),
        ])
        .await
        .unwrap();
    let e = loader.finish().await.unwrap_err();
    assert!(
        e.to_string()
            .contains("identities.name: the backup holds bytes where the column holds text"),
        "{e}"
    );
}

/// A snapshot of an older schema loads at its version, then the later
/// migrations run over the loaded rows.
#[tokio::test]
async fn an_older_snapshot_loads_at_its_version_then_migrates() {
    let f = Fixture::new().await;
    let seeded = populate(&f.store).await;
    let (summary, items) = snapshot(&f.store).await;
    // Migration 0014 added the XKS tables and changed nothing else; the
    // load then runs it and every later one (0015 rebuilds SQLite's keys).
    let before = 13;
    let (_db, _dir, url) = target(f.db.kind()).await;

    let mut refused = Loader::begin(&url, before).await.unwrap();
    let e = refused
        .table("xks_stores", &["id".to_string()])
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("schema version {before} does not")),
        "{e}"
    );
    drop(refused);

    let mut older = Vec::new();
    let mut skip = false;
    for item in items {
        if let SnapshotItem::Table { name, .. } = &item {
            skip = name.starts_with("xks_");
        }
        if !skip {
            older.push(item);
        }
    }
    let loaded = load(&url, before, older).await;
    assert_eq!(
        (loaded.loaded_at, loaded.schema_version),
        (before, summary.schema_version)
    );
    let restored = connect(&url, &f.mac).await;
    assert_eq!(
        f.store.list_identities().await.unwrap(),
        restored.list_identities().await.unwrap()
    );
    assert_eq!(
        f.store.job_messages(seeded.job).await.unwrap(),
        restored.job_messages(seeded.job).await.unwrap()
    );
    assert_eq!(
        f.store.list_backups(0).await.unwrap(),
        restored.list_backups(0).await.unwrap()
    );
    let all_keys = KeyPage {
        group: None,
        after: None,
        limit: KeyPage::MAX_LIMIT,
    };
    let keys = restored.list_keys(&all_keys).await.unwrap();
    assert!(!keys.is_empty());
    assert_eq!(f.store.list_keys(&all_keys).await.unwrap(), keys);
    // The later migration made the XKS tables, empty, and the revision's row.
    assert!(restored.list_xks_stores().await.unwrap().is_empty());
    assert_eq!(restored.xks_revision().await.unwrap(), 0);
    verify_chain(&restored).await;
}

#[tokio::test]
async fn a_snapshot_refuses_a_table_it_neither_carries_nor_excludes() {
    let f = Fixture::new().await;
    let (summary, items) = snapshot(&f.store).await;
    assert_eq!(summary.rows.len(), SNAPSHOT_TABLES.len());
    // Columns that only order rows on one backend stay home.
    for item in &items {
        if let SnapshotItem::Table { columns, .. } = item {
            assert!(!columns.iter().any(|c| c == "insert_order"), "{columns:?}");
        }
    }

    let mut raw = f.raw().await;
    raw.execute("CREATE TABLE added_by_a_migration (id TEXT PRIMARY KEY)")
        .await
        .unwrap();
    let mut kept = Kept::default();
    let e = f.store.export_snapshot(&mut kept).await.unwrap_err();
    assert!(e.to_string().contains("added_by_a_migration"), "{e}");
    assert!(
        e.to_string().contains("SNAPSHOT_TABLES or EXCLUDED_TABLES"),
        "{e}"
    );
    assert!(kept.0.is_empty());
}
