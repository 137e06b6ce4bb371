//! `FlowRuleStore` on MySQL: the one-row `flow_rules` table among the global tables of
//! `databases[0]`; a save bumps the version and reads it back in one transaction.

use crate::MysqlStore;
use async_trait::async_trait;
use jiff::Timestamp;
use stampede_core::flow::{FlowRuleStore, StoredFlowRules};
use stampede_core::ports::StoreError;
use stampede_domain::flow::FlowRules;
use stampede_domain::time::{from_ms, to_ms};
use stampede_store_sql::db_err;

#[async_trait]
impl FlowRuleStore for MysqlStore {
    async fn flow_rules(&self) -> Result<Option<StoredFlowRules>, StoreError> {
        let row: Option<(i64, String, i64)> =
            sqlx::query_as("SELECT version, rules, updated_at_ms FROM flow_rules WHERE id = 1")
                .fetch_optional(self.global())
                .await
                .map_err(db_err)?;
        let Some((version, rules, at)) = row else {
            return Ok(None);
        };
        let rules: FlowRules = serde_json::from_str(&rules)
            .map_err(|e| StoreError::Corrupt(format!("flow_rules: {e}")))?;
        Ok(Some(StoredFlowRules {
            version,
            rules,
            updated_at: from_ms(at),
        }))
    }

    async fn flow_rules_version(&self) -> Result<i64, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT version FROM flow_rules WHERE id = 1")
            .fetch_optional(self.global())
            .await
            .map_err(db_err)?;
        Ok(v.unwrap_or(0))
    }

    async fn save_flow_rules(&self, rules: &FlowRules, now: Timestamp) -> Result<i64, StoreError> {
        let json = serde_json::to_string(rules).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.global().begin().await.map_err(db_err)?;
        sqlx::query(
            "INSERT INTO flow_rules (id, version, rules, updated_at_ms) VALUES (1, 1, ?, ?) \
             ON DUPLICATE KEY UPDATE version = version + 1, rules = VALUES(rules), \
             updated_at_ms = VALUES(updated_at_ms)",
        )
        .bind(json)
        .bind(to_ms(now))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        // The row stays locked by this transaction, so this reads the version it wrote.
        let version: i64 = sqlx::query_scalar("SELECT version FROM flow_rules WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(version)
    }
}
