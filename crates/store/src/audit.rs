//! Backend-independent parts of the audit log: sealing an entry and the
//! filter of `list_audit`.

use keyhold_core::StoreError;
use keyhold_core::audit::{AuditEntry, AuditFilter, AuditMac, AuditRecord, ChainHead};
use keyhold_core::clock::format_timestamp;
use keyhold_core::error::KeystoreError;
use keyhold_core::ports::SharedAuditMac;
use sqlx::{Database, Encode, QueryBuilder, Type};

use crate::rows::hash32;

/// Most rows one list call (`list_audit`, `list_jobs`) returns.
pub(crate) const MAX_LIST_LIMIT: u32 = 1000;
/// What `limit: 0` means: the caller did not say.
pub(crate) const DEFAULT_LIST_LIMIT: u32 = 100;

pub(crate) const AUDIT_COLUMNS: &str =
    "seq, time, users, summary, details, archived, prev_hash, hash, mac";

/// The query for the audit chain's head, its newest entry's place and
/// hash, as a literal for `concat!` (a backend may send it with others).
macro_rules! chain_head_sql {
    () => {
        "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
    };
}
pub(crate) use chain_head_sql;

/// The audit chain's head as [`chain_head_sql`] read it, not yet checked:
/// none in an empty log. A write transaction reads it under the writer lock
/// and parses it only when it appends, so a damaged head refuses the
/// audited writes that would chain to it, not every write.
pub(crate) type ChainHeadRow = Option<(i64, Vec<u8>)>;

/// The head `row` names.
pub(crate) fn chain_head(row: ChainHeadRow) -> Result<ChainHead, StoreError> {
    Ok(match row {
        Some((seq, hash)) => ChainHead {
            seq,
            hash: hash32("audit_log", "hash", &hash)?,
        },
        None => ChainHead::EMPTY,
    })
}

/// Seals `records` as the entries after `head`, in order. A MAC that may
/// wait on a token is computed off the async executor, all of them in one
/// hop; one computed in memory is computed here.
pub(crate) async fn seal_all(
    head: ChainHead,
    records: &[&AuditRecord],
    mac: &SharedAuditMac,
) -> Result<Vec<AuditEntry>, StoreError> {
    if !mac.may_block() {
        return seal_chain(head, records.iter().copied(), &**mac);
    }
    let records: Vec<AuditRecord> = records.iter().map(|&record| record.clone()).collect();
    let mac = mac.clone();
    tokio::task::spawn_blocking(move || seal_chain(head, records.iter(), &*mac))
        .await
        .map_err(|e| KeystoreError::Internal(format!("the audit MAC did not finish: {e}")))?
}

/// Each record sealed after the one before, the first after `head`.
fn seal_chain<'r>(
    mut head: ChainHead,
    records: impl Iterator<Item = &'r AuditRecord>,
    mac: &dyn AuditMac,
) -> Result<Vec<AuditEntry>, StoreError> {
    records
        .map(|record| {
            let entry = keyhold_core::audit::seal(head, record, mac)?;
            head = ChainHead {
                seq: entry.seq,
                hash: entry.hash,
            };
            Ok(entry)
        })
        .collect()
}

pub(crate) fn list_limit(requested: u32) -> i64 {
    let limit = match requested {
        0 => DEFAULT_LIST_LIMIT,
        n => n.min(MAX_LIST_LIMIT),
    };
    i64::from(limit)
}

/// `LIKE` pattern text matching `raw` literally (escape character `\`).
fn like_literal(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Appends `WHERE …` for `filter` to a query selecting from `audit_log`, then
/// the newest-first order and the limit.
pub(crate) fn push_list_query<'a, DB>(qb: &mut QueryBuilder<'a, DB>, filter: &AuditFilter)
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut sep = " WHERE ";
    let mut clause = |qb: &mut QueryBuilder<'a, DB>| {
        qb.push(sep);
        sep = " AND ";
    };
    // Timestamps are stored in one fixed-width form, so text order is time order.
    if let Some(from) = &filter.from {
        clause(qb);
        qb.push("time >= ").push_bind(format_timestamp(from));
    }
    if let Some(to) = &filter.to {
        clause(qb);
        qb.push("time <= ").push_bind(format_timestamp(to));
    }
    if let Some(user) = filter.user.as_deref().filter(|u| !u.is_empty()) {
        // `users` is a comma-separated list; framing both sides with commas
        // matches whole elements only (`Admin1` does not match `Admin10`).
        // Both sides are lowered because SQLite's LIKE ignores ASCII case
        // and PostgreSQL's does not: the filter means the same on both.
        clause(qb);
        qb.push("LOWER(',' || users || ',') LIKE LOWER(")
            .push_bind(format!("%,{},%", like_literal(user)))
            .push(") ESCAPE '\\'");
    }
    if let Some(text) = filter.text.as_deref().filter(|t| !t.is_empty()) {
        let pattern = format!("%{}%", like_literal(text));
        clause(qb);
        qb.push("(LOWER(summary) LIKE LOWER(")
            .push_bind(pattern.clone())
            .push(") ESCAPE '\\' OR LOWER(details) LIKE LOWER(")
            .push_bind(pattern)
            .push(") ESCAPE '\\')");
    }
    if let Some(before) = filter.before_seq {
        clause(qb);
        qb.push("seq < ").push_bind(before);
    }
    qb.push(" ORDER BY seq DESC LIMIT ")
        .push_bind(list_limit(filter.limit));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(like_literal(r"50%_a\b"), r"50\%\_a\\b");
    }

    #[test]
    fn limit_defaults_and_caps() {
        assert_eq!(list_limit(0), 100);
        assert_eq!(list_limit(7), 7);
        assert_eq!(list_limit(5000), 1000);
    }
}
