//! Flow control through the HTTP API: the admin rule set (GET/PUT, validation, roles,
//! restarts, other nodes) and a rule taking effect on claims.

use crate::helpers::*;
use reqwest::Response;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const RULES: &str = "/api/v1/admin/flow-rules";

async fn put(app: &TestApp, token: &str, body: &Value) -> Response {
    app.client
        .put(app.url(RULES))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {RULES}: {e}"))
}

/// A valid set: claims limited per template (burst 3, one more per second), no per-user rule.
fn per_template_rules() -> Value {
    json!({
        "routes": {"back_office": {"per_second": 1000, "burst": 1000}},
        "claim_per_template": {"per_second": 1, "burst": 3},
        "concurrency": {"max_in_flight": 512, "settlement_reserved": 32, "queue_timeout_ms": 5}
    })
}

async fn open_template(app: &TestApp) -> String {
    let mut body = app.template_body("Hot");
    body["claim_start"] = json!(app.now().to_string());
    body["stock_total"] = json!(100);
    body["per_user_limit"] = json!(5);
    id_of(&app.create(&app.merchant(7), &body).await)
}

#[tokio::test]
async fn the_configured_rules_apply_until_an_admin_replaces_them() {
    let app = spawn_app().await;
    let (s, v) = read(app.get(RULES, &app.admin()).await).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["source"], "config");
    assert_eq!(v["version"], 0);
    assert_eq!(
        v["rules"]["claim_per_user"],
        json!({"per_second": 10, "burst": 10})
    );

    let (s, put_v) = read(put(&app, &app.admin(), &per_template_rules()).await).await;
    assert_eq!(s, 200, "{put_v}");
    assert_eq!(put_v["source"], "admin");
    assert_eq!(put_v["version"], 1);
    let (_, v) = read(app.get(RULES, &app.admin()).await).await;
    assert_eq!(v, put_v);
    assert_eq!(v["rules"]["claim_per_user"], Value::Null);
    assert_eq!(
        v["rules"]["claim_per_template"],
        json!({"per_second": 1, "burst": 3})
    );
}

#[tokio::test]
async fn a_bad_rule_refuses_the_whole_set_and_nothing_is_applied() {
    let app = spawn_app().await;
    let mut bad = per_template_rules();
    bad["routes"]["nope"] = json!({"per_second": 1, "burst": 1});
    bad["claim_per_ip"] = json!({"per_second": 0, "burst": 1});
    bad["concurrency"]["settlement_reserved"] = json!(512);
    let v = expect_problem(
        put(&app, &app.admin(), &bad).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let fields = error_fields(&v);
    for f in [
        "routes.nope",
        "claim_per_ip.per_second",
        "concurrency.settlement_reserved",
    ] {
        assert!(fields.contains(&f.to_owned()), "{f} in {fields:?}");
    }
    // A member the rules do not have is refused too.
    let mut unknown = per_template_rules();
    unknown["claim_per_moon"] = json!({"per_second": 1, "burst": 1});
    expect_problem(
        put(&app, &app.admin(), &unknown).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;

    let (_, v) = read(app.get(RULES, &app.admin()).await).await;
    assert_eq!(
        (v["source"].clone(), v["version"].clone()),
        (json!("config"), json!(0))
    );
}

#[tokio::test]
async fn only_admins_read_or_change_the_rules() {
    let app = spawn_app().await;
    expect_problem(app.get(RULES, &app.user()).await, 403, "FORBIDDEN").await;
    expect_problem(app.get(RULES, &app.merchant(7)).await, 403, "FORBIDDEN").await;
    expect_problem(
        put(&app, &app.merchant(7), &per_template_rules()).await,
        403,
        "FORBIDDEN",
    )
    .await;
    let anonymous = app
        .client
        .get(app.url(RULES))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(anonymous.status(), 401);
    let (_, v) = read(app.get(RULES, &app.admin()).await).await;
    assert_eq!(v["version"], 0);
}

#[tokio::test]
async fn a_per_template_rule_limits_claims_after_its_burst() {
    let app = spawn_app().await;
    let id = open_template(&app).await;
    assert_eq!(
        put(&app, &app.admin(), &per_template_rules())
            .await
            .status(),
        200
    );
    let path = format!("/api/v1/templates/{id}/claim");
    // Different users: only the template's rule can refuse them.
    for u in 1..=3 {
        let r = app.post(&path, &app.user_n(u), &json!({})).await;
        assert_eq!(r.status(), 201, "claim {u} within the burst");
    }
    let r = app.post(&path, &app.user_n(4), &json!({})).await;
    let retry: u64 = header(r.headers(), "retry-after").parse().unwrap_or(0);
    assert!(retry >= 1, "Retry-After says when to come back");
    let v = expect_problem(r, 429, "RATE_LIMITED").await;
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or("")
            .contains("claim_per_template"),
        "{v}"
    );
    // Another template is not affected.
    let other = open_template(&app).await;
    let r = app
        .post(
            &format!("/api/v1/templates/{other}/claim"),
            &app.user_n(4),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn saved_rules_survive_a_restart() {
    let app = spawn_app().await;
    let (_, saved) = read(put(&app, &app.admin(), &per_template_rules()).await).await;
    app.stop();
    let restarted = spawn_sibling(&app).await;
    let (s, v) = read(restarted.get(RULES, &restarted.admin()).await).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["source"], "admin");
    assert_eq!(v["version"], saved["version"]);
    assert_eq!(v["rules"], saved["rules"]);
}

#[tokio::test]
async fn every_node_applies_a_change_within_a_second() {
    let a = spawn_app().await;
    let b = spawn_sibling(&a).await;
    let (_, v) = read(b.get(RULES, &b.admin()).await).await;
    assert_eq!(v["version"], 0);
    let (s, saved) = read(put(&a, &a.admin(), &per_template_rules()).await).await;
    assert_eq!(s, 200, "{saved}");
    let put_at = Instant::now();
    loop {
        let (_, v) = read(b.get(RULES, &b.admin()).await).await;
        if v["version"] == saved["version"] {
            assert_eq!(v["rules"], saved["rules"]);
            break;
        }
        assert!(
            put_at.elapsed() < Duration::from_secs(1),
            "the other node still runs version {} a second after the change",
            v["version"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
