//! Quorum approvals: requests, their votes, and the seal that runs an
//! approved request once. Every status move is a guarded update inside the
//! caller's write transaction (which holds the writer lock), and "one vote
//! per identity" is the votes' primary key, so none of it rests on a read
//! made before the write.

use std::collections::HashMap;

use keyhold_core::StoreError;
use keyhold_core::approval::{ApprovalRequest, ApprovalStatus, Execution, Vote};
use keyhold_core::audit::AuditRecord;
use sqlx::QueryBuilder;

use super::{Conn, Db, INSERT_ORDER, Pool};
use crate::audit::list_limit;
use crate::error::{corrupt, db, db_referencing};
use crate::rows::{
    ApprovalRow, VoteRow, approval_operation_json, read_approval_status, read_u32,
    requested_by_text, ts,
};

const COLUMNS: &str = "id, class, operation, params_hash, summary, requested_by, requested_at, \
     expires_at, approvals_needed, approver_role, expires_after_hours, status, decided_at, outcome";

/// What a request's row is read with: the sealed result only as a flag.
fn select_requests() -> String {
    format!(
        "SELECT {COLUMNS}, sealed_result IS NOT NULL AS has_sealed_result FROM approval_requests"
    )
}

const VOTE_COLUMNS: &str = "request_id, identity, role, approve, voted_at, reason";

/// Records a new request: pending, no votes, nothing decided, whatever
/// `request` says of those.
pub(super) async fn insert(conn: &mut Conn, r: &ApprovalRequest) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO approval_requests ({COLUMNS}, sealed_result) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, NULL, NULL)"
    ))
    .bind(r.id.to_string())
    .bind(r.class.as_str())
    .bind(approval_operation_json(r)?)
    .bind(&r.params_hash)
    .bind(&r.summary)
    .bind(requested_by_text(r))
    .bind(ts(&r.requested_at))
    .bind(ts(&r.expires_at))
    .bind(i64::from(r.quorum.approvals))
    .bind(r.quorum.role.as_str())
    .bind(i64::from(r.quorum.expires_after_hours))
    .bind(ApprovalStatus::Pending.as_str())
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// The request's votes, oldest first (in order of insertion within a microsecond).
async fn votes_of(pool: &Pool, id: uuid::Uuid) -> Result<Vec<Vote>, StoreError> {
    sqlx::query_as::<_, VoteRow>(&format!(
        "SELECT {VOTE_COLUMNS} FROM approval_votes WHERE request_id = $1 \
         ORDER BY voted_at, {INSERT_ORDER}"
    ))
    .bind(id.to_string())
    .fetch_all(pool)
    .await
    .map_err(db)?
    .into_iter()
    .map(Vote::try_from)
    .collect()
}

/// The request with its votes. Two reads, not one snapshot: a vote
/// committed between them may show before the status it led to does.
pub(super) async fn get(
    pool: &Pool,
    id: uuid::Uuid,
) -> Result<Option<ApprovalRequest>, StoreError> {
    let Some(row) =
        sqlx::query_as::<_, ApprovalRow>(&format!("{} WHERE id = $1", select_requests()))
            .bind(id.to_string())
            .fetch_optional(pool)
            .await
            .map_err(db)?
    else {
        return Ok(None);
    };
    let votes = votes_of(pool, id).await?;
    row.into_request(votes).map(Some)
}

/// Newest first (in reverse order of insertion within a microsecond), only
/// those stored with `status` when given, with their votes (one more query
/// for all of them). `limit` 0 means the default, capped like the audit list's.
pub(super) async fn list(
    pool: &Pool,
    status: Option<ApprovalStatus>,
    limit: u32,
) -> Result<Vec<ApprovalRequest>, StoreError> {
    let mut qb = QueryBuilder::<Db>::new(select_requests());
    if let Some(status) = status {
        qb.push(" WHERE status = ").push_bind(status.as_str());
    }
    qb.push(format!(
        " ORDER BY requested_at DESC, {INSERT_ORDER} DESC LIMIT "
    ))
    .push_bind(list_limit(limit));
    let rows = qb
        .build_query_as::<ApprovalRow>()
        .fetch_all(pool)
        .await
        .map_err(db)?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }

    let mut qb = QueryBuilder::<Db>::new(format!(
        "SELECT {VOTE_COLUMNS} FROM approval_votes WHERE request_id IN ("
    ));
    let mut ids = qb.separated(", ");
    for row in &rows {
        ids.push_bind(row.id().to_owned());
    }
    qb.push(format!(") ORDER BY voted_at, {INSERT_ORDER}"));
    let mut votes: HashMap<String, Vec<Vote>> = HashMap::new();
    for vote in qb
        .build_query_as::<VoteRow>()
        .fetch_all(pool)
        .await
        .map_err(db)?
    {
        let request = vote.request_id().to_owned();
        votes
            .entry(request)
            .or_default()
            .push(Vote::try_from(vote)?);
    }
    rows.into_iter()
        .map(|row| {
            let own = votes.remove(row.id()).unwrap_or_default();
            row.into_request(own)
        })
        .collect()
}

/// Records `vote` while the request is pending and unexpired at `vote.at`;
/// `None` (nothing written) otherwise. A denial makes the request denied;
/// the approval that brings the approvals to the quorum makes it approved.
/// [`StoreError::Duplicate`] (from the votes' primary key) when the
/// identity answered already; [`StoreError::NotFound`] when there is no
/// such request.
pub(super) async fn vote(
    conn: &mut Conn,
    id: uuid::Uuid,
    vote: &Vote,
) -> Result<Option<ApprovalStatus>, StoreError> {
    const T: &str = "approval_requests";
    let current: Option<(String, String, i64)> = sqlx::query_as(
        "SELECT status, expires_at, approvals_needed FROM approval_requests WHERE id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    let Some((status, expires_at, needed)) = current else {
        return Err(StoreError::NotFound);
    };
    let status = read_approval_status(T, "status", &status)?;
    let expires_at = keyhold_core::clock::parse_timestamp(&expires_at)
        .ok_or_else(|| corrupt(T, "expires_at", "not a timestamp"))?;
    if status != ApprovalStatus::Pending || vote.at >= expires_at {
        return Ok(None);
    }
    let needed = read_u32(T, "approvals_needed", needed)?;

    sqlx::query(&format!(
        "INSERT INTO approval_votes ({VOTE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
    ))
    .bind(id.to_string())
    .bind(vote.identity.as_str())
    .bind(vote.role.as_str())
    .bind(vote.approve)
    .bind(ts(&vote.at))
    .bind(vote.reason.as_deref())
    .execute(&mut *conn)
    .await
    .map_err(db_referencing)?;

    let next = if vote.approve {
        let (approvals,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM approval_votes WHERE request_id = $1 AND approve = $2",
        )
        .bind(id.to_string())
        .bind(true)
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
        if approvals < i64::from(needed) {
            return Ok(Some(ApprovalStatus::Pending));
        }
        ApprovalStatus::Approved
    } else {
        ApprovalStatus::Denied
    };
    // Approval is not a decision: the request is decided when it runs.
    let decided_at = (next == ApprovalStatus::Denied).then(|| ts(&vote.at));
    let done = sqlx::query(
        "UPDATE approval_requests SET status = $2, decided_at = $3 WHERE id = $1 AND status = $4",
    )
    .bind(id.to_string())
    .bind(next.as_str())
    .bind(decided_at)
    .bind(ApprovalStatus::Pending.as_str())
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    super::one_row(done.rows_affected())?;
    Ok(Some(next))
}

/// Moves request `id` from `from` to `to` with its outcome, decided at
/// `at`; `false` (nothing written) when it is not in `from` (or missing).
pub(super) async fn close(
    conn: &mut Conn,
    id: uuid::Uuid,
    from: ApprovalStatus,
    to: ApprovalStatus,
    outcome: &str,
    at: &keyhold_core::clock::Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE approval_requests SET status = $2, outcome = $3, decided_at = $4 \
         WHERE id = $1 AND status = $5",
    )
    .bind(id.to_string())
    .bind(to.as_str())
    .bind(outcome)
    .bind(ts(at))
    .bind(from.as_str())
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(done.rows_affected() > 0)
}

/// Removes and returns the request's sealed result; `None` (nothing
/// written) when it has none, any more, or there is no such request.
pub(super) async fn take_result(
    conn: &mut Conn,
    id: uuid::Uuid,
) -> Result<Option<Vec<u8>>, StoreError> {
    let sealed: Option<Option<Vec<u8>>> =
        sqlx::query_scalar("SELECT sealed_result FROM approval_requests WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
    let Some(sealed) = sealed.flatten() else {
        return Ok(None);
    };
    let done = sqlx::query("UPDATE approval_requests SET sealed_result = NULL WHERE id = $1")
        .bind(id.to_string())
        .execute(conn)
        .await
        .map_err(db)?;
    super::one_row(done.rows_affected())?;
    Ok(Some(sealed))
}

/// The seal of a write that runs an approved request ([`AuditRecord::executes`]):
/// marks the request executed, with the entry's summary as its outcome and
/// the sealed result kept for the requester, only while it is still
/// approved. [`StoreError::ApprovalSpent`] otherwise (run already, closed,
/// never approved, or missing), and the caller rolls the whole write back.
pub(super) async fn spend(
    conn: &mut Conn,
    execution: &Execution,
    audit: &AuditRecord,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE approval_requests SET status = $2, decided_at = $3, outcome = $4, \
         sealed_result = $5 WHERE id = $1 AND status = $6",
    )
    .bind(execution.request.to_string())
    .bind(ApprovalStatus::Executed.as_str())
    .bind(ts(&audit.time))
    .bind(&audit.summary)
    .bind(execution.sealed_result.as_deref())
    .bind(ApprovalStatus::Approved.as_str())
    .execute(conn)
    .await
    .map_err(db)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::ApprovalSpent);
    }
    Ok(())
}
