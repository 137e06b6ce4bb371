use crate::helpers::*;
use serde_json::{Value, json};

const PATH: &str = "/api/v1/merchant/templates";

#[tokio::test]
async fn merchant_creates_each_kind() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let r = app.post(PATH, &m, &app.template_body("Threshold")).await;
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (s, t) = read(r).await;
    assert_eq!(s, 201, "{t}");
    assert_eq!(
        location,
        format!("/api/v1/merchant/templates/{}", id_of(&t))
    );
    assert!(t["id"].is_string() && t["shop_id"] == "7");
    assert_eq!(t["stock"], 1000);
    assert_eq!(t["stock_total"], 1000);
    assert_eq!(t["status"], "active");
    assert_eq!(t["per_user_limit"], 1);
    assert_eq!(t["source"], "shop");

    let mut fixed = app.template_body("Fixed");
    fixed["kind"] = json!("fixed");
    fixed.as_object_mut().map(|o| o.remove("threshold"));
    fixed["scope"] = json!("goods");
    fixed["goods_ids"] = json!(["11", "12"]);
    fixed["per_user_limit"] = json!(3);
    let t = app.create(&m, &fixed).await;
    assert_eq!(t["goods_ids"], json!(["11", "12"]));
    assert_eq!(t["threshold"], Value::Null);

    let mut pct = app.template_body("Percent");
    pct["kind"] = json!("percent");
    pct.as_object_mut().map(|o| o.remove("amount_off"));
    pct["percent_off"] = json!(15);
    pct["max_off"] = json!(2000);
    pct.as_object_mut().map(|o| o.remove("validity_hours"));
    let from = app.now() + jiff::SignedDuration::from_hours(1);
    pct["valid_from"] = json!(from.to_string());
    pct["valid_until"] = json!((from + jiff::SignedDuration::from_hours(240)).to_string());
    let t = app.create(&m, &pct).await;
    assert_eq!(t["percent_off"], 15);
    assert_eq!(t["amount_off"], Value::Null);
    assert_eq!(t["validity_hours"], Value::Null);

    let (_, page) = read(app.get(PATH, &m).await).await;
    assert_eq!(page["total"], 3);
}

#[tokio::test]
async fn creation_is_audited() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let t = app.create_named(&m, "Audited").await;
    let (s, log) = read(app.get(&format!("{PATH}/{}/audit", id_of(&t)), &m).await).await;
    assert_eq!(s, 200);
    let items = log["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["action"], "create");
    assert_eq!(items[0]["actor"], "merchant:m7");
    assert_eq!(items[0]["before"], Value::Null);
    assert_eq!(items[0]["after"]["id"], t["id"]);
}

#[tokio::test]
async fn idempotency_key_replays_and_rejects_a_different_body() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let body = app.template_body("Once");
    let (s1, a) = read(app.post_with_key(PATH, &m, "key-1", &body).await).await;
    assert_eq!(s1, 201);
    // Same content, other key order and whitespace: still the same request.
    let reordered: Value =
        serde_json::from_str(&serde_json::to_string_pretty(&body).unwrap_or_default())
            .unwrap_or_default();
    let (s2, b) = read(app.post_with_key(PATH, &m, "key-1", &reordered).await).await;
    assert_eq!(s2, 200);
    assert_eq!(a["id"], b["id"]);

    let mut other = body.clone();
    other["name"] = json!("Twice?");
    expect_problem(
        app.post_with_key(PATH, &m, "key-1", &other).await,
        422,
        "IDEMPOTENCY_KEY_REUSED",
    )
    .await;

    // Keys are per shop: another shop may use the same key.
    let (s3, c) = read(
        app.post_with_key(PATH, &app.merchant(8), "key-1", &body)
            .await,
    )
    .await;
    assert_eq!(s3, 201);
    assert_ne!(c["id"], a["id"]);

    let bad_key = "x".repeat(256);
    let v = expect_problem(
        app.post_with_key(PATH, &m, &bad_key, &body).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&v), vec!["Idempotency-Key"]);

    let (_, page) = read(app.get(PATH, &m).await).await;
    assert_eq!(page["total"], 1);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_template() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let body = app.template_body("Race");
    let results = futures::future::join_all((0..16).map(|_| async {
        let r = app.post_with_key(PATH, &m, "race-key", &body).await;
        read(r).await
    }))
    .await;
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 1, "{results:?}");
    let ids: std::collections::HashSet<String> = results
        .iter()
        .map(|(s, v)| {
            assert!(*s == 200 || *s == 201, "{s} {v}");
            id_of(v)
        })
        .collect();
    assert_eq!(ids.len(), 1);
    let (_, page) = read(app.get(PATH, &m).await).await;
    assert_eq!(page["total"], 1);
}

#[tokio::test]
async fn platform_templates_are_for_admins() {
    let app = spawn_app().await;
    let mut body = app.template_body("Platform");
    body["source"] = json!("platform");
    expect_problem(
        app.post(PATH, &app.merchant(7), &body).await,
        403,
        "FORBIDDEN",
    )
    .await;
    let t = app.create(&app.admin(), &body).await;
    assert_eq!(t["source"], "platform");
    assert_eq!(t["shop_id"], "0");
    // Merchants cannot see it.
    expect_problem(
        app.get(&format!("{PATH}/{}", id_of(&t)), &app.merchant(7))
            .await,
        404,
        "NOT_FOUND",
    )
    .await;

    body["shop_id"] = json!("7");
    let v = expect_problem(
        app.post(PATH, &app.admin(), &body).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&v), vec!["shop_id"]);
}

#[tokio::test]
async fn admins_name_the_shop_and_merchants_cannot_name_another() {
    let app = spawn_app().await;
    let body = app.template_body("For shop 9");
    let v = expect_problem(
        app.post(PATH, &app.admin(), &body).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&v), vec!["shop_id"]);
    let mut for9 = body.clone();
    for9["shop_id"] = json!("9");
    let t = app.create(&app.admin(), &for9).await;
    assert_eq!(t["shop_id"], "9");
    expect_problem(
        app.post(PATH, &app.merchant(7), &for9).await,
        403,
        "FORBIDDEN",
    )
    .await;
    let mut own = body.clone();
    own["shop_id"] = json!("7");
    assert_eq!(app.create(&app.merchant(7), &own).await["shop_id"], "7");
}
