//! Settings of identity: the JWT secret and token lifetimes, and snowflake worker ids.

use super::units;
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A secret: never printed by `Debug`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// HS256 secret (≥ 32 bytes). Embedded mode generates one in the data dir when unset;
    /// distributed mode requires it so every node verifies every token.
    pub jwt_secret: Option<Secret>,
    /// Lifetime of an access token. Default 15 min.
    #[serde(rename = "access_ttl_secs", with = "units::signed_secs")]
    pub access_ttl: SignedDuration,
    /// Lifetime of a refresh token (and so of a session kept alive by refreshing). Default 30 d.
    #[serde(rename = "refresh_ttl_secs", with = "units::signed_secs")]
    pub refresh_ttl: SignedDuration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            access_ttl: SignedDuration::from_mins(15),
            refresh_ttl: SignedDuration::from_hours(30 * 24),
        }
    }
}

impl AuthSettings {
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if !self.access_ttl.is_positive() || !self.refresh_ttl.is_positive() {
            anyhow::bail!("auth token lifetimes must be positive");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdSettings {
    /// Snowflake worker id, 0–1023; every live node needs its own.
    pub worker_id: u16,
    /// A clock step back up to this is waited out; further back, ids are refused. Default 10 ms.
    #[serde(rename = "max_clock_backwards_ms", with = "units::millis")]
    pub max_clock_backwards: Duration,
    /// Distributed mode: how long a node's leased worker id stays reserved without a renewal
    /// (renewed every third of it). A dead node's id is free for others after this. Default 30 s.
    #[serde(rename = "worker_lease_secs", with = "units::secs")]
    pub worker_lease: Duration,
}

impl Default for IdSettings {
    fn default() -> Self {
        Self {
            worker_id: 0,
            max_clock_backwards: Duration::from_millis(10),
            worker_lease: Duration::from_secs(30),
        }
    }
}

impl IdSettings {
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if self.worker_id > stampede_domain::snowflake::MAX_WORKER {
            anyhow::bail!(
                "ids.worker_id must be 0..={}",
                stampede_domain::snowflake::MAX_WORKER
            );
        }
        if self.worker_lease.is_zero() {
            anyhow::bail!("ids.worker_lease_secs must be positive");
        }
        Ok(())
    }
}
