//! The event publisher port: how an outbox event reaches a broker, and the CloudEvents 1.0
//! envelope it travels in. The relay that drains the outbox through it lives with the workers;
//! the NATS JetStream adapter in `stampede-events-nats`.

use crate::claim_ports::OutboxEvent;
use crate::ports::StoreError;
pub use crate::reminder_ports::PartitionLease;
use async_trait::async_trait;
use jiff::Timestamp;

/// What the broker answered for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The broker's position of the event (its stream sequence).
    pub sequence: u64,
    /// The broker already held an event with this id and dropped this one: publishing again
    /// after a lost ack stores nothing twice.
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker is unreachable or did not acknowledge in time: the event may or may not be
    /// stored, so the relay publishes it again later (the id makes that harmless).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused the event (too large, no stream for its subject): publishing it
    /// again will not help until the configuration changes.
    #[error("broker refused the event: {0}")]
    Rejected(String),
}

/// Publishes outbox events to a broker.
#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    /// Publishes one event and waits for the broker's acknowledgement: `Ok` means it is
    /// stored. Its id is the broker's deduplication key.
    async fn publish(&self, event: &OutboxEvent) -> Result<Published, PublishError>;
}

/// The outbox as a relay drains it. Events are written in the transaction of their change
/// (see [`crate::claim_ports::CouponStore`]); here they are read back per partition — one
/// outbox table: SQLite has one, MySQL one per table of every database — in write order,
/// marked once the broker acknowledged them, and deleted after a retention.
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// How many partitions there are (`0..n`); each is drained in its own order.
    fn outbox_partitions(&self) -> u32;

    /// Up to `limit` unpublished events of `partition` in write order, each with its position
    /// (`seq`) in the partition.
    async fn unpublished_events(
        &self,
        partition: u32,
        limit: u32,
    ) -> Result<Vec<(i64, OutboxEvent)>, StoreError>;

    /// Marks the events at `seqs` of `partition` published at `at_ms`; events already marked
    /// keep their first time. Returns how many were newly marked.
    async fn mark_published(
        &self,
        partition: u32,
        seqs: &[i64],
        at_ms: i64,
    ) -> Result<u64, StoreError>;

    /// Deletes up to `limit` events of `partition` published before `before_ms` (oldest
    /// first); unpublished events are never deleted. Returns how many went.
    async fn purge_published(
        &self,
        partition: u32,
        before_ms: i64,
        limit: u32,
    ) -> Result<u64, StoreError>;

    /// Takes or renews the relay lease of `partition` until `until`: granted when it is free,
    /// expired (`until ≤ now`) or already `owner`'s, so one node at a time publishes a
    /// partition. Renewing keeps the token; `owner` must be unique per process (1–64
    /// characters, no trailing space).
    async fn lease_outbox_partition(
        &self,
        partition: u32,
        owner: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Option<PartitionLease>, StoreError>;

    /// Gives the lease up early (only if still `lease`'s), so another node need not wait.
    async fn release_outbox_partition(&self, lease: &PartitionLease) -> Result<(), StoreError>;
}

/// The CloudEvents 1.0 JSON envelope of an outbox event: `id` (the event id, stable across
/// retries), `source` (this deployment), `type` (the kind, e.g. `coupon.claimed`), `time`,
/// `subject` (the aggregate's id: coupon, task, …), `data` (the payload) and, when the change
/// was traced, the distributed-tracing extension's `traceparent`.
pub fn cloud_event(event: &OutboxEvent, source: &str) -> serde_json::Value {
    let time = jiff::Timestamp::from_millisecond(event.created_at_ms)
        .map(|t| t.to_string())
        .unwrap_or_default();
    // The payload is JSON written by Stampede; should one ever not parse, it travels as text
    // rather than being lost.
    let data = serde_json::from_str::<serde_json::Value>(&event.payload)
        .unwrap_or_else(|_| serde_json::Value::String(event.payload.clone()));
    let mut ce = serde_json::json!({
        "specversion": "1.0",
        "id": event.id,
        "source": source,
        "type": event.kind,
        "time": time,
        "subject": event.aggregate_id.to_string(),
        "datacontenttype": "application/json",
        "data": data,
    });
    if let (Some(tp), Some(map)) = (&event.traceparent, ce.as_object_mut()) {
        map.insert("traceparent".into(), tp.clone().into());
    }
    ce
}

/// The subject an event is published on: `<prefix>.<kind>`, e.g.
/// `stampede.events.coupon.claimed`, so a consumer can filter by kind.
pub fn subject_of(prefix: &str, event: &OutboxEvent) -> String {
    format!("{prefix}.{}", event.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: &str, traceparent: Option<&str>) -> OutboxEvent {
        OutboxEvent {
            id: "coupon.claimed:42".into(),
            kind: "coupon.claimed".into(),
            aggregate_id: 42,
            payload: payload.into(),
            created_at_ms: 1_796_515_200_123,
            traceparent: traceparent.map(str::to_owned),
        }
    }

    #[test]
    fn the_envelope_carries_every_required_cloudevents_attribute() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let ce = cloud_event(
            &event(r#"{"id":"42","status":"unused"}"#, Some(tp)),
            "/stampede/test",
        );
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], "coupon.claimed:42");
        assert_eq!(ce["source"], "/stampede/test");
        assert_eq!(ce["type"], "coupon.claimed");
        assert_eq!(ce["subject"], "42");
        assert_eq!(ce["time"], "2026-12-06T00:00:00.123Z");
        assert_eq!(ce["data"]["status"], "unused");
        assert_eq!(ce["traceparent"], tp);
    }

    #[test]
    fn an_untraced_event_has_no_traceparent_and_odd_payloads_travel_as_text() {
        let ce = cloud_event(&event("not json", None), "/s");
        assert!(ce.get("traceparent").is_none());
        assert_eq!(ce["data"], "not json");
        assert_eq!(
            subject_of("stampede.events", &event("{}", None)),
            "stampede.events.coupon.claimed"
        );
    }
}
