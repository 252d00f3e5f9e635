use keyhold_core::StoreError;
use keyhold_core::settings::Settings;

use super::Conn;
use super::read::{Query, Reads};
use crate::error::db;
use crate::rows::{parse_settings, read_row, settings_json};

read_row! {
    /// The settings' one row: a JSON document.
    struct SettingsRow in "settings" {
        body: String,
    }
}

pub(super) async fn get(reads: Reads<'_>) -> Result<Settings, StoreError> {
    let query = Query::new("SELECT body FROM settings WHERE id = 1");
    let row = reads.first::<SettingsRow>(&query).await?;
    row.map_or_else(|| Ok(Settings::default()), |row| parse_settings(&row.body))
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
