use crate::helpers::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::SignedDuration;
use serde_json::json;
use stampede_domain::auth::Role;

const LIST: &str = "/api/v1/merchant/templates";

#[tokio::test]
async fn missing_or_malformed_credentials_are_401() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url(LIST))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.headers().get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    expect_problem(r, 401, "UNAUTHENTICATED").await;
    let r = app
        .client
        .get(app.url(LIST))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    expect_problem(r, 401, "UNAUTHENTICATED").await;
    expect_problem(app.get(LIST, "not-a-jwt").await, 401, "UNAUTHENTICATED").await;
}

#[tokio::test]
async fn expired_token_is_401() {
    let app = spawn_app().await;
    let t = app.token(Role::Admin, "1", None, SignedDuration::from_mins(1));
    assert_eq!(app.get(LIST, &t).await.status(), 200);
    app.advance(SignedDuration::from_mins(2));
    expect_problem(app.get(LIST, &t).await, 401, "UNAUTHENTICATED").await;
}

#[tokio::test]
async fn forged_and_alg_none_tokens_are_401() {
    let app = spawn_app().await;
    let good = app.admin();
    // Same claims, signature of another key.
    let other = stampede_core::auth::TokenService::new(
        b"another-secret-another-secret-another",
        std::sync::Arc::new(stampede_core::clock::SystemClock),
    );
    let forged = other
        .mint(
            &stampede_domain::auth::Principal {
                subject: "1".into(),
                role: Role::Admin,
                shop_id: None,
                session_id: None,
            },
            SignedDuration::from_hours(1),
        )
        .unwrap_or_default();
    expect_problem(app.get(LIST, &forged).await, 401, "UNAUTHENTICATED").await;
    // Payload swapped to another role, original signature kept.
    let parts: Vec<&str> = good.split('.').collect();
    let tampered_payload = URL_SAFE_NO_PAD
        .encode(br#"{"sub":"1","role":"admin","exp":99999999999,"iat":1,"jti":"x","extra":1}"#);
    let tampered = format!("{}.{}.{}", parts[0], tampered_payload, parts[2]);
    expect_problem(app.get(LIST, &tampered).await, 401, "UNAUTHENTICATED").await;
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD
            .encode(br#"{"sub":"1","role":"admin","exp":99999999999,"iat":1,"jti":"x"}"#)
    );
    expect_problem(app.get(LIST, &none).await, 401, "UNAUTHENTICATED").await;
}

#[tokio::test]
async fn merchant_token_without_shop_is_401_and_wrong_role_is_403() {
    let app = spawn_app().await;
    let no_shop = app.token(Role::Merchant, "5", None, SignedDuration::from_hours(1));
    expect_problem(app.get(LIST, &no_shop).await, 401, "UNAUTHENTICATED").await;
    expect_problem(app.get(LIST, &app.user()).await, 403, "FORBIDDEN").await;
    let service = app.token(
        Role::Service,
        "checkout",
        None,
        SignedDuration::from_hours(1),
    );
    let body = app.template_body("x");
    expect_problem(app.post(LIST, &service, &body).await, 403, "FORBIDDEN").await;
    let r = app
        .post("/api/v1/admin/accounts", &app.merchant(1), &json!({}))
        .await;
    expect_problem(r, 403, "FORBIDDEN").await;
}

async fn login(app: &TestApp, username: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/auth/refresh"))
        .json(&json!({ "refresh_token": token }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn admin_creates_accounts_with_validation() {
    let app = spawn_app().await;
    let admin = app.admin();
    let body = json!({"username": "shop7", "password": "correct horse", "role": "merchant", "shop_id": "7"});
    let (s, v) = read(app.post("/api/v1/admin/accounts", &admin, &body).await).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["role"], "merchant");
    assert_eq!(v["shop_id"], "7");
    assert!(v.get("password_hash").is_none() && v.get("password").is_none());
    expect_problem(
        app.post("/api/v1/admin/accounts", &admin, &body).await,
        409,
        "CONFLICT",
    )
    .await;

    let bad = json!({"username": "x", "password": "short", "role": "merchant", "extra": true});
    let v = expect_problem(
        app.post("/api/v1/admin/accounts", &admin, &bad).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let mut f = error_fields(&v);
    f.sort();
    assert_eq!(f, vec!["extra", "password", "shop_id", "username"]);
    let bad_role = json!({"username": "someone", "password": "long enough", "role": "root"});
    let v = expect_problem(
        app.post("/api/v1/admin/accounts", &admin, &bad_role).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&v), vec!["role"]);
    let user_with_shop =
        json!({"username": "someone", "password": "long enough", "role": "user", "shop_id": "3"});
    let v = expect_problem(
        app.post("/api/v1/admin/accounts", &admin, &user_with_shop)
            .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&v), vec!["shop_id"]);
}

#[tokio::test]
async fn login_refresh_rotation_reuse_and_logout() {
    let app = spawn_app().await;
    let body = json!({"username": "shop7", "password": "correct horse", "role": "merchant", "shop_id": "7"});
    assert_eq!(
        app.post("/api/v1/admin/accounts", &app.admin(), &body)
            .await
            .status(),
        201
    );

    expect_problem(
        login(&app, "shop7", "wrong horse!").await,
        401,
        "UNAUTHENTICATED",
    )
    .await;
    expect_problem(
        login(&app, "nobody", "correct horse").await,
        401,
        "UNAUTHENTICATED",
    )
    .await;
    let v = expect_problem(
        app.client
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"username": 5}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&v), vec!["username", "password"]);

    let (s, pair) = read(login(&app, "shop7", "correct horse").await).await;
    assert_eq!(s, 200, "{pair}");
    assert_eq!(pair["token_type"], "Bearer");
    assert!(pair["expires_in"].as_i64().unwrap_or(0) > 0);
    let access = pair["access_token"].as_str().unwrap_or_default().to_owned();
    let first_refresh = pair["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The logged-in merchant works on its own shop.
    let created = app.create_named(&access, "via login").await;
    assert_eq!(created["shop_id"], "7");

    let (s, second) = read(refresh(&app, &first_refresh).await).await;
    assert_eq!(s, 200, "{second}");
    let second_refresh = second["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_ne!(second_refresh, first_refresh);
    assert_eq!(
        app.get(LIST, second["access_token"].as_str().unwrap_or_default())
            .await
            .status(),
        200
    );

    // Reusing the rotated token revokes the session: the newest token dies too.
    expect_problem(refresh(&app, &first_refresh).await, 401, "UNAUTHENTICATED").await;
    expect_problem(refresh(&app, &second_refresh).await, 401, "UNAUTHENTICATED").await;

    // A fresh login, then logout ends that session.
    let (_, pair) = read(login(&app, "shop7", "correct horse").await).await;
    let access = pair["access_token"].as_str().unwrap_or_default().to_owned();
    let rt = pair["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let r = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 204);
    expect_problem(refresh(&app, &rt).await, 401, "UNAUTHENTICATED").await;
    expect_problem(refresh(&app, "garbage").await, 401, "UNAUTHENTICATED").await;
    let r = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    expect_problem(r, 401, "UNAUTHENTICATED").await;
}

#[tokio::test]
async fn refresh_token_expires() {
    let app = spawn_app().await;
    let body = json!({"username": "user1", "password": "correct horse", "role": "user"});
    assert_eq!(
        app.post("/api/v1/admin/accounts", &app.admin(), &body)
            .await
            .status(),
        201
    );
    let (_, pair) = read(login(&app, "user1", "correct horse").await).await;
    app.advance(SignedDuration::from_hours(24 * 31));
    expect_problem(
        refresh(&app, pair["refresh_token"].as_str().unwrap_or_default()).await,
        401,
        "UNAUTHENTICATED",
    )
    .await;
}

async fn account(app: &TestApp, username: &str) {
    let body = json!({"username": username, "password": "correct horse", "role": "user"});
    let (s, v) = read(
        app.post("/api/v1/admin/accounts", &app.admin(), &body)
            .await,
    )
    .await;
    assert_eq!(s, 201, "{v}");
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", r.headers()))
}

#[tokio::test]
async fn thirty_wrong_passwords_lock_the_account_even_for_the_right_one() {
    let app = spawn_app().await;
    account(&app, "user1").await;
    let mut codes = Vec::new();
    for _ in 0..30 {
        codes.push(login(&app, "user1", "wrong horse!").await.status().as_u16());
    }
    // Five free failures, the sixth starts a lockout; the rest are refused unchecked.
    assert_eq!(&codes[..6], &[401; 6], "{codes:?}");
    assert!(codes[6..].iter().all(|c| *c == 429), "{codes:?}");
    let r = login(&app, "user1", "correct horse").await;
    assert!(retry_after(&r) >= 1);
    let v = expect_problem(r, 429, "RATE_LIMITED").await;
    assert!(
        v["detail"].as_str().unwrap_or("").contains("account"),
        "{v}"
    );
    // Once the lockout (1 s) passed, the right password works.
    app.advance(SignedDuration::from_secs(2));
    assert_eq!(login(&app, "user1", "correct horse").await.status(), 200);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("stampede_login_refused_total{reason=\"account_locked\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_success_resets_the_account_counter() {
    let app = spawn_app().await;
    account(&app, "user2").await;
    for _ in 0..2 {
        for _ in 0..4 {
            assert_eq!(login(&app, "user2", "wrong horse!").await.status(), 401);
        }
        assert_eq!(login(&app, "user2", "correct horse").await.status(), 200);
    }
    // Without the resets these would be failures 9 and 10: locked.
    assert_eq!(login(&app, "user2", "wrong horse!").await.status(), 401);
    assert_eq!(login(&app, "user2", "correct horse").await.status(), 200);
}

#[tokio::test]
async fn one_address_trying_many_accounts_is_locked_out() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (mut settings, urls) = test_settings(dir.path(), false);
    settings.auth.login_ip_free_failures = 8;
    let app = spawn_app_from(dir, settings, urls).await;
    account(&app, "victim").await;
    for n in 0..9 {
        // One failure per account: no account limit is reached.
        let r = login(&app, &format!("guess{n}"), "123456").await;
        assert_eq!(r.status(), 401, "attempt {n}");
    }
    let r = login(&app, "victim", "correct horse").await;
    assert!(retry_after(&r) >= 1);
    let v = expect_problem(r, 429, "RATE_LIMITED").await;
    assert!(
        v["detail"].as_str().unwrap_or("").contains("address"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_checks_beyond_the_cap_are_shed_as_overloaded() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (mut settings, urls) = test_settings(dir.path(), false);
    settings.auth.login_max_in_flight = 1;
    settings.auth.login_queue_wait = std::time::Duration::ZERO;
    settings.auth.login_account_free_failures = 1_000;
    settings.auth.login_ip_free_failures = 1_000;
    let app = std::sync::Arc::new(spawn_app_from(dir, settings, urls).await);
    let tries = (0..16).map(|n| {
        let app = app.clone();
        tokio::spawn(async move {
            let r = login(&app, &format!("someone{n}"), "wrong horse!").await;
            let status = r.status().as_u16();
            let after = r.headers().get("retry-after").is_some();
            let (_, v) = read(r).await;
            (
                status,
                v["code"].as_str().unwrap_or_default().to_owned(),
                after,
            )
        })
    });
    let tries: Vec<_> = tries.collect();
    let mut shed = 0;
    for t in tries {
        let (status, code, after) = t.await.unwrap_or_else(|e| panic!("{e}"));
        match status {
            401 => {}
            503 => {
                assert_eq!(code, "OVERLOADED");
                assert!(after, "a shed login says when to retry");
                shed += 1;
            }
            other => panic!("unexpected {other} {code}"),
        }
    }
    assert!(
        shed > 0,
        "16 concurrent checks through one slot with no wait"
    );
}
