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
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use crate::DatabaseKind;
use crate::error::db;
use crate::pool::closing_abandoned_transactions;
use crate::url::unavailable;

// The shared queries, compiled for this backend (see sql/mod.rs): loading
// the same files once per backend is the point, not a mistake.
#[allow(clippy::duplicate_mod)]
#[path = "sql/mod.rs"]
mod sql;

pub(crate) use sql::SqlBackend as PostgresStore;

type Db = Postgres;
const KIND: DatabaseKind = DatabaseKind::Postgres;

/// The identity column that records insertion order (migration 0002).
const INSERT_ORDER: &str = "insert_order";

/// The advisory lock key of keyhold's writers: "keyhold" in ASCII. Other
/// applications sharing the database are unlikely to pick the same number.
const WRITE_LOCK_KEY: i64 = 0x006b_6579_686f_6c64;

/// Connections per node.
const MAX_CONNECTIONS: u32 = 10;
/// How long a request waits for a free connection, or a new one, before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The advisory lock orders writers in all processes, this one included.
type Serial = ();
type SerialGuard<'a> = &'a ();

/// Starts a write transaction holding keyhold's writer lock, which the
/// transaction's end releases.
async fn begin_write<'a>(
    pool: &PgPool,
    serial: &'a Serial,
) -> Result<(Transaction<'static, Postgres>, SerialGuard<'a>), StoreError> {
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITE_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    Ok((tx, serial))
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
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| unavailable(url, "invalid database URL", &e))?;
    let pool = closing_abandoned_transactions(PgPoolOptions::new())
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| unavailable(url, "cannot connect to the database", &e))?;
    PostgresStore::migrate(
        pool,
        &sqlx::migrate!("./migrations/postgres"),
        url,
        audit_mac,
        (),
    )
    .await
}
