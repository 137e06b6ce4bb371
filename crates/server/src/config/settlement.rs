//! Settings of settlement: order locks on coupons, their expiry sweep, and the quote cache.

use super::{Backend, units};
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Quote-cache TTL when unset, embedded: one process makes every change and invalidates at
/// once, so only memory bounds how long an entry may live.
const QUOTE_CACHE_TTL_EMBEDDED: Duration = Duration::from_secs(5 * 60);
/// Quote-cache TTL when unset, distributed. Other nodes' changes arrive by broadcast within
/// milliseconds; the TTL only bounds a lost broadcast. At 1 s every cached user was re-read
/// from MySQL once a second, a third of the quote path's CPU in the benchmark.
const QUOTE_CACHE_TTL_DISTRIBUTED: Duration = Duration::from_secs(10);

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
    /// Expired locks one sweep step releases (one transaction each; a full step is followed
    /// by another at once). Default 200.
    pub expiry_batch: u32,
    /// Users whose coupons a node keeps for quotes.
    pub quote_cache_users: u64,
    /// How long a cached user's coupons serve quotes: this node's own changes invalidate at
    /// once, other nodes' (distributed mode) by broadcast; a lost broadcast shows within
    /// this. Unset: 10 s distributed, 5 min embedded (see [`Self::quote_cache_ttl`]).
    #[serde(rename = "quote_cache_ttl_ms", with = "units::opt_millis")]
    pub quote_cache_ttl: Option<Duration>,
}

impl Default for SettlementSettings {
    fn default() -> Self {
        Self {
            lock_ttl: SignedDuration::from_mins(15),
            expiry_interval: Duration::from_millis(1_000),
            expiry_batch: 200,
            quote_cache_users: 100_000,
            quote_cache_ttl: None,
        }
    }
}

impl SettlementSettings {
    /// The quote-cache TTL: configured, else the default of the backend's mode.
    pub fn quote_cache_ttl(&self, backend: Backend) -> Duration {
        self.quote_cache_ttl.unwrap_or(match backend {
            Backend::Sqlite => QUOTE_CACHE_TTL_EMBEDDED,
            Backend::Mysql => QUOTE_CACHE_TTL_DISTRIBUTED,
        })
    }

    pub(super) fn check(&self) -> anyhow::Result<()> {
        if !self.lock_ttl.is_positive() || self.expiry_interval.is_zero() {
            anyhow::bail!("settlement.lock_ttl_secs and expiry_interval_ms must be positive");
        }
        if self.expiry_batch == 0 {
            anyhow::bail!("settlement.expiry_batch must be positive");
        }
        Ok(())
    }
}
