//! Settings of reminders before a sale starts: the scheduler and its delivery channels.

use super::{Secret, units};
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReminderSettings {
    /// How often each node looks for due reminders: one is delivered within this (plus
    /// the delivery itself) of its `remind_at`. Default 200 ms.
    #[serde(rename = "poll_interval_ms", with = "units::millis")]
    pub poll_interval: Duration,
    /// Rows read and recorded per delivery step.
    pub batch_size: u32,
    /// How long a node's lease on a partition lasts without a step renewing it; a node that
    /// dies mid-delivery is replaced after this. Default 30 s.
    #[serde(rename = "lease_secs", with = "units::secs")]
    pub lease: Duration,
    /// Partitions one node works on at once in a step (each under its own lease). Default 2.
    pub parallel_partitions: usize,
    /// `webhook` channel: where reminders are POSTed (JSON, signed like completion
    /// callbacks). Unset: the channel is off and `PUT` refuses it.
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key of the webhook (`X-Stampede-Signature`). Unset: derived from
    /// `auth.jwt_secret` (or the generated embedded secret).
    pub webhook_secret: Option<Secret>,
    /// Reminders per webhook POST.
    pub webhook_batch: usize,
    /// Webhook POSTs in flight at once.
    pub webhook_concurrency: usize,
    /// Attempts per POST before the reminders are left for a later step (with backoff).
    pub webhook_attempts: u32,
    /// Per webhook POST. Default 10 s.
    #[serde(rename = "webhook_timeout_ms", with = "units::millis")]
    pub webhook_timeout: Duration,
    /// `email` channel: the SMTP relay, `smtp://host:port` (plain, for a local relay) or
    /// `smtps://host:port` / `smtp://host:port?tls=required` with credentials in the URL.
    /// Unset: the channel is off and `PUT` refuses it.
    pub smtp_url: Option<Secret>,
    pub email_from: String,
    /// The recipient; `{user_id}` is replaced. Stampede knows users by id only, so the
    /// relay (or its alias table) maps this address to the user's mailbox.
    pub email_to: String,
    /// Emails being sent at once.
    pub email_concurrency: usize,
    /// Reminder rows are deleted this long after their sale started (everything in them is
    /// delivered, given up or cancelled by then). Default 24 h.
    #[serde(rename = "retention_hours", with = "units::signed_hours")]
    pub retention: SignedDuration,
}

impl Default for ReminderSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(200),
            batch_size: 5_000,
            lease: Duration::from_secs(30),
            parallel_partitions: 2,
            webhook_url: None,
            webhook_secret: None,
            webhook_batch: 500,
            webhook_concurrency: 4,
            webhook_attempts: 3,
            webhook_timeout: Duration::from_millis(10_000),
            smtp_url: None,
            email_from: "Stampede <reminders@stampede.invalid>".into(),
            email_to: "{user_id}@users.stampede.invalid".into(),
            email_concurrency: 8,
            retention: SignedDuration::from_hours(24),
        }
    }
}

impl ReminderSettings {
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if self.poll_interval.is_zero()
            || self.batch_size == 0
            || self.lease.is_zero()
            || self.parallel_partitions == 0
            || self.webhook_batch == 0
            || self.webhook_concurrency == 0
            || self.webhook_attempts == 0
            || self.email_concurrency == 0
        {
            anyhow::bail!(
                "reminder.poll_interval_ms, batch_size, lease_secs, parallel_partitions, \
                 webhook_batch, webhook_concurrency, webhook_attempts and email_concurrency \
                 must be positive"
            );
        }
        if let Some(u) = &self.webhook_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            anyhow::bail!("reminder.webhook_url must be an http:// or https:// URL");
        }
        Ok(())
    }
}
