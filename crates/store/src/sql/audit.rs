use keyhold_core::StoreError;
use keyhold_core::audit::{AuditEntry, AuditFilter};
use sqlx::QueryBuilder;

use super::batch::{Batch, Changes};
use super::{Conn, Db, Pool};
use crate::audit::{AUDIT_COLUMNS, ChainHeadRow, chain_head_sql, push_list_query};
use crate::error::db;
use crate::rows::AuditRow;

/// Reads the audit chain's head inside the caller's write transaction,
/// which holds the writer lock, so no other entry can take its place.
pub(super) async fn read_head(conn: &mut Conn) -> Result<ChainHeadRow, StoreError> {
    sqlx::query_as(chain_head_sql!())
        .fetch_optional(conn)
        .await
        .map_err(db)
}

/// The inserts of sealed audit entries: statements whose changes are not
/// checked, so that a backend may commit in the same query (see
/// [`Batch::push_commit`]).
pub(crate) struct Inserts<'q>(Batch<'q>);

impl<'q> Inserts<'q> {
    pub(crate) fn into_batch(self) -> Batch<'q> {
        self.0
    }
}

/// The inserts of sealed `entries`, in order.
pub(super) fn inserts(entries: &[AuditEntry]) -> Inserts<'_> {
    let mut batch = Batch::new();
    for entry in entries {
        batch.push(Changes::Any, db, |q| {
            q.push(format!("INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES ("));
            let mut values = q.separated(", ");
            values
                .push_bind(entry.seq)
                .push_bind(entry.time.as_str())
                .push_bind(entry.users.as_str())
                .push_bind(entry.summary.as_str())
                .push_bind(entry.details.as_str())
                .push_bind(entry.archived)
                .push_bind(entry.prev_hash.as_slice())
                .push_bind(entry.hash.as_slice())
                .push_bind(entry.mac.as_slice());
            q.push(")");
        });
    }
    Inserts(batch)
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
