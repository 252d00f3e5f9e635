//! The consistent snapshot a backup is made of: every table a restore needs,
//! read in one read transaction (PostgreSQL: repeatable read, read only;
//! SQLite: one WAL snapshot), rows streamed to the sink one at a time.
//!
//! Columns that only order rows on one backend ([`INSERT_ORDER`] where it is
//! a column of its own) are left out; rows go out in that order instead, so
//! the loader's inserts give the target the same order whatever its backend.

use futures_util::TryStreamExt;
use keyhold_core::StoreError;
use keyhold_core::backup::{SnapshotItem, SnapshotSink, SnapshotSummary, SnapshotValue};
use sqlx::Row;

use super::{
    COLUMNS_SQL, Conn, Db, INSERT_ORDER, Pool, SNAPSHOT_BEGIN, TABLES_SQL, column_kind, row_order,
};
use crate::error::{corrupt, db};
use crate::snapshot::{Column, ColumnKind, SNAPSHOT_TABLES, check_covered, quote, unknown_type};

pub(super) async fn export(
    pool: &Pool,
    sink: &mut dyn SnapshotSink,
) -> Result<SnapshotSummary, StoreError> {
    // From the pool itself: a snapshot holds its connection for long.
    let mut tx = pool.sqlx().begin_with(SNAPSHOT_BEGIN).await.map_err(db)?;
    let outcome = read_all(&mut tx, sink).await;
    // It only read: ending it either way changes nothing.
    if let Err(e) = tx.rollback().await {
        tracing::warn!(error = %e, "ending the snapshot's read transaction failed");
    }
    outcome
}

async fn read_all(
    conn: &mut Conn,
    sink: &mut dyn SnapshotSink,
) -> Result<SnapshotSummary, StoreError> {
    let schema_version = schema_version(conn).await?.ok_or_else(|| {
        StoreError::Corrupt("the database has no migrations recorded: it is not keyhold's".into())
    })?;
    check_covered(&schema_tables(conn).await?)?;
    let mut summary = SnapshotSummary {
        schema_version,
        rows: Vec::with_capacity(SNAPSHOT_TABLES.len()),
    };
    for &table in SNAPSHOT_TABLES {
        let all = table_columns(conn, table).await?;
        if all.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "table {table} is missing at schema version {schema_version}: the database's schema is not keyhold's"
            )));
        }
        let order = row_order(conn, table, &all).await?;
        let columns: Vec<Column> = all.into_iter().filter(|c| c.name != INSERT_ORDER).collect();
        sink.item(SnapshotItem::Table {
            name: table.to_owned(),
            columns: columns.iter().map(|c| c.name.clone()).collect(),
        })
        .await?;
        let select = format!(
            "SELECT {} FROM {} ORDER BY {order}",
            columns
                .iter()
                .map(|c| quote(&c.name))
                .collect::<Vec<_>>()
                .join(", "),
            quote(table)
        );
        let mut rows = sqlx::query(&select).fetch(&mut *conn);
        let mut count = 0_u64;
        while let Some(row) = rows.try_next().await.map_err(db)? {
            let values = columns
                .iter()
                .enumerate()
                .map(|(i, c)| read_value(&row, i, c.kind).map_err(|e| corrupt(table, &c.name, e)))
                .collect::<Result<Vec<_>, _>>()?;
            sink.item(SnapshotItem::Row(values)).await?;
            count += 1;
        }
        summary.rows.push((table.to_owned(), count));
    }
    Ok(summary)
}

fn read_value(
    row: &<Db as sqlx::Database>::Row,
    i: usize,
    kind: ColumnKind,
) -> Result<SnapshotValue, sqlx::Error> {
    use SnapshotValue::{Bool, Bytes, Integer, Null, Real, Text};
    Ok(match kind {
        ColumnKind::Int64 => row.try_get::<Option<i64>, _>(i)?.map_or(Null, Integer),
        ColumnKind::Int32 => row
            .try_get::<Option<i32>, _>(i)?
            .map_or(Null, |v| Integer(i64::from(v))),
        ColumnKind::Int16 => row
            .try_get::<Option<i16>, _>(i)?
            .map_or(Null, |v| Integer(i64::from(v))),
        ColumnKind::Real64 => row.try_get::<Option<f64>, _>(i)?.map_or(Null, Real),
        ColumnKind::Real32 => row
            .try_get::<Option<f32>, _>(i)?
            .map_or(Null, |v| Real(f64::from(v))),
        ColumnKind::Text => row.try_get::<Option<String>, _>(i)?.map_or(Null, Text),
        ColumnKind::Bytes => row.try_get::<Option<Vec<u8>>, _>(i)?.map_or(Null, Bytes),
        ColumnKind::Bool => row.try_get::<Option<bool>, _>(i)?.map_or(Null, Bool),
    })
}

/// The newest migration applied; `None` before the first (no table yet).
pub(super) async fn schema_version(conn: &mut Conn) -> Result<Option<i64>, StoreError> {
    if !table_exists(conn, "_sqlx_migrations").await? {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut *conn)
        .await
        .map_err(db)
}

/// Every table of the schema.
pub(super) async fn schema_tables(conn: &mut Conn) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar(TABLES_SQL)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)
}

/// The table's columns in order with their declared types; none when there
/// is no such table.
async fn declared_columns(
    conn: &mut Conn,
    table: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    sqlx::query_as(COLUMNS_SQL)
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)
}

pub(super) async fn table_exists(conn: &mut Conn, table: &str) -> Result<bool, StoreError> {
    Ok(!declared_columns(conn, table).await?.is_empty())
}

/// The table's columns in order, typed; none when there is no such table.
pub(super) async fn table_columns(conn: &mut Conn, table: &str) -> Result<Vec<Column>, StoreError> {
    declared_columns(conn, table)
        .await?
        .into_iter()
        .map(|(name, declared)| match column_kind(&declared) {
            Some(kind) => Ok(Column { name, kind }),
            None => Err(unknown_type(table, &name, &declared)),
        })
        .collect()
}
