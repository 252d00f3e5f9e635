use keyhold_core::StoreError;
use keyhold_core::clock::Timestamp;
use keyhold_core::identity::Identity;
use keyhold_core::names::IdentityName;

use super::{Conn, Pool};
use crate::error::{corrupt, db};
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

/// Admits an attempt in one statement: the database adds one to the count
/// it holds, and only while no lock holds and the count is below the
/// threshold. The count after it is the attempt's number.
pub(super) async fn begin_attempt(
    conn: &mut Conn,
    name: &IdentityName,
    now: &Timestamp,
    threshold: u32,
) -> Result<Option<u32>, StoreError> {
    let count: Option<i64> = sqlx::query_scalar(
        "UPDATE identities SET failed_logins = failed_logins + 1 \
         WHERE name = $1 AND (locked_until IS NULL OR locked_until <= $2) \
         AND failed_logins < $3 RETURNING failed_logins",
    )
    .bind(name.as_str())
    .bind(ts(now))
    .bind(i64::from(threshold.max(1)))
    .fetch_optional(conn)
    .await
    .map_err(db)?;
    count
        .map(|c| u32::try_from(c).map_err(|e| corrupt("identities", "failed_logins", e)))
        .transpose()
}

/// Locks until `until`, the count started again.
pub(super) async fn lock(
    conn: &mut Conn,
    name: &IdentityName,
    until: &Timestamp,
) -> Result<(), StoreError> {
    let done =
        sqlx::query("UPDATE identities SET locked_until = $2, failed_logins = 0 WHERE name = $1")
            .bind(name.as_str())
            .bind(ts(until))
            .execute(conn)
            .await
            .map_err(db)?;
    super::one_row(done.rows_affected())
}

/// Clears the count after a right password unless a lock holds at `now`
/// or the password changed since it was checked.
pub(super) async fn clear_failures(
    conn: &mut Conn,
    name: &IdentityName,
    now: &Timestamp,
    checked_hash: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE identities SET failed_logins = 0, locked_until = NULL \
         WHERE name = $1 AND (locked_until IS NULL OR locked_until <= $2) \
         AND password_hash = $3",
    )
    .bind(name.as_str())
    .bind(ts(now))
    .bind(checked_hash)
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(done.rows_affected() == 1)
}

/// Sets the password columns alone, while the hash is still the one checked;
/// then the replaced hash joins the history, of which the newest
/// `keep_previous` rows stay. One transaction (the caller's) holds all three.
pub(super) async fn set_password(
    conn: &mut Conn,
    name: &IdentityName,
    current_hash: &str,
    new_hash: &str,
    keep_previous: u32,
    replaced_at: &Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE identities SET password_hash = $3, must_change_password = $4 \
         WHERE name = $1 AND password_hash = $2",
    )
    .bind(name.as_str())
    .bind(current_hash)
    .bind(new_hash)
    .bind(false)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO password_history (identity, seq, password_hash, replaced_at) \
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3 FROM password_history WHERE identity = $1",
    )
    .bind(name.as_str())
    .bind(current_hash)
    .bind(ts(replaced_at))
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    sqlx::query(
        "DELETE FROM password_history WHERE identity = $1 AND seq <= \
         (SELECT MAX(seq) FROM password_history WHERE identity = $1) - $2",
    )
    .bind(name.as_str())
    .bind(i64::from(keep_previous))
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(true)
}

/// The identity's earlier password hashes, newest first.
pub(super) async fn password_history(
    pool: &Pool,
    name: &IdentityName,
) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar(
        "SELECT password_hash FROM password_history WHERE identity = $1 ORDER BY seq DESC",
    )
    .bind(name.as_str())
    .fetch_all(pool)
    .await
    .map_err(db)
}
