//! The event publisher on NATS JetStream: each outbox event goes out as a CloudEvents 1.0
//! JSON message on `<subject prefix>.<kind>`, with the event id as `Nats-Msg-Id` so the
//! stream's duplicate window drops a repeat (a relay that lost an ack publishes again), and
//! counts as published only once JetStream acknowledged it. The stream is created when
//! missing, before the first publish (and again if an operator deleted it). Connecting never
//! waits for the broker: while it is down, publishes fail as `Unavailable` and the relay
//! retries.

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use async_trait::async_trait;
use stampede_core::claim_ports::OutboxEvent;
use stampede_core::event_ports::{
    EventPublisher, PublishError, Published, cloud_event, subject_of,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where and how events are published.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// `nats://host:port`.
    pub url: String,
    /// The JetStream stream that stores the events (created when missing).
    pub stream: String,
    /// Events go to `<subject_prefix>.<kind>`; the stream takes `<subject_prefix>.>`.
    pub subject_prefix: String,
    /// How long the stream keeps an event (JetStream `max_age`; zero = forever).
    pub max_age: Duration,
    /// How long JetStream remembers an event id to drop repeats. A relay's retries must fit
    /// in it for "exactly one message per event" to hold.
    pub duplicate_window: Duration,
    /// CloudEvents `source` of every event.
    pub source: String,
    /// How long one publish waits for its acknowledgement.
    pub ack_timeout: Duration,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            stream: "STAMPEDE".into(),
            subject_prefix: "stampede.events".into(),
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(24 * 3600),
            source: "/stampede".into(),
            ack_timeout: Duration::from_secs(5),
        }
    }
}

/// Publishes to one JetStream stream.
pub struct NatsPublisher {
    js: jetstream::Context,
    settings: NatsSettings,
    /// The stream is known to exist.
    stream_ready: AtomicBool,
}

impl NatsPublisher {
    /// A publisher for `settings`. The connection is made (and remade) in the background, so
    /// this returns at once even while the broker is down; only a malformed URL is an error.
    pub async fn connect(settings: NatsSettings) -> Result<Self, PublishError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(settings.ack_timeout)
            .retry_on_initial_connect()
            .connect(settings.url.as_str())
            .await
            .map_err(|e| PublishError::Rejected(format!("connect {}: {e}", settings.url)))?;
        let mut js = jetstream::new(client);
        js.set_timeout(settings.ack_timeout);
        Ok(Self {
            js,
            settings,
            stream_ready: AtomicBool::new(false),
        })
    }

    /// Creates the stream when it is missing; an existing one is used as it is configured.
    pub async fn ensure_stream(&self) -> Result<(), PublishError> {
        let s = &self.settings;
        self.js
            .get_or_create_stream(jetstream::stream::Config {
                name: s.stream.clone(),
                subjects: vec![format!("{}.>", s.subject_prefix)],
                max_age: s.max_age,
                duplicate_window: s.duplicate_window,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| PublishError::Unavailable(format!("stream {}: {e}", s.stream)))?;
        self.stream_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// The JetStream context, for readers of the stream (tests, operators' tools).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn settings(&self) -> &NatsSettings {
        &self.settings
    }
}

#[async_trait]
impl EventPublisher for NatsPublisher {
    async fn publish(&self, event: &OutboxEvent) -> Result<Published, PublishError> {
        if !self.stream_ready.load(Ordering::Acquire) {
            self.ensure_stream().await?;
        }
        let body = cloud_event(event, &self.settings.source).to_string();
        let message = PublishMessage::build()
            .payload(body.into())
            .message_id(&event.id);
        let subject = subject_of(&self.settings.subject_prefix, event);
        let ack = self
            .js
            .send_publish(subject, message)
            .await
            .map_err(|e| match e.kind() {
                PublishErrorKind::MaxPayloadExceeded => PublishError::Rejected(e.to_string()),
                _ => PublishError::Unavailable(e.to_string()),
            })?
            .await
            .map_err(|e| match e.kind() {
                // No stream takes the subject (deleted under us): refused now, and the next
                // publish creates it again.
                PublishErrorKind::StreamNotFound => {
                    self.stream_ready.store(false, Ordering::Release);
                    PublishError::Rejected(e.to_string())
                }
                _ => PublishError::Unavailable(e.to_string()),
            })?;
        Ok(Published {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}
