use crate::helpers::*;
use serde_json::{Value, json};

#[tokio::test]
async fn healthz_answers_with_a_request_id() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(r.headers().contains_key("x-request-id"));
    let (s, v) = read(r).await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "ok");
}

#[tokio::test]
async fn a_sane_client_request_id_is_echoed_and_a_hostile_one_replaced() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "a b<script>")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(r.headers()["x-request-id"], "a b<script>");
}

#[tokio::test]
async fn readyz_reports_the_database() {
    let app = spawn_app().await;
    let (s, v) = read(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "ready", "{v}");
    let db = &v["checks"]["database"];
    assert_eq!(db["state"], "up", "{v}");
    assert_eq!(db["breaker"], "closed", "{v}");
    assert!(
        db["latency_ms"].as_u64().is_some_and(|ms| ms < 1_000),
        "{v}"
    );
    assert!(db.get("error").is_none(), "{v}");
}

#[tokio::test]
async fn openapi_documents_every_route_and_error() {
    let app = spawn_app().await;
    let v = openapi(&app).await;
    let paths = v["paths"].as_object().cloned().unwrap_or_default();
    for p in [
        "/healthz",
        "/readyz",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/admin/accounts",
        "/api/v1/merchant/templates",
        "/api/v1/merchant/templates/{id}",
        "/api/v1/merchant/templates/{id}/stock",
        "/api/v1/merchant/templates/{id}/terminate",
        "/api/v1/merchant/templates/{id}/audit",
    ] {
        assert!(paths.contains_key(p), "{p} missing from openapi");
    }
    let schemas = &v["components"]["schemas"];
    for s in [
        "Problem",
        "Template",
        "CreateTemplateBody",
        "ErrorCode",
        "TemplatePage",
        "AuditPage",
    ] {
        assert!(schemas.get(s).is_some(), "schema {s} missing");
    }
    // Every operation that needs a token documents 401.
    for (path, item) in &paths {
        for (method, op) in item.as_object().into_iter().flatten() {
            if op.get("security").is_some() {
                assert!(
                    op["responses"].get("401").is_some(),
                    "{method} {path} lacks 401"
                );
            }
        }
    }
    let codes = schemas["ErrorCode"].to_string();
    for c in [
        "VALIDATION_FAILED",
        "IDEMPOTENCY_KEY_REUSED",
        "TEMPLATE_TERMINATED",
        "PAYLOAD_TOO_LARGE",
    ] {
        assert!(codes.contains(c), "{c} missing from ErrorCode schema");
    }
}

#[tokio::test]
async fn docs_page_is_served_with_its_own_assets() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/docs/"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap_or_default();
    assert!(html.contains("swagger"), "{html}");
    assert!(
        !html.contains("https://"),
        "the docs page must not load assets from the internet"
    );
    for asset in [
        "/docs/swagger-ui.css",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-initializer.js",
    ] {
        let r = app
            .client
            .get(app.url(asset))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200, "{asset}");
    }
}

#[tokio::test]
async fn unknown_route_and_wrong_method_are_problems() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/api/v1/nope"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    expect_problem(r, 404, "NOT_FOUND").await;
    let r = app
        .client
        .delete(app.url("/api/v1/merchant/templates"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    expect_problem(r, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn metrics_show_the_database_breaker() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let text = r.text().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        text.contains("stampede_breaker_state{dependency=\"database\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("stampede_dependency_up{dependency=\"database\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_method_and_status_with_a_latency_histogram() {
    let app = spawn_app().await;
    let get = |path: &str| app.client.get(app.url(path)).send();
    // A routed 404 (a template that does not exist) and an unrouted one.
    let tok = app.merchant(7);
    let r = app
        .client
        .get(app.url("/api/v1/merchant/templates/12345"))
        .header("authorization", format!("Bearer {tok}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 404);
    let r = get("/no/such/route-7c1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 404);
    let text = app.metrics_text().await;
    let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
    assert!(
        has(
            r#"stampede_http_requests_total{method="GET",route="/api/v1/merchant/templates/{id}",status="404"}"#
        ),
        "{text}"
    );
    assert!(
        has(r#"stampede_http_requests_total{method="GET",route="unmatched",status="404"}"#),
        "{text}"
    );
    assert!(
        !text.contains("route-7c1"),
        "an unrouted path became a label"
    );
    // A histogram with the configured buckets, not a summary.
    assert!(
        has(
            r#"stampede_http_request_duration_seconds_bucket{method="GET",route="/api/v1/merchant/templates/{id}",status="404",le="0.005"}"#
        ),
        "{text}"
    );
}

/// The served OpenAPI document.
async fn openapi(app: &TestApp) -> Value {
    let (s, doc) = read(
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(s, 200);
    doc
}

/// Follows `$ref`s (and the one-of-null wrapping of optional fields) to a schema object.
fn resolve<'a>(doc: &'a Value, mut s: &'a Value) -> &'a Value {
    for _ in 0..8 {
        if let Some(r) = s["$ref"].as_str() {
            let name = r.rsplit('/').next().unwrap_or_default();
            s = &doc["components"]["schemas"][name];
        } else if let Some(inner) = ["oneOf", "allOf", "anyOf"]
            .iter()
            .filter_map(|k| s[*k].as_array())
            .flatten()
            .find(|v| {
                v.get("$ref").is_some() || v.get("enum").is_some() || v.get("pattern").is_some()
            })
        {
            s = inner;
        } else {
            break;
        }
    }
    s
}

/// Checks each field of `answer` that `schema` describes with an `enum` or a `pattern`.
fn check_fields(doc: &Value, schema: &str, answer: &Value) -> usize {
    let props = doc["components"]["schemas"][schema]["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(!props.is_empty(), "schema {schema} has no properties");
    let mut checked = 0;
    for (field, s) in &props {
        let Some(value) = answer.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        let s = resolve(doc, s);
        if let Some(allowed) = s["enum"].as_array() {
            assert!(
                allowed.contains(value),
                "{schema}.{field} = {value} is not in the published enum {allowed:?}"
            );
            checked += 1;
        }
        if let (Some(p), Some(text)) = (s["pattern"].as_str(), value.as_str()) {
            let re = regex::Regex::new(p).unwrap_or_else(|e| panic!("{schema}.{field}: {e}"));
            assert!(
                re.is_match(text),
                "{schema}.{field} = {text:?} does not match the published pattern {p}"
            );
            checked += 1;
        }
    }
    checked
}

#[tokio::test]
async fn published_enums_and_id_patterns_are_what_the_server_sends() {
    let app = spawn_app().await;
    let doc = openapi(&app).await;
    // Enums are published with their wire names, not the Rust variants'.
    for (name, wire) in [
        ("Kind", stampede_domain::template::Kind::ALL),
        ("Scope", stampede_domain::template::Scope::ALL),
        ("Source", stampede_domain::template::Source::ALL),
        (
            "TemplateStatus",
            stampede_domain::template::TemplateStatus::ALL,
        ),
    ] {
        let published: Vec<&str> = doc["components"]["schemas"][name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no enum"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(published, wire, "{name}");
    }
    // A shop's template and a platform one (shop "0") as the server answers them.
    let shop = app
        .create(&app.merchant(7), &app.template_body("Shop"))
        .await;
    let mut body = app.template_body("Platform");
    body["source"] = json!("platform");
    body["kind"] = json!("percent");
    body["percent_off"] = json!(10);
    body.as_object_mut().map(|o| o.remove("amount_off"));
    let platform = app.create(&app.admin(), &body).await;
    assert_eq!(platform["shop_id"], "0");
    for t in [&shop, &platform] {
        // id, shop_id, source, scope, kind, status at least.
        assert!(check_fields(&doc, "Template", t) >= 6, "{t}");
    }
}

#[tokio::test]
async fn every_operation_with_a_body_documents_what_the_body_reader_refuses() {
    let app = spawn_app().await;
    let doc = openapi(&app).await;
    let mut bodies = 0;
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            if op.get("requestBody").is_none() {
                continue;
            }
            bodies += 1;
            // Handlers refuse unknown fields, so the schemas say so.
            if let Some(schema) = op["requestBody"]["content"].get("application/json") {
                let s = resolve(&doc, &schema["schema"]);
                assert_eq!(
                    s["additionalProperties"],
                    Value::Bool(false),
                    "{method} {path}: {s}"
                );
            }
            for status in ["400", "413", "415", "422"] {
                assert!(
                    op["responses"].get(status).is_some(),
                    "{method} {path} lacks {status}"
                );
            }
        }
    }
    assert!(bodies >= 15, "only {bodies} operations with a body");
    // An optional body may be `null`, as its schema allows.
    let tok = app.merchant(7);
    let r = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .header("authorization", format!("Bearer {tok}"))
        .header("content-type", "application/json")
        .body("null")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 204);
}

/// Metrics of the embedded mode only: the SQLite suite checks them.
const EMBEDDED_ONLY: &[&str] = &[
    "stampede_claim_journal_backlog",
    "stampede_group_commit_batch_size",
    "stampede_group_commit_seconds",
    "stampede_group_commit_failed_batches",
];
/// Metrics of the distributed mode only: the MySQL suites check them.
const DISTRIBUTED_ONLY: &[&str] = &[
    "stampede_persister_backlog_entries",
    "stampede_persister_lag_seconds",
    "stampede_redis_command_seconds",
    "stampede_redis_errors_total",
    "stampede_db_probe_seconds",
];

/// Every metric name an alert rule or a dashboard panel in `deploy/` reads.
fn metrics_used_in_deploy() -> std::collections::BTreeSet<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let mut files = vec![root.join("prometheus/alerts.yml")];
    let dashboards = root.join("grafana/dashboards");
    for e in std::fs::read_dir(&dashboards).unwrap_or_else(|e| panic!("{e}")) {
        files.push(e.unwrap_or_else(|e| panic!("{e}")).path());
    }
    let name = regex::Regex::new(r"\b(stampede_[a-z0-9_]+|process_[a-z0-9_]+)\b")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut used = std::collections::BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        used.extend(name.find_iter(&text).map(|m| m.as_str().to_owned()));
    }
    used
}

/// Names `/metrics` declares (`# TYPE name kind`), with their kind.
fn exported(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, k)| (n.to_owned(), k.to_owned()))
        .collect()
}

/// The dashboards and alerts in `deploy/` only read metrics the server exports (in this
/// backend's mode; the other mode's suite checks its own), and every histogram they read is
/// a histogram (buckets), not a summary.
#[tokio::test]
async fn every_metric_the_dashboards_and_alerts_read_is_exported() {
    let app = spawn_app().await;
    // Traffic that makes every lazily created series appear: a claim, a 404, the jobs.
    let mut body = app.template_body("Metrics");
    body["claim_start"] = json!(app.now().to_string());
    let t = app.create(&app.merchant(7), &body).await;
    let id = id_of(&t);
    let r = app
        .post(
            &format!("/api/v1/templates/{id}/claim"),
            &app.user_n(1),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 201);
    app.drain().await;

    let distributed = matches!(backend(), TestBackend::Mysql { .. });
    let (own, other) = if distributed {
        (DISTRIBUTED_ONLY, EMBEDDED_ONLY)
    } else {
        (EMBEDDED_ONLY, DISTRIBUTED_ONLY)
    };
    let used = metrics_used_in_deploy();
    assert!(
        used.len() >= 20,
        "too few metrics found in deploy/: {used:?}"
    );
    for m in own.iter().chain(other) {
        let read = ["", "_bucket", "_sum", "_count"]
            .iter()
            .any(|s| used.contains(&format!("{m}{s}")));
        assert!(read, "{m} is exported but no panel or rule reads it");
    }
    // The database probe runs on its own interval: wait for its first round.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let types = loop {
        let types = exported(&app.metrics_text().await);
        let missing = own.iter().any(|m| !types.contains_key(*m));
        if !missing || std::time::Instant::now() > deadline {
            break types;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let mut missing = Vec::new();
    for name in &used {
        let stem = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s));
        if other.contains(&stem.unwrap_or(name)) {
            continue;
        }
        let base = stem.filter(|b| types.get(*b).is_some_and(|k| k == "histogram"));
        let found = match base {
            Some(b) => types.contains_key(b),
            None => types.contains_key(name.as_str()),
        };
        if !found {
            missing.push(name.clone());
        }
    }
    // A `_bucket` read of a metric that renders as a summary is missing here too.
    assert!(
        missing.is_empty(),
        "read in deploy/ but not exported: {missing:?}"
    );
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// W3C Trace Context: a request continues the caller's trace (its `traceresponse` names the
/// same trace and a span of its own), starts a new one without a valid `traceparent`, and the
/// outbox events it causes (a claim's `coupon.claimed`, written later by the group commit or
/// the persister; a lock's `coupon.locked`) carry its `traceparent`.
#[tokio::test]
async fn a_request_continues_the_callers_trace_into_its_events() {
    let app = spawn_app().await;
    let traceparent = format!("00-{CALLER_TRACE}-00f067aa0ba902b7-01");
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let answered = header(r.headers(), "traceresponse");
    let parts: Vec<&str> = answered.split('-').collect();
    assert_eq!(parts.len(), 4, "{answered}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", CALLER_TRACE, "01"));
    assert_ne!(parts[2], "00f067aa0ba902b7", "the request's own span");
    for bad in [
        "junk",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    ] {
        let r = app
            .client
            .get(app.url("/healthz"))
            .header("traceparent", bad)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200, "a bad traceparent never fails a request");
        let t = header(r.headers(), "traceresponse");
        assert!(!t.contains(CALLER_TRACE) && t.len() == 55, "{t}");
    }

    let mut body = app.template_body("Traced");
    body["claim_start"] = json!(app.now().to_string());
    let id = id_of(&app.create(&app.merchant(7), &body).await);
    let user = app.user_n(4242);
    let claim_trace = format!("00-{CALLER_TRACE}-1111111111111111-01");
    let r = app
        .client
        .post(app.url(&format!("/api/v1/templates/{id}/claim")))
        .bearer_auth(&user)
        .header("Idempotency-Key", "traced-claim")
        .header("traceparent", &claim_trace)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (s, claimed) = read(r).await;
    assert_eq!(s, 201, "{claimed}");
    let coupon = claimed["coupon"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let lock_trace = format!("00-{CALLER_TRACE}-2222222222222222-01");
    let lock = json!({
        "coupon_ids": [coupon],
        "items": [{"goods_id": "1001", "shop_id": "7", "unit_price": 5000, "quantity": 1}],
        "expected_discount": 500
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        // Distributed: the claim reaches MySQL when the persister runs.
        app.drain().await;
        let r = app
            .client
            .post(app.url("/api/v1/orders/traced-order/coupons/lock"))
            .bearer_auth(&user)
            .header("traceparent", &lock_trace)
            .json(&lock)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (s, v) = read(r).await;
        if s == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "lock: {s} {v}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    app.drain().await;

    let trace_of = |events: Vec<stampede_core::claim_ports::OutboxEvent>| {
        events
            .into_iter()
            .find(|e| e.aggregate_id.to_string() == coupon)
            .and_then(|e| e.traceparent)
    };
    let claimed_event = trace_of(
        app.coupons
            .outbox_events("coupon.claimed", 100_000)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|| panic!("coupon.claimed of {coupon} has no traceparent"));
    let locked_event = trace_of(
        app.coupons
            .outbox_events("coupon.locked", 100_000)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|| panic!("coupon.locked of {coupon} has no traceparent"));
    for (event, caller) in [(&claimed_event, &claim_trace), (&locked_event, &lock_trace)] {
        let p: Vec<&str> = event.split('-').collect();
        assert_eq!(p.len(), 4, "{event}");
        assert_eq!(p[1], CALLER_TRACE, "the caller's trace: {event}");
        assert_ne!(
            event, caller,
            "the event names the request's span, not the caller's"
        );
    }
}

/// The document is valid where generators are strict: every response has a description
/// (OpenAPI requires one) and every `$ref` names a schema the document defines.
#[tokio::test]
async fn every_response_is_described_and_every_schema_reference_resolves() {
    let app = spawn_app().await;
    let doc = openapi(&app).await;
    let mut undescribed = Vec::new();
    for (path, ops) in doc["paths"].as_object().cloned().unwrap_or_default() {
        for (method, op) in ops.as_object().cloned().unwrap_or_default() {
            for (status, r) in op["responses"].as_object().cloned().unwrap_or_default() {
                if r["description"].as_str().is_none_or(str::is_empty) && r.get("$ref").is_none() {
                    undescribed.push(format!("{method} {path} {status}"));
                }
            }
        }
    }
    assert!(
        undescribed.is_empty(),
        "responses without a description: {undescribed:?}"
    );
    let schemas = doc["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let text = doc.to_string();
    let refs = regex::Regex::new(r"#/components/schemas/([A-Za-z0-9_.-]+)")
        .unwrap_or_else(|e| panic!("{e}"));
    let dangling: std::collections::BTreeSet<&str> = refs
        .captures_iter(&text)
        .filter_map(|c| c.get(1).map(|m| m.as_str()))
        .filter(|name| !schemas.contains_key(*name))
        .collect();
    assert!(
        dangling.is_empty(),
        "references to undefined schemas: {dangling:?}"
    );
}

/// Every operation of the served document by id: `(method, path, operation)`.
fn operations_by_id(doc: &Value) -> std::collections::BTreeMap<String, (String, String, Value)> {
    let mut ids = std::collections::BTreeMap::new();
    for (path, ops) in doc["paths"].as_object().cloned().unwrap_or_default() {
        for (method, op) in ops.as_object().cloned().unwrap_or_default() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"))
                .to_owned();
            let clash = ids.insert(id.clone(), (method.clone(), path.clone(), op));
            assert!(clash.is_none(), "operationId {id} is used twice");
        }
    }
    ids
}

#[tokio::test]
async fn operation_ids_are_unique_every_body_has_an_example_and_every_link_lands() {
    let app = spawn_app().await;
    let doc = openapi(&app).await;
    let ops = operations_by_id(&doc);
    for (id, (_, _, op)) in &ops {
        for (ct, media) in op["requestBody"]["content"]
            .as_object()
            .cloned()
            .unwrap_or_default()
        {
            assert!(
                media.get("example").is_some(),
                "{id} ({ct}): no request example"
            );
        }
    }
    let mut chain = std::collections::BTreeSet::new();
    for (id, (_, _, op)) in &ops {
        for (status, response) in op["responses"].as_object().cloned().unwrap_or_default() {
            for (name, link) in response["links"].as_object().cloned().unwrap_or_default() {
                let target = link["operationId"].as_str().unwrap_or_default();
                let (_, _, to) = ops.get(target).unwrap_or_else(|| {
                    panic!("link {name} of {id} {status}: no operation {target}")
                });
                for (param, expr) in link["parameters"].as_object().cloned().unwrap_or_default() {
                    let known = to["parameters"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|p| p["name"] == param.as_str()));
                    assert!(
                        known,
                        "link {name} of {id}: {target} has no parameter {param}"
                    );
                    assert!(expr.as_str().is_some_and(|e| e.starts_with('$')), "{expr}");
                }
                if link.get("requestBody").is_some() {
                    assert!(
                        to.get("requestBody").is_some(),
                        "link {name}: {target} takes no body"
                    );
                }
                chain.insert((id.clone(), target.to_owned()));
            }
        }
    }
    for (from, to) in [
        ("create_template", "claim"),
        ("claim", "lock"),
        ("lock", "redeem"),
        ("redeem", "refund"),
    ] {
        assert!(
            chain.contains(&(from.to_owned(), to.to_owned())),
            "no link from {from} to {to}"
        );
    }
}

#[tokio::test]
async fn every_request_example_is_accepted_as_valid() {
    let app = spawn_app().await;
    let doc = openapi(&app).await;
    let (user, merchant, admin) = (app.user(), app.merchant(7), app.admin());
    let mut sent = 0;
    for (id, (method, path, op)) in operations_by_id(&doc) {
        let Some(example) = op["requestBody"]["content"]["application/json"]
            .get("example")
            .cloned()
        else {
            continue; // the upload's multipart example is sent by Schemathesis
        };
        let token = match id.as_str() {
            "create_account" | "put_flow_rules" => &admin,
            "create_template" | "add_stock" => &merchant,
            _ => &user,
        };
        let url = path
            .replace("{order_id}", "order-1")
            .replace("{id}", "7243001234567890");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let r = app
            .client
            .request(method, app.url(&url))
            .bearer_auth(token)
            .header("Idempotency-Key", format!("example-{id}"))
            .json(&example)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        let (status, body) = read(r).await;
        assert!(
            ![400, 413, 415, 422].contains(&status.as_u16()),
            "{id}: its example was refused: {status} {body}"
        );
        sent += 1;
    }
    assert!(sent >= 14, "only {sent} examples sent");
}

#[tokio::test]
async fn the_served_document_describes_this_deployment() {
    let app = spawn_app().await;
    let doc = openapi(&app).await;
    let claim = &doc["paths"]["/api/v1/templates/{id}/claim"]["post"]["parameters"];
    let key = claim
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "Idempotency-Key"))
        .cloned()
        .unwrap_or_default();
    // Claims need a key by default, and a header is a string or absent, never null.
    assert_eq!(key["required"], true, "{key}");
    assert_eq!(key["schema"]["type"], "string", "{key}");
    let channels = doc["components"]["schemas"]["Channel"]["enum"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!channels.is_empty());
    let t = app.create_named(&app.merchant(7), "remind me").await;
    let path = format!("/api/v1/templates/{}/reminders", id_of(&t));
    for c in &channels {
        let r = app
            .client
            .put(app.url(&path))
            .bearer_auth(app.user())
            .json(&json!({"channel": c, "minutes_before": 15}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (status, body) = read(r).await;
        assert!(status.is_success(), "channel {c}: {status} {body}");
    }
    let classes =
        &doc["components"]["schemas"]["FlowRules"]["properties"]["routes"]["propertyNames"]["enum"];
    assert_eq!(
        classes,
        &json!([
            "claim",
            "shopper",
            "settlement",
            "auth",
            "back_office",
            "other"
        ])
    );
}

#[tokio::test]
async fn an_empty_query_value_or_a_blank_body_is_refused_not_ignored() {
    let app = spawn_app().await;
    let (user, merchant, admin) = (app.user(), app.merchant(7), app.admin());
    for (path, token) in [
        ("/api/v1/me/coupons?status=", &user),
        ("/api/v1/merchant/templates?status=", &merchant),
        ("/api/v1/merchant/templates?kind=", &merchant),
        ("/api/v1/merchant/templates?claim_to=", &merchant),
        ("/api/v1/merchant/distributions?page=", &merchant),
        (
            "/api/v1/merchant/distributions/7243001234567890/failures?format=",
            &merchant,
        ),
        ("/api/v1/orders/order-1/coupons?user_id=", &user),
    ] {
        expect_problem(app.get(path, token).await, 422, "VALIDATION_FAILED").await;
    }
    // The id filters say so in their pattern: empty reads as "any".
    let (s, _) = read(
        app.get("/api/v1/merchant/templates?goods_id=", &merchant)
            .await,
    )
    .await;
    assert_eq!(s, 200);
    // No body is an absent optional body; whitespace alone is not JSON.
    let r = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&user)
        .header("content-type", "application/json")
        .body(" ")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    expect_problem(r, 400, "MALFORMED_REQUEST").await;
    // Flow rules follow JSON Schema's integer: 50.0 is 50, 50.5 is refused.
    let rules = |per_second: Value| {
        json!({"routes": {"claim": {"per_second": per_second, "burst": 100}},
               "concurrency": {"max_in_flight": 512, "settlement_reserved": 64, "queue_timeout_ms": 50}})
    };
    let r = app
        .client
        .put(app.url("/api/v1/admin/flow-rules"))
        .bearer_auth(&admin)
        .json(&rules(json!(50.0)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (s, body) = read(r).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["rules"]["routes"]["claim"]["per_second"], 50, "{body}");
    let r = app
        .client
        .put(app.url("/api/v1/admin/flow-rules"))
        .bearer_auth(&admin)
        .json(&rules(json!(50.5)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    expect_problem(r, 422, "VALIDATION_FAILED").await;
    // A discount past the money cap is a validation error that says the range.
    let lock = json!({"coupon_ids": ["1"], "expected_discount": 1_000_000_000_001_i64,
                      "items": [{"goods_id": "1", "shop_id": "7", "unit_price": 100, "quantity": 1}]});
    let p = expect_problem(
        app.post("/api/v1/orders/order-1/coupons/lock", &user, &lock)
            .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert!(p.to_string().contains("0–1000000000000"), "{p}");
}
