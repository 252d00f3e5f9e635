//! What both backends' connection pools share.

use sqlx::pool::PoolOptions;
use sqlx::{Connection, Database};

/// Closes, rather than reuses, a connection that comes back to its pool
/// still inside a transaction. That happens when the task that began it is
/// cancelled (a client hung up, a job was halted) after the database ran
/// `BEGIN` but before sqlx handed out the guard that would roll it back.
/// Kept, such a connection would hold SQLite's write lock, or PostgreSQL's
/// locks, until the process ends, and every other writer would time out;
/// closed, the database rolls the transaction back.
pub(crate) fn closing_abandoned_transactions<DB: Database>(
    options: PoolOptions<DB>,
) -> PoolOptions<DB> {
    options.after_release(|connection, _| {
        let reusable = !connection.is_in_transaction();
        Box::pin(async move { Ok(reusable) })
    })
}
