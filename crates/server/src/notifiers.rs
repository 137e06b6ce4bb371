//! The reminder notifiers the configuration asks for (webhook, SMTP), and so the channels
//! reminders may be set on.

use crate::config::Settings;
use crate::secrets::{REMINDER_KEY_LABEL, signing_secret};
use anyhow::Context;
use stampede_core::reminder_ports::ReminderNotifier;
use stampede_domain::reminder::Channel;
use stampede_workers::{EmailConfig, EmailNotifier, WebhookConfig, WebhookNotifier};
use std::sync::Arc;

pub struct ReminderDelivery {
    /// Handed to the scheduler; `app` reminders need none (they go to the outbox).
    pub notifiers: Vec<Arc<dyn ReminderNotifier>>,
    /// `app` always, plus the channel of each notifier.
    pub channels: Vec<Channel>,
}

pub fn reminder_delivery(settings: &Settings) -> anyhow::Result<ReminderDelivery> {
    let r = &settings.reminder;
    let mut notifiers: Vec<Arc<dyn ReminderNotifier>> = Vec::new();
    if let Some(url) = &r.webhook_url {
        notifiers.push(Arc::new(
            WebhookNotifier::new(WebhookConfig {
                url: url.clone(),
                secret: signing_secret(settings, r.webhook_secret.as_ref(), REMINDER_KEY_LABEL)?,
                batch: r.webhook_batch,
                concurrency: r.webhook_concurrency,
                attempts: r.webhook_attempts,
                timeout: r.webhook_timeout,
            })
            .context("building the reminder webhook client")?,
        ));
    }
    if let Some(url) = &r.smtp_url {
        notifiers.push(Arc::new(
            EmailNotifier::new(&EmailConfig {
                url: url.expose().to_owned(),
                from: r.email_from.clone(),
                to: r.email_to.clone(),
                concurrency: r.email_concurrency,
            })
            .context("building the reminder SMTP client")?,
        ));
    }
    let mut channels = vec![Channel::App];
    channels.extend(notifiers.iter().map(|n| n.channel()));
    Ok(ReminderDelivery {
        notifiers,
        channels,
    })
}
