//! Background work: named jobs with a `run_once` step, driven by a `Runner` that loops each
//! job on its interval under the application's cancellation token, and that tests can
//! `drain` (run every job until none has work left) instead of sleeping.
//!
//! Every job must be safe to run on several nodes at once: each step is a transaction whose
//! second application is a no-op (ending an ended template, purging purged keys), or hold a
//! lease (the distribution runner, the reminder scheduler) or win a compare-and-set (completion callbacks) first.

pub mod distribution;
mod jobs;
pub mod notify;
pub mod relay;
pub mod reminder_notify;
pub mod reminders;
mod runner;
mod seen;

pub use distribution::{DistributionRunner, RunEnd, RunnerConfig};
pub use jobs::{
    EndTemplates, OUTBOX_PARTITION_BACKLOG, OUTBOX_PARTITION_OLDEST_AGE, ObserveOutbox,
    PurgeIdempotencyKeys, ReleaseExpiredLocks,
};
pub use notify::{NotifyConfig, NotifyDistributions};
pub use relay::{OutboxRelay, RelayConfig};
pub use reminder_notify::{EmailConfig, EmailNotifier, WebhookConfig, WebhookNotifier};
pub use reminders::{PurgeReminders, ReminderScheduler, SchedulerConfig};
pub use runner::{Job, Runner};
