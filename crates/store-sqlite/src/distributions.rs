//! `DistributionStore` on SQLite: tasks, their files (1 MiB chunks), failed rows, leases, and
//! the batch commit — here ONE transaction holding the batch's coupons, the template's stock
//! change, the failures and the checkpoint, so a crash leaves all of it or none.

use crate::SqliteStore;
use crate::coupons::{INSERT_EVENTS, MultiInsert, Query, bind_coupon, bind_event};
use crate::error::{db, refused};
use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, SqliteConnection};
use stampede_core::claim_ports::OutboxEvent;
use stampede_core::distribution_ports::{
    BatchCommit, BatchOutcome, CreateDistribution, DistributionQuery, DistributionStore,
    FinishGuard,
};
use stampede_core::ports::{Page, StoreError};
use stampede_core::records::{
    COUPON_COLUMNS, CouponRecord, DISTRIBUTION_COLUMNS, DistributionRecord,
};
use stampede_domain::distribution::{
    DistributionStatus, DistributionTask, FailedRow, NotifyState, RowFailure,
};
use stampede_domain::ids::{DistributionId, ShopId};
use stampede_domain::time::to_ms;
use std::sync::LazyLock;

/// A row's own coupon is the one with its `claim_key`; any other conflict (its
/// `(user, template, seq)` slot taken by another coupon) leaves the row out.
static INSERT_COUPONS_IGNORE: LazyLock<MultiInsert> =
    LazyLock::new(|| MultiInsert::with_verb("INSERT OR IGNORE", "user_coupons", COUPON_COLUMNS));
static INSERT_FAILURES: LazyLock<MultiInsert> = LazyLock::new(|| {
    MultiInsert::with_verb(
        "INSERT OR IGNORE",
        "distribution_failures",
        "distribution_id, row_no, raw, reason",
    )
});
static INSERT_TASK: LazyLock<MultiInsert> =
    LazyLock::new(|| MultiInsert::new("distributions", DISTRIBUTION_COLUMNS));
static SELECT_TASK: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {DISTRIBUTION_COLUMNS} FROM distributions WHERE id = ?"));

fn bind_task(q: Query, r: &DistributionRecord) -> Query {
    q.bind(r.id)
        .bind(r.template_id)
        .bind(r.shop_id)
        .bind(r.name.clone())
        .bind(r.status.clone())
        .bind(r.send_at_ms)
        .bind(r.total_rows)
        .bind(r.processed_rows)
        .bind(r.succeeded)
        .bind(r.failed)
        .bind(r.created_at_ms)
        .bind(r.started_at_ms)
        .bind(r.finished_at_ms)
        .bind(r.notify_url.clone())
        .bind(r.failure_reason.clone())
        .bind(r.cancel_requested)
        .bind(r.file_format.clone())
        .bind(r.file_size)
        .bind(r.batch_size)
        .bind(r.created_by.clone())
        .bind(r.idem_key.clone())
        .bind(r.request_hash.clone())
        .bind(r.lease_owner.clone())
        .bind(r.lease_until_ms)
        .bind(r.notify_state.clone())
        .bind(r.notify_attempts)
        .bind(r.notify_next_at_ms)
}

fn task_record(row: &SqliteRow) -> Result<DistributionRecord, sqlx::Error> {
    Ok(DistributionRecord {
        id: row.try_get("id")?,
        template_id: row.try_get("template_id")?,
        shop_id: row.try_get("shop_id")?,
        name: row.try_get("name")?,
        status: row.try_get("status")?,
        send_at_ms: row.try_get("send_at_ms")?,
        total_rows: row.try_get("total_rows")?,
        processed_rows: row.try_get("processed_rows")?,
        succeeded: row.try_get("succeeded")?,
        failed: row.try_get("failed")?,
        created_at_ms: row.try_get("created_at_ms")?,
        started_at_ms: row.try_get("started_at_ms")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
        notify_url: row.try_get("notify_url")?,
        failure_reason: row.try_get("failure_reason")?,
        cancel_requested: row.try_get("cancel_requested")?,
        file_format: row.try_get("file_format")?,
        file_size: row.try_get("file_size")?,
        batch_size: row.try_get("batch_size")?,
        created_by: row.try_get("created_by")?,
        idem_key: row.try_get("idem_key")?,
        request_hash: row.try_get("request_hash")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_until_ms: row.try_get("lease_until_ms")?,
        notify_state: row.try_get("notify_state")?,
        notify_attempts: row.try_get("notify_attempts")?,
        notify_next_at_ms: row.try_get("notify_next_at_ms")?,
    })
}

fn decode(row: &SqliteRow) -> Result<DistributionTask, StoreError> {
    task_record(row).map_err(db)?.into_task()
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
        .map_err(db)?
        .as_ref()
        .map(decode)
        .transpose()
}

/// `(distribution_id, row_no, raw, reason)` of one failure row.
type FailureArgs = (i64, i64, String, &'static str);

fn bind_failure(q: Query, f: &FailureArgs) -> Query {
    q.bind(f.0).bind(f.1).bind(f.2.clone()).bind(f.3)
}

impl SqliteStore {
    pub(crate) async fn in_write_tx<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(
                &'c mut SqliteConnection,
            ) -> futures::future::BoxFuture<'c, Result<T, StoreError>>
            + Send,
        T: Send,
    {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        match f(&mut tx).await {
            Ok(v) => {
                tx.commit().await.map_err(db)?;
                Ok(v)
            }
            Err(e) => {
                if let Err(r) = tx.rollback().await {
                    tracing::warn!(error = %r, "rollback failed");
                }
                Err(e)
            }
        }
    }
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
    let inserted = INSERT_COUPONS_IGNORE
        .run(conn, &records, bind_coupon)
        .await?;
    let mut failures: Vec<FailureArgs> = b
        .failures
        .iter()
        .map(|f| (b.task.get(), int(f.row), f.raw.clone(), f.reason.as_str()))
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
            .map_err(db)?
            .is_some();
            if !present {
                rejected += 1;
                failures.push((
                    b.task.get(),
                    int(c.row),
                    c.raw.clone(),
                    RowFailure::StoreRejected.as_str(),
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
            .map_err(db)?
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
    INSERT_FAILURES.run(conn, &failures, bind_failure).await?;
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
    .map_err(db)?;
    Ok((issued, rejected))
}

#[async_trait]
impl DistributionStore for SqliteStore {
    async fn create_distribution(
        &self,
        t: &DistributionTask,
    ) -> Result<CreateDistribution, StoreError> {
        let record = DistributionRecord::from_task(t);
        self.in_write_tx(|conn| {
            Box::pin(async move {
                if let Some(key) = record.idem_key.as_deref() {
                    let existing = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {DISTRIBUTION_COLUMNS} FROM distributions WHERE shop_id = ? AND idem_key = ?"
                    )))
                    .bind(record.shop_id)
                    .bind(key)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db)?;
                    if let Some(row) = existing {
                        return Ok(CreateDistribution::KeyExists(Box::new(decode(&row)?)));
                    }
                }
                INSERT_TASK
                    .run(conn, std::slice::from_ref(&record), bind_task)
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
        .map_err(db)?;
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
        .map_err(db)?;
        row.map(|r| r.try_get::<Vec<u8>, _>("bytes").map_err(db))
            .transpose()
    }

    async fn get_distribution(
        &self,
        id: DistributionId,
    ) -> Result<Option<DistributionTask>, StoreError> {
        let mut conn = self.reader.acquire().await.map_err(db)?;
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
        let mut list = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DISTRIBUTION_COLUMNS} FROM distributions{filter} ORDER BY id DESC LIMIT ? OFFSET ?"
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
            .map_err(db)?;
        let n: i64 = total
            .fetch_one(&self.reader)
            .await
            .map_err(db)?
            .try_get("n")
            .map_err(db)?;
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
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DISTRIBUTION_COLUMNS} FROM distributions \
             WHERE status IN ('pending', 'running') AND lease_until_ms < ? \
               AND (status = 'running' OR send_at_ms <= ? OR cancel_requested) \
             ORDER BY send_at_ms, id LIMIT ?"
        )))
        .bind(now)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
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
        self.in_write_tx(|conn| {
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
                .map_err(db)?;
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
            .map_err(db)?;
        Ok(())
    }

    async fn commit_batch(&self, b: &BatchCommit) -> Result<BatchOutcome, StoreError> {
        b.check().map_err(refused)?;
        let b = b.clone();
        self.in_write_tx(|conn| {
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
        self.in_write_tx(|conn| {
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
                if q.execute(&mut *conn).await.map_err(db)?.rows_affected() == 0 {
                    return Ok(None);
                }
                let task = read_task(conn, id.get()).await?;
                // The event's payload was built before the write; rebuild it from the row so
                // the recorded summary is exactly what was stored.
                let event = match &task {
                    Some(t) => OutboxEvent {
                        payload: stampede_core::records::distribution_summary(t).to_string(),
                        ..event
                    },
                    None => event,
                };
                INSERT_EVENTS
                    .run(conn, std::slice::from_ref(&event), bind_event)
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
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn failures(
        &self,
        id: DistributionId,
        _shop: ShopId,
        after_row: u64,
        limit: u32,
    ) -> Result<Vec<FailedRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT row_no, raw, reason FROM distribution_failures \
             WHERE distribution_id = ? AND row_no > ? ORDER BY row_no LIMIT ?",
        )
        .bind(id.get())
        .bind(int(after_row))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let row: i64 = r.try_get("row_no").map_err(db)?;
                let reason: String = r.try_get("reason").map_err(db)?;
                Ok(FailedRow {
                    row: u64::try_from(row)
                        .map_err(|_| StoreError::Corrupt(format!("failure row {row}")))?,
                    raw: r.try_get("raw").map_err(db)?,
                    reason: RowFailure::parse(&reason)
                        .ok_or_else(|| StoreError::Corrupt(format!("failure reason {reason}")))?,
                })
            })
            .collect()
    }

    async fn due_notifications(
        &self,
        now: jiff::Timestamp,
        limit: u32,
    ) -> Result<Vec<DistributionTask>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DISTRIBUTION_COLUMNS} FROM distributions \
             WHERE notify_state = 'pending' AND notify_next_at_ms <= ? \
             ORDER BY notify_next_at_ms LIMIT ?"
        )))
        .bind(to_ms(now))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
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
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }
}
