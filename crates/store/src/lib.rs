//! keyhold's persistence: [`connect`] opens a SQL database and returns the
//! core's [`Store`] port on it, as a [`SqlStore`].
//!
//! SQLite is the embedded default; PostgreSQL serves several nodes sharing one
//! database. Each backend module (`sqlite`, `postgres`) holds only what
//! differs: connecting, its writer lock, its migrations folder. Everything
//! else is shared: the queries and audited transactions in `sql/` (compiled
//! into each backend, each of which implements [`Store`] and [`SqlStore`]
//! itself, so callers reach it through the trait object with no forwarding
//! layer), `rows` converts between columns and domain types, `audit` seals
//! entries and builds the audit filter, `error` classifies database errors.
//! `snapshot` says what a backup's snapshot carries; [`restore`] loads one
//! into a new database.
//! SQL text uses `$N` placeholders, which both accept.

mod audit;
mod error;
mod pool;
mod postgres;
pub mod restore;
mod rows;
mod snapshot;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;
mod url;

use std::sync::Arc;

use async_trait::async_trait;
use keyhold_core::StoreError;
use keyhold_core::ports::{SharedAuditMac, Store};

pub use url::mask_url;

#[cfg(feature = "storage-limit")]
pub use sqlite::storage_limit;

/// The store over a SQL database, chosen by the URL given to [`connect`]:
/// the [`Store`] port plus what only its owner needs. `Debug` shows the
/// database kind and its URL with any password masked.
#[async_trait]
pub trait SqlStore: Store + std::fmt::Debug {
    /// Closes every connection, waiting for those in use to be returned.
    async fn close(&self);
}

/// The kinds of database a URL may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseKind {
    /// `sqlite://PATH`, `sqlite:PATH`, `sqlite::memory:` or a plain file path.
    Sqlite,
    /// `postgres://…` or `postgresql://…`.
    Postgres,
}

impl DatabaseKind {
    /// The kind of database `url` names, or an error that names the URL
    /// (password masked) and the forms keyhold accepts.
    pub fn of(url: &str) -> Result<Self, String> {
        if postgres::accepts(url) {
            Ok(Self::Postgres)
        } else if sqlite::accepts(url) {
            Ok(Self::Sqlite)
        } else {
            Err(format!(
                "unsupported database URL {}: use sqlite://PATH (or a file path) for SQLite, \
                 or postgres://USER@HOST/DATABASE for PostgreSQL",
                mask_url(url)
            ))
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Opens the database at `url` and brings its schema up to date.
///
/// `url` is `sqlite://path?mode=rwc`, `sqlite:path` or a plain file path
/// (the file is created when missing), or `postgres://user@host/database`
/// (the database must exist). Audit entries written through the store are
/// sealed with `audit_mac`. Errors never show a password from `url`.
pub async fn connect(
    url: &str,
    audit_mac: SharedAuditMac,
) -> Result<Arc<dyn SqlStore>, StoreError> {
    let store: Arc<dyn SqlStore> = match DatabaseKind::of(url).map_err(StoreError::Unavailable)? {
        DatabaseKind::Sqlite => Arc::new(sqlite::open(url, audit_mac).await?),
        DatabaseKind::Postgres => Arc::new(postgres::open(url, audit_mac).await?),
    };
    Ok(store)
}
