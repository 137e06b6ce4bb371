//! Settings of settlement: order locks on coupons, their expiry sweep, and the quote cache.

use super::units;
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettlementSettings {
    /// How long a lock holds coupons for an order before the sweep releases them.
    /// Default 15 min.
    #[serde(rename = "lock_ttl_secs", with = "units::signed_secs")]
    pub lock_ttl: SignedDuration,
    /// How often each node sweeps expired locks (a lock is released within this of expiry).
    /// Default 1 s.
    #[serde(rename = "expiry_interval_ms", with = "units::millis")]
    pub expiry_interval: Duration,
    /// Users whose coupons a node keeps for quotes.
    pub quote_cache_users: u64,
    /// How long a cached user's coupons serve quotes: this node's own changes invalidate at
    /// once; other nodes' changes (distributed mode) show within this. Unset: 1 s
    /// distributed, 5 min embedded (one process makes every change, so only memory bounds it).
    #[serde(rename = "quote_cache_ttl_ms", with = "units::opt_millis")]
    pub quote_cache_ttl: Option<Duration>,
}

impl Default for SettlementSettings {
    fn default() -> Self {
        Self {
            lock_ttl: SignedDuration::from_mins(15),
            expiry_interval: Duration::from_millis(1_000),
            quote_cache_users: 100_000,
            quote_cache_ttl: None,
        }
    }
}

impl SettlementSettings {
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if !self.lock_ttl.is_positive() || self.expiry_interval.is_zero() {
            anyhow::bail!("settlement.lock_ttl_secs and expiry_interval_ms must be positive");
        }
        Ok(())
    }
}
