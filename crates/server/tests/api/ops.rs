use crate::helpers::*;

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
    let (s, v) = read(
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(s, 200);
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
