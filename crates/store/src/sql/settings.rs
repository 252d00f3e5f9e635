use keyhold_core::StoreError;
use keyhold_core::settings::Settings;

use super::{Conn, Pool};
use crate::error::db;
use crate::rows::{parse_settings, settings_json};

pub(super) async fn get(pool: &Pool) -> Result<Settings, StoreError> {
    let body: Option<String> = sqlx::query_scalar("SELECT body FROM settings WHERE id = 1")
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    body.map_or_else(|| Ok(Settings::default()), |b| parse_settings(&b))
}

pub(super) async fn put(conn: &mut Conn, settings: &Settings) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO settings (id, body) VALUES (1, $1) \
         ON CONFLICT (id) DO UPDATE SET body = excluded.body",
    )
    .bind(settings_json(settings)?)
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// Writes `next` while the stored settings still read as `expected` (the
/// caller holds the write lock); `false`, nothing written, otherwise.
pub(super) async fn replace(
    conn: &mut Conn,
    expected: &Settings,
    next: &Settings,
) -> Result<bool, StoreError> {
    let body: Option<String> = sqlx::query_scalar("SELECT body FROM settings WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    let current = body.map_or_else(|| Ok(Settings::default()), |b| parse_settings(&b))?;
    if &current != expected {
        return Ok(false);
    }
    put(conn, next).await.map(|()| true)
}
