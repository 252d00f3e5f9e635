use keyhold_core::StoreError;
use keyhold_core::credential::{Credential, Endpoint};
use keyhold_core::names::CredentialName;

use super::read::{Query, Reads};
use super::{Conn, Pool};
use crate::error::db;
use crate::rows::{CredentialRow, credential_columns, ts};

const COLUMNS: &str =
    "id, name, service, kind, access_key_id, sealed_secret, role_arn, endpoint, created_at";

pub(super) async fn list(pool: &Pool) -> Result<Vec<Credential>, StoreError> {
    sqlx::query_as::<_, CredentialRow>(&format!("SELECT {COLUMNS} FROM credentials ORDER BY name"))
        .fetch_all(pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(Credential::try_from)
        .collect()
}

pub(super) async fn get(
    reads: Reads<'_>,
    name: &CredentialName,
) -> Result<Option<Credential>, StoreError> {
    let query = Query::new(format!("SELECT {COLUMNS} FROM credentials WHERE name = $1"))
        .text(name.as_str());
    reads
        .first::<CredentialRow>(&query)
        .await?
        .map(Credential::try_from)
        .transpose()
}

pub(super) async fn insert(conn: &mut Conn, credential: &Credential) -> Result<(), StoreError> {
    let columns = credential_columns(credential);
    sqlx::query(&format!(
        "INSERT INTO credentials ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(credential.id.to_string())
    .bind(credential.name.as_str())
    .bind(credential.service.as_str())
    .bind(columns.kind)
    .bind(columns.access_key_id)
    .bind(columns.sealed_secret)
    .bind(columns.role_arn)
    .bind(credential.endpoint.as_ref().map(Endpoint::as_str))
    .bind(ts(&credential.created_at))
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// Only access-key credentials have a secret; a row without one is not changed.
pub(super) async fn update_secret(
    conn: &mut Conn,
    id: uuid::Uuid,
    sealed_secret: &[u8],
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE credentials SET sealed_secret = $1 WHERE id = $2 AND sealed_secret IS NOT NULL",
    )
    .bind(sealed_secret)
    .bind(id.to_string())
    .execute(conn)
    .await
    .map_err(db)?;
    super::one_row(done.rows_affected())
}

pub(super) async fn delete(conn: &mut Conn, name: &CredentialName) -> Result<(), StoreError> {
    let done = sqlx::query("DELETE FROM credentials WHERE name = $1")
        .bind(name.as_str())
        .execute(conn)
        .await
        .map_err(db)?;
    super::one_row(done.rows_affected())
}
