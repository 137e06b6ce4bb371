//! The claim path for the configured mode: the catalog (template read path), the hot state
//! (`embedded`: in-process + group commit to SQLite; `distributed`: Redis + claim logs), the
//! claim use case, the quote cache, discovery's listings, and the observer that keeps caches and hot state in step
//! with back-office changes (`observers`).

mod distributed;
mod embedded;
mod observers;

use crate::background::Background;
use crate::config::{Backend, Settings};
use crate::services::Services;
use stampede_core::backoffice::TemplateObserver;
use stampede_core::catalog::{Catalog, CatalogConfig};
use stampede_core::claim_ports::HotState;
use stampede_core::claims::Claims;
use stampede_core::coupon_cache::UserCouponCache;
use stampede_core::discovery::{Discovery, DiscoveryConfig};
use stampede_hot_memory::MemoryHotState;
use stampede_hot_redis::Persister;
use std::sync::Arc;

pub struct ClaimPath {
    pub catalog: Arc<Catalog>,
    pub hot: Arc<dyn HotState>,
    pub claims: Arc<Claims>,
    pub observer: Arc<dyn TemplateObserver>,
    /// The embedded hot state, when that is the mode (its writer stats feed metrics).
    pub memory: Option<Arc<MemoryHotState>>,
    /// Distributed mode: drains claim logs into MySQL (run as a job on every node).
    pub persister: Option<Arc<Persister>>,
    /// Shop, product and cart listings of claimable templates (per-shop, in memory).
    pub discovery: Arc<Discovery>,
    /// Each user's unused coupons for quotes; every change this node makes invalidates.
    pub quote_cache: Arc<UserCouponCache>,
    /// Long-running tasks (distributed: the invalidation subscriber).
    pub background: Vec<Background>,
}

impl ClaimPath {
    /// The claim path for the configured storage backend.
    pub async fn build(settings: &Settings, services: &Services) -> anyhow::Result<ClaimPath> {
        match settings.storage.backend {
            Backend::Sqlite => embedded::build(settings, services).await,
            Backend::Mysql => distributed::build(settings, services).await,
        }
    }
}

fn catalog_config(settings: &Settings) -> CatalogConfig {
    let e = &settings.engine;
    CatalogConfig {
        capacity: e.cache_capacity,
        ttl: e.cache_ttl,
        negative_ttl: e.negative_cache_ttl,
        bloom_expected_items: e.bloom_expected_items,
        stale_ttl: e.stale_template_ttl,
    }
}

/// The per-node cache of users' coupons for quotes (see `stampede_core::coupon_cache`).
/// The claim use case over either mode's hot state (same wiring in both modes).
fn claims(
    settings: &Settings,
    services: &Services,
    catalog: &Arc<Catalog>,
    hot: &Arc<dyn HotState>,
    quote_cache: &Arc<UserCouponCache>,
) -> Arc<Claims> {
    Arc::new(
        Claims::new(
            catalog.clone(),
            hot.clone(),
            services.stores.coupons.clone(),
            services.ids.clone(),
            services.clock.clone(),
            quote_cache.clone(),
        )
        .with_key_required(settings.engine.claim_key_required),
    )
}

fn discovery(settings: &Settings, services: &Services, hot: &Arc<dyn HotState>) -> Arc<Discovery> {
    let d = &settings.discovery;
    Arc::new(Discovery::new(
        services.stores.templates.clone(),
        hot.clone(),
        services.clock.clone(),
        DiscoveryConfig {
            horizon: jiff::SignedDuration::from_hours(i64::from(d.horizon_hours)),
            capacity: d.shops_cached,
            ttl: d.listing_ttl(settings.storage.backend),
            max_per_shop: d.max_templates_per_shop.max(1),
        },
    ))
}

fn quote_cache(settings: &Settings) -> Arc<UserCouponCache> {
    let s = &settings.settlement;
    Arc::new(UserCouponCache::new(
        s.quote_cache_users,
        s.quote_cache_ttl(settings.storage.backend),
    ))
}
