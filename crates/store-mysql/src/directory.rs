//! The directories: template id → shop id (`template_directory`) and distribution id → shop id
//! (`distribution_directory`), kept in `databases[0]`, so that a lookup by id goes straight to
//! the owning shard instead of asking all of them.
//!
//! Neither a template nor a task ever changes shop, so answers are cached in small bounded
//! maps (one per directory: the two id spaces are separate).

use crate::MysqlStore;
use crate::router::Shard;
use sqlx::AssertSqlSafe;
use stampede_core::ports::StoreError;
use stampede_domain::ids::{DistributionId, ShopId, TemplateId};
use stampede_store_sql::{Columns, db_err};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Entries kept before the cache starts over (an id and a shop are 16 bytes each way).
const CACHE_CAPACITY: usize = 100_000;

#[derive(Default)]
pub(crate) struct DirectoryCache {
    shops: Mutex<HashMap<i64, i64>>,
}

impl DirectoryCache {
    fn get(&self, id: i64) -> Option<i64> {
        self.shops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .copied()
    }

    fn put(&self, id: i64, shop: i64) {
        let mut shops = self.shops.lock().unwrap_or_else(PoisonError::into_inner);
        // Clearing is crude but bounded; misses only cost one indexed lookup.
        if shops.len() >= CACHE_CAPACITY {
            shops.clear();
        }
        shops.insert(id, shop);
    }

    fn remove(&self, id: i64) {
        self.shops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
}

/// Which directory: its table, its id column and its cache.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Template,
    Distribution,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Template => "template",
            Kind::Distribution => "distribution",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Kind::Template => "template_directory",
            Kind::Distribution => "distribution_directory",
        }
    }

    fn id_column(self) -> &'static str {
        match self {
            Kind::Template => "template_id",
            Kind::Distribution => "distribution_id",
        }
    }
}

impl MysqlStore {
    fn cache(&self, kind: Kind) -> &DirectoryCache {
        match kind {
            Kind::Template => &self.inner.directory,
            Kind::Distribution => &self.inner.distribution_directory,
        }
    }

    /// Records where `id` will live. `INSERT IGNORE` makes a retry harmless; an id already
    /// filed under another shop is refused, since routing would then be ambiguous.
    async fn file(&self, kind: Kind, id: i64, shop: i64) -> Result<(), StoreError> {
        // Only fixed table and column names are interpolated.
        let sql = format!(
            "INSERT IGNORE INTO {} ({}, shop_id) VALUES (?, ?)",
            kind.table(),
            kind.id_column()
        );
        let inserted = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .bind(shop)
            .execute(self.global())
            .await
            .map_err(db_err)?;
        if inserted.rows_affected() == 0 && self.shop_of(kind, id).await? != Some(shop) {
            return Err(StoreError::Duplicate(format!(
                "{} id {id} is filed under another shop",
                kind.what()
            )));
        }
        self.cache(kind).put(id, shop);
        Ok(())
    }

    /// Removes the directory row of an id that was never written. Best effort: a row left
    /// behind only makes get-by-id look in a shard and find nothing.
    async fn unfile(&self, kind: Kind, id: i64) {
        self.cache(kind).remove(id);
        let sql = format!(
            "DELETE FROM {} WHERE {} = ?",
            kind.table(),
            kind.id_column()
        );
        let deleted = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .execute(self.global())
            .await;
        if let Err(e) = deleted {
            tracing::warn!(kind = kind.what(), id, error = %e, "could not remove an unused directory row");
        }
    }

    /// The shop `id` is filed under, if any.
    async fn shop_of(&self, kind: Kind, id: i64) -> Result<Option<i64>, StoreError> {
        if let Some(shop) = self.cache(kind).get(id) {
            return Ok(Some(shop));
        }
        let sql = format!(
            "SELECT shop_id FROM {} WHERE {} = ?",
            kind.table(),
            kind.id_column()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.global())
            .await
            .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let shop = row.int("shop_id")?;
        self.cache(kind).put(id, shop);
        Ok(Some(shop))
    }

    pub(crate) async fn file_template(
        &self,
        id: TemplateId,
        shop: ShopId,
    ) -> Result<(), StoreError> {
        self.file(Kind::Template, id.get(), shop.get()).await
    }

    pub(crate) async fn unfile_template(&self, id: TemplateId) {
        self.unfile(Kind::Template, id.get()).await;
    }

    /// The shard holding template `id`, if the directory knows it.
    pub(crate) async fn shard_of(&self, id: TemplateId) -> Result<Option<Shard>, StoreError> {
        Ok(self
            .shop_of(Kind::Template, id.get())
            .await?
            .map(|shop| self.router().route(shop)))
    }

    /// The shards of `ids` the directory knows (unknown ids left out): cached ones from
    /// memory, the rest with one query on database 0.
    pub(crate) async fn shards_of(
        &self,
        ids: &[TemplateId],
    ) -> Result<Vec<(TemplateId, Shard)>, StoreError> {
        let kind = Kind::Template;
        let mut out = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match self.cache(kind).get(id.get()) {
                Some(shop) => out.push((*id, self.router().route(shop))),
                None => missing.push(*id),
            }
        }
        for chunk in missing.chunks(1_000) {
            let sql = format!(
                "SELECT {id}, shop_id FROM {table} WHERE {id} IN ({})",
                vec!["?"; chunk.len()].join(", "),
                id = kind.id_column(),
                table = kind.table(),
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id.get());
            }
            for row in q.fetch_all(self.global()).await.map_err(db_err)? {
                let raw = row.int(kind.id_column())?;
                let shop = row.int("shop_id")?;
                self.cache(kind).put(raw, shop);
                if let Some(id) = TemplateId::new(raw) {
                    out.push((id, self.router().route(shop)));
                }
            }
        }
        Ok(out)
    }

    pub(crate) async fn file_distribution(
        &self,
        id: DistributionId,
        shop: ShopId,
    ) -> Result<(), StoreError> {
        self.file(Kind::Distribution, id.get(), shop.get()).await
    }

    pub(crate) async fn unfile_distribution(&self, id: DistributionId) {
        self.unfile(Kind::Distribution, id.get()).await;
    }

    /// The shard holding distribution task `id`, if the directory knows it.
    pub(crate) async fn distribution_shard(
        &self,
        id: DistributionId,
    ) -> Result<Option<Shard>, StoreError> {
        Ok(self
            .shop_of(Kind::Distribution, id.get())
            .await?
            .map(|shop| self.router().route(shop)))
    }
}
