//! Both kinds of cloud credential, and migration 0003 that made room for the
//! second one on a database written by the release before it.

use std::path::Path;

use keyhold_core::StoreError;
use keyhold_core::clock::format_timestamp;
use keyhold_core::credential::{Credential, CredentialKind, Endpoint};
use keyhold_core::group::KeyGroup;
use keyhold_store::testing::TestDatabase;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use crate::common::{
    Fixture, TestMac, chain_credential, connect, credential, group, open_sqlite, record,
};

const ROLE: &str = "arn:aws:iam::123456789012:role/team/keyhold";

/// A connection of its own to a SQLite file, behind the store's back.
async fn raw_sqlite(path: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn both_kinds_round_trip() {
    let f = Fixture::new().await;
    let s = &f.store;
    let key = credential("aws-key");
    let chain = chain_credential("aws-chain", None);
    let mut role = chain_credential("aws-role", Some(ROLE));
    role.endpoint =
        Some(Endpoint::parse("https://vpce-0abc.kms.eu-west-1.vpce.amazonaws.com").unwrap());
    for c in [&key, &chain, &role] {
        s.insert_credential(c, &record("c")).await.unwrap();
        assert_eq!(s.get_credential(&c.name).await.unwrap().as_ref(), Some(c));
    }
    assert_eq!(
        s.list_credentials().await.unwrap(),
        vec![chain.clone(), key.clone(), role.clone()]
    );
    assert!(matches!(
        s.insert_credential(&chain_credential("aws-key", None), &record("dup"))
            .await,
        Err(StoreError::Duplicate)
    ));

    // A group on a default-chain credential holds it like any other.
    s.insert_group(&group("payments", "aws-role"), &record("g"))
        .await
        .unwrap();
    assert!(matches!(
        s.delete_credential(&role.name, &record("x")).await,
        Err(StoreError::InUse)
    ));
    s.delete_credential(&chain.name, &record("c"))
        .await
        .unwrap();
    assert_eq!(s.get_credential(&chain.name).await.unwrap(), None);
}

#[tokio::test]
async fn a_row_that_breaks_its_kind_is_refused_or_reported_corrupt() {
    let f = Fixture::new().await;
    let s = &f.store;
    s.insert_credential(&credential("aws-key"), &record("c"))
        .await
        .unwrap();
    s.insert_credential(&chain_credential("aws-role", Some(ROLE)), &record("c"))
        .await
        .unwrap();
    let mut conn = f.raw().await;
    let byte = conn.bytes_literal(&[0]);

    // The schema refuses rows that mix the kinds.
    for edit in [
        "UPDATE credentials SET access_key_id = NULL WHERE name = 'aws-key'".to_owned(),
        "UPDATE credentials SET sealed_secret = NULL WHERE name = 'aws-key'".to_owned(),
        "UPDATE credentials SET role_arn = 'arn:aws:iam::123456789012:role/x' WHERE name = 'aws-key'".to_owned(),
        "UPDATE credentials SET access_key_id = 'AKIAIOSFODNN7EXAMPLE' WHERE name = 'aws-role'".to_owned(),
        format!("UPDATE credentials SET sealed_secret = {byte} WHERE name = 'aws-role'"),
        "UPDATE credentials SET kind = 'default_chain' WHERE name = 'aws-key'".to_owned(),
        "UPDATE credentials SET kind = 'password' WHERE name = 'aws-role'".to_owned(),
    ] {
        let r = conn.execute(&edit).await;
        assert!(r.is_err(), "the CHECK let through: {edit}");
    }

    // Edited with the checks off, the rows are reported, never trusted.
    conn.execute(if f.is_postgres() {
        "ALTER TABLE credentials DROP CONSTRAINT credentials_kind_columns"
    } else {
        "PRAGMA ignore_check_constraints = ON"
    })
    .await
    .unwrap();
    for (edit, column) in [
        (
            "UPDATE credentials SET sealed_secret = NULL WHERE name = 'aws-key'",
            "credentials.sealed_secret",
        ),
        (
            "UPDATE credentials SET access_key_id = 'AKIAIOSFODNN7EXAMPLE' WHERE name = 'aws-role'",
            "credentials.access_key_id",
        ),
        (
            "UPDATE credentials SET role_arn = 'arn:aws:iam::1:role/x' WHERE name = 'aws-role'",
            "credentials.role_arn",
        ),
        (
            "UPDATE credentials SET kind = 'password' WHERE name = 'aws-role'",
            "credentials.kind",
        ),
    ] {
        assert_eq!(conn.execute(edit).await.unwrap(), 1, "{edit}");
        let name = if edit.contains("aws-key") {
            "aws-key"
        } else {
            "aws-role"
        };
        let r = s
            .get_credential(&keyhold_core::names::CredentialName::parse(name).unwrap())
            .await;
        match r {
            Err(StoreError::Corrupt(why)) => assert!(why.contains(column), "{edit}: {why}"),
            other => panic!("{edit}: {other:?}"),
        }
        // Put the row back for the next case.
        let original = if name == "aws-key" {
            format!(
                "UPDATE credentials SET kind = 'access_key', access_key_id = 'AKIAIOSFODNN7EXAMPLE', \
                 sealed_secret = {byte}, role_arn = NULL WHERE name = 'aws-key'"
            )
        } else {
            "UPDATE credentials SET kind = 'default_chain', access_key_id = NULL, \
             sealed_secret = NULL, role_arn = NULL WHERE name = 'aws-role'"
                .to_owned()
        };
        conn.execute(&original).await.unwrap();
        assert!(s.list_credentials().await.is_ok(), "{edit}: not restored");
    }
}

/// The migrations folder as the release before 0003 shipped it.
fn migrations_before_0003(into: &Path) {
    let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for name in ["0001_initial.sql", "0002_jobs.sql"] {
        std::fs::copy(all.join(name), into.join(name)).unwrap();
    }
}

/// Writes a credential and a group as the pre-0003 schema holds them.
async fn insert_legacy(conn: &mut SqliteConnection, c: &Credential, g: &KeyGroup) {
    let CredentialKind::AccessKey {
        access_key_id,
        sealed_secret,
    } = &c.kind
    else {
        panic!("the old schema only holds access keys");
    };
    sqlx::query(
        "INSERT INTO credentials \
         (id, name, service, kind, access_key_id, sealed_secret, endpoint, created_at) \
         VALUES ($1, $2, 'aws', 'access_key', $3, $4, $5, $6)",
    )
    .bind(c.id.to_string())
    .bind(c.name.as_str())
    .bind(access_key_id.as_str())
    .bind(sealed_secret)
    .bind(c.endpoint.as_ref().map(Endpoint::as_str))
    .bind(format_timestamp(&c.created_at))
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO key_groups (id, name, service, credential_name, rotate_every, valid_for, \
         info_owner, info_notes, alias, description, region, active_key_id, policy, \
         disable_after_rotate, created_at, updated_at, next_rotation_at) VALUES \
         ($1, $2, 'aws', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(g.id.to_string())
    .bind(g.name.as_str())
    .bind(g.credential.as_str())
    .bind(g.rotate_every.map(|i| i.to_string()))
    .bind(g.valid_for.map(|i| i.to_string()))
    .bind(&g.info.owner)
    .bind(&g.info.notes)
    .bind(g.aws.alias.as_str())
    .bind(g.aws.description.as_str())
    .bind(g.aws.region.as_str())
    .bind(g.aws.active_key_id.as_ref().map(|k| k.as_str().to_owned()))
    .bind(g.aws.policy.as_ref().map(|p| p.as_str().to_owned()))
    .bind(g.aws.disable_after_rotate)
    .bind(format_timestamp(&g.created_at))
    .bind(format_timestamp(&g.updated_at))
    .bind(g.next_rotation_at.as_ref().map(format_timestamp))
    .execute(&mut *conn)
    .await
    .unwrap();
}

/// Migration 0003 on the run's backend, over a database that 0001 and 0002
/// made and the release before filled: the rows and the reference survive.
#[tokio::test]
async fn migration_0003_upgrades_a_database_of_the_release_before() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create().await.unwrap();
    let path = dir.path().join("keyhold.db");
    let mut conn = db.raw(&path).await.unwrap();
    let old_migrations = dir.path().join("migrations");
    std::fs::create_dir(&old_migrations).unwrap();
    for name in ["0001_initial.sql", "0002_jobs.sql"] {
        std::fs::copy(conn.migrations_dir().join(name), old_migrations.join(name)).unwrap();
    }
    conn.migrate(&old_migrations).await.unwrap();
    let cred = credential("aws-prod");
    let g = group("payments", "aws-prod");
    let secret = conn.bytes_literal(&[0, 1, 2, 254, 255]);
    conn.execute(&format!(
        "INSERT INTO credentials \
         (id, name, service, kind, access_key_id, sealed_secret, endpoint, created_at) \
         VALUES ('{}', 'aws-prod', 'aws', 'access_key', 'AKIAIOSFODNN7EXAMPLE', {secret}, \
         'http://127.0.0.1:4566', '{}')",
        cred.id,
        format_timestamp(&cred.created_at)
    ))
    .await
    .unwrap();
    let policy = g.aws.policy.as_ref().unwrap().as_str();
    conn.execute(&format!(
        "INSERT INTO key_groups (id, name, service, credential_name, rotate_every, valid_for, \
         info_owner, info_notes, alias, description, region, active_key_id, policy, \
         disable_after_rotate, created_at, updated_at, next_rotation_at) VALUES \
         ('{}', 'payments', 'aws', 'aws-prod', '30d', '1y', 'payments team', \
         'line one\nline two', 'alias/payments', 'demo key', 'eu-west-1', \
         'bbb61d9f-0fba-4585-8c31-988cbc999849', '{policy}', TRUE, '{}', '{}', '{}')",
        g.id,
        format_timestamp(&g.created_at),
        format_timestamp(&g.updated_at),
        format_timestamp(g.next_rotation_at.as_ref().unwrap()),
    ))
    .await
    .unwrap();

    let mac = std::sync::Arc::new(TestMac::default());
    let s = connect(&db.url(&path), &mac).await;
    assert_eq!(s.list_credentials().await.unwrap(), vec![cred.clone()]);
    assert_eq!(s.get_group(&g.name).await.unwrap(), Some(as_migrated(&g)));
    assert!(matches!(
        s.delete_credential(&cred.name, &record("x")).await,
        Err(StoreError::InUse)
    ));
    let chain = chain_credential("aws-chain", Some(ROLE));
    s.insert_credential(&chain, &record("c")).await.unwrap();
    assert_eq!(s.get_credential(&chain.name).await.unwrap(), Some(chain));
    s.close().await;
    let s = connect(&db.url(&path), &mac).await;
    assert_eq!(s.get_group(&g.name).await.unwrap(), Some(as_migrated(&g)));
    s.close().await;
}

#[tokio::test]
async fn sqlite_migration_0003_keeps_credentials_groups_and_their_reference() {
    let dir = tempfile::tempdir().unwrap();
    let old_migrations = dir.path().join("migrations");
    std::fs::create_dir(&old_migrations).unwrap();
    migrations_before_0003(&old_migrations);
    let db = dir.path().join("keyhold.db");

    // A database as the previous release left it: 0001 and 0002 applied.
    let cred = credential("aws-prod");
    let g = group("payments", "aws-prod");
    {
        let mut conn = SqliteConnection::connect_with(
            &SqliteConnectOptions::new()
                .filename(&db)
                .create_if_missing(true)
                .foreign_keys(true),
        )
        .await
        .unwrap();
        let migrator = sqlx::migrate::Migrator::new(old_migrations.as_path())
            .await
            .unwrap();
        assert_eq!(migrator.iter().count(), 2);
        migrator.run(&mut conn).await.unwrap();
        insert_legacy(&mut conn, &cred, &g).await;
        conn.close().await.unwrap();
    }

    // This release opens it and applies 0003.
    let mac = std::sync::Arc::new(TestMac::default());
    let s = open_sqlite(&db, &mac).await;
    assert_eq!(
        s.get_credential(&cred.name).await.unwrap(),
        Some(cred.clone())
    );
    assert_eq!(s.list_credentials().await.unwrap(), vec![cred.clone()]);
    assert_eq!(s.get_group(&g.name).await.unwrap(), Some(as_migrated(&g)));

    let mut conn = raw_sqlite(&db).await;
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    // Every migration there is, each once (whatever came after 0003).
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .count();
    let shipped = i64::try_from(shipped).unwrap();
    assert_eq!(applied, (1..=shipped).collect::<Vec<i64>>());
    // Every reference still resolves, and still names the rebuilt table.
    let dangling: Vec<(String, i64, String, i64)> = sqlx::query_as("PRAGMA foreign_key_check")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(dangling, vec![]);
    let references: Vec<String> =
        sqlx::query_scalar("SELECT \"table\" FROM pragma_foreign_key_list('key_groups')")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(references, ["credentials"]);
    let schema: String = sqlx::query_scalar(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'credentials'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(schema.contains("STRICT"), "{schema}");
    assert!(schema.contains("CHECK"), "{schema}");
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE name IN ('credentials_new', 'credentials_copy')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(leftovers, 0);

    // The credential is still held by its group; the new kind fits beside it.
    assert!(matches!(
        s.delete_credential(&cred.name, &record("x")).await,
        Err(StoreError::InUse)
    ));
    assert!(s.get_credential(&cred.name).await.unwrap().is_some());
    let chain = chain_credential("aws-chain", Some(ROLE));
    s.insert_credential(&chain, &record("c")).await.unwrap();
    assert_eq!(s.get_credential(&chain.name).await.unwrap(), Some(chain));
    s.close().await;

    // Opening again applies nothing more.
    let s = open_sqlite(&db, &mac).await;
    assert_eq!(s.get_group(&g.name).await.unwrap(), Some(as_migrated(&g)));
}

/// A group written before migration 0011 reads back rotating by new KMS
/// keys, the behaviour it had.
fn as_migrated(g: &keyhold_core::group::KeyGroup) -> keyhold_core::group::KeyGroup {
    let mut g = g.clone();
    g.aws.rotation = keyhold_core::group::RotationStrategy::NewKey;
    g.aws.at_rotation_limit = keyhold_core::group::AtRotationLimit::NewKey;
    g
}
