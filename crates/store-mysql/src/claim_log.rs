//! `ClaimLogStore`: what the distributed persisters need to drain a template's Redis claim
//! log into MySQL exactly once, whatever crashes in between.
//!
//! 1. `insert_claimed` stores the coupons (and their events) on the users' shards with
//!    `INSERT IGNORE`: the unique keys `(user_id, template_id, seq)` and `event_id` turn a
//!    replayed batch into a no-op.
//! 2. `apply_claims` takes the batch's count off the template's stock and moves the template's
//!    `claim_log_pos` in the same statement, only if the position is still where the persister
//!    read it: a compare-and-set, so two persisters (or a replay) cannot apply a range twice.

use crate::MysqlStore;
use crate::coupons::{Duplicates, write_coupons};
use async_trait::async_trait;
use futures::future::join_all;
use sqlx::AssertSqlSafe;
use stampede_core::claim_ports::{ClaimLogStore, ClaimRecord};
use stampede_core::ports::StoreError;
use stampede_domain::ids::TemplateId;
use stampede_store_sql::{db_err, refused};

#[async_trait]
impl ClaimLogStore for MysqlStore {
    async fn insert_claimed(&self, claims: &[ClaimRecord]) -> Result<(), StoreError> {
        // One transaction per user shard; a shard that fails is simply replayed later.
        // Each shard runs to its end even when another fails, so no write is cancelled midway.
        let groups = self.by_user_shard(claims);
        let done = join_all(groups.iter().map(|(shard, g)| async move {
            let mut tx = self.pool(shard.database).begin().await.map_err(db_err)?;
            write_coupons(&mut tx, *shard, g, Duplicates::Skip).await?;
            tx.commit().await.map_err(db_err)
        }))
        .await;
        done.into_iter().collect()
    }

    async fn applied_position(&self, template: TemplateId) -> Result<String, StoreError> {
        let shard = self.template_shard(template).await?;
        let sql = format!(
            "SELECT claim_log_pos FROM {} WHERE id = ?",
            shard.templates_table()
        );
        let pos: Option<String> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(template.get())
            .fetch_optional(self.pool(shard.database))
            .await
            .map_err(db_err)?;
        // Filed in the directory but never written: as unknown as a template can be.
        pos.ok_or_else(|| refused(format!("unknown template {template}")))
    }

    async fn apply_claims(
        &self,
        template: TemplateId,
        from: &str,
        to: &str,
        count: i64,
    ) -> Result<bool, StoreError> {
        let shard = self.template_shard(template).await?;
        // One statement is one transaction: the row lock makes concurrent persisters queue,
        // and each re-checks the position on the row as the previous one left it.
        let sql = format!(
            "UPDATE {} SET stock = stock - ?, claim_log_pos = ? WHERE id = ? AND claim_log_pos = ?",
            shard.templates_table()
        );
        let matched = sqlx::query(AssertSqlSafe(sql))
            .bind(count)
            .bind(to)
            .bind(template.get())
            .bind(from)
            .execute(self.pool(shard.database))
            .await
            .map_err(db_err)?
            .rows_affected();
        if matched == 1 {
            return Ok(true);
        }
        // Nothing matched: someone else moved the position, unless the template is missing,
        // which must not pass for "already applied".
        self.applied_position(template).await?;
        Ok(false)
    }
}
