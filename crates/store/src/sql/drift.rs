use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::LazyLock;

use keyhold_core::StoreError;
use keyhold_core::cloud::aws::KmsKeyId;
use keyhold_core::drift::{DriftCheck, DriftFilter, DriftKind, DriftRecord, Finding};
use keyhold_core::names::GroupName;
use sqlx::QueryBuilder;

use super::{Conn, Db, Pool};
use crate::audit::list_limit;
use crate::error::{db, db_referencing};
use crate::rows::{DriftCheckRow, FindingRow, opt_ts, read_drift_kind, repair_json, ts};

const COLUMNS: &str = "id, group_name, kind, subject, key_id, kms_key_id, detail, repair, \
     first_seen, last_seen, cleared_at";

/// Most ids bound in one `IN (…)`: far below SQLite's and PostgreSQL's
/// limits on parameters, so a region with many KMS keys still takes few
/// statements.
const IN_CHUNK: usize = 500;

/// Orders kinds as [`DriftKind`] does (its declaration order, which the
/// core's plans and the in-memory store use), not alphabetically, so both
/// backends and the core list findings alike. Built from [`DriftKind::ALL`],
/// so a kind added there is ordered without touching this.
static KIND_ORDER: LazyLock<String> = LazyLock::new(|| {
    let mut sql = String::from("CASE kind");
    for (i, kind) in DriftKind::ALL.iter().enumerate() {
        let _ = write!(sql, " WHEN '{}' THEN {i}", kind.as_str());
    }
    sql.push_str(" END");
    sql
});

/// Open findings by group, kind and subject; then, when asked for, the
/// cleared ones, newest cleared first. One statement, so a finding cleared
/// while the listing runs is in it once.
pub(super) async fn list(pool: &Pool, filter: &DriftFilter) -> Result<Vec<Finding>, StoreError> {
    let mut qb =
        QueryBuilder::<Db>::new(format!("SELECT {COLUMNS} FROM drift_findings WHERE TRUE"));
    if let Some(group) = &filter.group {
        qb.push(" AND group_name = ").push_bind(group.as_str());
    }
    if let Some(key) = &filter.key {
        qb.push(" AND (key_id = ").push_bind(key.key_id.to_string());
        if let Some(kms) = &key.kms_key_id {
            qb.push(" OR kms_key_id = ").push_bind(kms.to_string());
        }
        qb.push(")");
    }
    if !filter.include_cleared {
        qb.push(" AND cleared_at IS NULL");
    }
    qb.push(format!(
        " ORDER BY CASE WHEN cleared_at IS NULL THEN 0 ELSE 1 END, cleared_at DESC, \
         group_name, {}, subject, id LIMIT ",
        *KIND_ORDER
    ))
    .push_bind(list_limit(filter.limit));
    qb.build_query_as::<FindingRow>()
        .fetch_all(pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(Finding::try_from)
        .collect()
}

pub(super) async fn get(pool: &Pool, id: uuid::Uuid) -> Result<Option<Finding>, StoreError> {
    sqlx::query_as::<_, FindingRow>(&format!(
        "SELECT {COLUMNS} FROM drift_findings WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(pool)
    .await
    .map_err(db)?
    .map(Finding::try_from)
    .transpose()
}

pub(super) async fn checks(pool: &Pool) -> Result<Vec<DriftCheck>, StoreError> {
    sqlx::query_as::<_, DriftCheckRow>(
        "SELECT group_name, checked_at, job_id, open_findings FROM drift_checks ORDER BY group_name",
    )
    .fetch_all(pool)
    .await
    .map_err(db)?
    .into_iter()
    .map(DriftCheck::try_from)
    .collect()
}

/// Open findings by kind, in [`DriftKind`] order; kinds with none are left out.
pub(super) async fn counts(pool: &Pool) -> Result<Vec<(DriftKind, u64)>, StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT kind, COUNT(*) FROM drift_findings WHERE cleared_at IS NULL GROUP BY kind",
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let mut counts = rows
        .into_iter()
        .map(|(kind, count)| {
            let kind = read_drift_kind("drift_findings", "kind", &kind)?;
            let count = u64::try_from(count)
                .map_err(|_| StoreError::Corrupt(format!("drift_findings: a count of {count}")))?;
            Ok((kind, count))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    counts.sort_by_key(|(kind, _)| *kind);
    Ok(counts)
}

/// Of `ids`, those no key is in, in the order given: one statement per
/// [`IN_CHUNK`] ids, through the index on the keys' KMS key ids.
pub(super) async fn unknown_kms_keys(
    pool: &Pool,
    ids: &[KmsKeyId],
) -> Result<Vec<KmsKeyId>, StoreError> {
    let mut known: HashSet<String> = HashSet::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let mut qb =
            QueryBuilder::<Db>::new("SELECT DISTINCT kms_key_id FROM keys WHERE kms_key_id IN (");
        let mut list = qb.separated(", ");
        for id in chunk {
            list.push_bind(id.as_str());
        }
        qb.push(")");
        let found: Vec<String> = qb.build_query_scalar().fetch_all(pool).await.map_err(db)?;
        known.extend(found);
    }
    Ok(ids
        .iter()
        .filter(|id| !known.contains(id.as_str()))
        .cloned()
        .collect())
}

/// What a drift check writes with its job step: every finding (inserted, or
/// updated by id, keeping its group, kind, subject and first seen time) and
/// the group's check row. A second open finding of one group, kind and
/// subject under another id is refused by the database ([`StoreError::Duplicate`]);
/// a finding or check of a group that does not exist is [`StoreError::NotFound`].
pub(super) async fn record(conn: &mut Conn, drift: &DriftRecord) -> Result<(), StoreError> {
    for finding in &drift.findings {
        upsert(&mut *conn, finding).await?;
    }
    let check = &drift.check;
    sqlx::query(
        "INSERT INTO drift_checks (group_name, checked_at, job_id, open_findings) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (group_name) DO UPDATE SET \
         checked_at = excluded.checked_at, job_id = excluded.job_id, \
         open_findings = excluded.open_findings",
    )
    .bind(check.group.as_str())
    .bind(ts(&check.checked_at))
    .bind(check.job_id.to_string())
    .bind(i64::from(check.open))
    .execute(conn)
    .await
    .map_err(db_referencing)?;
    Ok(())
}

async fn upsert(conn: &mut Conn, f: &Finding) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO drift_findings ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (id) DO UPDATE SET key_id = excluded.key_id, \
         kms_key_id = excluded.kms_key_id, detail = excluded.detail, \
         repair = excluded.repair, last_seen = excluded.last_seen, \
         cleared_at = excluded.cleared_at"
    ))
    .bind(f.id.to_string())
    .bind(f.group.as_str())
    .bind(f.kind.as_str())
    .bind(&f.subject)
    .bind(f.key_id.map(|k| k.to_string()))
    .bind(f.kms_key_id.as_ref().map(KmsKeyId::as_str))
    .bind(&f.detail)
    .bind(repair_json(f.repair.as_ref())?)
    .bind(ts(&f.first_seen))
    .bind(ts(&f.last_seen))
    .bind(opt_ts(f.cleared_at.as_ref()))
    .execute(conn)
    .await
    .map_err(db_referencing)?;
    Ok(())
}

/// A deleted group's findings and last check, deleted in its transaction.
pub(super) async fn delete_of_group(conn: &mut Conn, group: &GroupName) -> Result<(), StoreError> {
    for table in ["drift_findings", "drift_checks"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE group_name = $1"))
            .bind(group.as_str())
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    Ok(())
}
