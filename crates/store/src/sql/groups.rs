use keyhold_core::StoreError;
use keyhold_core::clock::Timestamp;
use keyhold_core::cloud::aws::{KeyPolicy, KmsKeyId};
use keyhold_core::group::KeyGroup;
use keyhold_core::interval::Interval;
use keyhold_core::job::JobKind;
use keyhold_core::names::GroupName;

use super::batch::{Batch, Changes};
use super::read::{Query, Reads};
use super::{Conn, Pool};
use crate::error::{db, db_referencing};
use crate::rows::{GroupRow, opt_ts, ts};

const COLUMNS: &str = "id, name, service, credential_name, rotate_every, valid_for, \
     info_owner, info_notes, alias, description, region, active_key_id, policy, \
     disable_after_rotate, created_at, updated_at, next_rotation_at, rotation_strategy, \
     at_rotation_limit, self_heal";

pub(super) async fn list(pool: &Pool) -> Result<Vec<KeyGroup>, StoreError> {
    sqlx::query_as::<_, GroupRow>(&format!("SELECT {COLUMNS} FROM key_groups ORDER BY name"))
        .fetch_all(pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(KeyGroup::try_from)
        .collect()
}

/// Due now, soonest first: served by the index on next_rotation_at.
pub(super) async fn due(
    pool: &Pool,
    now: &Timestamp,
    limit: u32,
) -> Result<Vec<KeyGroup>, StoreError> {
    sqlx::query_as::<_, GroupRow>(&format!(
        "SELECT {COLUMNS} FROM key_groups WHERE next_rotation_at <= $1 \
         ORDER BY next_rotation_at LIMIT $2"
    ))
    .bind(ts(now))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db)?
    .into_iter()
    .map(KeyGroup::try_from)
    .collect()
}

/// Due for a drift check, least recently checked first: the groups' rows
/// joined to their last check, the jobs' (group, created) index telling
/// which had a check queued lately.
pub(super) async fn due_for_drift_check(
    pool: &Pool,
    checked_before: &Timestamp,
    quiet_since: &Timestamp,
    limit: u32,
) -> Result<Vec<KeyGroup>, StoreError> {
    sqlx::query_as::<_, GroupRow>(&format!(
        "SELECT {COLUMNS} FROM key_groups \
         LEFT JOIN drift_checks ON drift_checks.group_name = key_groups.name \
         WHERE COALESCE(drift_checks.checked_at, key_groups.created_at) <= $1 \
         AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.group_name = key_groups.name \
             AND jobs.kind = $2 AND jobs.created_at > $3) \
         ORDER BY COALESCE(drift_checks.checked_at, key_groups.created_at), key_groups.name \
         LIMIT $4"
    ))
    .bind(ts(checked_before))
    .bind(JobKind::CHECK_DRIFT_LABEL)
    .bind(ts(quiet_since))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db)?
    .into_iter()
    .map(KeyGroup::try_from)
    .collect()
}

pub(super) async fn get(
    reads: Reads<'_>,
    name: &GroupName,
) -> Result<Option<KeyGroup>, StoreError> {
    let query =
        Query::new(format!("SELECT {COLUMNS} FROM key_groups WHERE name = $1")).text(name.as_str());
    reads
        .first::<GroupRow>(&query)
        .await?
        .map(KeyGroup::try_from)
        .transpose()
}

fn interval(i: Option<&Interval>) -> Option<String> {
    i.map(Interval::to_string)
}

/// Fails with [`StoreError::NotFound`] when the group's credential does not exist.
pub(super) async fn insert(conn: &mut Conn, g: &KeyGroup) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO key_groups ({COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
    ))
    .bind(g.id.to_string())
    .bind(g.name.as_str())
    .bind(g.service.as_str())
    .bind(g.credential.as_str())
    .bind(interval(g.rotate_every.as_ref()))
    .bind(interval(g.valid_for.as_ref()))
    .bind(&g.info.owner)
    .bind(&g.info.notes)
    .bind(g.aws.alias.as_str())
    .bind(g.aws.description.as_str())
    .bind(g.aws.region.as_str())
    .bind(g.aws.active_key_id.as_ref().map(KmsKeyId::as_str))
    .bind(g.aws.policy.as_ref().map(KeyPolicy::as_str))
    .bind(g.aws.disable_after_rotate)
    .bind(ts(&g.created_at))
    .bind(ts(&g.updated_at))
    .bind(opt_ts(g.next_rotation_at.as_ref()))
    .bind(g.aws.rotation.as_str())
    .bind(g.aws.at_rotation_limit.as_str())
    .bind(g.aws.self_heal)
    .execute(conn)
    .await
    .map_err(db_referencing)?;
    Ok(())
}

/// Replaces everything but the group's id, name and creation time. Fails with
/// [`StoreError::NotFound`] when the group, or the credential it now names, is missing.
pub(super) async fn update(conn: &mut Conn, g: &KeyGroup) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE key_groups SET service = $2, credential_name = $3, rotate_every = $4, \
         valid_for = $5, info_owner = $6, info_notes = $7, alias = $8, description = $9, \
         region = $10, active_key_id = $11, policy = $12, disable_after_rotate = $13, \
         updated_at = $14, next_rotation_at = $15, rotation_strategy = $16, \
         at_rotation_limit = $17, self_heal = $18 WHERE name = $1",
    )
    .bind(g.name.as_str())
    .bind(g.service.as_str())
    .bind(g.credential.as_str())
    .bind(interval(g.rotate_every.as_ref()))
    .bind(interval(g.valid_for.as_ref()))
    .bind(&g.info.owner)
    .bind(&g.info.notes)
    .bind(g.aws.alias.as_str())
    .bind(g.aws.description.as_str())
    .bind(g.aws.region.as_str())
    .bind(g.aws.active_key_id.as_ref().map(KmsKeyId::as_str))
    .bind(g.aws.policy.as_ref().map(KeyPolicy::as_str))
    .bind(g.aws.disable_after_rotate)
    .bind(ts(&g.updated_at))
    .bind(opt_ts(g.next_rotation_at.as_ref()))
    .bind(g.aws.rotation.as_str())
    .bind(g.aws.at_rotation_limit.as_str())
    .bind(g.aws.self_heal)
    .execute(conn)
    .await
    .map_err(db_referencing)?;
    super::one_row(done.rows_affected())
}

/// Fails with [`StoreError::InUse`] while the group has keys. Its drift
/// findings and last check go with it (the audit log keeps their history).
pub(super) async fn delete(conn: &mut Conn, name: &GroupName) -> Result<(), StoreError> {
    super::drift::delete_of_group(&mut *conn, name).await?;
    let done = sqlx::query("DELETE FROM key_groups WHERE name = $1")
        .bind(name.as_str())
        .execute(conn)
        .await
        .map_err(db)?;
    super::one_row(done.rows_affected())
}

/// Replaces the group with `next` while it still reads as `expected`. The
/// caller holds the write lock, so nothing changes between the read and the
/// write; `false` (nothing written) when the group changed since the caller
/// read it.
pub(super) async fn replace(
    conn: &mut Conn,
    expected: &KeyGroup,
    next: &KeyGroup,
) -> Result<bool, StoreError> {
    let current =
        sqlx::query_as::<_, GroupRow>(&format!("SELECT {COLUMNS} FROM key_groups WHERE name = $1"))
            .bind(expected.name.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?
            .map(KeyGroup::try_from)
            .transpose()?;
    match current {
        None => Err(StoreError::NotFound),
        Some(current) if &current != expected => Ok(false),
        Some(_) => update(conn, next).await.map(|()| true),
    }
}

/// Writes what a rotation and the scheduler own of a group: its active key,
/// next rotation time and updated time. Never the fields an officer edits,
/// which a job (holding the group as it read it before its KMS calls) would
/// otherwise write back over a change made meanwhile. The updated time only
/// moves forward (the scheduler passes the time it read).
pub(super) async fn update_rotation(conn: &mut Conn, g: &KeyGroup) -> Result<(), StoreError> {
    let mut batch = Batch::new();
    push_update_rotation(&mut batch, g);
    batch.run(conn).await
}

/// [`update_rotation`] as one statement of a batch.
pub(super) fn push_update_rotation<'q>(batch: &mut Batch<'q>, g: &'q KeyGroup) {
    let updated_at = ts(&g.updated_at);
    batch.push(Changes::Row, db, |q| {
        q.push("UPDATE key_groups SET active_key_id = ")
            .push_bind(g.aws.active_key_id.as_ref().map(KmsKeyId::as_str))
            .push(", next_rotation_at = ")
            .push_bind(opt_ts(g.next_rotation_at.as_ref()))
            .push(", updated_at = CASE WHEN updated_at < ")
            .push_bind(updated_at.clone())
            .push(" THEN ")
            .push_bind(updated_at)
            .push(" ELSE updated_at END WHERE name = ")
            .push_bind(g.name.as_str());
    });
}
