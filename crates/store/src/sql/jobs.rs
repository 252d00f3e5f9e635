use keyhold_core::StoreError;
use keyhold_core::cluster::Lease;
use keyhold_core::job::{Job, JobKind, JobMessage, JobStatus};
use keyhold_core::names::GroupName;
use keyhold_core::ports::JobCommit;

use super::batch::{Batch, Changes};
use super::read::{Query, Reads};
use super::{Conn, INSERT_ORDER, Pool, drift, groups, keys};
use crate::audit::list_limit;
use crate::error::{db, db_referencing};
use crate::rows::{JobMessageRow, JobRow, job_progress_json, job_spec_json, opt_ts, ts};

const COLUMNS: &str = "id, kind, spec, status, users, initiator, created_at, started_at, \
     finished_at, progress, error, attempts";

/// Statuses a restart resumes.
const UNFINISHED: [JobStatus; 2] = [JobStatus::Queued, JobStatus::Running];

pub(super) async fn get(reads: Reads<'_>, id: uuid::Uuid) -> Result<Option<Job>, StoreError> {
    let query =
        Query::new(format!("SELECT {COLUMNS} FROM jobs WHERE id = $1")).text(id.to_string());
    reads
        .first::<JobRow>(&query)
        .await?
        .map(Job::try_from)
        .transpose()
}

/// Newest first; jobs created in the same microsecond in reverse order of insertion.
/// `limit` 0 means the default, and is capped like the audit list's.
pub(super) async fn list(pool: &Pool, limit: u32) -> Result<Vec<Job>, StoreError> {
    sqlx::query_as::<_, JobRow>(&format!(
        "SELECT {COLUMNS} FROM jobs ORDER BY created_at DESC, {INSERT_ORDER} DESC LIMIT $1"
    ))
    .bind(list_limit(limit))
    .fetch_all(pool)
    .await
    .map_err(db)?
    .into_iter()
    .map(Job::try_from)
    .collect()
}

/// Queued and running jobs, oldest first (in order of insertion within a microsecond).
pub(super) async fn unfinished(pool: &Pool) -> Result<Vec<Job>, StoreError> {
    let [queued, running] = UNFINISHED.map(JobStatus::as_str);
    sqlx::query_as::<_, JobRow>(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE status IN ($1, $2) ORDER BY created_at, {INSERT_ORDER}"
    ))
    .bind(queued)
    .bind(running)
    .fetch_all(pool)
    .await
    .map_err(db)?
    .into_iter()
    .map(Job::try_from)
    .collect()
}

/// The group's queued or running job, if any (one at most: keyhold never
/// starts a second), through the group's index.
pub(super) async fn unfinished_of_group(
    reads: Reads<'_>,
    group: &GroupName,
) -> Result<Option<Job>, StoreError> {
    let [queued, running] = UNFINISHED.map(JobStatus::as_str);
    let query = Query::new(format!(
        "SELECT {COLUMNS} FROM jobs WHERE group_name = $1 AND status IN ($2, $3) \
         ORDER BY created_at, {INSERT_ORDER} LIMIT 1"
    ))
    .text(group.as_str())
    .text(queued)
    .text(running);
    reads
        .first::<JobRow>(&query)
        .await?
        .map(Job::try_from)
        .transpose()
}

pub(super) async fn insert(conn: &mut Conn, job: &Job) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO jobs ({COLUMNS}, group_name) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    ))
    .bind(job.id.to_string())
    .bind(job.kind.label())
    .bind(job_spec_json(&job.kind)?)
    .bind(job.status.as_str())
    .bind(job.initiator.users())
    .bind(job.initiator.as_str())
    .bind(ts(&job.created_at))
    .bind(opt_ts(job.started_at.as_ref()))
    .bind(opt_ts(job.finished_at.as_ref()))
    .bind(job_progress_json(&job.progress)?)
    .bind(job.error.as_deref())
    .bind(i64::from(job.attempts))
    .bind(job.kind.group().as_str())
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// The group's newest rotation, through the group's index: newest first,
/// jobs created in the same microsecond in the order they were inserted.
pub(super) async fn latest_rotation(
    reads: Reads<'_>,
    group: &GroupName,
) -> Result<Option<Job>, StoreError> {
    let query = Query::new(format!(
        "SELECT {COLUMNS} FROM jobs WHERE group_name = $1 AND kind = $2 \
         ORDER BY created_at DESC, {INSERT_ORDER} DESC LIMIT 1"
    ))
    .text(group.as_str())
    .text(JobKind::ROTATE_LABEL);
    reads
        .first::<JobRow>(&query)
        .await?
        .map(Job::try_from)
        .transpose()
}

/// Failed jobs, newest first.
pub(super) async fn failed(pool: &Pool, limit: u32) -> Result<Vec<Job>, StoreError> {
    sqlx::query_as::<_, JobRow>(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE status = $1 \
         ORDER BY created_at DESC, {INSERT_ORDER} DESC LIMIT $2"
    ))
    .bind(JobStatus::Failed.as_str())
    .bind(list_limit(limit))
    .fetch_all(pool)
    .await
    .map_err(db)?
    .into_iter()
    .map(Job::try_from)
    .collect()
}

/// A job statement as bound so far; [`fenced`] binds the lease last.
type JobQuery<'q> = sqlx::query::Query<'q, super::Db, <super::Db as sqlx::Database>::Arguments<'q>>;

/// `set` (an UPDATE of one job whose last parameter is `$params`), guarded
/// by `fence` when there is one: the row changes only while that lease is
/// still held with its token. The check rides in the same statement instead
/// of a read before it, since every step of every job commits here.
fn fenced_sql(set: &str, params: u32, fence: Option<&Lease>) -> String {
    match fence {
        Some(_) => format!(
            "{set} AND EXISTS (SELECT 1 FROM leases WHERE name = ${} AND holder = ${} AND token = ${})",
            params + 1,
            params + 2,
            params + 3
        ),
        None => set.to_owned(),
    }
}

/// Binds the fence's lease to a statement made by [`fenced_sql`] and runs
/// it; the rows it changed. None changed and the fence lost fails with the
/// fence's error.
async fn run_fenced(
    conn: &mut Conn,
    mut query: JobQuery<'_>,
    fence: Option<&Lease>,
) -> Result<u64, StoreError> {
    if let Some(lease) = fence {
        query = query
            .bind(lease.name.as_str().to_owned())
            .bind(lease.holder.as_str().to_owned())
            .bind(lease.token);
    }
    let rows = query.execute(&mut *conn).await.map_err(db)?.rows_affected();
    if rows == 0
        && let Some(lease) = fence
    {
        super::cluster::check_fence(conn, lease).await?;
    }
    Ok(rows)
}

/// A guarded move of a job (start, retry, cancel): `false` when the job was
/// no longer as the caller read it; otherwise its message follows.
async fn moved(
    conn: &mut Conn,
    query: JobQuery<'_>,
    fence: Option<&Lease>,
    message: &JobMessage,
) -> Result<bool, StoreError> {
    if run_fenced(conn, query, fence).await? == 0 {
        return Ok(false);
    }
    insert_message(conn, message).await?;
    Ok(true)
}

/// Replaces the job's mutable state; its kind, users and creation time are
/// fixed when it is created. With a `fence`, the row changes only while that
/// lease is still held with its token: the check rides in the same statement
/// instead of a read before it, since every step of every job commits here.
fn push_update<'q>(
    batch: &mut Batch<'q>,
    job: &'q Job,
    fence: Option<&'q Lease>,
) -> Result<(), StoreError> {
    let progress = job_progress_json(&job.progress)?;
    batch.push(Changes::FencedRow(fence), db, |q| {
        q.push("UPDATE jobs SET status = ")
            .push_bind(job.status.as_str())
            .push(", started_at = ")
            .push_bind(opt_ts(job.started_at.as_ref()))
            .push(", finished_at = ")
            .push_bind(opt_ts(job.finished_at.as_ref()))
            .push(", progress = ")
            .push_bind(progress)
            .push(", error = ")
            .push_bind(job.error.as_deref())
            .push(", attempts = ")
            .push_bind(i64::from(job.attempts))
            .push(" WHERE id = ")
            .push_bind(job.id.to_string());
        if let Some(lease) = fence {
            q.push(" AND EXISTS (SELECT 1 FROM leases WHERE name = ")
                .push_bind(lease.name.as_str())
                .push(" AND holder = ")
                .push_bind(lease.holder.as_str())
                .push(" AND token = ")
                .push_bind(lease.token)
                .push(")");
        }
    });
    Ok(())
}

/// The runner's start of a job: the row as [`update`] writes it, only while
/// the job is still in `from` with `attempts`; a cancel or retry that moved
/// it since the runner read it wins, and nothing is written (`false`).
pub(super) async fn start(
    conn: &mut Conn,
    job: &Job,
    from: JobStatus,
    attempts: u32,
    message: &JobMessage,
    fence: Option<&Lease>,
) -> Result<bool, StoreError> {
    const SET: &str = "UPDATE jobs SET status = $2, started_at = $3, finished_at = $4, \
         progress = $5, error = $6, attempts = $7 WHERE id = $1 AND status = $8 AND attempts = $9";
    let sql = fenced_sql(SET, 9, fence);
    let query = sqlx::query(&sql)
        .bind(job.id.to_string())
        .bind(job.status.as_str())
        .bind(opt_ts(job.started_at.as_ref()))
        .bind(opt_ts(job.finished_at.as_ref()))
        .bind(job_progress_json(&job.progress)?)
        .bind(job.error.as_deref())
        .bind(i64::from(job.attempts))
        .bind(from.as_str())
        .bind(i64::from(attempts));
    moved(conn, query, fence, message).await
}

/// Fails with [`StoreError::NotFound`] when the message's job does not exist.
async fn insert_message(conn: &mut Conn, message: &JobMessage) -> Result<(), StoreError> {
    let mut batch = Batch::new();
    push_message(&mut batch, message);
    batch.run(conn).await
}

fn push_message<'q>(batch: &mut Batch<'q>, message: &'q JobMessage) {
    batch.push(Changes::Any, db_referencing, |q| {
        q.push("INSERT INTO job_messages (job_id, time, text) VALUES (")
            .push_bind(message.job_id.to_string())
            .push(", ")
            .push_bind(ts(&message.time))
            .push(", ")
            .push_bind(message.text.as_str())
            .push(")");
    });
}

/// Retry or cancel: the status moves only from `from`, at the attempt the
/// caller read (a run in between may have moved the progress it decided
/// on), and only the status, error and finished time are written (never
/// the progress the caller read). The message follows when it moved.
pub(super) async fn change_status(
    conn: &mut Conn,
    job: &Job,
    from: JobStatus,
    message: &JobMessage,
    fence: Option<&Lease>,
) -> Result<bool, StoreError> {
    const SET: &str = "UPDATE jobs SET status = $2, error = $3, finished_at = $4 \
         WHERE id = $1 AND status = $5 AND attempts = $6";
    let sql = fenced_sql(SET, 6, fence);
    let query = sqlx::query(&sql)
        .bind(job.id.to_string())
        .bind(job.status.as_str())
        .bind(job.error.as_deref())
        .bind(opt_ts(job.finished_at.as_ref()))
        .bind(from.as_str())
        .bind(i64::from(job.attempts));
    moved(conn, query, fence, message).await
}

/// Writes everything a job step produced except its audit entries (the
/// step's own, then its drift record's), which the caller's transaction
/// seals last: the job, its keys, its group and its message in one batch
/// (one round trip on SQLite, where every step of every job commits here).
/// The first failure stops the rest; the caller rolls all of it back.
pub(super) async fn commit(conn: &mut Conn, commit: &JobCommit<'_>) -> Result<(), StoreError> {
    let mut batch = Batch::new();
    push_update(&mut batch, commit.job, commit.fence)?;
    for key in commit.keys {
        keys::push_upsert(&mut batch, key);
    }
    if let Some(group) = commit.group {
        groups::push_update_rotation(&mut batch, group);
    }
    for message in commit.messages {
        push_message(&mut batch, message);
    }
    batch.run(conn).await?;
    if let Some(record) = commit.drift {
        drift::record(conn, record).await?;
    }
    Ok(())
}

/// Oldest first: the order the steps committed them.
pub(super) async fn messages(
    reads: Reads<'_>,
    job_id: uuid::Uuid,
) -> Result<Vec<JobMessage>, StoreError> {
    let query =
        Query::new("SELECT job_id, time, text FROM job_messages WHERE job_id = $1 ORDER BY id")
            .text(job_id.to_string());
    reads
        .rows::<JobMessageRow>(&query)
        .await?
        .into_iter()
        .map(JobMessage::try_from)
        .collect()
}
