//! What both backends' connection pools share: closing connections left
//! inside a transaction, [`Connections`], the store's way to its pool, and
//! [`IdleList`], the connections kept between uses.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use sqlx::pool::{PoolConnection, PoolOptions};
use sqlx::{Connection, Database, Describe, Either, Execute, Executor, Pool};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// Uses of a kept connection before it goes back through the pool, which
/// checks it (a ping on release and on the next acquire) and drops it if
/// it broke: a connection that failed for good is not kept for long.
const USES_BETWEEN_CHECKS: u32 = 256;

/// The store's connections: its sqlx pool, with up to `keep` idle
/// connections held here between uses instead of going back to the pool.
///
/// sqlx's pool checks a connection with a round trip to it each time it is
/// handed out and each time it comes back, and returns it from a task of its
/// own. For SQLite each round trip is a hand-off to the connection's thread
/// and back: two of them around every statement read outside a transaction
/// and around every transaction, most of a rotation's thread hand-offs. A
/// connection in this process cannot be cut off as a network peer can, so
/// SQLite keeps connections here (checked again every
/// [`USES_BETWEEN_CHECKS`] uses, or at once after a failure that is not the
/// database refusing a statement). PostgreSQL keeps none (`keep` 0): its
/// server may drop a connection at any time, and the pool's check then
/// gives the request a fresh one.
///
/// Callers take their turns first come, first served: with connections
/// kept here, a caller waiting inside the pool would only be served once a
/// connection went back to it, which the callers after it, finding one kept
/// here, would keep from happening (under load, a few requests waited
/// seconds while the rest took a few milliseconds). So at most `keep`
/// connections are out of the pool through here at once, each with a turn
/// of a fair semaphore, and the pool, larger than `keep`, always has one for
/// a caller holding a turn.
///
/// `&Connections` runs statements as `&Pool` does, one connection per
/// statement; [`Connections::take`] lends one for several.
pub(crate) struct Connections<DB: Database> {
    pool: Pool<DB>,
    keep: usize,
    /// `keep` turns, when connections are kept (`None` for `keep` 0: the
    /// pool's own queue is fair).
    turns: Option<Arc<Semaphore>>,
    idle: IdleList<Kept<DB>>,
}

/// Connections kept idle between uses, at most `keep`, until closed: the
/// last given back is the next taken (its pages are the warmest).
pub(crate) struct IdleList<T> {
    keep: usize,
    state: Mutex<IdleState<T>>,
}

struct IdleState<T> {
    items: Vec<T>,
    /// Closing: nothing is kept any more.
    closed: bool,
}

/// What [`IdleList::take`] answers once the list is closed.
#[derive(Debug)]
pub(crate) struct Closed;

impl<T> IdleList<T> {
    pub(crate) fn new(keep: usize) -> Self {
        Self {
            keep,
            state: Mutex::new(IdleState {
                items: Vec::with_capacity(keep),
                closed: false,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, IdleState<T>> {
        // Every critical section leaves the list whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A kept connection, if there is one.
    pub(crate) fn take(&self) -> Result<Option<T>, Closed> {
        let mut state = self.state();
        if state.closed {
            return Err(Closed);
        }
        Ok(state.items.pop())
    }

    /// Keeps `item` for the next [`Self::take`], unless the list is closed
    /// or full: then it is dropped (closed), outside the lock.
    pub(crate) fn give_back(&self, item: T) {
        let refused = {
            let mut state = self.state();
            if state.closed || state.items.len() >= self.keep {
                Some(item)
            } else {
                state.items.push(item);
                None
            }
        };
        drop(refused);
    }

    /// Drops every kept connection; nothing is kept from now on.
    pub(crate) fn close(&self) {
        let kept = {
            let mut state = self.state();
            state.closed = true;
            std::mem::take(&mut state.items)
        };
        drop(kept);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state().items.len()
    }
}

impl<DB: Database> std::fmt::Debug for Connections<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("pool", &self.pool)
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl<DB: Database> Connections<DB> {
    /// `keep` must stay below the pool's size: what the pool has left serves
    /// those that use it directly (snapshots), and no connection kept here
    /// is ever lent to them.
    pub(crate) fn new(pool: Pool<DB>, keep: usize) -> Self {
        Self {
            pool,
            keep,
            turns: (keep > 0).then(|| Arc::new(Semaphore::new(keep))),
            idle: IdleList::new(keep),
        }
    }

    /// The pool itself, for what holds a connection long (a snapshot).
    pub(crate) fn sqlx(&self) -> &Pool<DB> {
        &self.pool
    }

    /// A connection, to [`Self::give_back`] when done: a kept one when there
    /// is one, otherwise one from the pool. Dropped instead (its task
    /// cancelled), it goes back to the pool, which checks it, and closes it
    /// when it is still inside a transaction.
    pub(crate) async fn take(&self) -> Result<Kept<DB>, sqlx::Error> {
        let turn = match &self.turns {
            Some(turns) => Some(
                turns
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| sqlx::Error::PoolClosed)?,
            ),
            None => None,
        };
        // Closed, the pool refuses below as it would.
        let kept = self.idle.take().ok().flatten();
        Ok(match kept {
            Some(mut kept) => {
                kept.uses += 1;
                kept.turn = turn;
                kept
            }
            None => Kept {
                connection: self.pool.acquire().await?,
                uses: 1,
                doomed: false,
                turn,
            },
        })
    }

    /// Keeps the connection for the next use, unless it may have broken
    /// (`failed`), is due for the pool's check, or is still inside a
    /// transaction: those go back to the pool, which checks or closes them.
    pub(crate) fn give_back(&self, mut kept: Kept<DB>, failed: bool) {
        if failed
            || kept.doomed
            || kept.uses >= USES_BETWEEN_CHECKS
            || kept.connection.is_in_transaction()
        {
            return;
        }
        // The turn ends once the connection is back in the list, so that
        // the next caller finds it there rather than asking the pool: the
        // connections out of the pool stay within `keep`.
        let turn = kept.turn.take();
        self.idle.give_back(kept);
        drop(turn);
    }

    /// [`Self::give_back`] after a statement's outcome: an error other than
    /// the database refusing the statement may mean a broken connection.
    pub(crate) fn give_back_after<T>(&self, kept: Kept<DB>, outcome: &Result<T, sqlx::Error>) {
        let failed = outcome
            .as_ref()
            .err()
            .is_some_and(|e| !matches!(e, sqlx::Error::Database(_) | sqlx::Error::RowNotFound));
        self.give_back(kept, failed);
    }

    /// Gives every kept connection back and closes the pool, waiting for
    /// those in use.
    pub(crate) async fn close(&self) {
        if let Some(turns) = &self.turns {
            turns.close();
        }
        self.idle.close();
        self.pool.close().await;
    }
}

/// A connection out of [`Connections`].
pub(crate) struct Kept<DB: Database> {
    connection: PoolConnection<DB>,
    /// Uses since the pool last checked it.
    uses: u32,
    /// Left in a state nobody may inherit: closed when let go.
    doomed: bool,
    /// The caller's turn (see [`Connections`]), while it is in use.
    turn: Option<OwnedSemaphorePermit>,
}

impl<DB: Database> Kept<DB> {
    /// Closes the connection when it is let go, instead of keeping it or
    /// giving it back to the pool: for a transaction begun with a plain
    /// `BEGIN`, which sqlx does not know of, left open by a cancelled task.
    /// Closing it rolls the transaction back.
    pub(crate) fn doom(&mut self) {
        self.doomed = true;
        self.connection.close_on_drop();
    }
}

impl<DB: Database> std::ops::Deref for Kept<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.connection
    }
}

impl<DB: Database> std::ops::DerefMut for Kept<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.connection
    }
}

impl<DB: Database> std::fmt::Debug for Kept<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept")
            .field("uses", &self.uses)
            .finish_non_exhaustive()
    }
}

/// One connection per statement, as `&Pool` runs them.
impl<'p, DB: Database> Executor<'p> for &'p Connections<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    type Database = DB;

    /// The statement's results are read whole before they are handed on, as
    /// every query of the store's reads them anyway (a snapshot, which
    /// streams, goes to the pool itself).
    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<DB::QueryResult, DB::Row>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, DB>,
    {
        let all = async move {
            let mut kept = self.take().await?;
            let all: Result<Vec<_>, sqlx::Error> = kept.fetch_many(query).try_collect().await;
            self.give_back_after(kept, &all);
            all
        };
        futures_util::stream::once(all)
            .map_ok(|all| futures_util::stream::iter(all.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<DB::Row>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, DB>,
    {
        Box::pin(async move {
            let mut kept = self.take().await?;
            let row = kept.fetch_optional(query).await;
            self.give_back_after(kept, &row);
            row
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [DB::TypeInfo],
    ) -> BoxFuture<'e, Result<DB::Statement<'q>, sqlx::Error>>
    where
        'p: 'e,
    {
        Box::pin(async move {
            let mut kept = self.take().await?;
            let statement = kept.prepare_with(sql, parameters).await;
            self.give_back_after(kept, &statement);
            statement
        })
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<DB>, sqlx::Error>>
    where
        'p: 'e,
    {
        Box::pin(async move {
            let mut kept = self.take().await?;
            let described = kept.describe(sql).await;
            self.give_back_after(kept, &described);
            described
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use sqlx::{Sqlite, SqlitePool};

    use super::*;

    async fn file_pool(dir: &tempfile::TempDir, size: u32) -> SqlitePool {
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("keyhold.db"))
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(5));
        closing_abandoned_transactions(SqlitePoolOptions::new())
            .max_connections(size)
            .connect_with(options)
            .await
            .unwrap()
    }

    /// Whether `conn` is the connection that created the temporary table
    /// `mark` (temporary tables belong to their connection).
    async fn made_mark(conn: &mut sqlx::SqliteConnection) -> bool {
        sqlx::query("SELECT 1 FROM temp.mark")
            .fetch_optional(conn)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_connection_given_back_is_used_again() {
        let dir = tempfile::tempdir().unwrap();
        let connections = Connections::<Sqlite>::new(file_pool(&dir, 4).await, 2);
        let mut conn = connections.take().await.unwrap();
        sqlx::query("CREATE TEMP TABLE mark (x)")
            .execute(&mut *conn)
            .await
            .unwrap();
        connections.give_back(conn, false);
        let mut again = connections.take().await.unwrap();
        assert!(made_mark(&mut again).await);
        // Statements on `&Connections` take the kept one too.
        connections.give_back(again, false);
        let marked: Option<(i64,)> = sqlx::query_as("SELECT COUNT(*) FROM temp.mark")
            .fetch_optional(&connections)
            .await
            .unwrap();
        assert_eq!(marked, Some((0,)));
        connections.close().await;
    }

    #[tokio::test]
    async fn a_connection_that_failed_or_is_due_for_a_check_goes_back_to_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let connections = Connections::<Sqlite>::new(file_pool(&dir, 4).await, 2);
        for failed in [true, false] {
            let mut conn = connections.take().await.unwrap();
            sqlx::query("CREATE TEMP TABLE IF NOT EXISTS mark (x)")
                .execute(&mut *conn)
                .await
                .unwrap();
            if !failed {
                conn.uses = USES_BETWEEN_CHECKS;
            }
            connections.give_back(conn, failed);
            // Not kept: the next one comes from the pool, checked.
            assert!(connections.idle.len() == 0);
            let next = connections.take().await.unwrap();
            assert_eq!(next.uses, 1);
            drop(next);
        }
        connections.close().await;
    }

    #[tokio::test]
    async fn a_transaction_left_open_does_not_keep_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let connections = Connections::<Sqlite>::new(file_pool(&dir, 4).await, 3);
        sqlx::query("CREATE TABLE probe (x)")
            .execute(&connections)
            .await
            .unwrap();
        // What a task cancelled between BEGIN and its guard leaves behind:
        // an open write transaction nobody will roll back, given back.
        let mut abandoned = connections.take().await.unwrap();
        let tx = abandoned.begin_with("BEGIN IMMEDIATE").await.unwrap();
        std::mem::forget(tx);
        connections.give_back(abandoned, false);
        // And one whose task was cancelled with the connection in hand.
        let mut dropped = connections.take().await.unwrap();
        let tx = dropped.begin_with("BEGIN IMMEDIATE").await.unwrap();
        drop(tx);
        drop(dropped);
        // Neither is kept, and every writer after them gets the lock.
        for i in 0..6 {
            let mut conn = connections.take().await.unwrap();
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
            sqlx::query("INSERT INTO probe (x) VALUES ($1)")
                .bind(i)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            connections.give_back(conn, false);
        }
        let count: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM probe")
            .fetch_one(&connections)
            .await
            .unwrap();
        assert_eq!(count.0, 6);
        connections.close().await;
    }

    #[tokio::test]
    async fn at_most_keep_connections_are_out_and_the_pool_serves_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let connections = Connections::<Sqlite>::new(file_pool(&dir, 3).await, 2);
        let taken = [
            connections.take().await.unwrap(),
            connections.take().await.unwrap(),
        ];
        // A third caller waits for a turn rather than for the pool.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), connections.take())
                .await
                .is_err()
        );
        for conn in taken {
            connections.give_back(conn, false);
        }
        assert_eq!(connections.idle.len(), 2);
        // The pool still has one to lend.
        let direct = tokio::time::timeout(Duration::from_secs(5), connections.sqlx().acquire())
            .await
            .unwrap()
            .unwrap();
        drop(direct);
        // Closing gives the kept ones back, and waits for the one in use,
        // which is then not kept.
        let in_use = connections.take().await.unwrap();
        let closing = connections.close();
        tokio::pin!(closing);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut closing)
                .await
                .is_err()
        );
        connections.give_back(in_use, false);
        assert!(connections.idle.len() == 0);
        tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .unwrap();
        // Once closed, a caller is told so instead of waiting.
        assert!(matches!(
            connections.take().await,
            Err(sqlx::Error::PoolClosed)
        ));
    }

    /// Under load every caller is served in its turn: the one that waited
    /// first gets the next connection given back, not one that came later
    /// and found it kept here.
    #[tokio::test]
    async fn callers_are_served_first_come_first_served() {
        let dir = tempfile::tempdir().unwrap();
        let connections = Arc::new(Connections::<Sqlite>::new(file_pool(&dir, 2).await, 1));
        let held = connections.take().await.unwrap();
        // The pool's other connection, in use elsewhere (a snapshot's): only
        // the one kept here serves the callers below.
        let snapshot = connections.sqlx().acquire().await.unwrap();
        let served = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for caller in 0..16 {
            let connections = connections.clone();
            let served = served.clone();
            waiters.push(tokio::spawn(async move {
                let conn = connections.take().await.unwrap();
                served.lock().unwrap().push(caller);
                tokio::task::yield_now().await;
                connections.give_back(conn, false);
            }));
            // Each waits in line before the next one comes (this test's
            // runtime has one thread: the sleep lets the caller run).
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        connections.give_back(held, false);
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(*served.lock().unwrap(), (0..16).collect::<Vec<_>>());
        drop(snapshot);
        connections.close().await;
    }
}
