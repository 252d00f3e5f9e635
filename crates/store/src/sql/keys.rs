use keyhold_core::StoreError;
use keyhold_core::cloud::aws::{KeyMaterialId, KmsKeyId};
use keyhold_core::key::{Key, KeyPage};
use keyhold_core::names::GroupName;

use sqlx::FromRow as _;

use super::batch::{Batch, Changes};
use super::{Conn, Db, Pool};
use crate::error::{db, db_referencing};
use crate::rows::{KEY_COLUMNS as COLUMNS, KeyRow, opt_ts, read_u32, ts};

const VALUES: &str = "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// A page walks the `(group_name, version)` key from the cursor: each page
/// costs the same however deep into the listing it is. The backend reads
/// it (`read_keys_page`), or has sqlx read it row by row ([`by_rows`]).
pub(crate) async fn by_rows(pool: &Pool, query: &PageQuery<'_>) -> Result<Vec<Key>, StoreError> {
    let mut statement = sqlx::query(&query.sql);
    for param in &query.params {
        statement = match *param {
            PageParam::Text(text) => statement.bind(text),
            PageParam::Integer(integer) => statement.bind(integer),
        };
    }
    let rows = statement.fetch_all(pool).await.map_err(db)?;
    rows.iter().map(key_of).collect()
}

/// A page's statement, its columns [`COLUMNS`], and what it binds.
pub(crate) struct PageQuery<'p> {
    pub(crate) sql: String,
    /// Bound in order, the first to `$1`.
    pub(crate) params: Vec<PageParam<'p>>,
}

pub(crate) enum PageParam<'p> {
    Text(&'p str),
    Integer(i64),
}

impl<'p> PageQuery<'p> {
    pub(crate) fn of(page: &'p KeyPage) -> Self {
        let mut sql = format!("SELECT {COLUMNS} FROM keys WHERE TRUE");
        let mut params = Vec::with_capacity(4);
        // `$n`, the place of the parameter it pushes.
        let mut bind = |param| {
            params.push(param);
            format!("${}", params.len())
        };
        if let Some(group) = &page.group {
            let group = bind(PageParam::Text(group.as_str()));
            sql.push_str(&format!(" AND group_name = {group}"));
        }
        if let Some(cursor) = &page.after {
            let group = bind(PageParam::Text(cursor.group.as_str()));
            let version = bind(PageParam::Integer(i64::from(cursor.version)));
            sql.push_str(&format!(
                " AND (group_name, version) > ({group}, {version})"
            ));
        }
        let limit = bind(PageParam::Integer(i64::from(page.limit)));
        sql.push_str(&format!(" ORDER BY group_name, version LIMIT {limit}"));
        Self { sql, params }
    }
}

/// The key in a row of [`COLUMNS`] sqlx read, read in place ([`KeyRow`]
/// borrows its text from the row).
fn key_of(row: &<Db as sqlx::Database>::Row) -> Result<Key, StoreError> {
    Key::try_from(KeyRow::from_row(row).map_err(db)?)
}

pub(super) async fn get(pool: &Pool, id: uuid::Uuid) -> Result<Option<Key>, StoreError> {
    sqlx::query(&format!("SELECT {COLUMNS} FROM keys WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(key_of)
        .transpose()
}

/// Bounded by AWS's on-demand rotation limit: one key per material in the
/// KMS key.
pub(super) async fn in_kms_key(pool: &Pool, kms_key_id: &KmsKeyId) -> Result<Vec<Key>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM keys WHERE kms_key_id = $1 ORDER BY version"
    ))
    .bind(kms_key_id.as_str())
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter().map(key_of).collect()
}

/// The end of the group's span of the `UNIQUE (group_name, version)` index.
pub(super) async fn latest_version(
    pool: &Pool,
    group: &GroupName,
) -> Result<Option<u32>, StoreError> {
    let latest: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM keys WHERE group_name = $1")
            .bind(group.as_str())
            .fetch_one(pool)
            .await
            .map_err(db)?;
    latest
        .map(|version| read_u32("keys", "version", version))
        .transpose()
}

/// Fails with [`StoreError::NotFound`] when the key's group does not exist.
pub(super) async fn insert(conn: &mut Conn, key: &Key) -> Result<(), StoreError> {
    write(
        conn,
        key,
        &format!("INSERT INTO keys ({COLUMNS}) VALUES {VALUES}"),
    )
    .await
}

/// Replaces the key's mutable fields; its id, group, version and creation
/// time are fixed when it is generated.
pub(super) async fn update(conn: &mut Conn, key: &Key) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE keys SET kms_key_id = $2, check_digits = $3, valid_from = $4, valid_to = $5, \
         state = $6, keystore_handle = $7, kms_material_id = $8, material_state = $9, \
         rotated_in = $10 WHERE id = $1",
    )
    .bind(key.id.to_string())
    .bind(key.kms_key_id.as_ref().map(KmsKeyId::as_str))
    .bind(key.check_digits.as_str())
    .bind(ts(&key.valid_from))
    .bind(opt_ts(key.valid_to.as_ref()))
    .bind(key.state.as_str())
    .bind(&key.keystore_handle)
    .bind(key.kms_material_id.as_ref().map(KeyMaterialId::as_str))
    .bind(key.material_state.as_str())
    .bind(key.rotated_in)
    .execute(conn)
    .await
    .map_err(db)?;
    super::one_row(done.rows_affected())
}

/// Inserts the key, or replaces every column but its creation time when a key
/// with its id exists (a job step writing the key it produces or changes).
/// Fails with [`StoreError::Duplicate`] when its KMS key id (for a key not
/// rotated in), its material in its KMS key, or its version in its group, is
/// another key's, and with [`StoreError::NotFound`] when its
/// group does not exist.
pub(super) fn push_upsert<'q>(batch: &mut Batch<'q>, key: &'q Key) {
    batch.push(Changes::Any, db_referencing, |q| {
        q.push(format!("INSERT INTO keys ({COLUMNS}) VALUES ("));
        let mut values = q.separated(", ");
        values
            .push_bind(key.id.to_string())
            .push_bind(key.group.as_str())
            .push_bind(i64::from(key.version))
            .push_bind(key.kms_key_id.as_ref().map(KmsKeyId::as_str))
            .push_bind(key.check_digits.as_str())
            .push_bind(ts(&key.valid_from))
            .push_bind(opt_ts(key.valid_to.as_ref()))
            .push_bind(key.state.as_str())
            .push_bind(key.keystore_handle.as_slice())
            .push_bind(ts(&key.created_at))
            .push_bind(key.kms_material_id.as_ref().map(KeyMaterialId::as_str))
            .push_bind(key.material_state.as_str())
            .push_bind(key.rotated_in);
        q.push(
            ") ON CONFLICT (id) DO UPDATE SET group_name = excluded.group_name, \
             version = excluded.version, kms_key_id = excluded.kms_key_id, \
             check_digits = excluded.check_digits, valid_from = excluded.valid_from, \
             valid_to = excluded.valid_to, state = excluded.state, \
             keystore_handle = excluded.keystore_handle, \
             kms_material_id = excluded.kms_material_id, material_state = excluded.material_state, \
             rotated_in = excluded.rotated_in",
        );
    });
}

/// Runs an insert of every column of `key`, bound in [`COLUMNS`] order.
async fn write(conn: &mut Conn, key: &Key, sql: &str) -> Result<(), StoreError> {
    sqlx::query(sql)
        .bind(key.id.to_string())
        .bind(key.group.as_str())
        .bind(i64::from(key.version))
        .bind(key.kms_key_id.as_ref().map(KmsKeyId::as_str))
        .bind(key.check_digits.as_str())
        .bind(ts(&key.valid_from))
        .bind(opt_ts(key.valid_to.as_ref()))
        .bind(key.state.as_str())
        .bind(&key.keystore_handle)
        .bind(ts(&key.created_at))
        .bind(key.kms_material_id.as_ref().map(KeyMaterialId::as_str))
        .bind(key.material_state.as_str())
        .bind(key.rotated_in)
        .execute(conn)
        .await
        .map_err(db_referencing)?;
    Ok(())
}

pub(super) async fn delete(conn: &mut Conn, id: uuid::Uuid) -> Result<(), StoreError> {
    let done = sqlx::query("DELETE FROM keys WHERE id = $1")
        .bind(id.to_string())
        .execute(conn)
        .await
        .map_err(db)?;
    super::one_row(done.rows_affected())
}

/// Deletes the key if it still has no KMS key: the key a cancelled rotation
/// generated, which never reached AWS. Nothing to delete (an officer deleted
/// it first) is no error.
pub(super) async fn delete_without_kms_key(
    conn: &mut Conn,
    id: uuid::Uuid,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM keys WHERE id = $1 AND kms_key_id IS NULL")
        .bind(id.to_string())
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}
