//! Flow-control ports: `RateLimiter` (is this key within its rate?) and `FlowRuleStore` (the
//! admin's rule set, versioned so every node notices a change by polling one number).
//!
//! Adapters: an in-process limiter (per node) and a Redis GCRA limiter (fleet-wide, falling
//! back to the in-process one while Redis is unreachable); the rule store in SQLite and MySQL.

use crate::ports::StoreError;
use async_trait::async_trait;
use jiff::Timestamp;
use stampede_domain::flow::{FlowRules, Rate, RouteClass};
use std::net::IpAddr;
use std::time::Duration;

/// What a limit is counted per. `Copy` and allocation-free: the in-process limiter hashes it
/// as is; the Redis limiter renders it into a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowKey {
    Route(RouteClass),
    ClaimUser(i64),
    ClaimIp(IpAddr),
    ClaimTemplate(i64),
}

impl FlowKey {
    /// Every rule name [`FlowKey::rule`] gives.
    pub const RULES: [&'static str; 4] = [
        "route",
        "claim_per_user",
        "claim_per_ip",
        "claim_per_template",
    ];

    /// The rule this key is limited by, as metrics label it (`stampede_rate_limited_total{rule}`).
    pub fn rule(&self) -> &'static str {
        Self::RULES[match self {
            FlowKey::Route(_) => 0,
            FlowKey::ClaimUser(_) => 1,
            FlowKey::ClaimIp(_) => 2,
            FlowKey::ClaimTemplate(_) => 3,
        }]
    }
}

impl std::fmt::Display for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlowKey::Route(r) => write!(f, "route:{}", r.as_str()),
            FlowKey::ClaimUser(u) => write!(f, "user:{u}"),
            FlowKey::ClaimIp(ip) => write!(f, "ip:{ip}"),
            FlowKey::ClaimTemplate(t) => write!(f, "tpl:{t}"),
        }
    }
}

/// One limit to check: `key` against `rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub key: FlowKey,
    pub rate: Rate,
}

/// A limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Within every limit; one token was taken from each.
    Allowed,
    /// `checks[index]` is over its limit; retry after `retry_after`.
    Limited { index: usize, retry_after: Duration },
}

/// Checks keys against token-bucket rates.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Takes one token from each check's bucket when all have one. The Redis adapter decides
    /// all of them atomically (nothing taken when one refuses); the in-process one checks in
    /// order and may have taken from earlier buckets when a later one refuses.
    async fn check(&self, checks: &[Check]) -> Result<Decision, StoreError>;
}

/// A stored rule set and its version (1 for the first save, +1 per save).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFlowRules {
    pub version: i64,
    pub rules: FlowRules,
    pub updated_at: Timestamp,
}

/// The admin's flow rules, one current set per deployment.
#[async_trait]
pub trait FlowRuleStore: Send + Sync {
    /// The current set, or `None` until an admin saved one (the configured defaults apply).
    async fn flow_rules(&self) -> Result<Option<StoredFlowRules>, StoreError>;

    /// The current version only (cheap enough to poll every ~500 ms); 0 when none saved.
    async fn flow_rules_version(&self) -> Result<i64, StoreError>;

    /// Replaces the set; returns the new version.
    async fn save_flow_rules(&self, rules: &FlowRules, now: Timestamp) -> Result<i64, StoreError>;
}
