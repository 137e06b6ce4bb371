//! Settings of the housekeeping jobs every node runs: ending templates, purging old keys.

use super::units;
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Run background jobs in this process.
    pub enabled: bool,
    /// How often templates past `claim_end` are marked `ended`. Default 1 s.
    #[serde(rename = "end_sweep_interval_ms", with = "units::millis")]
    pub end_sweep_interval: Duration,
    /// Templates one sweep step ends (one transaction each; a full step is followed by
    /// another at once). Default 500.
    pub end_sweep_batch: u32,
    /// Idempotency keys are kept at least this long (contract: ≥ 24 h). Default 48 h.
    #[serde(rename = "idempotency_retention_hours", with = "units::signed_hours")]
    pub idempotency_retention: SignedDuration,
    /// How often idempotency keys and reminder rows past their retention are purged.
    /// Default 1 h.
    #[serde(rename = "purge_interval_secs", with = "units::secs")]
    pub purge_interval: Duration,
    /// How often the outbox's backlog and oldest event are read for `/metrics` (two or three
    /// index lookups per outbox table). Default 15 s.
    #[serde(rename = "outbox_observe_interval_ms", with = "units::millis")]
    pub outbox_observe_interval: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            end_sweep_interval: Duration::from_millis(1_000),
            end_sweep_batch: 500,
            idempotency_retention: SignedDuration::from_hours(48),
            purge_interval: Duration::from_secs(3_600),
            outbox_observe_interval: Duration::from_millis(15_000),
        }
    }
}

impl WorkerSettings {
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if self.idempotency_retention < SignedDuration::from_hours(24) {
            anyhow::bail!(
                "workers.idempotency_retention_hours must be at least 24 (the API promises 24 h)"
            );
        }
        if self.end_sweep_batch == 0 {
            anyhow::bail!("workers.end_sweep_batch must be positive");
        }
        Ok(())
    }
}
