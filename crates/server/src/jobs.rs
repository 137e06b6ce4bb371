//! Every background job a node runs, registered on one `Runner` in a fixed order: the
//! back-office sweeps, lock expiry, reminders, distributions and their callbacks, the claim
//! flow-control limiter's housekeeping, and (distributed mode) the claim-log persister.

use crate::claim_path::ClaimPath;
use crate::config::Settings;
use crate::secrets::{NOTIFY_KEY_LABEL, signing_secret};
use crate::services::Services;
use crate::use_cases::UseCases;
use anyhow::Context;
use async_trait::async_trait;
use stampede_core::AppError;
use stampede_core::reminder_ports::ReminderNotifier;
use stampede_events_nats::{NatsPublisher, NatsSettings};
use stampede_hot_memory::MemoryRateLimiter;
use stampede_hot_redis::Persister;
use stampede_workers::{
    DistributionRunner, EndTemplates, Job, NotifyConfig, NotifyDistributions, ObserveOutbox,
    OutboxRelay, PurgeIdempotencyKeys, PurgeReminders, RelayConfig, ReleaseExpiredLocks,
    ReminderScheduler, Runner, RunnerConfig, SchedulerConfig,
};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Everything the jobs are built from.
pub struct JobInputs<'a> {
    pub settings: &'a Settings,
    pub services: &'a Services,
    pub claim_path: &'a ClaimPath,
    pub use_cases: &'a UseCases,
    /// The reminder scheduler's webhook / SMTP notifiers (`notifiers`).
    pub reminder_notifiers: Vec<Arc<dyn ReminderNotifier>>,
    /// The in-process flow-control buckets (forgotten once full again).
    pub flow_limiter: Arc<MemoryRateLimiter>,
    /// Long job steps (a distribution task) watch this to stop early at shutdown.
    pub stop: CancellationToken,
}

/// The runner with every job registered; nothing runs until the application starts it.
pub async fn runner(inputs: JobInputs<'_>) -> anyhow::Result<Runner> {
    let JobInputs {
        settings,
        services,
        claim_path,
        use_cases,
        reminder_notifiers,
        flow_limiter,
        stop,
    } = inputs;
    let (stores, clock) = (&services.stores, &services.clock);
    let (w, r, d) = (
        &settings.workers,
        &settings.reminder,
        &settings.distribution,
    );
    let mut runner = Runner::new();
    runner.register(Arc::new(EndTemplates {
        backoffice: services.backoffice.clone(),
        interval: w.end_sweep_interval,
        batch: w.end_sweep_batch,
    }));
    runner.register(Arc::new(PurgeIdempotencyKeys {
        backoffice: services.backoffice.clone(),
        interval: w.purge_interval,
        retention: w.idempotency_retention,
    }));
    // Every partition's gauges exist from the start (the dashboard reads them), at 0 until
    // the first observation.
    for p in 0..stores.outbox.outbox_partitions() {
        let label = p.to_string();
        metrics::gauge!(stampede_workers::OUTBOX_PARTITION_BACKLOG, "partition" => label.clone())
            .set(0.0);
        metrics::gauge!(stampede_workers::OUTBOX_PARTITION_OLDEST_AGE, "partition" => label)
            .set(0.0);
    }
    runner.register(Arc::new(ObserveOutbox {
        coupons: stores.coupons.clone(),
        relay_enabled: settings.events.nats_url.is_some(),
        clock: services.clock.clone(),
        interval: w.outbox_observe_interval,
    }));
    if let Some(url) = &settings.events.nats_url {
        let e = &settings.events;
        // Returns at once even while the broker is down: the relay retries.
        let publisher = NatsPublisher::connect(NatsSettings {
            url: url.clone(),
            stream: e.stream.clone(),
            subject_prefix: e.subject_prefix.clone(),
            max_age: e.stream_max_age,
            duplicate_window: e.duplicate_window,
            source: e.source.clone(),
            ack_timeout: e.ack_timeout,
        })
        .await
        .context("events.nats_url")?;
        let publisher = Arc::new(publisher);
        // The stream exists from the start, so consumers can bind before the first event; a
        // broker that is down now gets it at the first publish instead.
        let ensure = publisher.clone();
        tokio::spawn(async move {
            if let Err(e) = ensure.ensure_stream().await {
                tracing::warn!(error = %e, "could not create the event stream yet; the first publish will");
            }
        });
        runner.register(Arc::new(OutboxRelay::new(
            stores.outbox.clone(),
            publisher,
            services.clock.clone(),
            RelayConfig {
                batch: e.relay_batch,
                interval: e.relay_interval,
                retention: e.retention,
                min_backoff: e.relay_interval,
                max_backoff: e.max_backoff,
                // As for distribution tasks: distributed nodes are process-unique, the one
                // embedded process keeps its name, so a restart resumes at once instead of
                // waiting out its predecessor's leases (ordered, acknowledged publishing makes
                // an overlap harmless anyway).
                owner: services.node.distribution_owner(settings.storage.backend),
                lease: e.lease,
            },
        )));
    }
    runner.register(Arc::new(ReleaseExpiredLocks {
        settlements: use_cases.settlements.clone(),
        interval: settings.settlement.expiry_interval,
        batch: settings.settlement.expiry_batch,
    }));
    runner.register(Arc::new(ReminderScheduler {
        store: stores.reminders.clone(),
        templates: stores.templates.clone(),
        clock: clock.clone(),
        notifiers: reminder_notifiers,
        config: SchedulerConfig {
            // Process-unique, also embedded: the lease token fences owners, so a second
            // process (or a restart) must never pass for the first.
            owner: services.node.to_string(),
            batch: r.batch_size,
            lease: r.lease,
            interval: r.poll_interval,
            parallel: r.parallel_partitions,
        },
    }));
    runner.register(Arc::new(PurgeReminders {
        store: stores.reminders.clone(),
        clock: clock.clone(),
        retention: r.retention,
        interval: w.purge_interval,
    }));
    let work_dir = settings.distribution_dir();
    stampede_workers::distribution::clean_work_dir(&work_dir).await;
    runner.register(Arc::new(DistributionRunner {
        quote_cache: claim_path.quote_cache.clone(),
        store: stores.distributions.clone(),
        templates: stores.templates.clone(),
        hot: claim_path.hot.clone(),
        ids: services.ids.clone(),
        clock: clock.clone(),
        config: RunnerConfig {
            owner: services.node.distribution_owner(settings.storage.backend),
            work_dir,
            lease: d.lease,
            interval: d.poll_interval,
            limits: d.sheet_limits(),
        },
        shutdown: stop,
    }));
    let notify = NotifyConfig {
        secret: signing_secret(settings, d.notify_secret.as_ref(), NOTIFY_KEY_LABEL)?,
        max_attempts: d.notify_max_attempts,
        base_backoff: d.notify_backoff,
        max_backoff: d.notify_max_backoff,
        timeout: d.notify_timeout,
        interval: d.notify_interval(),
    };
    runner.register(Arc::new(
        NotifyDistributions::new(stores.distributions.clone(), clock.clone(), notify)
            .context("building the callback HTTP client")?,
    ));
    runner.register(Arc::new(ShrinkLimiter(flow_limiter)));
    if let Some(persister) = &claim_path.persister {
        runner.register(Arc::new(PersistClaims {
            persister: persister.clone(),
            batch: settings.redis.persister_batch,
            interval: settings.redis.persister_interval,
        }));
    }
    Ok(runner)
}

/// Drains claim logs into MySQL (the persister as a runner job).
struct PersistClaims {
    persister: Arc<Persister>,
    batch: usize,
    interval: Duration,
}

#[async_trait]
impl Job for PersistClaims {
    fn name(&self) -> &'static str {
        "persist_claims"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn batch(&self) -> usize {
        self.batch
    }

    async fn run_once(&self) -> Result<usize, AppError> {
        Ok(self.persister.run_once().await?)
    }
}

/// How often the in-process limiter forgets buckets (users, IPs, templates) that are full
/// again. Only memory depends on it: a forgotten full bucket answers as a kept one would.
const SHRINK_LIMITER_EVERY: Duration = Duration::from_secs(60);

/// Forgets flow-control buckets that are full again.
struct ShrinkLimiter(Arc<MemoryRateLimiter>);

#[async_trait]
impl Job for ShrinkLimiter {
    fn name(&self) -> &'static str {
        "shrink_claim_limiter"
    }

    fn interval(&self) -> Duration {
        SHRINK_LIMITER_EVERY
    }

    /// One pass over the buckets; there is never a "next batch" to hurry to.
    fn batch(&self) -> usize {
        usize::MAX
    }

    async fn run_once(&self) -> Result<usize, AppError> {
        self.0.shrink();
        Ok(0)
    }
}
