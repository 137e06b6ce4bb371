//! Every operation of the OpenAPI document lists exactly the statuses in `DOCUMENTED`, and
//! every error status as a `Problem` in `application/problem+json`. The problem responses are
//! declared once per endpoint family and shared, so one edit to a set changes many
//! operations; this table turns a status dropped (or added) by such an edit into a failure.

use serde_json::Value;
use std::collections::BTreeSet;

/// (method, path, statuses) of every documented operation.
const DOCUMENTED: &[(&str, &str, &[u16])] = &[
    ("get", "/healthz", &[200]),
    ("get", "/readyz", &[200, 503]),
    ("get", "/metrics", &[200]),
    (
        "post",
        "/api/v1/auth/login",
        &[200, 400, 401, 413, 415, 422, 429, 503],
    ),
    (
        "post",
        "/api/v1/auth/refresh",
        &[200, 400, 401, 413, 415, 422],
    ),
    (
        "post",
        "/api/v1/auth/logout",
        &[204, 400, 401, 413, 415, 422],
    ),
    (
        "post",
        "/api/v1/admin/accounts",
        &[201, 400, 401, 403, 409, 413, 415, 422],
    ),
    ("get", "/api/v1/admin/flow-rules", &[200, 401, 403]),
    (
        "put",
        "/api/v1/admin/flow-rules",
        &[200, 400, 401, 403, 413, 415, 422, 503],
    ),
    (
        "post",
        "/api/v1/merchant/templates",
        &[200, 201, 400, 401, 403, 413, 415, 422],
    ),
    ("get", "/api/v1/merchant/templates", &[200, 401, 403, 422]),
    (
        "get",
        "/api/v1/merchant/templates/{id}",
        &[200, 401, 403, 404],
    ),
    (
        "post",
        "/api/v1/merchant/templates/{id}/stock",
        &[200, 400, 401, 403, 404, 409, 413, 415, 422],
    ),
    (
        "post",
        "/api/v1/merchant/templates/{id}/terminate",
        &[200, 400, 401, 403, 404, 409, 413, 415, 422],
    ),
    (
        "get",
        "/api/v1/merchant/templates/{id}/audit",
        &[200, 401, 403, 404],
    ),
    (
        "post",
        "/api/v1/merchant/distributions",
        &[200, 202, 400, 401, 403, 404, 409, 413, 415, 422],
    ),
    (
        "get",
        "/api/v1/merchant/distributions",
        &[200, 401, 403, 422],
    ),
    (
        "get",
        "/api/v1/merchant/distributions/{id}",
        &[200, 401, 403, 404],
    ),
    (
        "post",
        "/api/v1/merchant/distributions/{id}/cancel",
        &[200, 401, 403, 404, 409],
    ),
    (
        "get",
        "/api/v1/merchant/distributions/{id}/failures",
        &[200, 401, 403, 404, 422],
    ),
    (
        "post",
        "/api/v1/checkout/quote",
        &[200, 400, 401, 403, 413, 415, 422],
    ),
    (
        "post",
        "/api/v1/checkout/claimable",
        &[200, 400, 401, 403, 413, 415, 422],
    ),
    (
        "get",
        "/api/v1/shops/{shop_id}/templates",
        &[200, 401, 404, 422],
    ),
    (
        "get",
        "/api/v1/goods/{goods_id}/templates",
        &[200, 401, 404, 422],
    ),
    (
        "post",
        "/api/v1/orders/{order_id}/coupons/lock",
        &[200, 400, 401, 403, 409, 413, 415, 422],
    ),
    (
        "post",
        "/api/v1/orders/{order_id}/coupons/redeem",
        &[200, 400, 401, 403, 404, 409, 413, 415, 422],
    ),
    (
        "post",
        "/api/v1/orders/{order_id}/coupons/release",
        &[200, 400, 401, 403, 404, 409, 413, 415, 422],
    ),
    (
        "post",
        "/api/v1/orders/{order_id}/coupons/refund",
        &[200, 400, 401, 403, 404, 409, 413, 415, 422],
    ),
    (
        "get",
        "/api/v1/orders/{order_id}/coupons",
        &[200, 401, 403, 404, 422],
    ),
    ("get", "/api/v1/templates/{id}", &[200, 401, 404]),
    (
        "post",
        "/api/v1/templates/{id}/claim",
        &[200, 201, 400, 401, 403, 404, 409, 413, 415, 422, 429, 503],
    ),
    ("get", "/api/v1/me/coupons", &[200, 401, 403, 422]),
    ("get", "/api/v1/me/coupons/{id}", &[200, 401, 403, 404]),
    (
        "put",
        "/api/v1/templates/{id}/reminders",
        &[200, 400, 401, 403, 404, 409, 413, 415, 422],
    ),
    (
        "delete",
        "/api/v1/templates/{id}/reminders",
        &[204, 401, 403, 404, 422],
    ),
    ("get", "/api/v1/me/reminders", &[200, 401, 403]),
];

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options"];

fn document() -> Value {
    let (_, doc) = stampede_api::api();
    serde_json::to_value(&doc).unwrap_or_else(|e| panic!("the document serialises: {e}"))
}

/// `(method, path) → statuses` as the document has them.
fn operations(doc: &Value) -> Vec<(String, String, BTreeSet<u16>)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let statuses = op["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(s, _)| {
                    s.parse::<u16>()
                        .unwrap_or_else(|e| panic!("{method} {path}: status {s}: {e}"))
                })
                .collect();
            out.push((method.clone(), path.clone(), statuses));
        }
    }
    out
}

#[test]
fn every_operation_documents_exactly_its_statuses() {
    let doc = document();
    let actual = operations(&doc);
    let mut failures = Vec::new();
    for (method, path, statuses) in DOCUMENTED {
        let expected: BTreeSet<u16> = statuses.iter().copied().collect();
        match actual.iter().find(|(m, p, _)| m == method && p == path) {
            None => failures.push(format!("{method} {path}: not in the document")),
            Some((_, _, got)) if *got != expected => failures.push(format!(
                "{method} {path}: documents {got:?}, the table says {expected:?}"
            )),
            Some(_) => {}
        }
    }
    for (method, path, _) in &actual {
        if !DOCUMENTED.iter().any(|(m, p, _)| m == method && p == path) {
            failures.push(format!("{method} {path}: missing from the table"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_error_status_is_a_problem_document() {
    let doc = document();
    let codes: Vec<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(!codes.is_empty(), "the ErrorCode schema lists the codes");
    let mut failures = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            for (status, resp) in op["responses"].as_object().into_iter().flatten() {
                let where_ = format!("{method} {path} {status}");
                let content = resp["content"].as_object();
                let problem = content.and_then(|c| c.get("application/problem+json"));
                // The readiness probe answers 503 with its own document (ADR 0001): load
                // balancers read the status, operators the checks.
                let readiness_probe = path == "/readyz" && status == "503";
                if readiness_probe {
                    let schema = content
                        .and_then(|c| c.get("application/json"))
                        .map(|j| &j["schema"]["$ref"]);
                    if schema.and_then(Value::as_str) != Some("#/components/schemas/Readiness") {
                        failures.push(format!("{where_}: not the Readiness document: {resp}"));
                    }
                } else if status.starts_with('4') || status.starts_with('5') {
                    // Clients branch on `code`: the description names the ones they may meet.
                    let description = resp["description"].as_str().unwrap_or("");
                    if !codes.iter().any(|c| description.contains(c)) {
                        failures.push(format!("{where_}: names no problem code: {description:?}"));
                    }
                    let one_type = content.is_some_and(|c| c.len() == 1);
                    let schema = problem.map(|p| &p["schema"]["$ref"]);
                    if !one_type
                        || schema.and_then(Value::as_str) != Some("#/components/schemas/Problem")
                    {
                        failures.push(format!(
                            "{where_}: not a Problem in application/problem+json: {resp}"
                        ));
                    }
                } else if problem.is_some() {
                    failures.push(format!("{where_}: a success described as a problem"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
