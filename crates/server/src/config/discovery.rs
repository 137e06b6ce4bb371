//! Settings of coupon discovery: which upcoming templates are listed and how long a shop's
//! listing lives in a node's memory.

use super::units;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoverySettings {
    /// Templates whose claim window opens within this many hours are listed (upcoming
    /// sales); later ones are not. Default 24.
    pub horizon_hours: u32,
    /// Shops whose listing a node keeps in memory. Default 100,000.
    pub shops_cached: u64,
    /// How long a listing lives without a change signal: bounds a lost broadcast. Every
    /// change reloads the shop's listing at once. Default 60 s.
    #[serde(rename = "listing_ttl_secs", with = "units::secs")]
    pub listing_ttl: Duration,
    /// Most active templates one shop's listing holds (newest first). Default 1,000.
    pub max_templates_per_shop: u32,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        Self {
            horizon_hours: 24,
            shops_cached: 100_000,
            listing_ttl: Duration::from_secs(60),
            max_templates_per_shop: 1_000,
        }
    }
}
