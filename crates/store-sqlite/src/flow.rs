//! `FlowRuleStore` on SQLite: the one-row `flow_rules` table; a save bumps the version in
//! the same statement that writes the rules.

use crate::SqliteStore;
use async_trait::async_trait;
use jiff::Timestamp;
use stampede_core::flow::{FlowRuleStore, StoredFlowRules};
use stampede_core::ports::StoreError;
use stampede_domain::flow::FlowRules;
use stampede_domain::time::{from_ms, to_ms};
use stampede_store_sql::db_err;

#[async_trait]
impl FlowRuleStore for SqliteStore {
    async fn flow_rules(&self) -> Result<Option<StoredFlowRules>, StoreError> {
        let row: Option<(i64, String, i64)> =
            sqlx::query_as("SELECT version, rules, updated_at_ms FROM flow_rules WHERE id = 1")
                .fetch_optional(&self.reader)
                .await
                .map_err(db_err)?;
        row.map(|(version, rules, at)| decode(version, &rules, at))
            .transpose()
    }

    async fn flow_rules_version(&self) -> Result<i64, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT version FROM flow_rules WHERE id = 1")
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?;
        Ok(v.unwrap_or(0))
    }

    async fn save_flow_rules(&self, rules: &FlowRules, now: Timestamp) -> Result<i64, StoreError> {
        let json = serde_json::to_string(rules).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query_scalar(
            "INSERT INTO flow_rules (id, version, rules, updated_at_ms) VALUES (1, 1, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET version = flow_rules.version + 1, \
             rules = excluded.rules, updated_at_ms = excluded.updated_at_ms RETURNING version",
        )
        .bind(json)
        .bind(to_ms(now))
        .fetch_one(&self.writer)
        .await
        .map_err(db_err)
    }
}

/// A stored row back into rules.
fn decode(version: i64, rules: &str, at_ms: i64) -> Result<StoredFlowRules, StoreError> {
    let rules: FlowRules =
        serde_json::from_str(rules).map_err(|e| StoreError::Corrupt(format!("flow_rules: {e}")))?;
    Ok(StoredFlowRules {
        version,
        rules,
        updated_at: from_ms(at_ms),
    })
}
