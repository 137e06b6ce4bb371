//! Distributed mode, end to end, with Redis behind a proxy started here (against MySQL
//! whatever `STAMPEDE_TEST_BACKEND` says):
//! - a claim whose Redis reply is lost on the wire (the script ran, the connection broke
//!   before the answer arrived) is never answered as a plain failure: the node looks it up by
//!   its key, the client gets the original 201 or 503 `OUTCOME_UNKNOWN`, and its retry with
//!   the same `Idempotency-Key` gets the same coupon, with the stock taken once;
//! - with Redis cut, settlement (quote, lock) keeps working against MySQL.

use crate::helpers::*;
use serde_json::{Value, json};
use stampede_server::config::Backend;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The start of `claim.lua`'s "claimed" reply in RESP2: `{1, seq, stream id}`.
const CLAIMED_REPLY: &[u8] = b"*3\r\n:1\r\n";

/// A TCP proxy to Redis that, once armed, swallows the next "claimed" reply and drops that
/// connection (both halves), as a reset would; `cut` closes everything and refuses new
/// connections.
struct LossyProxy {
    port: u16,
    armed: Arc<AtomicBool>,
    cut: CancellationToken,
}

impl LossyProxy {
    async fn start() -> Self {
        let upstream = std::env::var("STAMPEDE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"))
            .port();
        let armed = Arc::new(AtomicBool::new(false));
        let cut = CancellationToken::new();
        let (armed2, cut2) = (armed.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = cut2.cancelled() => return, // the listener goes: refused
                };
                let Ok((client, _)) = accepted else { return };
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (armed, cut) = (armed2.clone(), cut2.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = pipe(client, server, armed) => {}
                        () = cut.cancelled() => {}
                    }
                });
            }
        });
        Self { port, armed, cut }
    }
}

async fn pipe(client: TcpStream, server: TcpStream, armed: Arc<AtomicBool>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = cr.read(&mut buf).await {
            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = sr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if buf[..n].starts_with(CLAIMED_REPLY)
            && armed
                .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            break;
        }
        if cw.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    up.abort();
}

/// A distributed node (MySQL, fresh databases) whose Redis is behind `proxy`.
async fn distributed_app(proxy: &LossyProxy) -> TestApp {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (mut s, _) = test_settings(dir.path(), false);
    let tag: u64 = rand::random();
    let base = std::env::var("STAMPEDE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    let urls = vec![format!("{base}/stampede_t_{tag:016x}_0")];
    s.storage.backend = Backend::Mysql;
    s.storage.mysql.databases = urls.clone();
    s.storage.mysql.tables_per_database = 1;
    s.storage.mysql.max_connections_per_database = 8;
    s.redis.prefix = format!("stampede_t_{tag:016x}");
    // The proxy stands in front of one Redis, whatever the suite's topology.
    s.redis.mode = stampede_server::config::RedisMode::Single;
    s.redis.urls = Vec::new();
    s.redis.wait_replicas = 0;
    s.redis.url = format!("redis://127.0.0.1:{}", proxy.port);
    spawn_app_from(dir, s, urls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_claim_reply_is_resolved_by_its_key_and_the_retry_gets_the_same_coupon() {
    let proxy = LossyProxy::start().await;
    let app = distributed_app(&proxy).await;

    let mut body = app.template_body("Flash");
    body["claim_start"] = json!(app.now().to_string());
    body["stock_total"] = json!(10);
    body["per_user_limit"] = json!(2);
    let id = id_of(&app.create(&app.merchant(7), &body).await);
    let path = format!("/api/v1/templates/{id}/claim");
    // A first claim loads the template into Redis.
    let (s, v) = read(
        app.post_with_key(&path, &app.user_n(1), "warm", &json!({}))
            .await,
    )
    .await;
    assert_eq!(s, 201, "{v}");

    proxy.armed.store(true, Ordering::SeqCst);
    let (first, v1) = read(
        app.post_with_key(&path, &app.user_n(7), "tap-1", &json!({}))
            .await,
    )
    .await;
    assert!(
        !proxy.armed.load(Ordering::SeqCst),
        "the claim's reply was dropped"
    );
    match first.as_u16() {
        201 => {}
        503 => assert_eq!(v1["code"], "OUTCOME_UNKNOWN", "{v1}"),
        other => panic!("a claim that happened answered {other}: {v1}"),
    }

    // The client retries with the same key: the same coupon, taken once.
    let (s, v2) = read(
        app.post_with_key(&path, &app.user_n(7), "tap-1", &json!({}))
            .await,
    )
    .await;
    assert_eq!(s, 200, "a replay: {v2}");
    if first == 201 {
        assert_eq!(v1["coupon"]["id"], v2["coupon"]["id"]);
    }
    let (_, t) = read(
        app.get(&format!("/api/v1/templates/{id}"), &app.user_n(7))
            .await,
    )
    .await;
    assert_eq!(t["remaining_stock"], 8, "{t}");
    let (_, mine) = read(app.get("/api/v1/me/coupons", &app.user_n(7)).await).await;
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(1), "{mine}");
    assert_eq!(mine["items"][0]["id"], v2["coupon"]["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_keeps_working_against_mysql_when_redis_is_cut() {
    let proxy = LossyProxy::start().await;
    let app = distributed_app(&proxy).await;
    let mut body = app.template_body("Flash");
    body["claim_start"] = json!(app.now().to_string());
    let id = id_of(&app.create(&app.merchant(7), &body).await);
    let u = app.user_n(5);
    let (s, c) = read(
        app.post(&format!("/api/v1/templates/{id}/claim"), &u, &json!({}))
            .await,
    )
    .await;
    assert_eq!(s, 201, "{c}");
    let coupon = c["coupon"]["id"].clone();
    app.drain().await; // persisted to MySQL

    proxy.cut.cancel();
    let cart = json!([{"goods_id": "1", "shop_id": "7", "unit_price": 2000, "quantity": 2}]);
    let (s, q) = read(
        app.post("/api/v1/checkout/quote", &u, &json!({"items": cart}))
            .await,
    )
    .await;
    assert_eq!(s, 200, "a quote without Redis: {q}");
    let usable: Vec<Value> = q["available"]
        .as_array()
        .map(|a| a.iter().map(|x| x["coupon_id"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(usable, vec![coupon.clone()], "{q}");
    let (s, l) = read(
        app.post(
            "/api/v1/orders/ord-r1/coupons/lock",
            &u,
            &json!({"coupon_ids": [coupon], "items": cart}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "a lock without Redis: {l}");
    assert_eq!(l["status"], "locked");
    // Claims, which need Redis, fail (fast once the breaker exists) rather than succeed.
    let (s, v) = read(
        app.post(
            &format!("/api/v1/templates/{id}/claim"),
            &app.user_n(6),
            &json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 503, "{v}");
}
