//! The `reminders` scenario against a tiny in-process fake of the reminders API on port 0: it
//! creates the template, takes the PUTs (one 429 on the way, 409 REMINDER_TOO_LATE once due)
//! and, from the due time on, POSTs the reminders to the scenario's sink in batches — the
//! first batch twice, plus one reminder of another template.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use http_body_util::Full;
use hyper::Method;
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use stampede_bench::client::Target;
use stampede_bench::insert_ceiling::Ceiling;
use stampede_bench::reminders::{self, RemindersOptions};
use stampede_core::auth::TokenService;
use stampede_core::clock::SystemClock;
use stampede_domain::ids::ShopId;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

const SECRET: &str = "bench-test-secret-bench-test-secret-0123";
const TEMPLATE: &str = "42";
const BATCH: usize = 100;

struct Fake {
    tokens: TokenService,
    sink: SocketAddr,
    /// Each PUT takes this long: makes the seeding outlast a short lead.
    put_delay: Duration,
    due: Mutex<Option<Timestamp>>,
    /// Users with a reminder, in the order they were accepted.
    users: Mutex<Vec<String>>,
    seen: Mutex<HashSet<String>>,
    puts: AtomicU64,
    busy_sent: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn problem(status: StatusCode, code: &str) -> Response {
    let body = format!(
        r#"{{"type":"about:blank","title":"{code}","status":{},"detail":"x","code":"{code}","request_id":"r"}}"#,
        status.as_u16()
    );
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body,
    )
        .into_response()
}

async fn create_template(State(f): State<Arc<Fake>>, body: String) -> Response {
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    let Some(start) = v["claim_start"]
        .as_str()
        .and_then(|s| s.parse::<Timestamp>().ok())
    else {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED");
    };
    *lock(&f.due) = Some(start - SignedDuration::from_mins(60));
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"id":"{TEMPLATE}","name":"bench"}}"#),
    )
        .into_response()
}

async fn put_reminder(
    State(f): State<Arc<Fake>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !f.put_delay.is_zero() {
        tokio::time::sleep(f.put_delay).await;
    }
    let Some(user) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| f.tokens.verify(t).ok())
        .map(|p| p.subject)
    else {
        return problem(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    };
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    if id != TEMPLATE || v != json!({"channel": "webhook", "minutes_before": 60}) {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED");
    }
    if f.puts.fetch_add(1, Ordering::Relaxed) == 5 && !f.busy_sent.swap(true, Ordering::Relaxed) {
        return problem(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    }
    let Some(due) = *lock(&f.due) else {
        return problem(StatusCode::NOT_FOUND, "NOT_FOUND");
    };
    if Timestamp::now() >= due {
        return problem(StatusCode::CONFLICT, "REMINDER_TOO_LATE");
    }
    if lock(&f.seen).insert(user.clone()) {
        lock(&f.users).push(user);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{}",
    )
        .into_response()
}

fn batch(users: &[String], template: &str, due: Timestamp) -> Vec<u8> {
    let items: Vec<Value> = users
        .iter()
        .map(|u| {
            json!({
                "dedupe_id": format!("reminder:{u}:{template}:webhook:60"),
                "user_id": u,
                "template_id": template,
                "template_name": "bench reminders",
                "channel": "webhook",
                "minutes_before": 60,
                "claim_start": (due + SignedDuration::from_mins(60)).to_string(),
                "remind_at": due.to_string(),
            })
        })
        .collect();
    serde_json::to_vec(&json!({"event": "reminder.due", "reminders": items})).unwrap_or_default()
}

async fn post_hook(target: &Target, body: Vec<u8>) -> anyhow::Result<u16> {
    let mut conn = target.connect().await?;
    let mut req = target.request(
        Method::POST,
        target.uri("/hook")?,
        None,
        Full::new(Bytes::from(body)),
    );
    let h = req.headers_mut();
    h.insert("x-stampede-event", HeaderValue::from_static("reminder.due"));
    h.insert(
        "x-stampede-signature",
        HeaderValue::from_static("sha256=00"),
    );
    conn.ready().await?;
    Ok(conn.send_request(req).await?.status().as_u16())
}

/// From the due time on, delivers every accepted reminder not delivered yet.
async fn deliver(f: Arc<Fake>) -> anyhow::Result<()> {
    let target = Target::resolve(&format!("http://{}", f.sink)).await?;
    let mut sent = 0;
    let mut first = true;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Some(due) = *lock(&f.due) else { continue };
        if Timestamp::now() < due {
            continue;
        }
        let users: Vec<String> = lock(&f.users)[sent..].to_vec();
        for chunk in users.chunks(BATCH) {
            let body = batch(chunk, TEMPLATE, due);
            assert_eq!(post_hook(&target, body.clone()).await?, 204);
            if first {
                first = false;
                assert_eq!(post_hook(&target, body).await?, 204);
                let other = batch(&["1".to_owned()], "43", due);
                assert_eq!(post_hook(&target, other).await?, 204);
            }
        }
        sent += users.len();
    }
}

/// A port nobody listens on right now (for the sink, which the fake must know in advance).
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn spawn_fake(sink: SocketAddr, put_delay: Duration) -> anyhow::Result<String> {
    let fake = Arc::new(Fake {
        tokens: TokenService::new(SECRET.as_bytes(), Arc::new(SystemClock)),
        sink,
        put_delay,
        due: Mutex::new(None),
        users: Mutex::new(Vec::new()),
        seen: Mutex::new(HashSet::new()),
        puts: AtomicU64::new(0),
        busy_sent: AtomicBool::new(false),
    });
    let app = Router::new()
        .route("/api/v1/merchant/templates", post(create_template))
        .route("/api/v1/templates/{id}/reminders", put(put_reminder))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    tokio::spawn(deliver(fake));
    Ok(format!("http://{addr}"))
}

fn options(sink: SocketAddr, reminders: u64, lead: Duration) -> anyhow::Result<RemindersOptions> {
    Ok(RemindersOptions {
        reminders,
        first_user: 1,
        lead,
        in_flight: 8,
        sink_listen: sink,
        server_pid: std::process::id(),
        shop_id: ShopId::new(1).ok_or_else(|| anyhow::anyhow!("shop id"))?,
        timeout: Duration::from_secs(10),
        settle: Duration::from_millis(200),
        ceiling: None,
    })
}

#[tokio::test]
async fn every_reminder_is_counted_once_with_its_duplicates() -> anyhow::Result<()> {
    let sink = free_port()?;
    let base = spawn_fake(sink, Duration::ZERO).await?;
    let target = Target::resolve(&base).await?;
    let dir = std::env::temp_dir().join(format!("bench-reminders-{}", rand::random::<u32>()));
    let mut opts = options(sink, 350, Duration::from_secs(1))?;
    opts.ceiling = Some(Ceiling::Sqlite(dir.clone()));
    let r = reminders::run(&target, SECRET.as_bytes(), &opts).await?;
    let _ = std::fs::remove_dir(&dir);

    assert!(r.all_delivered(), "{r:#?}");
    assert!(!r.timed_out);
    assert_eq!((r.accepted, r.delivered), (350, 350));
    assert_eq!((r.rejected_too_late, r.not_sent), (0, 0));
    assert_eq!(r.seeding_retries, 1);
    assert_eq!(r.duplicates, BATCH as u64);
    assert_eq!(r.received, 350 + BATCH as u64);
    assert_eq!(r.foreign, 1);
    assert_eq!((r.bad_posts, r.unsigned_posts, r.early), (0, 0, 0));
    assert!(r.seeding_slack_s > 0.0, "{r:#?}");
    let last = r.due_to_last_delivery_s.unwrap_or(f64::MAX);
    assert!((0.0..5.0).contains(&last), "{r:#?}");
    let lag = r.lag_ms.clone().unwrap_or(reminders::LagMs {
        p50: 0,
        p99: 0,
        max: u64::MAX,
    });
    assert!(lag.p50 <= lag.p99 && lag.max < 5_000, "{lag:?}");
    assert!(r.server.peak_rss_kb > 0);
    let ceiling = r
        .ceiling
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no ceiling"))?;
    assert_eq!(ceiling.rows, 350);

    let table = r.to_table();
    assert!(table.contains("sqlite insert ceiling"), "{table}");
    let v: Value = serde_json::from_str(&r.to_json_line())?;
    assert_eq!(v["delivered"], 350);
    assert_eq!(v["template_id"], TEMPLATE);
    Ok(())
}

#[tokio::test]
async fn a_seeding_past_the_due_time_is_reported() -> anyhow::Result<()> {
    let sink = free_port()?;
    // 8 in flight x 20 ms per PUT: 4,000 PUTs would take ~10 s, past a due time 1–2 s away.
    let base = spawn_fake(sink, Duration::from_millis(20)).await?;
    let target = Target::resolve(&base).await?;
    let opts = options(sink, 4_000, Duration::from_secs(1))?;
    let r = reminders::run(&target, SECRET.as_bytes(), &opts).await?;

    assert!(!r.all_delivered(), "{r:#?}");
    assert!(!r.timed_out, "{r:#?}");
    assert!(r.rejected_too_late >= 1, "{r:#?}");
    assert!(r.not_sent > 0, "{r:#?}");
    assert_eq!(
        r.accepted + r.rejected_too_late + r.not_sent,
        4_000,
        "{r:#?}"
    );
    assert_eq!(r.delivered, r.accepted);
    assert!(r.seeding_slack_s < 0.0, "{r:#?}");
    assert!(r.ceiling.is_none());
    assert!(r.to_table().contains("after the due time"));
    Ok(())
}
