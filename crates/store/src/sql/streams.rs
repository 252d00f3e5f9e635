//! Cursors of the audit streams to a SIEM: the last entry each sink
//! delivered, moved only from the value the streamer read (compare and
//! set), so a streamer that lost its lease to another node cannot move it.

use keyhold_core::StoreError;
use keyhold_core::clock::Timestamp;
use keyhold_core::names::NodeId;

use super::{Conn, Pool};
use crate::error::db;
use crate::rows::ts;

pub(super) async fn cursor(pool: &Pool, sink: &str) -> Result<Option<i64>, StoreError> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT seq FROM audit_stream_cursors WHERE sink = $1")
            .bind(sink)
            .fetch_optional(pool)
            .await
            .map_err(db)?;
    Ok(row.map(|(seq,)| seq))
}

/// Run inside a write transaction: read, compare, write.
pub(super) async fn advance(
    conn: &mut Conn,
    sink: &str,
    expected: Option<i64>,
    seq: i64,
    node: &NodeId,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let current: Option<(i64,)> =
        sqlx::query_as("SELECT seq FROM audit_stream_cursors WHERE sink = $1")
            .bind(sink)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
    if current.map(|(seq,)| seq) != expected {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO audit_stream_cursors (sink, seq, node, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sink) DO UPDATE SET seq = excluded.seq, node = excluded.node, \
         updated_at = excluded.updated_at",
    )
    .bind(sink)
    .bind(seq)
    .bind(node.as_str())
    .bind(ts(&now))
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(true)
}
