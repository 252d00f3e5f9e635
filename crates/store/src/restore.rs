//! Restoring a backup's database snapshot: [`Loader`] writes the tables a
//! [`Store::export_snapshot`](keyhold_core::ports::Store::export_snapshot)
//! read, on either backend, into a new database on either backend (a SQLite
//! backup restores into PostgreSQL and back).
//!
//! Not part of the [`Store`](keyhold_core::ports::Store) port: a restore
//! runs before there is an installation, on a database nothing else uses.
//!
//! ```text
//! let mut loader = Loader::begin(url, summary.schema_version).await?;
//! loader.table("identities", &columns).await?;
//! loader.row(values).await?;          // … every row, every table, in order
//! loader.finish().await?;             // one commit, then the later migrations
//! ```

use async_trait::async_trait;
use keyhold_core::StoreError;
use keyhold_core::backup::{SnapshotItem, SnapshotSink, SnapshotValue};

use crate::DatabaseKind;
use crate::postgres::PostgresLoad;
use crate::sqlite::SqliteLoad;

pub use crate::snapshot::{EXCLUDED_TABLES, SNAPSHOT_TABLES};

/// Why a load was refused or failed. Nothing was committed.
#[derive(Debug)]
pub enum LoadError {
    /// The database holds an installation already (an identity or an audit
    /// entry): a restore never writes over one.
    NotEmpty(String),
    /// The backup's schema version does not allow it here: newer than this
    /// build knows, or older than the database's.
    Schema(String),
    /// The snapshot does not fit the schema it names (an unknown table or
    /// column, a row of the wrong width, a value of the wrong type, rows the
    /// database refused).
    Snapshot(String),
    /// The database failed.
    Store(StoreError),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotEmpty(why) | Self::Schema(why) | Self::Snapshot(why) => f.write_str(why),
            Self::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LoadError {}

impl From<StoreError> for LoadError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// What a finished load wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadSummary {
    /// The schema version the rows were loaded at: the backup's.
    pub loaded_at: i64,
    /// The database's schema version after the later migrations ran.
    pub schema_version: i64,
    /// Rows per table, in the order they were loaded.
    pub rows: Vec<(String, u64)>,
}

/// The newest schema version this build's migrations reach on `kind`
/// (both backends have the same versions).
pub fn latest_schema_version(kind: DatabaseKind) -> i64 {
    match kind {
        DatabaseKind::Sqlite => crate::sqlite::latest_version(),
        DatabaseKind::Postgres => crate::postgres::latest_version(),
    }
}

/// Loads a snapshot into a new database, all in one transaction.
///
/// [`Loader::begin`] refuses a database that holds an installation (any
/// identity or audit entry) and a backup of a newer schema than this build
/// knows, then migrates the database to exactly the backup's schema version.
/// Tables then come in the snapshot's order ([`Loader::table`], then its
/// rows with [`Loader::row`]); values convert by the target column's type
/// (integers and booleans both ways), and are inserted in batches.
/// [`Loader::finish`] commits it all at once and runs the remaining
/// migrations. Dropped before `finish` (or after an error), it leaves no row
/// behind: the database can be loaded again.
#[derive(Debug)]
pub struct Loader {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Sqlite(SqliteLoad),
    Postgres(PostgresLoad),
}

impl Loader {
    /// Opens the database at `database_url` (any URL [`crate::connect`]
    /// takes; a SQLite file is created when missing) for a load of a
    /// snapshot taken at `schema_version`.
    pub async fn begin(database_url: &str, schema_version: i64) -> Result<Self, LoadError> {
        let inner = match DatabaseKind::of(database_url).map_err(StoreError::Unavailable)? {
            DatabaseKind::Sqlite => {
                Inner::Sqlite(SqliteLoad::begin(database_url, schema_version).await?)
            }
            DatabaseKind::Postgres => {
                Inner::Postgres(PostgresLoad::begin(database_url, schema_version).await?)
            }
        };
        Ok(Self { inner })
    }

    /// Starts the next table: its rows follow, with values in `columns`' order.
    pub async fn table(&mut self, name: &str, columns: &[String]) -> Result<(), LoadError> {
        match &mut self.inner {
            Inner::Sqlite(l) => l.table(name, columns).await,
            Inner::Postgres(l) => l.table(name, columns).await,
        }
    }

    /// One row of the current table.
    pub async fn row(&mut self, values: Vec<SnapshotValue>) -> Result<(), LoadError> {
        match &mut self.inner {
            Inner::Sqlite(l) => l.row(values).await,
            Inner::Postgres(l) => l.row(values).await,
        }
    }

    /// A table or a row, as the snapshot sent it.
    pub async fn item(&mut self, item: SnapshotItem) -> Result<(), LoadError> {
        match item {
            SnapshotItem::Table { name, columns } => self.table(&name, &columns).await,
            SnapshotItem::Row(values) => self.row(values).await,
        }
    }

    /// Commits every row, then runs the migrations after the backup's
    /// schema version.
    pub async fn finish(self) -> Result<LoadSummary, LoadError> {
        match self.inner {
            Inner::Sqlite(l) => l.finish().await,
            Inner::Postgres(l) => l.finish().await,
        }
    }
}

/// A store's snapshot straight into a load (a copy from one database to
/// another). What the loader refuses reaches the snapshot as a
/// [`StoreError::Corrupt`] with the loader's words.
#[async_trait]
impl SnapshotSink for Loader {
    async fn item(&mut self, item: SnapshotItem) -> Result<(), StoreError> {
        Loader::item(self, item).await.map_err(|e| match e {
            LoadError::Store(e) => e,
            other => StoreError::Corrupt(other.to_string()),
        })
    }
}
