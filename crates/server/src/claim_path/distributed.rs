//! The distributed claim path: Redis hot state and claim logs (persisted to MySQL by every
//! node), a shared Redis template cache behind the local one, and `Broadcast` so every
//! node's catalog hears of every change.

use super::observers::{Broadcast, LocalSync};
use super::{ClaimPath, catalog_config, quote_cache};
use crate::background::Background;
use crate::config::Settings;
use crate::services::Services;
use anyhow::Context;
use futures::future::BoxFuture;
use stampede_core::backoffice::TemplateObserver;
use stampede_core::catalog::Catalog;
use stampede_core::claim_ports::HotState;
use stampede_core::coupon_cache::UserCouponCache;
use stampede_core::discovery::Discovery;
use stampede_hot_redis::{
    ClaimLogHints, Invalidation, Persister, RedisHotState, RedisTemplateCache, UserInvalidation,
};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(super) async fn build(settings: &Settings, services: &Services) -> anyhow::Result<ClaimPath> {
    let s = &services.stores;
    let r = &settings.redis;
    let claim_log = s
        .claim_log
        .clone()
        .context("the MySQL store has no claim log")?;
    let conn = services
        .redis
        .clone()
        .context("distributed mode has no Redis connection")?;
    let shared =
        RedisTemplateCache::new(conn.clone(), &r.prefix, settings.engine.shared_cache_ttl());
    let catalog = Arc::new(
        Catalog::new(s.templates.clone(), &catalog_config(settings)).with_shared(Arc::new(shared)),
    );
    let n = catalog
        .rebuild_bloom()
        .await
        .context("loading template ids")?;
    tracing::info!(templates = n, "bloom filter of template ids built");
    // Claims tell this node's persister which logs to drain between its full sweeps.
    let hints = Arc::new(ClaimLogHints::default());
    let hot: Arc<dyn HotState> = Arc::new(
        RedisHotState::from_manager(conn.clone(), &r.prefix, s.coupons.clone())
            .with_hints(hints.clone())
            .with_replica_wait(r.replica_wait()),
    );
    // Every user change this node commits is broadcast to the other nodes' quote caches.
    let (user_tx, user_rx) = tokio::sync::mpsc::channel(USER_BROADCAST_QUEUE);
    let node_tag: u64 = rand::random();
    let quote_cache = Arc::new(
        Arc::into_inner(quote_cache(settings))
            .context("a fresh quote cache is not shared")?
            .with_broadcast(user_tx),
    );
    let claims = super::claims(settings, services, &catalog, &hot, &quote_cache);
    let discovery = super::discovery(settings, services, &hot);
    let observer: Arc<dyn TemplateObserver> = Arc::new(Broadcast {
        local: LocalSync {
            catalog: catalog.clone(),
            hot: hot.clone(),
            discovery: discovery.clone(),
        },
        invalidation: Invalidation::new(conn.clone(), &r.prefix),
    });
    // The persister's batch reads get the batch deadline, on the same breaker.
    let persister = Persister::new(
        conn.with_deadline(settings.resilience.redis_batch),
        &r.prefix,
        claim_log,
        services.node.to_string(),
        r.persister_batch,
    )
    .with_hints(hints, r.persister_sweep)
    .with_replica_wait(r.replica_wait());
    Ok(ClaimPath {
        catalog: catalog.clone(),
        hot,
        claims,
        observer,
        memory: None,
        persister: Some(Arc::new(persister)),
        discovery: discovery.clone(),
        quote_cache: quote_cache.clone(),
        background: vec![
            invalidation_subscriber(settings, catalog),
            shop_subscriber(settings, discovery.clone()),
            user_broadcast(conn.clone(), &r.prefix, node_tag, user_rx),
            user_subscriber(settings, node_tag, quote_cache.clone()),
            crate::storage::database_watch(
                s.mysql.clone().context("distributed mode without MySQL")?,
                settings.resilience.probe_interval,
                settings.resilience.database_read,
            ),
        ],
    })
}

/// Where this node's pub/sub subscribers connect (any node of a cluster serves; under
/// Sentinel, the master of the moment).
fn subscribe_urls(settings: &Settings) -> stampede_hot_redis::Seeds {
    settings
        .redis
        .topology()
        .map(|t| t.subscribe_seeds())
        .unwrap_or_else(|_| stampede_hot_redis::Seeds::Urls(vec![settings.redis.url.clone()]))
}

/// User ids waiting to be broadcast; beyond it they are dropped (and counted), and the
/// other nodes' entries for those users expire by TTL.
const USER_BROADCAST_QUEUE: usize = 65_536;

/// Publishes the users whose coupons this node changed.
fn user_broadcast(
    conn: stampede_hot_redis::Connection,
    prefix: &str,
    node_tag: u64,
    rx: tokio::sync::mpsc::Receiver<stampede_domain::ids::UserId>,
) -> Background {
    let prefix = prefix.to_owned();
    Box::new(move |token: CancellationToken| -> BoxFuture<'static, ()> {
        Box::pin(UserInvalidation::publisher(
            conn, &prefix, node_tag, rx, token,
        ))
    })
}

/// Drops from this node's quote cache the users other nodes changed; after a gap in the
/// subscription, everything (changes may have been missed).
fn user_subscriber(settings: &Settings, node_tag: u64, cache: Arc<UserCouponCache>) -> Background {
    let (url, prefix) = (subscribe_urls(settings), settings.redis.prefix.clone());
    Box::new(move |token: CancellationToken| -> BoxFuture<'static, ()> {
        let c = cache.clone();
        let on_users = move |users: Vec<stampede_domain::ids::UserId>| {
            let c = c.clone();
            tokio::spawn(async move {
                for u in users {
                    c.invalidate_local(u).await;
                }
            });
        };
        let on_subscribed = move || cache.invalidate_all();
        match UserInvalidation::subscribe(
            url.clone(),
            &prefix,
            node_tag,
            on_users,
            on_subscribed,
            token,
        ) {
            Ok(fut) => Box::pin(fut),
            Err(e) => {
                tracing::error!(error = %e, "cannot subscribe to user invalidations");
                Box::pin(async {})
            }
        }
    })
}

/// Reloads the discovery listings of shops whose templates changed on any node (this
/// node's own changes arrive too: reloading once more is harmless); after a gap in the
/// subscription, every listing.
fn shop_subscriber(settings: &Settings, discovery: Arc<Discovery>) -> Background {
    let (url, prefix) = (subscribe_urls(settings), settings.redis.prefix.clone());
    Box::new(move |token: CancellationToken| -> BoxFuture<'static, ()> {
        let d = discovery.clone();
        let on_shop = move |shop| d.changed(shop);
        let d = discovery.clone();
        let on_subscribed = move || d.forget_all();
        match Invalidation::subscribe_shops(url.clone(), &prefix, on_shop, on_subscribed, token) {
            Ok(fut) => Box::pin(fut),
            Err(e) => {
                tracing::error!(error = %e, "cannot subscribe to shop invalidations");
                Box::pin(async {})
            }
        }
    })
}

/// Listens for other nodes' template changes and reloads them into this node's catalog.
fn invalidation_subscriber(settings: &Settings, catalog: Arc<Catalog>) -> Background {
    let (url, prefix) = (subscribe_urls(settings), settings.redis.prefix.clone());
    Box::new(move |token: CancellationToken| -> BoxFuture<'static, ()> {
        let cat = catalog.clone();
        let on_invalidate = move |id| {
            let cat = cat.clone();
            tokio::spawn(async move { cat.created(id).await });
        };
        // Templates created elsewhere between the start-up bloom load (or a lost
        // subscription) and this subscription were never announced to this node: reload the
        // ids each time the subscription is (re)established, or claims on them would be 404.
        let on_subscribed = move || {
            let cat = catalog.clone();
            tokio::spawn(async move {
                if let Err(e) = cat.rebuild_bloom().await {
                    tracing::warn!(error = %e, "could not catch up on template ids after subscribing");
                }
            });
        };
        match Invalidation::subscribe_with_catch_up(
            url.clone(),
            &prefix,
            on_invalidate,
            on_subscribed,
            token,
        ) {
            Ok(fut) => Box::pin(fut),
            Err(e) => {
                tracing::error!(error = %e, "cannot subscribe to template invalidations");
                Box::pin(async {})
            }
        }
    })
}
