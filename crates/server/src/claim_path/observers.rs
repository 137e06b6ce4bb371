//! How back-office changes reach the claim path after their transaction committed:
//! `LocalSync` updates this node's catalog, discovery listings and hot state; `Broadcast` also tells the other
//! nodes (distributed mode).

use async_trait::async_trait;
use stampede_core::backoffice::TemplateObserver;
use stampede_core::catalog::Catalog;
use stampede_core::claim_ports::HotState;
use stampede_core::discovery::Discovery;
use stampede_domain::template::Template;
use stampede_hot_redis::Invalidation;
use std::sync::Arc;

/// Keeps this node's catalog and the hot state in step with back-office changes.
pub(super) struct LocalSync {
    pub catalog: Arc<Catalog>,
    pub hot: Arc<dyn HotState>,
    pub discovery: Arc<Discovery>,
}

#[async_trait]
impl TemplateObserver for LocalSync {
    async fn created(&self, t: &Template) {
        self.catalog.created(t.id).await;
        self.discovery.changed(t.shop_id);
    }

    async fn changed(&self, t: &Template) {
        self.catalog.changed(t.id).await;
        self.discovery.changed(t.shop_id);
        if let Err(e) = self.hot.template_changed(t).await {
            // The hot state reloads from the system of record on its next load; an active
            // one keeps its old stock/status until then, so say so loudly.
            tracing::error!(template = %t.id, error = %e, "hot state missed a template change");
        }
    }
}

/// Keeps other nodes' catalogs in step: publishes every creation and change.
pub(super) struct Broadcast {
    pub local: LocalSync,
    pub invalidation: Invalidation,
}

#[async_trait]
impl TemplateObserver for Broadcast {
    async fn created(&self, t: &Template) {
        self.local.created(t).await;
        if let Err(e) = self.invalidation.publish(t.id).await {
            tracing::warn!(template = %t.id, error = %e, "could not broadcast a new template; other nodes see it when their bloom filter is rebuilt");
        }
        self.publish_shop(t).await;
    }

    async fn changed(&self, t: &Template) {
        self.local.changed(t).await;
        if let Err(e) = self.invalidation.publish(t.id).await {
            tracing::warn!(template = %t.id, error = %e, "could not broadcast a template change; other nodes see it when their cache entry expires");
        }
        self.publish_shop(t).await;
    }
}

impl Broadcast {
    async fn publish_shop(&self, t: &Template) {
        if let Err(e) = self.invalidation.publish_shop(t.shop_id).await {
            tracing::warn!(shop = %t.shop_id, error = %e, "could not broadcast a shop's change; other nodes' listings of it follow within discovery.listing_ttl_secs");
        }
    }
}
