//! Backups: one row per backup made or being made. "One runs at a time" is
//! the partial unique index of migration 0013 (a second start is a
//! duplicate), and a backup's end is a guarded update from running, so of
//! two nodes that both think they end it only one records it.

use keyhold_core::StoreError;
use keyhold_core::backup::{BackupRecord, BackupStatus};

use super::{Conn, Pool, one_row};
use crate::audit::list_limit;
use crate::error::db;
use crate::rows::{BackupRow, count_column, opt_ts, text_list_json, ts};

const COLUMNS: &str = "id, trigger_kind, initiated_by, status, started_at, finished_at, file, \
     size_bytes, sha256, key_count, threshold, custodians, shares, error, node";

/// Records a backup that starts: running, whatever `backup` says of its
/// status. [`StoreError::Duplicate`] while another one runs (or for an id or
/// file name taken).
pub(super) async fn insert(conn: &mut Conn, b: &BackupRecord) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO backups ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    ))
    .bind(b.id.to_string())
    .bind(b.trigger.as_str())
    .bind(&b.initiated_by)
    .bind(BackupStatus::Running.as_str())
    .bind(ts(&b.started_at))
    .bind(opt_ts(b.finished_at.as_ref()))
    .bind(&b.file)
    .bind(count_column("backup size", b.size)?)
    .bind(b.sha256.as_deref())
    .bind(count_column("backup key count", b.keys)?)
    .bind(i64::from(b.threshold))
    .bind(text_list_json(&b.custodians)?)
    .bind(text_list_json(&b.shares)?)
    .bind(b.error.as_deref())
    .bind(&b.node)
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// Writes the outcome only while the backup is still running; `false`,
/// nothing written, otherwise.
pub(super) async fn finish(conn: &mut Conn, b: &BackupRecord) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE backups SET status = $1, finished_at = $2, size_bytes = $3, sha256 = $4, \
         key_count = $5, error = $6 WHERE id = $7 AND status = $8",
    )
    .bind(b.status.as_str())
    .bind(opt_ts(b.finished_at.as_ref()))
    .bind(count_column("backup size", b.size)?)
    .bind(b.sha256.as_deref())
    .bind(count_column("backup key count", b.keys)?)
    .bind(b.error.as_deref())
    .bind(b.id.to_string())
    .bind(BackupStatus::Running.as_str())
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn get(pool: &Pool, id: uuid::Uuid) -> Result<Option<BackupRecord>, StoreError> {
    sqlx::query_as::<_, BackupRow>(&format!("SELECT {COLUMNS} FROM backups WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(pool)
        .await
        .map_err(db)?
        .map(BackupRecord::try_from)
        .transpose()
}

/// Newest first (by id within one microsecond, so the order is stable).
pub(super) async fn list(pool: &Pool, limit: u32) -> Result<Vec<BackupRecord>, StoreError> {
    sqlx::query_as::<_, BackupRow>(&format!(
        "SELECT {COLUMNS} FROM backups ORDER BY started_at DESC, id DESC LIMIT $1"
    ))
    .bind(list_limit(limit))
    .fetch_all(pool)
    .await
    .map_err(db)?
    .into_iter()
    .map(BackupRecord::try_from)
    .collect()
}

pub(super) async fn delete(conn: &mut Conn, id: uuid::Uuid) -> Result<(), StoreError> {
    let done = sqlx::query("DELETE FROM backups WHERE id = $1")
        .bind(id.to_string())
        .execute(conn)
        .await
        .map_err(db)?;
    one_row(done.rows_affected())
}
