//! `DistributionStore` on SQLite: tasks, their files (1 MiB chunks), failed rows, leases, and
//! the batch commit — here ONE transaction holding the batch's coupons, the template's stock
//! change, the failures and the checkpoint, so a crash leaves all of it or none.

use crate::SqliteStore;
use crate::coupons::{INSERT_EVENTS, MultiInsert};
use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, SqliteConnection};
use stampede_core::claim_ports::OutboxEvent;
use stampede_core::distribution_ports::{
    BatchCommit, BatchOutcome, CreateDistribution, DistributionQuery, DistributionStore,
    FinishGuard,
};
use stampede_core::ports::{Page, StoreError};
use stampede_core::records::{CouponRecord, DistributionRecord};
use stampede_domain::distribution::{
    DistributionStatus, DistributionTask, FailedRow, NotifyState, RowFailure,
};
use stampede_domain::ids::{DistributionId, ShopId};
use stampede_domain::time::to_ms;
use stampede_store_sql::SqlRow;
use stampede_store_sql::rows::FailureRecord;
use stampede_store_sql::{db_err, refused};
use std::sync::LazyLock;

/// A row's own coupon is the one with its `claim_key`; any other conflict (its
/// `(user, template, seq)` slot taken by another coupon) leaves the row out.
static INSERT_COUPONS_IGNORE: LazyLock<MultiInsert> = LazyLock::new(|| {
    MultiInsert::with_verb("INSERT OR IGNORE", "user_coupons", CouponRecord::COLUMNS)
});
static INSERT_FAILURES: LazyLock<MultiInsert> = LazyLock::new(|| {
    MultiInsert::with_verb(
        "INSERT OR IGNORE",
        "distribution_failures",
        FailureRecord::COLUMNS,
    )
});
static INSERT_TASK: LazyLock<MultiInsert> =
    LazyLock::new(|| MultiInsert::new("distributions", DistributionRecord::COLUMNS));
static SELECT_TASK: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM distributions WHERE id = ?",
        DistributionRecord::COLUMNS
    )
});

fn decode(row: &SqliteRow) -> Result<DistributionTask, StoreError> {
    DistributionRecord::read(row)?.into_task()
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn read_task(
    conn: &mut SqliteConnection,
    id: i64,
) -> Result<Option<DistributionTask>, StoreError> {
    sqlx::query(SELECT_TASK.as_str())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?
        .as_ref()
        .map(decode)
        .transpose()
}

/// Everything a batch writes once the checkpoint check passed. Returns `(issued, rejected)`.
async fn write_batch(
    conn: &mut SqliteConnection,
    b: &BatchCommit,
) -> Result<(u64, u64), StoreError> {
    let records: Vec<CouponRecord> = b
        .coupons
        .iter()
        .map(|c| CouponRecord::from_coupon(&c.record.coupon, c.record.claim_key.as_deref()))
        .collect();
    let inserted = INSERT_COUPONS_IGNORE.insert(conn, &records).await?;
    // The TEXT column holds a raw value whole.
    let mut failures: Vec<FailureRecord> = b
        .failures
        .iter()
        .map(|f| FailureRecord::new(b.task, f, usize::MAX))
        .collect();
    let mut rejected = 0;
    if inserted < b.coupons.len() as u64 {
        // The commit is atomic, so none of these coupons can be left from an earlier
        // attempt: each one left out lost its slot to another coupon. Find which.
        for c in &b.coupons {
            let present = sqlx::query(
                "SELECT 1 FROM user_coupons WHERE user_id = ? AND template_id = ? AND claim_key = ?",
            )
            .bind(c.record.coupon.user_id.get())
            .bind(c.record.coupon.template_id.get())
            .bind(c.record.claim_key.as_deref())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?
            .is_some();
            if !present {
                rejected += 1;
                failures.push(FailureRecord::new(
                    b.task,
                    &FailedRow {
                        row: c.row,
                        raw: c.raw.clone(),
                        reason: RowFailure::StoreRejected,
                    },
                    usize::MAX,
                ));
            }
        }
    }
    let issued = b.coupons.len() as u64 - rejected;
    if issued > 0 {
        let found = sqlx::query("UPDATE templates SET stock = stock - ? WHERE id = ?")
            .bind(int(issued))
            .bind(b.template_id.get())
            .execute(&mut *conn)
            .await
            .map_err(db_err)?
            .rows_affected();
        if found != 1 {
            // Coupons of a template that is not stored would be counted nowhere; the
            // error rolls the coupons back with everything else.
            return Err(refused(format!(
                "batch of task {} for unknown template {}",
                b.task, b.template_id
            )));
        }
    }
    INSERT_FAILURES.insert(conn, &failures).await?;
    sqlx::query(
        "UPDATE distributions SET processed_rows = ?, succeeded = succeeded + ?, \
         failed = failed + ?, lease_until_ms = ? WHERE id = ?",
    )
    .bind(int(b.first_row + b.rows))
    .bind(int(issued))
    .bind(int(failures.len() as u64))
    .bind(b.lease_until_ms)
    .bind(b.task.get())
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok((issued, rejected))
}

#[async_trait]
impl DistributionStore for SqliteStore {
    async fn create_distribution(
        &self,
        t: &DistributionTask,
    ) -> Result<CreateDistribution, StoreError> {
        let record = DistributionRecord::from_task(t);
        self.in_write_tx(move |conn| {
            Box::pin(async move {
                if let Some(key) = record.idem_key.as_deref() {
                    let columns = DistributionRecord::COLUMNS;
                    let existing = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {columns} FROM distributions WHERE shop_id = ? AND idem_key = ?"
                    )))
                    .bind(record.shop_id)
                    .bind(key)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db_err)?;
                    if let Some(row) = existing {
                        return Ok(CreateDistribution::KeyExists(Box::new(decode(&row)?)));
                    }
                }
                INSERT_TASK
                    .insert(conn, std::slice::from_ref(&record))
                    .await?;
                Ok(CreateDistribution::Created)
            })
        })
        .await
    }

    async fn put_file_chunk(
        &self,
        id: DistributionId,
        _shop: ShopId,
        n: u32,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR REPLACE INTO distribution_files (distribution_id, chunk, bytes) VALUES (?, ?, ?)",
        )
        .bind(id.get())
        .bind(i64::from(n))
        .bind(bytes.to_vec())
        .execute(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn file_chunk(
        &self,
        id: DistributionId,
        _shop: ShopId,
        n: u32,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query(
            "SELECT bytes FROM distribution_files WHERE distribution_id = ? AND chunk = ?",
        )
        .bind(id.get())
        .bind(i64::from(n))
        .fetch_optional(&self.reader)
        .await
        .map_err(db_err)?;
        row.map(|r| r.try_get::<Vec<u8>, _>("bytes").map_err(db_err))
            .transpose()
    }

    async fn get_distribution(
        &self,
        id: DistributionId,
    ) -> Result<Option<DistributionTask>, StoreError> {
        let mut conn = self.reader.acquire().await.map_err(db_err)?;
        read_task(&mut conn, id.get()).await
    }

    async fn list_distributions(
        &self,
        q: &DistributionQuery,
    ) -> Result<Page<DistributionTask>, StoreError> {
        let page = i64::from(q.page.max(1));
        let size = i64::from(q.page_size.max(1));
        let (filter, shop) = match q.shop_id {
            Some(s) => (" WHERE shop_id = ?", Some(s.get())),
            None => ("", None),
        };
        let columns = DistributionRecord::COLUMNS;
        let mut list = sqlx::query(AssertSqlSafe(format!(
            "SELECT {columns} FROM distributions{filter} ORDER BY id DESC LIMIT ? OFFSET ?"
        )));
        let mut total = sqlx::query(AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM distributions{filter}"
        )));
        if let Some(s) = shop {
            list = list.bind(s);
            total = total.bind(s);
        }
        let rows = list
            .bind(size)
            .bind((page - 1) * size)
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        let n: i64 = total
            .fetch_one(&self.reader)
            .await
            .map_err(db_err)?
            .try_get("n")
            .map_err(db_err)?;
        Ok(Page {
            items: rows.iter().map(decode).collect::<Result<_, _>>()?,
            total: u64::try_from(n).unwrap_or(0),
        })
    }

    async fn runnable_distributions(
        &self,
        now: jiff::Timestamp,
        limit: u32,
    ) -> Result<Vec<DistributionTask>, StoreError> {
        let now = to_ms(now);
        let columns = DistributionRecord::COLUMNS;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {columns} FROM distributions \
             WHERE status IN ('pending', 'running') AND lease_until_ms < ? \
               AND (status = 'running' OR send_at_ms <= ? OR cancel_requested) \
             ORDER BY send_at_ms, id LIMIT ?"
        )))
        .bind(now)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.iter().map(decode).collect()
    }

    async fn acquire_distribution(
        &self,
        id: DistributionId,
        _shop: ShopId,
        owner: &str,
        now: jiff::Timestamp,
        lease_until_ms: i64,
    ) -> Result<Option<DistributionTask>, StoreError> {
        let owner = owner.to_owned();
        let now = to_ms(now);
        self.in_write_tx(move |conn| {
            Box::pin(async move {
                let done = sqlx::query(
                    "UPDATE distributions SET lease_owner = ?, lease_until_ms = ?, \
                       status = 'running', started_at_ms = COALESCE(started_at_ms, ?) \
                     WHERE id = ? AND status IN ('pending', 'running') \
                       AND (lease_until_ms < ? OR lease_owner = ?)",
                )
                .bind(owner.as_str())
                .bind(lease_until_ms)
                .bind(now)
                .bind(id.get())
                .bind(now)
                .bind(owner.as_str())
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
                if done.rows_affected() == 0 {
                    return Ok(None);
                }
                read_task(conn, id.get()).await
            })
        })
        .await
    }

    async fn release_distribution(
        &self,
        id: DistributionId,
        _shop: ShopId,
        owner: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE distributions SET lease_until_ms = 0 WHERE id = ? AND lease_owner = ?")
            .bind(id.get())
            .bind(owner)
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn commit_batch(&self, b: &BatchCommit) -> Result<BatchOutcome, StoreError> {
        b.check().map_err(refused)?;
        let b = b.clone();
        self.in_write_tx(move |conn| {
            Box::pin(async move {
                let Some(task) = read_task(conn, b.task.get()).await? else {
                    return Ok(BatchOutcome::LeaseLost);
                };
                if task.processed_rows != b.first_row {
                    return Ok(BatchOutcome::AlreadyApplied);
                }
                if task.lease_owner.as_deref() != Some(b.owner.as_str())
                    || task.status != DistributionStatus::Running
                {
                    return Ok(BatchOutcome::LeaseLost);
                }
                if task.template_id != b.template_id {
                    // Its stock change would land on another template.
                    return Err(refused(format!(
                        "batch of task {} for template {}, the task's is {}",
                        b.task, b.template_id, task.template_id
                    )));
                }
                let (issued, rejected) = write_batch(conn, &b).await?;
                Ok(BatchOutcome::Applied { issued, rejected })
            })
        })
        .await
    }

    async fn finish_distribution(
        &self,
        id: DistributionId,
        _shop: ShopId,
        guard: FinishGuard<'_>,
        status: DistributionStatus,
        reason: Option<&str>,
        now: jiff::Timestamp,
        event: &OutboxEvent,
    ) -> Result<Option<DistributionTask>, StoreError> {
        if !status.is_final() {
            // Would leave a "running" task with a finish time and a completion event.
            return Err(refused(format!(
                "finishing task {id} as {}, not a final status",
                status.as_str()
            )));
        }
        let now = to_ms(now);
        // The guard's condition and its one argument (owner, or now for a free lease).
        let (guard_sql, owner) = match guard {
            FinishGuard::Owner(o) => ("lease_owner = ? AND status = 'running'", Some(o.to_owned())),
            FinishGuard::Pending => ("status = 'pending' AND lease_until_ms < ?", None),
        };
        let reason = reason.map(str::to_owned);
        let event = event.clone();
        self.in_write_tx(move |conn| {
            Box::pin(async move {
                let mut q = sqlx::query(AssertSqlSafe(format!(
                    "UPDATE distributions SET status = ?, finished_at_ms = ?, failure_reason = ?, \
                       lease_until_ms = 0, \
                       notify_state = CASE WHEN notify_url IS NULL THEN notify_state ELSE 'pending' END, \
                       notify_next_at_ms = ? \
                     WHERE id = ? AND {guard_sql}"
                )))
                .bind(status.as_str())
                .bind(now)
                .bind(reason)
                .bind(now)
                .bind(id.get());
                q = match owner {
                    Some(o) => q.bind(o),
                    None => q.bind(now),
                };
                if q.execute(&mut *conn).await.map_err(db_err)?.rows_affected() == 0 {
                    return Ok(None);
                }
                let task = read_task(conn, id.get()).await?;
                // The event's payload was built before the write; rebuild it from the row so
                // the recorded summary is exactly what was stored.
                let event = match &task {
                    Some(t) => OutboxEvent {
                        payload: stampede_core::events::distribution_summary(t).to_string(),
                        ..event
                    },
                    None => event,
                };
                INSERT_EVENTS
                    .insert(conn, std::slice::from_ref(&event))
                    .await?;
                Ok(task)
            })
        })
        .await
    }

    async fn request_cancel(&self, id: DistributionId, _shop: ShopId) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE distributions SET cancel_requested = 1 \
             WHERE id = ? AND status IN ('pending', 'running')",
        )
        .bind(id.get())
        .execute(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn failures(
        &self,
        id: DistributionId,
        _shop: ShopId,
        after_row: u64,
        limit: u32,
    ) -> Result<Vec<FailedRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM distribution_failures \
             WHERE distribution_id = ? AND row_no > ? ORDER BY row_no LIMIT ?",
            FailureRecord::COLUMNS
        )))
        .bind(id.get())
        .bind(int(after_row))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| FailureRecord::read(r)?.into_failed_row())
            .collect()
    }

    async fn due_notifications(
        &self,
        now: jiff::Timestamp,
        limit: u32,
    ) -> Result<Vec<DistributionTask>, StoreError> {
        let columns = DistributionRecord::COLUMNS;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {columns} FROM distributions \
             WHERE notify_state = 'pending' AND notify_next_at_ms <= ? \
             ORDER BY notify_next_at_ms LIMIT ?"
        )))
        .bind(to_ms(now))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.iter().map(decode).collect()
    }

    async fn update_notification(
        &self,
        id: DistributionId,
        _shop: ShopId,
        attempts_before: u32,
        attempts: u32,
        state: NotifyState,
        next_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE distributions SET notify_attempts = ?, notify_state = ?, notify_next_at_ms = ? \
             WHERE id = ? AND notify_attempts = ?",
        )
        .bind(i64::from(attempts))
        .bind(state.as_str())
        .bind(next_at_ms)
        .bind(id.get())
        .bind(i64::from(attempts_before))
        .execute(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }
}
