//! Settings of coupon discovery: which upcoming templates are listed and how long a shop's
//! listing lives in a node's memory.

use super::{Backend, units};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Embedded: every change reaches the listings in-process and none can be lost, so the
/// TTL only caps how long a listing sits in memory (one store query per shop per hour).
const LISTING_TTL_EMBEDDED: Duration = Duration::from_secs(60 * 60);
/// Distributed: other nodes' changes arrive by a Redis broadcast, which a Redis outage at
/// the moment of the change can lose; the TTL bounds how long a listing misses it.
const LISTING_TTL_DISTRIBUTED: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoverySettings {
    /// Templates whose claim window opens within this many hours are listed (upcoming
    /// sales); later ones are not. Default 24.
    pub horizon_hours: u32,
    /// Shops whose listing a node keeps in memory. Default 100,000.
    pub shops_cached: u64,
    /// How long a listing lives without a change signal: bounds a lost broadcast. Every
    /// change reloads the shop's listing at once. Unset: 60 s distributed, 1 h embedded
    /// (see [`Self::listing_ttl`]).
    #[serde(rename = "listing_ttl_secs", with = "units::opt_secs")]
    pub listing_ttl: Option<Duration>,
    /// Most active templates one shop's listing holds (newest first). Default 1,000.
    pub max_templates_per_shop: u32,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        Self {
            horizon_hours: 24,
            shops_cached: 100_000,
            listing_ttl: None,
            max_templates_per_shop: 1_000,
        }
    }
}

impl DiscoverySettings {
    /// The configured TTL, or the mode's default.
    pub fn listing_ttl(&self, backend: Backend) -> Duration {
        self.listing_ttl.unwrap_or(match backend {
            Backend::Sqlite => LISTING_TTL_EMBEDDED,
            Backend::Mysql => LISTING_TTL_DISTRIBUTED,
        })
    }
}
