//! The one place where database errors become [`StoreError`]s. Constraint
//! violations are recognised by the driver's classification, and a database
//! that cannot record changes (storage full, out of memory, read-only) by the
//! backend's own error code, never by message text, so the mapping holds for
//! every backend and every server language.

use keyhold_core::{StoreError, WriteRefusal};
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::postgres::PgDatabaseError;
use sqlx::sqlite::SqliteError;

/// What a foreign key violation means for the statement that raised it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ForeignKey {
    /// Deleting a row that others still refer to.
    Referenced,
    /// Writing a row that refers to one that does not exist.
    Referencing,
}

pub(crate) fn map_db_error(error: sqlx::Error, foreign_key: ForeignKey) -> StoreError {
    match error {
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation => StoreError::Duplicate,
            ErrorKind::ForeignKeyViolation => match foreign_key {
                ForeignKey::Referenced => StoreError::InUse,
                ForeignKey::Referencing => StoreError::NotFound,
            },
            _ => match write_refusal(db.as_ref()) {
                Some(refusal) => StoreError::CannotWrite {
                    refusal,
                    detail: db.to_string(),
                },
                None => {
                    StoreError::Unavailable(format!("the database refused the statement: {db}"))
                }
            },
        },
        sqlx::Error::RowNotFound => StoreError::NotFound,
        e @ (sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }) => StoreError::Corrupt(e.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// SQLite's primary result codes (<https://www.sqlite.org/rescode.html>):
/// the low byte of the extended code the driver reports.
const SQLITE_READONLY: i32 = 8;
const SQLITE_FULL: i32 = 13;

/// Why the database refuses to record changes, when its error says so: by
/// SQLite's result code or PostgreSQL's SQLSTATE.
fn write_refusal(error: &dyn DatabaseError) -> Option<WriteRefusal> {
    let code = error.code()?;
    if error.try_downcast_ref::<SqliteError>().is_some() {
        sqlite_write_refusal(code.parse().ok()?)
    } else if error.try_downcast_ref::<PgDatabaseError>().is_some() {
        postgres_write_refusal(&code)
    } else {
        None
    }
}

/// SQLite: `SQLITE_FULL` (the disk is full, or the database reached its
/// `max_page_count`), `SQLITE_READONLY` with any of its extended codes (a
/// read-only file or directory, a database moved or replaced underneath).
/// `SQLITE_NOMEM` is left out: it means this process is out of memory, which
/// no readiness check survives.
fn sqlite_write_refusal(extended_code: i32) -> Option<WriteRefusal> {
    match extended_code & 0xff {
        SQLITE_FULL => Some(WriteRefusal::StorageFull),
        SQLITE_READONLY => Some(WriteRefusal::ReadOnly),
        _ => None,
    }
}

/// PostgreSQL (<https://www.postgresql.org/docs/current/errcodes-appendix.html>):
/// `disk_full` (53100), `out_of_memory` (53200), `read_only_sql_transaction`
/// (25006: a hot standby, or `default_transaction_read_only`).
fn postgres_write_refusal(sqlstate: &str) -> Option<WriteRefusal> {
    match sqlstate {
        "53100" => Some(WriteRefusal::StorageFull),
        "53200" => Some(WriteRefusal::OutOfMemory),
        "25006" => Some(WriteRefusal::ReadOnly),
        _ => None,
    }
}

/// For statements where a foreign key violation can only mean the row is still referenced.
pub(crate) fn db(error: sqlx::Error) -> StoreError {
    map_db_error(error, ForeignKey::Referenced)
}

/// For inserts and updates of rows that refer to another (a group's credential, a key's group).
pub(crate) fn db_referencing(error: sqlx::Error) -> StoreError {
    map_db_error(error, ForeignKey::Referencing)
}

/// A statement SQLite refused to a connection of keyhold's own
/// (`sqlite::InPlaceReaders`); the values of its rows are checked where they
/// are read, as corrupt data.
pub(crate) fn sqlite_in_place(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("the database refused the statement: {error}"))
}

pub(crate) fn corrupt(table: &str, column: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{table}.{column}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_codes_that_refuse_writes_are_classified() {
        assert_eq!(sqlite_write_refusal(13), Some(WriteRefusal::StorageFull));
        // SQLITE_READONLY and its extended codes: _RECOVERY, _CANTLOCK,
        // _ROLLBACK, _DBMOVED, _CANTINIT, _DIRECTORY.
        for code in [8, 264, 520, 776, 1032, 1288, 1544] {
            assert_eq!(sqlite_write_refusal(code), Some(WriteRefusal::ReadOnly));
        }
        // Constraints (19, 2067 unique), busy (5), I/O errors (10, 778
        // write), out of memory (7) and corruption (11) are something else.
        for code in [1, 5, 7, 10, 11, 19, 778, 2067] {
            assert_eq!(sqlite_write_refusal(code), None, "{code}");
        }
    }

    #[test]
    fn postgres_sqlstates_that_refuse_writes_are_classified() {
        assert_eq!(
            postgres_write_refusal("53100"),
            Some(WriteRefusal::StorageFull)
        );
        assert_eq!(
            postgres_write_refusal("53200"),
            Some(WriteRefusal::OutOfMemory)
        );
        assert_eq!(
            postgres_write_refusal("25006"),
            Some(WriteRefusal::ReadOnly)
        );
        // Too many connections (53300), a unique violation (23505), a
        // serialization failure (40001), an admin shutdown (57P01).
        for sqlstate in ["53300", "23505", "40001", "57P01", "53000"] {
            assert_eq!(postgres_write_refusal(sqlstate), None, "{sqlstate}");
        }
    }
}
