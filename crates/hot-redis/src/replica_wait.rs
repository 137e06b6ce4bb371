//! Acknowledging only what a replica holds: Redis replicates asynchronously, so a claim the
//! master ran can vanish in a failover if no replica had it yet. With a [`ReplicaWait`], the
//! claim path sends `WAIT <replicas> <timeout>` on the connection of its write before
//! answering, and the persister does the same before it copies log entries into MySQL; a
//! short count makes the claim's outcome unknown (the client retries with its key) and the
//! persister pass wait. `WAIT` counts the writes of its own connection, hence
//! [`Connection::pinned`].

use crate::Connection;
use stampede_core::ports::{Dependency, StoreError};
use std::time::Duration;

/// Counter: `WAIT`s that returned fewer replicas than asked (a claim answered
/// `OUTCOME_UNKNOWN`, or a persister pass put off).
pub const SHORT: &str = "stampede_redis_replica_wait_short_total";

/// How many replicas must hold a write before it counts, and how long to wait for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaWait {
    pub replicas: u32,
    pub timeout: Duration,
}

impl ReplicaWait {
    /// Waits until `replicas` replicas hold every write sent so far on `conn` (a pinned
    /// connection). Fewer within the timeout, or no answer: `OutcomeUnknown`, since the
    /// writes happened on the master and may or may not survive a failover.
    pub async fn confirm(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut c = conn.clone();
        let unknown = |source: Box<dyn std::error::Error + Send + Sync>| {
            metrics::counter!(SHORT).increment(1);
            StoreError::OutcomeUnknown {
                dependency: Dependency::Redis,
                source,
            }
        };
        let acked: i64 = redis::cmd("WAIT")
            .arg(self.replicas)
            .arg(u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut c)
            .await
            .map_err(|e| unknown(Box::new(e)))?;
        if acked >= i64::from(self.replicas) {
            Ok(())
        } else {
            Err(unknown(
                format!(
                    "{acked} of {} replicas confirmed the write within {} ms",
                    self.replicas,
                    self.timeout.as_millis()
                )
                .into(),
            ))
        }
    }
}
