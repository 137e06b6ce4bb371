//! The template directory: template id → shop id, kept in `databases[0]`, so that a lookup
//! by id goes straight to the owning shard instead of asking all of them.
//!
//! A template never changes shop, so answers are cached in a small bounded map.

use crate::MysqlStore;
use crate::error::{col, db_err};
use crate::router::Shard;
use stampede_core::ports::StoreError;
use stampede_domain::ids::{ShopId, TemplateId};
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

impl MysqlStore {
    /// Records where template `id` will live. `INSERT IGNORE` makes a retry harmless; an id
    /// already filed under another shop is refused, since routing would then be ambiguous.
    pub(crate) async fn file_template(
        &self,
        id: TemplateId,
        shop: ShopId,
    ) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT IGNORE INTO template_directory (template_id, shop_id) VALUES (?, ?)",
        )
        .bind(id.get())
        .bind(shop.get())
        .execute(self.global())
        .await
        .map_err(db_err)?;
        if inserted.rows_affected() == 0 && self.shop_of(id).await? != Some(shop.get()) {
            return Err(StoreError::Duplicate(format!(
                "template id {id} is filed under another shop"
            )));
        }
        self.inner.directory.put(id.get(), shop.get());
        Ok(())
    }

    /// Removes the directory row of a template that was never written. Best effort: a row
    /// left behind only makes get-by-id look in a shard and find nothing.
    pub(crate) async fn unfile_template(&self, id: TemplateId) {
        self.inner.directory.remove(id.get());
        let deleted = sqlx::query("DELETE FROM template_directory WHERE template_id = ?")
            .bind(id.get())
            .execute(self.global())
            .await;
        if let Err(e) = deleted {
            tracing::warn!(template = %id, error = %e, "could not remove an unused directory row");
        }
    }

    /// The shop template `id` is filed under, if any.
    async fn shop_of(&self, id: TemplateId) -> Result<Option<i64>, StoreError> {
        if let Some(shop) = self.inner.directory.get(id.get()) {
            return Ok(Some(shop));
        }
        let row = sqlx::query("SELECT shop_id FROM template_directory WHERE template_id = ?")
            .bind(id.get())
            .fetch_optional(self.global())
            .await
            .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let shop: i64 = col(&row, "shop_id")?;
        self.inner.directory.put(id.get(), shop);
        Ok(Some(shop))
    }

    /// The shard holding template `id`, if the directory knows it.
    pub(crate) async fn shard_of(&self, id: TemplateId) -> Result<Option<Shard>, StoreError> {
        Ok(self
            .shop_of(id)
            .await?
            .map(|shop| self.router().route(shop)))
    }
}
