//! The embedded claim path: in-process hot state committing claims to the SQLite coupon store in
//! group commits; the catalog and hot state follow changes through `LocalSync`.

use super::observers::LocalSync;
use super::{ClaimPath, catalog_config, quote_cache};
use crate::config::Settings;
use crate::services::Services;
use anyhow::Context;
use stampede_core::backoffice::TemplateObserver;
use stampede_core::catalog::Catalog;
use stampede_core::claim_ports::HotState;
use stampede_hot_memory::MemoryHotState;
use std::sync::Arc;

pub(super) async fn build(settings: &Settings, services: &Services) -> anyhow::Result<ClaimPath> {
    let s = &services.stores;
    let catalog = Arc::new(Catalog::new(s.templates.clone(), &catalog_config(settings)));
    let n = catalog
        .rebuild_bloom()
        .await
        .context("loading template ids")?;
    tracing::info!(templates = n, "bloom filter of template ids built");
    let memory = Arc::new(MemoryHotState::new(
        s.templates.clone(),
        s.coupons.clone(),
        settings.engine.group_commit_max_batch,
    ));
    let hot: Arc<dyn HotState> = memory.clone();
    let quote_cache = quote_cache(settings);
    let claims = super::claims(settings, services, &catalog, &hot, &quote_cache);
    let observer: Arc<dyn TemplateObserver> = Arc::new(LocalSync {
        catalog: catalog.clone(),
        hot: hot.clone(),
    });
    Ok(ClaimPath {
        catalog,
        hot,
        claims,
        observer,
        memory: Some(memory),
        persister: None,
        quote_cache,
        background: Vec::new(),
    })
}
