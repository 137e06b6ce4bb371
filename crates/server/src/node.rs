//! This process's identity among the nodes sharing a store: one `NodeId` minted per process
//! and handed to everything that takes a lease or writes an owner, and (distributed mode) the
//! snowflake worker id leased in Redis under that name, with its renewal and the gate that
//! stops minting ids once the lease is no longer confirmed.

use crate::background::Background;
use crate::config::{Backend, Settings};
use anyhow::Context;
use futures::future::BoxFuture;
use stampede_core::ids::{IdGate, IdGenerator};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
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

    /// The owner name of distribution leases (upload leases, runner leases on tasks) and of
    /// the outbox relay's partition leases.
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

/// This node's snowflake worker id, leased in Redis (distributed mode), and the gate that
/// stops the id generator once the lease is no longer confirmed.
pub struct WorkerLease {
    pub id: u16,
    node: NodeId,
    prefix: String,
    lease: Duration,
    /// The configured id: where a search for a free id starts when ours was lost.
    start: u16,
    conn: stampede_hot_redis::Connection,
    /// Open until half the lease after the last good renewal was sent.
    pub gate: Arc<IdGate>,
    /// The generator to switch when the lease is re-taken under another id.
    ids: Option<Arc<IdGenerator>>,
}

/// Leases a worker id in distributed mode (given its Redis, starting from `ids.worker_id`)
/// for `node`; `None` embedded, where the one process owns the configured id.
pub async fn lease_worker(
    settings: &Settings,
    node: &NodeId,
    redis: Option<&stampede_hot_redis::Connection>,
) -> anyhow::Result<Option<WorkerLease>> {
    let Some(conn) = redis else {
        return Ok(None);
    };
    let (r, conn) = (&settings.redis, conn.clone());
    let lease = settings.ids.worker_lease;
    let sent = Instant::now();
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
    let gate = Arc::new(IdGate::default());
    gate.open_until(sent + lease / 2);
    Ok(Some(WorkerLease {
        id,
        node: node.clone(),
        prefix: r.prefix.clone(),
        lease,
        start: settings.ids.worker_id,
        conn,
        gate,
        ids: None,
    }))
}

/// Renewals per lease time when all is well.
const RENEWALS_PER_LEASE: u32 = 3;
/// Retries per lease time after a failed renewal, so a short blip does not close the gate.
const RETRIES_PER_LEASE: u32 = 20;

impl WorkerLease {
    /// The generator this lease gates; switched to a new id if the lease is re-taken.
    pub fn attach(&mut self, ids: Arc<IdGenerator>) {
        self.ids = Some(ids);
    }

    /// Renews the lease every third of its time until shutdown (every twentieth after a
    /// failure). Each good renewal opens the id gate until half the lease after it was sent:
    /// the lease in Redis runs at least a whole lease from then, so a node that cannot renew
    /// stops minting ids well before another node could take its id. A lease found lost is
    /// retaken (perhaps under another id) as soon as Redis answers.
    pub fn renewal(mut self) -> Background {
        Box::new(move |token: CancellationToken| -> BoxFuture<'static, ()> {
            Box::pin(async move {
                let mut wait = self.lease / RENEWALS_PER_LEASE;
                loop {
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                    wait = if self.renew_once().await {
                        self.lease / RENEWALS_PER_LEASE
                    } else {
                        self.lease / RETRIES_PER_LEASE
                    };
                }
            })
        })
    }

    /// One renewal (or re-lease); whether the gate is open after it.
    async fn renew_once(&mut self) -> bool {
        let sent = Instant::now();
        match stampede_hot_redis::renew_worker_id(
            &self.conn,
            &self.prefix,
            self.node.as_str(),
            self.id,
            self.lease,
        )
        .await
        {
            Ok(true) => {
                if !self.gate.is_open() {
                    tracing::info!(
                        worker_id = self.id,
                        "worker-id lease renewed: minting ids again"
                    );
                }
                self.gate.open_until(sent + self.lease / 2);
                true
            }
            Ok(false) => {
                self.gate.close();
                tracing::error!(
                    worker_id = self.id,
                    "lost the snowflake worker-id lease to another node; leasing another"
                );
                self.release_and_retake().await
            }
            Err(e) => {
                tracing::warn!(worker_id = self.id, error = %e, "could not renew the worker-id lease");
                false
            }
        }
    }

    async fn release_and_retake(&mut self) -> bool {
        let sent = Instant::now();
        let id = match stampede_hot_redis::lease_worker_id(
            &self.conn,
            &self.prefix,
            self.node.as_str(),
            self.start,
            self.lease,
        )
        .await
        {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "could not lease a new worker id");
                return false;
            }
        };
        if let Some(ids) = &self.ids
            && let Err(e) = ids.set_worker(id)
        {
            tracing::error!(worker_id = id, error = %e, "cannot switch the id generator");
            return false;
        }
        tracing::info!(
            worker_id = id,
            old = self.id,
            "leased a new snowflake worker id"
        );
        self.id = id;
        self.gate.open_until(sent + self.lease / 2);
        true
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
