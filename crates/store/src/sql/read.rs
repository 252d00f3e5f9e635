//! Reads outside a write transaction: a statement and what it binds
//! ([`Query`]), run where the backend reads fastest. SQLite runs it in place
//! on a connection of the store's own (`sqlite::InPlaceReaders`), on the
//! caller's thread, when one can read now; otherwise, and on PostgreSQL,
//! sqlx runs it.
//!
//! Why: through sqlx, every read on SQLite is a message to the connection's
//! thread and one back, each a thread woken and parked, with every value of
//! every row copied on the way. The reads a request or a job step makes
//! (its session, the settings, a job, a group, a credential, keys) cost
//! more in those hand-offs than in SQLite (docs/benchmarks.md, "Where the
//! time goes"). Writes stay on sqlx's serialized write connection.

use std::borrow::Cow;

use keyhold_core::StoreError;
use keyhold_core::key::Key;
use sqlx::FromRow;

use super::{Db, Pool, Readers};
use crate::error::db;
use crate::rows::{InPlaceRow, KeyRow};

type DbRow = <Db as sqlx::Database>::Row;

/// A statement that reads, its parameters numbered `$1`, `$2`, … in the
/// order they are added.
pub(crate) struct Query<'p> {
    pub(crate) sql: String,
    pub(crate) params: Vec<Param<'p>>,
}

pub(crate) enum Param<'p> {
    Text(Cow<'p, str>),
    Integer(i64),
}

impl<'p> Query<'p> {
    pub(crate) fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    /// Binds the next parameter to `text`.
    pub(crate) fn text(mut self, text: impl Into<Cow<'p, str>>) -> Self {
        self.params.push(Param::Text(text.into()));
        self
    }

    /// Binds the next parameter and says where it goes (`$n`), for a
    /// statement built piece by piece.
    pub(crate) fn bind(&mut self, param: Param<'p>) -> String {
        self.params.push(param);
        format!("${}", self.params.len())
    }
}

/// What a read builds from each row: from the row sqlx read, or in place
/// from the row SQLite's statement stands on.
pub(crate) trait FromRows: Sized {
    fn from_sqlx(row: &DbRow) -> Result<Self, StoreError>;
    fn in_place(row: &rusqlite::Row<'_>) -> Result<Self, StoreError>;
}

impl<R> FromRows for R
where
    R: InPlaceRow + for<'r> FromRow<'r, DbRow>,
{
    fn from_sqlx(row: &DbRow) -> Result<Self, StoreError> {
        R::from_row(row).map_err(db)
    }

    fn in_place(row: &rusqlite::Row<'_>) -> Result<Self, StoreError> {
        InPlaceRow::in_place(row)
    }
}

/// A key is built from its row where the row lies ([`KeyRow`] borrows its
/// text from it): a page of keys reads a thousand text columns.
impl FromRows for Key {
    fn from_sqlx(row: &DbRow) -> Result<Self, StoreError> {
        Key::try_from(KeyRow::from_row(row).map_err(db)?)
    }

    fn in_place(row: &rusqlite::Row<'_>) -> Result<Self, StoreError> {
        KeyRow::in_place(row).and_then(Key::try_from)
    }
}

/// Where reads go: the backend's in-place readers when they can read, the
/// pool otherwise.
#[derive(Clone, Copy)]
pub(super) struct Reads<'a> {
    pub(super) pool: &'a Pool,
    pub(super) readers: &'a Readers,
}

impl Reads<'_> {
    /// Every row the query reads, in its order.
    pub(super) async fn rows<T: FromRows>(self, query: &Query<'_>) -> Result<Vec<T>, StoreError> {
        if let Some(read) = self.readers.read(query, T::in_place) {
            return read;
        }
        let mut statement = sqlx::query(&query.sql);
        for param in &query.params {
            statement = match param {
                Param::Text(text) => statement.bind(text.as_ref()),
                Param::Integer(integer) => statement.bind(*integer),
            };
        }
        let rows = statement.fetch_all(self.pool).await.map_err(db)?;
        rows.iter().map(T::from_sqlx).collect()
    }

    /// The first row the query reads, if any.
    pub(super) async fn first<T: FromRows>(
        self,
        query: &Query<'_>,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.rows(query).await?.into_iter().next())
    }
}
