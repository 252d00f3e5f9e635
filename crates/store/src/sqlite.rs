//! The SQLite backend: one database file in WAL mode, written by one
//! transaction at a time. Its queries are the shared ones in `sql/`.

use std::str::FromStr;
use std::time::Duration;

use keyhold_core::StoreError;
use keyhold_core::ports::SharedAuditMac;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use crate::DatabaseKind;
use crate::error::db;
use crate::pool::closing_abandoned_transactions;
use crate::url::unavailable;

// The shared queries, compiled for this backend (see sql/mod.rs): loading
// the same files once per backend is the point, not a mistake.
#[allow(clippy::duplicate_mod)]
#[path = "sql/mod.rs"]
mod sql;

pub(crate) use sql::SqlBackend as SqliteStore;

type Db = Sqlite;
const KIND: DatabaseKind = DatabaseKind::Sqlite;

/// SQLite's implicit row id: insertion order.
const INSERT_ORDER: &str = "rowid";

/// How long a statement waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections kept for a file database: readers run in parallel under WAL.
const MAX_CONNECTIONS: u32 = 8;

/// Serialises this process's writers so they queue here instead of spinning
/// in SQLite's busy handler; `BEGIN IMMEDIATE` still guards against writers
/// in other processes.
type Serial = Mutex<()>;
type SerialGuard<'a> = MutexGuard<'a, ()>;

/// Starts a write transaction that holds SQLite's write lock from its first
/// statement, so the chain head it reads cannot move under it.
async fn begin_write<'a>(
    pool: &SqlitePool,
    serial: &'a Serial,
) -> Result<(Transaction<'static, Sqlite>, SerialGuard<'a>), StoreError> {
    let guard = serial.lock().await;
    let tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    Ok((tx, guard))
}

/// Whether `url` names a SQLite database (a `sqlite:` URL or a plain path).
pub(crate) fn accepts(url: &str) -> bool {
    !url.contains("://") || url.starts_with("sqlite:")
}

fn is_memory(url: &str) -> bool {
    let rest = url.strip_prefix("sqlite:").unwrap_or(url);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    rest.starts_with(":memory:") || rest.contains("mode=memory")
}

/// Opens (creating when missing) the database at `url` and brings its schema up to date.
pub(crate) async fn open(url: &str, audit_mac: SharedAuditMac) -> Result<SqliteStore, StoreError> {
    let pool = connect(url).await?;
    SqliteStore::migrate(
        pool,
        &sqlx::migrate!("./migrations/sqlite"),
        url,
        audit_mac,
        Mutex::new(()),
    )
    .await
}

async fn connect(url: &str) -> Result<SqlitePool, StoreError> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| unavailable(url, what, e);
    let options = if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url).map_err(|e| unavailable("invalid database URL", &e))?
    } else {
        SqliteConnectOptions::new().filename(url)
    };
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    let pool_options = if is_memory(url) {
        // Each connection to `:memory:` would be a database of its own:
        // keep exactly one, for ever.
        SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        closing_abandoned_transactions(SqlitePoolOptions::new()).max_connections(MAX_CONNECTIONS)
    };
    pool_options
        .connect_with(options)
        .await
        .map_err(|e| unavailable("cannot open the database", &e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use sqlx::Connection;

    #[tokio::test]
    async fn a_transaction_abandoned_by_a_cancelled_task_does_not_keep_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("keyhold.db").display().to_string();
        let pool = connect(&url).await.unwrap();
        let mut abandoned = pool.acquire().await.unwrap();
        let tx = abandoned.begin_with("BEGIN IMMEDIATE").await.unwrap();
        // What a task cancelled between BEGIN and its guard leaves behind: an
        // open write transaction nobody will roll back.
        std::mem::forget(tx);
        drop(abandoned);

        // Whichever connection the pool hands out, a writer gets the lock
        // (within the busy timeout) and can commit.
        for _ in 0..MAX_CONNECTIONS {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
            sqlx::query("CREATE TABLE IF NOT EXISTS probe (x)")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }
}
