//! Loading a backup's snapshot into a new database (a restore), table by
//! table, in one write transaction: a load that stops half-way (a crash, a
//! refused row, a dropped [`Load`]) leaves no row behind, and can be run
//! again on the same database.
//!
//! The database is first brought to exactly the backup's schema version, so
//! the snapshot's columns are those of its tables; the remaining migrations
//! run after the commit, converting the loaded rows as they would convert
//! an older installation's.

use std::collections::HashSet;

use keyhold_core::StoreError;
use keyhold_core::backup::SnapshotValue;
use sqlx::migrate::{Migrate, MigrateError};
use sqlx::{QueryBuilder, Transaction};

use super::snapshot::{schema_version, table_columns, table_exists};
use super::{Conn, Db, INSERT_OVERRIDING, MIGRATOR, SqlxPool, after_load, begin_load, connect};
use crate::error::db;
use crate::restore::{LoadError, LoadSummary};
use crate::snapshot::{Bound, Column, SNAPSHOT_TABLES, bind_value, quote};
use crate::url::mask_url;

/// Parameters per insert statement: well under SQLite's (32766) and
/// PostgreSQL's (65535) limits.
const BATCH_PARAMETERS: usize = 8_000;
/// Rows per insert statement, however narrow the table.
const MAX_BATCH_ROWS: usize = 500;

pub(crate) struct Load {
    pool: SqlxPool,
    tx: Transaction<'static, Db>,
    masked_url: String,
    schema_version: i64,
    table: Option<TableLoad>,
    loaded: Vec<(String, u64)>,
}

/// The table being loaded, with the rows not inserted yet.
struct TableLoad {
    name: String,
    columns: Vec<Column>,
    /// `INSERT INTO t (c, …)`, up to `VALUES`.
    insert: String,
    batch: Vec<Vec<SnapshotValue>>,
    batch_rows: usize,
    rows: u64,
}

impl std::fmt::Debug for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Load")
            .field("url", &self.masked_url)
            .field("schema_version", &self.schema_version)
            .field("table", &self.table.as_ref().map(|t| &t.name))
            .finish_non_exhaustive()
    }
}

/// The newest schema version this build knows.
pub(crate) fn latest_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

impl Load {
    pub(crate) async fn begin(url: &str, schema_version: i64) -> Result<Self, LoadError> {
        let latest = latest_version();
        if schema_version > latest {
            return Err(LoadError::Schema(format!(
                "the backup is of schema version {schema_version}, newer than this keyhold knows \
                 (up to {latest}): restore it with the keyhold release that made it, or a later one"
            )));
        }
        if !MIGRATOR.version_exists(schema_version) {
            return Err(LoadError::Schema(format!(
                "the backup names schema version {schema_version}, which no keyhold release has: \
                 its header is damaged"
            )));
        }
        let masked_url = mask_url(url);
        let pool = connect(url).await?;
        let prepared = async {
            let mut conn = pool.acquire().await.map_err(db)?;
            refuse_installation(&mut conn, &masked_url).await?;
            let current = schema_version_of(&mut conn).await?;
            if current > schema_version {
                return Err(LoadError::Schema(format!(
                    "the database at {masked_url} was set up by keyhold up to schema version \
                     {current}, beyond the backup's {schema_version}: restore into a new, empty \
                     database"
                )));
            }
            migrate_to(&mut conn, schema_version).await?;
            drop(conn);
            let mut tx = begin_load(&pool).await?;
            // Again under the write lock: nobody set it up in between.
            refuse_installation(&mut tx, &masked_url).await?;
            Ok(tx)
        }
        .await;
        match prepared {
            Ok(tx) => Ok(Self {
                pool,
                tx,
                masked_url,
                schema_version,
                table: None,
                loaded: Vec::new(),
            }),
            Err(e) => {
                pool.close().await;
                Err(e)
            }
        }
    }

    pub(crate) async fn table(&mut self, name: &str, columns: &[String]) -> Result<(), LoadError> {
        self.end_table().await?;
        let version = self.schema_version;
        if !SNAPSHOT_TABLES.contains(&name) {
            return Err(LoadError::Snapshot(format!(
                "the backup holds a table '{name}', which no keyhold backup carries: it is \
                 damaged, or not keyhold's"
            )));
        }
        if self.loaded.iter().any(|(t, _)| t == name) {
            return Err(LoadError::Snapshot(format!(
                "the backup holds table {name} twice: it is damaged"
            )));
        }
        let target = table_columns(&mut self.tx, name).await?;
        if target.is_empty() {
            return Err(LoadError::Snapshot(format!(
                "the backup holds table {name}, which keyhold's schema version {version} does not \
                 have: the backup does not match the schema version it names"
            )));
        }
        let mut picked: Vec<Column> = Vec::with_capacity(columns.len());
        for column in columns {
            let Some(found) = target.iter().find(|t| &t.name == column) else {
                return Err(LoadError::Snapshot(format!(
                    "the backup's table {name} has a column '{column}' that the table does not \
                     have at schema version {version}: the backup does not match the schema \
                     version it names"
                )));
            };
            if picked.iter().any(|p| &p.name == column) {
                return Err(LoadError::Snapshot(format!(
                    "the backup's table {name} names column {column} twice: it is damaged"
                )));
            }
            picked.push(found.clone());
        }
        if picked.is_empty() {
            return Err(LoadError::Snapshot(format!(
                "the backup's table {name} has no columns: it is damaged"
            )));
        }
        let insert = format!(
            "INSERT INTO {} ({}){INSERT_OVERRIDING} ",
            quote(name),
            picked
                .iter()
                .map(|c| quote(&c.name))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let batch_rows = (BATCH_PARAMETERS / picked.len()).clamp(1, MAX_BATCH_ROWS);
        self.table = Some(TableLoad {
            name: name.to_owned(),
            columns: picked,
            insert,
            batch: Vec::with_capacity(batch_rows),
            batch_rows,
            rows: 0,
        });
        Ok(())
    }

    pub(crate) async fn row(&mut self, values: Vec<SnapshotValue>) -> Result<(), LoadError> {
        let Some(table) = self.table.as_mut() else {
            return Err(LoadError::Snapshot(
                "the backup holds a row before any table: it is damaged".into(),
            ));
        };
        if values.len() != table.columns.len() {
            return Err(LoadError::Snapshot(format!(
                "a row of table {} has {} values for {} columns: the backup is damaged",
                table.name,
                values.len(),
                table.columns.len()
            )));
        }
        table.batch.push(values);
        if table.batch.len() >= table.batch_rows {
            self.flush().await?;
        }
        Ok(())
    }

    /// Commits every row, then brings the schema up to this build's.
    pub(crate) async fn finish(mut self) -> Result<LoadSummary, LoadError> {
        self.end_table().await?;
        let tables: Vec<String> = self.loaded.iter().map(|(t, _)| t.clone()).collect();
        after_load(&mut self.tx, &tables).await?;
        self.tx.commit().await.map_err(db)?;
        let loaded_at = self.schema_version;
        let migrated = MIGRATOR.run(&self.pool).await;
        self.pool.close().await;
        migrated.map_err(|e| {
            StoreError::Unavailable(format!(
                "the backup is loaded (at schema version {loaded_at}), but the migrations after it \
                 failed: {e}; opening the database with keyhold runs them again"
            ))
        })?;
        Ok(LoadSummary {
            loaded_at,
            schema_version: latest_version(),
            rows: self.loaded,
        })
    }

    /// Inserts what is left of the current table and closes it.
    async fn end_table(&mut self) -> Result<(), LoadError> {
        self.flush().await?;
        if let Some(done) = self.table.take() {
            self.loaded.push((done.name, done.rows));
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), LoadError> {
        let Some(table) = self.table.as_mut() else {
            return Ok(());
        };
        if table.batch.is_empty() {
            return Ok(());
        }
        let rows = table
            .batch
            .drain(..)
            .map(|row| {
                row.into_iter()
                    .zip(&table.columns)
                    .map(|(value, column)| bind_value(&table.name, column, value))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let count = rows.len() as u64;
        let mut qb = QueryBuilder::<Db>::new(table.insert.clone());
        qb.push_values(rows, |mut b, row| {
            for value in row {
                match value {
                    Bound::Int64(v) => b.push_bind(v),
                    Bound::Int32(v) => b.push_bind(v),
                    Bound::Int16(v) => b.push_bind(v),
                    Bound::Real64(v) => b.push_bind(v),
                    Bound::Real32(v) => b.push_bind(v),
                    Bound::Text(v) => b.push_bind(v),
                    Bound::Bytes(v) => b.push_bind(v),
                    Bound::Bool(v) => b.push_bind(v),
                };
            }
        });
        qb.build().execute(&mut *self.tx).await.map_err(|e| {
            LoadError::Snapshot(format!(
                "the database refused rows {}..{} of table {}: {}",
                table.rows + 1,
                table.rows + count,
                table.name,
                db(e)
            ))
        })?;
        table.rows += count;
        Ok(())
    }
}

/// The newest migration applied, 0 for a database without any.
async fn schema_version_of(conn: &mut Conn) -> Result<i64, StoreError> {
    Ok(schema_version(conn).await?.unwrap_or(0))
}

/// Refuses a database that holds an identity or an audit entry: a restore
/// never writes over an installation.
async fn refuse_installation(conn: &mut Conn, masked_url: &str) -> Result<(), LoadError> {
    let mut held = Vec::new();
    for (table, what) in [("identities", "identities"), ("audit_log", "audit entries")] {
        if !table_exists(conn, table).await? {
            continue;
        }
        let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", quote(table)))
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
        if count > 0 {
            held.push(format!("{what}: {count}"));
        }
    }
    if held.is_empty() {
        return Ok(());
    }
    Err(LoadError::NotEmpty(format!(
        "the database at {masked_url} already holds a keyhold installation ({}): a restore never \
         writes over one. Restore into a new, empty database (a new SQLite file, or a database \
         made with CREATE DATABASE on the PostgreSQL server) and point keyhold at it",
        held.join(", ")
    )))
}

/// Applies the migrations up to `target` and no further.
async fn migrate_to(conn: &mut Conn, target: i64) -> Result<(), LoadError> {
    let failed = |e: MigrateError| {
        LoadError::Store(StoreError::Unavailable(format!(
            "cannot migrate the database to schema version {target}: {e}"
        )))
    };
    conn.lock().await.map_err(failed)?;
    let applied = async {
        conn.ensure_migrations_table().await?;
        if let Some(version) = conn.dirty_version().await? {
            return Err(MigrateError::Dirty(version));
        }
        let done: HashSet<i64> = conn
            .list_applied_migrations()
            .await?
            .into_iter()
            .map(|m| m.version)
            .collect();
        for migration in MIGRATOR.iter() {
            if migration.version <= target
                && !migration.migration_type.is_down_migration()
                && !done.contains(&migration.version)
            {
                conn.apply(migration).await?;
            }
        }
        Ok(())
    }
    .await;
    let unlocked = conn.unlock().await;
    applied.map_err(failed)?;
    unlocked.map_err(failed)
}
