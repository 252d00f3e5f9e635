//! Statements of one write, sent together where the backend takes several
//! statements in one query ([`BATCHES_STATEMENTS`]: SQLite, where each query
//! is a hand-off to the connection's thread and back), one by one otherwise
//! (PostgreSQL, whose prepared statements hold one statement each).
//!
//! A batch runs inside the caller's write transaction. SQLite runs its
//! statements in order and stops at the first error, as running them one by
//! one would; what the rows changed are then checked in the same order, so
//! the first failure, be it an error or a statement that changed nothing it
//! had to, is the one reported. On SQLite the statements after a failed
//! check have run all the same: the caller returns the failure, which rolls
//! the transaction back, so none of them stays.
//!
//! sqlx marks several statements in one SQLite query as behaviour it may
//! drop; the store's tests run every job commit through it, so an upgrade
//! that drops it fails them, and setting [`BATCHES_STATEMENTS`] to `false`
//! for SQLite is then the way back.

use futures_util::StreamExt;
use keyhold_core::StoreError;
use keyhold_core::cluster::Lease;
use sqlx::{Executor, QueryBuilder};

use super::{BATCHES_STATEMENTS, Conn, Db};
use crate::error::db;

/// What a statement must have changed.
#[derive(Clone, Copy, Debug)]
pub(super) enum Changes<'a> {
    /// Anything, nothing included.
    Any,
    /// A row at least: none means the row is missing ([`StoreError::NotFound`]).
    Row,
    /// A job's row, under `fence` when there is one: none changed means the
    /// fence was lost ([`StoreError::Fenced`]) or, still held, the job is
    /// missing.
    FencedRow(Option<&'a Lease>),
}

impl Changes<'_> {
    /// Whether `rows` changed rows are what the statement had to change.
    async fn check(self, rows: u64, conn: &mut Conn) -> Result<(), StoreError> {
        if rows > 0 {
            return Ok(());
        }
        match self {
            Self::Any => Ok(()),
            Self::Row | Self::FencedRow(None) => Err(StoreError::NotFound),
            Self::FencedRow(Some(lease)) => {
                super::cluster::check_fence(conn, lease).await?;
                Err(StoreError::NotFound)
            }
        }
    }
}

struct Statement<'a> {
    changes: Changes<'a>,
    /// How an error of the statement reads (`db`, or `db_referencing` where
    /// a missing referenced row means not found).
    error: fn(sqlx::Error) -> StoreError,
}

pub(crate) struct Batch<'q> {
    /// SQLite: one query, its statements separated by `;`. PostgreSQL: one
    /// query per statement.
    queries: Vec<QueryBuilder<'q, Db>>,
    statements: Vec<Statement<'q>>,
}

impl<'q> Batch<'q> {
    pub(super) fn new() -> Self {
        Self {
            queries: Vec::new(),
            statements: Vec::new(),
        }
    }

    /// Adds the statement `write` puts into the query (with `push` and
    /// `push_bind`; never `$N` in its text, which the binds number).
    pub(super) fn push(
        &mut self,
        changes: Changes<'q>,
        error: fn(sqlx::Error) -> StoreError,
        write: impl FnOnce(&mut QueryBuilder<'q, Db>),
    ) {
        match self.queries.last_mut() {
            Some(query) if BATCHES_STATEMENTS => {
                query.push("; ");
            }
            _ => self.queries.push(QueryBuilder::new("")),
        }
        if let Some(query) = self.queries.last_mut() {
            write(query);
            self.statements.push(Statement { changes, error });
        }
    }

    /// Ends the batch with `COMMIT`, for a backend that sends it with the
    /// statements before it in one query (SQLite's `commit_after`). Only for
    /// statements whose changes are not checked: a check reads the changes
    /// after its query has run, too late to keep the transaction from
    /// committing.
    #[allow(dead_code, reason = "PostgreSQL commits through sqlx's transaction")]
    pub(crate) fn push_commit(&mut self) {
        self.push(Changes::Any, db, |q| {
            q.push("COMMIT");
        });
    }

    /// Runs the statements on `conn`, in order, and checks what each changed
    /// as soon as its query has run (PostgreSQL refuses every statement of a
    /// transaction after one failed, so a check must not wait for the next).
    pub(crate) async fn run(mut self, conn: &mut Conn) -> Result<(), StoreError> {
        let mut checks = self.statements.iter();
        for query in &mut self.queries {
            let mut changed: Vec<u64> = Vec::new();
            let mut failure = None;
            {
                let mut results = (&mut *conn).execute_many(query.build());
                while let Some(result) = results.next().await {
                    match result {
                        Ok(done) => changed.push(done.rows_affected()),
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    }
                }
            }
            for rows in changed {
                let Some(statement) = checks.next() else {
                    break;
                };
                statement.changes.check(rows, conn).await?;
            }
            if let Some(error) = failure {
                return Err(match checks.next() {
                    Some(statement) => (statement.error)(error),
                    None => db(error),
                });
            }
        }
        Ok(())
    }
}
