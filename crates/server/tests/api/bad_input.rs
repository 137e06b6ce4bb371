//! Every kind of bad input gets a clear 4xx and writes nothing.

use crate::helpers::*;
use serde_json::{Value, json};

const PATH: &str = "/api/v1/merchant/templates";

async fn assert_nothing_written(app: &TestApp) {
    let (_, page) = read(app.get(PATH, &app.admin()).await).await;
    assert_eq!(page["total"], 0, "bad input must not write: {page}");
}

#[tokio::test]
async fn each_rule_violation_names_its_field() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let base = app.template_body("Rules");
    let start = base["claim_start"].clone();
    type Edit = fn(&mut Value, &Value);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "negative money",
            |b, _| b["amount_off"] = json!(-1),
            "amount_off",
        ),
        (
            "overflowing i64",
            |b, _| b["threshold"] = json!(99_999_999_999_999_999_999u128 as f64),
            "threshold",
        ),
        (
            "huge u64",
            |b, _| {
                b["threshold"] = serde_json::from_str("18446744073709551615").unwrap_or_default()
            },
            "threshold",
        ),
        (
            "money past the cap",
            |b, _| b["threshold"] = json!(1_000_000_000_001i64),
            "threshold",
        ),
        (
            "fractional money",
            |b, _| b["amount_off"] = json!(10.5),
            "amount_off",
        ),
        (
            "money as string",
            |b, _| b["amount_off"] = json!("500"),
            "amount_off",
        ),
        (
            "threshold not above amount",
            |b, _| b["threshold"] = json!(500),
            "threshold",
        ),
        (
            "percent 0",
            |b, _| {
                b["kind"] = json!("percent");
                b.as_object_mut().map(|o| o.remove("amount_off"));
                b["percent_off"] = json!(0);
            },
            "percent_off",
        ),
        (
            "percent 100",
            |b, _| {
                b["kind"] = json!("percent");
                b.as_object_mut().map(|o| o.remove("amount_off"));
                b["percent_off"] = json!(100);
            },
            "percent_off",
        ),
        (
            "end before start",
            |b, s| b["claim_end"] = s.clone(),
            "claim_end",
        ),
        (
            "end in the past",
            |b, _| {
                b["claim_start"] = json!("2020-01-01T00:00:00Z");
                b["claim_end"] = json!("2020-01-02T00:00:00Z");
            },
            "claim_end",
        ),
        (
            "both validity modes",
            |b, s| {
                b["valid_from"] = s.clone();
                b["valid_until"] = json!("2099-01-01T00:00:00Z");
            },
            "validity_hours",
        ),
        (
            "no validity",
            |b, _| {
                b.as_object_mut().map(|o| o.remove("validity_hours"));
            },
            "validity",
        ),
        (
            "validity hours too long",
            |b, _| b["validity_hours"] = json!(8761),
            "validity_hours",
        ),
        (
            "goods scope without ids",
            |b, _| b["scope"] = json!("goods"),
            "goods_ids",
        ),
        (
            "shop scope with ids",
            |b, _| b["goods_ids"] = json!(["1"]),
            "goods_ids",
        ),
        (
            "goods ids not strings",
            |b, _| {
                b["scope"] = json!("goods");
                b["goods_ids"] = json!([1, 2]);
            },
            "goods_ids",
        ),
        ("stock 0", |b, _| b["stock_total"] = json!(0), "stock_total"),
        (
            "stock over the cap",
            |b, _| b["stock_total"] = json!(20_000_001),
            "stock_total",
        ),
        (
            "per user limit 0",
            |b, _| b["per_user_limit"] = json!(0),
            "per_user_limit",
        ),
        (
            "per user limit 101",
            |b, _| b["per_user_limit"] = json!(101),
            "per_user_limit",
        ),
        ("unknown kind", |b, _| b["kind"] = json!("bogo"), "kind"),
        ("unknown field", |b, _| b["colour"] = json!("red"), "colour"),
        (
            "name too long",
            |b, _| b["name"] = json!("n".repeat(101)),
            "name",
        ),
        ("name wrong type", |b, _| b["name"] = json!(["x"]), "name"),
        (
            "instructions too long",
            |b, _| b["instructions"] = json!("i".repeat(1001)),
            "instructions",
        ),
        (
            "bad timestamp",
            |b, _| b["claim_start"] = json!("tomorrow"),
            "claim_start",
        ),
        (
            "timestamp without offset",
            |b, _| b["claim_start"] = json!("2030-01-01T00:00:00"),
            "claim_start",
        ),
    ];
    for (what, edit, field) in cases {
        let mut body = base.clone();
        edit(&mut body, &start);
        let v = expect_problem(app.post(PATH, &m, &body).await, 422, "VALIDATION_FAILED").await;
        assert_eq!(error_fields(&v), vec![field.to_string()], "{what}: {v}");
    }
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn all_errors_come_back_at_once() {
    let app = spawn_app().await;
    let body = json!({
        "name": "",
        "kind": "threshold",
        "amount_off": -5,
        "stock_total": "many",
        "claim_start": "2030-01-02T00:00:00Z",
        "claim_end": "2030-01-01T00:00:00Z",
        "per_user_limit": 0,
        "mystery": 1
    });
    let v = expect_problem(
        app.post(PATH, &app.merchant(7), &body).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let mut f = error_fields(&v);
    f.sort();
    assert_eq!(
        f,
        vec![
            "amount_off",
            "claim_end",
            "mystery",
            "name",
            "per_user_limit",
            "stock_total",
            "threshold",
            "validity"
        ]
    );
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn malformed_json_wrong_shape_and_wrong_content_type() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let send = |body: &'static str, ct: &'static str| {
        app.client
            .post(app.url(PATH))
            .bearer_auth(&m)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    expect_problem(
        send("{\"name\": ", "application/json")
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        400,
        "MALFORMED_REQUEST",
    )
    .await;
    expect_problem(
        send("", "application/json")
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        400,
        "MALFORMED_REQUEST",
    )
    .await;
    let v = expect_problem(
        send("[1,2]", "application/json")
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&v), vec!["body"]);
    expect_problem(
        send("{}", "text/plain")
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    .await;
    let r = app
        .client
        .post(app.url(PATH))
        .bearer_auth(&m)
        .body("{}")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    expect_problem(r, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let app = spawn_app().await;
    let mut body = app.template_body("Big");
    body["instructions"] = json!("x".repeat(app.settings.http.max_body_bytes + 10));
    expect_problem(
        app.post(PATH, &app.merchant(7), &body).await,
        413,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
    assert_nothing_written(&app).await;
}
