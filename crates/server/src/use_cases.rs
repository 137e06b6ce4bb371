//! The use cases the server adds on top of `Services` and the claim path: distributions,
//! settlements and reminders (served by the API, and driven by jobs).

use crate::claim_path::ClaimPath;
use crate::config::Settings;
use crate::services::Services;
use stampede_core::distributions::Distributions;
use stampede_core::reminders::Reminders;
use stampede_core::settlements::Settlements;
use stampede_domain::reminder::Channel;
use std::sync::Arc;

pub struct UseCases {
    pub distributions: Arc<Distributions>,
    pub settlements: Arc<Settlements>,
    pub reminders: Arc<Reminders>,
}

impl UseCases {
    /// `channels`: the reminder channels this deployment delivers (`notifiers`).
    pub fn build(
        settings: &Settings,
        services: &Services,
        claim_path: &ClaimPath,
        channels: Vec<Channel>,
    ) -> UseCases {
        let stores = &services.stores;
        let distributions = Arc::new(Distributions::new(
            stores.distributions.clone(),
            stores.templates.clone(),
            services.ids.clone(),
            services.clock.clone(),
            settings.distribution.batch_size,
            services.node.distribution_owner(settings.storage.backend),
        ));
        let settlements = Arc::new(Settlements::new(
            stores.settlements.clone(),
            stores.coupons.clone(),
            claim_path.catalog.clone(),
            claim_path.hot.clone(),
            services.clock.clone(),
            settings.settlement.lock_ttl,
            claim_path.quote_cache.clone(),
        ));
        let reminders = Arc::new(Reminders::new(
            stores.reminders.clone(),
            claim_path.catalog.clone(),
            services.clock.clone(),
            channels,
        ));
        UseCases {
            distributions,
            settlements,
            reminders,
        }
    }
}
