//! The reminder scheduler: delivers each reminder at its `remind_at`.
//!
//! Every node runs it. Per partition of the store (SQLite: one; MySQL: one per shard table)
//! a step looks for due rows, leases the partition, and works through batches: reads due
//! rows, delivers what is due through the channel's notifier (`app`: an outbox event written
//! with the record), then records what was delivered in one transaction fenced by the lease.
//! So two nodes never both deliver a batch while leases hold, and a node killed mid-batch
//! recorded nothing: its batch is delivered again after the lease expires, with the same
//! dedupe ids (at least once).
//!
//! Rules per row: a template terminated (or gone) cancels the row's pending reminders; a
//! reminder deleted before it is due is not in the row when it is read, so it is never sent;
//! a failed delivery is retried with backoff until the sale starts; a reminder still
//! undelivered when the sale starts is dropped (counted in
//! `stampede_reminders_failed_total{outcome="expired"}`).
//!
//! Time comes from the `Clock` port, so tests drive it by hand.

use crate::runner::Job;
use async_trait::async_trait;
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use stampede_core::AppError;
use stampede_core::claim_ports::OutboxEvent;
use stampede_core::clock::Clock;
use stampede_core::ports::TemplateStore;
use stampede_core::reminder_ports::{
    DeliveryError, DueReminder, PartitionLease, REMINDER_DUE, ReminderNotifier, ReminderRow,
    ReminderStore, RowUpdate,
};
use stampede_domain::ids::TemplateId;
use stampede_domain::reminder::{Channel, Reminder, ReminderSet};
use stampede_domain::template::{Template, TemplateStatus};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Counter: reminders delivered, by `channel`.
const DELIVERED: &str = "stampede_reminders_delivered_total";
/// Counter: reminders not delivered, by `channel` and `outcome` (`retry`, `expired`,
/// `channel_off`).
const FAILED: &str = "stampede_reminders_failed_total";

/// Registers the reminder counters at zero for every channel (alerts and panels read them
/// from the first scrape).
pub fn register_metrics() {
    for c in Channel::ALL {
        metrics::counter!(DELIVERED, "channel" => c.as_str()).increment(0);
        metrics::counter!(FAILED, "channel" => c.as_str(), "outcome" => "retry").increment(0);
    }
}

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// This node's name in leases.
    pub owner: String,
    /// Rows per batch.
    pub batch: u32,
    pub lease: Duration,
    pub interval: Duration,
    /// Partitions worked on at once.
    pub parallel: usize,
}

pub struct ReminderScheduler {
    pub store: Arc<dyn ReminderStore>,
    /// Read directly, not through the catalog's caches: a node's bloom filter or cache may
    /// not know yet of another node's new or terminated template, and a batch's templates
    /// are one query per shard.
    pub templates: Arc<dyn TemplateStore>,
    pub clock: Arc<dyn Clock>,
    /// The `webhook` and `email` notifiers that are configured.
    pub notifiers: Vec<Arc<dyn ReminderNotifier>>,
    pub config: SchedulerConfig,
}

/// Batches one partition works through per step before letting other jobs run.
const BATCHES_PER_STEP: usize = 20;
/// Shortest and longest wait before a failed delivery is tried again.
const RETRY_MIN: SignedDuration = SignedDuration::from_secs(1);
const RETRY_MAX: SignedDuration = SignedDuration::from_secs(30);

fn sd(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// What happens to one row's pending reminders in a batch.
#[derive(Default)]
struct RowPlan {
    /// Handed to a notifier (or the outbox) now.
    sending: Vec<Reminder>,
    /// Not sent and never will be (template terminated or gone; channel off).
    dropped: ReminderSet,
}

/// When a failed reminder due at `remind_at` is tried again: the wait doubles with its
/// lateness (1 s, 1 s, 2 s, 4 s, … up to 30 s).
fn retry_at(remind_at: Timestamp, now: Timestamp) -> Timestamp {
    let late = now.duration_since(remind_at);
    now + late.clamp(RETRY_MIN, RETRY_MAX)
}

impl ReminderScheduler {
    fn notifier(&self, c: Channel) -> Option<&Arc<dyn ReminderNotifier>> {
        self.notifiers.iter().find(|n| n.channel() == c)
    }

    fn channel_on(&self, c: Channel) -> bool {
        c == Channel::App || self.notifier(c).is_some()
    }

    /// One partition: leases it if anything is due and works through up to
    /// `BATCHES_PER_STEP` batches. Returns the rows handled.
    pub async fn run_partition(&self, p: u32) -> Result<usize, AppError> {
        let now = self.clock.now();
        if !self.store.any_due(p, now).await? {
            return Ok(0);
        }
        let lease_for = sd(self.config.lease);
        let Some(lease) = self
            .store
            .lease_partition(p, &self.config.owner, now, now + lease_for)
            .await?
        else {
            return Ok(0);
        };
        let mut handled = 0;
        for _ in 0..BATCHES_PER_STEP {
            let now = self.clock.now();
            let rows = self.store.due_reminders(p, now, self.config.batch).await?;
            let n = rows.len();
            if n == 0 {
                break;
            }
            match self.deliver_batch(&lease, rows, now).await {
                Ok(()) => handled += n,
                Err(DeliveryError::LeaseLost) => {
                    tracing::warn!(
                        partition = p,
                        "reminder lease lost mid-step; another node continues"
                    );
                    return Ok(handled);
                }
                Err(DeliveryError::Store(e)) => return Err(e.into()),
            }
            if n < self.config.batch as usize {
                break;
            }
        }
        self.store.release_partition(&lease).await?;
        Ok(handled)
    }

    async fn templates_of(
        &self,
        rows: &[ReminderRow],
    ) -> Result<HashMap<TemplateId, Option<Arc<Template>>>, stampede_core::ports::StoreError> {
        let mut ids: Vec<TemplateId> = rows.iter().map(|r| r.template_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let found = self.templates.get_templates(&ids).await?;
        let mut out: HashMap<TemplateId, Option<Arc<Template>>> =
            ids.into_iter().map(|id| (id, None)).collect();
        for t in found {
            out.insert(t.id, Some(Arc::new(t)));
        }
        Ok(out)
    }

    /// Delivers what is due in `rows` and records it.
    async fn deliver_batch(
        &self,
        lease: &PartitionLease,
        rows: Vec<ReminderRow>,
        now: Timestamp,
    ) -> Result<(), DeliveryError> {
        let templates = self.templates_of(&rows).await?;
        let mut plans: Vec<RowPlan> = Vec::with_capacity(rows.len());
        // Per channel: (row index, reminder).
        let mut by_channel: HashMap<Channel, Vec<(usize, DueReminder)>> = HashMap::new();
        let mut cancelled = 0u64;
        for (i, row) in rows.iter().enumerate() {
            let mut plan = RowPlan::default();
            let pending = row.pending();
            let live = templates
                .get(&row.template_id)
                .and_then(Option::as_ref)
                .filter(|t| t.effective_status(now) != TemplateStatus::Terminated);
            match live {
                None => {
                    plan.dropped = pending;
                    cancelled += u64::from(pending.len());
                }
                Some(t) => {
                    for r in pending.due(t.claim_start, now).iter() {
                        // "Starts in 5 minutes" after the start (a node was down, a receiver
                        // kept failing) would mislead: dropped, counted.
                        if now >= t.claim_start {
                            plan.dropped = plan.dropped.with(r);
                            metrics::counter!(FAILED, "channel" => r.channel.as_str(), "outcome" => "expired").increment(1);
                            continue;
                        }
                        if !self.channel_on(r.channel) {
                            plan.dropped = plan.dropped.with(r);
                            metrics::counter!(FAILED, "channel" => r.channel.as_str(), "outcome" => "channel_off").increment(1);
                            continue;
                        }
                        plan.sending.push(r);
                        by_channel.entry(r.channel).or_default().push((
                            i,
                            DueReminder {
                                dedupe_id: r.dedupe_id(row.user_id, row.template_id),
                                user_id: row.user_id,
                                template_id: row.template_id,
                                template_name: t.name.clone(),
                                channel: r.channel,
                                minutes_before: r.minutes_before,
                                claim_start: t.claim_start,
                                remind_at: r.remind_at(t.claim_start),
                            },
                        ));
                    }
                }
            }
            plans.push(plan);
        }
        let due: usize = plans.iter().map(|p| p.sending.len()).sum();
        metrics::counter!("stampede_reminders_due_total").increment(due as u64);
        if cancelled > 0 {
            metrics::counter!("stampede_reminders_cancelled_total").increment(cancelled);
        }

        // Deliver every channel at once; `delivered[i]` collects row i's successes.
        let mut delivered = vec![ReminderSet::EMPTY; rows.len()];
        let mut events = Vec::new();
        let sends = by_channel.iter().filter_map(|(c, items)| {
            self.notifier(*c).map(|n| async move {
                let batch: Vec<DueReminder> = items.iter().map(|(_, d)| d.clone()).collect();
                (*c, n.deliver(&batch).await)
            })
        });
        let results = self
            .keeping_lease(lease, futures::future::join_all(sends))
            .await;
        let delivered_at = self.clock.now();
        for (c, oks) in results {
            let Some(items) = by_channel.get(&c) else {
                continue;
            };
            for ((i, d), ok) in items.iter().zip(oks) {
                if ok {
                    self.delivered(&mut delivered[*i], d, delivered_at);
                }
            }
        }
        if let Some(items) = by_channel.get(&Channel::App) {
            for (i, d) in items {
                events.push(OutboxEvent {
                    id: d.dedupe_id.clone(),
                    kind: REMINDER_DUE.to_owned(),
                    aggregate_id: d.user_id.get(),
                    payload: serde_json::to_string(d).unwrap_or_default(),
                    created_at_ms: now.as_millisecond(),
                    traceparent: stampede_core::events::current_traceparent(),
                });
                self.delivered(&mut delivered[*i], d, delivered_at);
            }
        }

        let mut updates = Vec::with_capacity(rows.len());
        for ((row, plan), sent) in rows.iter().zip(&plans).zip(&delivered) {
            let claim_start = templates
                .get(&row.template_id)
                .and_then(Option::as_ref)
                .map_or(row.claim_start, |t| t.claim_start);
            let done = plan.dropped.union(*sent);
            // Failed ones are tried again; one still failing at the sale's start is then
            // dropped as expired by the rule above.
            let mut retry: Option<Timestamp> = None;
            for r in plan.sending.iter().filter(|r| !sent.contains(**r)) {
                metrics::counter!(FAILED, "channel" => r.channel.as_str(), "outcome" => "retry")
                    .increment(1);
                let at = retry_at(r.remind_at(claim_start), now);
                retry = Some(retry.map_or(at, |x: Timestamp| x.min(at)));
            }
            let failing = plan
                .sending
                .iter()
                .filter(|r| !done.contains(**r))
                .fold(ReminderSet::EMPTY, |s, r| s.with(*r));
            let later = row
                .pending()
                .minus(done)
                .minus(failing)
                .next_due(claim_start);
            let next_due = match (later, retry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            updates.push(RowUpdate {
                user_id: row.user_id,
                template_id: row.template_id,
                read_bits: row.bits,
                done,
                next_due,
            });
        }
        let lease_until = self.clock.now() + sd(self.config.lease);
        self.store
            .record_deliveries(lease, lease_until, &updates, &events, now)
            .await
    }

    /// Runs `work` (a slow receiver may take longer than the lease) while renewing the lease
    /// every third of its length, so no other node takes the partition over meanwhile.
    async fn keeping_lease<T>(
        &self,
        lease: &PartitionLease,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let every = (self.config.lease / 3).max(Duration::from_millis(10));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick() => {
                    let now = self.clock.now();
                    match self
                        .store
                        .lease_partition(lease.partition, &lease.owner, now, now + sd(self.config.lease))
                        .await
                    {
                        // Renewed, or taken back after expiry with a new token (then the
                        // record is refused as stale, which is right: someone else may have
                        // delivered in between).
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, partition = lease.partition, "renewing a reminder lease failed"),
                    }
                }
            }
        }
    }

    fn delivered(&self, set: &mut ReminderSet, d: &DueReminder, at: Timestamp) {
        if let Some(r) = Reminder::new(d.channel, i64::from(d.minutes_before)) {
            *set = set.with(r);
        }
        metrics::counter!(DELIVERED, "channel" => d.channel.as_str()).increment(1);
        let lag = at.duration_since(d.remind_at).as_secs_f64().max(0.0);
        metrics::histogram!("stampede_reminder_lag_seconds", "channel" => d.channel.as_str())
            .record(lag);
    }
}

#[async_trait]
impl Job for ReminderScheduler {
    fn name(&self) -> &'static str {
        "reminders"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn batch(&self) -> usize {
        self.config.batch as usize
    }

    async fn run_once(&self) -> Result<usize, AppError> {
        let parts = self.store.partitions();
        let results: Vec<Result<usize, AppError>> = futures::stream::iter(0..parts)
            .map(|p| self.run_partition(p))
            .buffer_unordered(self.config.parallel.max(1))
            .collect()
            .await;
        let mut handled = 0;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(n) => handled += n,
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        match first_err {
            Some(e) if handled == 0 => Err(e),
            Some(e) => {
                tracing::warn!(error = %e, "a reminder partition failed this step");
                Ok(handled)
            }
            None => Ok(handled),
        }
    }
}

/// Deletes reminder rows once their sale started more than `retention` ago: everything in
/// them has been delivered, given up or cancelled by then, and nothing lists them.
pub struct PurgeReminders {
    pub store: Arc<dyn ReminderStore>,
    pub clock: Arc<dyn Clock>,
    pub retention: SignedDuration,
    pub interval: Duration,
}

/// Rows deleted per statement (short transactions; a full step is followed by another).
const PURGE_BATCH: u32 = 10_000;

#[async_trait]
impl Job for PurgeReminders {
    fn name(&self) -> &'static str {
        "purge_reminders"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn batch(&self) -> usize {
        PURGE_BATCH as usize
    }

    async fn run_once(&self) -> Result<usize, AppError> {
        let before = self.clock.now() - self.retention;
        let mut purged = 0u64;
        for p in 0..self.store.partitions() {
            purged += self.store.purge_reminders(p, before, PURGE_BATCH).await?;
        }
        Ok(usize::try_from(purged).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_with_lateness() {
        let due = Timestamp::from_second(1_900_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let wait =
            |late: i64| retry_at(due, due + SignedDuration::from_secs(late)).duration_since(due);
        assert_eq!(wait(0), SignedDuration::from_secs(1));
        assert_eq!(wait(4), SignedDuration::from_secs(8));
        assert_eq!(wait(100), SignedDuration::from_secs(130));
    }
}
