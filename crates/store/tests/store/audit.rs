use keyhold_core::StoreError;
use keyhold_core::audit::{AuditFilter, AuditRecord, GENESIS_HASH};
use keyhold_core::settings::Settings;

use crate::common::{Fixture, at, credential, group, identity, key, record, verify_chain};

#[tokio::test]
async fn entries_chain_and_keep_the_record_as_hashed() {
    let f = Fixture::new().await;
    let details = serde_json::json!({"alias": "alias/payments", "n": 1});
    let rec = AuditRecord::new(at(7), "Admin1,Admin2", "Added key group payments")
        .with_details(details.clone());
    f.store.append_audit(&rec).await.unwrap();
    f.store.append_audit(&record("second")).await.unwrap();
    let page = f.store.audit_page(0, 10).await.unwrap();
    assert_eq!(page.len(), 2);
    let (first, second) = (&page[0], &page[1]);
    assert_eq!(first.seq, 1);
    assert_eq!(first.prev_hash, GENESIS_HASH);
    assert_eq!(first.time, "2025-06-15T15:06:47.123456Z");
    assert_eq!(first.users, "Admin1,Admin2");
    assert_eq!(first.summary, "Added key group payments");
    assert_eq!(first.details, details.to_string());
    assert!(!first.archived);
    assert_eq!(second.seq, 2);
    assert_eq!(second.prev_hash, first.hash);
    assert_eq!(
        f.store.audit_page(1, 10).await.unwrap(),
        vec![second.clone()]
    );
    assert_eq!(f.store.audit_page(0, 1).await.unwrap(), vec![first.clone()]);
    assert_eq!(verify_chain(&f.store).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_fork_the_chain() {
    let f = Fixture::new().await;
    let store = f.open().await;

    for i in 0..20 {
        store
            .append_audit(&record(&format!("sequential {i}")))
            .await
            .unwrap();
    }
    store
        .insert_credential(&credential("aws-prod"), &record("credential"))
        .await
        .unwrap();
    store
        .insert_group(&group("payments", "aws-prod"), &record("group"))
        .await
        .unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .append_audit(&record(&format!("concurrent {i}")))
                .await
        });
    }
    for i in 0..10 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .insert_identity(
                    &identity(&format!("User{i}")),
                    &record(&format!("identity {i}")),
                )
                .await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }

    let entries = store.audit_page(0, 10_000).await.unwrap();
    let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=82).collect::<Vec<i64>>());
    assert_eq!(verify_chain(&store).await, 82);
    assert_eq!(store.list_identities().await.unwrap().len(), 10);
}

#[tokio::test]
async fn a_failing_audit_mac_rolls_the_change_back() {
    let f = Fixture::new().await;
    let s = &f.store;
    let cred = credential("aws-prod");
    let g = group("payments", "aws-prod");
    s.insert_credential(&cred, &record("credential"))
        .await
        .unwrap();
    s.insert_group(&g, &record("group")).await.unwrap();
    s.insert_identity(&identity("Alice"), &record("identity"))
        .await
        .unwrap();

    f.mac.fail(true);
    let sealed = |r: Result<(), StoreError>| matches!(r, Err(StoreError::AuditSeal(_)));
    assert!(sealed(
        s.insert_credential(&credential("aws-test"), &record("x"))
            .await
    ));
    assert!(sealed(
        s.insert_identity(&identity("Bob"), &record("x")).await
    ));
    let mut changed = g.clone();
    changed.aws.disable_after_rotate = false;
    assert!(sealed(s.update_group(&changed, &record("x")).await));
    let k = key("payments", 1);
    assert!(sealed(s.insert_key(&k, Some(&record("x"))).await));
    assert!(sealed(
        s.delete_identity(&identity("Alice").name, &record("x"))
            .await
    ));
    let off = Settings {
        dual_control: false,
        ..Settings::default()
    };
    assert!(sealed(s.put_settings(&off, &record("x")).await));
    assert!(sealed(s.append_audit(&record("x")).await));
    // Without an audit record there is nothing to seal: the write goes through.
    let unaudited = key("payments", 2);
    s.insert_key(&unaudited, None).await.unwrap();

    assert_eq!(
        s.get_credential(&credential("aws-test").name)
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.get_identity(&identity("Bob").name).await.unwrap(), None);
    assert!(
        s.get_identity(&identity("Alice").name)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(s.get_group(&g.name).await.unwrap(), Some(g.clone()));
    assert_eq!(s.get_key(k.id).await.unwrap(), None);
    assert_eq!(s.get_settings().await.unwrap(), Settings::default());
    assert_eq!(f.audit_count().await, 3);

    f.mac.fail(false);
    s.insert_credential(&credential("aws-test"), &record("credential 2"))
        .await
        .unwrap();
    assert_eq!(verify_chain(s).await, 4);
}

#[tokio::test]
async fn the_database_refuses_to_edit_or_delete_entries() {
    let f = Fixture::new().await;
    f.store.append_audit(&record("original")).await.unwrap();
    let mut conn = f.raw().await;
    let edit = conn
        .execute("UPDATE audit_log SET summary = 'forged' WHERE seq = 1")
        .await;
    assert!(edit.is_err());
    let delete = conn.execute("DELETE FROM audit_log").await;
    assert!(delete.is_err());
    if f.is_postgres() {
        assert!(conn.execute("TRUNCATE audit_log").await.is_err());
    }
    // Archiving is outside the chain and stays possible.
    conn.execute("UPDATE audit_log SET archived = TRUE WHERE seq = 1")
        .await
        .unwrap();
    let entries = f.store.audit_page(0, 10).await.unwrap();
    assert_eq!(entries[0].summary, "original");
    assert!(entries[0].archived);
    assert_eq!(verify_chain(&f.store).await, 1);
}

async fn seed_filter_log(f: &Fixture) {
    let entries = [
        (
            0,
            "Admin1,Admin2",
            "Added key group payments",
            serde_json::json!({"alias": "alias/payments"}),
        ),
        (60, "Admin10", "Logged in", serde_json::json!({})),
        (
            120,
            "System",
            "Rotated key group payments",
            serde_json::json!({"version": 2}),
        ),
        (
            180,
            "Admin2",
            "Changed configuration",
            serde_json::json!({"note": "50% OFF_peak"}),
        ),
        (
            240,
            "Anonymous",
            "Refused login for Admin1",
            serde_json::json!({}),
        ),
    ];
    for (secs, users, summary, details) in entries {
        let rec = AuditRecord::new(at(secs), users, summary).with_details(details);
        f.store.append_audit(&rec).await.unwrap();
    }
}

async fn seqs(f: &Fixture, filter: AuditFilter) -> Vec<i64> {
    f.store
        .list_audit(&filter)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect()
}

#[tokio::test]
async fn list_audit_filters() {
    let f = Fixture::new().await;
    seed_filter_log(&f).await;

    assert_eq!(seqs(&f, AuditFilter::default()).await, [5, 4, 3, 2, 1]);
    assert_eq!(
        seqs(
            &f,
            AuditFilter {
                from: Some(at(60)),
                ..Default::default()
            }
        )
        .await,
        [5, 4, 3, 2]
    );
    assert_eq!(
        seqs(
            &f,
            AuditFilter {
                to: Some(at(120)),
                ..Default::default()
            }
        )
        .await,
        [3, 2, 1]
    );
    let window = AuditFilter {
        from: Some(at(30)),
        to: Some(at(200)),
        ..Default::default()
    };
    assert_eq!(seqs(&f, window).await, [4, 3, 2]);

    let user = |u: &str| AuditFilter {
        user: Some(u.into()),
        ..Default::default()
    };
    assert_eq!(seqs(&f, user("Admin1")).await, [1]);
    assert_eq!(seqs(&f, user("Admin2")).await, [4, 1]);
    assert_eq!(seqs(&f, user("System")).await, [3]);
    assert_eq!(seqs(&f, user("Admin")).await, Vec::<i64>::new());
    assert_eq!(seqs(&f, user("Admin_")).await, Vec::<i64>::new());

    let text = |t: &str| AuditFilter {
        text: Some(t.into()),
        ..Default::default()
    };
    assert_eq!(seqs(&f, text("KEY GROUP payments")).await, [3, 1]);
    assert_eq!(seqs(&f, text("alias/PAY")).await, [1]);
    assert_eq!(seqs(&f, text("\"version\":2")).await, [3]);
    assert_eq!(seqs(&f, text("50%")).await, [4]);
    assert_eq!(seqs(&f, text("% off_")).await, [4]);
    assert_eq!(seqs(&f, text("%")).await, [4]);
    assert_eq!(seqs(&f, text("_")).await, [4]);
    assert_eq!(seqs(&f, text("login")).await, [5]);

    let both = AuditFilter {
        user: Some("Admin2".into()),
        text: Some("configuration".into()),
        ..Default::default()
    };
    assert_eq!(seqs(&f, both).await, [4]);

    let page = |before, limit| AuditFilter {
        before_seq: before,
        limit,
        ..Default::default()
    };
    assert_eq!(seqs(&f, page(None, 2)).await, [5, 4]);
    assert_eq!(seqs(&f, page(Some(4), 2)).await, [3, 2]);
    assert_eq!(seqs(&f, page(Some(2), 2)).await, [1]);
}

#[tokio::test]
async fn list_audit_limit_zero_means_one_hundred() {
    let f = Fixture::new().await;
    for i in 0..105 {
        f.store
            .append_audit(&record(&format!("entry {i}")))
            .await
            .unwrap();
    }
    let all = f.store.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(all.len(), 100);
    assert_eq!(all.first().map(|e| e.seq), Some(105));
    let more = AuditFilter {
        limit: 5000,
        ..Default::default()
    };
    assert_eq!(f.store.list_audit(&more).await.unwrap().len(), 105);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_database_never_fork_the_chain() {
    // Two stores stand for two processes (or nodes): only the database's
    // writer lock orders them, SQLite's or keyhold's PostgreSQL advisory lock.
    let f = Fixture::new().await;
    let first = f.open().await;
    let second = f.open().await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let store = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.spawn(async move { store.append_audit(&record(&format!("entry {i}"))).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    assert_eq!(verify_chain(&first).await, 50);
}

/// A SIEM stream's cursor moves only from the value its streamer read, so
/// a streamer that another node overtook cannot move it back; each sink has
/// its own, and none writes an audit entry.
#[tokio::test]
async fn audit_stream_cursors_move_by_compare_and_set() {
    let f = Fixture::new().await;
    let s = &f.store;
    let a = keyhold_core::names::NodeId::parse("node-a").unwrap();
    let b = keyhold_core::names::NodeId::parse("node-b").unwrap();
    let sink = "syslog://siem.example:6514";
    assert_eq!(s.audit_stream_cursor(sink).await.unwrap(), None);
    let audits = f.audit_count().await;

    assert!(
        s.advance_audit_stream_cursor(sink, None, 5, &a, at(1))
            .await
            .unwrap()
    );
    assert_eq!(s.audit_stream_cursor(sink).await.unwrap(), Some(5));
    // A second first delivery, and one from a stale value, are refused.
    assert!(
        !s.advance_audit_stream_cursor(sink, None, 3, &b, at(2))
            .await
            .unwrap()
    );
    assert!(
        !s.advance_audit_stream_cursor(sink, Some(4), 9, &b, at(2))
            .await
            .unwrap()
    );
    assert!(
        s.advance_audit_stream_cursor(sink, Some(5), 9, &b, at(3))
            .await
            .unwrap()
    );
    assert_eq!(s.audit_stream_cursor(sink).await.unwrap(), Some(9));

    let other = "syslog+tls://siem.example:6514";
    assert_eq!(s.audit_stream_cursor(other).await.unwrap(), None);
    assert!(
        s.advance_audit_stream_cursor(other, None, 1, &a, at(4))
            .await
            .unwrap()
    );
    assert_eq!(s.audit_stream_cursor(sink).await.unwrap(), Some(9));
    assert_eq!(f.audit_count().await, audits);
}
