//! The outbox as a relay drains it (`OutboxStore`): one partition per outbox table of every
//! database (`database * tables_per_database + table`), each read in its own `seq` order on
//! its own database.

use crate::MysqlStore;
use crate::leases::{self, LeaseTable};
use crate::router::Shard;
use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::AssertSqlSafe;
use stampede_core::claim_ports::OutboxEvent;
use stampede_core::event_ports::{OutboxStore, PartitionLease};
use stampede_core::ports::StoreError;
use stampede_store_sql::text::{MARK_CHUNK, mark_published_sql, unpublished_events_sql};
use stampede_store_sql::{Columns, SqlRow, db_err};

impl MysqlStore {
    /// The shard of outbox partition `p`.
    fn outbox_shard(&self, partition: u32) -> Result<Shard, StoreError> {
        let tables = self.router().tables_per_database();
        let p = usize::try_from(partition).unwrap_or(usize::MAX);
        if tables == 0 || p >= tables * self.router().databases() {
            return Err(StoreError::Corrupt(format!(
                "no outbox partition {partition}"
            )));
        }
        Ok(Shard {
            database: p / tables,
            table: p % tables,
        })
    }
}

#[async_trait]
impl OutboxStore for MysqlStore {
    fn outbox_partitions(&self) -> u32 {
        let n = self.router().databases() * self.router().tables_per_database();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    async fn unpublished_events(
        &self,
        partition: u32,
        limit: u32,
    ) -> Result<Vec<(i64, OutboxEvent)>, StoreError> {
        let shard = self.outbox_shard(partition)?;
        // Table names come from the router, safe to interpolate.
        let sql = unpublished_events_sql(&shard.outbox_table());
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(self.pool(shard.database))
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
        let shard = self.outbox_shard(partition)?;
        let mut marked = 0;
        for chunk in seqs.chunks(MARK_CHUNK) {
            let sql = mark_published_sql(&shard.outbox_table(), chunk.len());
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(at_ms);
            for s in chunk {
                q = q.bind(*s);
            }
            marked += q
                .execute(self.pool(shard.database))
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
        let shard = self.outbox_shard(partition)?;
        let sql = format!(
            "DELETE FROM {} WHERE published_at_ms IS NOT NULL AND published_at_ms < ? \
             ORDER BY seq LIMIT ?",
            shard.outbox_table()
        );
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(before_ms)
            .bind(limit)
            .execute(self.pool(shard.database))
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
        let shard = self.outbox_shard(partition)?;
        let part = i64::try_from(shard.table).unwrap_or(i64::MAX);
        let pool = self.pool(shard.database);
        leases::take(pool, LeaseTable::Outbox, part, partition, owner, now, until).await
    }

    async fn release_outbox_partition(&self, lease: &PartitionLease) -> Result<(), StoreError> {
        let shard = self.outbox_shard(lease.partition)?;
        let part = i64::try_from(shard.table).unwrap_or(i64::MAX);
        leases::release(self.pool(shard.database), LeaseTable::Outbox, part, lease).await
    }
}
