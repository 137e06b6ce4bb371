//! `ReminderStore` on SQLite: one `reminders` table, one delivery partition (0). Set and
//! delete are single statements (`bits | b`, `bits & ~b`), so concurrent updates of a row
//! never lose a bit; a delivery step's bookkeeping is one transaction fenced by the lease.

use crate::SqliteStore;
use crate::coupons::{MultiInsert, Query};
use crate::leases::{self, LeaseTable};
use async_trait::async_trait;
use futures::FutureExt;
use jiff::Timestamp;
use sqlx::sqlite::SqliteRow;
use stampede_core::claim_ports::OutboxEvent;
use stampede_core::ports::StoreError;
use stampede_core::records::{ReminderRecord, stored_set};
use stampede_core::reminder_ports::{
    DeliveryError, PartitionLease, ReminderRow, ReminderStore, RowUpdate,
};
use stampede_domain::ids::{TemplateId, UserId};
use stampede_domain::reminder::{Reminder, ReminderSet};
use stampede_domain::time::to_ms;
use stampede_store_sql::SqlRow;
use stampede_store_sql::{db_err, refused};
use std::sync::LazyLock;

const COLUMNS: &str = ReminderRecord::COLUMNS;

/// An event already in the outbox is skipped, not an error: a retried batch writes its events
/// again, and a reminder set again after delivery is delivered again under the same id.
static INSERT_EVENTS_ONCE: LazyLock<MultiInsert> =
    LazyLock::new(|| MultiInsert::with_verb("INSERT OR IGNORE", "outbox", OutboxEvent::COLUMNS));

/// Rows per multi-row update statement (5 variables each, far below SQLite's 32,766).
const UPDATE_CHUNKS: [usize; 6] = [512, 128, 32, 8, 2, 1];

/// `UPDATE … FROM (VALUES …)` statements of `UPDATE_CHUNKS` sizes: a batch of thousands of
/// rows costs a handful of statements, not one round trip each.
static UPDATES: LazyLock<Vec<(usize, String)>> = LazyLock::new(|| {
    UPDATE_CHUNKS
        .iter()
        .map(|&n| {
            let values = vec!["(?, ?, ?, ?, ?)"; n].join(", ");
            (
                n,
                format!(
                    "WITH u (user_id, template_id, read_bits, done, next_due_ms) AS (VALUES {values}) \
                     UPDATE reminders SET sent = reminders.sent | u.done, \
                     next_due_ms = CASE WHEN reminders.bits = u.read_bits THEN u.next_due_ms ELSE ? END \
                     FROM u WHERE reminders.user_id = u.user_id AND reminders.template_id = u.template_id"
                ),
            )
        })
        .collect()
});

fn decode(row: &SqliteRow) -> Result<ReminderRow, StoreError> {
    ReminderRecord::read(row)?.into_row()
}

fn only_partition(p: u32) -> Result<(), StoreError> {
    if p == 0 {
        Ok(())
    } else {
        Err(refused(format!(
            "SQLite has one reminder partition, not {p}"
        )))
    }
}

#[async_trait]
impl ReminderStore for SqliteStore {
    async fn set_reminder(
        &self,
        user: UserId,
        template: TemplateId,
        claim_start: Timestamp,
        r: Reminder,
    ) -> Result<(), StoreError> {
        let bit = stored_set(ReminderSet::EMPTY.with(r));
        let due = to_ms(r.remind_at(claim_start));
        sqlx::query(
            "INSERT INTO reminders (user_id, template_id, claim_start_ms, bits, sent, next_due_ms) \
             VALUES (?, ?, ?, ?, 0, ?) \
             ON CONFLICT (user_id, template_id) DO UPDATE SET \
             bits = bits | excluded.bits, sent = sent & ~excluded.bits, \
             next_due_ms = MIN(COALESCE(next_due_ms, excluded.next_due_ms), excluded.next_due_ms)",
        )
        .bind(user.get())
        .bind(template.get())
        .bind(to_ms(claim_start))
        .bind(bit)
        .bind(due)
        .execute(&self.writer)
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
        let bit = stored_set(ReminderSet::EMPTY.with(r));
        let done = sqlx::query(
            "UPDATE reminders SET bits = bits & ~?1 \
             WHERE user_id = ?2 AND template_id = ?3 AND bits & ?1 <> 0",
        )
        .bind(bit)
        .bind(user.get())
        .bind(template.get())
        .execute(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn user_reminders(&self, user: UserId) -> Result<Vec<ReminderRow>, StoreError> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!("SELECT {COLUMNS} FROM reminders WHERE user_id = ? AND bits <> 0")
        });
        sqlx::query(SQL.as_str())
            .bind(user.get())
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?
            .iter()
            .map(decode)
            .collect()
    }

    fn partitions(&self) -> u32 {
        1
    }

    async fn purge_reminders(
        &self,
        p: u32,
        started_before: Timestamp,
        limit: u32,
    ) -> Result<u64, StoreError> {
        only_partition(p)?;
        let done = sqlx::query(
            "DELETE FROM reminders WHERE (user_id, template_id) IN \
             (SELECT user_id, template_id FROM reminders WHERE claim_start_ms < ? LIMIT ?)",
        )
        .bind(to_ms(started_before))
        .bind(i64::from(limit))
        .execute(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected())
    }

    async fn any_due(&self, p: u32, now: Timestamp) -> Result<bool, StoreError> {
        only_partition(p)?;
        let hit: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM reminders WHERE next_due_ms <= ? LIMIT 1")
                .bind(to_ms(now))
                .fetch_optional(&self.reader)
                .await
                .map_err(db_err)?;
        Ok(hit.is_some())
    }

    async fn lease_partition(
        &self,
        p: u32,
        owner: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Option<PartitionLease>, StoreError> {
        only_partition(p)?;
        leases::take(&self.writer, LeaseTable::Reminders, p, owner, now, until).await
    }

    async fn release_partition(&self, lease: &PartitionLease) -> Result<(), StoreError> {
        leases::release(&self.writer, LeaseTable::Reminders, lease).await
    }

    async fn due_reminders(
        &self,
        p: u32,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<ReminderRow>, StoreError> {
        only_partition(p)?;
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {COLUMNS} FROM reminders WHERE next_due_ms <= ? \
                 ORDER BY next_due_ms LIMIT ?"
            )
        });
        sqlx::query(SQL.as_str())
            .bind(to_ms(now))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?
            .iter()
            .map(decode)
            .collect()
    }

    async fn record_deliveries(
        &self,
        lease: &PartitionLease,
        lease_until: Timestamp,
        updates: &[RowUpdate],
        events: &[OutboxEvent],
        now: Timestamp,
    ) -> Result<(), DeliveryError> {
        only_partition(lease.partition)?;
        let lease = lease.clone();
        let updates = updates.to_vec();
        let events = events.to_vec();
        let held = self
            .in_write_tx(move |conn| {
                async move {
                    let held = sqlx::query(
                        "UPDATE reminder_leases SET until_ms = ? \
                         WHERE part = ? AND owner = ? AND token = ?",
                    )
                    .bind(to_ms(lease_until))
                    .bind(i64::from(lease.partition))
                    .bind(lease.owner.as_str())
                    .bind(lease.token)
                    .execute(&mut *conn)
                    .await
                    .map_err(db_err)?;
                    if held.rows_affected() != 1 {
                        return Ok(false);
                    }
                    let now_ms = to_ms(now);
                    let mut rest = updates.as_slice();
                    for (size, sql) in UPDATES.iter() {
                        while let Some((chunk, tail)) = rest.split_at_checked(*size) {
                            let mut q: Query = sqlx::query(sql.as_str());
                            for u in chunk {
                                q = q
                                    .bind(u.user_id.get())
                                    .bind(u.template_id.get())
                                    .bind(stored_set(u.read_bits))
                                    .bind(stored_set(u.done))
                                    .bind(u.next_due.map(to_ms));
                            }
                            q.bind(now_ms).execute(&mut *conn).await.map_err(db_err)?;
                            rest = tail;
                        }
                    }
                    INSERT_EVENTS_ONCE.insert(conn, &events).await?;
                    Ok(true)
                }
                .boxed()
            })
            .await?;
        if held {
            Ok(())
        } else {
            Err(DeliveryError::LeaseLost)
        }
    }
}
