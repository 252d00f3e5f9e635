//! Drift findings and checks: written with a job step's commit (in its
//! transaction, with their audit entries), listed, counted, and deleted
//! with their group.

use keyhold_core::StoreError;
use keyhold_core::audit::{AuditFilter, AuditRecord};
use keyhold_core::cloud::aws::{Alias, KmsKeyId};
use keyhold_core::drift::{
    DriftCheck, DriftFilter, DriftKind, DriftRecord, Finding, KeyFindings, Repair,
};
use keyhold_core::group::KeyGroup;
use keyhold_core::job::{Initiator, Job, JobKind, JobProgress, JobStatus, Step};
use keyhold_core::key::Key;
use keyhold_core::names::{GroupName, NodeId};
use keyhold_core::ports::JobCommit;

use crate::common::{Fixture, at, credential, group, key, record, verify_chain};

fn kms_id() -> KmsKeyId {
    KmsKeyId::parse(&uuid::Uuid::new_v4().to_string()).unwrap()
}

fn name(group: &str) -> GroupName {
    GroupName::parse(group).unwrap()
}

fn job_of(kind: JobKind, created: i64) -> Job {
    Job {
        id: uuid::Uuid::new_v4(),
        kind,
        status: JobStatus::Running,
        initiator: Initiator::Scheduler,
        created_at: at(created),
        started_at: Some(at(created)),
        finished_at: None,
        progress: JobProgress::new(vec![Step::CheckDrift]),
        error: None,
        attempts: 1,
    }
}

fn check_job(group: &str, created: i64) -> Job {
    job_of(JobKind::CheckDrift { group: name(group) }, created)
}

fn finding(group: &str, kind: DriftKind, subject: &str, seen: i64) -> Finding {
    Finding {
        id: uuid::Uuid::new_v4(),
        group: name(group),
        kind,
        subject: subject.into(),
        key_id: None,
        kms_key_id: None,
        detail: format!("{} on {subject}", kind.title()),
        repair: None,
        first_seen: at(seen),
        last_seen: at(seen),
        cleared_at: None,
    }
}

/// A finding on `key`'s KMS key.
fn on_key(key: &Key, kind: DriftKind, repair: Option<Repair>, seen: i64) -> Finding {
    let kms = key.kms_key_id.clone().unwrap();
    Finding {
        key_id: Some(key.id),
        kms_key_id: Some(kms.clone()),
        repair,
        ..finding(key.group.as_str(), kind, kms.as_str(), seen)
    }
}

fn drift(job: &Job, findings: Vec<Finding>, audits: Vec<AuditRecord>, checked: i64) -> DriftRecord {
    DriftRecord {
        check: DriftCheck {
            group: job.kind.group().clone(),
            checked_at: at(checked),
            job_id: job.id,
            open: u32::try_from(findings.iter().filter(|f| f.is_open()).count()).unwrap(),
        },
        findings,
        audits,
    }
}

fn commit<'a>(job: &'a Job, drift: &'a DriftRecord) -> JobCommit<'a> {
    JobCommit {
        job,
        keys: &[],
        group: None,
        messages: &[],
        audit: None,
        drift: Some(drift),
        fence: None,
    }
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

/// Inserts a running job (its audit entry included).
async fn started(f: &Fixture, job: &Job) {
    f.store
        .insert_job(job, None, &record("Started"))
        .await
        .unwrap();
}

fn every_repair(key: &Key) -> Vec<Repair> {
    let kms = key.kms_key_id.clone().unwrap();
    vec![
        Repair::ReimportMaterial {
            key_id: key.id,
            kms_key_id: kms.clone(),
        },
        Repair::PutPolicy {
            kms_key_id: kms.clone(),
        },
        Repair::PointAlias {
            alias: Alias::parse("alias/payments").unwrap(),
            kms_key_id: kms.clone(),
        },
        Repair::TagKey {
            kms_key_id: kms.clone(),
            tags: vec![
                ("keyhold:group".into(), "payments".into()),
                ("keyhold:key".into(), key.id.to_string()),
            ],
        },
        Repair::EnableKey {
            kms_key_id: kms.clone(),
        },
        Repair::DisableKey {
            kms_key_id: kms.clone(),
        },
        Repair::CancelDeletion {
            kms_key_id: kms,
            enable: true,
        },
    ]
}

#[tokio::test]
async fn findings_round_trip_with_their_repairs_and_list_in_order() {
    let f = Fixture::new().await;
    let (_, k) = seed(&f).await;
    let s = &f.store;
    s.insert_group(&group("billing", "aws-prod"), &record("g2"))
        .await
        .unwrap();
    let job = check_job("payments", 10);
    started(&f, &job).await;

    // Every kind of repair, and none, survive the JSON column.
    let mut findings: Vec<Finding> = every_repair(&k)
        .into_iter()
        .enumerate()
        .map(|(i, repair)| {
            let mut x = on_key(&k, DriftKind::ALL[i], Some(repair), 20);
            x.subject = format!("subject-{i}");
            x
        })
        .collect();
    let mut unknown = finding("payments", DriftKind::UnknownKey, "b-unknown", 20);
    unknown.kms_key_id = Some(kms_id());
    unknown.detail = "line one\nline two: \"quoted\" and ünïcode".into();
    findings.push(unknown.clone());
    // The subject "b-…" sorts before "z-…" and "subject-…", but kinds
    // come first: TagsMissing before UnknownKey, PolicyDiffers after
    // AliasElsewhere.
    findings.push(finding("payments", DriftKind::TagsMissing, "z-tags", 20));
    findings.push(finding(
        "payments",
        DriftKind::PolicyDiffers,
        "z-policy",
        20,
    ));
    let record_ = drift(&job, findings.clone(), vec![], 21);
    s.commit_job(&commit(&job, &record_)).await.unwrap();

    for x in &findings {
        assert_eq!(s.get_drift(x.id).await.unwrap().as_ref(), Some(x));
    }
    assert_eq!(s.get_drift(uuid::Uuid::new_v4()).await.unwrap(), None);

    // Open findings by group, kind (in DriftKind's order, not the
    // alphabet's) and subject.
    let mut expected = findings.clone();
    expected.sort_by(|a, b| (&a.group, a.kind, &a.subject).cmp(&(&b.group, b.kind, &b.subject)));
    let listed = s.list_drift(&DriftFilter::default()).await.unwrap();
    assert_eq!(listed, expected);
    let kinds: Vec<DriftKind> = listed.iter().map(|x| x.kind).collect();
    assert_eq!(kinds, DriftKind::ALL.to_vec());

    // Another group's findings come after, and the filters pick them out.
    let other_job = check_job("billing", 30);
    started(&f, &other_job).await;
    let billing = finding("billing", DriftKind::AliasMissing, "alias/billing", 31);
    let billing_record = drift(&other_job, vec![billing.clone()], vec![], 31);
    s.commit_job(&commit(&other_job, &billing_record))
        .await
        .unwrap();
    let all = s.list_drift(&DriftFilter::default()).await.unwrap();
    assert_eq!(all.first(), Some(&billing));
    assert_eq!(all.len(), findings.len() + 1);
    let only = |group: Option<&str>, key: Option<&Key>, limit| DriftFilter {
        group: group.map(name),
        key: key.map(KeyFindings::of),
        include_cleared: false,
        limit,
    };
    assert_eq!(
        s.list_drift(&only(Some("billing"), None, 0)).await.unwrap(),
        vec![billing.clone()]
    );
    assert_eq!(
        s.list_drift(&only(Some("payments"), None, 0))
            .await
            .unwrap(),
        expected
    );
    let on_k: Vec<Finding> = expected
        .iter()
        .filter(|x| x.key_id == Some(k.id))
        .cloned()
        .collect();
    assert_eq!(on_k.len(), 7);
    assert_eq!(s.list_drift(&only(None, Some(&k), 0)).await.unwrap(), on_k);
    assert_eq!(
        s.list_drift(&only(Some("billing"), Some(&k), 0))
            .await
            .unwrap(),
        vec![]
    );
    assert_eq!(
        s.list_drift(&only(None, None, 2)).await.unwrap(),
        all[..2].to_vec()
    );

    // The check rows, by group.
    assert_eq!(
        s.drift_checks().await.unwrap(),
        vec![billing_record.check.clone(), record_.check.clone()]
    );
}

#[tokio::test]
async fn cleared_findings_list_after_the_open_ones_newest_cleared_first() {
    let f = Fixture::new().await;
    let (_, k) = seed(&f).await;
    let s = &f.store;
    let job = check_job("payments", 10);
    started(&f, &job).await;
    let open = on_key(&k, DriftKind::PolicyDiffers, None, 20);
    let mut early = finding("payments", DriftKind::AliasMissing, "alias/payments", 11);
    early.cleared_at = Some(at(15));
    let mut late = finding("payments", DriftKind::TagsMissing, "t", 11);
    late.cleared_at = Some(at(18));
    let mut late_too = finding("payments", DriftKind::KeyMissing, "t", 11);
    late_too.cleared_at = Some(at(18));
    let all = vec![early.clone(), open.clone(), late.clone(), late_too.clone()];
    s.commit_job(&commit(&job, &drift(&job, all, vec![], 20)))
        .await
        .unwrap();

    assert_eq!(
        s.list_drift(&DriftFilter::default()).await.unwrap(),
        vec![open.clone()]
    );
    let with_cleared = DriftFilter {
        include_cleared: true,
        ..DriftFilter::default()
    };
    // Cleared at the same time: by kind, as open ones are.
    assert_eq!(
        s.list_drift(&with_cleared).await.unwrap(),
        vec![open.clone(), late_too.clone(), late.clone(), early.clone()]
    );
    assert_eq!(
        s.list_drift(&DriftFilter {
            limit: 2,
            ..with_cleared.clone()
        })
        .await
        .unwrap(),
        vec![open, late_too]
    );
    assert_eq!(
        s.list_drift(&DriftFilter {
            group: Some(name("billing")),
            ..with_cleared
        })
        .await
        .unwrap(),
        vec![]
    );
    // Cleared findings are not counted.
    assert_eq!(
        s.drift_counts().await.unwrap(),
        vec![(DriftKind::PolicyDiffers, 1)]
    );
}

#[tokio::test]
async fn list_drift_limit_zero_means_one_hundred_and_at_most_a_thousand() {
    let f = Fixture::new().await;
    seed(&f).await;
    let s = &f.store;
    let job = check_job("payments", 10);
    started(&f, &job).await;
    let many: Vec<Finding> = (0..1005)
        .map(|i| finding("payments", DriftKind::UnknownKey, &format!("k{i:04}"), 20))
        .collect();
    s.commit_job(&commit(&job, &drift(&job, many, vec![], 20)))
        .await
        .unwrap();
    let limit = |limit| DriftFilter {
        limit,
        ..DriftFilter::default()
    };
    assert_eq!(s.list_drift(&limit(0)).await.unwrap().len(), 100);
    assert_eq!(s.list_drift(&limit(5000)).await.unwrap().len(), 1000);
    assert_eq!(
        s.drift_counts().await.unwrap(),
        vec![(DriftKind::UnknownKey, 1005)]
    );
}

#[tokio::test]
async fn a_drift_commit_writes_findings_check_and_entries_in_one_transaction() {
    let f = Fixture::new().await;
    let (_, k) = seed(&f).await;
    let s = &f.store;
    let queued = check_job("payments", 10);
    started(&f, &queued).await;
    let audits_before = f.audit_count().await;

    let mut job = queued.clone();
    job.progress.done.push(Step::CheckDrift);
    job.status = JobStatus::Succeeded;
    job.finished_at = Some(at(20));
    let found = on_key(
        &k,
        DriftKind::PolicyDiffers,
        Some(Repair::PutPolicy {
            kms_key_id: k.kms_key_id.clone().unwrap(),
        }),
        20,
    );
    let alias = finding("payments", DriftKind::AliasMissing, "alias/payments", 20);
    let entries = vec![record("Drift found: policy"), record("Drift found: alias")];
    let rec = drift(&job, vec![found.clone(), alias.clone()], entries, 20);
    let step_entry = record("Checked key group payments");
    let full = JobCommit {
        audit: Some(&step_entry),
        ..commit(&job, &rec)
    };

    // The audit MAC fails: nothing of it is written, not the job either.
    f.mac.fail(true);
    let r = s.commit_job(&full).await;
    assert!(matches!(r, Err(StoreError::AuditSeal(_))), "{r:?}");
    f.mac.fail(false);
    assert_eq!(s.get_job(job.id).await.unwrap(), Some(queued.clone()));
    assert_eq!(s.get_drift(found.id).await.unwrap(), None);
    assert_eq!(s.drift_checks().await.unwrap(), vec![]);
    assert_eq!(f.audit_count().await, audits_before);

    // A finding of a group that does not exist: nothing either.
    let stray = finding("no-such-group", DriftKind::AliasMissing, "alias/x", 20);
    let bad = drift(&job, vec![found.clone(), stray], vec![record("x")], 20);
    let r = s.commit_job(&commit(&job, &bad)).await;
    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
    assert_eq!(s.get_drift(found.id).await.unwrap(), None);
    assert_eq!(f.audit_count().await, audits_before);

    s.commit_job(&full).await.unwrap();
    assert_eq!(s.get_job(job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(
        s.list_drift(&DriftFilter::default()).await.unwrap(),
        vec![alias, found]
    );
    assert_eq!(s.drift_checks().await.unwrap(), vec![rec.check.clone()]);
    // The step's entry first, then the drift record's in their order.
    let newest = s.list_audit(&AuditFilter::default()).await.unwrap();
    let summaries: Vec<&str> = newest[..3]
        .iter()
        .rev()
        .map(|e| e.summary.as_str())
        .collect();
    assert_eq!(
        summaries,
        [
            "Checked key group payments",
            "Drift found: policy",
            "Drift found: alias"
        ]
    );
    assert_eq!(f.audit_count().await, audits_before + 3);
    assert_eq!(verify_chain(s).await, (audits_before + 3) as u64);
}

#[tokio::test]
async fn a_fenced_drift_commit_writes_none_of_it() {
    let f = Fixture::new().await;
    let (_, k) = seed(&f).await;
    let s = &f.store;
    let job = check_job("payments", 10);
    started(&f, &job).await;
    let first = NodeId::parse("node-a").unwrap();
    let second = NodeId::parse("node-b").unwrap();
    let held = s
        .acquire_lease("rotator", &first, at(20), at(30))
        .await
        .unwrap()
        .unwrap();
    let taken = s
        .acquire_lease("rotator", &second, at(31), at(40))
        .await
        .unwrap()
        .unwrap();
    let audits = f.audit_count().await;

    let mut done = job.clone();
    done.status = JobStatus::Succeeded;
    let found = on_key(&k, DriftKind::StateDiffers, None, 32);
    let rec = drift(&done, vec![found.clone()], vec![record("Drift found")], 32);
    let r = s
        .commit_job(&JobCommit {
            fence: Some(&held),
            ..commit(&done, &rec)
        })
        .await;
    assert!(
        matches!(&r, Err(StoreError::Fenced(name)) if name == "rotator"),
        "{r:?}"
    );
    assert_eq!(s.get_job(job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(s.get_drift(found.id).await.unwrap(), None);
    assert_eq!(s.list_drift(&DriftFilter::default()).await.unwrap(), vec![]);
    assert_eq!(s.drift_checks().await.unwrap(), vec![]);
    assert_eq!(s.drift_counts().await.unwrap(), vec![]);
    assert_eq!(f.audit_count().await, audits);

    // Under the current lease it goes through.
    s.commit_job(&JobCommit {
        fence: Some(&taken),
        ..commit(&done, &rec)
    })
    .await
    .unwrap();
    assert_eq!(s.get_drift(found.id).await.unwrap(), Some(found));
    assert_eq!(f.audit_count().await, audits + 1);
}

#[tokio::test]
async fn a_finding_seen_again_keeps_its_first_seen_time() {
    let f = Fixture::new().await;
    let (_, k) = seed(&f).await;
    let s = &f.store;
    let first = check_job("payments", 10);
    started(&f, &first).await;
    let seen = on_key(&k, DriftKind::MaterialExpiring, None, 20);
    s.commit_job(&commit(
        &first,
        &drift(&first, vec![seen.clone()], vec![], 20),
    ))
    .await
    .unwrap();

    // The next check sees it again, with another detail and now a repair;
    // what it says of its identity or first sight is not taken.
    let mut done = first.clone();
    done.status = JobStatus::Succeeded;
    done.finished_at = Some(at(21));
    s.commit_job(&JobCommit {
        job: &done,
        keys: &[],
        group: None,
        messages: &[],
        audit: None,
        drift: None,
        fence: None,
    })
    .await
    .unwrap();
    let second = check_job("payments", 100);
    started(&f, &second).await;
    let mut again = seen.clone();
    again.detail = "expires sooner than keyhold records".into();
    again.repair = Some(Repair::ReimportMaterial {
        key_id: k.id,
        kms_key_id: k.kms_key_id.clone().unwrap(),
    });
    again.key_id = None;
    again.last_seen = at(110);
    again.first_seen = at(110);
    let rec = drift(&second, vec![again.clone()], vec![], 110);
    s.commit_job(&commit(&second, &rec)).await.unwrap();

    let stored = s.get_drift(seen.id).await.unwrap().unwrap();
    assert_eq!(
        stored,
        Finding {
            first_seen: seen.first_seen,
            ..again
        }
    );
    assert_eq!(
        s.list_drift(&DriftFilter::default()).await.unwrap().len(),
        1
    );
    // The check row follows the latest check.
    assert_eq!(s.drift_checks().await.unwrap(), vec![rec.check]);
}

#[tokio::test]
async fn one_open_finding_per_group_kind_and_subject() {
    let f = Fixture::new().await;
    let (_, k) = seed(&f).await;
    let s = &f.store;
    let job = check_job("payments", 10);
    started(&f, &job).await;
    let open = on_key(&k, DriftKind::PendingDeletion, None, 20);
    s.commit_job(&commit(&job, &drift(&job, vec![open.clone()], vec![], 20)))
        .await
        .unwrap();
    let audits = f.audit_count().await;

    // A second open finding of the same group, kind and subject under a
    // fresh id is refused, with everything else of its commit.
    let mut running = job.clone();
    running.progress.done.push(Step::CheckDrift);
    let twin = Finding {
        id: uuid::Uuid::new_v4(),
        ..open.clone()
    };
    let other = on_key(&k, DriftKind::StateDiffers, None, 30);
    let rec = drift(
        &running,
        vec![other.clone(), twin.clone()],
        vec![record("x")],
        30,
    );
    let r = s.commit_job(&commit(&running, &rec)).await;
    assert!(matches!(r, Err(StoreError::Duplicate)), "{r:?}");
    assert_eq!(s.get_drift(twin.id).await.unwrap(), None);
    assert_eq!(s.get_drift(other.id).await.unwrap(), None);
    assert_eq!(s.get_job(job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(f.audit_count().await, audits);
    // Of another kind, or another subject, it is another finding.
    let elsewhere = Finding {
        id: uuid::Uuid::new_v4(),
        subject: "another".into(),
        ..open.clone()
    };
    s.commit_job(&commit(
        &running,
        &drift(&running, vec![other.clone(), elsewhere], vec![], 30),
    ))
    .await
    .unwrap();

    // Cleared, it no longer holds the place: a new open one of the same
    // subject is written, and the cleared one stays.
    let cleared = Finding {
        cleared_at: Some(at(40)),
        ..open.clone()
    };
    let reopened = Finding {
        id: uuid::Uuid::new_v4(),
        first_seen: at(50),
        last_seen: at(50),
        ..open.clone()
    };
    s.commit_job(&commit(
        &running,
        &drift(
            &running,
            vec![cleared.clone(), reopened.clone()],
            vec![],
            50,
        ),
    ))
    .await
    .unwrap();
    assert_eq!(s.get_drift(open.id).await.unwrap(), Some(cleared.clone()));
    assert_eq!(
        s.get_drift(reopened.id).await.unwrap(),
        Some(reopened.clone())
    );
    // The cleared one cannot be opened again beside the new one.
    let r = s
        .commit_job(&commit(
            &running,
            &drift(&running, vec![open.clone()], vec![], 60),
        ))
        .await;
    assert!(matches!(r, Err(StoreError::Duplicate)), "{r:?}");
    assert_eq!(s.get_drift(open.id).await.unwrap(), Some(cleared));
    // Two cleared ones of one subject are fine: the history.
    let cleared_too = Finding {
        cleared_at: Some(at(70)),
        ..reopened
    };
    s.commit_job(&commit(
        &running,
        &drift(&running, vec![cleared_too.clone()], vec![], 70),
    ))
    .await
    .unwrap();
    assert_eq!(
        s.get_drift(cleared_too.id).await.unwrap(),
        Some(cleared_too)
    );
}

#[tokio::test]
async fn drift_counts_count_open_findings_by_kind() {
    let f = Fixture::new().await;
    let (_, k) = seed(&f).await;
    let s = &f.store;
    s.insert_group(&group("billing", "aws-prod"), &record("g2"))
        .await
        .unwrap();
    assert_eq!(s.drift_counts().await.unwrap(), vec![]);
    let a = check_job("payments", 10);
    let b = check_job("billing", 11);
    started(&f, &a).await;
    started(&f, &b).await;
    let mut cleared = finding("payments", DriftKind::KeyMissing, "gone", 12);
    cleared.cleared_at = Some(at(13));
    let payments = vec![
        finding("payments", DriftKind::UnknownKey, "u1", 12),
        finding("payments", DriftKind::UnknownKey, "u2", 12),
        on_key(&k, DriftKind::TagsMissing, None, 12),
        cleared,
    ];
    let billing = vec![
        finding("billing", DriftKind::UnknownKey, "u1", 12),
        finding("billing", DriftKind::AliasElsewhere, "alias/billing", 12),
    ];
    s.commit_job(&commit(&a, &drift(&a, payments, vec![], 12)))
        .await
        .unwrap();
    s.commit_job(&commit(&b, &drift(&b, billing, vec![], 12)))
        .await
        .unwrap();
    assert_eq!(
        s.drift_counts().await.unwrap(),
        vec![
            (DriftKind::AliasElsewhere, 1),
            (DriftKind::TagsMissing, 1),
            (DriftKind::UnknownKey, 3),
        ]
    );
}

#[tokio::test]
async fn unknown_kms_keys_are_those_no_key_is_in() {
    let f = Fixture::new().await;
    let (_, k1) = seed(&f).await;
    let s = &f.store;
    let mut k2 = key("payments", 2);
    k2.kms_key_id = None;
    s.insert_key(&k2, None).await.unwrap();
    // A version rotated in shares its KMS key with the first.
    let mut k3 = key("payments", 3);
    k3.kms_key_id = k1.kms_key_id.clone();
    k3.rotated_in = true;
    k3.kms_material_id =
        Some(keyhold_core::cloud::aws::KeyMaterialId::parse(&"a".repeat(64)).unwrap());
    s.insert_key(&k3, None).await.unwrap();
    let k4 = key("payments", 4);
    s.insert_key(&k4, None).await.unwrap();

    assert_eq!(s.unknown_kms_keys(&[]).await.unwrap(), vec![]);
    let known1 = k1.kms_key_id.clone().unwrap();
    let known4 = k4.kms_key_id.clone().unwrap();
    let (x, y) = (kms_id(), kms_id());
    assert_eq!(
        s.unknown_kms_keys(&[x.clone(), known1.clone(), y.clone(), known4.clone()])
            .await
            .unwrap(),
        vec![x.clone(), y.clone()]
    );
    // A region's listing of thousands: more ids than one statement binds.
    let mut many: Vec<KmsKeyId> = (0..2500).map(|_| kms_id()).collect();
    many.insert(700, known1.clone());
    many.insert(1900, known4);
    many.push(known1);
    let unknown = s.unknown_kms_keys(&many).await.unwrap();
    assert_eq!(unknown.len(), 2500);
    let expected: Vec<KmsKeyId> = many
        .iter()
        .filter(|id| {
            *id != k1.kms_key_id.as_ref().unwrap() && *id != k4.kms_key_id.as_ref().unwrap()
        })
        .cloned()
        .collect();
    assert_eq!(unknown, expected);
}

#[tokio::test]
async fn the_latest_rotation_is_the_groups_newest_rotation_whatever_came_after() {
    let f = Fixture::new().await;
    let (_, k) = seed(&f).await;
    let s = &f.store;
    s.insert_group(&group("billing", "aws-prod"), &record("g2"))
        .await
        .unwrap();
    let finished = |mut job: Job| {
        job.status = JobStatus::Succeeded;
        job.finished_at = Some(job.created_at);
        job
    };
    let payments = name("payments");
    let rotation = |group: &GroupName, micros| {
        finished(job_of(
            JobKind::Rotate {
                group: group.clone(),
            },
            micros,
        ))
    };
    assert_eq!(s.latest_rotation(&payments).await.unwrap(), None);
    let rotate1 = rotation(&payments, 10);
    let rotate2 = rotation(&payments, 20);
    let check = finished(check_job("payments", 30));
    let reconcile = finished(job_of(
        JobKind::Reconcile {
            group: payments.clone(),
        },
        40,
    ));
    let rotate_other = rotation(&name("billing"), 50);
    let sync = finished(job_of(
        JobKind::Synchronize {
            key_id: k.id,
            key_name: "payments-v1".into(),
            group: payments.clone(),
            options: Default::default(),
        },
        60,
    ));
    for job in [&rotate1, &rotate2, &check, &reconcile, &rotate_other, &sync] {
        started(&f, job).await;
    }
    assert_eq!(s.latest_rotation(&payments).await.unwrap(), Some(rotate2));
    assert_eq!(
        s.latest_rotation(&name("billing")).await.unwrap(),
        Some(rotate_other)
    );

    // Two created in one microsecond: the one inserted last is the newest.
    let rotate3 = rotation(&payments, 70);
    let rotate4 = finished(Job {
        id: uuid::Uuid::new_v4(),
        ..rotate3.clone()
    });
    started(&f, &rotate3).await;
    started(&f, &rotate4).await;
    assert_eq!(s.latest_rotation(&payments).await.unwrap(), Some(rotate4));
}

#[tokio::test]
async fn deleting_a_group_deletes_its_findings_and_check() {
    let f = Fixture::new().await;
    let (g, k) = seed(&f).await;
    let s = &f.store;
    let mut bare = group("archive", "aws-prod");
    bare.aws.active_key_id = None;
    s.insert_group(&bare, &record("g2")).await.unwrap();
    let a = check_job("payments", 10);
    let b = check_job("archive", 11);
    started(&f, &a).await;
    started(&f, &b).await;
    let kept = on_key(&k, DriftKind::TagsMissing, None, 12);
    let mut cleared = finding("archive", DriftKind::UnknownKey, "u0", 12);
    cleared.cleared_at = Some(at(13));
    let gone = vec![
        finding("archive", DriftKind::UnknownKey, "u1", 12),
        cleared.clone(),
    ];
    let kept_rec = drift(&a, vec![kept.clone()], vec![], 12);
    s.commit_job(&commit(&a, &kept_rec)).await.unwrap();
    s.commit_job(&commit(&b, &drift(&b, gone.clone(), vec![], 12)))
        .await
        .unwrap();

    // A group with keys is not deleted, and keeps its findings.
    let r = s.delete_group(&g.name, &record("x")).await;
    assert!(matches!(r, Err(StoreError::InUse)), "{r:?}");
    assert_eq!(s.get_drift(kept.id).await.unwrap(), Some(kept.clone()));
    assert_eq!(s.drift_checks().await.unwrap().len(), 2);

    let audits = f.audit_count().await;
    s.delete_group(&bare.name, &record("Deleted key group archive"))
        .await
        .unwrap();
    for x in &gone {
        assert_eq!(s.get_drift(x.id).await.unwrap(), None);
    }
    assert_eq!(
        s.list_drift(&DriftFilter {
            include_cleared: true,
            ..DriftFilter::default()
        })
        .await
        .unwrap(),
        vec![kept]
    );
    assert_eq!(s.drift_checks().await.unwrap(), vec![kept_rec.check]);
    assert_eq!(
        s.drift_counts().await.unwrap(),
        vec![(DriftKind::TagsMissing, 1)]
    );
    assert_eq!(f.audit_count().await, audits + 1);
    // A group of the same name later starts with no findings.
    s.insert_group(&bare, &record("g2 again")).await.unwrap();
    assert_eq!(
        s.list_drift(&DriftFilter {
            group: Some(bare.name.clone()),
            include_cleared: true,
            ..DriftFilter::default()
        })
        .await
        .unwrap(),
        vec![]
    );
}

#[tokio::test]
async fn self_heal_round_trips_through_insert_update_and_replace() {
    let f = Fixture::new().await;
    let s = &f.store;
    s.insert_credential(&credential("aws-prod"), &record("c"))
        .await
        .unwrap();
    let mut g = group("payments", "aws-prod");
    g.aws.self_heal = true;
    s.insert_group(&g, &record("g")).await.unwrap();
    assert_eq!(s.get_group(&g.name).await.unwrap(), Some(g.clone()));

    let mut off = g.clone();
    off.aws.self_heal = false;
    off.updated_at = at(20);
    s.update_group(&off, &record("off")).await.unwrap();
    assert_eq!(s.get_group(&g.name).await.unwrap(), Some(off.clone()));
    assert_eq!(s.list_groups().await.unwrap(), vec![off.clone()]);

    // A replacement compares self_heal too: one read with it on is stale.
    let mut on = off.clone();
    on.aws.self_heal = true;
    on.updated_at = at(30);
    assert!(!s.replace_group(&g, &on, &record("stale")).await.unwrap());
    assert!(s.replace_group(&off, &on, &record("on")).await.unwrap());
    assert_eq!(s.get_group(&g.name).await.unwrap(), Some(on.clone()));

    // The scheduler's write of a rotation leaves it as it is.
    let mut due = on.clone();
    due.aws.self_heal = false;
    due.next_rotation_at = Some(at(99));
    s.insert_job(
        &job_of(
            JobKind::Rotate {
                group: g.name.clone(),
            },
            40,
        ),
        Some(keyhold_core::ports::Scheduled {
            group: &due,
            fence: None,
        }),
        &record("scheduled"),
    )
    .await
    .unwrap();
    let stored = s.get_group(&g.name).await.unwrap().unwrap();
    assert!(stored.aws.self_heal);
    assert_eq!(stored.next_rotation_at, Some(at(99)));
}

#[tokio::test]
async fn groups_due_for_a_drift_check_are_the_least_recently_checked_not_just_tried() {
    let f = Fixture::new().await;
    let s = &f.store;
    s.insert_credential(&credential("aws-prod"), &record("c"))
        .await
        .unwrap();
    for (group_name, created) in [("alpha", 3), ("bravo", 5), ("charlie", 1), ("delta", 2)] {
        let g = KeyGroup {
            created_at: at(created),
            ..group(group_name, "aws-prod")
        };
        s.insert_group(&g, &record("g")).await.unwrap();
    }
    // alpha checked at 20 and charlie at 50 (jobs queued at 10 and 40);
    // bravo and delta never checked: their creation counts.
    for (group_name, queued, checked) in [("alpha", 10, 20), ("charlie", 40, 50)] {
        let job = check_job(group_name, queued);
        started(&f, &job).await;
        let mut done = job.clone();
        done.progress.done.push(Step::CheckDrift);
        done.status = JobStatus::Succeeded;
        done.finished_at = Some(at(checked));
        s.commit_job(&commit(&done, &drift(&done, vec![], vec![], checked)))
            .await
            .unwrap();
    }
    let due = |before, quiet, limit| async move {
        s.groups_due_for_drift_check(at(before), at(quiet), limit)
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.name.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(due(30, 15, 10).await, ["delta", "bravo", "alpha"]);
    assert_eq!(due(30, 15, 2).await, ["delta", "bravo"]);
    assert_eq!(due(4, 15, 10).await, ["delta"]);
    assert_eq!(
        due(60, 45, 10).await,
        ["delta", "bravo", "alpha", "charlie"]
    );
    // A check queued after `quiet_since` (one that failed, or still runs)
    // keeps its group out; the group's other jobs do not.
    assert_eq!(due(30, 5, 10).await, ["delta", "bravo"]);
    started(&f, &check_job("delta", 25)).await;
    started(
        &f,
        &job_of(
            JobKind::Rotate {
                group: name("bravo"),
            },
            26,
        ),
    )
    .await;
    assert_eq!(due(30, 15, 10).await, ["bravo", "alpha"]);
    assert_eq!(due(30, 25, 10).await, ["delta", "bravo", "alpha"]);
}
