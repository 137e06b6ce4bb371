//! The outbox as a relay drains it (`OutboxStore`): SQLite has one outbox table, so one
//! partition, read in `seq` order.

use crate::SqliteStore;
use crate::leases::{self, LeaseTable};
use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::AssertSqlSafe;
use stampede_core::claim_ports::OutboxEvent;
use stampede_core::event_ports::{OutboxStore, PartitionLease};
use stampede_core::ports::StoreError;
use stampede_store_sql::text::{MARK_CHUNK, mark_published_sql, unpublished_events_sql};
use stampede_store_sql::{Columns, SqlRow, db_err};

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
        let rows = sqlx::query(AssertSqlSafe(unpublished_events_sql("outbox")))
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
            let sql = mark_published_sql("outbox", chunk.len());
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
        leases::take(
            &self.writer,
            LeaseTable::Outbox,
            partition,
            owner,
            now,
            until,
        )
        .await
    }

    async fn release_outbox_partition(&self, lease: &PartitionLease) -> Result<(), StoreError> {
        only_partition(lease.partition)?;
        leases::release(&self.writer, LeaseTable::Outbox, lease).await
    }
}
