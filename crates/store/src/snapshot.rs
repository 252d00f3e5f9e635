//! What a snapshot carries, independent of the backend: which tables, in
//! which order, and how a column's values become [`SnapshotValue`]s and back.
//!
//! The tables are listed, not discovered, so their order is the one foreign
//! keys need (a table after those it references) on both backends alike;
//! the export refuses a database with a table that is neither listed nor
//! excluded, so a migration that adds one cannot leave it out of backups
//! unnoticed. Columns are discovered from each table, so a migration that
//! adds a column needs no change here.

use keyhold_core::StoreError;
use keyhold_core::backup::SnapshotValue;

use crate::restore::LoadError;

/// Every table a snapshot carries, referenced tables first.
pub const SNAPSHOT_TABLES: &[&str] = &[
    "identities",
    "password_history",
    "credentials",
    "key_groups",
    "keys",
    "settings",
    "audit_log",
    "audit_archives",
    "jobs",
    "job_messages",
    "approval_requests",
    "approval_votes",
    "drift_findings",
    "drift_checks",
    "audit_stream_cursors",
    "backups",
    "xks_stores",
    "xks_credentials",
    "xks_keys",
];

/// Tables a snapshot leaves out: what belongs to the running installation
/// (logins, the nodes and their leases, the write probe's scratch row, the
/// XKS revision) and the migrations' own bookkeeping, which the loader
/// writes itself.
///
/// `xks_revision` is rebuilt rather than carried: it only tells the nodes
/// serving from a database that it changed since they last read it, and
/// nodes on a restored database start with nothing cached. Migration 0014
/// creates its one row (at 0) whether it runs before the load (a backup at
/// schema 14 or later) or after it (an older backup), so a carried row
/// would collide with it; and a restored database, a new one, owes no
/// continuity to the old one's count.
pub const EXCLUDED_TABLES: &[&str] = &[
    "sessions",
    "nodes",
    "leases",
    "write_probe",
    "xks_revision",
    "_sqlx_migrations",
];

/// A column's type, as the snapshot reads and the loader binds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    Int64,
    Int32,
    Int16,
    Real64,
    Real32,
    Text,
    Bytes,
    Bool,
}

impl ColumnKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Int64 | Self::Int32 | Self::Int16 => "an integer",
            Self::Real64 | Self::Real32 => "a real number",
            Self::Text => "text",
            Self::Bytes => "bytes",
            Self::Bool => "a boolean",
        }
    }
}

/// A table's column as the database declares it.
#[derive(Clone, Debug)]
pub(crate) struct Column {
    pub name: String,
    pub kind: ColumnKind,
}

/// A column whose type the snapshot cannot carry: the schema has a type
/// neither backend's mapping knows (a migration added one).
pub(crate) fn unknown_type(table: &str, column: &str, declared: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "{table}.{column} has type '{declared}', which a backup cannot carry: \
         map it in keyhold-store's column types (sqlite.rs / postgres.rs `column_kind`)"
    ))
}

/// `name` as a quoted SQL identifier. Names reaching SQL are those of the
/// schema (checked against it first), quoted all the same.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One value ready to bind, typed by its target column (a NULL too: a
/// PostgreSQL parameter has a type even when it is NULL).
#[derive(Debug)]
pub(crate) enum Bound {
    Int64(Option<i64>),
    Int32(Option<i32>),
    Int16(Option<i16>),
    Real64(Option<f64>),
    Real32(Option<f32>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
    Bool(Option<bool>),
}

/// Converts a snapshot's value for a column of type `kind`. Booleans and
/// integers convert both ways (SQLite keeps booleans as 0 and 1); anything
/// else must already be of the column's type.
pub(crate) fn bind_value(
    table: &str,
    column: &Column,
    value: SnapshotValue,
) -> Result<Bound, LoadError> {
    let out_of_range = |v: i64| {
        LoadError::Snapshot(format!(
            "{table}.{}: {v} does not fit the column's integer type",
            column.name
        ))
    };
    let bound = match (column.kind, value) {
        (ColumnKind::Int64, SnapshotValue::Null) => Bound::Int64(None),
        (ColumnKind::Int32, SnapshotValue::Null) => Bound::Int32(None),
        (ColumnKind::Int16, SnapshotValue::Null) => Bound::Int16(None),
        (ColumnKind::Real64, SnapshotValue::Null) => Bound::Real64(None),
        (ColumnKind::Real32, SnapshotValue::Null) => Bound::Real32(None),
        (ColumnKind::Text, SnapshotValue::Null) => Bound::Text(None),
        (ColumnKind::Bytes, SnapshotValue::Null) => Bound::Bytes(None),
        (ColumnKind::Bool, SnapshotValue::Null) => Bound::Bool(None),

        (ColumnKind::Int64, SnapshotValue::Integer(v)) => Bound::Int64(Some(v)),
        (ColumnKind::Int32, SnapshotValue::Integer(v)) => {
            Bound::Int32(Some(i32::try_from(v).map_err(|_| out_of_range(v))?))
        }
        (ColumnKind::Int16, SnapshotValue::Integer(v)) => {
            Bound::Int16(Some(i16::try_from(v).map_err(|_| out_of_range(v))?))
        }
        (ColumnKind::Bool, SnapshotValue::Integer(v @ (0 | 1))) => Bound::Bool(Some(v == 1)),
        (ColumnKind::Bool, SnapshotValue::Integer(v)) => {
            return Err(LoadError::Snapshot(format!(
                "{table}.{}: {v} is not a boolean (0 or 1)",
                column.name
            )));
        }

        (ColumnKind::Bool, SnapshotValue::Bool(v)) => Bound::Bool(Some(v)),
        (ColumnKind::Int64, SnapshotValue::Bool(v)) => Bound::Int64(Some(i64::from(v))),
        (ColumnKind::Int32, SnapshotValue::Bool(v)) => Bound::Int32(Some(i32::from(v))),
        (ColumnKind::Int16, SnapshotValue::Bool(v)) => Bound::Int16(Some(i16::from(v))),

        (ColumnKind::Real64, SnapshotValue::Real(v)) => Bound::Real64(Some(v)),
        // A REAL column of SQLite's read as f64 may land in a PostgreSQL
        // `real`: the narrowing is the target schema's choice.
        #[allow(clippy::cast_possible_truncation)]
        (ColumnKind::Real32, SnapshotValue::Real(v)) => Bound::Real32(Some(v as f32)),

        (ColumnKind::Text, SnapshotValue::Text(v)) => Bound::Text(Some(v)),
        (ColumnKind::Bytes, SnapshotValue::Bytes(v)) => Bound::Bytes(Some(v)),

        (kind, value) => {
            return Err(LoadError::Snapshot(format!(
                "{table}.{}: the backup holds {} where the column holds {}",
                column.name,
                describe_value(&value),
                kind.describe()
            )));
        }
    };
    Ok(bound)
}

fn describe_value(value: &SnapshotValue) -> &'static str {
    match value {
        SnapshotValue::Null => "NULL",
        SnapshotValue::Integer(_) => "an integer",
        SnapshotValue::Real(_) => "a real number",
        SnapshotValue::Text(_) => "text",
        SnapshotValue::Bytes(_) => "bytes",
        SnapshotValue::Bool(_) => "a boolean",
    }
}

/// Refuses a schema table that is neither carried nor excluded.
pub(crate) fn check_covered(tables: &[String]) -> Result<(), StoreError> {
    let unknown: Vec<&str> = tables
        .iter()
        .map(String::as_str)
        .filter(|t| !SNAPSHOT_TABLES.contains(t) && !EXCLUDED_TABLES.contains(t))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(StoreError::Corrupt(format!(
        "table(s) {} are neither carried by a backup nor excluded from it: a migration added \
         them without listing them in keyhold-store's SNAPSHOT_TABLES or EXCLUDED_TABLES \
         (src/snapshot.rs), so a backup would silently leave them out",
        unknown.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn column(kind: ColumnKind) -> Column {
        Column {
            name: "c".into(),
            kind,
        }
    }

    #[test]
    fn booleans_and_integers_convert_by_the_target_column() {
        let b = bind_value("t", &column(ColumnKind::Bool), SnapshotValue::Integer(1)).unwrap();
        assert!(matches!(b, Bound::Bool(Some(true))));
        let b = bind_value("t", &column(ColumnKind::Int64), SnapshotValue::Bool(false)).unwrap();
        assert!(matches!(b, Bound::Int64(Some(0))));
        let b = bind_value("t", &column(ColumnKind::Int32), SnapshotValue::Integer(7)).unwrap();
        assert!(matches!(b, Bound::Int32(Some(7))));
        let b = bind_value("t", &column(ColumnKind::Text), SnapshotValue::Null).unwrap();
        assert!(matches!(b, Bound::Text(None)));
    }

    #[test]
    fn values_that_do_not_fit_the_column_are_refused_by_name() {
        let e = bind_value("t", &column(ColumnKind::Bool), SnapshotValue::Integer(2)).unwrap_err();
        assert!(e.to_string().contains("t.c"), "{e}");
        let e = bind_value(
            "t",
            &column(ColumnKind::Int32),
            SnapshotValue::Integer(1 << 40),
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
        let e = bind_value(
            "t",
            &column(ColumnKind::Int64),
            SnapshotValue::Text("1".into()),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("holds text where the column holds an integer"),
            "{e}"
        );
    }

    #[test]
    fn tables_are_listed_once_and_never_both_carried_and_excluded() {
        let mut all: Vec<&str> = SNAPSHOT_TABLES
            .iter()
            .chain(EXCLUDED_TABLES)
            .copied()
            .collect();
        all.sort_unstable();
        let before = all.len();
        all.dedup();
        assert_eq!(all.len(), before);
        assert!(check_covered(&["keys".into(), "sessions".into()]).is_ok());
        let e = check_covered(&["keys".into(), "new_table".into()]).unwrap_err();
        assert!(e.to_string().contains("new_table"), "{e}");
    }
}
