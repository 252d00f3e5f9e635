use keyhold_core::StoreError;
use keyhold_core::cloud::aws::{KeyMaterialId, KmsKeyId};
use keyhold_core::key::{Key, KeyPage};
use keyhold_core::names::GroupName;

use super::Conn;
use super::batch::{Batch, Changes};
use super::read::{Param, Query, Reads};
use crate::error::{db, db_referencing};
use crate::rows::{KEY_COLUMNS as COLUMNS, opt_ts, read_row, read_u32, ts};

const VALUES: &str = "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// A page walks the `(group_name, version)` key from the cursor: each page
/// costs the same however deep into the listing it is.
pub(crate) fn page_query(page: &KeyPage) -> Query<'_> {
    let mut query = Query::new(String::new());
    let mut sql = format!("SELECT {COLUMNS} FROM keys WHERE TRUE");
    if let Some(group) = &page.group {
        let group = query.bind(Param::Text(group.as_str().into()));
        sql.push_str(&format!(" AND group_name = {group}"));
    }
    if let Some(cursor) = &page.after {
        let group = query.bind(Param::Text(cursor.group.as_str().into()));
        let version = query.bind(Param::Integer(i64::from(cursor.version)));
        sql.push_str(&format!(
            " AND (group_name, version) > ({group}, {version})"
        ));
    }
    let limit = query.bind(Param::Integer(i64::from(page.limit)));
    sql.push_str(&format!(" ORDER BY group_name, version LIMIT {limit}"));
    query.sql = sql;
    query
}

pub(super) async fn get(reads: Reads<'_>, id: uuid::Uuid) -> Result<Option<Key>, StoreError> {
    let query =
        Query::new(format!("SELECT {COLUMNS} FROM keys WHERE id = $1")).text(id.to_string());
    reads.first(&query).await
}

/// Bounded by AWS's on-demand rotation limit: one key per material in the
/// KMS key.
pub(super) async fn in_kms_key(
    reads: Reads<'_>,
    kms_key_id: &KmsKeyId,
) -> Result<Vec<Key>, StoreError> {
    let query = Query::new(format!(
        "SELECT {COLUMNS} FROM keys WHERE kms_key_id = $1 ORDER BY version"
    ))
    .text(kms_key_id.as_str());
    reads.rows(&query).await
}

read_row! {
    /// The newest version of a group's keys, if it has any.
    struct LatestVersion in "keys" {
        latest: Option<i64>,
    }
}

/// The end of the group's span of the `UNIQUE (group_name, version)` index.
pub(super) async fn latest_version(
    reads: Reads<'_>,
    group: &GroupName,
) -> Result<Option<u32>, StoreError> {
    let query = Query::new("SELECT MAX(version) AS latest FROM keys WHERE group_name = $1")
        .text(group.as_str());
    let latest = reads
        .first::<LatestVersion>(&query)
        .await?
        .and_then(|row| row.latest);
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
