//! Snowflake worker ids leased in Redis, so two live nodes never share one (they would mint
//! the same ids). A node takes the first free id from its configured one upwards
//! (`SET NX PX` through the lease script) and renews it well inside the lease time; a dead
//! node's id frees itself when its lease expires.

use crate::Connection;
use crate::{backend, backend_msg, scripts};
use stampede_core::ports::StoreError;
use stampede_domain::snowflake::MAX_WORKER;
use std::time::Duration;

fn key(prefix: &str, id: u16) -> String {
    format!("{prefix}:worker:{id}")
}

async fn try_take(
    conn: &mut Connection,
    prefix: &str,
    node: &str,
    id: u16,
    lease: Duration,
) -> Result<bool, StoreError> {
    let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
    let ours: i64 = scripts::LEASE_ACQUIRE
        .key(key(prefix, id))
        .arg(node)
        .arg(ms)
        .invoke_async(conn)
        .await
        .map_err(backend)?;
    Ok(ours == 1)
}

/// Leases the first free worker id at or after `start` (wrapping), for `node`.
pub async fn lease_worker_id(
    conn: &Connection,
    prefix: &str,
    node: &str,
    start: u16,
    lease: Duration,
) -> Result<u16, StoreError> {
    let mut conn = conn.clone();
    let span = u32::from(MAX_WORKER) + 1;
    for offset in 0..span {
        let id = u16::try_from((u32::from(start) + offset) % span).unwrap_or(0);
        if try_take(&mut conn, prefix, node, id, lease).await? {
            return Ok(id);
        }
    }
    Err(backend_msg(
        "every snowflake worker id (0-1023) is leased by a live node",
    ))
}

/// Renews `node`'s lease on `id`; `false` if another node holds it now (ours expired).
pub async fn renew_worker_id(
    conn: &Connection,
    prefix: &str,
    node: &str,
    id: u16,
    lease: Duration,
) -> Result<bool, StoreError> {
    let mut conn = conn.clone();
    try_take(&mut conn, prefix, node, id, lease).await
}
