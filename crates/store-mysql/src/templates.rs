//! `TemplateStore`: templates, their audit log and idempotency keys, on the shop's shard, and
//! the `template.created` / `template.terminated` events in that shard's outbox.

use crate::MysqlStore;
use crate::coupons::insert_records;
use crate::error::gave_up;
use crate::router::Shard;
use async_trait::async_trait;
use futures::future::try_join_all;
use jiff::Timestamp;
use sqlx::mysql::{MySqlConnection, MySqlRow};
use sqlx::{AssertSqlSafe, Executor, MySql};
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
use stampede_store_sql::SqlRow;
use stampede_store_sql::error::is_unique_violation;
use stampede_store_sql::text::{multi_insert, placeholders};
use stampede_store_sql::{db_err, refused};

/// Attempts at binding an idempotency key: a key purged between our failed insert and our
/// read of it is simply inserted again.
const CREATE_ATTEMPTS: usize = 3;

/// Rows deleted per statement when purging, so no single delete holds locks for long.
const PURGE_BATCH: u64 = 10_000;

pub(crate) fn template_from_row(row: &MySqlRow) -> Result<Template, StoreError> {
    TemplateRecord::read(row)?.into_template()
}

fn audit_from_row(row: &MySqlRow) -> Result<AuditEntry, StoreError> {
    AuditRecord::read(row)?.into_entry()
}

async fn insert_template(
    conn: &mut MySqlConnection,
    shard: Shard,
    t: &Template,
) -> Result<(), StoreError> {
    let columns = TemplateRecord::COLUMNS;
    let sql = format!(
        "INSERT INTO {} ({columns}) VALUES ({})",
        shard.templates_table(),
        placeholders(columns)
    );
    TemplateRecord::from_template(t)
        .bind(sqlx::query(AssertSqlSafe(sql)))
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    // The goods index, on the same shard in the same transaction (at most `MAX_GOODS` rows).
    if !t.goods_ids.is_empty() {
        let sql = multi_insert(
            "INSERT",
            &shard.template_goods_table(),
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

async fn insert_audit(
    conn: &mut MySqlConnection,
    shard: Shard,
    e: &AuditEntry,
) -> Result<(), StoreError> {
    let columns = AuditRecord::COLUMNS;
    let sql = format!(
        "INSERT INTO {} ({columns}) VALUES ({})",
        shard.audit_table(),
        placeholders(columns)
    );
    AuditRecord::from_entry(e)
        .bind(sqlx::query(AssertSqlSafe(sql)))
        .execute(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Records a template event in the caller's transaction, in the outbox of the template's
/// shard (ignored if already recorded: its id derives from the template).
async fn insert_event(
    conn: &mut MySqlConnection,
    shard: Shard,
    e: OutboxEvent,
) -> Result<(), StoreError> {
    insert_records(conn, "INSERT IGNORE", &shard.outbox_table(), &[e])
        .await
        .map_err(db_err)?;
    Ok(())
}

async fn select_template<'e, E>(
    exec: E,
    shard: Shard,
    id: i64,
    for_update: bool,
) -> Result<Option<Template>, StoreError>
where
    E: Executor<'e, Database = MySql>,
{
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let sql = format!(
        "SELECT {} FROM {} WHERE id = ?{lock}",
        TemplateRecord::COLUMNS,
        shard.templates_table()
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(exec)
        .await
        .map_err(db_err)?;
    row.as_ref().map(template_from_row).transpose()
}

impl MysqlStore {
    async fn idempotency_record(
        &self,
        shard: Shard,
        shop: ShopId,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE shop_id = ? AND idem_key = ?",
            IdempotencyRecord::COLUMNS,
            shard.idempotency_table()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(shop.get())
            .bind(key)
            .fetch_optional(self.pool(shard.database))
            .await
            .map_err(db_err)?;
        row.as_ref().map(IdempotencyRecord::read).transpose()
    }

    /// One attempt at the shard transaction of `create_template`; `None` when the key was
    /// taken but its record vanished before we could read it (purged meanwhile).
    async fn try_create(
        &self,
        shard: Shard,
        t: &Template,
        audit: &AuditEntry,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<Option<CreateOutcome>, StoreError> {
        let mut tx = self.pool(shard.database).begin().await.map_err(db_err)?;
        if let Some(rec) = idempotency {
            // The key goes in first: a duplicate stops us before anything else is written.
            match insert_key(&mut tx, shard, rec).await {
                Ok(true) => {}
                Ok(false) => {
                    tx.rollback().await.map_err(db_err)?;
                    let Some(existing) = self
                        .idempotency_record(shard, rec.shop_id, &rec.key)
                        .await?
                    else {
                        return Ok(None);
                    };
                    // A retry of the very creation that bound the key must keep its row.
                    if existing.template_id != t.id {
                        self.unfile_template(t.id).await;
                    }
                    let template = select_template(
                        self.pool(shard.database),
                        shard,
                        existing.template_id.get(),
                        false,
                    )
                    .await?;
                    return Ok(Some(CreateOutcome::KeyExists {
                        record: existing,
                        template,
                    }));
                }
                Err(e) => return Err(e),
            }
        }
        insert_template(&mut tx, shard, t).await?;
        insert_audit(&mut tx, shard, audit).await?;
        insert_event(&mut tx, shard, events::template_created_event(t)).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Some(CreateOutcome::Created))
    }

    async fn purge_database(&self, database: usize, cutoff_ms: i64) -> Result<u64, StoreError> {
        let mut purged = 0;
        for t in 0..self.router().tables_per_database() {
            let shard = Shard { database, table: t };
            let sql = format!(
                "DELETE FROM {} WHERE created_at_ms < ? LIMIT {PURGE_BATCH}",
                shard.idempotency_table()
            );
            loop {
                let done = sqlx::query(AssertSqlSafe(sql.clone()))
                    .bind(cutoff_ms)
                    .execute(self.pool(database))
                    .await
                    .map_err(db_err)?
                    .rows_affected();
                purged += done;
                if done < PURGE_BATCH {
                    break;
                }
            }
        }
        Ok(purged)
    }
}

/// Binds an idempotency key inside the caller's transaction; `false` when the shop already
/// has that key.
async fn insert_key(
    tx: &mut sqlx::Transaction<'_, sqlx::MySql>,
    shard: Shard,
    rec: &IdempotencyRecord,
) -> Result<bool, StoreError> {
    let columns = IdempotencyRecord::COLUMNS;
    let sql = format!(
        "INSERT INTO {} ({columns}) VALUES ({})",
        shard.idempotency_table(),
        placeholders(columns)
    );
    let inserted = rec
        .bind(sqlx::query(AssertSqlSafe(sql)))
        .execute(&mut **tx)
        .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(db_err(e)),
    }
}

#[async_trait]
impl TemplateStore for MysqlStore {
    async fn create_template(
        &self,
        t: &Template,
        audit: &AuditEntry,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<CreateOutcome, StoreError> {
        if idempotency.is_some_and(|r| r.shop_id != t.shop_id) {
            return Err(refused(
                "an idempotency record must belong to the template's shop",
            ));
        }
        // The directory row goes first, outside the shard transaction (it lives in another
        // database). If we crash before the template is written, the row points at nothing:
        // get-by-id routes to the shard, finds no template and answers None, which is right.
        // The other order could leave a template that no lookup by id can find.
        self.file_template(t.id, t.shop_id).await?;
        let shard = self.router().route(t.shop_id.get());
        for _ in 0..CREATE_ATTEMPTS {
            if let Some(outcome) = self.try_create(shard, t, audit, idempotency).await? {
                return Ok(outcome);
            }
        }
        Err(gave_up(
            "the idempotency key kept being purged while it was in use",
        ))
    }

    async fn find_idempotency_key(
        &self,
        shop: ShopId,
        key: &str,
    ) -> Result<Option<(IdempotencyRecord, Option<Template>)>, StoreError> {
        let shard = self.router().route(shop.get());
        let Some(record) = self.idempotency_record(shard, shop, key).await? else {
            return Ok(None);
        };
        let template = select_template(
            self.pool(shard.database),
            shard,
            record.template_id.get(),
            false,
        )
        .await?;
        Ok(Some((record, template)))
    }

    async fn get_template(&self, id: TemplateId) -> Result<Option<Template>, StoreError> {
        let Some(shard) = self.shard_of(id).await? else {
            return Ok(None);
        };
        select_template(self.pool(shard.database), shard, id.get(), false).await
    }

    async fn get_templates(&self, ids: &[TemplateId]) -> Result<Vec<Template>, StoreError> {
        let mut by_shard: std::collections::HashMap<Shard, Vec<i64>> =
            std::collections::HashMap::new();
        for (id, shard) in self.shards_of(ids).await? {
            by_shard.entry(shard).or_default().push(id.get());
        }
        let queries = by_shard.into_iter().map(|(shard, ids)| async move {
            let sql = format!(
                "SELECT {} FROM {} WHERE id IN ({})",
                TemplateRecord::COLUMNS,
                shard.templates_table(),
                vec!["?"; ids.len()].join(", ")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in &ids {
                q = q.bind(*id);
            }
            let rows = q
                .fetch_all(self.pool(shard.database))
                .await
                .map_err(db_err)?;
            rows.iter()
                .map(template_from_row)
                .collect::<Result<Vec<_>, _>>()
        });
        Ok(futures::future::try_join_all(queries)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    async fn list_templates(&self, q: &TemplateQuery) -> Result<Page<Template>, StoreError> {
        match q.shop_id {
            Some(shop) => self.list_one_shop(q, shop).await,
            None => self.list_all_shops(q).await,
        }
    }

    async fn change_template_keyed(
        &self,
        id: TemplateId,
        change: TemplateChange,
        actor: &str,
        now: Timestamp,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<ChangeOutcome, StoreError> {
        let Some(shard) = self.shard_of(id).await? else {
            return Ok(ChangeOutcome::NotFound);
        };
        let mut tx = self.pool(shard.database).begin().await.map_err(db_err)?;
        // The row lock makes `apply` decide on the state no one else can change meanwhile.
        let Some(current) = select_template(&mut *tx, shard, id.get(), true).await? else {
            tx.rollback().await.map_err(db_err)?;
            return Ok(ChangeOutcome::NotFound);
        };
        let next = match current.apply(change, now) {
            Err(refusal) => {
                tx.rollback().await.map_err(db_err)?;
                return Ok(ChangeOutcome::Refused(refusal));
            }
            Ok(None) => {
                tx.rollback().await.map_err(db_err)?;
                return Ok(ChangeOutcome::Unchanged(current));
            }
            Ok(Some(next)) => next,
        };
        if let Some(rec) = idempotency
            && !insert_key(&mut tx, shard, rec).await?
        {
            tx.rollback().await.map_err(db_err)?;
            return match self
                .idempotency_record(shard, rec.shop_id, &rec.key)
                .await?
            {
                Some(existing) => Ok(ChangeOutcome::KeyExists(existing)),
                None => Err(gave_up(
                    "the idempotency key was purged while it was in use",
                )),
            };
        }
        let sql = format!(
            "UPDATE {} SET stock_total = ?, stock = ?, status = ?, updated_at_ms = ? WHERE id = ?",
            shard.templates_table()
        );
        sqlx::query(AssertSqlSafe(sql))
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
            shard,
            &AuditEntry::changed(&current, &next, change, actor),
        )
        .await?;
        if let Some(e) = events::template_change_event(&current, &next) {
            insert_event(&mut tx, shard, e).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(ChangeOutcome::Changed(next))
    }

    async fn audit_log(&self, id: TemplateId) -> Result<Vec<AuditEntry>, StoreError> {
        let Some(shard) = self.shard_of(id).await? else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT {} FROM {} WHERE template_id = ? ORDER BY seq",
            AuditRecord::COLUMNS,
            shard.audit_table()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(id.get())
            .fetch_all(self.pool(shard.database))
            .await
            .map_err(db_err)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn templates_due_to_end(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<TemplateId>, StoreError> {
        self.due_to_end(now, limit).await
    }

    async fn purge_idempotency_keys(&self, cutoff: Timestamp) -> Result<u64, StoreError> {
        let cutoff_ms = to_ms(cutoff);
        let per_db =
            try_join_all((0..self.router().databases()).map(|d| self.purge_database(d, cutoff_ms)))
                .await?;
        Ok(per_db.into_iter().sum())
    }

    /// From the directory (one query on `databases[0]`). A directory row whose template was
    /// never written (a crashed creation) is listed too; for a filter of existing ids that
    /// is a harmless false positive.
    async fn template_ids(
        &self,
        after: Option<TemplateId>,
        limit: u32,
    ) -> Result<Vec<TemplateId>, StoreError> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT template_id FROM template_directory WHERE template_id > ? \
             ORDER BY template_id LIMIT ?",
        )
        .bind(after.map_or(0, TemplateId::get))
        .bind(limit)
        .fetch_all(self.global())
        .await
        .map_err(db_err)?;
        ids.into_iter()
            .map(|raw| {
                TemplateId::new(raw)
                    .ok_or_else(|| StoreError::Corrupt(format!("template id {raw}")))
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let pings = self
            .inner
            .pools
            .iter()
            .map(|p| sqlx::query("SELECT 1").execute(p));
        try_join_all(pings).await.map_err(db_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_placeholder_per_column() {
        assert_eq!(placeholders("a, b, c"), "?, ?, ?");
        assert_eq!(
            placeholders(TemplateRecord::COLUMNS).matches('?').count(),
            23
        );
    }
}
