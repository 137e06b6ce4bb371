//! Reminder notifiers: `webhook` (batched JSON POSTs, signed like completion callbacks) and
//! `email` (one message per reminder through an SMTP relay, with lettre). The `app` channel
//! needs none: the scheduler writes its `reminder.due` outbox events.
//!
//! Webhook contract: `POST <reminder.webhook_url>` with
//! `{"event": "reminder.due", "reminders": [DueReminder, …]}` and the headers
//! `X-Stampede-Event: reminder.due`, `X-Stampede-Timestamp: <unix seconds>`,
//! `X-Stampede-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`. Any 2xx
//! acknowledges the whole batch. Delivery is at least once: receivers deduplicate each
//! reminder on its `dedupe_id`.

use crate::notify::{backoff, callback_client, signature};
use async_trait::async_trait;
use futures::StreamExt;
use futures::future::BoxFuture;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use stampede_core::AppError;
use stampede_core::reminder_ports::{DueReminder, REMINDER_DUE, ReminderNotifier};
use stampede_domain::reminder::Channel;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub secret: String,
    /// Reminders per POST.
    pub batch: usize,
    /// POSTs in flight at once.
    pub concurrency: usize,
    /// Attempts per POST (then the reminders wait for a later step).
    pub attempts: u32,
    pub timeout: Duration,
}

pub struct WebhookNotifier {
    http: reqwest::Client,
    config: WebhookConfig,
}

#[derive(serde::Serialize)]
struct WebhookBody<'a> {
    event: &'static str,
    reminders: &'a [DueReminder],
}

impl WebhookNotifier {
    pub fn new(config: WebhookConfig) -> Result<Self, AppError> {
        Ok(Self {
            http: callback_client()?,
            config,
        })
    }

    /// One POST of `chunk`, retried with backoff; `true` once acknowledged.
    async fn post(&self, chunk: &[DueReminder]) -> bool {
        let body = match serde_json::to_string(&WebhookBody {
            event: REMINDER_DUE,
            reminders: chunk,
        }) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "encoding a reminder batch");
                return false;
            }
        };
        for attempt in 1..=self.config.attempts {
            let ts = jiff::Timestamp::now().as_second();
            let sent = self
                .http
                .post(&self.config.url)
                .timeout(self.config.timeout)
                .header("content-type", "application/json")
                .header("x-stampede-event", REMINDER_DUE)
                .header("x-stampede-timestamp", ts.to_string())
                .header(
                    "x-stampede-signature",
                    signature(&self.config.secret, ts, &body),
                )
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return true,
                Ok(r) => {
                    tracing::warn!(
                        status = r.status().as_u16(),
                        attempt,
                        reminders = chunk.len(),
                        "reminder webhook answered an error"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, reminders = chunk.len(), "reminder webhook unreachable");
                }
            }
            if attempt < self.config.attempts {
                tokio::time::sleep(backoff(
                    Duration::from_millis(200),
                    Duration::from_secs(5),
                    attempt,
                ))
                .await;
            }
        }
        false
    }
}

#[async_trait]
impl ReminderNotifier for WebhookNotifier {
    fn channel(&self) -> Channel {
        Channel::Webhook
    }

    async fn deliver(&self, batch: &[DueReminder]) -> Vec<bool> {
        let size = self.config.batch.max(1);
        // Boxed futures built up front: async-trait's `Send` check cannot see through a
        // closure returning a borrowing async block.
        let posts: Vec<BoxFuture<'_, (usize, bool)>> = batch
            .chunks(size)
            .enumerate()
            .map(|(i, chunk)| -> BoxFuture<'_, (usize, bool)> {
                Box::pin(async move { (i, self.post(chunk).await) })
            })
            .collect();
        let results: Vec<(usize, bool)> = futures::stream::iter(posts)
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        let mut out = vec![false; batch.len()];
        for (i, ok) in results {
            let from = i * size;
            let to = (from + size).min(batch.len());
            for slot in &mut out[from..to] {
                *slot = ok;
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// `smtp://host:port`, `smtps://…` or `smtp://…?tls=required` (lettre's URL form).
    pub url: String,
    pub from: String,
    /// `{user_id}` is replaced by the user's id.
    pub to: String,
    pub concurrency: usize,
}

pub struct EmailNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: String,
    concurrency: usize,
}

impl EmailNotifier {
    pub fn new(config: &EmailConfig) -> Result<Self, AppError> {
        // lettre's rustls needs a process-wide provider, as reqwest's does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bad = |what: String| AppError::Internal(what.into());
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.url)
            .map_err(|e| bad(format!("reminder.smtp_url: {e}")))?
            .timeout(Some(Duration::from_secs(10)))
            .build();
        let from = config
            .from
            .parse::<Mailbox>()
            .map_err(|e| bad(format!("reminder.email_from: {e}")))?;
        // Checked once here so a bad pattern fails at start, not per reminder.
        config
            .to
            .replace("{user_id}", "1")
            .parse::<Mailbox>()
            .map_err(|e| bad(format!("reminder.email_to: {e}")))?;
        Ok(Self {
            transport,
            from,
            to: config.to.clone(),
            concurrency: config.concurrency,
        })
    }

    fn message(&self, r: &DueReminder) -> Result<Message, String> {
        let to: Mailbox = self
            .to
            .replace("{user_id}", &r.user_id.to_string())
            .parse()
            .map_err(|e| format!("recipient: {e}"))?;
        // Message-ID carries the dedupe id, so a relay or client can drop a redelivery.
        let message_id = format!("<{}@stampede.invalid>", r.dedupe_id.replace(':', "."));
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .message_id(Some(message_id))
            .subject(format!(
                "{} starts in {} minutes",
                r.template_name, r.minutes_before
            ))
            .body(format!(
                "The sale \"{}\" starts at {}.\n\nReminder id: {}\n",
                r.template_name, r.claim_start, r.dedupe_id
            ))
            .map_err(|e| e.to_string())
    }
}

#[async_trait]
impl ReminderNotifier for EmailNotifier {
    fn channel(&self) -> Channel {
        Channel::Email
    }

    async fn deliver(&self, batch: &[DueReminder]) -> Vec<bool> {
        let sends: Vec<BoxFuture<'_, bool>> = batch
            .iter()
            .map(|r| -> BoxFuture<'_, bool> { Box::pin(self.send_one(r)) })
            .collect();
        futures::stream::iter(sends)
            .buffered(self.concurrency.max(1))
            .collect()
            .await
    }
}

impl EmailNotifier {
    async fn send_one(&self, r: &DueReminder) -> bool {
        let msg = match self.message(r) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(reminder = %r.dedupe_id, error = %e, "reminder email not built");
                return false;
            }
        };
        match self.transport.send(msg).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(reminder = %r.dedupe_id, error = %e, "reminder email not sent");
                false
            }
        }
    }
}
