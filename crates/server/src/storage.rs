//! Opens the configured system of record and hands out its ports.

use crate::config::{Backend, Settings};
use anyhow::Context;
use async_trait::async_trait;
use stampede_api::HealthCheck;
use stampede_core::claim_ports::{ClaimLogStore, CouponStore};
use stampede_core::distribution_ports::DistributionStore;
use stampede_core::flow::FlowRuleStore;
use stampede_core::ports::{AccountStore, TemplateStore};
use stampede_core::reminder_ports::ReminderStore;
use stampede_core::settlement_ports::SettlementStore;
use stampede_store_mysql::{MysqlConfig, MysqlStore};
use stampede_store_sqlite::{SqliteOptions, SqliteStore};
use std::sync::Arc;

pub struct Stores {
    pub templates: Arc<dyn TemplateStore>,
    pub accounts: Arc<dyn AccountStore>,
    pub coupons: Arc<dyn CouponStore>,
    pub distributions: Arc<dyn DistributionStore>,
    pub settlements: Arc<dyn SettlementStore>,
    pub reminders: Arc<dyn ReminderStore>,
    pub flow_rules: Arc<dyn FlowRuleStore>,
    /// Distributed mode's claim-log bookkeeping (MySQL only).
    pub claim_log: Option<Arc<dyn ClaimLogStore>>,
    /// The MySQL store itself, when that is the backend (tests drop its databases).
    pub mysql: Option<MysqlStore>,
}

/// Opens (and migrates) the storage the settings name.
pub async fn open(settings: &Settings) -> anyhow::Result<Stores> {
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
                flow_rules: store,
                claim_log: None,
                mysql: None,
            })
        }
        Backend::Mysql => {
            let m = &settings.storage.mysql;
            let cfg = MysqlConfig {
                databases: m.databases.clone(),
                tables_per_database: m.tables_per_database,
                max_connections_per_database: m.max_connections_per_database,
            };
            let store = MysqlStore::open(&cfg).await.context("opening MySQL")?;
            let shared = Arc::new(store.clone());
            Ok(Stores {
                templates: shared.clone(),
                accounts: shared.clone(),
                coupons: shared.clone(),
                distributions: shared.clone(),
                settlements: shared.clone(),
                reminders: shared.clone(),
                flow_rules: shared.clone(),
                claim_log: Some(shared),
                mysql: Some(store),
            })
        }
    }
}

/// `/readyz` check of the system of record.
pub struct DatabaseCheck(pub Arc<dyn TemplateStore>);

#[async_trait]
impl HealthCheck for DatabaseCheck {
    fn name(&self) -> &'static str {
        "database"
    }

    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}
