//! The `quote` and `lock-redeem` scenarios against a tiny in-process fake of the settlement
//! API on port 0: setups, the quote sanity check, lock→redeem chains, failures counted under
//! their step, and a workload that runs out.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use stampede_bench::client::Target;
use stampede_bench::load::LoadOptions;
use stampede_bench::lock_redeem::{self, LockRedeemSetup};
use stampede_bench::measure;
use stampede_bench::quote::{self, QuoteSetup};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "bench-test-secret-bench-test-secret-0123";

#[derive(Default)]
struct Fake {
    templates: AtomicU64,
    claims: AtomicU64,
    quotes: AtomicU64,
    /// Answer a quote without any discount (the sanity check must fail).
    stingy: AtomicBool,
    /// Refuse the lock of every coupon id divisible by 7 (not for probes).
    refuse_sevens: AtomicBool,
    /// order id → (coupon id, redeemed).
    orders: Mutex<HashMap<String, (String, bool)>>,
    /// Coupons locked by a non-probe order (each must be used once).
    spent: Mutex<HashSet<String>>,
    probe_attempts: Mutex<HashMap<String, u32>>,
    bad: AtomicU64,
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

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn authed_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"Bearer "))
        && headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes() == b"application/json")
}

async fn create_template(State(f): State<Arc<Fake>>, body: String) -> Response {
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if v["kind"].as_str().is_none() || v["stock_total"].as_u64().is_none() {
        f.bad.fetch_add(1, Ordering::Relaxed);
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED");
    }
    let n = f.templates.fetch_add(1, Ordering::Relaxed) + 1;
    json(StatusCode::CREATED, format!(r#"{{"id":"{}"}}"#, 9000 + n))
}

async fn claim(State(f): State<Arc<Fake>>) -> Response {
    let n = f.claims.fetch_add(1, Ordering::Relaxed) + 1;
    json(
        StatusCode::CREATED,
        format!(r#"{{"coupon":{{"id":"{n}","status":"unused"}}}}"#),
    )
}

async fn quote_cart(State(f): State<Arc<Fake>>, headers: HeaderMap, body: String) -> Response {
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let lines = v["items"].as_array().map_or(0, Vec::len);
    if !authed_json(&headers) || lines != 5 {
        f.bad.fetch_add(1, Ordering::Relaxed);
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED");
    }
    f.quotes.fetch_add(1, Ordering::Relaxed);
    let discount = if f.stingy.load(Ordering::Relaxed) {
        0
    } else {
        500
    };
    let available: Vec<String> = (0..30)
        .map(|i| format!(r#"{{"coupon_id":"{i}","discount":100}}"#))
        .collect();
    let unavailable: Vec<String> = (30..50)
        .map(|i| format!(r#"{{"coupon_id":"{i}","reason_code":"OTHER_SHOP"}}"#))
        .collect();
    json(
        StatusCode::OK,
        format!(
            r#"{{"subtotal":10000,"available":[{}],"unavailable":[{}],"best":{{"coupon_ids":{},"discount":{discount},"payable":{}}}}}"#,
            available.join(","),
            unavailable.join(","),
            if discount > 0 { r#"["1","2"]"# } else { "[]" },
            10000 - discount
        ),
    )
}

async fn order_action(
    State(f): State<Arc<Fake>>,
    Path((order, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !authed_json(&headers) {
        f.bad.fetch_add(1, Ordering::Relaxed);
        return problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE");
    }
    let probe = order.contains("-probe-");
    let mut orders = f.orders.lock().unwrap_or_else(|e| e.into_inner());
    match action.as_str() {
        "lock" => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let coupon = v["coupon_ids"][0].as_str().unwrap_or_default().to_owned();
            if coupon.is_empty() || v["items"].as_array().is_none() {
                f.bad.fetch_add(1, Ordering::Relaxed);
                return problem(StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED");
            }
            if probe {
                // The first attempt finds the claim not yet persisted.
                let mut attempts = f.probe_attempts.lock().unwrap_or_else(|e| e.into_inner());
                let n = attempts.entry(order.clone()).or_default();
                *n += 1;
                if *n == 1 {
                    return problem(StatusCode::CONFLICT, "COUPON_NOT_USABLE");
                }
            } else {
                if f.refuse_sevens.load(Ordering::Relaxed)
                    && coupon.parse::<u64>().unwrap_or(1) % 7 == 0
                {
                    return problem(StatusCode::CONFLICT, "COUPON_NOT_USABLE");
                }
                let mut spent = f.spent.lock().unwrap_or_else(|e| e.into_inner());
                if !spent.insert(coupon.clone()) {
                    f.bad.fetch_add(1, Ordering::Relaxed);
                    return problem(StatusCode::CONFLICT, "COUPON_NOT_USABLE");
                }
            }
            if orders.insert(order, (coupon, false)).is_some() {
                f.bad.fetch_add(1, Ordering::Relaxed);
            }
            json(StatusCode::OK, r#"{"status":"locked"}"#.into())
        }
        "redeem" | "release" => match orders.get_mut(&order) {
            Some((_, done)) if !*done && body == "{}" => {
                *done = true;
                json(StatusCode::OK, format!(r#"{{"status":"{action}d"}}"#))
            }
            _ => {
                f.bad.fetch_add(1, Ordering::Relaxed);
                problem(StatusCode::NOT_FOUND, "NOT_FOUND")
            }
        },
        _ => problem(StatusCode::NOT_FOUND, "NOT_FOUND"),
    }
}

async fn spawn_fake() -> anyhow::Result<(Target, Arc<Fake>)> {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/api/v1/merchant/templates", post(create_template))
        .route("/api/v1/templates/{id}/claim", post(claim))
        .route("/api/v1/checkout/quote", post(quote_cart))
        .route(
            "/api/v1/orders/{order}/coupons/{action}",
            post(order_action),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((Target::resolve(&format!("http://{addr}")).await?, fake))
}

fn opts(warmup_ms: u64, duration_ms: u64) -> LoadOptions {
    LoadOptions {
        connections: 3,
        duration: Duration::from_millis(duration_ms),
        warmup: Duration::from_millis(warmup_ms),
        rate: None,
        timeout: Duration::from_secs(5),
        from_send: false,
        watch: Vec::new(),
    }
}

#[tokio::test]
async fn quote_setup_claims_fifty_each_and_quotes() -> anyhow::Result<()> {
    let (target, fake) = spawn_fake().await?;
    let cfg = QuoteSetup {
        users: 4,
        first_user: 1,
        carts: 3,
        in_flight: 5,
    };
    let work = quote::setup(&target, SECRET.as_bytes(), &cfg).await?;
    assert_eq!(fake.templates.load(Ordering::Relaxed), 50);
    assert_eq!(fake.claims.load(Ordering::Relaxed), 200);
    assert_eq!(
        fake.quotes.load(Ordering::Relaxed),
        3,
        "one sanity quote per cart"
    );
    assert_eq!((work.users(), work.carts().len()), (4, 3));

    let r = measure("quote", &target, Arc::new(work), &opts(100, 500), 1, None).await?;
    assert!(r.successes > 0, "{r:?}");
    assert_eq!(r.errors, 0, "{r:?}");
    assert_eq!(r.requests_per_op, 1);
    assert!(!r.exhausted);
    assert_eq!(fake.bad.load(Ordering::Relaxed), 0);
    Ok(())
}

#[tokio::test]
async fn quote_setup_fails_loudly_without_a_discount() -> anyhow::Result<()> {
    let (target, fake) = spawn_fake().await?;
    fake.stingy.store(true, Ordering::Relaxed);
    let cfg = QuoteSetup {
        users: 1,
        first_user: 1,
        carts: 1,
        in_flight: 2,
    };
    let err = quote::setup(&target, SECRET.as_bytes(), &cfg)
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(err.contains("takes nothing off"), "{err}");
    Ok(())
}

#[tokio::test]
async fn lock_redeem_spends_every_coupon_once_then_stops() -> anyhow::Result<()> {
    let (target, fake) = spawn_fake().await?;
    let cfg = LockRedeemSetup {
        users: 4,
        first_user: 1,
        coupons_per_user: 5,
        in_flight: 3,
    };
    let work = lock_redeem::setup(&target, SECRET.as_bytes(), &cfg).await?;
    assert_eq!(work.capacity(), 20);
    assert_eq!(fake.claims.load(Ordering::Relaxed), 20);
    let work = Arc::new(work);

    // No warmup, a window far longer than 20 pairs take: the run ends early.
    let r = measure(
        "lock-redeem",
        &target,
        work.clone(),
        &opts(0, 5_000),
        1,
        None,
    )
    .await?;
    assert!(r.exhausted, "{r:?}");
    assert!(r.shape.duration_s < 4.0, "{r:?}");
    assert_eq!(r.successes, 20, "{r:?}");
    assert_eq!(r.errors, 0, "{r:?}");
    assert_eq!(r.requests_per_op, 2);
    assert_eq!(r.status.get("200"), Some(&20));
    assert_eq!(work.used(), 20);
    assert_eq!(fake.bad.load(Ordering::Relaxed), 0);
    let orders = fake.orders.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(orders.len(), 24, "20 pairs and 4 probes");
    assert!(orders.values().all(|(_, done)| *done));
    drop(orders);
    let table = r.to_table();
    assert!(table.contains("ran out of work"), "{table}");
    assert!(table.contains("chain of 2 HTTP requests"), "{table}");
    Ok(())
}

#[tokio::test]
async fn a_failed_lock_is_counted_under_its_step() -> anyhow::Result<()> {
    let (target, fake) = spawn_fake().await?;
    let cfg = LockRedeemSetup {
        users: 3,
        first_user: 1,
        coupons_per_user: 7,
        in_flight: 2,
    };
    let work = lock_redeem::setup(&target, SECRET.as_bytes(), &cfg).await?;
    fake.refuse_sevens.store(true, Ordering::Relaxed);
    let r = measure(
        "lock-redeem",
        &target,
        Arc::new(work),
        &opts(0, 5_000),
        1,
        None,
    )
    .await?;
    // Coupon ids are 1..=21: 7, 14 and 21 are refused.
    assert_eq!(r.requests, 21, "{r:?}");
    assert_eq!(r.errors, 3, "{r:?}");
    assert_eq!(r.codes.get("lock COUPON_NOT_USABLE"), Some(&3), "{r:?}");
    assert_eq!(fake.bad.load(Ordering::Relaxed), 0);
    Ok(())
}

#[tokio::test]
async fn running_out_during_the_warmup_is_an_error() -> anyhow::Result<()> {
    let (target, _fake) = spawn_fake().await?;
    let cfg = LockRedeemSetup {
        users: 1,
        first_user: 1,
        coupons_per_user: 2,
        in_flight: 1,
    };
    let work = lock_redeem::setup(&target, SECRET.as_bytes(), &cfg).await?;
    let err = measure(
        "lock-redeem",
        &target,
        Arc::new(work),
        &opts(1_000, 500),
        1,
        None,
    )
    .await
    .err()
    .map(|e| format!("{e:#}"))
    .unwrap_or_default();
    assert!(err.contains("ran out during the warmup"), "{err}");
    Ok(())
}
