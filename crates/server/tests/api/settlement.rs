//! Settlement over HTTP: the quote, the order lifecycle (lock, redeem, release, refund, get),
//! every error, idempotent repeats, lock expiry, and races on one coupon.

use crate::helpers::*;
use jiff::SignedDuration;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stampede_domain::auth::Role;

const USER: u64 = 501;

fn service(app: &TestApp) -> String {
    app.token(
        Role::Service,
        "orders",
        None,
        SignedDuration::from_hours(24 * 3650),
    )
}

/// A template claimable now, with `fields` overriding the defaults.
async fn template_with(app: &TestApp, token: &str, fields: Value) -> String {
    let mut body = app.template_body("settle");
    body["claim_start"] = json!((app.now() - SignedDuration::from_mins(1)).to_string());
    body["stock_total"] = json!(10_000);
    body["per_user_limit"] = json!(5);
    if let (Some(b), Some(f)) = (body.as_object_mut(), fields.as_object()) {
        for (k, v) in f {
            if v.is_null() {
                b.remove(k);
            } else {
                b.insert(k.clone(), v.clone());
            }
        }
    }
    id_of(&app.create(token, &body).await)
}

async fn claim(app: &TestApp, user: u64, t: &str) -> String {
    let (s, v) = read(
        app.post(
            &format!("/api/v1/templates/{t}/claim"),
            &app.user_n(user),
            &json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["coupon"]["id"].as_str().unwrap_or_default().to_owned()
}

/// Shop 7: 5.00 off 30.00 (threshold); shop 8: 2.00 off (fixed); platform: 10 % capped at 3.00.
struct Fixture {
    shop7: String,
    shop8: String,
    platform: String,
    c7: String,
    c8: String,
    cp: String,
}

async fn fixture(app: &TestApp) -> Fixture {
    let shop7 = template_with(app, &app.merchant(7), json!({})).await;
    let shop8 = template_with(
        app,
        &app.merchant(8),
        json!({"kind": "fixed", "amount_off": 200, "threshold": null}),
    )
    .await;
    let platform = template_with(
        app,
        &app.admin(),
        json!({"source": "platform", "kind": "percent", "percent_off": 10, "max_off": 300,
               "amount_off": null, "threshold": null}),
    )
    .await;
    let c7 = claim(app, USER, &shop7).await;
    let c8 = claim(app, USER, &shop8).await;
    let cp = claim(app, USER, &platform).await;
    // Claims are durable at 201; distributed mode persists them in the background.
    app.drain().await;
    Fixture {
        shop7,
        shop8,
        platform,
        c7,
        c8,
        cp,
    }
}

fn cart() -> Value {
    json!([
        {"goods_id": "1", "shop_id": "7", "unit_price": 2000, "quantity": 2},
        {"goods_id": "2", "shop_id": "8", "unit_price": 500, "quantity": 1}
    ])
}

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    read(app.post(path, token, &body).await).await
}

#[tokio::test]
async fn a_quote_lists_every_coupon_and_the_best_combination() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    // Another shop-7 coupon of a goods-scoped template that the cart misses.
    let goods = template_with(
        &app,
        &app.merchant(7),
        json!({"scope": "goods", "goods_ids": ["99"], "kind": "fixed", "amount_off": 100, "threshold": null}),
    )
    .await;
    let cg = claim(&app, USER, &goods).await;
    app.drain().await;
    let (s, q) = post(
        &app,
        "/api/v1/checkout/quote",
        &app.user_n(USER),
        json!({"items": cart()}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{q}");
    assert_eq!(q["subtotal"], 4_500);
    let avail: Vec<(String, i64)> = q["available"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["coupon_id"].as_str().unwrap_or("").to_owned(),
                        c["discount"].as_i64().unwrap_or(-1),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    // Largest first: 5.00 (shop 7), 4.50 → capped 3.00 (platform), 2.00 (shop 8).
    assert_eq!(
        avail,
        vec![
            (f.c7.clone(), 500),
            (f.cp.clone(), 300),
            (f.c8.clone(), 200)
        ],
        "{q}"
    );
    let unavailable = q["unavailable"].as_array().cloned().unwrap_or_default();
    assert_eq!(unavailable.len(), 1, "{q}");
    assert_eq!(unavailable[0]["coupon_id"], cg.as_str());
    assert_eq!(unavailable[0]["reason_code"], "NO_ELIGIBLE_GOODS");
    assert!(
        unavailable[0]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    // Best: both shop coupons (7.00) + platform 10 % of what is left (45.00 − 7.00 = 38.00
    // → 3.80, capped 3.00) = 10.00.
    assert_eq!(q["best"]["discount"], 1_000, "{q}");
    assert_eq!(q["best"]["payable"], 3_500);
    let mut ids: Vec<String> = q["best"]["coupon_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    let mut want = vec![f.c7.clone(), f.c8.clone(), f.cp.clone()];
    want.sort();
    assert_eq!(ids, want);
    // A small cart: shop 7's threshold is missed by 25.00.
    let small = json!([{"goods_id": "1", "shop_id": "7", "unit_price": 500, "quantity": 1}]);
    let (_, q) = post(
        &app,
        "/api/v1/checkout/quote",
        &app.user_n(USER),
        json!({"items": small}),
    )
    .await;
    let below = q["unavailable"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["coupon_id"] == f.c7.as_str()).cloned())
        .unwrap_or(Value::Null);
    assert_eq!(below["reason_code"], "BELOW_THRESHOLD", "{q}");
    assert_eq!(below["missing"], 2_500, "{q}");
    let other = q["unavailable"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["coupon_id"] == f.c8.as_str()).cloned())
        .unwrap_or(Value::Null);
    assert_eq!(other["reason_code"], "OTHER_SHOP", "{q}");
    // The service quotes for a user; identical input, identical answer.
    let (s, q1) = post(
        &app,
        "/api/v1/checkout/quote",
        &service(&app),
        json!({"user_id": USER.to_string(), "items": cart()}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, q2) = post(
        &app,
        "/api/v1/checkout/quote",
        &service(&app),
        json!({"user_id": USER.to_string(), "items": cart()}),
    )
    .await;
    assert_eq!(q1, q2);
    let _ = (f.shop7, f.shop8, f.platform);
}

#[tokio::test]
async fn quote_errors() {
    let app = spawn_app().await;
    let u = app.user_n(USER);
    let r = app
        .post("/api/v1/checkout/quote", &u, &json!({"items": []}))
        .await;
    let v = expect_problem(r, 422, "VALIDATION_FAILED").await;
    assert_eq!(error_fields(&v), vec!["items"]);
    let bad = json!({"items": [
        {"goods_id": 1, "shop_id": "7", "unit_price": -1, "quantity": 0},
        {"goods_id": "2", "shop_id": "0", "unit_price": 100, "quantity": 1, "colour": "red"}
    ], "extra": 1});
    let v = expect_problem(
        app.post("/api/v1/checkout/quote", &u, &bad).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let mut fields = error_fields(&v);
    fields.sort();
    for want in [
        "extra",
        "items[0].goods_id",
        "items[0].quantity",
        "items[0].unit_price",
        "items[1].colour",
        "items[1].shop_id",
    ] {
        assert!(
            fields.iter().any(|f| f == want),
            "{want} missing in {fields:?}"
        );
    }
    let body = json!({"user_id": "777", "items": cart()});
    expect_problem(
        app.post("/api/v1/checkout/quote", &u, &body).await,
        403,
        "FORBIDDEN",
    )
    .await;
    let body = json!({"items": cart()});
    let v = expect_problem(
        app.post("/api/v1/checkout/quote", &service(&app), &body)
            .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&v), vec!["user_id"]);
    expect_problem(
        app.post("/api/v1/checkout/quote", &app.merchant(7), &body)
            .await,
        403,
        "FORBIDDEN",
    )
    .await;
    let r = app
        .client
        .post(app.url("/api/v1/checkout/quote"))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    expect_problem(r, 401, "UNAUTHENTICATED").await;
}

#[tokio::test]
async fn lock_redeem_refund_and_every_repeat_is_idempotent() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let u = app.user_n(USER);
    // Quote first, so the node caches the user's coupons: the lock must invalidate them.
    let (_, q) = post(&app, "/api/v1/checkout/quote", &u, json!({"items": cart()})).await;
    assert_eq!(q["available"].as_array().map_or(0, Vec::len), 3, "{q}");
    let lock =
        json!({"coupon_ids": [f.c7, f.c8, f.cp], "items": cart(), "expected_discount": 1000});
    let (s, l) = post(&app, "/api/v1/orders/ord-1/coupons/lock", &u, lock.clone()).await;
    assert_eq!(s, StatusCode::OK, "{l}");
    assert_eq!(l["status"], "locked");
    assert_eq!(l["discount"], 1_000);
    assert_eq!(l["payable"], 3_500);
    assert!(l["lock_expires_at"].is_string());
    // Locked coupons leave the usable set.
    let (_, q) = post(&app, "/api/v1/checkout/quote", &u, json!({"items": cart()})).await;
    assert_eq!(q["available"].as_array().map_or(9, Vec::len), 0, "{q}");
    let (_, mine) = read(app.get(&format!("/api/v1/me/coupons/{}", f.c7), &u).await).await;
    assert_eq!(mine["status"], "locked", "{mine}");
    assert_eq!(mine["locked_order_id"], "ord-1");
    // The same lock again: the same answer, nothing more.
    let (s, again) = post(&app, "/api/v1/orders/ord-1/coupons/lock", &u, lock.clone()).await;
    assert_eq!((s, &again), (StatusCode::OK, &l));
    // The same order id with other coupons: conflict.
    let (s, v) = post(
        &app,
        "/api/v1/orders/ord-1/coupons/lock",
        &u,
        json!({"coupon_ids": [f.c7], "items": cart()}),
    )
    .await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::CONFLICT, json!("CONFLICT"))
    );
    // Redeem (twice), refund one, then the rest (twice).
    let (s, r) = post(&app, "/api/v1/orders/ord-1/coupons/redeem", &u, json!({})).await;
    assert_eq!(
        (s, r["status"].clone()),
        (StatusCode::OK, json!("redeemed")),
        "{r}"
    );
    let (_, r2) = post(&app, "/api/v1/orders/ord-1/coupons/redeem", &u, json!({})).await;
    assert_eq!(r, r2);
    let (_, mine) = read(app.get(&format!("/api/v1/me/coupons/{}", f.c8), &u).await).await;
    assert_eq!(mine["status"], "used");
    assert!(mine["used_at"].is_string());
    // The service acts for the user (no user_id: the order's user).
    let (s, p) = post(
        &app,
        "/api/v1/orders/ord-1/coupons/refund",
        &service(&app),
        json!({"coupon_ids": [f.c8]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["status"], "redeemed", "partly refunded: {p}");
    let line = |s: &Value, id: &str| {
        s["coupons"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["coupon_id"] == id).cloned())
            .unwrap_or(Value::Null)
    };
    assert_eq!(line(&p, &f.c8)["status"], "refunded");
    assert_eq!(line(&p, &f.c7)["status"], "redeemed");
    let (_, mine) = read(app.get(&format!("/api/v1/me/coupons/{}", f.c8), &u).await).await;
    assert_eq!(
        mine["status"], "unused",
        "refunded coupons are usable again: {mine}"
    );
    let (_, q) = post(&app, "/api/v1/checkout/quote", &u, json!({"items": cart()})).await;
    let avail: Vec<&str> = q["available"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["coupon_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        avail,
        vec![f.c8.as_str()],
        "the refunded coupon is back in quotes: {q}"
    );
    let (s, all) = post(&app, "/api/v1/orders/ord-1/coupons/refund", &u, json!({})).await;
    assert_eq!(
        (s, all["status"].clone()),
        (StatusCode::OK, json!("refunded")),
        "{all}"
    );
    let (_, all2) = post(&app, "/api/v1/orders/ord-1/coupons/refund", &u, json!({})).await;
    assert_eq!(all, all2);
    let (s, got) = read(app.get("/api/v1/orders/ord-1/coupons", &u).await).await;
    assert_eq!((s, &got), (StatusCode::OK, &all));
    // Every transition is in the outbox once.
    for (kind, n) in [
        ("coupon.locked", 3),
        ("coupon.redeemed", 3),
        ("coupon.refunded", 3),
    ] {
        let ev = app
            .coupons
            .outbox_events(kind, 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ev.len(), n, "{kind}");
        crate::event_schemas::assert_documented(&ev);
    }
    // Refunded coupons can be locked by a new order.
    let (s, _) = post(
        &app,
        "/api/v1/orders/ord-2/coupons/lock",
        &u,
        json!({"coupon_ids": [f.c8], "items": cart()}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn lifecycle_errors() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let u = app.user_n(USER);
    let lock = |ids: Value| json!({"coupon_ids": ids, "items": cart()});
    // Another user's coupon, an unknown one.
    let (s, v) = post(
        &app,
        "/api/v1/orders/o-x/coupons/lock",
        &app.user_n(999),
        lock(json!([f.c7])),
    )
    .await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::CONFLICT, json!("COUPON_NOT_USABLE")),
        "{v}"
    );
    // Expected discount differs.
    let (s, v) = post(
        &app,
        "/api/v1/orders/o-1/coupons/lock",
        &u,
        json!({"coupon_ids": [f.c7], "items": cart(), "expected_discount": 499}),
    )
    .await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::CONFLICT, json!("CONFLICT")),
        "{v}"
    );
    // Not usable for this cart (threshold), and bad requests.
    let small = json!([{"goods_id": "1", "shop_id": "7", "unit_price": 500, "quantity": 1}]);
    let (s, v) = post(
        &app,
        "/api/v1/orders/o-2/coupons/lock",
        &u,
        json!({"coupon_ids": [f.c7], "items": small}),
    )
    .await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::CONFLICT, json!("COUPON_NOT_USABLE")),
        "{v}"
    );
    let (s, v) = post(
        &app,
        "/api/v1/orders/bad%20id/coupons/lock",
        &u,
        lock(json!([f.c7])),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = post(
        &app,
        "/api/v1/orders/o-3/coupons/lock",
        &u,
        lock(json!([f.c7, f.c7])),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = post(
        &app,
        "/api/v1/orders/o-3/coupons/lock",
        &u,
        json!({"items": cart()}),
    )
    .await;
    assert_eq!(
        (s, error_fields(&v)),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["coupon_ids".to_owned()]
        )
    );
    expect_problem(
        app.post(
            "/api/v1/orders/o-3/coupons/lock",
            &app.merchant(7),
            &lock(json!([f.c7])),
        )
        .await,
        403,
        "FORBIDDEN",
    )
    .await;
    // Unknown orders.
    expect_problem(
        app.post("/api/v1/orders/nope/coupons/redeem", &u, &json!({}))
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    expect_problem(
        app.get("/api/v1/orders/nope/coupons", &u).await,
        404,
        "NOT_FOUND",
    )
    .await;
    // Refund before redeem; release after redeem; redeem after release.
    let (s, _) = post(
        &app,
        "/api/v1/orders/o-4/coupons/lock",
        &u,
        lock(json!([f.c7])),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    expect_problem(
        app.post("/api/v1/orders/o-4/coupons/refund", &u, &json!({}))
            .await,
        409,
        "CONFLICT",
    )
    .await;
    // The same coupon cannot be locked by another order meanwhile.
    let (s, v) = post(
        &app,
        "/api/v1/orders/o-5/coupons/lock",
        &u,
        lock(json!([f.c7])),
    )
    .await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::CONFLICT, json!("COUPON_NOT_USABLE")),
        "{v}"
    );
    assert!(v["detail"].as_str().unwrap_or("").contains("o-4"), "{v}");
    let (s, _) = post(&app, "/api/v1/orders/o-4/coupons/redeem", &u, json!({})).await;
    assert_eq!(s, StatusCode::OK);
    expect_problem(
        app.post("/api/v1/orders/o-4/coupons/release", &u, &json!({}))
            .await,
        409,
        "CONFLICT",
    )
    .await;
    let v = expect_problem(
        app.post(
            "/api/v1/orders/o-4/coupons/refund",
            &u,
            &json!({"coupon_ids": [f.c8]}),
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&v), vec!["coupon_ids"]);
    let (s, _) = post(
        &app,
        "/api/v1/orders/o-6/coupons/lock",
        &u,
        lock(json!([f.c8])),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, r) = post(&app, "/api/v1/orders/o-6/coupons/release", &u, json!({})).await;
    assert_eq!(
        (s, r["status"].clone()),
        (StatusCode::OK, json!("released"))
    );
    expect_problem(
        app.post("/api/v1/orders/o-6/coupons/redeem", &u, &json!({}))
            .await,
        409,
        "CONFLICT",
    )
    .await;
    // Another user cannot see or move the order.
    expect_problem(
        app.get("/api/v1/orders/o-6/coupons", &app.user_n(999))
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    expect_problem(
        app.post(
            "/api/v1/orders/o-6/coupons/release",
            &app.user_n(999),
            &json!({}),
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;
    // An order id another user already used.
    let other = claim(&app, 999, &f.shop7).await;
    app.drain().await;
    let (s, v) = post(
        &app,
        "/api/v1/orders/o-6/coupons/lock",
        &app.user_n(999),
        lock(json!([other])),
    )
    .await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::CONFLICT, json!("CONFLICT")),
        "{v}"
    );
}

#[tokio::test]
async fn an_expired_lock_is_released_by_the_sweep_and_cannot_be_redeemed() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let u = app.user_n(USER);
    let (s, _) = post(
        &app,
        "/api/v1/orders/e-1/coupons/lock",
        &u,
        json!({"coupon_ids": [f.c7], "items": cart()}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = post(
        &app,
        "/api/v1/orders/e-2/coupons/lock",
        &u,
        json!({"coupon_ids": [f.c8], "items": cart()}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    app.advance(SignedDuration::from_mins(14));
    app.drain().await;
    let (_, v) = read(app.get("/api/v1/orders/e-1/coupons", &u).await).await;
    assert_eq!(v["status"], "locked", "not yet: {v}");
    app.advance(SignedDuration::from_mins(2));
    // Redeeming after the expiry is refused and releases at once.
    let v = expect_problem(
        app.post("/api/v1/orders/e-2/coupons/redeem", &u, &json!({}))
            .await,
        409,
        "CONFLICT",
    )
    .await;
    assert!(
        v["detail"].as_str().unwrap_or("").contains("expired"),
        "{v}"
    );
    app.drain().await;
    for (order, coupon) in [("e-1", &f.c7), ("e-2", &f.c8)] {
        let (_, v) = read(
            app.get(&format!("/api/v1/orders/{order}/coupons"), &u)
                .await,
        )
        .await;
        assert_eq!(v["status"], "released", "{v}");
        let (_, c) = read(app.get(&format!("/api/v1/me/coupons/{coupon}"), &u).await).await;
        assert_eq!(c["status"], "unused", "{c}");
    }
    let ev = app
        .coupons
        .outbox_events("coupon.released", 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ev.len(), 2);
    crate::event_schemas::assert_documented(&ev);
}

#[tokio::test]
async fn racing_orders_lock_a_coupon_once_and_repeats_have_one_effect() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    // 20 orders race for one coupon: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = app.client.clone();
        let url = app.url(&format!("/api/v1/orders/race-{i}/coupons/lock"));
        let token = app.user_n(USER);
        let body = json!({"coupon_ids": [f.c7], "items": cart()});
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap_or(0));
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| *c == 200 || *c == 409), "{codes:?}");
    // 1,000 identical lock requests for one order: one effect.
    let mut tasks = Vec::new();
    for _ in 0..1_000 {
        let client = app.client.clone();
        let url = app.url("/api/v1/orders/same/coupons/lock");
        let token = app.user_n(USER);
        let body = json!({"coupon_ids": [f.c8], "items": cart()});
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap_or(0), 200);
    }
    let ev = app
        .coupons
        .outbox_events("coupon.locked", 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ev.len(), 2, "one per winning lock");
    // Redeem racing release: one consistent final state.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let client = app.client.clone();
        let what = if i % 2 == 0 { "redeem" } else { "release" };
        let url = app.url(&format!("/api/v1/orders/same/coupons/{what}"));
        let token = app.user_n(USER);
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({}))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    for t in tasks {
        let c = t.await.unwrap_or(0);
        assert!(c == 200 || c == 409, "{c}");
    }
    let u = app.user_n(USER);
    let (_, order) = read(app.get("/api/v1/orders/same/coupons", &u).await).await;
    let (_, coupon) = read(app.get(&format!("/api/v1/me/coupons/{}", f.c8), &u).await).await;
    match order["status"].as_str() {
        Some("redeemed") => assert_eq!(coupon["status"], "used"),
        Some("released") => assert_eq!(coupon["status"], "unused"),
        other => panic!("unexpected final state {other:?}"),
    }
}

#[tokio::test]
async fn lock_expiry_racing_redeem_ends_in_one_consistent_state() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let u = app.user_n(USER);
    for (i, coupon) in [&f.c7, &f.c8, &f.cp].into_iter().enumerate() {
        let order = format!("x-{i}");
        let (s, _) = post(
            &app,
            &format!("/api/v1/orders/{order}/coupons/lock"),
            &u,
            json!({"coupon_ids": [coupon], "items": cart()}),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        // Just before the expiry the redeem wins; at it, the sweep and the redeem race.
        let step = if i == 0 { 14 } else { 15 };
        app.advance(SignedDuration::from_mins(step));
        let client = app.client.clone();
        let url = app.url(&format!("/api/v1/orders/{order}/coupons/redeem"));
        let token = u.clone();
        let redeem = tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({}))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        });
        app.drain().await;
        let code = redeem.await.unwrap_or(0);
        let (_, o) = read(
            app.get(&format!("/api/v1/orders/{order}/coupons"), &u)
                .await,
        )
        .await;
        let (_, c) = read(app.get(&format!("/api/v1/me/coupons/{coupon}"), &u).await).await;
        match (code, o["status"].as_str()) {
            (200, Some("redeemed")) => assert_eq!(c["status"], "used", "{o}"),
            (409, Some("released")) => assert_eq!(c["status"], "unused", "{o}"),
            other => panic!("inconsistent: {other:?} {o} {c}"),
        }
        if i == 0 {
            assert_eq!(code, 200, "before the expiry the redeem wins");
        } else {
            assert_eq!(code, 409, "at the expiry the lock is gone");
        }
        app.advance(SignedDuration::from_mins(-step));
    }
}

/// Coupon ids a quote lists, usable or not (nodes' manual clocks differ, so a coupon claimed
/// on another node may not be valid yet by this node's clock).
async fn quotable(app: &TestApp, user: u64) -> Vec<String> {
    let (s, q) = post(
        app,
        "/api/v1/checkout/quote",
        &app.user_n(user),
        json!({"items": cart()}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{q}");
    ["available", "unavailable"]
        .iter()
        .filter_map(|k| q[*k].as_array())
        .flatten()
        .filter_map(|c| c["coupon_id"].as_str().map(str::to_owned))
        .collect()
}

/// Distributed mode: each node caches users' coupons for quotes; a claim or a lock on
/// another node reaches that cache through the user broadcast, long before its TTL (an hour
/// here, so nothing else could explain a fresh answer).
#[tokio::test]
async fn quotes_see_claims_and_locks_made_on_another_node_at_once() {
    if backend() == TestBackend::Sqlite {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (mut settings, urls) = test_settings(dir.path(), true);
    settings.settlement.quote_cache_ttl = Some(std::time::Duration::from_secs(3_600));
    let a = spawn_app_from(dir, settings, urls).await;
    let b = spawn_sibling(&a).await;
    let f = fixture(&a).await;
    let mut first = quotable(&a, USER).await;
    first.sort();
    let mut expected = vec![f.c7.clone(), f.c8.clone(), f.cp.clone()];
    expected.sort();
    assert_eq!(
        first, expected,
        "node A now caches the user's three coupons"
    );

    // Node B learns of the template through the template broadcast; then claims there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let claimed = loop {
        let (s, v) = read(
            b.post(
                &format!("/api/v1/templates/{}/claim", f.shop8),
                &b.user_n(USER),
                &json!({}),
            )
            .await,
        )
        .await;
        if s == StatusCode::CREATED {
            break v["coupon"]["id"].as_str().unwrap_or_default().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "claim on node B: {s} {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let seen = wait_for(&a, |ids| ids.contains(&claimed)).await;
    assert!(seen, "node A's quote shows the claim made on node B");

    // A lock on node B takes the coupon out of node A's quotes.
    let lock = json!({"coupon_ids": [f.c7], "items": cart()});
    let (s, l) = post(
        &b,
        "/api/v1/orders/ord-x/coupons/lock",
        &b.user_n(USER),
        lock,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{l}");
    let gone = wait_for(&a, |ids| !ids.contains(&f.c7)).await;
    assert!(gone, "node A's quote drops the coupon locked on node B");
}

/// Polls node `app`'s quote for [`USER`] for up to 5 s until `done` holds.
async fn wait_for(app: &TestApp, done: impl Fn(&[String]) -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if done(&quotable(app, USER).await) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}
