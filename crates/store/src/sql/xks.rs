//! External key stores (XKS): the stores, their SigV4 credentials and their
//! keys (migration 0014). Every write runs in the caller's write
//! transaction, which holds the backend's writer lock, and raises
//! `xks_revision` in it: nodes that serve the proxy from a cache poll the
//! revision and reload when, and only when, a change was committed.

use keyhold_core::StoreError;
use keyhold_core::xks::{XksAccessKeyId, XksCredential, XksKey, XksStore};
use sqlx::QueryBuilder;

use super::{Conn, Db, FOR_UPDATE, INSERT_ORDER, Pool, one_row};
use crate::error::{corrupt, db, db_referencing};
use crate::rows::{XksCredentialRow, XksKeyRow, XksStoreRow, mtls_columns, ts, xks_rule_json};

const STORE_COLUMNS: &str = "id, name, path_prefix, quota_per_second, mtls_subject, \
     mtls_ca_pem, created_at, updated_at";
const CREDENTIAL_COLUMNS: &str = "id, store_id, access_key_id, sealed_secret, created_at";
const KEY_COLUMNS: &str = "id, store_id, description, usage, enabled, rule, keystore_handle, \
     check_digits, created_at, updated_at";

pub(super) async fn revision(pool: &Pool) -> Result<i64, StoreError> {
    sqlx::query_scalar::<_, i64>("SELECT revision FROM xks_revision WHERE id = 1")
        .fetch_optional(pool)
        .await
        .map_err(db)?
        .ok_or_else(missing_revision)
}

/// Raises the revision by one: called by every change, after it succeeded,
/// in its transaction (a change rolled back takes its raise with it).
async fn bump(conn: &mut Conn) -> Result<(), StoreError> {
    let done = sqlx::query("UPDATE xks_revision SET revision = revision + 1 WHERE id = 1")
        .execute(conn)
        .await
        .map_err(db)?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(missing_revision())
    }
}

/// Migration 0014 inserts the row and nothing deletes it.
fn missing_revision() -> StoreError {
    corrupt("xks_revision", "revision", "its one row is missing")
}

// Stores

/// By name.
pub(super) async fn list_stores(pool: &Pool) -> Result<Vec<XksStore>, StoreError> {
    sqlx::query_as::<_, XksStoreRow>(&format!(
        "SELECT {STORE_COLUMNS} FROM xks_stores ORDER BY name"
    ))
    .fetch_all(pool)
    .await
    .map_err(db)?
    .into_iter()
    .map(XksStore::try_from)
    .collect()
}

/// The store, its row locked for the rest of the transaction where the
/// backend locks rows (see `FOR_UPDATE`).
async fn get_store_for_update(
    conn: &mut Conn,
    id: uuid::Uuid,
) -> Result<Option<XksStore>, StoreError> {
    sqlx::query_as::<_, XksStoreRow>(&format!(
        "SELECT {STORE_COLUMNS} FROM xks_stores WHERE id = $1{FOR_UPDATE}"
    ))
    .bind(id.to_string())
    .fetch_optional(conn)
    .await
    .map_err(db)?
    .map(XksStore::try_from)
    .transpose()
}

/// A store with its first credential, which must be the store's own.
/// [`StoreError::Duplicate`] when the name, path prefix, id or access key id
/// is taken.
pub(super) async fn insert_store(
    conn: &mut Conn,
    store: &XksStore,
    credential: &XksCredential,
) -> Result<(), StoreError> {
    if credential.store_id != store.id {
        // A caller's mistake that would file the credential under another
        // store (or none): refused rather than written.
        return Err(StoreError::Corrupt(format!(
            "the first credential of external key store {} names store {}",
            store.id, credential.store_id
        )));
    }
    let (mtls_subject, mtls_ca_pem) = mtls_columns(store.mtls.as_ref());
    sqlx::query(&format!(
        "INSERT INTO xks_stores ({STORE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    ))
    .bind(store.id.to_string())
    .bind(store.name.as_str())
    .bind(store.path_prefix.as_str())
    .bind(i64::from(store.quota_per_second))
    .bind(mtls_subject)
    .bind(mtls_ca_pem)
    .bind(ts(&store.created_at))
    .bind(ts(&store.updated_at))
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    insert_credential_row(&mut *conn, credential).await?;
    bump(conn).await
}

/// Writes `next`'s quota, mTLS rule and updated time while the store still
/// reads as `expected` (the caller holds the write lock); `false`, nothing
/// written, when it changed since the caller read it or is gone.
pub(super) async fn replace_store(
    conn: &mut Conn,
    expected: &XksStore,
    next: &XksStore,
) -> Result<bool, StoreError> {
    match get_store_for_update(&mut *conn, expected.id).await? {
        Some(current) if &current == expected => {}
        _ => return Ok(false),
    }
    let (mtls_subject, mtls_ca_pem) = mtls_columns(next.mtls.as_ref());
    let done = sqlx::query(
        "UPDATE xks_stores SET quota_per_second = $2, mtls_subject = $3, mtls_ca_pem = $4, \
         updated_at = $5 WHERE id = $1",
    )
    .bind(expected.id.to_string())
    .bind(i64::from(next.quota_per_second))
    .bind(mtls_subject)
    .bind(mtls_ca_pem)
    .bind(ts(&next.updated_at))
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    one_row(done.rows_affected())?;
    bump(conn).await.map(|()| true)
}

/// Deletes the store and its credentials. [`StoreError::InUse`] while it
/// has keys (the keys' reference refuses, and the credentials' deletion is
/// rolled back with it); [`StoreError::NotFound`] when it is gone.
pub(super) async fn delete_store(conn: &mut Conn, id: uuid::Uuid) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM xks_credentials WHERE store_id = $1")
        .bind(id.to_string())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let done = sqlx::query("DELETE FROM xks_stores WHERE id = $1")
        .bind(id.to_string())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    one_row(done.rows_affected())?;
    bump(conn).await
}

// Credentials

/// Every store's, oldest first.
pub(super) async fn list_credentials(pool: &Pool) -> Result<Vec<XksCredential>, StoreError> {
    sqlx::query_as::<_, XksCredentialRow>(&format!(
        "SELECT {CREDENTIAL_COLUMNS} FROM xks_credentials ORDER BY created_at, {INSERT_ORDER}"
    ))
    .fetch_all(pool)
    .await
    .map_err(db)?
    .into_iter()
    .map(XksCredential::try_from)
    .collect()
}

async fn insert_credential_row(
    conn: &mut Conn,
    credential: &XksCredential,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO xks_credentials ({CREDENTIAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
    ))
    .bind(credential.id.to_string())
    .bind(credential.store_id.to_string())
    .bind(credential.access_key_id.as_str())
    .bind(credential.sealed_secret.as_slice())
    .bind(ts(&credential.created_at))
    .execute(conn)
    .await
    .map_err(db_referencing)?;
    Ok(())
}

/// Adds the credential while its store has fewer than `max_active`;
/// `false`, nothing written, otherwise. The count and the insert are one
/// transaction under the writer lock every write takes first (SQLite's
/// `BEGIN IMMEDIATE`, PostgreSQL's advisory lock), and on PostgreSQL the
/// store's row is locked besides: parallel additions run one after the
/// other, each counting what the one before it committed.
/// [`StoreError::NotFound`] when the store is gone; [`StoreError::Duplicate`]
/// when the id or access key id is taken.
pub(super) async fn insert_credential(
    conn: &mut Conn,
    credential: &XksCredential,
    max_active: u32,
) -> Result<bool, StoreError> {
    if get_store_for_update(&mut *conn, credential.store_id)
        .await?
        .is_none()
    {
        return Err(StoreError::NotFound);
    }
    let active: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM xks_credentials WHERE store_id = $1")
            .bind(credential.store_id.to_string())
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    if active >= i64::from(max_active) {
        return Ok(false);
    }
    insert_credential_row(&mut *conn, credential).await?;
    bump(conn).await.map(|()| true)
}

/// `false`, nothing written, when the store has no such credential.
pub(super) async fn delete_credential(
    conn: &mut Conn,
    store_id: uuid::Uuid,
    access_key_id: &XksAccessKeyId,
) -> Result<bool, StoreError> {
    let done =
        sqlx::query("DELETE FROM xks_credentials WHERE store_id = $1 AND access_key_id = $2")
            .bind(store_id.to_string())
            .bind(access_key_id.as_str())
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    bump(conn).await.map(|()| true)
}

/// Replaces a credential's sealed secret: sealed again by another keystore
/// (`keyhold keystore migrate`). [`StoreError::NotFound`] when it is gone.
pub(super) async fn update_credential_secret(
    conn: &mut Conn,
    id: uuid::Uuid,
    sealed_secret: &[u8],
) -> Result<(), StoreError> {
    let done = sqlx::query("UPDATE xks_credentials SET sealed_secret = $2 WHERE id = $1")
        .bind(id.to_string())
        .bind(sealed_secret)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    one_row(done.rows_affected())?;
    bump(conn).await
}

// Keys

/// One store's keys, or every store's, oldest first (by the index on
/// `(store_id, created_at)`, or on `created_at`).
pub(super) async fn list_keys(
    pool: &Pool,
    store_id: Option<uuid::Uuid>,
) -> Result<Vec<XksKey>, StoreError> {
    let mut qb = QueryBuilder::<Db>::new(format!("SELECT {KEY_COLUMNS} FROM xks_keys"));
    if let Some(store_id) = store_id {
        qb.push(" WHERE store_id = ")
            .push_bind(store_id.to_string());
    }
    qb.push(format!(" ORDER BY created_at, {INSERT_ORDER}"));
    qb.build_query_as::<XksKeyRow>()
        .fetch_all(pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(XksKey::try_from)
        .collect()
}

pub(super) async fn get_key(conn: &mut Conn, id: uuid::Uuid) -> Result<Option<XksKey>, StoreError> {
    sqlx::query_as::<_, XksKeyRow>(&format!("SELECT {KEY_COLUMNS} FROM xks_keys WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(conn)
        .await
        .map_err(db)?
        .map(XksKey::try_from)
        .transpose()
}

/// [`StoreError::NotFound`] when its store is gone; [`StoreError::Duplicate`]
/// when the id is taken.
pub(super) async fn insert_key(conn: &mut Conn, key: &XksKey) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO xks_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    ))
    .bind(key.id.to_string())
    .bind(key.store_id.to_string())
    .bind(&key.description)
    .bind(key.usage.as_str())
    .bind(key.enabled)
    .bind(xks_rule_json(&key.rule)?)
    .bind(key.handle.as_slice())
    .bind(key.check_digits.as_str())
    .bind(ts(&key.created_at))
    .bind(ts(&key.updated_at))
    .execute(&mut *conn)
    .await
    .map_err(db_referencing)?;
    bump(conn).await
}

/// Writes what a change may change of a key (description, usage, enabled,
/// rule, updated time: never its store, material or creation) while it
/// still reads as `expected` (the caller holds the write lock); `false`,
/// nothing written, when it changed since the caller read it or is gone.
pub(super) async fn replace_key(
    conn: &mut Conn,
    expected: &XksKey,
    next: &XksKey,
) -> Result<bool, StoreError> {
    match get_key(&mut *conn, expected.id).await? {
        Some(current) if &current == expected => {}
        _ => return Ok(false),
    }
    let done = sqlx::query(
        "UPDATE xks_keys SET description = $2, usage = $3, enabled = $4, rule = $5, \
         updated_at = $6 WHERE id = $1",
    )
    .bind(expected.id.to_string())
    .bind(&next.description)
    .bind(next.usage.as_str())
    .bind(next.enabled)
    .bind(xks_rule_json(&next.rule)?)
    .bind(ts(&next.updated_at))
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    one_row(done.rows_affected())?;
    bump(conn).await.map(|()| true)
}

/// Replaces the key's keystore handle alone: its material moved into
/// another keystore (`keyhold keystore migrate`), nothing else of it
/// changed. [`StoreError::NotFound`] when it is gone.
pub(super) async fn update_key_handle(
    conn: &mut Conn,
    id: uuid::Uuid,
    handle: &[u8],
) -> Result<(), StoreError> {
    let done = sqlx::query("UPDATE xks_keys SET keystore_handle = $2 WHERE id = $1")
        .bind(id.to_string())
        .bind(handle)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    one_row(done.rows_affected())?;
    bump(conn).await
}

/// `false`, nothing written, when there is no such key.
pub(super) async fn delete_key(conn: &mut Conn, id: uuid::Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM xks_keys WHERE id = $1")
        .bind(id.to_string())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    bump(conn).await.map(|()| true)
}
