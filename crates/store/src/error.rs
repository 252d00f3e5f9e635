//! The one place where database errors become [`StoreError`]s. Constraint
//! violations are recognised by the driver's classification, never by message
//! text, so the mapping holds for every backend and every server language.

use keyhold_core::StoreError;
use sqlx::error::ErrorKind;

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
            _ => StoreError::Unavailable(format!("the database refused the statement: {db}")),
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

/// For statements where a foreign key violation can only mean the row is still referenced.
pub(crate) fn db(error: sqlx::Error) -> StoreError {
    map_db_error(error, ForeignKey::Referenced)
}

/// For inserts and updates of rows that refer to another (a group's credential, a key's group).
pub(crate) fn db_referencing(error: sqlx::Error) -> StoreError {
    map_db_error(error, ForeignKey::Referencing)
}

pub(crate) fn corrupt(table: &str, column: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{table}.{column}: {why}"))
}
