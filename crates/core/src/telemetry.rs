//! Names of the metrics several crates record, and the helpers that record them, so each
//! name has one spelling (dashboards and alert rules in `deploy/` depend on them).

use std::time::Duration;

/// Histogram: items per group commit (`queue` label says which queue).
pub const GROUP_COMMIT_BATCH: &str = "stampede_group_commit_batch_size";
/// Histogram: seconds one group commit took (write + sync, or one transaction).
pub const GROUP_COMMIT_SECONDS: &str = "stampede_group_commit_seconds";

/// Group-commit queues, the values of the `queue` label.
pub mod queue {
    /// The embedded claim journal: one write + `fdatasync` per batch of claims.
    pub const CLAIM_JOURNAL: &str = "claim_journal";
    /// The journal's applier: one SQLite transaction per batch of journaled claims.
    pub const CLAIM_APPLY: &str = "claim_apply";
    /// Claims committed straight to SQLite (the journal turned off).
    pub const CLAIMS: &str = "claims";
    /// SQLite's write queue: settlement steps, distribution batches, reminder deliveries.
    pub const SQLITE_WRITES: &str = "sqlite_writes";
}

/// Records one group commit of `size` items that took `took`.
pub fn group_commit(queue: &'static str, size: usize, took: Duration) {
    metrics::histogram!(GROUP_COMMIT_BATCH, "queue" => queue).record(size as f64);
    metrics::histogram!(GROUP_COMMIT_SECONDS, "queue" => queue).record(took.as_secs_f64());
}

/// One connection pool's occupancy, as `/metrics` publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolGauge {
    /// `0`, `1`, … for MySQL's databases; `sqlite_writer` / `sqlite_reader` embedded.
    pub database: String,
    pub in_use: u32,
    pub idle: u32,
    pub max: u32,
}

/// Gauge: connections of a pool by `state` (`in_use`, `idle`).
pub const POOL_CONNECTIONS: &str = "stampede_db_pool_connections";
/// Gauge: the most connections a pool opens.
pub const POOL_MAX: &str = "stampede_db_pool_max_connections";
/// Histogram: seconds of the health probe's `SELECT 1` per MySQL database, a round trip
/// measured every probe interval whatever the load.
pub const DB_PROBE_SECONDS: &str = "stampede_db_probe_seconds";

/// Publishes the pools' occupancy.
pub fn publish_pools(pools: &[PoolGauge]) {
    for p in pools {
        let db = p.database.clone();
        metrics::gauge!(POOL_CONNECTIONS, "database" => db.clone(), "state" => "in_use")
            .set(f64::from(p.in_use));
        metrics::gauge!(POOL_CONNECTIONS, "database" => db.clone(), "state" => "idle")
            .set(f64::from(p.idle));
        metrics::gauge!(POOL_MAX, "database" => db).set(f64::from(p.max));
    }
}
