//! Settings of the event relay: the broker the outbox is published to (NATS JetStream), and
//! how the relay drains and purges the outbox. Without `nats_url` nothing is relayed and
//! events stay queryable in the outbox.

use super::units;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventSettings {
    /// `nats://host:port` of NATS with JetStream. Unset: no relay.
    pub nats_url: Option<String>,
    /// The JetStream stream (created at start when missing). Default `STAMPEDE`.
    pub stream: String,
    /// Events go to `<subject_prefix>.<kind>`, e.g. `stampede.events.coupon.claimed`.
    pub subject_prefix: String,
    /// How long the stream keeps an event. Default 7 days.
    #[serde(rename = "stream_max_age_secs", with = "units::secs")]
    pub stream_max_age: Duration,
    /// How long JetStream remembers an event id to drop a repeat. Default 24 h: a relay
    /// retrying within it stores each event once.
    #[serde(rename = "duplicate_window_secs", with = "units::secs")]
    pub duplicate_window: Duration,
    /// CloudEvents `source` of every event. Default `/stampede`.
    pub source: String,
    /// Events read and published per partition per step. Default 256.
    pub relay_batch: u32,
    /// Pause between relay steps that found nothing. Default 200 ms.
    #[serde(rename = "relay_interval_ms", with = "units::millis")]
    pub relay_interval: Duration,
    /// How long one publish waits for the broker's acknowledgement. Default 5 s.
    #[serde(rename = "ack_timeout_ms", with = "units::millis")]
    pub ack_timeout: Duration,
    /// Longest pause between attempts while the broker is down. Default 10 s.
    #[serde(rename = "max_backoff_ms", with = "units::millis")]
    pub max_backoff: Duration,
    /// How long a published event stays in the outbox before it is purged. Default 24 h.
    #[serde(rename = "retention_secs", with = "units::secs")]
    pub retention: Duration,
    /// A node's lease on an outbox partition, renewed every relay step: a dead node's
    /// partitions are published by another after this. Default 30 s.
    #[serde(rename = "lease_secs", with = "units::secs")]
    pub lease: Duration,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            nats_url: None,
            stream: "STAMPEDE".into(),
            subject_prefix: "stampede.events".into(),
            stream_max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(24 * 3600),
            source: "/stampede".into(),
            relay_batch: 256,
            relay_interval: Duration::from_millis(200),
            ack_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(10),
            retention: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(30),
        }
    }
}
