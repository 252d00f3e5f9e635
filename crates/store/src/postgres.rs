//! The PostgreSQL backend, for several keyhold nodes sharing one database.
//! Its queries are the shared ones in `sql/`.
//!
//! Writers in every process and on every node are ordered by one
//! transaction-scoped advisory lock, taken as the first statement of each
//! write transaction and released by its commit or rollback: the audit chain
//! head a writer reads cannot move before its entry is committed, so seq and
//! prev_hash never fork, and a writer that dies releases the lock with its
//! connection.

use std::str::FromStr;
use std::time::Duration;

use keyhold_core::StoreError;
use keyhold_core::ports::SharedAuditMac;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};

use crate::DatabaseKind;
use crate::audit::ChainHeadRow;
use crate::error::db;
use crate::pool::{Kept, closing_abandoned_transactions};
use crate::snapshot::{Column, ColumnKind, quote};
use crate::url::unavailable;

// The shared queries, compiled for this backend (see sql/mod.rs): loading
// the same files once per backend is the point, not a mistake.
#[allow(clippy::duplicate_mod)]
#[path = "sql/mod.rs"]
mod sql;

pub(crate) use sql::SqlBackend as PostgresStore;
pub(crate) use sql::load::{Load as PostgresLoad, latest_version};
use sql::read::Query;
use sql::{AuditInserts, roll_back};

type Db = Postgres;
const KIND: DatabaseKind = DatabaseKind::Postgres;

/// The identity column that records insertion order (migration 0002).
const INSERT_ORDER: &str = "insert_order";

/// One statement per query: PostgreSQL prepares statements one at a time.
const BATCHES_STATEMENTS: bool = false;

/// Locks the rows a write transaction's `SELECT` reads until it ends. The
/// advisory lock every write takes orders keyhold's writers already; the
/// row lock keeps a read-then-write (a count before an insert) whole
/// whatever else writes to the database.
const FOR_UPDATE: &str = " FOR UPDATE";

/// The advisory lock key of keyhold's writers: "keyhold" in ASCII. Other
/// applications sharing the database are unlikely to pick the same number.
const WRITE_LOCK_KEY: i64 = 0x006b_6579_686f_6c64;

/// The schema's migrations, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

// What a backup's snapshot and a restore's load need of the schema.

/// Every table of keyhold's schema.
const TABLES_SQL: &str = "SELECT table_name::text FROM information_schema.tables \
     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'";
/// A table's columns and their types, in order.
const COLUMNS_SQL: &str = "SELECT column_name::text, data_type::text FROM information_schema.columns \
     WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position";
/// One snapshot for every statement of the transaction, which writes nothing.
const SNAPSHOT_BEGIN: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
/// A snapshot carries the ids of identity columns (`job_messages.id`),
/// which PostgreSQL otherwise refuses to take.
const INSERT_OVERRIDING: &str = " OVERRIDING SYSTEM VALUE";

/// The snapshot's type of a column, by `information_schema`'s type name.
fn column_kind(declared: &str) -> Option<ColumnKind> {
    match declared {
        "bigint" => Some(ColumnKind::Int64),
        "integer" => Some(ColumnKind::Int32),
        "smallint" => Some(ColumnKind::Int16),
        "double precision" => Some(ColumnKind::Real64),
        "real" => Some(ColumnKind::Real32),
        "text" | "character varying" => Some(ColumnKind::Text),
        "bytea" => Some(ColumnKind::Bytes),
        "boolean" => Some(ColumnKind::Bool),
        _ => None,
    }
}

/// Rows go out in insertion order where the table keeps one, otherwise by
/// primary key: the loader's inserts then give either backend the same order.
async fn row_order(
    conn: &mut PgConnection,
    table: &str,
    columns: &[Column],
) -> Result<String, StoreError> {
    if columns.iter().any(|c| c.name == INSERT_ORDER) {
        return Ok(quote(INSERT_ORDER));
    }
    let key: Vec<String> = sqlx::query_scalar(
        "SELECT kcu.column_name::text FROM information_schema.table_constraints tc \
         JOIN information_schema.key_column_usage kcu \
           ON kcu.constraint_schema = tc.constraint_schema \
          AND kcu.constraint_name = tc.constraint_name \
         WHERE tc.table_schema = current_schema() AND tc.table_name = $1 \
           AND tc.constraint_type = 'PRIMARY KEY' \
         ORDER BY kcu.ordinal_position",
    )
    .bind(table)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    let order: Vec<String> = if key.is_empty() {
        columns.iter().map(|c| quote(&c.name)).collect()
    } else {
        key.iter().map(|k| quote(k)).collect()
    };
    Ok(order.join(", "))
}

/// A load holds keyhold's writer lock, as every write does.
async fn begin_load(pool: &PgPool) -> Result<Transaction<'static, Postgres>, StoreError> {
    let mut tx = pool.begin().await.map_err(db)?;
    take_write_lock(&mut tx).await?;
    Ok(tx)
}

/// Moves each identity column's sequence past the ids loaded, so the next
/// row inserted gets a fresh one.
async fn after_load(conn: &mut PgConnection, tables: &[String]) -> Result<(), StoreError> {
    for table in tables {
        let identity: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 AND is_identity = 'YES'",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
        for column in identity {
            sqlx::query(&format!(
                "SELECT setval(pg_get_serial_sequence($1, $2), \
                 (SELECT COALESCE(MAX({}), 0) + 1 FROM {}), false)",
                quote(&column),
                quote(table)
            ))
            .bind(quote(table))
            .bind(&column)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        }
    }
    Ok(())
}

/// PostgreSQL reads through sqlx: nothing else to read with (its
/// connections are a network's round trip away, whichever thread asks).
struct Readers;

impl Readers {
    fn read<T>(
        &self,
        _: &Query<'_>,
        _: fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
    ) -> Option<Result<Vec<T>, StoreError>> {
        None
    }

    fn close(&self) {}
}

/// Connections per node.
const MAX_CONNECTIONS: u32 = 10;
/// How long a request waits for a free connection, or a new one, before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle connections kept between uses: none. The server may drop a
/// connection at any time; the pool checks each one it hands out, and
/// replaces one that broke (see `crate::pool::Connections`).
const KEEP_IDLE: usize = 0;

/// The advisory lock orders writers in all processes, this one included.
type Serial = ();
type SerialGuard<'a> = &'a ();

/// Nothing to wait for in this process: the advisory lock orders writers.
async fn lock_writers(serial: &Serial) -> SerialGuard<'_> {
    serial
}

/// A write transaction: sqlx's own.
type WriteTransaction<'c> = Transaction<'c, Postgres>;

/// Starts a write transaction on `conn` holding keyhold's writer lock,
/// which the transaction's end releases. The audit chain's head is read
/// when an entry is appended: read with the lock in one statement, it would
/// come from the snapshot taken before the lock was granted.
async fn begin_write<'c>(
    _: &PgPool,
    conn: &'c mut Kept<Postgres>,
) -> Result<(WriteTransaction<'c>, Option<ChainHeadRow>), StoreError> {
    let mut tx = conn.begin().await.map_err(db)?;
    take_write_lock(&mut tx).await?;
    Ok((tx, None))
}

/// Inserts the transaction's audit entries, then commits. On failure the
/// transaction is rolled back.
async fn commit_after(
    mut tx: WriteTransaction<'_>,
    audit: AuditInserts<'_>,
) -> Result<(), StoreError> {
    if let Err(e) = audit.into_batch().run(&mut tx).await {
        roll_back(tx).await;
        return Err(e);
    }
    tx.commit().await.map_err(db)
}

/// Waits for keyhold's writer lock, held until the transaction ends.
async fn take_write_lock(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITE_LOCK_KEY)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}

async fn connect(url: &str) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| unavailable(url, "invalid database URL", &e))?;
    closing_abandoned_transactions(PgPoolOptions::new())
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| unavailable(url, "cannot connect to the database", &e))
}

/// Whether `url` names a PostgreSQL database.
pub(crate) fn accepts(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Connects to the database at `url` and brings its schema up to date. The
/// database must exist; migrations run under sqlx's own advisory lock, so
/// nodes starting together apply each one once.
pub(crate) async fn open(
    url: &str,
    audit_mac: SharedAuditMac,
) -> Result<PostgresStore, StoreError> {
    let pool = connect(url).await?;
    PostgresStore::migrate(pool, &MIGRATOR, url, audit_mac, (), KEEP_IDLE, Readers).await
}
