//! The jobs of the back-office.

use crate::runner::Job;
use async_trait::async_trait;
use stampede_core::AppError;
use stampede_core::backoffice::BackOffice;
use stampede_core::claim_ports::OutboxBacklog;
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

/// Gauge: outbox events not yet published (see `CouponStore::outbox_backlog`).
pub const OUTBOX_BACKLOG: &str = "stampede_outbox_backlog_events";
/// Gauge: age in seconds of the oldest unpublished outbox event; 0 when there is none.
pub const OUTBOX_OLDEST_AGE: &str = "stampede_outbox_oldest_age_seconds";
/// Gauge: [`OUTBOX_BACKLOG`] per outbox partition (`partition` label: SQLite has one, `0`;
/// MySQL one per outbox table, `database * tables_per_database + table`).
pub const OUTBOX_PARTITION_BACKLOG: &str = "stampede_outbox_partition_backlog_events";
/// Gauge: [`OUTBOX_OLDEST_AGE`] per outbox partition (same label).
pub const OUTBOX_PARTITION_OLDEST_AGE: &str = "stampede_outbox_partition_oldest_age_seconds";
/// Gauge: 1 when this node runs the event relay (`events.nats_url` set). Without one, events
/// stay in the outbox (queryable) and the age alert, which requires this to be 1, stays quiet.
pub const OUTBOX_RELAY_ENABLED: &str = "stampede_outbox_relay_enabled";

/// Reads the outbox's backlog into the gauges above, every `interval`.
pub struct ObserveOutbox {
    pub coupons: Arc<dyn stampede_core::claim_ports::CouponStore>,
    /// Whether this node runs the event relay (`events.nats_url`).
    pub relay_enabled: bool,
    pub clock: Arc<dyn stampede_core::clock::Clock>,
    pub interval: Duration,
}

#[async_trait]
impl Job for ObserveOutbox {
    fn name(&self) -> &'static str {
        "observe_outbox"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn batch(&self) -> usize {
        usize::MAX
    }

    async fn run_once(&self) -> Result<usize, AppError> {
        metrics::gauge!(OUTBOX_RELAY_ENABLED).set(if self.relay_enabled { 1.0 } else { 0.0 });
        let partitions = self.coupons.outbox_partition_backlogs().await?;
        let now = stampede_domain::time::to_ms(self.clock.now());
        let age_secs =
            |b: &OutboxBacklog| b.oldest_created_ms.map_or(0, |t| (now - t).max(0)) as f64 / 1000.0;
        let mut total = OutboxBacklog::default();
        for (p, b) in partitions.iter().enumerate() {
            let label = p.to_string();
            metrics::gauge!(OUTBOX_PARTITION_BACKLOG, "partition" => label.clone())
                .set(b.events as f64);
            metrics::gauge!(OUTBOX_PARTITION_OLDEST_AGE, "partition" => label).set(age_secs(b));
            total.add(*b);
        }
        metrics::gauge!(OUTBOX_BACKLOG).set(total.events as f64);
        metrics::gauge!(OUTBOX_OLDEST_AGE).set(age_secs(&total));
        Ok(0)
    }
}
