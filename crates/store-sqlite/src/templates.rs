//! `TemplateStore` on SQLite: templates, their audit log and idempotency keys, and the
//! `template.created` / `template.terminated` events written with them.

use crate::SqliteStore;
use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, SqliteConnection};
use stampede_core::claim_ports::OutboxEvent;
use stampede_core::events;
use stampede_core::ports::{
    ChangeOutcome, CreateOutcome, IdempotencyRecord, Page, StoreError, TemplateQuery, TemplateStore,
};
use stampede_core::records::{AuditRecord, TemplateRecord};
use stampede_domain::audit::AuditEntry;
use stampede_domain::ids::{ShopId, TemplateId};
use stampede_domain::template::{Template, TemplateChange};
use stampede_domain::time::to_ms;
use stampede_store_sql::text::{TemplateFilter, multi_insert, placeholders};
use stampede_store_sql::{SqlRow, db_err};
use std::sync::LazyLock;

/// `SELECT … FROM templates WHERE id = ?`, built once from the shared column list (a
/// `static`, so it is the `&'static str` sqlx accepts without `AssertSqlSafe`).
static SELECT_BY_ID: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM templates WHERE id = ?",
        TemplateRecord::COLUMNS
    )
});

static INSERT_TEMPLATE: LazyLock<String> = LazyLock::new(|| {
    let columns = TemplateRecord::COLUMNS;
    format!(
        "INSERT INTO templates ({columns}) VALUES ({})",
        placeholders(columns)
    )
});

static INSERT_AUDIT: LazyLock<String> = LazyLock::new(|| {
    let columns = AuditRecord::COLUMNS;
    format!(
        "INSERT INTO template_audit ({columns}) VALUES ({})",
        placeholders(columns)
    )
});

static SELECT_KEY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM idempotency_keys WHERE shop_id = ? AND idem_key = ?",
        IdempotencyRecord::COLUMNS
    )
});

static INSERT_KEY: LazyLock<String> = LazyLock::new(|| {
    let columns = IdempotencyRecord::COLUMNS;
    format!(
        "INSERT INTO idempotency_keys ({columns}) VALUES ({}) \
         ON CONFLICT (shop_id, idem_key) DO NOTHING",
        placeholders(columns)
    )
});

fn decode_template(row: &SqliteRow) -> Result<Template, StoreError> {
    TemplateRecord::read(row)?.into_template()
}

async fn fetch_template(
    conn: &mut SqliteConnection,
    id: TemplateId,
) -> Result<Option<Template>, StoreError> {
    let row = sqlx::query(SELECT_BY_ID.as_str())
        .bind(id.get())
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(decode_template).transpose()
}

async fn insert_template(conn: &mut SqliteConnection, t: &Template) -> Result<(), StoreError> {
    TemplateRecord::from_template(t)
        .bind(sqlx::query(INSERT_TEMPLATE.as_str()))
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    // The goods index, in the same transaction (at most `MAX_GOODS` rows).
    if !t.goods_ids.is_empty() {
        let sql = multi_insert(
            "INSERT",
            "template_goods",
            "goods_id, template_id",
            t.goods_ids.len(),
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for g in &t.goods_ids {
            q = q.bind(g.get()).bind(t.id.get());
        }
        q.execute(conn).await.map_err(db_err)?;
    }
    Ok(())
}

async fn insert_audit(conn: &mut SqliteConnection, e: &AuditEntry) -> Result<(), StoreError> {
    AuditRecord::from_entry(e)
        .bind(sqlx::query(INSERT_AUDIT.as_str()))
        .execute(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Records a template event in the caller's transaction (ignored if already recorded: its id
/// derives from the template).
async fn insert_event(conn: &mut SqliteConnection, e: &OutboxEvent) -> Result<(), StoreError> {
    e.bind(sqlx::query(INSERT_EVENT.as_str()))
        .execute(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

static INSERT_EVENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT OR IGNORE INTO outbox ({}) VALUES ({})",
        OutboxEvent::COLUMNS,
        placeholders(OutboxEvent::COLUMNS)
    )
});

async fn fetch_idempotency(
    conn: &mut SqliteConnection,
    shop_id: ShopId,
    key: &str,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let row = sqlx::query(SELECT_KEY.as_str())
        .bind(shop_id.get())
        .bind(key)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(IdempotencyRecord::read).transpose()
}

/// Binds an idempotency key inside the caller's transaction; `false` when the shop already
/// has that key.
async fn claim_key(conn: &mut SqliteConnection, k: &IdempotencyRecord) -> Result<bool, StoreError> {
    let inserted = k
        .bind(sqlx::query(INSERT_KEY.as_str()))
        .execute(conn)
        .await
        .map_err(db_err)?
        .rows_affected();
    Ok(inserted == 1)
}

/// Stored ids back into typed ids (a non-positive one is corrupt data).
fn to_template_ids(raw: Vec<i64>) -> Result<Vec<TemplateId>, StoreError> {
    raw.into_iter()
        .map(|id| {
            TemplateId::new(id).ok_or_else(|| StoreError::Corrupt(format!("template id {id}")))
        })
        .collect()
}

#[async_trait]
impl TemplateStore for SqliteStore {
    async fn create_template(
        &self,
        t: &Template,
        audit: &AuditEntry,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<CreateOutcome, StoreError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        if let Some(k) = idempotency {
            // The key is claimed first, so a replay writes nothing at all.
            if !claim_key(&mut tx, k).await? {
                // Read while still holding the write lock: a concurrent purge cannot make the
                // record vanish between the conflict and the read.
                let record = fetch_idempotency(&mut tx, k.shop_id, &k.key).await?;
                let template = match &record {
                    Some(r) => fetch_template(&mut tx, r.template_id).await?,
                    None => None,
                };
                tx.rollback().await.map_err(db_err)?;
                let record = record.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "idempotency key {:?} conflicted but cannot be read",
                        k.key
                    ))
                })?;
                return Ok(CreateOutcome::KeyExists { record, template });
            }
        }
        insert_template(&mut tx, t).await?;
        insert_audit(&mut tx, audit).await?;
        insert_event(&mut tx, &events::template_created_event(t)).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(CreateOutcome::Created)
    }

    async fn find_idempotency_key(
        &self,
        shop: ShopId,
        key: &str,
    ) -> Result<Option<(IdempotencyRecord, Option<Template>)>, StoreError> {
        let mut conn = self.reader.acquire().await.map_err(db_err)?;
        let Some(record) = fetch_idempotency(&mut conn, shop, key).await? else {
            return Ok(None);
        };
        let template = fetch_template(&mut conn, record.template_id).await?;
        Ok(Some((record, template)))
    }

    async fn get_template(&self, id: TemplateId) -> Result<Option<Template>, StoreError> {
        let mut conn = self.reader.acquire().await.map_err(db_err)?;
        fetch_template(&mut conn, id).await
    }

    async fn get_templates(&self, ids: &[TemplateId]) -> Result<Vec<Template>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        // Well under SQLite's 32,766 bound variables per statement.
        for chunk in ids.chunks(1_000) {
            let sql = format!(
                "SELECT {} FROM templates WHERE id IN ({})",
                TemplateRecord::COLUMNS,
                vec!["?"; chunk.len()].join(", ")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id.get());
            }
            for row in q.fetch_all(&self.reader).await.map_err(db_err)? {
                out.push(decode_template(&row)?);
            }
        }
        Ok(out)
    }

    async fn list_templates(&self, q: &TemplateQuery) -> Result<Page<Template>, StoreError> {
        // SQLite's LIKE is case-insensitive for ASCII letters.
        let filter = TemplateFilter::new(q, q.shop_id, "name LIKE ? ESCAPE '\\'");
        let columns = TemplateRecord::COLUMNS;
        let where_clause = filter.where_clause("template_goods");

        let page_size = i64::from(q.page_size);
        let offset = i64::from(q.page.saturating_sub(1)) * page_size;
        let select = format!(
            "SELECT {columns} FROM templates{where_clause} ORDER BY id DESC LIMIT ? OFFSET ?"
        );
        let count = format!("SELECT COUNT(*) FROM templates{where_clause}");

        // Both statements in one read transaction, so `total` matches the page's snapshot.
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        let rows = filter
            .bind(sqlx::query(AssertSqlSafe(select)))
            .bind(page_size)
            .bind(offset)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let total: i64 = filter
            .bind(sqlx::query(AssertSqlSafe(count)))
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?
            .try_get(0)
            .map_err(db_err)?;
        tx.rollback().await.map_err(db_err)?;

        let items = rows
            .iter()
            .map(decode_template)
            .collect::<Result<Vec<_>, _>>()?;
        let total = u64::try_from(total)
            .map_err(|_| StoreError::Corrupt(format!("negative count {total}")))?;
        Ok(Page { items, total })
    }

    async fn change_template_keyed(
        &self,
        id: TemplateId,
        change: TemplateChange,
        actor: &str,
        now: Timestamp,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<ChangeOutcome, StoreError> {
        // IMMEDIATE takes the write lock before the read, so the row cannot change between
        // reading it and writing its successor (no lost updates).
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let Some(current) = fetch_template(&mut tx, id).await? else {
            tx.rollback().await.map_err(db_err)?;
            return Ok(ChangeOutcome::NotFound);
        };
        let next = match current.apply(change, now) {
            Err(e) => {
                tx.rollback().await.map_err(db_err)?;
                return Ok(ChangeOutcome::Refused(e));
            }
            Ok(None) => {
                tx.rollback().await.map_err(db_err)?;
                return Ok(ChangeOutcome::Unchanged(current));
            }
            Ok(Some(next)) => next,
        };
        if let Some(k) = idempotency
            && !claim_key(&mut tx, k).await?
        {
            let record = fetch_idempotency(&mut tx, k.shop_id, &k.key).await?;
            tx.rollback().await.map_err(db_err)?;
            return record.map(ChangeOutcome::KeyExists).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "idempotency key {:?} conflicted but cannot be read",
                    k.key
                ))
            });
        }
        sqlx::query("UPDATE templates SET stock_total = ?, stock = ?, status = ?, updated_at_ms = ? WHERE id = ?")
            .bind(next.stock_total)
            .bind(next.stock)
            .bind(next.status.as_str())
            .bind(to_ms(next.updated_at))
            .bind(id.get())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        insert_audit(
            &mut tx,
            &AuditEntry::changed(&current, &next, change, actor),
        )
        .await?;
        if let Some(e) = events::template_change_event(&current, &next) {
            insert_event(&mut tx, &e).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(ChangeOutcome::Changed(next))
    }

    async fn audit_log(&self, id: TemplateId) -> Result<Vec<AuditEntry>, StoreError> {
        let sql = format!(
            "SELECT {} FROM template_audit WHERE template_id = ? ORDER BY seq",
            AuditRecord::COLUMNS
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(id.get())
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|row| AuditRecord::read(row)?.into_entry())
            .collect()
    }

    async fn templates_due_to_end(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<TemplateId>, StoreError> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM templates WHERE status = 'active' AND claim_end_ms <= ? \
             ORDER BY claim_end_ms, id LIMIT ?",
        )
        .bind(to_ms(now))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        to_template_ids(ids)
    }

    async fn purge_idempotency_keys(&self, cutoff: Timestamp) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at_ms < ?")
            .bind(to_ms(cutoff))
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected())
    }

    async fn template_ids(
        &self,
        after: Option<TemplateId>,
        limit: u32,
    ) -> Result<Vec<TemplateId>, StoreError> {
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM templates WHERE id > ? ORDER BY id LIMIT ?")
                .bind(after.map_or(0, TemplateId::get))
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
        to_template_ids(ids)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        for pool in [&self.writer, &self.reader] {
            sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map_err(db_err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::SqliteOptions;

    /// The migration and the shared record must agree on the column set.
    #[tokio::test]
    async fn templates_table_has_exactly_the_shared_columns() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), SqliteOptions::default())
            .await
            .unwrap();
        let names: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('templates') ORDER BY cid")
                .fetch_all(&store.reader)
                .await
                .unwrap();
        let expected: Vec<&str> = TemplateRecord::COLUMNS.split(',').map(str::trim).collect();
        assert_eq!(names, expected);
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(&store.reader)
                .await
                .unwrap();
        let known: Vec<i64> = crate::migrate::MIGRATIONS
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(versions, known);
    }

    /// A row the domain cannot read is `Corrupt`, not a panic or a backend failure.
    #[tokio::test]
    async fn undecodable_rows_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), SqliteOptions::default())
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO templates (id, shop_id, name, instructions, source, scope, goods_ids, kind, \
             stock_total, stock, claim_start_ms, claim_end_ms, per_user_limit, status, created_at_ms, updated_at_ms) \
             VALUES (1, 1, 'x', '', 'shop', 'shop', '', 'fixed', 1, 1, 0, 1, 1, 'bogus', 0, 0), \
                    (2, 1, 'x', '', 'shop', 'shop', '', 'fixed', 1, 1, 0, 1, 1, 'active', 0, 0)",
        )
        .execute(&store.writer)
        .await
        .unwrap();
        // SQLite's flexible typing lets a text value into an INTEGER column.
        sqlx::query("UPDATE templates SET stock = 'lots' WHERE id = 2")
            .execute(&store.writer)
            .await
            .unwrap();
        for id in [1, 2] {
            let got = store.get_template(TemplateId::new(id).unwrap()).await;
            assert!(matches!(got, Err(StoreError::Corrupt(_))), "{id}: {got:?}");
        }
    }

    /// Settings `open` promises, as the connections actually see them.
    #[tokio::test]
    async fn pragmas_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), SqliteOptions::default())
            .await
            .unwrap();
        for pool in [&store.writer, &store.reader] {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(pool)
                .await
                .unwrap();
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(pool)
                .await
                .unwrap();
            let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(pool)
                .await
                .unwrap();
            let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!((mode.as_str(), sync, fk, busy), ("wal", 2, 1, 5000));
        }
        // The read pool refuses writes.
        let write = sqlx::query("DELETE FROM templates")
            .execute(&store.reader)
            .await;
        assert!(write.is_err());
    }
}
