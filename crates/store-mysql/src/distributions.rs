//! `DistributionStore`: distribution tasks with their failed rows and uploaded files, on the
//! shard of the task's shop (the shard of its template too), found by id through
//! `distribution_directory`.
//!
//! A batch is stored in two steps, like a claim-log batch (`claim_log.rs`):
//! 1. its coupons go in on their users' shards with `INSERT IGNORE` (no outbox events: the
//!    task's `distribution.completed` reports them). Each carries its file row's `claim_key`,
//!    so a replay finds an earlier attempt's coupons instead of adding new ones, and a coupon
//!    absent afterwards lost its `(user, template, seq)` slot to another coupon;
//! 2. one transaction on the shop's shard moves the checkpoint (`processed_rows`, compared and
//!    set under the lease), the counters, the template's stock and the failed rows together.
//!
//! A crash between the two steps replays both; step 1 is then a no-op.

use crate::MysqlStore;
use crate::coupons::{LOOKUP_CHUNK, insert_records};
use crate::error::is_data_error;
use crate::listing::union;
use crate::router::Shard;
use async_trait::async_trait;
use futures::future::{join_all, try_join, try_join_all};
use jiff::Timestamp;
use sqlx::mysql::{MySqlPool, MySqlRow};
use sqlx::{AssertSqlSafe, Executor, MySql};
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
use stampede_store_sql::error::is_unique_violation;
use stampede_store_sql::rows::FailureRecord;
use stampede_store_sql::text::placeholders;
use stampede_store_sql::{Columns, db_err, refused};
use std::collections::{HashMap, HashSet};

/// Characters of a raw value the failures table holds (`raw VARCHAR(400)`).
const RAW_CHARS: usize = 400;

/// Coupons per insert transaction, so one presence lookup covers them.
const COUPON_CHUNK: usize = LOOKUP_CHUNK;

fn task_from_row(row: &MySqlRow) -> Result<DistributionTask, StoreError> {
    DistributionRecord::read(row)?.into_task()
}

fn int(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| refused(format!("{what} {v} is out of range")))
}

fn unknown(id: DistributionId) -> StoreError {
    refused(format!("unknown distribution task {id}"))
}

/// Offset of the first row of `page` (1-based; 0 is read as 1) and the rows up to its end.
fn window(q: &DistributionQuery) -> (u64, u64) {
    let size = u64::from(q.page_size);
    let offset = u64::from(q.page.max(1) - 1) * size;
    (offset, offset + size)
}

/// Task `id` as stored in `shard`, read through `exec` (a pool or a transaction).
async fn select_task<'e, E>(
    exec: E,
    shard: Shard,
    id: i64,
) -> Result<Option<DistributionTask>, StoreError>
where
    E: Executor<'e, Database = MySql>,
{
    let sql = format!(
        "SELECT {} FROM {} WHERE id = ?",
        DistributionRecord::COLUMNS,
        shard.distributions_table()
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(exec)
        .await
        .map_err(db_err)?;
    row.as_ref().map(task_from_row).transpose()
}

/// Inserts `rows` (one chunk of a user table) in one transaction; the driver's error is kept.
async fn insert_chunk(
    pool: &MySqlPool,
    table: &str,
    rows: &[CouponRecord],
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let inserted = insert_records(&mut tx, "INSERT IGNORE", table, rows).await?;
    tx.commit().await?;
    Ok(inserted)
}

/// `(user_id, claim_key)` of the coupons of `rows` present in `table` (at most
/// `LOOKUP_CHUNK` rows).
async fn stored_keys(
    pool: &MySqlPool,
    table: &str,
    template: i64,
    rows: &[CouponRecord],
) -> Result<HashSet<(i64, String)>, StoreError> {
    let users: HashSet<i64> = rows.iter().map(|r| r.user_id).collect();
    let keys: Vec<&str> = rows.iter().filter_map(|r| r.claim_key.as_deref()).collect();
    let marks = |n: usize| vec!["?"; n].join(", ");
    let sql = format!(
        "SELECT user_id, claim_key FROM {table} WHERE template_id = ? AND user_id IN ({}) \
         AND claim_key IN ({})",
        marks(users.len()),
        marks(keys.len())
    );
    // Sizes vary: keep these rare statements out of the prepared-statement cache.
    let mut q = sqlx::query(AssertSqlSafe(sql))
        .persistent(false)
        .bind(template);
    for u in users {
        q = q.bind(u);
    }
    for k in keys {
        q = q.bind(k.to_owned());
    }
    let found = q.fetch_all(pool).await.map_err(db_err)?;
    found
        .iter()
        .map(|r| Ok((r.int("user_id")?, r.text("claim_key")?)))
        .collect()
}

impl MysqlStore {
    async fn task_by_key(
        &self,
        shard: Shard,
        shop: ShopId,
        key: &str,
    ) -> Result<Option<DistributionTask>, StoreError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE shop_id = ? AND idem_key = ?",
            DistributionRecord::COLUMNS,
            shard.distributions_table()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(shop.get())
            .bind(key.to_owned())
            .fetch_optional(self.pool(shard.database))
            .await
            .map_err(db_err)?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// Step 1 for one user shard: `coupons` (sorted by their unique key, so concurrent writers
    /// lock in one order) in chunks. Returns the claim keys of those not stored: their slot
    /// holds another coupon, or the server refused the row itself.
    async fn insert_coupons(
        &self,
        shard: Shard,
        template: i64,
        coupons: &[CouponRecord],
    ) -> Result<Vec<String>, StoreError> {
        let pool = self.pool(shard.database);
        let table = shard.coupons_table();
        let key = |c: &CouponRecord| c.claim_key.clone().unwrap_or_default();
        let mut rejected = Vec::new();
        for chunk in coupons.chunks(COUPON_CHUNK) {
            // A part the server refuses is split in halves until the row at fault stands alone.
            let mut parts = vec![chunk];
            while let Some(part) = parts.pop() {
                match insert_chunk(pool, &table, part).await {
                    Ok(n) if n == part.len() as u64 => {}
                    Ok(_) => {
                        // Present = ours (now or from an earlier attempt); absent = slot taken.
                        let present = stored_keys(pool, &table, template, part).await?;
                        rejected.extend(
                            part.iter()
                                .filter(|c| !present.contains(&(c.user_id, key(c))))
                                .map(key),
                        );
                    }
                    Err(e) if is_data_error(&e) && part.len() > 1 => {
                        let (head, tail) = part.split_at(part.len() / 2);
                        parts.push(tail);
                        parts.push(head);
                    }
                    Err(e) if is_data_error(&e) => {
                        let c = &part[0];
                        tracing::warn!(user = c.user_id, template, claim_key = ?c.claim_key, error = %e,
                            "distribution coupon refused by the store");
                        rejected.push(key(c));
                    }
                    // Connection, lock wait, deadlock: nothing is checkpointed; the runner retries.
                    Err(e) => return Err(db_err(e)),
                }
            }
        }
        Ok(rejected)
    }

    /// Step 2: the checkpoint, counters, stock and failed rows in one transaction.
    async fn checkpoint(
        &self,
        b: &BatchCommit,
        issued: u64,
        rejected: Vec<FailedRow>,
    ) -> Result<BatchOutcome, StoreError> {
        let shard = self.router().route(b.shop_id.get());
        let pool = self.pool(shard.database);
        let rejected_count = rejected.len() as u64;
        let first_row = int(b.first_row, "first row")?;
        let mut tx = pool.begin().await.map_err(db_err)?;
        // The task's row lock queues concurrent commits of a batch; the later ones then no
        // longer match `processed_rows = first_row`. The template must be the task's: the
        // stock change below would otherwise land on another template.
        let sql = format!(
            "UPDATE {} SET processed_rows = ?, succeeded = succeeded + ?, failed = failed + ?, \
             lease_until_ms = ? WHERE id = ? AND shop_id = ? AND template_id = ? \
             AND processed_rows = ? AND lease_owner = ? AND status = 'running'",
            shard.distributions_table()
        );
        let matched = sqlx::query(AssertSqlSafe(sql))
            .bind(int(b.first_row + b.rows, "checkpoint")?)
            .bind(int(issued, "issued")?)
            .bind(int(b.failures.len() as u64 + rejected_count, "failed")?)
            .bind(b.lease_until_ms)
            .bind(b.task.get())
            .bind(b.shop_id.get())
            .bind(b.template_id.get())
            .bind(first_row)
            .bind(b.owner.clone())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        if matched == 0 {
            tx.rollback().await.map_err(db_err)?;
            let sql = format!(
                "SELECT processed_rows, template_id FROM {} WHERE id = ? AND shop_id = ?",
                shard.distributions_table()
            );
            let found: Option<(i64, i64)> = sqlx::query_as(AssertSqlSafe(sql))
                .bind(b.task.get())
                .bind(b.shop_id.get())
                .fetch_optional(pool)
                .await
                .map_err(db_err)?;
            return match found {
                None => Err(unknown(b.task)),
                Some((p, _)) if p != first_row => Ok(BatchOutcome::AlreadyApplied),
                Some((_, t)) if t != b.template_id.get() => Err(refused(format!(
                    "batch of task {} for template {}, the task's is {t}",
                    b.task, b.template_id
                ))),
                Some(_) => Ok(BatchOutcome::LeaseLost),
            };
        }
        if issued > 0 {
            // As `apply_claims`: only the stock moves; `updated_at` is for merchant changes.
            let sql = format!(
                "UPDATE {} SET stock = stock - ? WHERE id = ? AND shop_id = ?",
                shard.templates_table()
            );
            let found = sqlx::query(AssertSqlSafe(sql))
                .bind(int(issued, "issued")?)
                .bind(b.template_id.get())
                .bind(b.shop_id.get())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            if found != 1 {
                // Dropping `tx` rolls the checkpoint back.
                return Err(refused(format!(
                    "template {} is not in shop {}'s shard",
                    b.template_id, b.shop_id
                )));
            }
        }
        for f in b.failures.iter().chain(&rejected) {
            int(f.row, "row")?;
        }
        let mut failures: Vec<FailureRecord> = b
            .failures
            .iter()
            .chain(&rejected)
            .map(|f| FailureRecord::new(b.task, f, RAW_CHARS))
            .collect();
        failures.sort_unstable_by_key(|f| f.row_no);
        insert_records(
            &mut tx,
            "INSERT IGNORE",
            &shard.distribution_failures_table(),
            &failures,
        )
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(BatchOutcome::Applied {
            issued,
            rejected: rejected_count,
        })
    }

    /// The newest `limit` tasks of one database and how many it holds.
    async fn newest_tasks_in_database(
        &self,
        database: usize,
        limit: u64,
    ) -> Result<(Vec<DistributionTask>, u64), StoreError> {
        let shards: Vec<Shard> = (0..self.router().tables_per_database())
            .map(|table| Shard { database, table })
            .collect();
        let items_sql = union(shards.iter().map(|s| {
            format!(
                "(SELECT {} FROM {} ORDER BY id DESC LIMIT ?)",
                DistributionRecord::COLUMNS,
                s.distributions_table()
            )
        })) + " ORDER BY id DESC LIMIT ?";
        let count_sql = union(
            shards
                .iter()
                .map(|s| format!("SELECT COUNT(*) AS n FROM {}", s.distributions_table())),
        );
        let mut items = sqlx::query(AssertSqlSafe(items_sql));
        for _ in &shards {
            items = items.bind(limit);
        }
        let pool = self.pool(database);
        let count = sqlx::query(AssertSqlSafe(count_sql));
        let (rows, counts) = try_join(items.bind(limit).fetch_all(pool), count.fetch_all(pool))
            .await
            .map_err(db_err)?;
        let mut total = 0u64;
        for c in &counts {
            total += u64::try_from(c.int("n")?).unwrap_or_default();
        }
        let tasks = rows.iter().map(task_from_row).collect::<Result<_, _>>()?;
        Ok((tasks, total))
    }

    /// Tasks matching `condition` (binding `args` in order) on every shard, first by `order`:
    /// one `UNION ALL` query per database, concurrently, then the first `limit` overall.
    async fn scan(
        &self,
        condition: &str,
        args: &[i64],
        order: &str,
        limit: u32,
        key: impl Fn(&DistributionTask) -> (i64, i64),
    ) -> Result<Vec<DistributionTask>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let tables = self.router().tables_per_database();
        let per_db = (0..self.router().databases()).map(|database| {
            let sql = union((0..tables).map(|table| {
                format!(
                    "(SELECT {} FROM {} WHERE {condition} ORDER BY {order} LIMIT ?)",
                    DistributionRecord::COLUMNS,
                    Shard { database, table }.distributions_table()
                )
            })) + &format!(" ORDER BY {order} LIMIT ?");
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for _ in 0..tables {
                for a in args {
                    q = q.bind(*a);
                }
                q = q.bind(limit);
            }
            q.bind(limit).fetch_all(self.pool(database))
        });
        let mut tasks = Vec::new();
        for rows in try_join_all(per_db).await.map_err(db_err)? {
            for row in &rows {
                tasks.push(task_from_row(row)?);
            }
        }
        tasks.sort_unstable_by_key(key);
        tasks.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(tasks)
    }
}

#[async_trait]
impl DistributionStore for MysqlStore {
    /// The directory row goes first, outside the shard's database, as for templates: a crash
    /// before the task is written leaves a row pointing at nothing, which reads as "no task".
    async fn create_distribution(
        &self,
        t: &DistributionTask,
    ) -> Result<CreateDistribution, StoreError> {
        let shard = self.router().route(t.shop_id.get());
        if let Some(key) = &t.idempotency_key
            && let Some(existing) = self.task_by_key(shard, t.shop_id, key).await?
        {
            return Ok(CreateDistribution::KeyExists(Box::new(existing)));
        }
        self.file_distribution(t.id, t.shop_id).await?;
        let columns = DistributionRecord::COLUMNS;
        let sql = format!(
            "INSERT INTO {} ({columns}) VALUES ({})",
            shard.distributions_table(),
            placeholders(columns)
        );
        let inserted = DistributionRecord::from_task(t)
            .bind(sqlx::query(AssertSqlSafe(sql)))
            .execute(self.pool(shard.database))
            .await;
        match inserted {
            Ok(_) => Ok(CreateDistribution::Created),
            Err(e) if is_unique_violation(&e) => {
                // Lost a race for the key: the winner's task is the answer.
                if let Some(key) = &t.idempotency_key
                    && let Some(existing) = self.task_by_key(shard, t.shop_id, key).await?
                {
                    if existing.id != t.id {
                        self.unfile_distribution(t.id).await;
                    }
                    return Ok(CreateDistribution::KeyExists(Box::new(existing)));
                }
                Err(db_err(e))
            }
            Err(e) => Err(db_err(e)),
        }
    }

    async fn put_file_chunk(
        &self,
        id: DistributionId,
        shop: ShopId,
        n: u32,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let shard = self.router().route(shop.get());
        let sql = format!(
            "REPLACE INTO {} (distribution_id, chunk, bytes) VALUES (?, ?, ?)",
            shard.distribution_files_table()
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.get())
            .bind(n)
            .bind(bytes)
            .execute(self.pool(shard.database))
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn file_chunk(
        &self,
        id: DistributionId,
        shop: ShopId,
        n: u32,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let shard = self.router().route(shop.get());
        let sql = format!(
            "SELECT bytes FROM {} WHERE distribution_id = ? AND chunk = ?",
            shard.distribution_files_table()
        );
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(id.get())
            .bind(n)
            .fetch_optional(self.pool(shard.database))
            .await
            .map_err(db_err)
    }

    async fn get_distribution(
        &self,
        id: DistributionId,
    ) -> Result<Option<DistributionTask>, StoreError> {
        let Some(shard) = self.distribution_shard(id).await? else {
            return Ok(None);
        };
        select_task(self.pool(shard.database), shard, id.get()).await
    }

    /// A shop's tasks are one table; the admin list merges each database's newest
    /// `offset + page_size` (deep pages cost more, as for templates).
    async fn list_distributions(
        &self,
        q: &DistributionQuery,
    ) -> Result<Page<DistributionTask>, StoreError> {
        let (offset, end) = window(q);
        let Some(shop) = q.shop_id else {
            let per_db =
                (0..self.router().databases()).map(|d| self.newest_tasks_in_database(d, end));
            let mut total = 0;
            let mut items = Vec::new();
            for (tasks, count) in try_join_all(per_db).await? {
                total += count;
                items.extend(tasks);
            }
            items.sort_unstable_by_key(|t: &DistributionTask| std::cmp::Reverse(t.id));
            let items = items
                .into_iter()
                .skip(usize::try_from(offset).unwrap_or(usize::MAX))
                .take(usize::try_from(q.page_size).unwrap_or(usize::MAX))
                .collect();
            return Ok(Page { items, total });
        };
        let shard = self.router().route(shop.get());
        let pool = self.pool(shard.database);
        let table = shard.distributions_table();
        let items_sql = format!(
            "SELECT {} FROM {table} WHERE shop_id = ? \
             ORDER BY id DESC LIMIT ? OFFSET ?",
            DistributionRecord::COLUMNS
        );
        let count_sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE shop_id = ?");
        let items = sqlx::query(AssertSqlSafe(items_sql))
            .bind(shop.get())
            .bind(u64::from(q.page_size))
            .bind(offset)
            .fetch_all(pool);
        let count = sqlx::query(AssertSqlSafe(count_sql))
            .bind(shop.get())
            .fetch_one(pool);
        let (rows, count) = try_join(items, count).await.map_err(db_err)?;
        Ok(Page {
            items: rows.iter().map(task_from_row).collect::<Result<_, _>>()?,
            total: u64::try_from(count.int("n")?).unwrap_or_default(),
        })
    }

    async fn runnable_distributions(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<DistributionTask>, StoreError> {
        let now_ms = to_ms(now);
        self.scan(
            "lease_until_ms < ? AND (status = 'running' OR (status = 'pending' \
             AND (send_at_ms <= ? OR cancel_requested = TRUE)))",
            &[now_ms, now_ms],
            "send_at_ms, id",
            limit,
            |t| (to_ms(t.send_at), t.id.get()),
        )
        .await
    }

    /// The update and the read back are one transaction, so the answer is the row as this
    /// acquisition left it.
    async fn acquire_distribution(
        &self,
        id: DistributionId,
        shop: ShopId,
        owner: &str,
        now: Timestamp,
        lease_until_ms: i64,
    ) -> Result<Option<DistributionTask>, StoreError> {
        let shard = self.router().route(shop.get());
        let now_ms = to_ms(now);
        let mut tx = self.pool(shard.database).begin().await.map_err(db_err)?;
        // `started_at` before `status`: MySQL applies the assignments left to right. A renewal
        // changing nothing still counts as matched (FOUND_ROWS).
        let sql = format!(
            "UPDATE {} SET lease_owner = ?, lease_until_ms = ?, \
             started_at_ms = COALESCE(started_at_ms, ?), status = 'running' \
             WHERE id = ? AND shop_id = ? AND status IN ('pending', 'running') \
             AND (lease_until_ms < ? OR lease_owner = ?)",
            shard.distributions_table()
        );
        let matched = sqlx::query(AssertSqlSafe(sql))
            .bind(owner.to_owned())
            .bind(lease_until_ms)
            .bind(now_ms)
            .bind(id.get())
            .bind(shop.get())
            .bind(now_ms)
            .bind(owner.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        if matched == 0 {
            tx.rollback().await.map_err(db_err)?;
            return Ok(None);
        }
        let task = select_task(&mut *tx, shard, id.get()).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(task)
    }

    async fn release_distribution(
        &self,
        id: DistributionId,
        shop: ShopId,
        owner: &str,
    ) -> Result<(), StoreError> {
        let shard = self.router().route(shop.get());
        let sql = format!(
            "UPDATE {} SET lease_until_ms = 0 WHERE id = ? AND shop_id = ? AND lease_owner = ?",
            shard.distributions_table()
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.get())
            .bind(shop.get())
            .bind(owner.to_owned())
            .execute(self.pool(shard.database))
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn commit_batch(&self, b: &BatchCommit) -> Result<BatchOutcome, StoreError> {
        b.check().map_err(refused)?;
        let mut groups: HashMap<Shard, Vec<CouponRecord>> = HashMap::new();
        for c in &b.coupons {
            let r = &c.record;
            groups
                .entry(self.router().route(r.coupon.user_id.get()))
                .or_default()
                .push(CouponRecord::from_coupon(&r.coupon, r.claim_key.as_deref()));
        }
        for g in groups.values_mut() {
            g.sort_unstable_by_key(|c| (c.user_id, c.template_id, c.seq));
        }
        // Every shard runs to its end even when another fails, so no write is cancelled
        // midway; an error anywhere leaves the checkpoint alone and the batch is replayed.
        let template = b.template_id.get();
        let done = join_all(
            groups
                .iter()
                .map(|(shard, g)| self.insert_coupons(*shard, template, g)),
        )
        .await;
        let mut refused = HashSet::new();
        for d in done {
            refused.extend(d?);
        }
        let rejected: Vec<FailedRow> = b
            .coupons
            .iter()
            .filter(|c| {
                c.record
                    .claim_key
                    .as_ref()
                    .is_some_and(|k| refused.contains(k))
            })
            .map(|c| FailedRow {
                row: c.row,
                raw: c.raw.clone(),
                reason: RowFailure::StoreRejected,
            })
            .collect();
        let issued = (b.coupons.len() - rejected.len()) as u64;
        self.checkpoint(b, issued, rejected).await
    }

    async fn finish_distribution(
        &self,
        id: DistributionId,
        shop: ShopId,
        guard: FinishGuard<'_>,
        status: DistributionStatus,
        reason: Option<&str>,
        now: Timestamp,
        event: &OutboxEvent,
    ) -> Result<Option<DistributionTask>, StoreError> {
        if !status.is_final() {
            return Err(refused(format!(
                "finishing task {id} as {}, not a final status",
                status.as_str()
            )));
        }
        let shard = self.router().route(shop.get());
        let now_ms = to_ms(now);
        let guard_sql = match guard {
            FinishGuard::Owner(_) => "lease_owner = ? AND status = 'running'",
            FinishGuard::Pending => "status = 'pending' AND lease_until_ms < ?",
        };
        let sql = format!(
            "UPDATE {} SET status = ?, finished_at_ms = ?, failure_reason = ?, lease_until_ms = 0, \
             notify_state = CASE WHEN notify_url IS NULL THEN notify_state ELSE 'pending' END, \
             notify_next_at_ms = CASE WHEN notify_url IS NULL THEN notify_next_at_ms ELSE ? END \
             WHERE id = ? AND shop_id = ? AND {guard_sql}",
            shard.distributions_table()
        );
        let q = sqlx::query(AssertSqlSafe(sql))
            .bind(status.as_str())
            .bind(now_ms)
            .bind(reason.map(str::to_owned))
            .bind(now_ms)
            .bind(id.get())
            .bind(shop.get());
        let q = match guard {
            FinishGuard::Owner(owner) => q.bind(owner.to_owned()),
            FinishGuard::Pending => q.bind(now_ms),
        };
        let mut tx = self.pool(shard.database).begin().await.map_err(db_err)?;
        let matched = q.execute(&mut *tx).await.map_err(db_err)?.rows_affected();
        if matched == 0 {
            tx.rollback().await.map_err(db_err)?;
            return Ok(None);
        }
        // The outbox table the shop routes to: same database, so the same transaction.
        // `outbox_events` scans every outbox table, so it finds the event there.
        insert_records(
            &mut tx,
            "INSERT IGNORE",
            &shard.outbox_table(),
            std::slice::from_ref(event),
        )
        .await
        .map_err(db_err)?;
        let task = select_task(&mut *tx, shard, id.get()).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(task)
    }

    /// Matched rows count (FOUND_ROWS), so asking again answers `true` too.
    async fn request_cancel(&self, id: DistributionId, shop: ShopId) -> Result<bool, StoreError> {
        let shard = self.router().route(shop.get());
        let sql = format!(
            "UPDATE {} SET cancel_requested = TRUE \
             WHERE id = ? AND shop_id = ? AND status IN ('pending', 'running')",
            shard.distributions_table()
        );
        let matched = sqlx::query(AssertSqlSafe(sql))
            .bind(id.get())
            .bind(shop.get())
            .execute(self.pool(shard.database))
            .await
            .map_err(db_err)?
            .rows_affected();
        Ok(matched > 0)
    }

    async fn failures(
        &self,
        id: DistributionId,
        shop: ShopId,
        after_row: u64,
        limit: u32,
    ) -> Result<Vec<FailedRow>, StoreError> {
        // Row numbers are stored as BIGINT: nothing lies past i64::MAX.
        let Ok(after) = i64::try_from(after_row) else {
            return Ok(Vec::new());
        };
        let shard = self.router().route(shop.get());
        let sql = format!(
            "SELECT {} FROM {} WHERE distribution_id = ? AND row_no > ? \
             ORDER BY row_no LIMIT ?",
            FailureRecord::COLUMNS,
            shard.distribution_failures_table()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(id.get())
            .bind(after)
            .bind(limit)
            .fetch_all(self.pool(shard.database))
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| FailureRecord::read(r)?.into_failed_row())
            .collect()
    }

    async fn due_notifications(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<DistributionTask>, StoreError> {
        self.scan(
            "notify_state = 'pending' AND notify_next_at_ms <= ?",
            &[to_ms(now)],
            "notify_next_at_ms, id",
            limit,
            |t| (t.notify_next_at_ms, t.id.get()),
        )
        .await
    }

    async fn update_notification(
        &self,
        id: DistributionId,
        shop: ShopId,
        attempts_before: u32,
        attempts: u32,
        state: NotifyState,
        next_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let shard = self.router().route(shop.get());
        let sql = format!(
            "UPDATE {} SET notify_attempts = ?, notify_state = ?, notify_next_at_ms = ? \
             WHERE id = ? AND shop_id = ? AND notify_attempts = ?",
            shard.distributions_table()
        );
        let matched = sqlx::query(AssertSqlSafe(sql))
            .bind(attempts)
            .bind(state.as_str())
            .bind(next_at_ms)
            .bind(id.get())
            .bind(shop.get())
            .bind(attempts_before)
            .execute(self.pool(shard.database))
            .await
            .map_err(db_err)?
            .rows_affected();
        Ok(matched == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_is_bound() {
        let q = DistributionQuery {
            shop_id: None,
            page: 3,
            page_size: 10,
        };
        assert_eq!(window(&q), (20, 30));
        assert_eq!(window(&DistributionQuery { page: 0, ..q }), (0, 10));
        assert_eq!(DistributionRecord::COLUMNS.split(',').count(), 27);
        assert_eq!(FailureRecord::COLUMNS.split(',').count(), 4);
    }
}
