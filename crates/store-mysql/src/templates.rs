//! `TemplateStore`: templates, their audit log and idempotency keys, on the shop's shard.

use crate::MysqlStore;
use crate::error::{col, db_err, gave_up, is_unique_violation, misuse};
use crate::router::Shard;
use async_trait::async_trait;
use futures::future::try_join_all;
use jiff::Timestamp;
use sqlx::mysql::{MySqlConnection, MySqlRow};
use sqlx::{AssertSqlSafe, Executor, MySql};
use stampede_core::ports::{
    ChangeOutcome, CreateOutcome, IdempotencyRecord, Page, StoreError, TemplateQuery, TemplateStore,
};
use stampede_core::records::{AuditRecord, TEMPLATE_COLUMNS, TemplateRecord};
use stampede_domain::audit::AuditEntry;
use stampede_domain::ids::{ShopId, TemplateId};
use stampede_domain::template::{Template, TemplateChange};
use stampede_domain::time::{from_ms, to_ms};

const AUDIT_COLUMNS: &str = "template_id, shop_id, at_ms, actor, action, before_json, after_json";

/// Attempts at binding an idempotency key: a key purged between our failed insert and our
/// read of it is simply inserted again.
const CREATE_ATTEMPTS: usize = 3;

/// Rows deleted per statement when purging, so no single delete holds locks for long.
const PURGE_BATCH: u64 = 10_000;

pub(crate) fn template_from_row(row: &MySqlRow) -> Result<Template, StoreError> {
    TemplateRecord {
        id: col(row, "id")?,
        shop_id: col(row, "shop_id")?,
        name: col(row, "name")?,
        instructions: col(row, "instructions")?,
        source: col(row, "source")?,
        scope: col(row, "scope")?,
        goods_ids: col(row, "goods_ids")?,
        kind: col(row, "kind")?,
        amount_off: col(row, "amount_off")?,
        threshold: col(row, "threshold")?,
        percent_off: col(row, "percent_off")?,
        max_off: col(row, "max_off")?,
        stock_total: col(row, "stock_total")?,
        stock: col(row, "stock")?,
        claim_start_ms: col(row, "claim_start_ms")?,
        claim_end_ms: col(row, "claim_end_ms")?,
        valid_from_ms: col(row, "valid_from_ms")?,
        valid_until_ms: col(row, "valid_until_ms")?,
        validity_hours: col(row, "validity_hours")?,
        per_user_limit: col(row, "per_user_limit")?,
        status: col(row, "status")?,
        created_at_ms: col(row, "created_at_ms")?,
        updated_at_ms: col(row, "updated_at_ms")?,
    }
    .into_template()
}

fn audit_from_row(row: &MySqlRow) -> Result<AuditEntry, StoreError> {
    AuditRecord {
        template_id: col(row, "template_id")?,
        shop_id: col(row, "shop_id")?,
        at_ms: col(row, "at_ms")?,
        actor: col(row, "actor")?,
        action: col(row, "action")?,
        before_json: col(row, "before_json")?,
        after_json: col(row, "after_json")?,
    }
    .into_entry()
}

fn placeholders(columns: &str) -> String {
    vec!["?"; columns.split(',').count()].join(", ")
}

async fn insert_template(
    conn: &mut MySqlConnection,
    shard: Shard,
    t: &Template,
) -> Result<(), StoreError> {
    let r = TemplateRecord::from_template(t);
    let sql = format!(
        "INSERT INTO {} ({TEMPLATE_COLUMNS}) VALUES ({})",
        shard.templates_table(),
        placeholders(TEMPLATE_COLUMNS)
    );
    // Bound in `TEMPLATE_COLUMNS` order.
    sqlx::query(AssertSqlSafe(sql))
        .bind(r.id)
        .bind(r.shop_id)
        .bind(r.name)
        .bind(r.instructions)
        .bind(r.source)
        .bind(r.scope)
        .bind(r.goods_ids)
        .bind(r.kind)
        .bind(r.amount_off)
        .bind(r.threshold)
        .bind(r.percent_off)
        .bind(r.max_off)
        .bind(r.stock_total)
        .bind(r.stock)
        .bind(r.claim_start_ms)
        .bind(r.claim_end_ms)
        .bind(r.valid_from_ms)
        .bind(r.valid_until_ms)
        .bind(r.validity_hours)
        .bind(r.per_user_limit)
        .bind(r.status)
        .bind(r.created_at_ms)
        .bind(r.updated_at_ms)
        .execute(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

async fn insert_audit(
    conn: &mut MySqlConnection,
    shard: Shard,
    e: &AuditEntry,
) -> Result<(), StoreError> {
    let r = AuditRecord::from_entry(e);
    let sql = format!(
        "INSERT INTO {} ({AUDIT_COLUMNS}) VALUES ({})",
        shard.audit_table(),
        placeholders(AUDIT_COLUMNS)
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(r.template_id)
        .bind(r.shop_id)
        .bind(r.at_ms)
        .bind(r.actor)
        .bind(r.action)
        .bind(r.before_json)
        .bind(r.after_json)
        .execute(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Template `id` as stored in `shard`, read through `exec` (a pool or a transaction).
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
        "SELECT {TEMPLATE_COLUMNS} FROM {} WHERE id = ?{lock}",
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
            "SELECT request_hash, template_id, created_at_ms FROM {} WHERE shop_id = ? AND idem_key = ?",
            shard.idempotency_table()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(shop.get())
            .bind(key)
            .fetch_optional(self.pool(shard.database))
            .await
            .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let template_id: i64 = col(&row, "template_id")?;
        Ok(Some(IdempotencyRecord {
            shop_id: shop,
            key: key.to_owned(),
            request_hash: col(&row, "request_hash")?,
            template_id: TemplateId::new(template_id).ok_or_else(|| {
                StoreError::Corrupt(format!("idempotency key {key:?}: bad template_id"))
            })?,
            created_at: from_ms(col(&row, "created_at_ms")?),
        }))
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
    let sql = format!(
        "INSERT INTO {} (shop_id, idem_key, request_hash, template_id, created_at_ms) VALUES (?, ?, ?, ?, ?)",
        shard.idempotency_table()
    );
    let inserted = sqlx::query(AssertSqlSafe(sql))
        .bind(rec.shop_id.get())
        .bind(&rec.key)
        .bind(&rec.request_hash)
        .bind(rec.template_id.get())
        .bind(to_ms(rec.created_at))
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
            return Err(misuse(
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
                "SELECT {TEMPLATE_COLUMNS} FROM {} WHERE id IN ({})",
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
        tx.commit().await.map_err(db_err)?;
        Ok(ChangeOutcome::Changed(next))
    }

    async fn audit_log(&self, id: TemplateId) -> Result<Vec<AuditEntry>, StoreError> {
        let Some(shard) = self.shard_of(id).await? else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM {} WHERE template_id = ? ORDER BY seq",
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
        assert_eq!(placeholders(TEMPLATE_COLUMNS).matches('?').count(), 23);
    }
}
