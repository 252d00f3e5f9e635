use keyhold_core::StoreError;
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
