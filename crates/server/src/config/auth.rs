//! Settings of identity: the JWT secret and token lifetimes, login throttling (`login_*`),
//! and snowflake worker ids.

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
    /// Failed logins one account may make before it is locked out.
    pub login_account_free_failures: u32,
    /// Failed logins one client IP may make (over all accounts) before it is locked out.
    pub login_ip_free_failures: u32,
    /// The first lockout; it doubles with every further failure. Default 1 s.
    #[serde(rename = "login_lockout_initial_ms", with = "units::millis")]
    pub login_lockout_initial: Duration,
    /// The longest lockout. Default 15 min.
    #[serde(rename = "login_lockout_max_secs", with = "units::secs")]
    pub login_lockout_max: Duration,
    /// Failures are forgotten after this long without one. Default 15 min.
    #[serde(rename = "login_failure_window_secs", with = "units::secs")]
    pub login_failure_window: Duration,
    /// Password checks (argon2) in flight at most on this node. Default 2 × CPU cores.
    pub login_max_in_flight: usize,
    /// How long a login waits for a free check before 503 `OVERLOADED`. Default 200 ms.
    #[serde(rename = "login_queue_wait_ms", with = "units::millis")]
    pub login_queue_wait: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            access_ttl: SignedDuration::from_mins(15),
            refresh_ttl: SignedDuration::from_hours(30 * 24),
            login_account_free_failures: 5,
            login_ip_free_failures: 50,
            login_lockout_initial: Duration::from_secs(1),
            login_lockout_max: Duration::from_secs(15 * 60),
            login_failure_window: Duration::from_secs(15 * 60),
            login_max_in_flight: 2 * std::thread::available_parallelism().map_or(1, usize::from),
            login_queue_wait: Duration::from_millis(200),
        }
    }
}

impl AuthSettings {
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if !self.access_ttl.is_positive() || !self.refresh_ttl.is_positive() {
            anyhow::bail!("auth token lifetimes must be positive");
        }
        if self.login_max_in_flight == 0 {
            anyhow::bail!("auth.login_max_in_flight must be at least 1");
        }
        if self.login_lockout_initial.is_zero()
            || self.login_lockout_max < self.login_lockout_initial
        {
            anyhow::bail!(
                "auth.login_lockout_initial_ms must be positive and at most auth.login_lockout_max_secs"
            );
        }
        Ok(())
    }

    /// The lockout policy for accounts (`ip = false`) or client IPs.
    pub fn login_policy(&self, ip: bool) -> stampede_core::login::LockoutPolicy {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        stampede_core::login::LockoutPolicy {
            free_failures: if ip {
                self.login_ip_free_failures
            } else {
                self.login_account_free_failures
            },
            initial_lockout_ms: ms(self.login_lockout_initial),
            max_lockout_ms: ms(self.login_lockout_max),
            window_ms: ms(self.login_failure_window),
        }
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
