//! Wires the claim engine for the configured mode: the catalog (template read path), the hot
//! state (in-process + group commit for SQLite; Redis + claim logs for MySQL), the use cases,
//! and the observer that keeps caches and hot state in step with back-office changes.

use crate::app::Services;
use crate::config::{Backend, Settings};
use anyhow::Context;
use async_trait::async_trait;
use futures::future::BoxFuture;
use stampede_core::backoffice::TemplateObserver;
use stampede_core::catalog::{Catalog, CatalogConfig};
use stampede_core::claim_ports::{CouponStore, HotState};
use stampede_core::claims::Claims;
use stampede_core::clock::Clock;
use stampede_core::ids::IdGenerator;
use stampede_core::ports::TemplateStore;
use stampede_domain::template::Template;
use stampede_hot_memory::MemoryHotState;
use stampede_hot_redis::{Invalidation, Persister, RedisHotState, RedisTemplateCache};
use stampede_workers::Job;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Engine {
    pub catalog: Arc<Catalog>,
    pub hot: Arc<dyn HotState>,
    pub claims: Arc<Claims>,
    pub observer: Arc<dyn TemplateObserver>,
    /// The embedded hot state, when that is the mode (its writer stats feed metrics).
    pub memory: Option<Arc<MemoryHotState>>,
    /// Background jobs the engine needs (distributed: claim-log persisters).
    pub jobs: Vec<Arc<dyn Job>>,
    /// Each user's unused coupons for quotes; every change this node makes invalidates.
    pub quote_cache: Arc<stampede_core::coupon_cache::UserCouponCache>,
    /// Long-running tasks (distributed: the invalidation subscriber).
    pub background: Vec<Background>,
}

/// The engine for the configured storage backend.
pub async fn build(settings: &Settings, services: &Services) -> anyhow::Result<Engine> {
    let s = &services.stores;
    match settings.storage.backend {
        Backend::Sqlite => {
            embedded(
                settings,
                s.templates.clone(),
                s.coupons.clone(),
                services.ids.clone(),
                services.clock.clone(),
            )
            .await
        }
        Backend::Mysql => distributed(settings, services).await,
    }
}

/// A long-running task the application spawns with its shutdown token.
pub type Background = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// Keeps other nodes' catalogs in step: publishes every creation and change.
struct Broadcast {
    local: LocalSync,
    invalidation: Invalidation,
}

#[async_trait]
impl TemplateObserver for Broadcast {
    async fn created(&self, t: &Template) {
        self.local.created(t).await;
        if let Err(e) = self.invalidation.publish(t.id).await {
            tracing::warn!(template = %t.id, error = %e, "could not broadcast a new template; other nodes see it when their bloom filter is rebuilt");
        }
    }

    async fn changed(&self, t: &Template) {
        self.local.changed(t).await;
        if let Err(e) = self.invalidation.publish(t.id).await {
            tracing::warn!(template = %t.id, error = %e, "could not broadcast a template change; other nodes see it when their cache entry expires");
        }
    }
}

/// Drains claim logs into MySQL (the persister as a runner job).
struct PersistClaims {
    persister: Persister,
    batch: usize,
    interval: Duration,
}

#[async_trait]
impl Job for PersistClaims {
    fn name(&self) -> &'static str {
        "persist_claims"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn batch(&self) -> usize {
        self.batch
    }

    async fn run_once(&self) -> Result<usize, stampede_core::AppError> {
        Ok(self.persister.run_once().await?)
    }
}

/// The distributed engine: Redis hot state and claim logs, persisted to MySQL by every node.
async fn distributed(settings: &Settings, services: &Services) -> anyhow::Result<Engine> {
    let s = &services.stores;
    let r = &settings.redis;
    let claim_log = s
        .claim_log
        .clone()
        .context("the MySQL store has no claim log")?;
    let conn = stampede_hot_redis::connect(&r.url)
        .await
        .with_context(|| format!("connecting to Redis at {}", r.url))?;
    let shared = RedisTemplateCache::new(
        conn.clone(),
        &r.prefix,
        Duration::from_secs(settings.engine.cache_ttl_secs.saturating_mul(5)),
    );
    let catalog = Arc::new(
        Catalog::new(s.templates.clone(), &catalog_config(settings)).with_shared(Arc::new(shared)),
    );
    let n = catalog
        .rebuild_bloom()
        .await
        .context("loading template ids")?;
    tracing::info!(templates = n, "bloom filter of template ids built");
    let hot: Arc<dyn HotState> = Arc::new(RedisHotState::from_manager(
        conn.clone(),
        &r.prefix,
        s.coupons.clone(),
    ));
    let quote_cache = quote_cache(settings);
    let claims = Arc::new(Claims::new(
        catalog.clone(),
        hot.clone(),
        s.coupons.clone(),
        services.ids.clone(),
        services.clock.clone(),
        quote_cache.clone(),
    ));
    let observer: Arc<dyn TemplateObserver> = Arc::new(Broadcast {
        local: LocalSync {
            catalog: catalog.clone(),
            hot: hot.clone(),
        },
        invalidation: Invalidation::new(conn.clone(), &r.prefix),
    });
    let node_id = format!(
        "node-{}-{:08x}",
        settings.ids.worker_id,
        rand::random::<u32>()
    );
    let persister = Persister::new(conn, &r.prefix, claim_log, node_id, r.persister_batch);
    let jobs: Vec<Arc<dyn Job>> = vec![Arc::new(PersistClaims {
        persister,
        batch: r.persister_batch,
        interval: Duration::from_millis(r.persister_interval_ms),
    })];
    let (url, prefix, cat) = (r.url.clone(), r.prefix.clone(), catalog.clone());
    let subscriber: Background =
        Box::new(move |token: CancellationToken| -> BoxFuture<'static, ()> {
            let on_invalidate = move |id| {
                let cat = cat.clone();
                tokio::spawn(async move { cat.created(id).await });
            };
            match Invalidation::subscribe(&url, &prefix, on_invalidate, token) {
                Ok(fut) => Box::pin(fut),
                Err(e) => {
                    tracing::error!(error = %e, "cannot subscribe to template invalidations");
                    Box::pin(async {})
                }
            }
        });
    Ok(Engine {
        catalog,
        hot,
        claims,
        observer,
        memory: None,
        quote_cache,
        jobs,
        background: vec![subscriber],
    })
}

/// Keeps this node's catalog and the hot state in step with back-office changes.
struct LocalSync {
    catalog: Arc<Catalog>,
    hot: Arc<dyn HotState>,
}

#[async_trait]
impl TemplateObserver for LocalSync {
    async fn created(&self, t: &Template) {
        self.catalog.created(t.id).await;
    }

    async fn changed(&self, t: &Template) {
        self.catalog.changed(t.id).await;
        if let Err(e) = self.hot.template_changed(t).await {
            // The hot state reloads from the system of record on its next load; an active
            // one keeps its old stock/status until then, so say so loudly.
            tracing::error!(template = %t.id, error = %e, "hot state missed a template change");
        }
    }
}

pub fn catalog_config(settings: &Settings) -> CatalogConfig {
    let e = &settings.engine;
    CatalogConfig {
        capacity: e.cache_capacity,
        ttl: Duration::from_secs(e.cache_ttl_secs),
        negative_ttl: Duration::from_millis(e.negative_cache_ttl_ms),
        bloom_expected_items: e.bloom_expected_items,
    }
}

/// The embedded engine: in-process hot state committing to the SQLite coupon store.
pub async fn embedded(
    settings: &Settings,
    templates: Arc<dyn TemplateStore>,
    coupons: Arc<dyn CouponStore>,
    ids: Arc<IdGenerator>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Engine> {
    let catalog = Arc::new(Catalog::new(templates.clone(), &catalog_config(settings)));
    let n = catalog
        .rebuild_bloom()
        .await
        .context("loading template ids")?;
    tracing::info!(templates = n, "bloom filter of template ids built");
    let memory = Arc::new(MemoryHotState::new(
        templates,
        coupons.clone(),
        settings.engine.group_commit_max_batch,
    ));
    let hot: Arc<dyn HotState> = memory.clone();
    let quote_cache = quote_cache(settings);
    let claims = Arc::new(Claims::new(
        catalog.clone(),
        hot.clone(),
        coupons,
        ids,
        clock,
        quote_cache.clone(),
    ));
    let observer: Arc<dyn TemplateObserver> = Arc::new(LocalSync {
        catalog: catalog.clone(),
        hot: hot.clone(),
    });
    Ok(Engine {
        catalog,
        hot,
        claims,
        observer,
        memory: Some(memory),
        quote_cache,
        jobs: Vec::new(),
        background: Vec::new(),
    })
}

/// The per-node cache of users' coupons for quotes (see `stampede_core::coupon_cache`).
fn quote_cache(settings: &Settings) -> Arc<stampede_core::coupon_cache::UserCouponCache> {
    let ttl_ms = settings
        .settlement
        .quote_cache_ttl_ms
        .unwrap_or(match settings.storage.backend {
            Backend::Sqlite => 300_000,
            Backend::Mysql => 1_000,
        });
    Arc::new(stampede_core::coupon_cache::UserCouponCache::new(
        settings.settlement.quote_cache_users,
        Duration::from_millis(ttl_ms),
    ))
}

/// Forgets per-user claim buckets that are full again, once a minute.
pub struct ShrinkLimiter(pub stampede_api::flow::ClaimLimiter);

#[async_trait]
impl Job for ShrinkLimiter {
    fn name(&self) -> &'static str {
        "shrink_claim_limiter"
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn batch(&self) -> usize {
        usize::MAX
    }

    async fn run_once(&self) -> Result<usize, stampede_core::AppError> {
        self.0.shrink();
        Ok(0)
    }
}

/// This node's snowflake worker id, leased in Redis (distributed mode).
#[derive(Clone)]
pub struct WorkerLease {
    pub id: u16,
    node: String,
    prefix: String,
    conn: redis::aio::ConnectionManager,
}

const WORKER_LEASE: Duration = Duration::from_secs(30);

/// Leases a worker id in distributed mode (starting from `ids.worker_id`); `None` embedded,
/// where the one process owns the configured id.
pub async fn lease_worker(settings: &Settings) -> anyhow::Result<Option<WorkerLease>> {
    if settings.storage.backend != Backend::Mysql {
        return Ok(None);
    }
    let r = &settings.redis;
    let conn = stampede_hot_redis::connect(&r.url)
        .await
        .with_context(|| format!("connecting to Redis at {}", r.url))?;
    let node = format!("node-{:016x}", rand::random::<u64>());
    let id = stampede_hot_redis::lease_worker_id(
        &conn,
        &r.prefix,
        &node,
        settings.ids.worker_id,
        WORKER_LEASE,
    )
    .await
    .context("leasing a snowflake worker id")?;
    tracing::info!(worker_id = id, node = %node, "leased snowflake worker id");
    Ok(Some(WorkerLease {
        id,
        node,
        prefix: r.prefix.clone(),
        conn,
    }))
}

impl WorkerLease {
    /// Renews the lease every third of its time until shutdown; losing it is logged loudly
    /// (another node may now mint the same ids) and retaken as soon as it is free again.
    pub fn renewal(self) -> Background {
        Box::new(move |token: CancellationToken| -> BoxFuture<'static, ()> {
            Box::pin(async move {
                loop {
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(WORKER_LEASE / 3) => {}
                    }
                    match stampede_hot_redis::renew_worker_id(
                        &self.conn,
                        &self.prefix,
                        &self.node,
                        self.id,
                        WORKER_LEASE,
                    )
                    .await
                    {
                        Ok(true) => {}
                        Ok(false) => tracing::error!(
                            worker_id = self.id,
                            "lost the snowflake worker-id lease to another node"
                        ),
                        Err(e) => {
                            tracing::warn!(worker_id = self.id, error = %e, "could not renew the worker-id lease")
                        }
                    }
                }
            })
        })
    }
}
