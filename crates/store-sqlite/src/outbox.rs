//! The outbox as a relay drains it (`OutboxStore`): SQLite has one outbox table, so one
//! partition, read in `seq` order.

use crate::SqliteStore;
use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::AssertSqlSafe;
use stampede_core::claim_ports::OutboxEvent;
use stampede_core::event_ports::{OutboxStore, PartitionLease};
use stampede_core::ports::StoreError;
use stampede_domain::time::to_ms;
use stampede_store_sql::{Columns, SqlRow, db_err, refused};

/// Positions marked per statement (well under SQLite's variable limit).
const MARK_CHUNK: usize = 500;

fn only_partition(partition: u32) -> Result<(), StoreError> {
    if partition == 0 {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "no outbox partition {partition}: the embedded store has one"
        )))
    }
}

#[async_trait]
impl OutboxStore for SqliteStore {
    fn outbox_partitions(&self) -> u32 {
        1
    }

    async fn unpublished_events(
        &self,
        partition: u32,
        limit: u32,
    ) -> Result<Vec<(i64, OutboxEvent)>, StoreError> {
        only_partition(partition)?;
        let sql = format!(
            "SELECT seq, {} FROM outbox WHERE published_at_ms IS NULL ORDER BY seq LIMIT ?",
            OutboxEvent::COLUMNS
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| Ok((r.int("seq")?, OutboxEvent::read(r)?)))
            .collect()
    }

    async fn mark_published(
        &self,
        partition: u32,
        seqs: &[i64],
        at_ms: i64,
    ) -> Result<u64, StoreError> {
        only_partition(partition)?;
        let mut marked = 0;
        for chunk in seqs.chunks(MARK_CHUNK) {
            let sql = format!(
                "UPDATE outbox SET published_at_ms = ? \
                 WHERE published_at_ms IS NULL AND seq IN ({})",
                vec!["?"; chunk.len()].join(",")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(at_ms);
            for s in chunk {
                q = q.bind(*s);
            }
            marked += q
                .execute(&self.writer)
                .await
                .map_err(db_err)?
                .rows_affected();
        }
        Ok(marked)
    }

    async fn purge_published(
        &self,
        partition: u32,
        before_ms: i64,
        limit: u32,
    ) -> Result<u64, StoreError> {
        only_partition(partition)?;
        let done = sqlx::query(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox \
             WHERE published_at_ms IS NOT NULL AND published_at_ms < ? ORDER BY seq LIMIT ?)",
        )
        .bind(before_ms)
        .bind(i64::from(limit))
        .execute(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected())
    }

    async fn lease_outbox_partition(
        &self,
        partition: u32,
        owner: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Option<PartitionLease>, StoreError> {
        only_partition(partition)?;
        check_owner(owner)?;
        let token: Option<i64> = sqlx::query_scalar(
            "INSERT INTO outbox_leases (part, owner, token, until_ms) VALUES (?1, ?2, 1, ?3) \
             ON CONFLICT (part) DO UPDATE SET \
             token = CASE WHEN owner = excluded.owner THEN token ELSE token + 1 END, \
             owner = excluded.owner, until_ms = excluded.until_ms \
             WHERE outbox_leases.owner = excluded.owner OR outbox_leases.until_ms <= ?4 \
             RETURNING token",
        )
        .bind(i64::from(partition))
        .bind(owner)
        .bind(to_ms(until))
        .bind(to_ms(now))
        .fetch_optional(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(token.map(|token| PartitionLease {
            partition,
            owner: owner.to_owned(),
            token,
        }))
    }

    async fn release_outbox_partition(&self, lease: &PartitionLease) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox_leases SET until_ms = 0 WHERE part = ? AND owner = ? AND token = ?",
        )
        .bind(i64::from(lease.partition))
        .bind(lease.owner.as_str())
        .bind(lease.token)
        .execute(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}

/// The lease owner's rules (the same in every adapter: MySQL's column is 64 characters).
fn check_owner(owner: &str) -> Result<(), StoreError> {
    if owner.is_empty() || owner.chars().count() > 64 || owner.ends_with(' ') {
        return Err(refused(format!(
            "lease owner {owner:?}: 1 to 64 characters, no trailing space"
        )));
    }
    Ok(())
}
