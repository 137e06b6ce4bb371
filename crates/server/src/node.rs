//! This process's identity among the nodes sharing a store: one `NodeId` minted per process
//! and handed to everything that takes a lease or writes an owner, and (distributed mode) the
//! snowflake worker id leased in Redis under that name, with its renewal.

use crate::background::Background;
use crate::config::{Backend, Settings};
use anyhow::Context;
use futures::future::BoxFuture;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// This process's name in leases: `node-<16 hex digits>`, random, so no two processes (nor
/// a process and its own restart) ever share one. Minted once by `Services::build`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeId(Arc<str>);

/// The fixed distribution lease owner of embedded mode (see [`NodeId::distribution_owner`]).
const EMBEDDED_DISTRIBUTION_OWNER: &str = "embedded";

impl NodeId {
    pub fn mint() -> Self {
        Self(format!("node-{:016x}", rand::random::<u64>()).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The owner name of distribution leases (upload leases, runner leases on tasks).
    /// Distributed: this process's id, so a restarted node never mistakes a dead
    /// predecessor's lease for its own. Embedded: always `"embedded"` — one process owns a
    /// data dir, so after a restart (or a crash) it picks up the tasks it was running at
    /// once instead of waiting for its own old leases to lapse.
    ///
    /// Everything else (the reminder scheduler's partition leases, claim-log persisters,
    /// the worker-id lease) uses the process-unique id: their lease tokens fence owners, so a
    /// second process or a restart must never pass for the first.
    pub fn distribution_owner(&self, backend: Backend) -> String {
        match backend {
            Backend::Sqlite => EMBEDDED_DISTRIBUTION_OWNER.to_owned(),
            Backend::Mysql => self.to_string(),
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// This node's snowflake worker id, leased in Redis (distributed mode).
#[derive(Clone)]
pub struct WorkerLease {
    pub id: u16,
    node: NodeId,
    prefix: String,
    lease: Duration,
    conn: redis::aio::ConnectionManager,
}

/// Leases a worker id in distributed mode (starting from `ids.worker_id`) for `node`;
/// `None` embedded, where the one process owns the configured id.
pub async fn lease_worker(
    settings: &Settings,
    node: &NodeId,
) -> anyhow::Result<Option<WorkerLease>> {
    if settings.storage.backend != Backend::Mysql {
        return Ok(None);
    }
    let r = &settings.redis;
    let lease = settings.ids.worker_lease;
    let conn = stampede_hot_redis::connect(&r.url)
        .await
        .with_context(|| format!("connecting to Redis at {}", r.url))?;
    let id = stampede_hot_redis::lease_worker_id(
        &conn,
        &r.prefix,
        node.as_str(),
        settings.ids.worker_id,
        lease,
    )
    .await
    .context("leasing a snowflake worker id")?;
    tracing::info!(worker_id = id, %node, "leased snowflake worker id");
    Ok(Some(WorkerLease {
        id,
        node: node.clone(),
        prefix: r.prefix.clone(),
        lease,
        conn,
    }))
}

/// Renewals per lease time: one or two failed renewals (a Redis blip) still keep the id.
const RENEWALS_PER_LEASE: u32 = 3;

impl WorkerLease {
    /// Renews the lease every third of its time until shutdown; losing it is logged loudly
    /// (another node may now mint the same ids) and retaken as soon as it is free again.
    pub fn renewal(self) -> Background {
        Box::new(move |token: CancellationToken| -> BoxFuture<'static, ()> {
            Box::pin(async move {
                loop {
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(self.lease / RENEWALS_PER_LEASE) => {}
                    }
                    match stampede_hot_redis::renew_worker_id(
                        &self.conn,
                        &self.prefix,
                        self.node.as_str(),
                        self.id,
                        self.lease,
                    )
                    .await
                    {
                        Ok(true) => {}
                        Ok(false) => tracing::error!(
                            worker_id = self.id,
                            "lost the snowflake worker-id lease to another node"
                        ),
                        Err(e) => {
                            tracing::warn!(worker_id = self.id, error = %e, "could not renew the worker-id lease")
                        }
                    }
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_unique_per_process_and_distribution_owners_follow_the_mode() {
        let (a, b) = (NodeId::mint(), NodeId::mint());
        assert_ne!(a, b);
        assert!(a.to_string().starts_with("node-"));
        assert_eq!(a.distribution_owner(Backend::Sqlite), "embedded");
        assert_eq!(b.distribution_owner(Backend::Sqlite), "embedded");
        assert_eq!(a.distribution_owner(Backend::Mysql), a.to_string());
    }
}
