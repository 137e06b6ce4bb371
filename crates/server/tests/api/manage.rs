//! Reading, listing, restocking, terminating and ending templates; shop isolation.

use crate::helpers::*;
use jiff::SignedDuration;
use serde_json::{Value, json};

const PATH: &str = "/api/v1/merchant/templates";

fn at(id: &str, suffix: &str) -> String {
    format!("{PATH}/{id}{suffix}")
}

#[tokio::test]
async fn another_shops_template_is_not_found_for_every_action() {
    let app = spawn_app().await;
    let t = app.create_named(&app.merchant(7), "Mine").await;
    let id = id_of(&t);
    let other = app.merchant(8);
    expect_problem(app.get(&at(&id, ""), &other).await, 404, "NOT_FOUND").await;
    expect_problem(app.get(&at(&id, "/audit"), &other).await, 404, "NOT_FOUND").await;
    expect_problem(
        app.post(&at(&id, "/stock"), &other, &json!({"add": 5}))
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    expect_problem(
        app.post(&at(&id, "/terminate"), &other, &json!({})).await,
        404,
        "NOT_FOUND",
    )
    .await;
    // Nothing changed, and the owner and admins still see it.
    let (_, mine) = read(app.get(&at(&id, ""), &app.merchant(7)).await).await;
    assert_eq!(mine["stock_total"], 1000);
    assert_eq!(mine["status"], "active");
    assert_eq!(read(app.get(&at(&id, ""), &app.admin()).await).await.0, 200);
    // Unknown and impossible ids look the same.
    expect_problem(
        app.get(&at("123456789", ""), &app.merchant(7)).await,
        404,
        "NOT_FOUND",
    )
    .await;
    expect_problem(
        app.get(&at("not-an-id", ""), &app.merchant(7)).await,
        404,
        "NOT_FOUND",
    )
    .await;
}

#[tokio::test]
async fn list_filters_and_pages() {
    let app = spawn_app().await;
    let m7 = app.merchant(7);
    for i in 0..5 {
        app.create_named(&m7, &format!("Spring {i}")).await;
    }
    let mut pct = app.template_body("Autumn 50%_off");
    pct["kind"] = json!("percent");
    pct.as_object_mut().map(|o| o.remove("amount_off"));
    pct["percent_off"] = json!(50);
    let autumn = app.create(&m7, &pct).await;
    app.create_named(&app.merchant(8), "Spring elsewhere").await;
    let terminated = app.create_named(&m7, "Gone").await;
    app.post(&at(&id_of(&terminated), "/terminate"), &m7, &json!({}))
        .await;

    let page = |q: &str| {
        let q = q.to_owned();
        let m7 = m7.clone();
        let app = &app;
        async move { read(app.get(&format!("{PATH}?{q}"), &m7).await).await.1 }
    };
    assert_eq!(page("").await["total"], 7);
    assert_eq!(page("kind=percent").await["items"][0]["id"], autumn["id"]);
    assert_eq!(page("name=spring").await["total"], 5);
    assert_eq!(
        page("name=50%25_").await["total"],
        1,
        "wildcards match literally"
    );
    assert_eq!(page("name=5%25").await["total"], 0);
    assert_eq!(page("status=terminated").await["total"], 1);
    assert_eq!(page("status=active").await["total"], 6);

    // Pages are newest first, disjoint and complete.
    let mut seen = Vec::new();
    for p in 1..=3 {
        let v = page(&format!("page={p}&page_size=3")).await;
        assert_eq!(v["page"], p);
        assert_eq!(v["page_size"], 3);
        assert_eq!(v["total"], 7);
        seen.extend(
            v["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|t| id_of(&t)),
        );
    }
    assert_eq!(seen.len(), 7);
    let mut sorted: Vec<u64> = seen.iter().map(|s| s.parse().unwrap_or(0)).collect();
    let original = sorted.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(original, sorted);

    // Admins see every shop, or one.
    let (_, all) = read(app.get(PATH, &app.admin()).await).await;
    assert_eq!(all["total"], 8);
    let (_, eight) = read(app.get(&format!("{PATH}?shop_id=8"), &app.admin()).await).await;
    assert_eq!(eight["total"], 1);
    expect_problem(
        app.get(&format!("{PATH}?shop_id=8"), &m7).await,
        403,
        "FORBIDDEN",
    )
    .await;

    for (q, field) in [
        ("page=0", "page"),
        ("page_size=0", "page_size"),
        ("page_size=101", "page_size"),
        ("page=x", "page"),
        ("status=gone", "status"),
        ("kind=free", "kind"),
    ] {
        let v = expect_problem(
            app.get(&format!("{PATH}?{q}"), &m7).await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
        assert_eq!(error_fields(&v), vec![field], "{q}");
    }
}

#[tokio::test]
async fn add_stock_rules() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let t = app.create_named(&m, "Stocked").await;
    let id = id_of(&t);
    let (s, v) = read(app.post(&at(&id, "/stock"), &m, &json!({"add": 250})).await).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stock_total"], 1250);
    assert_eq!(v["stock"], 1250);

    for body in [
        json!({"add": 0}),
        json!({"add": -3}),
        json!({}),
        json!({"add": "5"}),
        json!({"add": 1.5}),
        json!({"add": 20_000_000}),
        json!({"add": 1, "more": 2}),
    ] {
        let v = expect_problem(
            app.post(&at(&id, "/stock"), &m, &body).await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
        assert!(!error_fields(&v).is_empty(), "{body}");
    }
    let r = app
        .client
        .post(app.url(&at(&id, "/stock")))
        .bearer_auth(&m)
        .body("add=5")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    expect_problem(r, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    // Up to the cap exactly is fine; one more is not.
    let (s, v) = read(
        app.post(&at(&id, "/stock"), &m, &json!({"add": 20_000_000 - 1250}))
            .await,
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["stock_total"].clone()),
        (200, json!(20_000_000))
    );
    let v = expect_problem(
        app.post(&at(&id, "/stock"), &m, &json!({"add": 1})).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&v), vec!["add"]);

    let (_, log) = read(app.get(&at(&id, "/audit"), &m).await).await;
    let actions: Vec<Value> = log["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| e["action"].clone())
        .collect();
    assert_eq!(
        actions,
        vec![json!("create"), json!("add_stock"), json!("add_stock")]
    );
    assert_eq!(log["items"][1]["before"]["stock_total"], 1000);
    assert_eq!(log["items"][1]["after"]["stock_total"], 1250);
}

#[tokio::test]
async fn concurrent_add_stock_loses_nothing() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let id = id_of(&app.create_named(&m, "Busy").await);
    let path = at(&id, "/stock");
    let body = json!({"add": 1});
    let results = futures::future::join_all((0..20).map(|_| app.post(&path, &m, &body))).await;
    assert!(results.iter().all(|r| r.status() == 200));
    let (_, t) = read(app.get(&at(&id, ""), &m).await).await;
    assert_eq!(t["stock_total"], 1020);
    let (_, log) = read(app.get(&at(&id, "/audit"), &m).await).await;
    assert_eq!(log["items"].as_array().map(Vec::len), Some(21));
}

#[tokio::test]
async fn terminate_is_idempotent_and_stops_restocking() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let id = id_of(&app.create_named(&m, "Short-lived").await);
    let (s1, a) = read(app.post(&at(&id, "/terminate"), &m, &json!({})).await).await;
    let r = app
        .client
        .post(app.url(&at(&id, "/terminate")))
        .bearer_auth(&m)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (s2, b) = read(r).await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (200, 200));
    assert_eq!(a["status"], "terminated");
    assert_eq!(a, b);
    expect_problem(
        app.post(&at(&id, "/stock"), &m, &json!({"add": 1})).await,
        409,
        "TEMPLATE_TERMINATED",
    )
    .await;
    let v = expect_problem(
        app.post(&at(&id, "/terminate"), &m, &json!({"why": "x"}))
            .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&v), vec!["why"]);
    let (_, log) = read(app.get(&at(&id, "/audit"), &m).await).await;
    let actions: Vec<Value> = log["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| e["action"].clone())
        .collect();
    assert_eq!(actions, vec![json!("create"), json!("terminate")]);
}

#[tokio::test]
async fn templates_end_at_claim_end() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let id = id_of(&app.create_named(&m, "Ending").await);
    // One millisecond before the end it is still active; at the end it is ended.
    let (_, t) = read(app.get(&at(&id, ""), &m).await).await;
    let end: jiff::Timestamp = t["claim_end"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    app.clock.set(end - SignedDuration::from_millis(1));
    app.drain().await;
    assert_eq!(
        read(app.get(&at(&id, ""), &m).await).await.1["status"],
        "active"
    );
    app.clock.set(end);
    assert_eq!(
        read(app.get(&at(&id, ""), &m).await).await.1["status"],
        "ended"
    );
    app.drain().await;
    let (_, log) = read(app.get(&at(&id, "/audit"), &m).await).await;
    assert_eq!(log["items"][1]["action"], "end");
    assert_eq!(log["items"][1]["actor"], "system");
    assert_eq!(
        read(app.get(&format!("{PATH}?status=ended"), &m).await)
            .await
            .1["total"],
        1
    );
    expect_problem(
        app.post(&at(&id, "/stock"), &m, &json!({"add": 1})).await,
        409,
        "CLAIM_ENDED",
    )
    .await;
    expect_problem(
        app.post(&at(&id, "/terminate"), &m, &json!({})).await,
        409,
        "CLAIM_ENDED",
    )
    .await;
    // Draining again ends nothing twice.
    app.drain().await;
    assert_eq!(
        read(app.get(&at(&id, "/audit"), &m).await).await.1["items"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

#[tokio::test]
async fn the_background_job_ends_templates_without_anyone_calling() {
    let app = spawn_app_with(true).await;
    let m = app.merchant(7);
    let id = id_of(&app.create_named(&m, "Unattended").await);
    app.advance(SignedDuration::from_hours(26));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, log) = read(app.get(&at(&id, "/audit"), &m).await).await;
        if log["items"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["action"] == "end"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the end job never ran: {log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn idempotency_keys_are_kept_a_day_then_purged() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let body = app.template_body("Keyed");
    let (_, first) = read(app.post_with_key(PATH, &m, "k", &body).await).await;
    app.advance(SignedDuration::from_hours(25));
    app.drain().await;
    // Still inside the 48 h retention: replayed.
    let (s, again) = read(app.post_with_key(PATH, &m, "k", &body).await).await;
    assert_eq!(
        (s.as_u16(), again["id"].clone()),
        (200, first["id"].clone())
    );
    app.advance(SignedDuration::from_hours(24));
    app.drain().await;
    // Forgotten: the key may be used again (the window moved, so send a fresh body).
    let (s, _) = read(
        app.post_with_key(PATH, &m, "k", &app.template_body("Keyed"))
            .await,
    )
    .await;
    assert_eq!(s, 201);
}

#[tokio::test]
async fn add_stock_with_an_idempotency_key_adds_once() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let a = id_of(&app.create_named(&m, "Retry-safe").await);
    let b = id_of(&app.create_named(&m, "Other").await);
    let body = json!({"add": 10});
    let stock_a = at(&a, "/stock");
    let results = futures::future::join_all(
        (0..8).map(|_| app.post_with_key(&stock_a, &m, "restock-1", &body)),
    )
    .await;
    for r in results {
        let (s, v) = read(r).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["stock_total"], 1010);
    }
    // The same key with another amount, or on another template, is a different request.
    expect_problem(
        app.post_with_key(&at(&a, "/stock"), &m, "restock-1", &json!({"add": 11}))
            .await,
        422,
        "IDEMPOTENCY_KEY_REUSED",
    )
    .await;
    expect_problem(
        app.post_with_key(&at(&b, "/stock"), &m, "restock-1", &body)
            .await,
        422,
        "IDEMPOTENCY_KEY_REUSED",
    )
    .await;
    // A refused change binds nothing: the key stays free.
    expect_problem(
        app.post_with_key(
            &at(&b, "/stock"),
            &m,
            "restock-2",
            &json!({"add": 20_000_000}),
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let (s, v) = read(
        app.post_with_key(&at(&b, "/stock"), &m, "restock-2", &body)
            .await,
    )
    .await;
    assert_eq!((s.as_u16(), v["stock_total"].clone()), (200, json!(1010)));
    let (_, t) = read(app.get(&at(&a, ""), &m).await).await;
    assert_eq!(t["stock_total"], 1010);
    let (_, log) = read(app.get(&at(&a, "/audit"), &m).await).await;
    assert_eq!(log["items"].as_array().map(Vec::len), Some(2));
}
