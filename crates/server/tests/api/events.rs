//! The event relay end to end: claims through the HTTP API, the outbox drained to NATS
//! JetStream (the shared server for the happy path; a private `nats-server` this test stops
//! and restarts for the outage), each event in the stream exactly once.

use crate::helpers::*;
use serde_json::json;
use stampede_events_nats::{NatsPublisher, NatsSettings};
use std::time::Duration;

fn nats_url() -> String {
    std::env::var("STAMPEDE_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// An app whose relay publishes to `url`, on a stream and subjects of its own.
async fn app_on(url: &str) -> (TestApp, NatsSettings) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (mut settings, urls) = test_settings(dir.path(), false);
    let tag = format!("{:016x}", rand::random::<u64>());
    settings.events.nats_url = Some(url.to_owned());
    settings.events.stream = format!("T_{tag}");
    settings.events.subject_prefix = format!("t{tag}.events");
    settings.events.ack_timeout = Duration::from_millis(500);
    let reader = NatsSettings {
        url: url.to_owned(),
        stream: settings.events.stream.clone(),
        subject_prefix: settings.events.subject_prefix.clone(),
        ..NatsSettings::default()
    };
    (spawn_app_from(dir, settings, urls).await, reader)
}

/// Claims one coupon for each of `users` on a template whose sale is open; their ids.
async fn claim_all(app: &TestApp, template: &str, users: std::ops::Range<u64>) -> Vec<String> {
    let mut ids = Vec::new();
    for u in users {
        let r = app
            .post(
                &format!("/api/v1/templates/{template}/claim"),
                &app.user_n(u),
                &json!({}),
            )
            .await;
        let (status, body) = read(r).await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["coupon"]["id"].as_str().unwrap_or_default().to_owned());
    }
    ids
}

async fn open_sale(app: &TestApp) -> String {
    let t = app.create_named(&app.merchant(7), "events").await;
    app.advance(jiff::SignedDuration::from_mins(61));
    id_of(&t)
}

/// Every message in the stream, in stream order: (subject, CloudEvent).
async fn stream_events(reader: &NatsSettings) -> Vec<(String, serde_json::Value)> {
    let p = NatsPublisher::connect(reader.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let Ok(mut stream) = p.jetstream().get_stream(&reader.stream).await else {
        return Vec::new();
    };
    let last = stream
        .info()
        .await
        .map(|i| i.state.last_sequence)
        .unwrap_or(0);
    let mut events = Vec::new();
    for seq in 1..=last {
        let m = stream
            .get_raw_message(seq)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let ce: serde_json::Value =
            serde_json::from_slice(&m.payload).unwrap_or_else(|e| panic!("{e}"));
        events.push((m.subject.to_string(), ce));
    }
    events
}

/// The `coupon.claimed` event ids in the stream, in stream order.
async fn stream_ids(reader: &NatsSettings) -> Vec<String> {
    stream_events(reader)
        .await
        .into_iter()
        .filter(|(_, ce)| ce["type"] == "coupon.claimed")
        .map(|(_, ce)| ce["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn drop_stream(reader: &NatsSettings) {
    if let Ok(p) = NatsPublisher::connect(reader.clone()).await {
        let _ = p.jetstream().delete_stream(&reader.stream).await;
    }
}

/// Events the outbox still holds unpublished.
async fn backlog(app: &TestApp) -> u64 {
    app.coupons
        .outbox_backlog()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .events
}

/// The stream holds exactly one `coupon.claimed` event per coupon of `coupons`.
async fn assert_once_each(reader: &NatsSettings, coupons: &[String], why: &str) {
    let mut got = stream_ids(reader).await;
    got.sort();
    let mut want: Vec<String> = coupons
        .iter()
        .map(|c| format!("coupon.claimed:{c}"))
        .collect();
    want.sort();
    assert_eq!(got, want, "{why}");
}

#[tokio::test]
async fn every_claim_reaches_the_stream_once_as_a_cloudevent() {
    let (app, reader) = app_on(&nats_url()).await;
    // The stream is created at start, before any event: consumers can bind to it at once.
    let p = NatsPublisher::connect(reader.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut created = false;
    for _ in 0..50 {
        if p.jetstream().get_stream(&reader.stream).await.is_ok() {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(created, "stream {} created at start", reader.stream);
    let t = open_sale(&app).await;
    let coupons = claim_all(&app, &t, 1..31).await;
    app.drain().await;
    assert_once_each(&reader, &coupons, "one message per claim").await;
    assert_eq!(backlog(&app).await, 0);
    // A second relay pass (another node, a restart) adds nothing.
    app.drain().await;
    assert_eq!(stream_ids(&reader).await.len(), 30);
    // The template's own events: created with it, terminated when it is stopped.
    let r = app
        .post(
            &format!("/api/v1/merchant/templates/{t}/terminate"),
            &app.merchant(7),
            &json!({}),
        )
        .await;
    let (status, body) = read(r).await;
    assert_eq!(status, 200, "{body}");
    app.drain().await;
    let lifecycle: Vec<(String, String)> = stream_events(&reader)
        .await
        .into_iter()
        .filter(|(_, ce)| {
            ce["type"]
                .as_str()
                .is_some_and(|k| k.starts_with("template."))
        })
        .inspect(|(_, ce)| assert_eq!(ce["subject"], t.as_str(), "{ce}"))
        .map(|(subject, ce)| (subject, ce["id"].as_str().unwrap_or_default().to_owned()))
        .collect();
    let prefix = &reader.subject_prefix;
    assert_eq!(
        lifecycle,
        [
            (
                format!("{prefix}.template.created"),
                format!("template.created:{t}")
            ),
            (
                format!("{prefix}.template.terminated"),
                format!("template.terminated:{t}")
            ),
        ],
        "one created and one terminated event, in order"
    );
    for kind in ["template.created", "template.terminated"] {
        let ev = app
            .coupons
            .outbox_events(kind, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        crate::event_schemas::assert_documented(&ev);
    }
    // The counter is the process's (other tests' apps publish too).
    let metrics = app.metrics_text().await;
    let published = metrics
        .lines()
        .find_map(|l| l.strip_prefix("stampede_outbox_published_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_default();
    assert!(published >= 30.0, "{metrics}");
    assert!(
        metrics.contains("stampede_outbox_relay_enabled"),
        "{metrics}"
    );
    drop_stream(&reader).await;
}

/// A `nats-server -js` of this test's own on a spare port, with its store in `dir`.
struct PrivateNats {
    child: std::process::Child,
}

impl PrivateNats {
    fn start(port: u16, dir: &std::path::Path) -> Self {
        let bin = [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "nats-server",
        ]
        .into_iter()
        .find(|b| !b.starts_with('/') || std::path::Path::new(b).exists())
        .unwrap_or("nats-server");
        let child = std::process::Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_broker_outage_delays_events_and_loses_none() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let store = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let nats = PrivateNats::start(port, store.path());
    let url = format!("nats://127.0.0.1:{port}");
    let (app, reader) = app_on(&url).await;
    let t = open_sale(&app).await;
    let mut coupons = claim_all(&app, &t, 1..11).await;
    app.drain().await;
    assert_eq!(stream_ids(&reader).await.len(), 10);

    // The broker goes away: claims still succeed, their events wait in the outbox.
    nats.kill();
    coupons.extend(claim_all(&app, &t, 11..31).await);
    app.drain().await;
    assert_eq!(backlog(&app).await, 20);

    // It comes back with its data: the relay (past its backoff) publishes the rest, once.
    let nats = PrivateNats::start(port, store.path());
    let mut left = u64::MAX;
    for _ in 0..100 {
        app.advance(jiff::SignedDuration::from_secs(1));
        app.drain().await;
        left = backlog(&app).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        left, 0,
        "the backlog drains by itself once the broker is back"
    );
    assert_once_each(
        &reader,
        &coupons,
        "every claim once, none lost across the outage",
    )
    .await;
    nats.kill();
}

#[tokio::test]
async fn a_restarted_node_resumes_publishing_and_another_node_takes_over_a_dead_ones_partitions() {
    let (app, reader) = app_on(&nats_url()).await;
    let t = open_sale(&app).await;
    let mut coupons = claim_all(&app, &t, 1..6).await;
    app.drain().await;
    // The node holds its partitions' leases and goes away without giving them back.
    let next = spawn_sibling(&app).await;
    app.stop();
    next.advance(jiff::SignedDuration::from_mins(61));
    coupons.extend(claim_all(&next, &t, 6..11).await);
    next.drain().await;
    if matches!(backend(), TestBackend::Sqlite) {
        // Embedded: the one process keeps its lease name, so a restart publishes at once.
        assert_once_each(&reader, &coupons, "a restart resumes at once").await;
    } else {
        // Distributed: another node waits for the dead node's leases to run out.
        assert_eq!(
            stream_ids(&reader).await.len(),
            5,
            "the partitions are still leased"
        );
        next.advance(jiff::SignedDuration::from_secs(31));
        next.drain().await;
        assert_once_each(&reader, &coupons, "taken over after the lease").await;
    }
    drop_stream(&reader).await;
}
