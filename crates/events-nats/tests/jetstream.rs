//! The JetStream publisher against the real NATS server (`STAMPEDE_TEST_NATS`, default
//! `nats://127.0.0.1:4222`). Each test has its own stream and subjects, and deletes them.

use stampede_core::claim_ports::OutboxEvent;
use stampede_core::event_ports::{EventPublisher, PublishError};
use stampede_events_nats::{NatsPublisher, NatsSettings};
use std::time::Duration;

fn nats_url() -> String {
    std::env::var("STAMPEDE_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn settings() -> NatsSettings {
    let tag = format!("{:016x}", rand::random::<u64>());
    NatsSettings {
        url: nats_url(),
        stream: format!("T_{tag}"),
        subject_prefix: format!("t{tag}.events"),
        max_age: Duration::from_secs(600),
        duplicate_window: Duration::from_secs(120),
        source: "/stampede/test".into(),
        ack_timeout: Duration::from_secs(5),
    }
}

fn claimed(coupon: i64) -> OutboxEvent {
    OutboxEvent {
        id: format!("coupon.claimed:{coupon}"),
        kind: "coupon.claimed".into(),
        aggregate_id: coupon,
        payload: format!(r#"{{"id":"{coupon}","user_id":"42","status":"unused"}}"#),
        created_at_ms: 1_796_515_200_000,
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
    }
}

async fn drop_stream(p: &NatsPublisher) {
    let _ = p.jetstream().delete_stream(&p.settings().stream).await;
}

#[tokio::test]
async fn an_event_is_stored_once_as_a_cloudevent_on_its_kinds_subject() {
    let p = NatsPublisher::connect(settings())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = p
        .publish(&claimed(7))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!first.duplicate);
    // A relay that lost the ack publishes again: JetStream keeps the first.
    let again = p
        .publish(&claimed(7))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(again.duplicate, "{again:?}");
    assert_eq!(again.sequence, first.sequence);
    let other = p
        .publish(&claimed(8))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!other.duplicate && other.sequence == first.sequence + 1);

    let mut stream = p
        .jetstream()
        .get_stream(&p.settings().stream)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let info = stream.info().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(info.state.messages, 2, "{:?}", info.state);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));

    let m = stream
        .get_raw_message(first.sequence)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        m.subject.as_str(),
        format!("{}.coupon.claimed", p.settings().subject_prefix)
    );
    let id = m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned());
    assert_eq!(id.as_deref(), Some("coupon.claimed:7"));
    let ce: serde_json::Value =
        serde_json::from_slice(&m.payload).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["id"], "coupon.claimed:7");
    assert_eq!(ce["type"], "coupon.claimed");
    assert_eq!(ce["source"], "/stampede/test");
    assert_eq!(ce["subject"], "7");
    assert_eq!(ce["data"]["user_id"], "42");
    assert!(
        ce["traceparent"]
            .as_str()
            .is_some_and(|t| t.starts_with("00-"))
    );
    drop_stream(&p).await;
}

#[tokio::test]
async fn an_existing_stream_is_used_as_it_is() {
    let s = settings();
    let p = NatsPublisher::connect(s.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    p.publish(&claimed(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A second node starting up finds the stream and keeps what it holds.
    let q = NatsPublisher::connect(s)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let seq = q
        .publish(&claimed(2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(seq.sequence, 2);
    drop_stream(&p).await;
}

#[tokio::test]
async fn an_unreachable_broker_is_unavailable_not_a_crash() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let s = NatsSettings {
        url: format!("nats://127.0.0.1:{port}"),
        ack_timeout: Duration::from_millis(500),
        ..settings()
    };
    // Connecting does not wait for the broker; publishing fails fast enough, as retryable.
    let p = NatsPublisher::connect(s)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let started = std::time::Instant::now();
    match p.publish(&claimed(1)).await {
        Err(PublishError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_deleted_stream_refuses_one_event_then_is_created_again() {
    let p = NatsPublisher::connect(settings())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    p.ensure_stream().await.unwrap_or_else(|e| panic!("{e}"));
    // The stream is gone (an operator deleted it): the publish is refused, not lost silently.
    drop_stream(&p).await;
    match p.publish(&claimed(3)).await {
        Err(PublishError::Rejected(_)) => {}
        other => panic!("expected Rejected, got {other:?}"),
    }
    // The next publish creates the stream again.
    let again = p
        .publish(&claimed(3))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.sequence, 1);
    drop_stream(&p).await;
}
