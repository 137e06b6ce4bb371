//! `[resilience]`: how long a node waits for each dependency and when it stops asking (the
//! circuit breakers of `stampede-resilience`, one per dependency per node), and how long
//! `/readyz` gives each check. Defaults fail a down dependency within a second; an open
//! breaker answers at once.

use super::units;
use serde::{Deserialize, Serialize};
use stampede_resilience::BreakerConfig;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResilienceSettings {
    /// Consecutive unreachable/slow calls that open a dependency's breaker. Default 3.
    pub failure_threshold: u32,
    /// Share of failed calls in a window that opens the breaker (0 < x ≤ 1). Default 0.5.
    pub failure_ratio: f64,
    /// Calls per window for `failure_ratio`. Default 20.
    pub ratio_window: u32,
    /// How long an open breaker refuses every call before one probe. Default 1 s.
    #[serde(rename = "open_ms", with = "units::millis")]
    pub open: Duration,
    /// How often a down MySQL is probed, and the longest a half-open breaker waits for its
    /// probe's answer. Default 250 ms.
    #[serde(rename = "probe_interval_ms", with = "units::millis")]
    pub probe_interval: Duration,
    /// Longest wait for a MySQL connection from the pool (every statement): with the
    /// database down, what a request waits before the probe opens the breaker; with it
    /// busy, how long a burst may queue for connections. Default 500 ms.
    #[serde(rename = "database_acquire_ms", with = "units::millis")]
    pub database_acquire: Duration,
    /// Longest wait to open a MySQL connection. Default 1 s.
    #[serde(rename = "database_connect_ms", with = "units::millis")]
    pub database_connect: Duration,
    /// Deadline of a short database read (readiness, probes). Default 500 ms.
    #[serde(rename = "database_read_ms", with = "units::millis")]
    pub database_read: Duration,
    /// Longest wait to open a Redis connection. Default 500 ms.
    #[serde(rename = "redis_connect_ms", with = "units::millis")]
    pub redis_connect: Duration,
    /// Deadline of one Redis command on the request path (claims, reads, leases), so a
    /// request that meets a Redis gone silent answers within a second. Default 500 ms.
    #[serde(rename = "redis_command_ms", with = "units::millis")]
    pub redis_command: Duration,
    /// Deadline of one Redis command of the claim-log persister (batch reads). Default 5 s.
    #[serde(rename = "redis_batch_ms", with = "units::millis")]
    pub redis_batch: Duration,
    /// Time each `/readyz` check gets; the whole answer stays under a second. Default 800 ms.
    #[serde(rename = "readiness_timeout_ms", with = "units::millis")]
    pub readiness_timeout: Duration,
}

impl Default for ResilienceSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            failure_ratio: 0.5,
            ratio_window: 20,
            open: Duration::from_millis(1_000),
            probe_interval: Duration::from_millis(250),
            database_acquire: Duration::from_millis(500),
            database_connect: Duration::from_millis(1_000),
            database_read: Duration::from_millis(500),
            redis_connect: Duration::from_millis(500),
            redis_command: Duration::from_millis(500),
            redis_batch: Duration::from_millis(5_000),
            readiness_timeout: Duration::from_millis(800),
        }
    }
}

impl ResilienceSettings {
    pub fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: self.failure_threshold,
            failure_ratio: self.failure_ratio,
            ratio_window: self.ratio_window,
            open_for: self.open,
            probe_interval: self.probe_interval,
        }
    }

    pub(super) fn check(&self) -> anyhow::Result<()> {
        if self.failure_threshold == 0 || self.ratio_window == 0 {
            anyhow::bail!("resilience.failure_threshold and resilience.ratio_window must be ≥ 1");
        }
        if !(self.failure_ratio > 0.0 && self.failure_ratio <= 1.0) {
            anyhow::bail!("resilience.failure_ratio must be in (0, 1]");
        }
        let durations = [
            ("open_ms", self.open),
            ("probe_interval_ms", self.probe_interval),
            ("database_acquire_ms", self.database_acquire),
            ("database_connect_ms", self.database_connect),
            ("database_read_ms", self.database_read),
            ("redis_connect_ms", self.redis_connect),
            ("redis_command_ms", self.redis_command),
            ("redis_batch_ms", self.redis_batch),
            ("readiness_timeout_ms", self.readiness_timeout),
        ];
        for (key, d) in durations {
            if d.is_zero() {
                anyhow::bail!("resilience.{key} must be positive");
            }
        }
        if self.readiness_timeout >= Duration::from_secs(1) {
            anyhow::bail!(
                "resilience.readiness_timeout_ms must be under 1000 (/readyz answers within 1 s)"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_bad_values_are_refused() {
        assert!(ResilienceSettings::default().check().is_ok());
        let bad = [
            ResilienceSettings {
                failure_ratio: 0.0,
                ..Default::default()
            },
            ResilienceSettings {
                failure_threshold: 0,
                ..Default::default()
            },
            ResilienceSettings {
                redis_command: Duration::ZERO,
                ..Default::default()
            },
            ResilienceSettings {
                readiness_timeout: Duration::from_secs(2),
                ..Default::default()
            },
        ];
        for s in bad {
            assert!(s.check().is_err(), "{s:?}");
        }
    }
}
