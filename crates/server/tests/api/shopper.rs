//! Shopper side: the template read path, claims, my coupons, and the claim race.

use crate::helpers::*;
use jiff::SignedDuration;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

const MERCHANT: &str = "/api/v1/merchant/templates";

fn claim_path(id: &str) -> String {
    format!("/api/v1/templates/{id}/claim")
}

/// A template whose claim window is open now (the clock is manual: start = now).
async fn open_template(app: &TestApp, stock: i64, limit: i64) -> Value {
    let mut body = app.template_body("Flash");
    body["claim_start"] = json!(app.now().to_string());
    body["stock_total"] = json!(stock);
    body["per_user_limit"] = json!(limit);
    app.create(&app.merchant(7), &body).await
}

async fn claim(app: &TestApp, id: &str, token: &str) -> (u16, Value) {
    let (s, v) = read(app.post(&claim_path(id), token, &json!({})).await).await;
    (s.as_u16(), v)
}

#[tokio::test]
async fn public_view_shows_live_stock_and_unknown_ids_cost_no_query() {
    let app = spawn_app().await;
    let t = open_template(&app, 10, 1).await;
    let id = id_of(&t);
    let (s, v) = read(
        app.get(&format!("/api/v1/templates/{id}"), &app.user_n(1))
            .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["remaining_stock"], 10);
    assert!(
        v.get("stock_total").is_none(),
        "the public view hides back-office fields: {v}"
    );
    assert_eq!(claim(&app, &id, &app.user_n(1)).await.0, 201);
    let (_, v) = read(
        app.get(&format!("/api/v1/templates/{id}"), &app.user_n(2))
            .await,
    )
    .await;
    assert_eq!(v["remaining_stock"], 9);

    let before = app.catalog.db_queries();
    for n in 0..200u64 {
        let r = app
            .get(
                &format!("/api/v1/templates/{}", 9_000_000_000 + n),
                &app.user_n(1),
            )
            .await;
        expect_problem(r, 404, "NOT_FOUND").await;
    }
    assert_eq!(
        app.catalog.db_queries() - before,
        0,
        "unknown ids must not reach the database"
    );
    expect_problem(
        app.get("/api/v1/templates/not-an-id", &app.user_n(1)).await,
        404,
        "NOT_FOUND",
    )
    .await;
}

#[tokio::test]
async fn concurrent_misses_on_one_id_make_one_query() {
    let app = spawn_app().await;
    let t = open_template(&app, 10, 1).await;
    let path = format!("/api/v1/templates/{}", id_of(&t));
    let token = app.user_n(1);
    let before = app.catalog.db_queries();
    let results = futures::future::join_all((0..1000).map(|_| app.get(&path, &token))).await;
    assert!(results.iter().all(|r| r.status() == 200));
    assert_eq!(
        app.catalog.db_queries() - before,
        1,
        "single-flight: 1,000 concurrent misses, 1 query"
    );
    // A change invalidates at once: the next read sees it.
    app.post(
        &format!("{MERCHANT}/{}/stock", id_of(&t)),
        &app.merchant(7),
        &json!({"add": 5}),
    )
    .await;
    let (_, v) = read(app.get(&path, &token).await).await;
    assert_eq!(v["remaining_stock"], 15);
}

#[tokio::test]
async fn claim_makes_a_coupon_that_follows_the_template() {
    let app = spawn_app().await;
    let t = open_template(&app, 10, 2).await;
    let id = id_of(&t);
    let (s, v) = claim(&app, &id, &app.user_n(5)).await;
    assert_eq!(s, 201, "{v}");
    let c = &v["coupon"];
    assert_eq!(c["template_id"], t["id"]);
    assert_eq!(c["user_id"], "5");
    assert_eq!(c["shop_id"], "7");
    assert_eq!(c["seq"], 1);
    assert_eq!(c["origin"], "claim");
    assert_eq!(c["status"], "unused");
    // Relative validity: 72 h from the claim.
    let from: jiff::Timestamp = c["valid_from"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let until: jiff::Timestamp = c["valid_until"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(until.duration_since(from), SignedDuration::from_hours(72));
    let (s, v) = claim(&app, &id, &app.user_n(5)).await;
    assert_eq!((s, v["coupon"]["seq"].clone()), (201, json!(2)));
    let v = expect_problem(
        app.post(&claim_path(&id), &app.user_n(5), &json!({})).await,
        409,
        "LIMIT_REACHED",
    )
    .await;
    assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

#[tokio::test]
async fn absolute_validity_is_the_templates() {
    let app = spawn_app().await;
    let mut body = app.template_body("Absolute");
    body["claim_start"] = json!(app.now().to_string());
    body.as_object_mut().map(|o| o.remove("validity_hours"));
    let from = app.now() + SignedDuration::from_hours(2);
    let until = from + SignedDuration::from_hours(48);
    body["valid_from"] = json!(from.to_string());
    body["valid_until"] = json!(until.to_string());
    let t = app.create(&app.merchant(7), &body).await;
    let (_, v) = claim(&app, &id_of(&t), &app.user_n(1)).await;
    assert_eq!(v["coupon"]["valid_from"], t["valid_from"]);
    assert_eq!(v["coupon"]["valid_until"], t["valid_until"]);
}

#[tokio::test]
async fn claim_refusals() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    // Sold out.
    let one = id_of(&open_template(&app, 1, 1).await);
    assert_eq!(claim(&app, &one, &app.user_n(1)).await.0, 201);
    expect_problem(
        app.post(&claim_path(&one), &app.user_n(2), &json!({}))
            .await,
        409,
        "SOLD_OUT",
    )
    .await;
    // Restocking reopens it.
    app.post(&format!("{MERCHANT}/{one}/stock"), &m, &json!({"add": 1}))
        .await;
    assert_eq!(claim(&app, &one, &app.user_n(2)).await.0, 201);
    // Terminated.
    let term = id_of(&open_template(&app, 10, 1).await);
    app.post(&format!("{MERCHANT}/{term}/terminate"), &m, &json!({}))
        .await;
    expect_problem(
        app.post(&claim_path(&term), &app.user_n(1), &json!({}))
            .await,
        409,
        "TEMPLATE_TERMINATED",
    )
    .await;
    // Unknown, wrong role, bad key, bad body.
    expect_problem(
        app.post(&claim_path("123"), &app.user_n(1), &json!({}))
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    expect_problem(
        app.post(&claim_path(&one), &m, &json!({})).await,
        403,
        "FORBIDDEN",
    )
    .await;
    let named = app.token(
        stampede_domain::auth::Role::User,
        "alice",
        None,
        SignedDuration::from_hours(1),
    );
    expect_problem(
        app.post(&claim_path(&one), &named, &json!({})).await,
        403,
        "FORBIDDEN",
    )
    .await;
    let v = expect_problem(
        app.post_with_key(
            &claim_path(&one),
            &app.user_n(9),
            &"k".repeat(300),
            &json!({}),
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&v), vec!["Idempotency-Key"]);
    let v = expect_problem(
        app.post(&claim_path(&one), &app.user_n(9), &json!({"qty": 2}))
            .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&v), vec!["qty"]);
}

#[tokio::test]
async fn claim_window_edges() {
    let app = spawn_app().await;
    let t = app.create_named(&app.merchant(7), "Later").await;
    let id = id_of(&t);
    let start: jiff::Timestamp = t["claim_start"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let end: jiff::Timestamp = t["claim_end"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    app.clock.set(start - SignedDuration::from_millis(1));
    expect_problem(
        app.post(&claim_path(&id), &app.user_n(1), &json!({})).await,
        409,
        "CLAIM_NOT_STARTED",
    )
    .await;
    app.clock.set(start);
    assert_eq!(claim(&app, &id, &app.user_n(1)).await.0, 201);
    app.clock.set(end - SignedDuration::from_millis(1));
    assert_eq!(claim(&app, &id, &app.user_n(2)).await.0, 201);
    app.clock.set(end);
    expect_problem(
        app.post(&claim_path(&id), &app.user_n(3), &json!({})).await,
        409,
        "CLAIM_ENDED",
    )
    .await;
}

#[tokio::test]
async fn idempotency_key_replays_the_same_coupon() {
    let app = spawn_app().await;
    let a = id_of(&open_template(&app, 5, 3).await);
    let b = id_of(&open_template(&app, 5, 3).await);
    let u = app.user_n(8);
    let (path_a, empty) = (claim_path(&a), json!({}));
    let results =
        futures::future::join_all((0..8).map(|_| app.post_with_key(&path_a, &u, "tap-1", &empty)))
            .await;
    let mut ids = HashSet::new();
    let mut created = 0;
    for r in results {
        let (s, v) = read(r).await;
        assert!(s == 201 || s == 200, "{s} {v}");
        created += usize::from(s == 201);
        ids.insert(v["coupon"]["id"].clone());
    }
    assert_eq!((created, ids.len()), (1, 1));
    let (_, t) = read(app.get(&format!("/api/v1/templates/{a}"), &u).await).await;
    assert_eq!(t["remaining_stock"], 4);
    // The same key on another template is another claim.
    let (s, _) = read(
        app.post_with_key(&claim_path(&b), &u, "tap-1", &json!({}))
            .await,
    )
    .await;
    assert_eq!(s, 201);
}

#[tokio::test]
async fn my_coupons_pages_filters_and_expiry() {
    let app = spawn_app().await;
    let u = app.user_n(77);
    let mut made = Vec::new();
    for _ in 0..5 {
        let id = id_of(&open_template(&app, 5, 1).await);
        let (s, v) = claim(&app, &id, &u).await;
        assert_eq!(s, 201);
        made.push(v["coupon"]["id"].as_str().unwrap_or_default().to_owned());
        app.advance(SignedDuration::from_mins(1));
    }
    // Visible at once, ordered by valid_until (each claim a minute later), 2 per page.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/api/v1/me/coupons?limit=2&cursor={c}"),
            None => "/api/v1/me/coupons?limit=2".to_owned(),
        };
        let (s, v) = read(app.get(&q, &u).await).await;
        assert_eq!(s, 200, "{v}");
        seen.extend(
            v["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|c| c["id"].as_str().unwrap_or_default().to_owned()),
        );
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, made);
    let (_, one) = read(
        app.get(&format!("/api/v1/me/coupons/{}", made[0]), &u)
            .await,
    )
    .await;
    assert_eq!(one["id"], made[0].as_str());
    expect_problem(
        app.get(&format!("/api/v1/me/coupons/{}", made[0]), &app.user_n(78))
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    let (_, other) = read(app.get("/api/v1/me/coupons", &app.user_n(78)).await).await;
    assert_eq!(other["items"], json!([]));

    // 72 h later every coupon is expired.
    app.advance(SignedDuration::from_hours(73));
    let (_, unused) = read(app.get("/api/v1/me/coupons?status=unused", &u).await).await;
    assert_eq!(unused["items"], json!([]));
    let (_, expired) = read(
        app.get("/api/v1/me/coupons?status=expired&limit=100", &u)
            .await,
    )
    .await;
    assert_eq!(expired["items"].as_array().map(Vec::len), Some(5));
    assert!(
        expired["items"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|c| c["status"] == "expired")
    );

    for (q, field) in [
        ("status=lost", "status"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("cursor=garbage!", "cursor"),
    ] {
        let v = expect_problem(
            app.get(&format!("/api/v1/me/coupons?{q}"), &u).await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
        assert_eq!(error_fields(&v), vec![field], "{q}");
    }
    expect_problem(
        app.get("/api/v1/me/coupons", &app.merchant(7)).await,
        403,
        "FORBIDDEN",
    )
    .await;
}

/// The flash-sale race: 20,000 claims from 5,000 users on stock 1,000, limit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flash_sale_race_issues_exactly_the_stock() {
    let app = Arc::new(spawn_app().await);
    let t = open_template(&app, 1_000, 2).await;
    let id = id_of(&t);
    let tokens: Arc<Vec<String>> = Arc::new((1..=5_000u64).map(|u| app.user_n(u)).collect());
    let path = Arc::new(claim_path(&id));
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::with_capacity(20_000);
    for i in 0..20_000usize {
        let (app, tokens, path, sem) = (app.clone(), tokens.clone(), path.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            let user = i % 5_000;
            let (s, v) = read(app.post(&path, &tokens[user], &json!({})).await).await;
            (user, s.as_u16(), v)
        }));
    }
    let mut per_user: HashMap<usize, u32> = HashMap::new();
    let mut coupon_ids = HashSet::new();
    let mut by_code: HashMap<String, usize> = HashMap::new();
    for task in tasks {
        let (user, s, v) = task.await.unwrap_or_else(|e| panic!("{e}"));
        match s {
            201 => {
                *per_user.entry(user).or_default() += 1;
                assert!(
                    coupon_ids.insert(v["coupon"]["id"].as_str().unwrap_or_default().to_owned()),
                    "duplicate coupon id"
                );
            }
            409 => {
                *by_code
                    .entry(v["code"].as_str().unwrap_or_default().to_owned())
                    .or_default() += 1
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(
        coupon_ids.len(),
        1_000,
        "exactly the stock is issued: {by_code:?}"
    );
    assert!(
        per_user.values().all(|n| *n <= 2),
        "a user got more than the limit"
    );
    assert!(
        by_code
            .keys()
            .all(|c| c == "SOLD_OUT" || c == "LIMIT_REACHED"),
        "{by_code:?}"
    );
    assert_eq!(by_code.values().sum::<usize>(), 19_000);

    // System of record: stock + issued = total, and the hot store agrees.
    app.drain().await;
    let (_, stored) = read(app.get(&format!("{MERCHANT}/{id}"), &app.merchant(7)).await).await;
    let tid = stampede_domain::ids::TemplateId::parse(&id).unwrap_or_else(|| panic!("id"));
    let state = app
        .coupons
        .claim_state(tid)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let issued = u32::try_from(state.user_seqs.len()).unwrap_or(u32::MAX);
    assert_eq!(issued, 1_000);
    assert_eq!(
        stored["stock"].as_i64().unwrap_or(-1) + i64::from(issued),
        1_000
    );
    let (_, public) = read(
        app.get(&format!("/api/v1/templates/{id}"), &app.user_n(1))
            .await,
    )
    .await;
    assert_eq!(public["remaining_stock"], stored["stock"]);
    let events = app
        .coupons
        .outbox_events("coupon.claimed", 5_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        events.len(),
        1_000,
        "one coupon.claimed event per coupon, in the outbox"
    );
    crate::event_schemas::assert_documented(&events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_during_a_race_stops_claims_at_once() {
    let app = Arc::new(spawn_app().await);
    let id = id_of(&open_template(&app, 100_000, 1).await);
    let path = Arc::new(claim_path(&id));
    let racer = {
        let (app, path) = (app.clone(), path.clone());
        tokio::spawn(async move {
            let mut after_terminate = Vec::new();
            for u in 1..=600u64 {
                let (s, v) = read(app.post(&path, &app.user_n(u), &json!({})).await).await;
                after_terminate.push((
                    s.as_u16(),
                    v["code"].as_str().unwrap_or_default().to_owned(),
                ));
            }
            after_terminate
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let (s, _) = read(
        app.post(
            &format!("{MERCHANT}/{id}/terminate"),
            &app.merchant(7),
            &json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200);
    // From here on, every claim is refused as terminated.
    for u in 10_001..10_050u64 {
        expect_problem(
            app.post(&path, &app.user_n(u), &json!({})).await,
            409,
            "TEMPLATE_TERMINATED",
        )
        .await;
    }
    let results = racer.await.unwrap_or_else(|e| panic!("{e}"));
    let first_refusal = results
        .iter()
        .position(|(s, _)| *s != 201)
        .unwrap_or(results.len());
    assert!(
        results[first_refusal..]
            .iter()
            .all(|(s, c)| *s == 409 && c == "TEMPLATE_TERMINATED"),
        "a claim succeeded after termination was visible"
    );
    let issued = first_refusal as i64;
    app.drain().await;
    let (_, stored) = read(app.get(&format!("{MERCHANT}/{id}"), &app.merchant(7)).await).await;
    assert_eq!(stored["stock"].as_i64().unwrap_or(-1), 100_000 - issued);
}

#[tokio::test]
async fn acknowledged_claims_survive_a_restart_and_limits_still_hold() {
    let app = spawn_app().await;
    let id = id_of(&open_template(&app, 3, 1).await);
    let mut coupons = Vec::new();
    for u in 1..=2u64 {
        let (s, v) = claim(&app, &id, &app.user_n(u)).await;
        assert_eq!(s, 201);
        coupons.push(v["coupon"]["id"].as_str().unwrap_or_default().to_owned());
    }
    app.stop();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let again = spawn_sibling(&app).await;
    for (u, c) in (1..=2u64).zip(&coupons) {
        let (s, v) = read(
            again
                .get(&format!("/api/v1/me/coupons/{c}"), &again.user_n(u))
                .await,
        )
        .await;
        assert_eq!(s, 200, "{v}");
        expect_problem(
            again
                .post(&claim_path(&id), &again.user_n(u), &json!({}))
                .await,
            409,
            "LIMIT_REACHED",
        )
        .await;
    }
    assert_eq!(claim(&again, &id, &again.user_n(3)).await.0, 201);
    expect_problem(
        again
            .post(&claim_path(&id), &again.user_n(4), &json!({}))
            .await,
        409,
        "SOLD_OUT",
    )
    .await;
}

/// The same race across three nodes sharing Redis and MariaDB (distributed mode only: the
/// embedded mode is one process by design, so there is nothing to share there).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_one_race() {
    if backend() == TestBackend::Sqlite {
        return;
    }
    let a = Arc::new(spawn_app().await);
    let b = Arc::new(spawn_sibling(&a).await);
    let c = Arc::new(spawn_sibling(&a).await);
    let t = open_template(&a, 1_000, 2).await;
    let id = id_of(&t);
    let nodes = [a.clone(), b.clone(), c.clone()];
    // Every node knows the template (creation is broadcast to the others' bloom filters).
    for n in &nodes {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while n
            .get(&format!("/api/v1/templates/{id}"), &n.user_n(1))
            .await
            .status()
            != 200
        {
            assert!(
                std::time::Instant::now() < deadline,
                "a node never learnt of the template"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let tokens: Arc<Vec<String>> = Arc::new((1..=5_000u64).map(|u| a.user_n(u)).collect());
    let path = Arc::new(claim_path(&id));
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::with_capacity(20_000);
    for i in 0..20_000usize {
        let (node, tokens, path, sem) = (
            nodes[i % 3].clone(),
            tokens.clone(),
            path.clone(),
            sem.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            let user = i % 5_000;
            let (s, v) = read(node.post(&path, &tokens[user], &json!({})).await).await;
            (user, s.as_u16(), v)
        }));
    }
    let mut per_user: HashMap<usize, u32> = HashMap::new();
    let mut coupon_ids = HashSet::new();
    for task in tasks {
        let (user, s, v) = task.await.unwrap_or_else(|e| panic!("{e}"));
        match s {
            201 => {
                *per_user.entry(user).or_default() += 1;
                assert!(
                    coupon_ids.insert(v["coupon"]["id"].as_str().unwrap_or_default().to_owned())
                );
            }
            409 => assert!(
                v["code"] == "SOLD_OUT" || v["code"] == "LIMIT_REACHED",
                "{v}"
            ),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(coupon_ids.len(), 1_000);
    assert!(per_user.values().all(|n| *n <= 2));
    // Every node's persister drains; the system of record then agrees with the hot store.
    for n in &nodes {
        n.drain().await;
    }
    let tid = stampede_domain::ids::TemplateId::parse(&id).unwrap_or_else(|| panic!("id"));
    let state = a
        .coupons
        .claim_state(tid)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state.user_seqs.len(), 1_000);
    let (_, stored) = read(a.get(&format!("{MERCHANT}/{id}"), &a.merchant(7)).await).await;
    assert_eq!(stored["stock"], 0);
    for n in &nodes {
        let (_, public) = read(
            n.get(&format!("/api/v1/templates/{id}"), &n.user_n(1))
                .await,
        )
        .await;
        assert_eq!(public["remaining_stock"], 0);
    }
}

#[tokio::test]
async fn a_user_claiming_too_fast_is_rate_limited_alone() {
    let app = spawn_app().await;
    let id = id_of(&open_template(&app, 1_000, 100).await);
    let burst = app.settings.engine.claim_burst_per_user as usize;
    let hammer = app.user_n(1);
    let mut limited = None;
    for _ in 0..burst + 5 {
        let r = app.post(&claim_path(&id), &hammer, &json!({})).await;
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status(), 201);
    }
    let r = limited.unwrap_or_else(|| panic!("no 429 after more than the burst"));
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(retry >= 1, "Retry-After must say when to come back");
    expect_problem(r, 429, "RATE_LIMITED").await;
    // Nobody else is affected.
    assert_eq!(claim(&app, &id, &app.user_n(2)).await.0, 201);
}

/// Distributed mode: a template one node has read is served to the others from the shared
/// (Redis) cache, without a database query; a change evicts it everywhere.
#[tokio::test]
async fn other_nodes_read_templates_from_the_shared_cache() {
    if backend() == TestBackend::Sqlite {
        return; // one process, no shared cache
    }
    let a = spawn_app().await;
    let b = spawn_sibling(&a).await;
    let id = id_of(&open_template(&a, 10, 1).await);
    let path = format!("/api/v1/templates/{id}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let before_a = a.catalog.db_queries();
    assert_eq!(a.get(&path, &a.user_n(1)).await.status(), 200);
    assert_eq!(
        a.catalog.db_queries() - before_a,
        1,
        "the first read anywhere goes to the database"
    );
    let before_b = b.catalog.db_queries();
    loop {
        // Wait until b's bloom filter heard of the template (broadcast on creation).
        if b.get(&path, &b.user_n(1)).await.status() == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        b.catalog.db_queries() - before_b,
        0,
        "the second node reads from the shared cache"
    );
    // A restock on node a is visible on node b at once.
    a.post(
        &format!("{MERCHANT}/{id}/stock"),
        &a.merchant(7),
        &json!({"add": 5}),
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, v) = read(b.get(&path, &b.user_n(1)).await).await;
        if v["remaining_stock"] == 15 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node b never saw the restock: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_claim_without_an_idempotency_key_is_refused_and_takes_nothing() {
    let app = spawn_app().await;
    let t = open_template(&app, 10, 1).await;
    let id = id_of(&t);
    let r = app
        .post_unkeyed(&claim_path(&id), &app.user_n(1), &json!({}))
        .await;
    let v = expect_problem(r, 400, "IDEMPOTENCY_KEY_REQUIRED").await;
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or("")
            .contains("Idempotency-Key"),
        "{v}"
    );
    let (_, v) = read(
        app.get(&format!("/api/v1/templates/{id}"), &app.user_n(1))
            .await,
    )
    .await;
    assert_eq!(v["remaining_stock"], 10);
    // With a key, the same claim goes through; a fresh template view has no stale marks.
    assert_eq!(claim(&app, &id, &app.user_n(1)).await.0, 201);
    let r = app
        .get(&format!("/api/v1/templates/{id}"), &app.user_n(1))
        .await;
    assert!(r.headers().get("x-stale").is_none());
    assert!(r.headers().get("age").is_none());
    let r = app.get("/api/v1/me/coupons", &app.user_n(1)).await;
    assert!(r.headers().get("x-partial").is_none());
    let (_, v) = read(r).await;
    assert!(v.get("partial").is_none(), "{v}");
}

#[tokio::test]
async fn claims_are_counted_by_outcome() {
    let app = spawn_app().await;
    let t = open_template(&app, 1, 1).await;
    let id = id_of(&t);
    assert_eq!(claim(&app, &id, &app.user_n(1)).await.0, 201);
    let (s, v) = claim(&app, &id, &app.user_n(2)).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("SOLD_OUT")), "{v}");
    let text = app.metrics_text().await;
    for outcome in ["claimed", "SOLD_OUT"] {
        let series = format!("stampede_claims_total{{outcome=\"{outcome}\"}} ");
        assert!(
            text.lines().any(|l| l.starts_with(&series)),
            "{series}: {text}"
        );
    }
}
