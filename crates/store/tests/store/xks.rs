//! External key stores, their credentials and keys (migration 0014): every
//! method's round trip; the refusals (a name, prefix, access key id or id
//! taken; a store with keys; rows gone); the compare-and-swap replacements;
//! the credential limit under parallel additions from two nodes; and the
//! revision, raised by every write (with its audit entry) and by nothing else.

use keyhold_core::StoreError;
use keyhold_core::xks::{
    AuthorizationRule, MtlsRule, PathPrefix, Pattern, XksCredential, XksKey, XksKeyUsage, XksStore,
    XksStoreName,
};

use crate::common::{Fixture, at, record, verify_chain, xks_credential, xks_key, xks_store};

/// The summary of the newest audit entry.
async fn last_summary(f: &Fixture) -> String {
    let entries = f.store.audit_page(0, 1_000_000).await.unwrap();
    entries.last().unwrap().summary.clone()
}

/// Asserts that one write happened since the revision was `before`: the
/// revision moved by exactly one and the newest entry is `summary`.
/// Returns the new revision.
async fn wrote(f: &Fixture, before: i64, summary: &str) -> i64 {
    let now = f.store.xks_revision().await.unwrap();
    assert_eq!(now, before + 1, "the revision after '{summary}'");
    assert_eq!(last_summary(f).await, summary);
    now
}

/// Asserts that nothing was written: same revision, same number of entries.
async fn unchanged(f: &Fixture, revision: i64, entries: usize) {
    assert_eq!(f.store.xks_revision().await.unwrap(), revision);
    assert_eq!(f.audit_count().await, entries);
}

/// Every read of the port, none of which may move the revision.
async fn read_everything(f: &Fixture, store: &XksStore) {
    let s = &f.store;
    s.list_xks_stores().await.unwrap();
    s.list_xks_credentials().await.unwrap();
    s.list_xks_keys(None).await.unwrap();
    s.list_xks_keys(Some(store.id)).await.unwrap();
    s.get_xks_key(uuid::Uuid::new_v4()).await.unwrap();
    s.xks_revision().await.unwrap();
}

#[tokio::test]
async fn stores_credentials_and_keys_round_trip_each_write_audited_and_counted() {
    let f = Fixture::new().await;
    let s = &f.store;
    let mut rev = s.xks_revision().await.unwrap();
    assert_eq!(rev, 0, "a new database starts at revision 0");
    assert!(s.list_xks_stores().await.unwrap().is_empty());

    // Two stores, one with mutual TLS, one without and at a prefix of its own.
    let a = xks_store("payments");
    let a1 = xks_credential(&a, 1);
    s.insert_xks_store(&a, &a1, &record("Created store payments"))
        .await
        .unwrap();
    rev = wrote(&f, rev, "Created store payments").await;
    let b = XksStore {
        path_prefix: PathPrefix::parse("/tenant-2/ledger_b").unwrap(),
        quota_per_second: 1,
        mtls: None,
        ..xks_store("ledger.b")
    };
    let b1 = xks_credential(&b, 2);
    s.insert_xks_store(&b, &b1, &record("Created store ledger.b"))
        .await
        .unwrap();
    rev = wrote(&f, rev, "Created store ledger.b").await;
    assert_eq!(
        s.list_xks_stores().await.unwrap(),
        vec![b.clone(), a.clone()]
    );
    assert_eq!(
        s.list_xks_credentials().await.unwrap(),
        vec![a1.clone(), b1.clone()]
    );

    // A second credential (the successor), within the limit.
    let a2 = xks_credential(&a, 3);
    assert!(
        s.insert_xks_credential(&a2, 2, &record("Added a credential"))
            .await
            .unwrap()
    );
    rev = wrote(&f, rev, "Added a credential").await;
    assert_eq!(
        s.list_xks_credentials().await.unwrap(),
        vec![a1.clone(), b1.clone(), a2.clone()]
    );

    // Keys, listed oldest first (two created in the same microsecond in
    // the order they were inserted).
    let ka1 = xks_key(&a, 10);
    let kb1 = XksKey {
        description: String::new(),
        rule: AuthorizationRule::default(),
        ..xks_key(&b, 10)
    };
    let ka2 = XksKey {
        usage: XksKeyUsage::Decrypt,
        enabled: false,
        ..xks_key(&a, 11)
    };
    for (k, summary) in [
        (&ka1, "Created key 1"),
        (&kb1, "Created key 2"),
        (&ka2, "Created key 3"),
    ] {
        s.insert_xks_key(k, &record(summary)).await.unwrap();
        rev = wrote(&f, rev, summary).await;
        assert_eq!(s.get_xks_key(k.id).await.unwrap().as_ref(), Some(k));
    }
    assert_eq!(
        s.list_xks_keys(None).await.unwrap(),
        vec![ka1.clone(), kb1.clone(), ka2.clone()]
    );
    assert_eq!(
        s.list_xks_keys(Some(a.id)).await.unwrap(),
        vec![ka1.clone(), ka2.clone()]
    );
    assert_eq!(
        s.list_xks_keys(Some(b.id)).await.unwrap(),
        vec![kb1.clone()]
    );
    assert!(
        s.list_xks_keys(Some(uuid::Uuid::new_v4()))
            .await
            .unwrap()
            .is_empty()
    );

    // A store's quota and mTLS rule change; what else `next` says of it
    // (its name, prefix, creation) is not the replacement's to write.
    let a_next = XksStore {
        quota_per_second: 50,
        mtls: None,
        updated_at: at(20),
        ..a.clone()
    };
    let renamed = XksStore {
        name: XksStoreName::parse("renamed").unwrap(),
        path_prefix: PathPrefix::parse("/elsewhere").unwrap(),
        created_at: at(19),
        ..a_next.clone()
    };
    assert!(
        s.replace_xks_store(&a, &renamed, &record("Updated store payments"))
            .await
            .unwrap()
    );
    rev = wrote(&f, rev, "Updated store payments").await;
    assert_eq!(
        s.list_xks_stores().await.unwrap(),
        vec![b.clone(), a_next.clone()]
    );
    // And back to a rule, which reads back whole.
    let a_mtls = XksStore {
        mtls: Some(
            MtlsRule::new("cks.kms.us-east-1.amazonaws.com", crate::common::CA_PEM).unwrap(),
        ),
        updated_at: at(21),
        ..a_next.clone()
    };
    assert!(
        s.replace_xks_store(&a_next, &a_mtls, &record("Updated store payments"))
            .await
            .unwrap()
    );
    rev = wrote(&f, rev, "Updated store payments").await;
    assert_eq!(s.list_xks_stores().await.unwrap()[1], a_mtls);

    // A key's description, usage, state and rule change; its store,
    // material and creation do not.
    let ka1_next = XksKey {
        description: "retiring".into(),
        usage: XksKeyUsage::Decrypt,
        enabled: false,
        rule: AuthorizationRule {
            source_vpcs: vec![Pattern::parse("vpc-0abc*").unwrap()],
            ..ka1.rule.clone()
        },
        updated_at: at(22),
        ..ka1.clone()
    };
    let moved = XksKey {
        store_id: b.id,
        handle: b"another handle".to_vec(),
        created_at: at(0),
        ..ka1_next.clone()
    };
    assert!(
        s.replace_xks_key(&ka1, &moved, &record("Updated key 1"))
            .await
            .unwrap()
    );
    rev = wrote(&f, rev, "Updated key 1").await;
    assert_eq!(s.get_xks_key(ka1.id).await.unwrap(), Some(ka1_next.clone()));

    read_everything(&f, &a).await;
    assert_eq!(
        s.xks_revision().await.unwrap(),
        rev,
        "reads moved the revision"
    );

    // Revoking a credential, deleting a key.
    assert!(
        s.delete_xks_credential(a.id, &a1.access_key_id, &record("Revoked a credential"))
            .await
            .unwrap()
    );
    rev = wrote(&f, rev, "Revoked a credential").await;
    assert_eq!(
        s.list_xks_credentials().await.unwrap(),
        vec![b1.clone(), a2.clone()]
    );
    assert!(
        s.delete_xks_key(ka2.id, &record("Deleted key 3"))
            .await
            .unwrap()
    );
    rev = wrote(&f, rev, "Deleted key 3").await;
    assert_eq!(s.get_xks_key(ka2.id).await.unwrap(), None);

    // A store without keys goes with its credentials.
    assert!(
        s.delete_xks_key(kb1.id, &record("Deleted key 2"))
            .await
            .unwrap()
    );
    rev = wrote(&f, rev, "Deleted key 2").await;
    s.delete_xks_store(b.id, &record("Deleted store ledger.b"))
        .await
        .unwrap();
    rev = wrote(&f, rev, "Deleted store ledger.b").await;
    assert_eq!(s.list_xks_stores().await.unwrap(), vec![a_mtls]);
    assert_eq!(s.list_xks_credentials().await.unwrap(), vec![a2]);
    assert_eq!(s.list_xks_keys(None).await.unwrap(), vec![ka1_next]);

    // Each write above, and nothing else, in the verified chain.
    assert_eq!(rev, 13);
    assert_eq!(verify_chain(s).await, 13);
}

#[tokio::test]
async fn taken_names_prefixes_access_key_ids_and_ids_are_duplicates_that_write_nothing() {
    let f = Fixture::new().await;
    let s = &f.store;
    let a = xks_store("payments");
    let a1 = xks_credential(&a, 1);
    s.insert_xks_store(&a, &a1, &record("Created"))
        .await
        .unwrap();
    let key = xks_key(&a, 2);
    s.insert_xks_key(&key, &record("Created key"))
        .await
        .unwrap();
    let (rev, entries) = (s.xks_revision().await.unwrap(), f.audit_count().await);

    let same_name = XksStore {
        path_prefix: PathPrefix::parse("/other").unwrap(),
        ..xks_store("payments")
    };
    let same_prefix = XksStore {
        path_prefix: a.path_prefix.clone(),
        ..xks_store("other")
    };
    let same_id = XksStore {
        id: a.id,
        ..xks_store("third")
    };
    for store in [same_name, same_prefix, same_id] {
        let cred = xks_credential(&store, 3);
        assert!(
            matches!(
                s.insert_xks_store(&store, &cred, &record("Created")).await,
                Err(StoreError::Duplicate)
            ),
            "{store:?}"
        );
    }
    // A new store whose first credential's access key id is taken: the
    // store is not written either.
    let fresh = xks_store("fresh");
    let reused = XksCredential {
        access_key_id: a1.access_key_id.clone(),
        ..xks_credential(&fresh, 3)
    };
    assert!(matches!(
        s.insert_xks_store(&fresh, &reused, &record("Created"))
            .await,
        Err(StoreError::Duplicate)
    ));
    // An added credential with a taken access key id, or a taken id.
    let reused = XksCredential {
        access_key_id: a1.access_key_id.clone(),
        ..xks_credential(&a, 3)
    };
    assert!(matches!(
        s.insert_xks_credential(&reused, 2, &record("Added")).await,
        Err(StoreError::Duplicate)
    ));
    let reused = XksCredential {
        id: a1.id,
        ..xks_credential(&a, 3)
    };
    assert!(matches!(
        s.insert_xks_credential(&reused, 2, &record("Added")).await,
        Err(StoreError::Duplicate)
    ));
    // A key id taken.
    assert!(matches!(
        s.insert_xks_key(
            &XksKey {
                id: key.id,
                ..xks_key(&a, 3)
            },
            &record("Created key")
        )
        .await,
        Err(StoreError::Duplicate)
    ));

    unchanged(&f, rev, entries).await;
    assert_eq!(s.list_xks_stores().await.unwrap(), vec![a]);
    assert_eq!(s.list_xks_credentials().await.unwrap(), vec![a1]);
    assert_eq!(s.list_xks_keys(None).await.unwrap(), vec![key]);
}

#[tokio::test]
async fn a_store_with_keys_is_in_use_and_rows_that_are_gone_are_not_found() {
    let f = Fixture::new().await;
    let s = &f.store;
    let a = xks_store("payments");
    let a1 = xks_credential(&a, 1);
    s.insert_xks_store(&a, &a1, &record("Created"))
        .await
        .unwrap();
    let key = xks_key(&a, 2);
    s.insert_xks_key(&key, &record("Created key"))
        .await
        .unwrap();
    let (rev, entries) = (s.xks_revision().await.unwrap(), f.audit_count().await);

    // In use: the store, its credential and its key all stay.
    assert!(matches!(
        s.delete_xks_store(a.id, &record("Deleted")).await,
        Err(StoreError::InUse)
    ));
    assert_eq!(s.list_xks_stores().await.unwrap(), vec![a.clone()]);
    assert_eq!(s.list_xks_credentials().await.unwrap(), vec![a1.clone()]);

    // Gone, or never there.
    let ghost = xks_store("ghost");
    assert!(matches!(
        s.delete_xks_store(ghost.id, &record("Deleted")).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.insert_xks_key(&xks_key(&ghost, 3), &record("Created key"))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.insert_xks_credential(&xks_credential(&ghost, 3), 2, &record("Added"))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(
        !s.delete_xks_key(uuid::Uuid::new_v4(), &record("Deleted key"))
            .await
            .unwrap()
    );
    // A credential is revoked only from its own store.
    assert!(
        !s.delete_xks_credential(ghost.id, &a1.access_key_id, &record("Revoked"))
            .await
            .unwrap()
    );
    let (unknown, _) = keyhold_core::xks::generate_credential().unwrap();
    assert!(
        !s.delete_xks_credential(a.id, &unknown, &record("Revoked"))
            .await
            .unwrap()
    );
    assert_eq!(s.get_xks_key(uuid::Uuid::new_v4()).await.unwrap(), None);
    // A first credential that names another store is refused.
    let stray = xks_credential(&a, 3);
    assert!(matches!(
        s.insert_xks_store(&ghost, &stray, &record("Created")).await,
        Err(StoreError::Corrupt(_))
    ));
    unchanged(&f, rev, entries).await;

    // Without its key the store goes, and its credential with it.
    assert!(
        s.delete_xks_key(key.id, &record("Deleted key"))
            .await
            .unwrap()
    );
    s.delete_xks_store(a.id, &record("Deleted")).await.unwrap();
    assert!(s.list_xks_stores().await.unwrap().is_empty());
    assert!(s.list_xks_credentials().await.unwrap().is_empty());
    assert_eq!(s.xks_revision().await.unwrap(), rev + 2);
}

#[tokio::test]
async fn replacements_write_only_over_what_was_read() {
    let f = Fixture::new().await;
    let s = &f.store;
    let a = xks_store("payments");
    s.insert_xks_store(&a, &xks_credential(&a, 1), &record("Created"))
        .await
        .unwrap();
    let key = xks_key(&a, 2);
    s.insert_xks_key(&key, &record("Created key"))
        .await
        .unwrap();

    // Two officers read the same store; the first one's change lands.
    let first = XksStore {
        quota_per_second: 10,
        updated_at: at(3),
        ..a.clone()
    };
    let second = XksStore {
        mtls: None,
        updated_at: at(4),
        ..a.clone()
    };
    assert!(
        s.replace_xks_store(&a, &first, &record("Updated store"))
            .await
            .unwrap()
    );
    let (rev, entries) = (s.xks_revision().await.unwrap(), f.audit_count().await);
    assert!(
        !s.replace_xks_store(&a, &second, &record("Updated store"))
            .await
            .unwrap()
    );
    unchanged(&f, rev, entries).await;
    assert_eq!(s.list_xks_stores().await.unwrap(), vec![first.clone()]);

    // The same for a key.
    let disabled = XksKey {
        enabled: false,
        updated_at: at(5),
        ..key.clone()
    };
    let narrowed = XksKey {
        usage: XksKeyUsage::Encrypt,
        updated_at: at(6),
        ..key.clone()
    };
    assert!(
        s.replace_xks_key(&key, &disabled, &record("Updated key"))
            .await
            .unwrap()
    );
    let (rev, entries) = (s.xks_revision().await.unwrap(), f.audit_count().await);
    assert!(
        !s.replace_xks_key(&key, &narrowed, &record("Updated key"))
            .await
            .unwrap()
    );
    unchanged(&f, rev, entries).await;
    assert_eq!(s.get_xks_key(key.id).await.unwrap(), Some(disabled.clone()));

    // Gone since it was read: nothing to write over either.
    assert!(
        s.delete_xks_key(key.id, &record("Deleted key"))
            .await
            .unwrap()
    );
    s.delete_xks_store(a.id, &record("Deleted")).await.unwrap();
    let (rev, entries) = (s.xks_revision().await.unwrap(), f.audit_count().await);
    assert!(
        !s.replace_xks_key(&disabled, &narrowed, &record("Updated key"))
            .await
            .unwrap()
    );
    assert!(
        !s.replace_xks_store(&first, &second, &record("Updated store"))
            .await
            .unwrap()
    );
    unchanged(&f, rev, entries).await;
}

/// Sixteen rotations at once, from two nodes (two stores on one database),
/// against a limit of two: exactly two credentials are stored, as the
/// database itself counts them; the other fourteen are refused unwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_parallel_additions_store_exactly_max_active_credentials() {
    let f = Fixture::new().await;
    let other_node = f.open().await;
    let a = xks_store("payments");
    let first = xks_credential(&a, 1);
    f.store
        .insert_xks_store(&a, &first, &record("Created"))
        .await
        .unwrap();
    assert!(
        f.store
            .delete_xks_credential(a.id, &first.access_key_id, &record("Revoked"))
            .await
            .unwrap()
    );
    let (rev, entries) = (f.store.xks_revision().await.unwrap(), f.audit_count().await);

    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = if i % 2 == 0 {
            f.store.clone()
        } else {
            other_node.clone()
        };
        let credential = xks_credential(&a, 2);
        tasks.push(tokio::spawn(async move {
            let added = store
                .insert_xks_credential(&credential, 2, &record("Added a credential"))
                .await
                .unwrap();
            (added, credential)
        }));
    }
    let mut added = Vec::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            (true, credential) => added.push(credential),
            (false, _) => refused += 1,
        }
    }
    assert_eq!((added.len(), refused), (2, 14));

    let mut raw = f.raw().await;
    let stored = raw
        .fetch_i64(&format!(
            "SELECT COUNT(*) FROM xks_credentials WHERE store_id = '{}'",
            a.id
        ))
        .await
        .unwrap();
    assert_eq!(stored, [2]);
    let mut listed = f.store.list_xks_credentials().await.unwrap();
    listed.sort_by_key(|c| c.id);
    added.sort_by_key(|c| c.id);
    assert_eq!(listed, added);
    // Two writes, two entries, two raises: the refusals wrote nothing.
    assert_eq!(f.store.xks_revision().await.unwrap(), rev + 2);
    assert_eq!(f.audit_count().await, entries + 2);
    verify_chain(&f.store).await;
}

#[tokio::test]
async fn the_schema_refuses_broken_rows_and_rows_edited_behind_keyholds_back_are_corrupt() {
    let f = Fixture::new().await;
    let s = &f.store;
    let a = xks_store("payments");
    s.insert_xks_store(&a, &xks_credential(&a, 1), &record("Created"))
        .await
        .unwrap();
    let key = xks_key(&a, 2);
    s.insert_xks_key(&key, &record("Created key"))
        .await
        .unwrap();
    let mut conn = f.raw().await;

    // Half an mTLS rule, an unknown usage, a key or credential of no store.
    for edit in [
        format!(
            "UPDATE xks_stores SET mtls_subject = NULL WHERE id = '{}'",
            a.id
        ),
        format!(
            "UPDATE xks_stores SET mtls_ca_pem = NULL WHERE id = '{}'",
            a.id
        ),
        format!(
            "UPDATE xks_stores SET quota_per_second = 0 WHERE id = '{}'",
            a.id
        ),
        format!("UPDATE xks_keys SET usage = 'sign' WHERE id = '{}'", key.id),
        format!(
            "UPDATE xks_keys SET store_id = 'nowhere' WHERE id = '{}'",
            key.id
        ),
        format!(
            "UPDATE xks_credentials SET store_id = 'nowhere' WHERE store_id = '{}'",
            a.id
        ),
        "UPDATE xks_revision SET id = 2".to_owned(),
        "INSERT INTO xks_revision (id, revision) VALUES (2, 0)".to_owned(),
    ] {
        assert!(
            conn.execute(&edit).await.is_err(),
            "the schema let through: {edit}"
        );
    }

    // What the schema cannot check is checked as rows are read.
    conn.execute(&format!(
        "UPDATE xks_keys SET rule = '{{\"principals\": [\"\"]}}' WHERE id = '{}'",
        key.id
    ))
    .await
    .unwrap();
    let e = s.list_xks_keys(None).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Corrupt(m) if m.contains("xks_keys.rule")),
        "{e}"
    );
    conn.execute(&format!(
        "UPDATE xks_stores SET path_prefix = 'no-slash' WHERE id = '{}'",
        a.id
    ))
    .await
    .unwrap();
    let e = s.list_xks_stores().await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Corrupt(m) if m.contains("xks_stores.path_prefix")),
        "{e}"
    );
}

/// `keyhold keystore migrate` moves a key's material and a credential's
/// secret into another keystore: only the handle, or only the sealed
/// secret, changes, each with its entry and one revision; a replacement
/// that read the key before the move no longer matches it; rows gone are
/// NotFound, and nothing is written for them.
#[tokio::test]
async fn a_keystore_migration_replaces_a_key_handle_or_a_sealed_secret_alone() {
    let f = Fixture::new().await;
    let s = &f.store;
    let a = xks_store("payments");
    let first = xks_credential(&a, 1);
    let second = xks_credential(&a, 2);
    s.insert_xks_store(&a, &first, &record("Created"))
        .await
        .unwrap();
    assert!(
        s.insert_xks_credential(&second, 2, &record("Added"))
            .await
            .unwrap()
    );
    let key = xks_key(&a, 3);
    let other = xks_key(&a, 4);
    for k in [&key, &other] {
        s.insert_xks_key(k, &record("Created key")).await.unwrap();
    }
    let mut rev = s.xks_revision().await.unwrap();

    let label = format!("keyhold:xks:{}", key.id).into_bytes();
    s.update_xks_key_handle(key.id, &label, &record("Moved key"))
        .await
        .unwrap();
    rev = wrote(&f, rev, "Moved key").await;
    let moved = XksKey {
        handle: label,
        ..key.clone()
    };
    assert_eq!(s.get_xks_key(key.id).await.unwrap(), Some(moved.clone()));
    assert_eq!(
        s.list_xks_keys(None).await.unwrap(),
        vec![moved.clone(), other.clone()]
    );

    // An officer's change read before the move: it must read again.
    let entries = f.audit_count().await;
    let disabled = XksKey {
        enabled: false,
        updated_at: at(5),
        ..key.clone()
    };
    assert!(
        !s.replace_xks_key(&key, &disabled, &record("Updated key"))
            .await
            .unwrap()
    );
    unchanged(&f, rev, entries).await;
    // Read after it, the change keeps the new handle.
    let disabled = XksKey {
        handle: moved.handle.clone(),
        ..disabled
    };
    assert!(
        s.replace_xks_key(&moved, &disabled, &record("Updated key"))
            .await
            .unwrap()
    );
    rev = wrote(&f, rev, "Updated key").await;
    assert_eq!(s.get_xks_key(key.id).await.unwrap(), Some(disabled));

    let resealed = vec![0x01, 0xaa, 0xbb, 0x00, 0xff];
    s.update_xks_credential_secret(second.id, &resealed, &record("Moved secret"))
        .await
        .unwrap();
    rev = wrote(&f, rev, "Moved secret").await;
    let second_moved = XksCredential {
        sealed_secret: resealed,
        ..second.clone()
    };
    assert_eq!(
        s.list_xks_credentials().await.unwrap(),
        vec![first.clone(), second_moved]
    );

    // Rows that are gone.
    let entries = f.audit_count().await;
    let missing = uuid::Uuid::new_v4();
    assert!(matches!(
        s.update_xks_key_handle(missing, b"keyhold:xks:x", &record("Moved key"))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.update_xks_credential_secret(missing, b"\x01", &record("Moved secret"))
            .await,
        Err(StoreError::NotFound)
    ));
    unchanged(&f, rev, entries).await;
    verify_chain(s).await;
}
