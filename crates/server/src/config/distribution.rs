//! Settings of distributions: uploads, the runner that issues coupons batch by batch, and
//! completion callbacks.

use super::{Secret, units};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Callbacks are polled at least this far apart even when tasks are polled faster: a
/// callback is not latency-critical, and each poll is a query on every node.
const NOTIFY_MIN_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributionSettings {
    /// Largest accepted upload (bytes); 413 beyond, checked while the upload streams.
    pub max_upload_bytes: u64,
    /// Most data rows one file may hold.
    pub max_rows: u64,
    /// Rows per batch (one reservation, one commit, one checkpoint each).
    pub batch_size: u32,
    /// How long a runner's lease on a task lasts without a batch renewing it; a node that
    /// dies mid-task is replaced after this. Default 30 s.
    #[serde(rename = "lease_secs", with = "units::secs")]
    pub lease: Duration,
    /// How often each node looks for due tasks: a scheduled task starts within this of
    /// its `send_at`. Default 250 ms.
    #[serde(rename = "poll_interval_ms", with = "units::millis")]
    pub poll_interval: Duration,
    /// HMAC-SHA256 key of the completion callbacks (`X-Stampede-Signature`). Unset: derived
    /// from `auth.jwt_secret` (or the generated embedded secret), with a warning at start.
    pub notify_secret: Option<Secret>,
    pub notify_max_attempts: u32,
    /// First retry delay of a failed callback; doubles per attempt up to the maximum.
    /// Default 1 s.
    #[serde(rename = "notify_backoff_ms", with = "units::millis")]
    pub notify_backoff: Duration,
    /// Longest retry delay of a callback. Default 5 min.
    #[serde(rename = "notify_max_backoff_secs", with = "units::secs")]
    pub notify_max_backoff: Duration,
    /// Per callback request. Default 10 s.
    #[serde(rename = "notify_timeout_secs", with = "units::secs")]
    pub notify_timeout: Duration,
}

impl Default for DistributionSettings {
    fn default() -> Self {
        Self {
            max_upload_bytes: 256 * 1024 * 1024,
            max_rows: 10_000_000,
            batch_size: 5_000,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(250),
            notify_secret: None,
            notify_max_attempts: 8,
            notify_backoff: Duration::from_millis(1_000),
            notify_max_backoff: Duration::from_secs(300),
            notify_timeout: Duration::from_secs(10),
        }
    }
}

impl DistributionSettings {
    /// How often callbacks due for an attempt are looked for: the task poll interval, but
    /// at least 100 ms.
    pub fn notify_interval(&self) -> Duration {
        self.poll_interval.max(NOTIFY_MIN_INTERVAL)
    }

    /// What an uploaded file may hold (checked at upload, again by the runner).
    pub fn sheet_limits(&self) -> stampede_sheet::Limits {
        stampede_sheet::Limits {
            max_rows: self.max_rows,
            ..stampede_sheet::Limits::default()
        }
    }

    pub(super) fn check(&self) -> anyhow::Result<()> {
        if !(1..=50_000).contains(&self.batch_size) {
            anyhow::bail!("distribution.batch_size must be 1..=50000");
        }
        if self.max_upload_bytes < 1024 || self.max_rows == 0 {
            anyhow::bail!("distribution.max_upload_bytes must be ≥ 1024 and max_rows ≥ 1");
        }
        if self.lease.is_zero() || self.poll_interval.is_zero() || self.notify_max_attempts == 0 {
            anyhow::bail!(
                "distribution.lease_secs, poll_interval_ms and notify_max_attempts must be positive"
            );
        }
        Ok(())
    }
}
