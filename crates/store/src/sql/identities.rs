use keyhold_core::StoreError;
use keyhold_core::clock::Timestamp;
use keyhold_core::identity::Identity;
use keyhold_core::names::IdentityName;

use super::{Conn, Pool};
use crate::error::db;
use crate::rows::{IdentityRow, opt_ts, ts};

const COLUMNS: &str =
    "name, role, password_hash, must_change_password, failed_logins, locked_until, created_at";

pub(super) async fn list(pool: &Pool) -> Result<Vec<Identity>, StoreError> {
    sqlx::query_as::<_, IdentityRow>(&format!("SELECT {COLUMNS} FROM identities ORDER BY name"))
        .fetch_all(pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(Identity::try_from)
        .collect()
}

pub(super) async fn get(pool: &Pool, name: &IdentityName) -> Result<Option<Identity>, StoreError> {
    sqlx::query_as::<_, IdentityRow>(&format!("SELECT {COLUMNS} FROM identities WHERE name = $1"))
        .bind(name.as_str())
        .fetch_optional(pool)
        .await
        .map_err(db)?
        .map(Identity::try_from)
        .transpose()
}

pub(super) async fn insert(conn: &mut Conn, identity: &Identity) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO identities ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
    ))
    .bind(identity.name.as_str())
    .bind(identity.role.as_str())
    .bind(&identity.password_hash)
    .bind(identity.must_change_password)
    .bind(i64::from(identity.failed_logins))
    .bind(opt_ts(identity.locked_until.as_ref()))
    .bind(ts(&identity.created_at))
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

pub(super) async fn update(conn: &mut Conn, identity: &Identity) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE identities SET role = $2, password_hash = $3, must_change_password = $4, \
         failed_logins = $5, locked_until = $6 WHERE name = $1",
    )
    .bind(identity.name.as_str())
    .bind(identity.role.as_str())
    .bind(&identity.password_hash)
    .bind(identity.must_change_password)
    .bind(i64::from(identity.failed_logins))
    .bind(opt_ts(identity.locked_until.as_ref()))
    .execute(conn)
    .await
    .map_err(db)?;
    super::one_row(done.rows_affected())
}

pub(super) async fn delete(conn: &mut Conn, name: &IdentityName) -> Result<(), StoreError> {
    let done = sqlx::query("DELETE FROM identities WHERE name = $1")
        .bind(name.as_str())
        .execute(conn)
        .await
        .map_err(db)?;
    super::one_row(done.rows_affected())
}

/// Counts a wrong password in one statement: the database adds one to what
/// it holds (never a value read earlier), and decides the lock itself. The
/// failure that reaches the threshold locks and starts the count again, so
/// the returned count is 0 exactly when this failure locked the identity.
pub(super) async fn record_failure(
    conn: &mut Conn,
    name: &IdentityName,
    threshold: u32,
    lock_until: &Timestamp,
) -> Result<bool, StoreError> {
    let count: Option<i64> = sqlx::query_scalar(
        "UPDATE identities SET \
         locked_until = CASE WHEN failed_logins + 1 >= $2 THEN $3 ELSE locked_until END, \
         failed_logins = CASE WHEN failed_logins + 1 >= $2 THEN 0 ELSE failed_logins + 1 END \
         WHERE name = $1 RETURNING failed_logins",
    )
    .bind(name.as_str())
    .bind(i64::from(threshold.max(1)))
    .bind(ts(lock_until))
    .fetch_optional(conn)
    .await
    .map_err(db)?;
    count.map(|c| c == 0).ok_or(StoreError::NotFound)
}

/// Clears the count after a right password unless a lock holds at `now`.
pub(super) async fn clear_failures(
    conn: &mut Conn,
    name: &IdentityName,
    now: &Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE identities SET failed_logins = 0, locked_until = NULL \
         WHERE name = $1 AND (locked_until IS NULL OR locked_until <= $2)",
    )
    .bind(name.as_str())
    .bind(ts(now))
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(done.rows_affected() == 1)
}

/// Sets the password columns alone, while the hash is still the one checked.
pub(super) async fn set_password(
    conn: &mut Conn,
    name: &IdentityName,
    current_hash: &str,
    new_hash: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE identities SET password_hash = $3, must_change_password = $4 \
         WHERE name = $1 AND password_hash = $2",
    )
    .bind(name.as_str())
    .bind(current_hash)
    .bind(new_hash)
    .bind(false)
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(done.rows_affected() == 1)
}
