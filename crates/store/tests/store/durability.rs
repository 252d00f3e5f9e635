use std::sync::Arc;

use keyhold_core::StoreError;
use keyhold_core::settings::Settings;

use crate::common::{
    Fixture, TestMac, credential, group, identity, key, open_sqlite, record, verify_chain,
};

#[tokio::test]
async fn reopening_the_database_keeps_everything() {
    let f = Fixture::new().await;
    let cred = credential("aws-prod");
    let g = group("payments", "aws-prod");
    let k = key("payments", 1);
    let alice = identity("Alice");
    let settings = Settings {
        lockout_minutes: 30,
        ..Settings::default()
    };
    f.store
        .insert_identity(&alice, &record("identity"))
        .await
        .unwrap();
    f.store
        .insert_credential(&cred, &record("credential"))
        .await
        .unwrap();
    f.store.insert_group(&g, &record("group")).await.unwrap();
    f.store.insert_key(&k, Some(&record("key"))).await.unwrap();
    f.store
        .put_settings(&settings, &record("settings"))
        .await
        .unwrap();
    let log = f.store.audit_page(0, 100).await.unwrap();
    f.store.close().await;

    let reopened = f.open().await;
    assert_eq!(
        reopened.get_identity(&alice.name).await.unwrap(),
        Some(alice)
    );
    assert_eq!(
        reopened.get_credential(&cred.name).await.unwrap(),
        Some(cred)
    );
    assert_eq!(reopened.get_group(&g.name).await.unwrap(), Some(g));
    assert_eq!(reopened.get_key(k.id).await.unwrap(), Some(k));
    assert_eq!(reopened.get_settings().await.unwrap(), settings);
    assert_eq!(reopened.audit_page(0, 100).await.unwrap(), log);

    // The chain goes on where it stopped.
    reopened
        .append_audit(&record("after reopening"))
        .await
        .unwrap();
    assert_eq!(verify_chain(&reopened).await, 6);
}

#[tokio::test]
async fn a_plain_path_creates_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.db");
    let store = keyhold_store::connect(path.to_str().unwrap(), Arc::new(TestMac::default()))
        .await
        .unwrap();
    store.append_audit(&record("hello")).await.unwrap();
    assert!(path.exists());
    store.close().await;
    // Opening again runs no migration twice.
    let again = open_sqlite(&path, &Arc::new(TestMac::default())).await;
    assert_eq!(verify_chain(&again).await, 1);
}

#[tokio::test]
async fn connection_errors_never_show_a_password() {
    let mac = Arc::new(TestMac::default());
    let err = keyhold_store::connect(
        "postgres://keyhold:hunter2@127.0.0.1:1/keyhold",
        mac.clone(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)));
    let shown = err.to_string();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("keyhold:***@"), "{shown}");

    let missing_dir = "sqlite:///nonexistent-dir-for-keyhold/x.db?mode=rwc";
    assert!(matches!(
        keyhold_store::connect(missing_dir, mac).await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn debug_shows_the_masked_url() {
    let f = Fixture::new().await;
    let shown = format!("{:?}", f.store);
    assert!(shown.contains(f.db.kind().as_str()), "{shown}");
}

#[tokio::test]
async fn the_file_is_in_wal_mode_with_foreign_keys_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyhold.db");
    let store = open_sqlite(&path, &Arc::new(TestMac::default())).await;
    let mut conn = {
        use sqlx::Connection;
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap()
    };
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    // Foreign keys are per connection; the store's refuse a dangling group.
    let dangling = group("orphan", "no-such-credential");
    assert!(matches!(
        store.insert_group(&dangling, &record("x")).await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn an_in_memory_database_lives_as_long_as_the_store() {
    let store = keyhold_store::connect("sqlite::memory:", Arc::new(TestMac::default()))
        .await
        .unwrap();
    store
        .insert_credential(&credential("aws-prod"), &record("c"))
        .await
        .unwrap();
    store
        .insert_identity(&identity("Alice"), &record("i"))
        .await
        .unwrap();
    assert_eq!(store.list_credentials().await.unwrap().len(), 1);
    assert_eq!(verify_chain(&store).await, 2);
}

/// Migrations only go forward: a database a newer release migrated (a
/// version this binary does not know) is refused at start, naming the
/// version, rather than used with a schema this release does not expect.
#[tokio::test]
async fn a_database_from_a_newer_release_is_refused_at_start() {
    let f = Fixture::new().await;
    let checksum = if f.is_postgres() {
        "decode('00', 'hex')"
    } else {
        "X'00'"
    };
    f.raw()
        .await
        .execute(&format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from a newer release', TRUE, {checksum}, 0)"
        ))
        .await
        .unwrap();
    let refused = keyhold_store::connect(&f.url(), f.mac.clone()).await;
    let message = match refused {
        Ok(_) => panic!("a database migrated by a newer release was opened"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains("9999"), "{message}");
}
