//! The embedded claim path: in-process hot state acknowledging claims once they are in the
//! claim journal (SQLite applied behind it), or, with `engine.claim_journal = false`, once
//! they are committed to SQLite in group commits; the catalog and hot state follow changes
//! through `LocalSync`.

use super::observers::LocalSync;
use super::{ClaimPath, catalog_config, quote_cache};
use crate::config::Settings;
use crate::services::Services;
use anyhow::Context;
use stampede_core::backoffice::TemplateObserver;
use stampede_core::catalog::Catalog;
use stampede_core::claim_ports::HotState;
use stampede_hot_memory::{ClaimJournal, JournalOptions, MemoryHotState};
use std::sync::Arc;

pub(super) async fn build(settings: &Settings, services: &Services) -> anyhow::Result<ClaimPath> {
    let s = &services.stores;
    let catalog = Arc::new(Catalog::new(s.templates.clone(), &catalog_config(settings)));
    let n = catalog
        .rebuild_bloom()
        .await
        .context("loading template ids")?;
    tracing::info!(templates = n, "bloom filter of template ids built");
    let engine = &settings.engine;
    let memory = match (&s.claim_journal, engine.claim_journal) {
        (Some(target), true) => {
            let opts = JournalOptions {
                fsync: settings.storage.sqlite_fsync,
                max_batch: engine.group_commit_max_batch.max(1),
                apply_batch: engine.journal_apply_batch.max(1),
                max_backlog: engine.journal_max_backlog.max(1),
                ..JournalOptions::new(settings.claim_journal_dir())
            };
            // Replays what a previous run acknowledged but did not apply, before anything
            // (the hot state's first load included) reads the coupons.
            let journal = ClaimJournal::open(target.clone(), opts)
                .await
                .context("opening the claim journal")?;
            MemoryHotState::with_journal(s.templates.clone(), s.coupons.clone(), Arc::new(journal))
        }
        _ => MemoryHotState::new(
            s.templates.clone(),
            s.coupons.clone(),
            engine.group_commit_max_batch,
        ),
    };
    let memory = Arc::new(memory);
    let hot: Arc<dyn HotState> = memory.clone();
    let quote_cache = quote_cache(settings);
    let claims = super::claims(settings, services, &catalog, &hot, &quote_cache);
    let discovery = super::discovery(settings, services, &hot);
    let observer: Arc<dyn TemplateObserver> = Arc::new(LocalSync {
        catalog: catalog.clone(),
        hot: hot.clone(),
        discovery: discovery.clone(),
    });
    Ok(ClaimPath {
        catalog,
        hot,
        claims,
        observer,
        memory: Some(memory),
        persister: None,
        discovery,
        quote_cache,
        background: Vec::new(),
    })
}
