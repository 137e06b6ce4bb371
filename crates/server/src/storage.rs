//! Opens the configured system of record and hands out its ports; its readiness check and
//! (MySQL) the probe that feeds the database breaker.

use crate::background::Background;
use crate::config::{Backend, Settings};
use anyhow::Context;
use async_trait::async_trait;
use futures::future::BoxFuture;
use stampede_api::HealthCheck;
use stampede_core::claim_ports::{ClaimJournalStore, ClaimLogStore, CouponStore};
use stampede_core::distribution_ports::DistributionStore;
use stampede_core::event_ports::OutboxStore;
use stampede_core::flow::FlowRuleStore;
use stampede_core::ports::Dependency;
use stampede_core::ports::{AccountStore, TemplateStore};
use stampede_core::reminder_ports::ReminderStore;
use stampede_core::settlement_ports::SettlementStore;
use stampede_resilience::{Breaker, Breakers};
use stampede_store_mysql::{MysqlConfig, MysqlResilience, MysqlStore};
use stampede_store_sqlite::{SqliteOptions, SqliteStore};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Stores {
    pub templates: Arc<dyn TemplateStore>,
    pub accounts: Arc<dyn AccountStore>,
    pub coupons: Arc<dyn CouponStore>,
    pub distributions: Arc<dyn DistributionStore>,
    pub settlements: Arc<dyn SettlementStore>,
    pub reminders: Arc<dyn ReminderStore>,
    pub flow_rules: Arc<dyn FlowRuleStore>,
    /// The outbox as the event relay drains it.
    pub outbox: Arc<dyn OutboxStore>,
    /// Distributed mode's claim-log bookkeeping (MySQL only).
    pub claim_log: Option<Arc<dyn ClaimLogStore>>,
    /// Where the embedded claim journal applies claims (SQLite only).
    pub claim_journal: Option<Arc<dyn ClaimJournalStore>>,
    /// The MySQL store itself, when that is the backend (tests drop its databases).
    pub mysql: Option<MysqlStore>,
    /// The connection pools' occupancy, read when `/metrics` renders.
    pub pool_stats: PoolStats,
}

/// Reads the pools' occupancy (the backend's own pools).
pub type PoolStats = Arc<dyn Fn() -> Vec<stampede_core::telemetry::PoolGauge> + Send + Sync>;

/// Opens (and migrates) the storage the settings name, with breakers of its own (tools).
pub async fn open(settings: &Settings) -> anyhow::Result<Stores> {
    open_with(settings, &Breakers::new(settings.resilience.breaker())).await
}

/// [`open`], obeying the node's database breaker.
pub async fn open_with(settings: &Settings, breakers: &Breakers) -> anyhow::Result<Stores> {
    match settings.storage.backend {
        Backend::Sqlite => {
            let path = settings.sqlite_path();
            let store = SqliteStore::open(
                &path,
                SqliteOptions {
                    read_connections: settings.storage.sqlite_read_connections,
                    fsync_every_commit: settings.storage.sqlite_fsync,
                },
            )
            .await
            .with_context(|| format!("opening SQLite at {}", path.display()))?;
            let store = Arc::new(store);
            Ok(Stores {
                templates: store.clone(),
                accounts: store.clone(),
                coupons: store.clone(),
                distributions: store.clone(),
                settlements: store.clone(),
                reminders: store.clone(),
                flow_rules: store.clone(),
                outbox: store.clone(),
                claim_log: None,
                claim_journal: Some(store.clone()),
                mysql: None,
                pool_stats: Arc::new(move || store.pool_stats()),
            })
        }
        Backend::Mysql => {
            let m = &settings.storage.mysql;
            let cfg = MysqlConfig {
                databases: m.databases.clone(),
                tables_per_database: m.tables_per_database,
                max_connections_per_database: m.max_connections_per_database,
            };
            let r = &settings.resilience;
            let resilience = MysqlResilience {
                acquire_timeout: r.database_acquire,
                connect_timeout: r.database_connect,
                breaker: breakers.get(Dependency::Database).clone(),
            };
            let store = MysqlStore::open_with(&cfg, resilience)
                .await
                .context("opening MySQL")?;
            let shared = Arc::new(store.clone());
            Ok(Stores {
                templates: shared.clone(),
                accounts: shared.clone(),
                coupons: shared.clone(),
                distributions: shared.clone(),
                settlements: shared.clone(),
                reminders: shared.clone(),
                flow_rules: shared.clone(),
                outbox: shared.clone(),
                claim_log: Some(shared),
                claim_journal: None,
                pool_stats: {
                    let store = store.clone();
                    Arc::new(move || store.pool_stats())
                },
                mysql: Some(store),
            })
        }
    }
}

/// `/readyz` check of the system of record. `critical`: whether the node's core path needs
/// it (embedded: yes; distributed: claims go on without MySQL, so its loss only degrades).
pub struct DatabaseCheck {
    pub templates: Arc<dyn TemplateStore>,
    pub breaker: Option<Arc<Breaker>>,
    pub critical: bool,
}

#[async_trait]
impl HealthCheck for DatabaseCheck {
    fn name(&self) -> &'static str {
        Dependency::Database.as_str()
    }

    fn critical(&self) -> bool {
        self.critical
    }

    fn breaker(&self) -> Option<&'static str> {
        self.breaker.as_ref().map(|b| b.state().as_str())
    }

    async fn check(&self) -> Result<(), String> {
        self.templates.ping().await.map_err(|e| error_chain(&e))
    }
}

/// `/readyz` check of distributed mode's Redis: a `PING` through the node's connection, so
/// under its breaker (it doubles as the half-open probe). Critical: no claims without it.
pub struct RedisCheck(pub stampede_hot_redis::Connection);

#[async_trait]
impl HealthCheck for RedisCheck {
    fn name(&self) -> &'static str {
        Dependency::Redis.as_str()
    }

    fn critical(&self) -> bool {
        true
    }

    fn breaker(&self) -> Option<&'static str> {
        Some(self.0.breaker().state().as_str())
    }

    async fn check(&self) -> Result<(), String> {
        let mut conn = self.0.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| error_chain(&e))
    }
}

/// An error with its causes, for `/readyz` (operators need the driver's reason).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Probes every MySQL database each `interval` (each probe within `deadline`) so the
/// database breaker opens when MySQL goes down and closes when it is back, whether or not
/// requests come.
pub fn database_watch(store: MysqlStore, interval: Duration, deadline: Duration) -> Background {
    Box::new(move |token: CancellationToken| -> BoxFuture<'static, ()> {
        Box::pin(async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(interval) => {}
                }
                if let Err(e) = store.probe(deadline).await {
                    tracing::debug!(error = %e, "database probe failed");
                }
            }
        })
    })
}
