//! `ReminderStore`: users' reminders on the shard of the *user* (`reminders_{t}`, next to their
//! coupons and outbox), so setting, deleting and listing a user's reminders each touch one
//! table, and a delivery's `app` events are written with it in one local transaction.
//!
//! Delivery partitions are the shard tables, numbered in `ShardRouter::all()` order
//! (`p = database × M + table`). A partition's lease is the `reminder_leases` row of its
//! database whose `part` is its table index, so the lease check of `record_deliveries` and
//! the writes it fences are one local transaction.
//!
//! Bits are `u64` in the domain but only 36 are used: they are stored in signed `BIGINT`s, and
//! every mask (the complement included) is computed here and bound, since MySQL's `~` yields
//! an unsigned 64-bit value.

use crate::MysqlStore;
use crate::coupons::{CHUNK_ROWS, Q, insert_records};
use crate::leases::{self, LeaseTable};
use crate::router::{MAX_SHARDS, Shard};
use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::AssertSqlSafe;
use sqlx::mysql::{MySqlConnection, MySqlRow};
use stampede_core::claim_ports::OutboxEvent;
use stampede_core::ports::StoreError;
use stampede_core::records::{ReminderRecord, stored_set};
use stampede_core::reminder_ports::{
    DeliveryError, PartitionLease, ReminderRow, ReminderStore, RowUpdate,
};
use stampede_domain::ids::{TemplateId, UserId};
use stampede_domain::reminder::{Reminder, ReminderSet};
use stampede_domain::time::to_ms;
use stampede_store_sql::{SqlRow, db_err, refused};

const COLUMNS: &str = ReminderRecord::COLUMNS;

/// Every bit a reminder can use.
fn valid_bits() -> u64 {
    ReminderSet::from_bits(u64::MAX).bits()
}

/// A set of reminder bits as stored (they fit: 36 bits are used).
fn stored(bits: u64) -> Result<i64, StoreError> {
    i64::try_from(bits).map_err(|_| refused(format!("reminder bits {bits:#x} exceed a BIGINT")))
}

fn row_of(r: &MySqlRow) -> Result<ReminderRow, StoreError> {
    ReminderRecord::read(r)?.into_row()
}

/// The `part` of a shard's lease row.
fn part(shard: Shard) -> i64 {
    // A table index is below MAX_SHARDS.
    shard.table as i64
}

/// One multi-table `UPDATE` applying `rows` `RowUpdate`s, joined by primary key to a derived
/// table of bound values (an upsert could create rows that were never set). The `CAST`s type
/// the placeholders as `BIGINT`, so ids compare as integers, not as strings or doubles.
/// Placeholders: five per row, then `now`.
fn joined_update(table: &str, rows: usize) -> String {
    let first = "SELECT CAST(? AS SIGNED) AS user_id, CAST(? AS SIGNED) AS template_id, \
                 CAST(? AS SIGNED) AS read_bits, CAST(? AS SIGNED) AS done, \
                 CAST(? AS SIGNED) AS next_due";
    let more = " UNION ALL SELECT CAST(? AS SIGNED), CAST(? AS SIGNED), CAST(? AS SIGNED), \
                CAST(? AS SIGNED), CAST(? AS SIGNED)";
    // The two assignments read no column the other writes, so their order does not matter.
    format!(
        "UPDATE {table} r JOIN ({first}{}) u \
         ON r.user_id = u.user_id AND r.template_id = u.template_id \
         SET r.sent = r.sent | u.done, \
         r.next_due_ms = CASE WHEN r.bits = u.read_bits THEN u.next_due ELSE ? END",
        more.repeat(rows.saturating_sub(1))
    )
}

fn bind_update(q: Q, u: &RowUpdate) -> Result<Q, StoreError> {
    Ok(q.bind(u.user_id.get())
        .bind(u.template_id.get())
        .bind(stored_set(u.read_bits))
        .bind(stored_set(u.done))
        .bind(u.next_due.map(to_ms)))
}

/// Applies `updates` to `shard`'s reminders inside the caller's transaction, in as few
/// statements as the fixed chunk sizes allow (each size's text stays prepared).
async fn apply_updates(
    conn: &mut MySqlConnection,
    shard: Shard,
    updates: &[RowUpdate],
    now_ms: i64,
) -> Result<(), StoreError> {
    let table = shard.reminders_table();
    let mut rest = updates;
    for size in CHUNK_ROWS {
        if rest.len() < size {
            continue;
        }
        let sql = joined_update(&table, size);
        while let Some((chunk, tail)) = rest.split_at_checked(size) {
            let mut q: Q = sqlx::query(AssertSqlSafe(sql.clone()));
            for u in chunk {
                q = bind_update(q, u)?;
            }
            q.bind(now_ms).execute(&mut *conn).await.map_err(db_err)?;
            rest = tail;
        }
    }
    Ok(())
}

impl MysqlStore {
    /// The shard table of partition `p`.
    fn partition(&self, p: u32) -> Result<Shard, StoreError> {
        let router = self.router();
        let tables = router.tables_per_database();
        let p = p as usize;
        if p >= router.databases() * tables {
            return Err(refused(format!("no reminder partition {p}")));
        }
        Ok(Shard {
            database: p / tables,
            table: p % tables,
        })
    }
}

#[async_trait]
impl ReminderStore for MysqlStore {
    /// `claim_start` and due times are kept to the millisecond.
    async fn set_reminder(
        &self,
        user: UserId,
        template: TemplateId,
        claim_start: Timestamp,
        r: Reminder,
    ) -> Result<(), StoreError> {
        let shard = self.router().route(user.get());
        let bit = stored(r.bit())?;
        let others = stored(!r.bit() & valid_bits())?;
        let due = to_ms(r.remind_at(claim_start));
        // Each assignment reads only its own column, so the left-to-right evaluation of
        // ON DUPLICATE KEY UPDATE cannot feed one an already-updated value.
        let sql = format!(
            "INSERT INTO {} ({COLUMNS}) VALUES (?, ?, ?, ?, 0, ?) \
             ON DUPLICATE KEY UPDATE bits = bits | ?, sent = sent & ?, \
             next_due_ms = LEAST(COALESCE(next_due_ms, ?), ?)",
            shard.reminders_table()
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(user.get())
            .bind(template.get())
            .bind(to_ms(claim_start))
            .bind(bit)
            .bind(due)
            .bind(bit)
            .bind(others)
            .bind(due)
            .bind(due)
            .execute(self.pool(shard.database))
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn delete_reminder(
        &self,
        user: UserId,
        template: TemplateId,
        r: Reminder,
    ) -> Result<bool, StoreError> {
        let shard = self.router().route(user.get());
        let sql = format!(
            "UPDATE {} SET bits = bits & ? \
             WHERE user_id = ? AND template_id = ? AND (bits & ?) <> 0",
            shard.reminders_table()
        );
        let matched = sqlx::query(AssertSqlSafe(sql))
            .bind(stored(!r.bit() & valid_bits())?)
            .bind(user.get())
            .bind(template.get())
            .bind(stored(r.bit())?)
            .execute(self.pool(shard.database))
            .await
            .map_err(db_err)?
            .rows_affected();
        Ok(matched == 1)
    }

    /// By template id.
    async fn user_reminders(&self, user: UserId) -> Result<Vec<ReminderRow>, StoreError> {
        let shard = self.router().route(user.get());
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE user_id = ? AND bits <> 0 ORDER BY template_id",
            shard.reminders_table()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(user.get())
            .fetch_all(self.pool(shard.database))
            .await
            .map_err(db_err)?;
        rows.iter().map(row_of).collect()
    }

    fn partitions(&self) -> u32 {
        let router = self.router();
        // N × M ≤ MAX_SHARDS, checked when the router was built.
        u32::try_from(router.databases() * router.tables_per_database()).unwrap_or(MAX_SHARDS)
    }

    async fn purge_reminders(
        &self,
        p: u32,
        started_before: Timestamp,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let shard = self.partition(p)?;
        let sql = format!(
            "DELETE FROM {} WHERE claim_start_ms < ? LIMIT ?",
            shard.reminders_table()
        );
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(to_ms(started_before))
            .bind(i64::from(limit))
            .execute(self.pool(shard.database))
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected())
    }

    async fn any_due(&self, p: u32, now: Timestamp) -> Result<bool, StoreError> {
        let shard = self.partition(p)?;
        let sql = format!(
            "SELECT 1 FROM {} WHERE next_due_ms <= ? LIMIT 1",
            shard.reminders_table()
        );
        let found = sqlx::query(AssertSqlSafe(sql))
            .bind(to_ms(now))
            .fetch_optional(self.pool(shard.database))
            .await
            .map_err(db_err)?;
        Ok(found.is_some())
    }

    async fn lease_partition(
        &self,
        p: u32,
        owner: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Option<PartitionLease>, StoreError> {
        let shard = self.partition(p)?;
        let pool = self.pool(shard.database);
        leases::take(
            pool,
            LeaseTable::Reminders,
            part(shard),
            p,
            owner,
            now,
            until,
        )
        .await
    }

    async fn release_partition(&self, lease: &PartitionLease) -> Result<(), StoreError> {
        let shard = self.partition(lease.partition)?;
        let pool = self.pool(shard.database);
        leases::release(pool, LeaseTable::Reminders, part(shard), lease).await
    }

    /// Ties on `next_due` by user, then template (the order of the `next_due_ms` index).
    async fn due_reminders(
        &self,
        p: u32,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<ReminderRow>, StoreError> {
        let shard = self.partition(p)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE next_due_ms <= ? \
             ORDER BY next_due_ms, user_id, template_id LIMIT ?",
            shard.reminders_table()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(to_ms(now))
            .bind(limit)
            .fetch_all(self.pool(shard.database))
            .await
            .map_err(db_err)?;
        rows.iter().map(row_of).collect()
    }

    /// Every update must be of a row of the lease's partition (else nothing is written).
    async fn record_deliveries(
        &self,
        lease: &PartitionLease,
        lease_until: Timestamp,
        updates: &[RowUpdate],
        events: &[OutboxEvent],
        now: Timestamp,
    ) -> Result<(), DeliveryError> {
        let shard = self.partition(lease.partition)?;
        if let Some(u) = updates
            .iter()
            .find(|u| self.router().route(u.user_id.get()) != shard)
        {
            return Err(refused(format!(
                "user {} is not in reminder partition {}",
                u.user_id, lease.partition
            ))
            .into());
        }
        let mut tx = self.pool(shard.database).begin().await.map_err(db_err)?;
        // The row lock fences: a node taking the lease over waits for this commit, and one
        // that took it before makes the token differ.
        let held: Option<(String, i64)> =
            sqlx::query_as("SELECT owner, token FROM reminder_leases WHERE part = ? FOR UPDATE")
                .bind(part(shard))
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        if held.as_ref().map(|(o, t)| (o.as_str(), *t)) != Some((lease.owner.as_str(), lease.token))
        {
            tx.rollback().await.map_err(db_err)?;
            return Err(DeliveryError::LeaseLost);
        }
        sqlx::query("UPDATE reminder_leases SET until_ms = ? WHERE part = ?")
            .bind(to_ms(lease_until))
            .bind(part(shard))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        apply_updates(&mut tx, shard, updates, to_ms(now)).await?;
        insert_records(&mut tx, "INSERT IGNORE", &shard.outbox_table(), events)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_fit_a_bigint() {
        assert_eq!(valid_bits(), (1 << 36) - 1);
        assert!(stored(valid_bits()).is_ok());
        assert!(stored(u64::MAX).is_err());
    }

    #[test]
    fn the_joined_update_binds_five_per_row_and_now() {
        for rows in [1, 4, 256] {
            let sql = joined_update("reminders_3", rows);
            assert_eq!(sql.matches('?').count(), rows * 5 + 1);
            assert_eq!(sql.matches("UNION ALL").count(), rows - 1);
            assert!(sql.starts_with("UPDATE reminders_3 r JOIN (SELECT"));
        }
    }
}
