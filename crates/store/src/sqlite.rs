//! The SQLite backend: one database file in WAL mode, written by one
//! transaction at a time. Its queries are the shared ones in `sql/`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use keyhold_core::StoreError;
use keyhold_core::ports::SharedAuditMac;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use crate::DatabaseKind;
use crate::audit::{ChainHeadRow, chain_head_sql};
use crate::error::{db, sqlite_in_place};
use crate::pool::{IdleList, Kept, closing_abandoned_transactions};
use crate::snapshot::{Column, ColumnKind, quote};
use crate::url::unavailable;

// The shared queries, compiled for this backend (see sql/mod.rs): loading
// the same files once per backend is the point, not a mistake.
#[allow(clippy::duplicate_mod)]
#[path = "sql/mod.rs"]
mod sql;

pub(crate) use sql::SqlBackend as SqliteStore;
pub(crate) use sql::load::{Load as SqliteLoad, latest_version};
use sql::read::{Param, Query};
use sql::{AuditInserts, roll_back};

type Db = Sqlite;
type Readers = InPlaceReaders;
const KIND: DatabaseKind = DatabaseKind::Sqlite;

/// SQLite's implicit row id: insertion order.
const INSERT_ORDER: &str = "rowid";

/// Several statements go in one query (see `sql/batch.rs`): each query is a
/// hand-off to the connection's thread and back, which costs more than the
/// statements a job step writes.
const BATCHES_STATEMENTS: bool = true;

/// Nothing to add to a `SELECT` that locks the rows it reads: SQLite has no
/// row locks, and a write transaction holds the database's write lock from
/// its `BEGIN IMMEDIATE`.
const FOR_UPDATE: &str = "";

/// The schema's migrations, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

// What a backup's snapshot and a restore's load need of the schema.

/// Every table (SQLite's own left out).
const TABLES_SQL: &str = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'";
/// A table's columns and their declared types, in order.
const COLUMNS_SQL: &str = "SELECT name, type FROM pragma_table_info($1) ORDER BY cid";
/// A deferred transaction reads one WAL snapshot from its first read on.
const SNAPSHOT_BEGIN: &str = "BEGIN";
/// SQLite inserts into any column it is given.
const INSERT_OVERRIDING: &str = "";

/// The snapshot's type of a column: STRICT tables declare one of SQLite's
/// storage classes (booleans are INTEGER, 0 or 1).
fn column_kind(declared: &str) -> Option<ColumnKind> {
    match declared.to_ascii_uppercase().as_str() {
        "INTEGER" | "INT" | "BIGINT" => Some(ColumnKind::Int64),
        "REAL" | "DOUBLE" | "FLOAT" => Some(ColumnKind::Real64),
        "TEXT" => Some(ColumnKind::Text),
        "BLOB" => Some(ColumnKind::Bytes),
        _ => None,
    }
}

/// Rows go out in insertion order, which the loader's inserts keep; those
/// of a table without rowid (`keys`, stored in its primary key's order) in
/// that order.
async fn row_order(
    conn: &mut SqliteConnection,
    table: &str,
    _: &[Column],
) -> Result<String, StoreError> {
    let without_rowid: Option<bool> =
        sqlx::query_scalar("SELECT wr FROM pragma_table_list($1) WHERE schema = 'main'")
            .bind(table)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
    if without_rowid != Some(true) {
        return Ok(INSERT_ORDER.to_owned());
    }
    let key: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info($1) WHERE pk > 0 ORDER BY pk")
            .bind(table)
            .fetch_all(conn)
            .await
            .map_err(db)?;
    Ok(key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", "))
}

/// A load holds the write lock from its first statement.
async fn begin_load(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, StoreError> {
    pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)
}

/// Nothing to set after a load: AUTOINCREMENT follows the ids inserted.
async fn after_load(_: &mut SqliteConnection, _: &[String]) -> Result<(), StoreError> {
    Ok(())
}

/// Connections of this process's own to the database file that read in
/// place: on the calling task's thread, each statement kept prepared,
/// building what they read from SQLite's own buffers (see `sql/read.rs`
/// for which reads, and why not through sqlx).
///
/// Rules:
/// - the connections only read (`query_only`), under WAL, which never makes
///   a reader wait for a writer, and a read begun after a write committed
///   sees it;
/// - they never wait for a lock (`busy_timeout` 0), so the caller's thread
///   never blocks on one: a read SQLite answers `SQLITE_BUSY` (a crashed
///   writer's recovery, another process's exclusive lock) goes through
///   sqlx instead, whose thread waits;
/// - an in-memory database has no file to open: sqlx reads it;
/// - a connection that fails is dropped, not kept; closed with the store.
pub(crate) struct InPlaceReaders {
    /// The database file; `None` for an in-memory database.
    file: Option<PathBuf>,
    idle: IdleList<rusqlite::Connection>,
}

/// Idle reader connections kept: more than the runtime's threads, which
/// bound how many read at once.
const IDLE_READERS: usize = 8;

/// Why a reader did not read.
enum NotRead {
    /// SQLite answered `SQLITE_BUSY`: sqlx's connection reads it instead.
    Busy,
    Failed(StoreError),
}

impl InPlaceReaders {
    fn new(file: Option<PathBuf>) -> Self {
        Self {
            file,
            idle: IdleList::new(IDLE_READERS),
        }
    }

    /// The rows `query` reads, each built by `build`, or `None` when sqlx
    /// must read them (see the rules above).
    fn read<T>(
        &self,
        query: &Query<'_>,
        build: fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
    ) -> Option<Result<Vec<T>, StoreError>> {
        let file = self.file.as_ref()?;
        // Closed with the store: sqlx refuses the read.
        let conn = match self.idle.take().ok()? {
            Some(conn) => conn,
            None => match open_reader(file) {
                Ok(conn) => conn,
                Err(e) if is_busy(&e) => return None,
                Err(e) => return Some(Err(sqlite_in_place(e))),
            },
        };
        match rows_in_place(&conn, query, build) {
            Ok(rows) => {
                self.idle.give_back(conn);
                Some(Ok(rows))
            }
            Err(NotRead::Busy) => {
                self.idle.give_back(conn);
                None
            }
            // Dropped: a connection that failed is not trusted again.
            Err(NotRead::Failed(e)) => Some(Err(e)),
        }
    }

    fn close(&self) {
        self.idle.close();
    }
}

fn open_reader(file: &Path) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    // Not SQLITE_OPEN_READ_ONLY: a read-only connection cannot create the
    // WAL's shared-memory file when no other connection holds it open.
    let conn = rusqlite::Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::ZERO)?;
    conn.pragma_update(None, "query_only", true)?;
    // One plan for a statement whatever it binds: with ANALYZE's statistics
    // (an operator's `PRAGMA optimize`), SQLite would otherwise prepare a
    // kept statement again for each new cursor.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    // Every statement the store reads in place stays prepared.
    conn.set_prepared_statement_cache_capacity(PREPARED_READS);
    Ok(conn)
}

/// Statements a reader keeps prepared: more than the store reads in place.
const PREPARED_READS: usize = 32;

fn is_busy(error: &rusqlite::Error) -> bool {
    error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
}

fn rows_in_place<T>(
    conn: &rusqlite::Connection,
    query: &Query<'_>,
    build: fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, NotRead> {
    let failed = |e: rusqlite::Error| {
        if is_busy(&e) {
            NotRead::Busy
        } else {
            NotRead::Failed(sqlite_in_place(e))
        }
    };
    let mut statement = conn.prepare_cached(&query.sql).map_err(failed)?;
    for (place, param) in query.params.iter().enumerate() {
        let name = format!("${}", place + 1);
        let index = statement
            .parameter_index(&name)
            .map_err(failed)?
            .ok_or_else(|| {
                NotRead::Failed(StoreError::Unavailable(format!(
                    "the statement has no {name}"
                )))
            })?;
        match param {
            Param::Text(text) => statement.raw_bind_parameter(index, text.as_ref()),
            Param::Integer(integer) => statement.raw_bind_parameter(index, integer),
        }
        .map_err(failed)?;
    }
    let mut built = Vec::new();
    let mut rows = statement.raw_query();
    while let Some(row) = rows.next().map_err(failed)? {
        built.push(build(row).map_err(NotRead::Failed)?);
    }
    Ok(built)
}

/// How long a statement waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows a connection's thread may hand over before the task reading them
/// has taken any: more than a page of the largest listing a client asks
/// for (1,000, plus the row that says there is more). sqlx's default, 50,
/// parks the thread halfway through a page of 100 until the reader wakes
/// it; streamed reads (snapshots, exports) are still held to this many
/// rows in memory.
const ROW_BUFFER: usize = 1024;
/// Connections kept for a file database: readers run in parallel under WAL.
const MAX_CONNECTIONS: u32 = 8;
/// Of those, how many the store keeps idle between uses (see
/// `crate::pool::Connections`): a connection is a thread of this process
/// on a local file, which nothing can cut off as a network can. The pool
/// keeps the rest for snapshots.
const KEEP_IDLE: usize = MAX_CONNECTIONS as usize - 2;

/// Serialises this process's writers so they queue here instead of spinning
/// in SQLite's busy handler; `BEGIN IMMEDIATE` still guards against writers
/// in other processes.
type Serial = Mutex<()>;
type SerialGuard<'a> = MutexGuard<'a, ()>;

/// This process's turn to write.
async fn lock_writers(serial: &Serial) -> SerialGuard<'_> {
    serial.lock().await
}

/// The write lock, then the audit chain's head it keeps still, in one query.
const BEGIN_READING_CHAIN_HEAD: &str = concat!("BEGIN IMMEDIATE; ", chain_head_sql!());

/// Starts a write transaction on `conn` that holds SQLite's write lock from
/// its first statement, so the audit chain's head, read in the same query
/// (one hand-off to the connection's thread for both), cannot move under it.
async fn begin_write<'c>(
    #[allow(unused_variables)] pool: &SqlitePool,
    conn: &'c mut Kept<Sqlite>,
) -> Result<(WriteTransaction<'c>, Option<ChainHeadRow>), StoreError> {
    // Open until it is known not to be: a BEGIN whose task is cancelled
    // half-way may have run, and so may a BEGIN whose query then failed.
    // Dropped open, the transaction dooms its connection.
    let mut tx = WriteTransaction { conn, open: true };
    let head = sqlx::query_as(BEGIN_READING_CHAIN_HEAD)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
    #[cfg(feature = "storage-limit")]
    storage_limit::apply(pool, &mut tx).await?;
    Ok((tx, Some(head)))
}

/// Inserts the transaction's audit entries and commits in the same query
/// (`COMMIT` its last statement): one hand-off for both. On failure the
/// transaction is rolled back.
async fn commit_after(
    mut tx: WriteTransaction<'_>,
    audit: AuditInserts<'_>,
) -> Result<(), StoreError> {
    let mut last = audit.into_batch();
    last.push_commit();
    match last.run(&mut tx).await {
        Ok(()) => {
            tx.open = false;
            Ok(())
        }
        // Before `COMMIT` ran, or by it: either way `ROLLBACK` leaves no
        // transaction open, and one that fails (none was open) dooms the
        // connection as the transaction is dropped.
        Err(e) => {
            roll_back(tx).await;
            Err(e)
        }
    }
}

/// A write transaction begun and ended with plain `BEGIN IMMEDIATE` and
/// `COMMIT` statements. sqlx's own transaction commands make the
/// connection's thread wait until the caller has taken each answer, one more
/// hand-off each way for every `BEGIN` and every `COMMIT`, which a store
/// that commits every step of every job pays often; and each is a query of
/// its own, where these ride with the statements beside them. sqlx does not
/// know of this transaction, so dropped while open (a cancelled task, a
/// failed `COMMIT`) it dooms its connection: closed rather than reused,
/// which rolls the transaction back.
pub(crate) struct WriteTransaction<'c> {
    conn: &'c mut Kept<Sqlite>,
    open: bool,
}

impl WriteTransaction<'_> {
    pub(crate) async fn rollback(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("ROLLBACK").execute(&mut *self).await?;
        self.open = false;
        Ok(())
    }
}

impl std::ops::Deref for WriteTransaction<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.conn
    }
}

impl std::ops::DerefMut for WriteTransaction<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn
    }
}

impl Drop for WriteTransaction<'_> {
    fn drop(&mut self) {
        if self.open {
            self.conn.doom();
        }
    }
}

/// Test hook (feature `storage-limit`, never in a release build): a real
/// `SQLITE_FULL` on demand. While a file named like the database plus
/// [`storage_limit::MARKER`] exists beside it, every write transaction may
/// not grow the database beyond its size at the transaction's start
/// (`PRAGMA max_page_count`, which SQLite keeps per connection, so each
/// transaction sets it on its own); without the file there is no limit. The
/// database then answers a change that needs a new page as a full disk would.
#[cfg(feature = "storage-limit")]
pub mod storage_limit {
    use keyhold_core::StoreError;
    use sqlx::{SqliteConnection, SqlitePool};

    use crate::error::db;

    /// Appended to the database's file name: `keyhold.db` → `keyhold.db.full`.
    pub const MARKER: &str = ".full";

    /// The marker file of the database at `database`.
    pub fn marker(database: &std::path::Path) -> std::path::PathBuf {
        let mut name = database.as_os_str().to_owned();
        name.push(MARKER);
        name.into()
    }

    pub(super) async fn apply(
        pool: &SqlitePool,
        conn: &mut SqliteConnection,
    ) -> Result<(), StoreError> {
        let database = pool.connect_options().get_filename().to_owned();
        let limit: i64 = if marker(&database).exists() {
            let row: (i64,) = sqlx::query_as("SELECT page_count FROM pragma_page_count()")
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?;
            row.0
        } else {
            // SQLite's largest, which it lowers to its compiled-in maximum.
            i64::from(u32::MAX - 1)
        };
        let pragma = format!("PRAGMA max_page_count = {limit}");
        sqlx::query(&pragma).execute(&mut *conn).await.map_err(db)?;
        Ok(())
    }
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
    // `:memory:` has its one connection, which stays in the pool.
    let memory = is_memory(url);
    let keep = if memory { 0 } else { KEEP_IDLE };
    let file = (!memory).then(|| pool.connect_options().get_filename().to_owned());
    let readers = InPlaceReaders::new(file);
    SqliteStore::migrate(
        pool,
        &MIGRATOR,
        url,
        audit_mac,
        Mutex::new(()),
        keep,
        readers,
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
        .busy_timeout(BUSY_TIMEOUT)
        .row_buffer_size(ROW_BUFFER);
    // A read-only open creates nothing.
    if !is_memory(url) && !url.contains("mode=ro") {
        private_database_files(options.get_filename())
            .map_err(|e| unavailable("cannot create the database file privately", &e))?;
    }
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

/// Mode of the database and its `-wal` and `-shm` files: they hold password
/// hashes and sealed secrets, for keyhold's user alone.
const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates the database file with mode 0600 before SQLite opens it, and
/// narrows an existing one (and its `-wal`/`-shm` files) to 0600. SQLite would
/// create it 0644 under the usual umask; it creates the `-wal` and `-shm` files
/// later with the database file's own mode, so this one file decides all three.
fn private_database_files(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.as_os_str().is_empty() {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = std::path::Path::new(&name);
        let Ok(meta) = std::fs::metadata(file) else {
            continue;
        };
        if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use sqlx::Connection;

    fn mode(path: &std::path::Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn the_database_and_its_wal_and_shm_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyhold.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE probe (x)")
            .execute(&pool)
            .await
            .unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let file = dir.path().join(format!("keyhold.db{suffix}"));
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        pool.close().await;

        // A database an older release left readable is narrowed when opened.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let pool = connect(&path.display().to_string()).await.unwrap();
        assert_eq!(mode(&path), 0o600);
        pool.close().await;
    }

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

    /// A reader never waits for a lock: while another connection holds the
    /// database (here a rollback-journal database under `BEGIN EXCLUSIVE`,
    /// which stops readers as a crashed writer's recovery would under WAL),
    /// the page is left to sqlx; once it lets go, the reader reads it.
    #[test]
    fn a_page_the_database_is_busy_for_is_left_to_sqlx_then_read_in_place() {
        use keyhold_core::clock::{Timestamp, format_timestamp};
        use keyhold_core::key::{Key, KeyPage};

        use sql::read::FromRows;

        use crate::rows::KEY_COLUMNS;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyhold.db");
        let holder = rusqlite::Connection::open(&path).unwrap();
        let at = format_timestamp(&Timestamp::from_timestamp(5, 0).unwrap());
        let id = uuid::Uuid::new_v4();
        holder
            .execute_batch(&format!(
                "CREATE TABLE keys ({KEY_COLUMNS}); \
                 INSERT INTO keys VALUES ('{id}', 'payments', 1, NULL, '57CF', '{at}', NULL, \
                 'enabled', x'00', '{at}', NULL, 'current', 0);"
            ))
            .unwrap();
        let readers = InPlaceReaders::new(Some(path));
        let page = KeyPage {
            group: None,
            after: None,
            limit: 100,
        };
        let query = sql::keys::page_query(&page);
        let read = || readers.read(&query, <Key as FromRows>::in_place);

        holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
        assert!(read().is_none(), "busy: left to sqlx");
        holder.execute_batch("COMMIT").unwrap();
        let keys = read().unwrap().unwrap();
        assert_eq!(keys.iter().map(|k| k.id).collect::<Vec<_>>(), [id]);

        readers.close();
        assert!(read().is_none(), "closed with the store");
    }
}
