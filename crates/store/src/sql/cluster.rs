use keyhold_core::StoreError;
use keyhold_core::clock::Timestamp;
use keyhold_core::cluster::{Lease, NodeRecord};
use keyhold_core::names::NodeId;

use super::{Conn, Pool};
use crate::error::db;
use crate::rows::{LeaseRow, NodeRow, ts};

pub(super) async fn heartbeat(pool: &Pool, node: &NodeRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO nodes (id, started_at, last_seen, role) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at, \
         last_seen = excluded.last_seen, role = excluded.role",
    )
    .bind(node.id.as_str())
    .bind(ts(&node.started_at))
    .bind(ts(&node.last_seen))
    .bind(node.role.as_str())
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

pub(super) async fn list_nodes(pool: &Pool) -> Result<Vec<NodeRecord>, StoreError> {
    sqlx::query_as::<_, NodeRow>("SELECT id, started_at, last_seen, role FROM nodes ORDER BY id")
        .fetch_all(pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(NodeRecord::try_from)
        .collect()
}

pub(super) async fn get_lease(conn: &mut Conn, name: &str) -> Result<Option<Lease>, StoreError> {
    sqlx::query_as::<_, LeaseRow>(
        "SELECT name, holder, token, expires_at FROM leases WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(conn)
    .await
    .map_err(db)?
    .map(Lease::try_from)
    .transpose()
}

/// Run inside a write transaction: read, decide, write.
pub(super) async fn acquire(
    conn: &mut Conn,
    name: &str,
    holder: &NodeId,
    now: Timestamp,
    until: Timestamp,
) -> Result<Option<Lease>, StoreError> {
    let current = get_lease(&mut *conn, name).await?;
    let token = match &current {
        Some(lease) if &lease.holder == holder => lease.token,
        Some(lease) if lease.expires_at >= now => return Ok(None),
        Some(lease) => lease.token + 1,
        None => 1,
    };
    sqlx::query(
        "INSERT INTO leases (name, holder, token, expires_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = excluded.token, \
         expires_at = excluded.expires_at",
    )
    .bind(name)
    .bind(holder.as_str())
    .bind(token)
    .bind(ts(&until))
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(Some(Lease {
        name: name.to_owned(),
        holder: holder.clone(),
        token,
        expires_at: until,
    }))
}

pub(super) async fn release(
    conn: &mut Conn,
    name: &str,
    holder: &NodeId,
) -> Result<(), StoreError> {
    // Expired now, token kept: the next holder still gets a higher one.
    sqlx::query(
        "UPDATE leases SET expires_at = '0000-01-01T00:00:00.000000Z' WHERE name = $1 AND holder = $2",
    )
    .bind(name)
    .bind(holder.as_str())
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// Refuses a job commit whose lease is no longer held with that token.
pub(super) async fn check_fence(conn: &mut Conn, fence: &Lease) -> Result<(), StoreError> {
    match get_lease(conn, &fence.name).await? {
        Some(current) if current.holder == fence.holder && current.token == fence.token => Ok(()),
        _ => Err(StoreError::Fenced(fence.name.clone())),
    }
}
