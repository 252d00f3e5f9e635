use keyhold_core::StoreError;
use keyhold_core::audit::{AuditEntry, AuditFilter, AuditRecord, ChainHead};
use keyhold_core::ports::SharedAuditMac;
use sqlx::QueryBuilder;

use super::{Conn, Db, Pool};
use crate::audit::{AUDIT_COLUMNS, push_list_query, seal};
use crate::error::db;
use crate::rows::{AuditRow, hash32};

/// Reads the chain head, seals `record` after it and inserts the entry. Runs
/// inside the caller's write transaction, which holds the write lock, so no
/// other entry can take the same place in the chain.
pub(super) async fn append(
    conn: &mut Conn,
    record: &AuditRecord,
    mac: &SharedAuditMac,
) -> Result<(), StoreError> {
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
    let head = match head {
        Some((seq, hash)) => ChainHead {
            seq,
            hash: hash32("audit_log", "hash", &hash)?,
        },
        None => ChainHead::EMPTY,
    };
    let entry = seal(head, record, mac).await?;
    sqlx::query(&format!(
        "INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(entry.seq)
    .bind(&entry.time)
    .bind(&entry.users)
    .bind(&entry.summary)
    .bind(&entry.details)
    .bind(entry.archived)
    .bind(entry.prev_hash.as_slice())
    .bind(entry.hash.as_slice())
    .bind(entry.mac.as_slice())
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

pub(super) async fn list(pool: &Pool, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
    let mut qb = QueryBuilder::<Db>::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_log"));
    push_list_query(&mut qb, filter);
    qb.build_query_as::<AuditRow>()
        .fetch_all(pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(AuditEntry::try_from)
        .collect()
}

/// Oldest first. `limit` is not capped here: a shorter page than asked for
/// would read as the end of the log to a caller paging by length.
pub(super) async fn page(
    pool: &Pool,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<AuditEntry>, StoreError> {
    sqlx::query_as::<_, AuditRow>(&format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
    ))
    .bind(after_seq)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db)?
    .into_iter()
    .map(AuditEntry::try_from)
    .collect()
}
