//! Filtered reads of templates: one shop's list (one shard), and the reads that span every
//! shop — the admin list and the end sweep — as one `UNION ALL` query per database, sent to
//! all databases concurrently and merged here.
//!
//! Only table names (from the router) are interpolated into SQL; every value is bound.

use crate::MysqlStore;
use crate::router::Shard;
use crate::templates::template_from_row;
use futures::future::{try_join, try_join_all};
use jiff::Timestamp;
use sqlx::AssertSqlSafe;
use stampede_core::ports::{Page, StoreError, TemplateQuery};
use stampede_core::records::TemplateRecord;
use stampede_domain::ids::{ShopId, TemplateId};
use stampede_domain::template::Template;
use stampede_domain::time::to_ms;
use stampede_store_sql::SqlRow;
use stampede_store_sql::text::{TemplateFilter, page_window};
use stampede_store_sql::{Columns, db_err};

/// The column's collation is case-insensitive, as the port asks; `\\` in a MySQL string
/// literal is one backslash.
const NAME_LIKE: &str = r"name LIKE ? ESCAPE '\\'";

impl MysqlStore {
    pub(crate) async fn list_one_shop(
        &self,
        q: &TemplateQuery,
        shop: ShopId,
    ) -> Result<Page<Template>, StoreError> {
        let shard = self.router().route(shop.get());
        let pool = self.pool(shard.database);
        let filter = TemplateFilter::new(q, Some(shop), NAME_LIKE);
        let (offset, _) = page_window(q.page, q.page_size);
        let table = shard.templates_table();
        let where_clause = filter.where_clause(&shard.template_goods_table());
        let columns = TemplateRecord::COLUMNS;
        let items_sql = format!(
            "SELECT {columns} FROM {table}{where_clause} ORDER BY id DESC LIMIT ? OFFSET ?"
        );
        let count_sql = format!("SELECT COUNT(*) AS n FROM {table}{where_clause}");
        let items = filter
            .bind(sqlx::query(AssertSqlSafe(items_sql)))
            .bind(u64::from(q.page_size))
            .bind(offset)
            .fetch_all(pool);
        let count = filter
            .bind(sqlx::query(AssertSqlSafe(count_sql)))
            .fetch_one(pool);
        let (rows, count) = try_join(items, count).await.map_err(db_err)?;
        let total = count.int("n")?;
        Ok(Page {
            items: rows
                .iter()
                .map(template_from_row)
                .collect::<Result<_, _>>()?,
            total: u64::try_from(total).unwrap_or_default(),
        })
    }

    /// Each database returns its newest `offset + page_size` matches (each table sub-select
    /// is limited the same way), which together must contain the page; the merge picks it.
    /// Deep pages therefore cost O(page × page_size × databases) rows: the price of listing
    /// across shards without a global index.
    pub(crate) async fn list_all_shops(
        &self,
        q: &TemplateQuery,
    ) -> Result<Page<Template>, StoreError> {
        let filter = TemplateFilter::new(q, None, NAME_LIKE);
        let (offset, end) = page_window(q.page, q.page_size);
        let per_db =
            (0..self.router().databases()).map(|d| self.newest_in_database(d, &filter, end));
        let answers = try_join_all(per_db).await?;
        let mut total = 0u64;
        let mut items = Vec::new();
        for (templates, count) in answers {
            total += count;
            items.extend(templates);
        }
        items.sort_unstable_by_key(|t| std::cmp::Reverse(t.id));
        let items = items
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(q.page_size).unwrap_or(usize::MAX))
            .collect();
        Ok(Page { items, total })
    }

    /// The newest `limit` matching templates of one database and its number of matches.
    async fn newest_in_database(
        &self,
        database: usize,
        filter: &TemplateFilter,
        limit: u64,
    ) -> Result<(Vec<Template>, u64), StoreError> {
        let shards: Vec<Shard> = (0..self.router().tables_per_database())
            .map(|table| Shard { database, table })
            .collect();
        let columns = TemplateRecord::COLUMNS;
        let items_sql = union(shards.iter().map(|s| {
            format!(
                "(SELECT {columns} FROM {}{} ORDER BY id DESC LIMIT ?)",
                s.templates_table(),
                filter.where_clause(&s.template_goods_table())
            )
        })) + " ORDER BY id DESC LIMIT ?";
        let count_sql = union(shards.iter().map(|s| {
            format!(
                "SELECT COUNT(*) AS n FROM {}{}",
                s.templates_table(),
                filter.where_clause(&s.template_goods_table())
            )
        }));

        let mut items = sqlx::query(AssertSqlSafe(items_sql));
        let mut count = sqlx::query(AssertSqlSafe(count_sql));
        for _ in &shards {
            items = filter.bind(items).bind(limit);
            count = filter.bind(count);
        }
        let pool = self.pool(database);
        let (rows, counts) = try_join(items.bind(limit).fetch_all(pool), count.fetch_all(pool))
            .await
            .map_err(db_err)?;
        let mut total = 0u64;
        for c in &counts {
            total += u64::try_from(c.int("n")?).unwrap_or_default();
        }
        let templates = rows
            .iter()
            .map(template_from_row)
            .collect::<Result<_, _>>()?;
        Ok((templates, total))
    }

    /// Active templates whose window closed at or before `now`, earliest first, from every
    /// shard: one query per database, then the earliest `limit` overall.
    pub(crate) async fn due_to_end(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<TemplateId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now_ms = to_ms(now);
        let per_db = (0..self.router().databases()).map(|database| async move {
            let sql = union((0..self.router().tables_per_database()).map(|table| {
                let s = Shard { database, table };
                format!(
                    "(SELECT id, claim_end_ms FROM {} WHERE status = 'active' AND claim_end_ms <= ? \
                     ORDER BY claim_end_ms LIMIT ?)",
                    s.templates_table()
                )
            })) + " ORDER BY claim_end_ms, id LIMIT ?";
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for _ in 0..self.router().tables_per_database() {
                query = query.bind(now_ms).bind(limit);
            }
            query.bind(limit).fetch_all(self.pool(database)).await.map_err(db_err)
        });
        let mut due = Vec::new();
        for rows in try_join_all(per_db).await? {
            for row in rows {
                due.push((row.int("claim_end_ms")?, row.int("id")?));
            }
        }
        due.sort_unstable();
        due.into_iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|(_, id)| {
                TemplateId::new(id).ok_or_else(|| StoreError::Corrupt(format!("template id {id}")))
            })
            .collect()
    }
}

pub(crate) fn union(selects: impl Iterator<Item = String>) -> String {
    selects.collect::<Vec<_>>().join(" UNION ALL ")
}
