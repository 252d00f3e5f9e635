use keyhold_core::StoreError;
use keyhold_core::identity::Session;
use keyhold_core::names::IdentityName;

use super::Conn;
use super::read::{Query, Reads};
use crate::error::db;
use crate::rows::{SessionRow, session_identities_json, ts};

const COLUMNS: &str = "id, identities, created_at, last_seen";

pub(super) async fn get(reads: Reads<'_>, id: &str) -> Result<Option<Session>, StoreError> {
    let query = Query::new(format!("SELECT {COLUMNS} FROM sessions WHERE id = $1")).text(id);
    reads
        .first::<SessionRow>(&query)
        .await?
        .map(Session::try_from)
        .transpose()
}

pub(super) async fn insert(conn: &mut Conn, session: &Session) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO sessions ({COLUMNS}) VALUES ($1, $2, $3, $4)"
    ))
    .bind(&session.id)
    .bind(session_identities_json(session)?)
    .bind(ts(&session.created_at))
    .bind(ts(&session.last_seen))
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

pub(super) async fn update(conn: &mut Conn, session: &Session) -> Result<(), StoreError> {
    replace(conn, &session.id, session).await
}

/// Updates the session stored under `previous_id`, moving it to `session.id`
/// when that differs (a new token after a privilege change).
pub(super) async fn replace(
    conn: &mut Conn,
    previous_id: &str,
    session: &Session,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE sessions SET id = $2, identities = $3, created_at = $4, last_seen = $5 WHERE id = $1",
    )
    .bind(previous_id)
    .bind(&session.id)
    .bind(session_identities_json(session)?)
    .bind(ts(&session.created_at))
    .bind(ts(&session.last_seen))
    .execute(conn)
    .await
    .map_err(db)?;
    super::one_row(done.rows_affected())
}

/// Ending a session that has already ended (a second logout, two requests
/// racing to expire it) is the outcome asked for, so a missing row is no error.
pub(super) async fn delete(conn: &mut Conn, id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM sessions WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}

/// Sessions are few and short-lived, so they are matched in Rust rather than
/// with each backend's own JSON operators.
pub(super) async fn delete_of(conn: &mut Conn, name: &IdentityName) -> Result<(), StoreError> {
    let rows = sqlx::query_as::<_, SessionRow>(&format!("SELECT {COLUMNS} FROM sessions"))
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    for row in rows {
        // A session that no longer decodes cannot be trusted either: end it.
        if row.includes(name).unwrap_or(true) {
            sqlx::query("DELETE FROM sessions WHERE id = $1")
                .bind(row.id())
                .execute(&mut *conn)
                .await
                .map_err(db)?;
        }
    }
    Ok(())
}
