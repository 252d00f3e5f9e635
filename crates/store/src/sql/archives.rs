//! Audit archives: the signed files the audit log's older entries were
//! written to. The entries stay in `audit_log`, marked archived in the same
//! transaction as the archive's row (the flag is the one column the log's
//! triggers let change).

use keyhold_core::StoreError;
use keyhold_core::backup::AuditArchive;

use super::{Conn, Pool};
use crate::error::db;
use crate::rows::{AuditArchiveRow, ts};

const COLUMNS: &str = "id, file, first_seq, last_seq, created_at, sha256";

/// Records the archive and marks its entries archived. Every entry of
/// `first_seq..=last_seq` must be in the log: an archive of entries keyhold
/// does not hold is refused ([`StoreError::NotFound`]), nothing written.
/// Archives are contiguous: one that does not start right after the last
/// (two nodes archiving at once) is refused ([`StoreError::Duplicate`]).
pub(super) async fn insert(conn: &mut Conn, a: &AuditArchive) -> Result<(), StoreError> {
    if a.first_seq < 1 || a.last_seq < a.first_seq {
        return Err(StoreError::Corrupt(format!(
            "audit archive {}: entries {}..={} are not a range of the log (seq starts at 1)",
            a.file, a.first_seq, a.last_seq
        )));
    }
    let last: Option<i64> = sqlx::query_scalar("SELECT MAX(last_seq) FROM audit_archives")
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    if a.first_seq != last.unwrap_or(0) + 1 {
        return Err(StoreError::Duplicate);
    }
    sqlx::query(&format!(
        "INSERT INTO audit_archives ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
    ))
    .bind(a.id.to_string())
    .bind(&a.file)
    .bind(a.first_seq)
    .bind(a.last_seq)
    .bind(ts(&a.created_at))
    .bind(&a.sha256)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    let marked = sqlx::query("UPDATE audit_log SET archived = $1 WHERE seq >= $2 AND seq <= $3")
        .bind(true)
        .bind(a.first_seq)
        .bind(a.last_seq)
        .execute(conn)
        .await
        .map_err(db)?;
    let expected = u64::try_from(a.last_seq - a.first_seq + 1).unwrap_or(u64::MAX);
    if marked.rows_affected() != expected {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Oldest first.
pub(super) async fn list(pool: &Pool) -> Result<Vec<AuditArchive>, StoreError> {
    sqlx::query_as::<_, AuditArchiveRow>(&format!(
        "SELECT {COLUMNS} FROM audit_archives ORDER BY first_seq, created_at, id"
    ))
    .fetch_all(pool)
    .await
    .map_err(db)?
    .into_iter()
    .map(AuditArchive::try_from)
    .collect()
}
