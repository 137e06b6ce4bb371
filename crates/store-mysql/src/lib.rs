//! MySQL/MariaDB adapter: Stampede's distributed system of record, N databases × M tables.
//!
//! Owns the schema and all SQL for templates (with their audit log and idempotency keys),
//! for user coupons and their outbox, for orders and their settlement rows, for users'
//! reminders (with their delivery leases), for distribution tasks (with their failed rows and
//! uploaded files), and for accounts, sessions and refresh tokens, behind the core's
//! `TemplateStore`, `CouponStore`, `ClaimLogStore`, `SettlementStore`, `ReminderStore`,
//! `DistributionStore` and `AccountStore` ports.
//!
//! Layout of the data:
//! - every database holds M copies of the per-shop tables (`templates_{t}`,
//!   `template_audit_{t}`, `idempotency_keys_{t}`, `distributions_{t}`,
//!   `distribution_failures_{t}`, `distribution_files_{t}`); a shop's rows all live in the one
//!   shard its `shop_id` routes to (`router`), so each write of a template is one local
//!   transaction, and so is a distribution batch's checkpoint with its stock change;
//! - and M copies of the per-user tables (`user_coupons_{t}`, `outbox_{t}`, `orders_{t}`,
//!   `settlements_{t}`, `reminders_{t}`), routed by `user_id` with the same router: a coupon
//!   and the event recording it are written in one local transaction, a user's coupons (or
//!   reminders) are one query on one table, and each step of an order (lock, redeem, release,
//!   refund, expiry) is one local transaction over the order, its settlement rows, its coupons
//!   and their events. A finishing distribution task writes its event to the outbox table its
//!   `shop_id` routes to, in the task's own transaction;
//! - one `reminder_leases` table per database: each `reminders_{t}` table is a reminder
//!   delivery partition, leased through its row there, so a delivery's lease check, its row
//!   updates and its `app` events are one local transaction (`reminders.rs`);
//! - `databases[0]` also holds the global tables: `template_directory` and
//!   `distribution_directory` (id → shop, so a lookup by id is routed, not broadcast),
//!   `order_directory` (order id → user, for the same reason, and so an order id serves one
//!   user only), the accounts tables and `flow_rules`.
//!
//! Queries that span shops (the admin lists, the end sweep, purging, the distribution runner's
//! and notifier's scans) send one query per database, covering its M tables with `UNION ALL`,
//! concurrently, and merge the answers.
//!
//! Claims in distributed mode go Redis claim log → persisters → `ClaimLogStore`: coupons are
//! inserted idempotently on the users' shards, then each template's stock and applied log
//! position move together in one compare-and-set (`claim_log.rs`). `CouponStore::
//! commit_claims`, the embedded group commit, also works here but is atomic per shard only.
//! Distribution batches follow the same two steps, with the task's `processed_rows` as the
//! compare-and-set position (`distributions.rs`).
//!
//! Affected-row counts: sqlx connects with `CLIENT_FOUND_ROWS`, so an `UPDATE` reports the
//! rows it *matched*, also those it left unchanged; the compare-and-set updates rely on it.
//!
//! Layout of the crate: `router` (shard rule), `connect` (URLs, pools, database creation),
//! `migrate` (per-shard migration runner; SQL in `migrations/`), `directory`, `templates` and
//! `listing` (the `TemplateStore`), `coupons` (the `CouponStore`), `claim_log` (the
//! `ClaimLogStore`), `settlements` (the `SettlementStore`), `reminders` (the
//! `ReminderStore`), `distributions` (the `DistributionStore`), `accounts` (the
//! `AccountStore`), `flow` (the `FlowRuleStore`), `error` (one mapping from driver errors
//! to `StoreError`).
//!
//! Failing fast: every pool waits at most `MysqlResilience::acquire_timeout` for a
//! connection, and while the node's database breaker is not closed every call gets a pool
//! that is already closed, so it fails at once with `StoreError::Unavailable { Database }`.
//! The breaker is fed by `probe` (a `SELECT 1` on every database under a deadline), which
//! the server runs every `resilience.probe_interval_ms`: the call sites of the SQL modules
//! stay as they are, and one probe at a time decides whether a down database is back.

mod accounts;
mod claim_log;
mod connect;
mod coupons;
mod directory;
mod distributions;
mod error;
mod flow;
mod leases;
mod listing;
mod migrate;
mod outbox;
mod reminders;
mod router;
mod settlements;
mod templates;

pub use error::ConfigError;
pub use router::{MAX_SHARDS, Shard, ShardRouter};

use connect::Target;
use directory::DirectoryCache;
use futures::future::try_join_all;
use sqlx::AssertSqlSafe;
use sqlx::mysql::MySqlPool;
use stampede_core::ports::StoreError;
use stampede_resilience::{Breaker, BreakerConfig, FailureKind};
use stampede_store_sql::{db_err, refused};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct MysqlConfig {
    /// One URL per database, e.g. "mysql://root@127.0.0.1:3306/stampede_0". databases[0] also
    /// holds the global (unsharded) tables. The databases may live on different servers.
    pub databases: Vec<String>,
    /// M ≥ 1 tables of each sharded kind per database.
    pub tables_per_database: u32,
    pub max_connections_per_database: u32,
}

/// How the store fails fast when a database is down or slow.
#[derive(Clone, Debug)]
pub struct MysqlResilience {
    /// Longest wait for a pooled connection (so for any statement to start).
    pub acquire_timeout: Duration,
    /// Longest wait for the first connection at `open`.
    pub connect_timeout: Duration,
    /// The node's database breaker: while it is not closed, calls fail at once.
    pub breaker: Arc<Breaker>,
}

impl Default for MysqlResilience {
    /// The driver's patient defaults and a breaker of the store's own (tools, tests).
    fn default() -> Self {
        Self {
            acquire_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            breaker: Arc::new(Breaker::new(
                stampede_core::ports::Dependency::Database,
                BreakerConfig::default(),
            )),
        }
    }
}

/// A cheap handle (clones share the pools) on all configured databases.
#[derive(Clone)]
pub struct MysqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// One pool per database, in config order; `pools[0]` holds the global tables.
    pools: Vec<MySqlPool>,
    /// Closed from the start: handed out instead of `pools` while the breaker is not closed.
    tripped: MySqlPool,
    /// One connection per database for `probe`, apart from `pools`, so a pool saturated by
    /// a burst is not mistaken for a database that is down.
    probes: Vec<MySqlPool>,
    breaker: Arc<Breaker>,
    targets: Vec<Target>,
    router: ShardRouter,
    directory: DirectoryCache,
    distribution_directory: DirectoryCache,
}

impl MysqlStore {
    /// Connects (creating each database with CREATE DATABASE IF NOT EXISTS when missing, by
    /// connecting to the server without a database) and applies pending migrations.
    pub async fn open(cfg: &MysqlConfig) -> Result<MysqlStore, StoreError> {
        Self::open_with(cfg, MysqlResilience::default()).await
    }

    /// [`MysqlStore::open`] with the server's timeouts and database breaker.
    pub async fn open_with(
        cfg: &MysqlConfig,
        resilience: MysqlResilience,
    ) -> Result<MysqlStore, StoreError> {
        let databases = u32::try_from(cfg.databases.len())
            .map_err(|_| refused("too many databases configured"))?;
        let router = ShardRouter::new(databases, cfg.tables_per_database)
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        if cfg.max_connections_per_database == 0 {
            return Err(refused("max_connections_per_database must be at least 1"));
        }
        let targets = cfg
            .databases
            .iter()
            .map(|u| Target::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        // Two entries for one database would make two shards share tables.
        let mut seen = HashSet::new();
        if !targets.iter().all(|t| seen.insert(t.identity())) {
            return Err(refused("the same database is configured twice"));
        }
        let pools = try_join_all(targets.iter().map(|t| {
            t.connect(
                cfg.max_connections_per_database,
                resilience.acquire_timeout,
                resilience.connect_timeout,
            )
        }))
        .await?;
        // `targets` is not empty: the router refused zero databases above.
        let tripped = match targets.first() {
            Some(t) => t.tripped_pool().await,
            None => return Err(refused("no database configured")),
        };
        let probes = targets
            .iter()
            .map(|t| {
                sqlx::mysql::MySqlPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(resilience.acquire_timeout)
                    .connect_lazy_with(t.options.clone())
            })
            .collect();
        let store = MysqlStore {
            inner: Arc::new(Inner {
                pools,
                tripped,
                probes,
                breaker: resilience.breaker,
                targets,
                router,
                directory: DirectoryCache::default(),
                distribution_directory: DirectoryCache::default(),
            }),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations to every database; returns how many (migration, database)
    /// pairs it applied, so 0 means everything was up to date.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let tables = self.router().tables_per_database();
        let runs = self
            .inner
            .pools
            .iter()
            .enumerate()
            .map(|(i, pool)| migrate::migrate_database(pool, i, tables));
        Ok(try_join_all(runs).await?.into_iter().sum())
    }

    pub fn router(&self) -> &ShardRouter {
        &self.inner.router
    }

    /// Drops every configured database (tests clean up with it). The store is unusable
    /// afterwards, through every clone.
    pub async fn drop_databases(&self) -> Result<(), StoreError> {
        for (pool, target) in self.inner.pools.iter().zip(&self.inner.targets) {
            sqlx::raw_sql(AssertSqlSafe(target.drop_statement()))
                .execute(pool)
                .await
                .map_err(db_err)?;
            pool.close().await;
        }
        Ok(())
    }

    fn pool(&self, database: usize) -> &MySqlPool {
        if self.inner.breaker.state() != stampede_resilience::BreakerState::Closed {
            return &self.inner.tripped;
        }
        // Shards come from the router, which never names a database past the configured ones.
        &self.inner.pools[database]
    }

    /// Each database's pool occupancy (label: its index), for `/metrics`.
    pub fn pool_stats(&self) -> Vec<stampede_core::telemetry::PoolGauge> {
        self.inner
            .pools
            .iter()
            .enumerate()
            .map(|(i, pool)| stampede_store_sql::pool_gauge(i.to_string(), pool))
            .collect()
    }

    /// The database breaker this store obeys.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.inner.breaker
    }

    /// One `SELECT 1` on every database, concurrently, each within `deadline`, on a
    /// connection of its own (not the request pools), as the breaker admits it: closed, it counts like a call; open for long
    /// enough, it is the one probe that decides; open, it is refused at once.
    pub async fn probe(&self, deadline: Duration) -> Result<(), StoreError> {
        let permit = self.inner.breaker.admit_call()?;
        let checks = self
            .inner
            .probes
            .iter()
            .enumerate()
            .map(|(i, pool)| async move {
                let started = std::time::Instant::now();
                match tokio::time::timeout(deadline, sqlx::query("SELECT 1").execute(pool)).await {
                    Ok(r) => {
                        metrics::histogram!(
                            stampede_core::telemetry::DB_PROBE_SECONDS,
                            "database" => i.to_string()
                        )
                        .record(started.elapsed().as_secs_f64());
                        r.map(|_| ()).map_err(db_err)
                    }
                    Err(_) => Err(stampede_resilience::deadline_exceeded(
                        stampede_core::ports::Dependency::Database,
                        deadline,
                    )),
                }
            });
        let outcome = try_join_all(checks).await.map(|_| ());
        match &outcome {
            Ok(()) => permit.success(),
            Err(e) => {
                permit.failure(stampede_resilience::classify(e).unwrap_or(FailureKind::Unreachable))
            }
        }
        outcome
    }

    /// The database with the global tables.
    fn global(&self) -> &MySqlPool {
        self.pool(0)
    }
}
