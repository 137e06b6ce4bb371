//! The jobs of the back-office.

use crate::runner::Job;
use async_trait::async_trait;
use stampede_core::AppError;
use stampede_core::backoffice::BackOffice;
use std::sync::Arc;
use std::time::Duration;

/// Moves active templates to `ended` once `claim_end` passes, with an audit entry each.
/// Reads already treat such templates as ended; this writes it down for filters and events.
pub struct EndTemplates {
    pub backoffice: Arc<BackOffice>,
    pub interval: Duration,
    pub batch: u32,
}

#[async_trait]
impl Job for EndTemplates {
    fn name(&self) -> &'static str {
        "end_templates"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn batch(&self) -> usize {
        usize::try_from(self.batch).unwrap_or(usize::MAX)
    }

    async fn run_once(&self) -> Result<usize, AppError> {
        self.backoffice.end_due(self.batch).await
    }
}

/// Forgets `Idempotency-Key` records older than the retention (≥ 24 h by contract).
pub struct PurgeIdempotencyKeys {
    pub backoffice: Arc<BackOffice>,
    pub interval: Duration,
    pub retention: jiff::SignedDuration,
}

#[async_trait]
impl Job for PurgeIdempotencyKeys {
    fn name(&self) -> &'static str {
        "purge_idempotency_keys"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    /// Purging is one statement per table; there is never a "next batch" to hurry to.
    fn batch(&self) -> usize {
        usize::MAX
    }

    async fn run_once(&self) -> Result<usize, AppError> {
        let n = self.backoffice.purge_idempotency(self.retention).await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// Releases order locks whose `lock_expires_at` passed (a locked coupon is redeemed, released, or released at its expiry). Safe on many
/// nodes: each release is a transaction that re-checks the lock under the row lock.
pub struct ReleaseExpiredLocks {
    pub settlements: Arc<stampede_core::settlements::Settlements>,
    pub interval: Duration,
    pub batch: u32,
}

#[async_trait]
impl Job for ReleaseExpiredLocks {
    fn name(&self) -> &'static str {
        "release_expired_locks"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn batch(&self) -> usize {
        usize::try_from(self.batch).unwrap_or(usize::MAX)
    }

    async fn run_once(&self) -> Result<usize, AppError> {
        self.settlements.release_expired(self.batch).await
    }
}
